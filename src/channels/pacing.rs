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
/// The most requests a second a channel's own word sets a pace to (`named_rate`).
const RATE_NAMED_MAX: f64 = 100.0;

/// How a channel's calls are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// The channel publishes its limit: paced at it (less `HEADROOM`), halved on a
    /// throttle and won back on success.
    Published(RateLimit),
    /// The channel publishes none (WooCommerce core has no limit; hosts and firewalls
    /// do; a `webhook` receiver is anyone's server): start at `start`, rise while the
    /// channel answers as fast as it did, back off when its answers slow down, on 5xx
    /// and on 429, never above `ceiling` requests per second.
    Adaptive { start: RateLimit, ceiling: f64 },
}

/// The ceiling of an adaptive pace when no `rate_limit` is configured: the most a
/// channel without a published limit is sent unasked, however fast it answers.
pub const ADAPTIVE_CEILING: f64 = 50.0;

impl Pace {
    /// The pace with the channel's configured `rate_limit`: it replaces a published
    /// limit; for an adaptive pace it is where the pace starts and its ceiling (the
    /// operator says the channel takes that much: the pace backs off from it when the
    /// channel's answers slow down, and comes back).
    pub fn configured(self, limit: Option<RateLimit>) -> Pace {
        match (self, limit) {
            (pace, None) => pace,
            (Pace::Published(_), Some(limit)) => Pace::Published(limit),
            (Pace::Adaptive { .. }, Some(limit)) => Pace::Adaptive {
                start: limit,
                ceiling: limit.requests_per_second,
            },
        }
    }

    /// The rate to plan by (how much a pusher takes at once, how reads are spaced): the
    /// published limit, or where an adaptive pace starts.
    pub fn nominal(&self) -> RateLimit {
        match *self {
            Pace::Published(limit) => limit,
            Pace::Adaptive { start, .. } => start,
        }
    }
}

/// An answer slower than this multiple of the channel's fastest recent answer time (plus
/// `SLOWER_SLACK`) says it is working harder: the adaptive rate backs off.
const SLOWER_FACTOR: f64 = 2.0;
/// Answer times a few milliseconds apart are noise, not load.
const SLOWER_SLACK: Duration = Duration::from_millis(5);
/// The fastest answer time is forgotten this much per answer (1%), so a channel that has
/// become slower for good sets a new base within a few hundred answers.
const BASE_DRIFT: f64 = 1.01;
/// Additive increase: requests per second gained per second of answers at the base time.
const INCREASE_PER_S: f64 = 1.0;
/// Multiplicative decrease on a slower answer (a 5xx halves, as a throttle does).
const SLOWER_DECREASE: f64 = 0.9;

/// What an adaptive bucket remembers of the channel's answers.
#[derive(Debug, Default)]
struct Answers {
    /// The fastest recent answer time, in seconds (drifting up by `BASE_DRIFT`).
    base_s: Option<f64>,
}

/// A token bucket that adapts to the channel's throttle signals (and, for an adaptive
/// pace, to its answer times: AIMD, see `answered`).
pub struct TokenBucket {
    max_rate: f64,
    /// The rate never drops below this.
    floor: f64,
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
    /// `Some` for an adaptive pace.
    answers: Option<Answers>,
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> TokenBucket {
        let rate = limit.requests_per_second * HEADROOM;
        TokenBucket {
            max_rate: rate,
            floor: rate * RATE_FLOOR_FRACTION,
            rate,
            burst: f64::from(limit.burst.max(1)),
            tokens: f64::from(limit.burst.max(1)),
            last: Instant::now(),
            paused_until: None,
            answers: None,
        }
    }

    /// The bucket of a pace: an adaptive one starts at its start rate (less `HEADROOM`)
    /// and may rise to its ceiling (less `HEADROOM`).
    pub fn for_pace(pace: Pace) -> TokenBucket {
        match pace {
            Pace::Published(limit) => TokenBucket::new(limit),
            Pace::Adaptive { start, ceiling } => {
                let mut bucket = TokenBucket::new(start);
                bucket.max_rate = (ceiling * HEADROOM).max(bucket.rate);
                bucket.answers = Some(Answers::default());
                bucket
            }
        }
    }

    /// A call was answered (`status` 0: no answer at all) after `took`. An adaptive
    /// bucket steers by it, AIMD: while answers come as fast as the fastest recent one
    /// it gains `INCREASE_PER_S` requests per second each second; a slower answer takes
    /// a tenth off, a 5xx or no answer half (a 429 is `throttled`, which halves it with
    /// the channel's `Retry-After`). A published pace ignores it.
    pub fn answered(&mut self, took: Duration, status: u16) {
        let Some(answers) = self.answers.as_mut() else {
            return;
        };
        if status == 429 {
            return;
        }
        if status == 0 || status >= 500 {
            self.rate = (self.rate / 2.0).max(self.floor);
            return;
        }
        let took_s = took.as_secs_f64();
        let base = answers
            .base_s
            .map_or(took_s, |base| (base * BASE_DRIFT).min(took_s));
        answers.base_s = Some(base);
        if took_s > base * SLOWER_FACTOR + SLOWER_SLACK.as_secs_f64() {
            self.rate = (self.rate * SLOWER_DECREASE).max(self.floor);
        } else {
            // One answer of `rate` a second: +INCREASE_PER_S over a second of them.
            self.rate = (self.rate + INCREASE_PER_S / self.rate).min(self.max_rate);
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
        self.rate = (self.rate / 2.0).max(self.floor);
        self.tokens = 0.0;
    }

    /// A request went through: win back some of the rate (a published pace; an adaptive
    /// one rises only by `answered`, as fast as the channel's answers allow).
    pub fn succeeded(&mut self) {
        if self.answers.is_none() {
            self.rate = (self.rate * 1.05).min(self.max_rate);
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The channel named the rate it applies to us (Amazon's `x-amzn-RateLimit-Limit`):
    /// paced at it from now on (less `HEADROOM`), up or down, the burst kept. A number no
    /// rate can be (not finite, not above zero) changes nothing; one past `RATE_NAMED_MAX`
    /// is held to it.
    pub fn named_rate(&mut self, requests_per_second: f64) {
        if !(requests_per_second.is_finite() && requests_per_second > 0.0) {
            return;
        }
        self.refill(Instant::now());
        let rate = requests_per_second.min(RATE_NAMED_MAX) * HEADROOM;
        self.max_rate = rate;
        self.floor = rate * RATE_FLOOR_FRACTION;
        self.rate = rate;
    }

    /// How long the channel's last "slow down" still holds every call, if it does.
    pub fn throttled_for(&self) -> Option<Duration> {
        let now = Instant::now();
        self.paused_until
            .filter(|until| *until > now)
            .map(|until| until - now)
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

        assert_eq!(bucket.throttled_for(), None);
        bucket.throttled(Duration::from_secs(3));
        assert_eq!(bucket.rate(), 2.25);
        // What the console shows: how long the channel's "slow down" still holds.
        assert_eq!(bucket.throttled_for(), Some(Duration::from_secs(3)));
        let before = Instant::now();
        acquire(&mut bucket).await;
        assert!(
            before.elapsed() >= Duration::from_secs(3),
            "Retry-After is honoured"
        );
        assert_eq!(bucket.throttled_for(), None);
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

    fn adaptive(start: f64, ceiling: f64) -> TokenBucket {
        TokenBucket::for_pace(Pace::Adaptive {
            start: RateLimit {
                requests_per_second: start,
                burst: 1,
            },
            ceiling,
        })
    }

    #[test]
    fn an_adaptive_pace_rises_while_answers_stay_fast_and_stops_at_its_ceiling() {
        let mut bucket = adaptive(5.0, 20.0);
        assert_eq!(bucket.rate(), 4.5);
        let fast = Duration::from_millis(20);
        // Ten seconds of answers at the rate: about +1/s each second.
        for _ in 0..60 {
            let rate = bucket.rate();
            bucket.answered(fast, 200);
            assert!(bucket.rate() > rate, "rises on a fast answer");
        }
        assert!((8.0..13.0).contains(&bucket.rate()), "{}", bucket.rate());
        for _ in 0..10_000 {
            bucket.answered(fast, 200);
        }
        assert_eq!(bucket.rate(), 18.0, "its ceiling, less the headroom");
        // Published or adaptive, `succeeded` never lifts an adaptive pace by itself.
        let mut idle = adaptive(5.0, 20.0);
        idle.succeeded();
        assert_eq!(idle.rate(), 4.5);
    }

    #[test]
    fn an_adaptive_pace_backs_off_on_slower_answers_and_5xx_but_not_below_its_floor() {
        let mut bucket = adaptive(10.0, 50.0);
        for _ in 0..200 {
            bucket.answered(Duration::from_millis(20), 200);
        }
        let high = bucket.rate();
        // The channel slows down under our load: answers four times slower.
        for _ in 0..5 {
            bucket.answered(Duration::from_millis(80), 200);
        }
        let slowed = bucket.rate();
        assert!(
            (slowed - high * 0.9f64.powi(5)).abs() < 1e-9,
            "{high} -> {slowed}"
        );
        bucket.answered(Duration::from_millis(20), 503);
        assert!((bucket.rate() - slowed / 2.0).abs() < 1e-9);
        bucket.answered(Duration::from_secs(30), 0);
        for _ in 0..50 {
            bucket.answered(Duration::ZERO, 0);
        }
        assert_eq!(
            bucket.rate(),
            9.0 / 16.0,
            "the floor: a sixteenth of the start"
        );
        // A throttle is `throttled`'s to answer (with its Retry-After), not halved twice.
        let before = bucket.rate();
        bucket.answered(Duration::from_millis(20), 429);
        assert_eq!(bucket.rate(), before);
    }

    #[test]
    fn a_published_pace_ignores_answer_times_and_a_configured_limit_caps_an_adaptive_one() {
        let mut published = TokenBucket::for_pace(Pace::Published(RateLimit {
            requests_per_second: 5.0,
            burst: 5,
        }));
        published.answered(Duration::from_secs(5), 200);
        published.answered(Duration::from_millis(1), 503);
        assert_eq!(published.rate(), 4.5);
        let limit = RateLimit {
            requests_per_second: 3.0,
            burst: 2,
        };
        let pace = Pace::Adaptive {
            start: RateLimit {
                requests_per_second: 5.0,
                burst: 10,
            },
            ceiling: ADAPTIVE_CEILING,
        };
        assert_eq!(
            pace.configured(Some(limit)),
            Pace::Adaptive {
                start: limit,
                ceiling: 3.0
            }
        );
        assert_eq!(pace.configured(None), pace);
        // A configured limit above the kind's start is where the pace starts: the
        // operator says the channel takes it.
        let high = RateLimit {
            requests_per_second: 100.0,
            burst: 50,
        };
        assert_eq!(
            pace.configured(Some(high)),
            Pace::Adaptive {
                start: high,
                ceiling: 100.0
            }
        );
        assert_eq!(
            Pace::Published(limit)
                .configured(Some(RateLimit {
                    requests_per_second: 9.0,
                    burst: 9
                }))
                .nominal()
                .requests_per_second,
            9.0
        );
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
