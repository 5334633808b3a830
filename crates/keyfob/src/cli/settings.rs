//! `keyfob settings`: the settings in force, one TOML line each, with where each value came from.

use crate::config::{Config, Layers};

pub(super) fn run(config: &Config, layers: &Layers) -> anyhow::Result<()> {
    for line in layers.describe(config)? {
        println!("{line}");
    }
    Ok(())
}
