//! Propagation times of one channel (event received → channel acknowledged): since start,
//! for `GET /v1/propagation` and the loadgen, and over the last minutes in slots of ten
//! seconds, for the console's overview and its plots. What a channel did an hour ago says
//! little about how it does now; the slots answer "now".

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::clock::{Micros, MICROS_PER_SECOND};

/// One slot of the recent window.
pub const SLOT_SECONDS: i64 = 10;
/// Slots kept: five minutes.
pub const SLOTS: usize = 30;
/// Longest time recorded exactly: an hour; longer ones saturate.
const HIGHEST_US: u64 = 3_600_000_000;

/// One channel's propagation times.
pub struct Timing {
    pub channel: String,
    /// Microseconds, 3 significant digits.
    lifetime: Mutex<Histogram<u64>>,
    recent: Mutex<Vec<Slot>>,
}

/// Ten seconds of acknowledgements, at 2 significant digits and 32-bit counts (1 % is
/// plenty for a plot, and a slot is 13 KB where the since-start histogram is 184 KB:
/// 390 KB a channel that pushes, none for one that never has).
struct Slot {
    /// Which ten seconds (Unix seconds / `SLOT_SECONDS`); stale slots are reset on use.
    index: i64,
    histogram: Histogram<u32>,
}

/// The last minutes of one channel.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recent {
    /// Acknowledged pushes in the window.
    pub count: u64,
    /// Per second over the last minute.
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// One point per slot, oldest first, each slot's start (Unix seconds), count and
    /// percentiles; a slot without acknowledgements has none.
    pub series: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Point {
    pub at: i64,
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn slot_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, HIGHEST_US, 2).expect("valid bounds")
}

fn ms<T: hdrhistogram::Counter>(h: &Histogram<T>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

impl Timing {
    pub fn new(channel: &str) -> Timing {
        Timing {
            channel: channel.to_string(),
            lifetime: Mutex::new(
                Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid bounds"),
            ),
            recent: Mutex::new(Vec::new()),
        }
    }

    /// One acknowledged change, caused at `caused_at` and acknowledged at `acked_at`.
    pub fn record(&self, caused_at: Micros, acked_at: Micros) {
        let micros = (acked_at - caused_at).max(1) as u64;
        self.lifetime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(micros);
        let index = acked_at.div_euclid(MICROS_PER_SECOND * SLOT_SECONDS);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.is_empty() {
            // Allocated at the first acknowledgement: a channel that never pushes holds none.
            recent.extend((0..SLOTS).map(|_| Slot {
                index: i64::MIN,
                histogram: slot_histogram(),
            }));
        }
        let slot = &mut recent[index.rem_euclid(SLOTS as i64) as usize];
        if slot.index != index {
            slot.histogram.reset();
            slot.index = index;
        }
        slot.histogram.saturating_record(micros);
        metrics::histogram!("lockstep_propagation_seconds", "channel" => self.channel.clone())
            .record(micros as f64 / 1e6);
    }

    /// Percentiles since start in milliseconds, for `GET /v1/propagation`.
    pub fn summary(&self) -> Value {
        let h = self.lifetime.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "count": h.len(),
            "p50_ms": ms(&h, 0.5), "p90_ms": ms(&h, 0.9), "p99_ms": ms(&h, 0.99),
            "p999_ms": ms(&h, 0.999), "max_ms": h.max() as f64 / 1000.0,
        })
    }

    /// The last `SLOTS` slots up to `now` (the current, partial one included).
    pub fn recent(&self, now: Micros) -> Recent {
        let current = now.div_euclid(MICROS_PER_SECOND * SLOT_SECONDS);
        let first = current - SLOTS as i64 + 1;
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut window = slot_histogram();
        let mut last_minute = 0;
        let mut series = Vec::with_capacity(SLOTS);
        for index in first..=current {
            let slot = recent
                .get(index.rem_euclid(SLOTS as i64) as usize)
                .filter(|s| s.index == index && !s.histogram.is_empty());
            let count = slot.map_or(0, |s| s.histogram.len());
            if let Some(slot) = slot {
                // Same bounds and precision: adding cannot fail.
                let _ = window.add(&slot.histogram);
            }
            if index > current - 60 / SLOT_SECONDS {
                last_minute += count;
            }
            series.push(Point {
                at: index * SLOT_SECONDS,
                count,
                p50_ms: slot.map(|s| ms(&s.histogram, 0.5)),
                p99_ms: slot.map(|s| ms(&s.histogram, 0.99)),
            });
        }
        // The current slot is partial: the rate is over the time the last minute has had.
        let into_slot = now.rem_euclid(MICROS_PER_SECOND * SLOT_SECONDS) as f64 / 1e6;
        let seconds = (60 - SLOT_SECONDS) as f64 + into_slot.max(1.0);
        Recent {
            count: window.len(),
            per_second: last_minute as f64 / seconds,
            p50_ms: ms(&window, 0.5),
            p99_ms: ms(&window, 0.99),
            series,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = MICROS_PER_SECOND;

    #[test]
    fn the_window_keeps_five_minutes_and_forgets_what_is_older() {
        let timing = Timing::new("c");
        let t0 = 1_800_000_000 * S;
        // Ten minutes ago: 100 slow acknowledgements; now: 10 fast ones.
        for _ in 0..100 {
            timing.record(t0 - 600 * S - 2 * S, t0 - 600 * S);
        }
        for i in 0..10 {
            timing.record(t0 - i * S - 3_000, t0 - i * S);
        }
        let recent = timing.recent(t0);
        assert_eq!(recent.count, 10);
        assert!((recent.p99_ms - 3.0).abs() < 0.1, "{recent:?}");
        assert_eq!(recent.series.len(), SLOTS);
        assert_eq!(recent.series.iter().map(|p| p.count).sum::<u64>(), 10);
        assert!(recent.series.last().unwrap().p50_ms.is_some());
        assert!(recent.series[0].p50_ms.is_none());
        // Since start still has them all.
        assert_eq!(timing.summary()["count"], 110);
        // 10 in the last minute's 51 seconds (50 whole and the current slot's first).
        assert!((recent.per_second - 10.0 / 51.0).abs() < 0.01, "{recent:?}");
    }

    #[test]
    fn a_slot_is_reset_when_its_turn_comes_again() {
        let timing = Timing::new("c");
        let t0 = 1_800_000_000 * S;
        timing.record(t0 - S, t0);
        // Exactly SLOTS slots later, the same slot: the old count is not in it.
        let later = t0 + SLOTS as i64 * SLOT_SECONDS * S;
        timing.record(later - 5_000, later);
        let recent = timing.recent(later);
        assert_eq!(recent.count, 1);
        assert!((recent.p50_ms - 5.0).abs() < 0.1, "{recent:?}");
    }
}
