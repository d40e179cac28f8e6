//! Prometheus metrics: the recorder, its explicit histogram buckets, and its upkeep.
//! Names are DESIGN §4's; nothing is labelled by SKU (unbounded cardinality).

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, 1 ms to 30 s: propagation and ingest live in this range.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Flush buckets, 50 µs to 100 ms: an fdatasync costs a few hundred µs.
const FLUSH_BUCKETS_S: [f64; 11] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// How often histograms are drained without a scrape, so memory stays flat.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the global recorder; a second call (several engines in one process) gets a
/// handle of its own that renders only what it records.
pub fn install() -> PrometheusHandle {
    let builder = || {
        PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS_S)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("lockstep_log_flush_seconds".into()),
                    &FLUSH_BUCKETS_S,
                )
            })
            .expect("buckets are non-empty")
    };
    match builder().install_recorder() {
        Ok(handle) => handle,
        Err(_) => builder().build_recorder().handle(),
    }
}
