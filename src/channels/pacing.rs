//! Pacing a channel: a token bucket from its rate limit that halves its rate on a throttle
//! signal and creeps back on success, and exponential backoff with jitter for failures:
//! capped at 2 s for retryable ones, so a channel that comes back is converged within
//! seconds; up to 30 s for the rest (`HOPELESS_DELAY_MAX`).

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::RateLimit;

/// Backoff after a retryable failure: 100 ms doubling to this cap.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);
const RETRY_DELAY_MIN: Duration = Duration::from_millis(100);
/// Backoff after a failure that a retry of the same request cannot fix (a 4xx): the
/// values are kept and retried, slowly, so nothing is lost while an operator looks.
pub const HOPELESS_DELAY_MAX: Duration = Duration::from_secs(30);
/// The longest wait a channel can impose on us in one signal (`Retry-After`, a reset
/// time, a rate): longer ones are asked again after this, so a hostile or broken answer
/// (`Retry-After: 1e300`, a day) neither panics nor pauses a channel for good. The
/// signals it bounds: `Retry-After` as delay-seconds (RFC 9110 §10.2.3,
/// https://www.rfc-editor.org/rfc/rfc9110#field.retry-after); BigCommerce's
/// `X-Rate-Limit-Time-Reset-Ms` of a 30-second window
/// (https://docs.bigcommerce.com/developer/docs/overview/api-fundamentals/rate-limits);
/// Walmart's `x-next-replenishment-time`
/// (https://developer.walmart.com/us-marketplace/docs/throttling); Amazon's
/// `x-amzn-RateLimit-Limit` in requests per second
/// (https://developer-docs.amazon.com/sp-api/docs/usage-plans-and-rate-limits). None
/// documents a wait near 15 minutes: a longer one is asked again, not obeyed.
pub const WAIT_MAX: Duration = Duration::from_secs(15 * 60);

/// A wait from outside (seconds, possibly absurd) as a duration within `WAIT_MAX`.
pub fn wait_secs(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(seconds.min(WAIT_MAX.as_secs_f64()))
}

/// The rate never drops below this fraction of the configured one.
const RATE_FLOOR_FRACTION: f64 = 1.0 / 16.0;
/// Requests go out at this fraction of the channel's limit: the channel's own bucket runs
/// on its clock and sees our requests with network jitter, so pacing at exactly the limit
/// draws occasional 429s.
const HEADROOM: f64 = 0.9;

/// A token bucket that adapts to the channel's throttle signals.
pub struct TokenBucket {
    max_rate: f64,
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> TokenBucket {
        let rate = limit.requests_per_second * HEADROOM;
        TokenBucket {
            max_rate: rate,
            rate,
            burst: f64::from(limit.burst.max(1)),
            tokens: f64::from(limit.burst.max(1)),
            last: Instant::now(),
            paused_until: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if there is one now; otherwise says how long until there is (for a
    /// caller that has other work meanwhile, such as a pusher between bulk submissions).
    pub fn try_acquire(&mut self) -> Result<(), Duration> {
        match self.until_token() {
            None => {
                self.tokens -= 1.0;
                Ok(())
            }
            Some(wait) => Err(wait),
        }
    }

    /// How long until a token is there, without taking one (`None`: one is there now).
    pub fn until_token(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if let Some(until) = self.paused_until.filter(|until| *until > now) {
            return Some(until - now);
        }
        if self.paused_until.take().is_some() {
            self.last = now;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            return None;
        }
        Some(wait_secs((1.0 - self.tokens) / self.rate))
    }

    /// The channel said "slow down": wait `retry_after` (at most `WAIT_MAX`), then go at
    /// half the rate.
    pub fn throttled(&mut self, retry_after: Duration) {
        self.paused_until = Some(Instant::now() + retry_after.min(WAIT_MAX));
        self.rate = (self.rate / 2.0).max(self.max_rate * RATE_FLOOR_FRACTION);
        self.tokens = 0.0;
    }

    /// A request went through: win back some of the rate.
    pub fn succeeded(&mut self) {
        self.rate = (self.rate * 1.05).min(self.max_rate);
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// Exponential backoff with jitter.
#[derive(Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next try.
    pub fn next_delay(&mut self, retryable: bool) -> Duration {
        let cap = if retryable {
            RETRY_DELAY_MAX
        } else {
            HOPELESS_DELAY_MAX
        };
        let exp = RETRY_DELAY_MIN
            .saturating_mul(1 << self.failures.min(16))
            .min(cap);
        self.failures = self.failures.saturating_add(1);
        // Jitter between half and all of it, so channels do not retry in step.
        exp.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for a token as `Caller::call` does.
    async fn acquire(bucket: &mut TokenBucket) {
        while let Err(wait) = bucket.try_acquire() {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_holds_the_rate_and_halves_it_on_a_throttle() {
        let mut bucket = TokenBucket::new(RateLimit {
            requests_per_second: 5.0,
            burst: 5,
        });
        let start = Instant::now();
        for _ in 0..15 {
            acquire(&mut bucket).await;
        }
        // 5 from the burst, then 10 at 4.5/s (the limit less its headroom).
        let elapsed = start.elapsed().as_secs_f64();
        assert!((2.1..2.4).contains(&elapsed), "{elapsed}");

        bucket.throttled(Duration::from_secs(3));
        assert_eq!(bucket.rate(), 2.25);
        let before = Instant::now();
        acquire(&mut bucket).await;
        assert!(
            before.elapsed() >= Duration::from_secs(3),
            "Retry-After is honoured"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn try_acquire_says_how_long_until_the_next_token() {
        let mut bucket = TokenBucket::new(RateLimit {
            requests_per_second: 10.0 / 3600.0,
            burst: 2,
        });
        assert_eq!(bucket.try_acquire(), Ok(()));
        assert_eq!(bucket.try_acquire(), Ok(()));
        let wait = bucket.try_acquire().expect_err("the burst is spent");
        // One token per 400 s: 10 an hour, less the headroom.
        assert!((399.0..=401.0).contains(&wait.as_secs_f64()), "{wait:?}");
        tokio::time::advance(wait).await;
        assert_eq!(bucket.try_acquire(), Ok(()));
        bucket.throttled(Duration::from_secs(60));
        let paused = bucket.try_acquire().expect_err("throttled");
        assert!(paused <= Duration::from_secs(60) && paused > Duration::from_secs(59));
    }

    #[test]
    fn waits_from_outside_are_bounded() {
        assert_eq!(wait_secs(1e300), WAIT_MAX);
        assert_eq!(wait_secs(f64::INFINITY), WAIT_MAX);
        assert_eq!(wait_secs(f64::NAN), Duration::ZERO);
        assert_eq!(wait_secs(-5.0), Duration::ZERO);
        assert_eq!(wait_secs(1.5), Duration::from_millis(1_500));
    }

    #[test]
    fn backoff_grows_and_is_capped_at_two_seconds() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay(true)).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= RETRY_DELAY_MAX));
        assert!(delays[9] >= RETRY_DELAY_MAX / 2);
        backoff.reset();
        assert!(backoff.next_delay(true) <= Duration::from_millis(100));
    }
}
