//! The files of `deploy/` read by the tools that take them, where those tools are at hand:
//! `systemd-analyze verify` for the unit, a container engine for the `Dockerfile`. (nginx runs
//! `deploy/nginx/keyfob.conf` in `proxy.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A program on `PATH`.
fn program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = program("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    let unit = std::fs::read_to_string(repository().join("deploy/keyfob.service")).unwrap();
    // verify wants the program of ExecStart= to exist: the binary of this build stands in.
    assert!(unit.contains("ExecStart=/usr/local/bin/keyfob serve"));
    let unit = unit.replace("/usr/local/bin/keyfob", env!("CARGO_BIN_EXE_keyfob"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyfob.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    // An unknown setting or a bad value is reported on stderr with a success exit: none is
    // allowed.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// `docker` or `podman`, whichever answers `info`.
fn container_engine() -> Option<&'static str> {
    ["docker", "podman"].into_iter().find(|engine| {
        Command::new(engine)
            .arg("info")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

fn run(engine: &str, args: &[&str]) -> String {
    let out = Command::new(engine).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{engine} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_builds_where_a_container_engine_answers() {
    let Some(engine) = container_engine() else {
        eprintln!(
            "skipped: no container engine answers here (`docker info` and `podman info` fail), \
             so the image of the Dockerfile is not built"
        );
        return;
    };
    let tag = format!("keyfob-test:{}", uuid::Uuid::new_v4().simple());
    let root = repository();
    run(engine, &["build", "-t", &tag, root.to_str().unwrap()]);
    let config = run(
        engine,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{json .Config.ExposedPorts}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}",
            &tag,
        ],
    );
    // The settings the image runs with, from the image itself.
    let settings = run(engine, &["run", "--rm", &tag, "settings"]);
    let _ = Command::new(engine).args(["rmi", "-f", &tag]).output();
    assert!(config.starts_with("10001:10001 "), "{config}");
    assert!(config.contains("\"8080/tcp\""), "{config}");
    assert!(
        config.contains("[\"/usr/local/bin/keyfob\"] [\"serve\"]"),
        "{config}"
    );
    assert!(
        settings
            .lines()
            .any(|l| l.starts_with("listen = \"0.0.0.0:8080\"")),
        "{settings}"
    );
    assert!(
        settings
            .lines()
            .any(|l| l.starts_with("data_dir = \"/var/lib/keyfob\"")),
        "{settings}"
    );
}
