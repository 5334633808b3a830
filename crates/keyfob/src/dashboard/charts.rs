//! Charts drawn on the server as SVG, so that a page needs no script to show them: a sparkline of
//! a key's daily requests in the keys table, and a bar chart of its days by outcome on the key's
//! own page. Only numbers and fixed text go into the markup, so it is safe to put in a page as it
//! is.

use std::fmt::Write;

use keyfob_store::UsageCounts;

/// A small line of daily totals, oldest first; `label` is its accessible name.
pub fn sparkline(totals: &[i64], label: &str) -> String {
    const W: f64 = 112.0;
    const H: f64 = 24.0;
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if totals.len() > 1 {
        W / (totals.len() - 1) as f64
    } else {
        W
    };
    let mut points = String::new();
    for (i, total) in totals.iter().enumerate() {
        let x = i as f64 * step;
        let y = H - 2.0 - (*total as f64 / max) * (H - 4.0);
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    format!(
        "<svg class=\"sparkline\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" \
         aria-label=\"{}\"><polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\" \
         points=\"{}\"/></svg>",
        escape(label),
        points.trim_end()
    )
}

/// Stacked bars of daily counts by outcome, oldest first, each day labelled (`MM-DD`).
pub fn usage_bars(days: &[(String, UsageCounts)]) -> String {
    const BAR: f64 = 14.0;
    const GAP: f64 = 4.0;
    const H: f64 = 120.0;
    let max = days
        .iter()
        .map(|(_, c)| c.total())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let width = days.len() as f64 * (BAR + GAP);
    let mut svg = format!(
        "<svg class=\"usage-chart\" viewBox=\"0 0 {width} {}\" role=\"img\" \
         aria-label=\"Requests per day by outcome\">",
        H + 16.0
    );
    for (i, (day, counts)) in days.iter().enumerate() {
        let x = i as f64 * (BAR + GAP);
        let mut top = H;
        for (value, class) in [
            (counts.ok, "ok"),
            (counts.client_errors, "client-error"),
            (counts.limited, "limited"),
            (counts.server_errors, "server-error"),
        ] {
            if value == 0 {
                continue;
            }
            let h = value as f64 / max * H;
            top -= h;
            let _ = write!(
                svg,
                "<rect class=\"bar-{class}\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{BAR}\" \
                 height=\"{h:.1}\"><title>{} {}: {value}</title></rect>",
                escape(day),
                class.replace('-', " ")
            );
        }
        if i % 7 == 0 || i + 1 == days.len() {
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{}\" class=\"axis\">{}</text>",
                H + 12.0,
                escape(day)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_scales_to_its_largest_day() {
        let svg = sparkline(&[0, 5, 10], "Requests <per> day");
        assert!(
            svg.contains("points=\"0.0,22.0 56.0,12.0 112.0,2.0\""),
            "{svg}"
        );
        assert!(svg.contains("aria-label=\"Requests &lt;per&gt; day\""));
        // No request at all is a flat line, not a division by zero.
        assert!(sparkline(&[0, 0], "x").contains("points=\"0.0,22.0 112.0,22.0\""));
    }

    #[test]
    fn bars_stack_by_outcome_and_skip_empty_parts() {
        let counts = UsageCounts {
            ok: 3,
            client_errors: 1,
            limited: 0,
            server_errors: 0,
        };
        let svg = usage_bars(&[
            ("11-29".into(), counts),
            ("11-30".into(), UsageCounts::default()),
        ]);
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains("class=\"bar-ok\""));
        assert!(svg.contains("11-29 client error: 1"));
        assert!(!svg.contains("bar-limited"));
    }
}
