//! B1's latency plot: an SVG of each path's latency by percentile (a log-scaled "nines"
//! axis) at the fixed HTTP/1.1 rate, last round, which the report links.

use std::fmt::Write as _;

use super::{measure::Kind, suite::Results};

/// Colours of the plotted paths.
const COLOURS: &[(&str, &str)] = &[
    ("direct", "#777777"),
    ("vigil", "#d62728"),
    ("envoy", "#1f77b4"),
    ("haproxy", "#2ca02c"),
    ("nginx", "#9467bd"),
];

/// A plotted line: path, colour, points (nines, ms).
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// An SVG plot of B1's latency by percentile (log-scaled "nines" axis), last round.
pub fn latency_svg(results: &Results) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 420.0, 70.0, 50.0, 30.0, 130.0);
    let nines = |p: f64| -(1.0 - (p / 100.0).min(0.99999)).log10(); // 0 .. 5
    let series: Vec<Series<'_>> = COLOURS
        .iter()
        .filter_map(|(path, colour)| {
            let s = results.get(Kind::H1Fixed, path).last()?;
            let pts = s
                .percentiles
                .iter()
                .filter(|(p, _)| *p < 100.0)
                .map(|(p, us)| (nines(*p), *us as f64 / 1000.0))
                .collect::<Vec<_>>();
            (!pts.is_empty()).then_some((*path, *colour, pts))
        })
        .collect();
    let max_x = 4.0;
    let max_y = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().filter(|(x, _)| *x <= max_x).map(|(_, y)| *y))
        .fold(0.1_f64, f64::max)
        * 1.1;
    let px = |x: f64| left + x.min(max_x) / max_x * (w - left - right);
    let py = |y: f64| h - bottom - y / max_y * (h - bottom - top);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="18" font-size="14">Latency by percentile, 1,000 req/s HTTP/1.1 (ms)</text>"#
    );
    for (i, label) in ["p0", "p90", "p99", "p99.9", "p99.99"].iter().enumerate() {
        let x = px(i as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            py(0.0),
            py(max_y),
            py(0.0) + 18.0
        );
    }
    for k in 0..=4 {
        let y = max_y * f64::from(k) / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/><text x="{2}" y="{3}" text-anchor="end">{y:.2}</text>"##,
            py(y),
            w - right,
            left - 6.0,
            py(y) + 4.0
        );
    }
    for (i, (path, colour, pts)) in series.iter().enumerate() {
        let d: Vec<String> = pts
            .iter()
            .filter(|(x, _)| *x <= max_x)
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            d.join(" ")
        );
        let ly = top + 20.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{2}" y="{3}">{path}</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 36.0,
            ly + 4.0
        );
    }
    let _ = writeln!(svg, "</svg>");
    svg
}
