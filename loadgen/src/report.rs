//! The self-contained HTML report of a run: its verdict, the percentile table, and two
//! plots drawn here as inline SVG (no scripts, no network): propagation over the run
//! (p50, p99 and max per second) and the percentile distribution (latency against
//! 1/(1-q) on a log axis, the HDR way).

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Quantiles of a histogram, from 0 to 0.99999, spaced evenly on the "nines" axis, in ms.
pub fn distribution(h: &Histogram<u64>) -> Vec<Value> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=50)
        .map(|i| {
            // 10^(-5 * i / 50): from 1 down to 0.00001 left above the quantile.
            let q = 1.0 - 10f64.powf(-5.0 * f64::from(i) / 50.0);
            json!({"quantile": q, "ms": h.value_at_quantile(q) as f64 / 1000.0})
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 36.0;

/// A named, coloured line of (x, y) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// One line chart: series of (x, y) points scaled into the plot, with axis labels.
fn chart(title: &str, x_label: &str, series: &[Series], x_ticks: &[(f64, String)]) -> String {
    let xs = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(x, _)| *x));
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let y_max = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;
    let (x_min, x_max) = if x_min >= x_max {
        (x_min - 1.0, x_min + 1.0)
    } else {
        (x_min, x_max)
    };
    let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * (W - LEFT - 10.0);
    let sy = |y: f64| H - BOTTOM - y / y_max * (H - BOTTOM - 20.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11"><text x="{LEFT}" y="13" font-weight="bold">{}</text>"#,
        escape(title)
    );
    svg += &format!(
        r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{LEFT}" y1="20" x2="{LEFT}" y2="{b}" stroke="#888"/>"##,
        b = H - BOTTOM,
        r = W - 10.0
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        svg += &format!(
            r##"<text x="{}" y="{}" text-anchor="end">{:.1} ms</text><line x1="{LEFT}" y1="{y2}" x2="{r}" y2="{y2}" stroke="#eee"/>"##,
            LEFT - 4.0,
            sy(y) + 4.0,
            y,
            y2 = sy(y),
            r = W - 10.0
        );
    }
    for (x, label) in x_ticks {
        svg += &format!(
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            sx(*x),
            H - BOTTOM + 14.0,
            escape(label)
        );
    }
    svg += &format!(
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (LEFT + W) / 2.0,
        H - 4.0,
        escape(x_label)
    );
    for (n, (name, color, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        svg += &format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/><text x="{}" y="13" fill="{color}">{}</text>"#,
            path.join(" "),
            W - 220.0 + 70.0 * n as f64,
            escape(name)
        );
    }
    svg + "</svg>"
}

/// The HTML page of a `latency` (or `burst`) report.
pub fn html(report: &Value) -> String {
    let timeline = report["timeline"].as_array().cloned().unwrap_or_default();
    let pick = |field: &str| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter(|t| t["count"].as_u64().unwrap_or(0) > 0)
            .map(|t| {
                (
                    t["second"].as_f64().unwrap_or(0.0),
                    t[field].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let seconds = timeline.len() as f64;
    let over_time = chart(
        "Propagation over the run (send → every other channel holds the quantity)",
        "second of the run",
        &[
            ("p50", "#1f77b4", pick("p50_ms")),
            ("p99", "#d62728", pick("p99_ms")),
            ("max", "#999", pick("max_ms")),
        ],
        &(0..=4)
            .map(|i| {
                (
                    seconds * f64::from(i) / 4.0,
                    format!("{:.0} s", seconds * f64::from(i) / 4.0),
                )
            })
            .collect::<Vec<_>>(),
    );
    let nines = |q: f64| -(1.0 - q).max(1e-9).log10();
    let distribution: Vec<(f64, f64)> = report["distribution"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                nines(p["quantile"].as_f64().unwrap_or(0.0)),
                p["ms"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let percentiles = chart(
        "Propagation by percentile",
        "percentile",
        &[("propagation", "#2ca02c", distribution)],
        &[
            (0.0, "0%".into()),
            (1.0, "90%".into()),
            (2.0, "99%".into()),
            (3.0, "99.9%".into()),
            (4.0, "99.99%".into()),
            (5.0, "99.999%".into()),
        ],
    );
    let row = |name: &str, v: &Value| {
        format!(
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
            escape(name),
            v["count"],
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p90_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            v["p999_ms"].as_f64().unwrap_or(0.0),
            v["max_ms"].as_f64().unwrap_or(0.0)
        )
    };
    let mut rows = row("ingest", &report["ingest"]) + &row("propagation", &report["propagation"]);
    if let Some(channels) = report["propagation_per_channel"].as_object() {
        for (name, v) in channels {
            rows += &row(&format!("to {name}"), v);
        }
    }
    let verdict = if report["passed"] == true {
        "PASS"
    } else {
        "FAIL"
    };
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>lockstep loadgen: {scenario} {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body><h1>{scenario}: {verdict}</h1>
<p>{orders} orders at {rate:.1}/s over {skus} SKUs and {channels} channels; lost {lost}, unconverged {unconverged}, SKUs miscounted {miscounted}.</p>
<table><tr><th></th><th>count</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>{rows}</table>
<p>{over_time}</p><p>{percentiles}</p>
<h2>The report</h2><pre>{json}</pre></body></html>
"#,
        scenario = escape(report["scenario"].as_str().unwrap_or("run")),
        orders = report["orders"],
        rate = report["orders_per_second_achieved"].as_f64().unwrap_or(0.0),
        skus = report["skus"],
        channels = report["channels"],
        lost = report["lost"],
        unconverged = report["unconverged"],
        miscounted = report["skus_miscounted"],
        json = escape(&serde_json::to_string_pretty(report).unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_both_plots_and_the_numbers() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let report = json!({
            "scenario": "latency", "passed": true, "orders": 1000, "orders_per_second_achieved": 100.0,
            "skus": 10, "channels": 2, "lost": 0, "unconverged": 0, "skus_miscounted": 0,
            "propagation": {"count": 1000, "p50_ms": 5.0, "p90_ms": 9.0, "p99_ms": 9.9, "p999_ms": 10.0, "max_ms": 10.0},
            "timeline": [{"second": 0, "count": 500, "p50_ms": 4.0, "p99_ms": 9.0, "max_ms": 10.0},
                         {"second": 1, "count": 500, "p50_ms": 6.0, "p99_ms": 9.9, "max_ms": 10.0}],
            "distribution": distribution(&h),
        });
        let page = html(&report);
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(page.contains("latency: PASS"));
        assert!(page.contains("<td>propagation</td><td>1000</td><td>5.00</td>"));
        assert!(!page.contains("<script"), "self-contained, no scripts");
        let dist = distribution(&h);
        assert_eq!(dist.len(), 51);
        assert!(dist[50]["ms"].as_f64().unwrap() >= 9.9, "{:?}", dist[50]);
    }
}
