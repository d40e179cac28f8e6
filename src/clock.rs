//! Time as the engine sees it: microseconds since the Unix epoch in UTC (`Micros`), and
//! the RFC 3339 text form used on the wire and in the audit log.
//!
//! The pure core never reads the clock; the I/O shell around it (shards, the HTTP edge,
//! channels, propagation, the demo) calls [`now_micros`] and passes the value down. That
//! keeps the core deterministic.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Microseconds since 1970-01-01T00:00:00Z. Signed so that differences are plain subtraction.
pub type Micros = i64;

pub const MICROS_PER_SECOND: Micros = 1_000_000;
pub const MICROS_PER_HOUR: Micros = 3_600 * MICROS_PER_SECOND;

/// Whether the wall clock was last seen more than a second behind engine time.
static BEHIND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The latest time this process has handed out (see `now_micros`).
static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The wall clock, for the I/O shell around the core, never going backwards and never
/// handing out one time twice: after a backward step it creeps on a microsecond a call
/// until the wall clock catches up, so an event stamped by the engine always lands after
/// one it stamped earlier (a movement would otherwise land before, or tie with, a count
/// it follows, and change nothing).
pub fn now_micros() -> Micros {
    let wall = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as Micros;
    monotonic(&LAST, wall)
}

/// `wall`, or just after the latest time handed out when the wall clock is not past it.
fn monotonic(last: &std::sync::atomic::AtomicI64, wall: Micros) -> Micros {
    use std::sync::atomic::Ordering::SeqCst;
    let before = last
        .fetch_update(SeqCst, SeqCst, |before| {
            Some(wall.max(before.saturating_add(1)))
        })
        .expect("the update always answers");
    // Said once a step, not once a call.
    let behind = before > wall + MICROS_PER_SECOND;
    if behind != BEHIND.swap(behind, SeqCst) && behind {
        tracing::warn!(
            behind_ms = (before - wall) / 1_000,
            "the wall clock stepped back: engine time creeps on until it catches up"
        );
    }
    wall.max(before.saturating_add(1))
}

/// Times handed out from now on are no earlier than `at` (the newest time in the data
/// directory's log, at start: a clock stepped back while lockstep was down must not
/// stamp new events before old ones).
pub fn not_before(at: Micros) {
    LAST.fetch_max(at, std::sync::atomic::Ordering::SeqCst);
}

/// The time idempotency keys expire against: the wall clock, but never ahead of `base`
/// (the log's newest time at start) plus the time this process has really run. A
/// forward step of the wall clock cannot make keys expire early; keys kept longer are
/// only kept longer.
pub fn expiry_now(base: Micros, since: std::time::Instant) -> Micros {
    let ran = Micros::try_from(since.elapsed().as_micros()).unwrap_or(Micros::MAX);
    now_micros().min(base.saturating_add(ran))
}

/// Parses an RFC 3339 timestamp (`2026-11-27T10:00:00Z`, offsets allowed) into `Micros`.
pub fn parse_rfc3339(text: &str) -> Option<Micros> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000).ok()
}

/// Parses an RFC 2822 time (BigCommerce's v2 orders: `Tue, 20 Nov 2012 00:00:00 +0000`).
pub fn parse_rfc2822(text: &str) -> Option<Micros> {
    let parsed =
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000).ok()
}

/// Formats `Micros` as RFC 3339 in UTC with microsecond precision.
pub fn format_rfc3339(at: Micros) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{at}us"))
}

/// Formats `Micros` as ISO 8601 in UTC with exactly three fractional digits
/// (`2026-11-30T10:15:43.511Z`), truncated: the form eBay's filters take. Truncating
/// moves a lower bound earlier, never later, so a filter from it misses nothing.
pub fn format_iso8601_millis(at: Micros) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000) else {
        return format!("@{at}us");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_honours_offsets() {
        let utc = parse_rfc3339("2026-11-27T10:00:00Z").unwrap();
        let offset = parse_rfc3339("2026-11-27T11:00:00+01:00").unwrap();
        assert_eq!(utc, offset);
        assert_eq!(parse_rfc3339(&format_rfc3339(utc + 7)), Some(utc + 7));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn time_never_goes_backwards() {
        let last = std::sync::atomic::AtomicI64::new(0);
        assert_eq!(monotonic(&last, 1_000), 1_000);
        assert_eq!(monotonic(&last, 5_000), 5_000);
        // A step back: time creeps on a microsecond a call, then follows the wall clock.
        assert_eq!(monotonic(&last, 2_000), 5_001);
        assert_eq!(monotonic(&last, 2_000), 5_002);
        assert_eq!(monotonic(&last, 6_000), 6_000);
        // Two calls within one microsecond still get two times.
        assert_eq!(monotonic(&last, 6_000), 6_001);
    }

    #[test]
    fn keys_expire_against_the_time_really_run_not_a_forward_step() {
        let start = std::time::Instant::now();
        // The log's newest time is a year ago (the wall clock jumped ahead, or lockstep
        // was down): expiry counts from there, plus the few microseconds run.
        let base = now_micros() - 365 * 24 * MICROS_PER_HOUR;
        let at = expiry_now(base, start);
        assert!(
            at >= base && at < base + 60 * MICROS_PER_SECOND,
            "{at} {base}"
        );
        // A recent base: the wall clock.
        let now = now_micros();
        assert!(expiry_now(now + MICROS_PER_HOUR, start) >= now);
    }

    #[test]
    fn milliseconds_are_three_digits_truncated() {
        let at = parse_rfc3339("2026-11-30T10:15:43.511999Z").unwrap();
        assert_eq!(format_iso8601_millis(at), "2026-11-30T10:15:43.511Z");
        let whole = parse_rfc3339("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(format_iso8601_millis(whole), "2026-01-02T03:04:05.000Z");
    }
}
