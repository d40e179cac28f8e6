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

/// Registers every metric with its description, and the series of each channel and shard
/// at zero, so that dashboards show zeros instead of "no data" before the first event.
pub fn register(channels: &[String], shards: usize) {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "lockstep_propagation_seconds",
        Unit::Seconds,
        "Event received to channel acknowledged."
    );
    describe_histogram!(
        "lockstep_ingest_seconds",
        Unit::Seconds,
        "Request received to durable answer."
    );
    describe_counter!(
        "lockstep_events_total",
        "Events taken, by channel, kind and outcome."
    );
    describe_counter!(
        "lockstep_push_requests_total",
        "Push requests by channel and outcome."
    );
    describe_counter!(
        "lockstep_push_backoffs_total",
        "The pusher's pauses after failed calls or answers that took nothing, per channel."
    );
    describe_counter!(
        "lockstep_push_items_refused_total",
        "SKUs a channel refused while it took others, each then held on its own."
    );
    describe_counter!(
        "lockstep_push_items_failed_total",
        "Items a processed bulk submission failed in the channel's own systems (Walmart's SYSTEM_ERROR, TIMEOUT_ERROR), sent again."
    );
    describe_counter!(
        "lockstep_channel_events_refused_total",
        "Things a channel gave that could not be taken, or follow-up reads it refused for good, left out and logged, per channel."
    );
    describe_gauge!(
        "lockstep_outbox_skus",
        "SKUs waiting to be pushed, per channel."
    );
    describe_gauge!(
        "lockstep_poll_orders_set_aside",
        "Orders a channel's order poll read on past, their follow-up read failing, read again at every pass."
    );
    describe_gauge!(
        "lockstep_shard_mailbox_depth",
        "Requests waiting in a shard's mailbox."
    );
    describe_counter!(
        "lockstep_oversells_total",
        "Order lines that found less available than they asked for."
    );
    describe_counter!(
        "lockstep_reconcile_drift_total",
        "Drifts repaired by reconciliation, per channel."
    );
    describe_histogram!(
        "lockstep_log_flush_seconds",
        Unit::Seconds,
        "Making a batch's log durable: its one synchronous write to the log's tail, per batch."
    );
    describe_gauge!(
        "lockstep_shard_up",
        "1 while a shard serves; 0 once its storage failed, until it has reopened it."
    );
    describe_counter!(
        "lockstep_storage_reopened_total",
        "A shard's storage reopened after a failure."
    );
    describe_counter!(
        "lockstep_task_restarts_total",
        "A background task (a pusher, a poll, a queue, a reconciliation) that panicked and was started again."
    );
    describe_counter!(
        "lockstep_connections_refused_total",
        "Connections closed at once because connections_max were open."
    );
    describe_counter!(
        "lockstep_queue_messages_total",
        "Amazon: SQS messages received, per channel."
    );
    describe_counter!(
        "lockstep_queue_refused_total",
        "Amazon: SQS messages that could not be taken, left in the queue, per channel."
    );
    describe_gauge!(
        "lockstep_channel_quota_remaining",
        "Etsy: the calls left today (x-remaining-today), per channel."
    );
    metrics::counter!("lockstep_oversells_total").absolute(0);
    metrics::counter!("lockstep_connections_refused_total").absolute(0);
    // Histograms appear with their first sample; the upkeep renders empty ones as absent.
    let _ = metrics::histogram!("lockstep_ingest_seconds");
    let _ = metrics::histogram!("lockstep_log_flush_seconds");
    for shard in 0..shards {
        metrics::gauge!("lockstep_shard_mailbox_depth", "shard" => shard.to_string()).set(0.0);
        metrics::counter!("lockstep_storage_reopened_total", "shard" => shard.to_string())
            .absolute(0);
    }
    for channel in channels {
        let _ = metrics::histogram!("lockstep_propagation_seconds", "channel" => channel.clone());
        metrics::gauge!("lockstep_poll_orders_set_aside", "channel" => channel.clone()).set(0.0);
        metrics::counter!("lockstep_reconcile_drift_total", "channel" => channel.clone())
            .absolute(0);
        // Counters an alert watches for a rise: a series that first appears at 1 shows
        // no increase to Prometheus, so the first refusal would pass unseen.
        for counter in [
            "lockstep_push_backoffs_total",
            "lockstep_push_items_refused_total",
            "lockstep_push_items_failed_total",
            "lockstep_channel_events_refused_total",
        ] {
            metrics::counter!(counter, "channel" => channel.clone()).absolute(0);
        }
        for outcome in ["ok", "partial", "throttled", "error"] {
            metrics::counter!("lockstep_push_requests_total", "channel" => channel.clone(), "outcome" => outcome).absolute(0);
        }
    }
}
