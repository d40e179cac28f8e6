//! What the engine took lately, for the console: stock events per second over the last
//! minute (events that change stock, less redeliveries of keys an earlier batch took;
//! the settlements the shards make of `delta`-mode levels count too), and oversells
//! today (UTC). The shards add to it after each commit (one lock per batch, not per
//! event); the overview reads it once a second.
//!
//! Oversells are counted from when this process started: the audit holds every one for
//! good, but counting a day's from it at start would read the whole day's log. The
//! overview says since when it counts when that is later than midnight.

use std::sync::Mutex;

use serde_json::{json, Value};

use crate::clock::{now_micros, Micros, MICROS_PER_SECOND};

/// The minute's 60 whole seconds and the one filling now, which must not share a slot
/// with the oldest of them.
const SECONDS_KEPT: usize = 61;
const MINUTE: i64 = 60;
const MICROS_PER_DAY: Micros = 86_400 * MICROS_PER_SECOND;

pub struct Activity {
    started: Micros,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Per second (Unix seconds, events), a ring of the last minute.
    seconds: [(i64, u64); SECONDS_KEPT],
    /// The UTC day (days since the epoch) `oversells` counts.
    day: i64,
    oversells: u64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::starting_at(now_micros())
    }
}

impl Activity {
    pub fn starting_at(started: Micros) -> Activity {
        Activity {
            started,
            inner: Mutex::new(Inner {
                seconds: [(i64::MIN, 0); SECONDS_KEPT],
                day: started.div_euclid(MICROS_PER_DAY),
                oversells: 0,
            }),
        }
    }

    /// A batch committed at `now`: `events` that change stock, of which `oversells` sold
    /// what was not there.
    pub fn committed(&self, now: Micros, events: u64, oversells: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let second = now.div_euclid(MICROS_PER_SECOND);
        let slot = &mut inner.seconds[second.rem_euclid(SECONDS_KEPT as i64) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += events;
        // Shards commit in parallel: a batch stamped just before midnight may come after
        // one stamped just after. Its oversells were yesterday's.
        let day = now.div_euclid(MICROS_PER_DAY);
        if day > inner.day {
            inner.day = day;
            inner.oversells = 0;
        }
        if day == inner.day {
            inner.oversells += oversells;
        }
    }

    /// Events per second over the last 10 s and the last minute; oversells today, and
    /// since when they are counted (midnight UTC, or this process's start if later).
    pub fn json(&self, now: Micros) -> Value {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let second = now.div_euclid(MICROS_PER_SECOND);
        // Whole seconds only: the current one is still filling.
        let over = |seconds: i64| -> f64 {
            let events: u64 = inner
                .seconds
                .iter()
                .filter(|(s, _)| *s < second && *s >= second - seconds)
                .map(|(_, n)| n)
                .sum();
            let known = (second - self.started.div_euclid(MICROS_PER_SECOND)).clamp(1, seconds);
            events as f64 / known as f64
        };
        let day = now.div_euclid(MICROS_PER_DAY);
        let midnight = day * MICROS_PER_DAY;
        json!({
            "events_per_second": over(10),
            "events_per_second_minute": over(MINUTE),
            "oversells_today": if inner.day == day { inner.oversells } else { 0 },
            "oversells_since": self.started.max(midnight),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = MICROS_PER_SECOND;

    #[test]
    fn rates_cover_whole_seconds_and_oversells_restart_at_midnight() {
        let day = 20_000 * MICROS_PER_DAY;
        let activity = Activity::starting_at(day - 100 * S);
        // The oldest second of the minute that ends at midnight + 1 s.
        activity.committed(day - 59 * S, 10, 0);
        // 10 events a second for the 20 seconds before midnight, one oversell in them.
        for i in 1..=20 {
            activity.committed(day - i * S, 10, u64::from(i == 5));
        }
        let before = activity.json(day - 1);
        assert_eq!(before["oversells_today"], 1);
        assert_eq!(before["events_per_second"], 10.0, "{before}");
        // After midnight the day's count starts again; the rate does not.
        activity.committed(day + S / 2, 10, 2);
        // The second filling now does not push the minute's oldest out.
        activity.committed(day + S + S / 2, 10, 0);
        let after = activity.json(day + S + S / 2);
        assert_eq!(after["oversells_today"], 2);
        assert_eq!(after["oversells_since"], day);
        assert_eq!(after["events_per_second"], 10.0, "{after}");
        // Seconds day - 59 ... day: 10 + 200 + 10, the oldest kept beside the second
        // filling now.
        assert_eq!(after["events_per_second_minute"], 220.0 / 60.0, "{after}");
        // A batch stamped before midnight that comes late is not today's oversell.
        activity.committed(day - S, 0, 5);
        assert_eq!(activity.json(day + 2 * S)["oversells_today"], 2);
    }
}
