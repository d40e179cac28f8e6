//! The shape of generated traffic: when orders arrive (a constant rate or a Poisson
//! process), which SKUs they name (uniform, or Zipf-skewed towards a few hot ones), how
//! many lines they carry, which channels they come from, how often a channel delivers
//! one twice or late (out of order), and the channel faults scheduled during the run.

use std::time::Duration;

use rand::Rng;

/// How arrivals are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Arrivals {
    /// Evenly: one every 1/rate.
    #[default]
    Constant,
    /// A Poisson process at the rate: exponential gaps, so bursts and lulls happen.
    Poisson,
}

impl std::str::FromStr for Arrivals {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "constant" => Ok(Arrivals::Constant),
            "poisson" => Ok(Arrivals::Poisson),
            other => Err(format!("{other:?}: arrivals are constant or poisson")),
        }
    }
}

/// Everything about the traffic besides its rate and length.
#[derive(Clone, Debug, PartialEq)]
pub struct Traffic {
    pub arrivals: Arrivals,
    /// Zipf exponent over the SKUs: 0 is uniform; 1 makes the hottest SKU about as busy
    /// as the next ten together (at 1,000 SKUs).
    pub skew: f64,
    /// Each order carries 1 to this many lines (distinct SKUs), uniformly.
    pub lines: usize,
    /// Share of orders the channel delivers a second time (a duplicate, at once).
    pub duplicate_rate: f64,
    /// Share of orders delivered late, by a random 0 to 500 ms, so they arrive after
    /// orders placed after them.
    pub reorder_rate: f64,
    /// Relative share of orders per channel (empty: all channels alike).
    pub mix: Vec<f64>,
    /// Faults of the simulated channels during the run.
    pub faults: Vec<FaultWindow>,
    /// Each order ships this long after it was placed (from the same channel), so the
    /// open lines stay bounded; `None`: orders stay open.
    pub ship_after: Option<Duration>,
    /// Most deliveries (order webhooks and shipments) in flight at once, all channels
    /// together, as a channel's sender holds a bounded number of connections: a delivery
    /// due while all are busy waits for one, and the wait counts in its latency (measured
    /// from when it was due). Unbounded, a lockstep that fell behind would be sent a new
    /// connection per waiting order, and their setup would take the CPU it needs to
    /// catch up (the generator's CPU per order rose by half in a failing ceiling step).
    pub connections: usize,
}

/// `Traffic::connections` by default: what the generator's HTTP client keeps open to
/// lockstep between requests.
pub const CONNECTIONS: usize = 256;

/// Most a reordered delivery is held back.
pub const REORDER_MAX: Duration = Duration::from_millis(500);

/// What a channel does wrong for a while.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultKind {
    /// Every push answered 503.
    Outage,
    /// Every push answered 429 with `Retry-After: 1`.
    Throttle,
    /// Every push answered after this long.
    Slow(Duration),
}

/// A fault of channel `channel` from `start` into the run, for `length`. Written
/// `KIND:CHANNEL:START+LENGTH` in seconds, KIND being `outage`, `429` or `slow-MS`
/// (`outage:1:5+10`: channel 1 answers 503 from 5 s to 15 s; `slow-200:2:0+30`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultWindow {
    pub kind: FaultKind,
    pub channel: usize,
    pub start: Duration,
    pub length: Duration,
}

impl std::str::FromStr for FaultWindow {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let form = || {
            format!("{text:?}: a fault is KIND:CHANNEL:START+LENGTH (outage:1:5+10, 429:1:5+3, slow-200:1:0+30)")
        };
        let mut parts = text.split(':');
        let (Some(kind), Some(channel), Some(window), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(form());
        };
        let kind = match kind {
            "outage" => FaultKind::Outage,
            "429" => FaultKind::Throttle,
            slow => {
                let ms = slow
                    .strip_prefix("slow-")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .ok_or_else(form)?;
                FaultKind::Slow(Duration::from_millis(ms))
            }
        };
        let channel = channel.parse().map_err(|_| form())?;
        let (start, length) = window.split_once('+').ok_or_else(form)?;
        let secs = |s: &str| s.parse::<f64>().ok().filter(|s| *s >= 0.0 && s.is_finite());
        let (Some(start), Some(length)) = (secs(start), secs(length)) else {
            return Err(form());
        };
        Ok(FaultWindow {
            kind,
            channel,
            start: Duration::from_secs_f64(start),
            length: Duration::from_secs_f64(length),
        })
    }
}

/// Which channel each order comes from: weighted by `mix`, or in turn.
pub fn channel_of(n: usize, channels: usize, mix: &[f64], rng: &mut impl Rng) -> usize {
    let total: f64 = mix.iter().take(channels).sum();
    if mix.is_empty() || total <= 0.0 {
        return n % channels;
    }
    let mut u = rng.random::<f64>() * total;
    for (c, weight) in mix.iter().take(channels).enumerate() {
        if u < *weight {
            return c;
        }
        u -= weight;
    }
    channels - 1
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            arrivals: Arrivals::Constant,
            skew: 0.0,
            lines: 1,
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            mix: Vec::new(),
            faults: Vec::new(),
            ship_after: None,
            connections: CONNECTIONS,
        }
    }
}

/// When each order is due, from the start, for `per_second` over `length`.
pub fn schedule(
    arrivals: Arrivals,
    per_second: f64,
    length: Duration,
    rng: &mut impl Rng,
) -> Vec<Duration> {
    let end = length.as_secs_f64();
    match arrivals {
        Arrivals::Constant => (0..(end * per_second) as u64)
            .map(|n| Duration::from_secs_f64(n as f64 / per_second))
            .collect(),
        Arrivals::Poisson => {
            let mut due = Vec::new();
            // Inverse transform: gaps of -ln(U)/rate, U in (0, 1].
            let mut at = -(1.0 - rng.random::<f64>()).ln() / per_second;
            while at < end {
                due.push(Duration::from_secs_f64(at));
                at += -(1.0 - rng.random::<f64>()).ln() / per_second;
            }
            due
        }
    }
}

/// A Zipf sampler over `n` items: item k has weight 1/(k+1)^s.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n.max(1))
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = *self.cumulative.last().expect("at least one item");
        let u = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|c| *c <= u)
            .min(self.cumulative.len() - 1)
    }

    /// 1 to `lines` distinct items.
    pub fn order(&self, lines: usize, rng: &mut impl Rng) -> Vec<usize> {
        let want = rng
            .random_range(1..=lines.max(1))
            .min(self.cumulative.len());
        let mut items: Vec<usize> = Vec::with_capacity(want);
        // Distinct lines; a hot SKU is drawn again and again, so give up after a while.
        for _ in 0..want * 20 {
            if items.len() == want {
                break;
            }
            let k = self.sample(rng);
            if !items.contains(&k) {
                items.push(k);
            }
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn schedules_keep_their_rate_and_poisson_varies_its_gaps() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let constant = schedule(Arrivals::Constant, 100.0, Duration::from_secs(10), &mut rng);
        assert_eq!(constant.len(), 1000);
        assert_eq!(constant[0], Duration::ZERO);
        let poisson = schedule(Arrivals::Poisson, 100.0, Duration::from_secs(10), &mut rng);
        assert!((900..1100).contains(&poisson.len()), "{}", poisson.len());
        let gaps: Vec<f64> = poisson
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let short = gaps.iter().filter(|g| **g < 0.002).count();
        assert!(
            short > 100,
            "exponential gaps: many much shorter than the mean ({short})"
        );
    }

    #[test]
    fn fault_windows_and_channel_mixes_read_as_written() {
        let fault: FaultWindow = "outage:1:5+10".parse().unwrap();
        assert_eq!(
            fault,
            FaultWindow {
                kind: FaultKind::Outage,
                channel: 1,
                start: Duration::from_secs(5),
                length: Duration::from_secs(10)
            }
        );
        let slow: FaultWindow = "slow-200:2:0+1.5".parse().unwrap();
        assert_eq!(slow.kind, FaultKind::Slow(Duration::from_millis(200)));
        assert_eq!(slow.length, Duration::from_millis(1_500));
        assert!("outage:1:5".parse::<FaultWindow>().is_err());
        assert!("melt:1:5+1".parse::<FaultWindow>().is_err());
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let from_zero = (0..1000)
            .filter(|n| channel_of(*n, 3, &[8.0, 1.0, 1.0], &mut rng) == 0)
            .count();
        assert!((750..850).contains(&from_zero), "{from_zero}");
        assert_eq!(channel_of(4, 3, &[], &mut rng), 1);
    }

    #[test]
    fn zipf_favours_the_first_items_and_orders_have_distinct_lines() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let zipf = Zipf::new(1000, 1.0);
        let hits = (0..10_000).filter(|_| zipf.sample(&mut rng) == 0).count();
        // 1/H(1000) ≈ 13.4 % of draws go to the hottest item.
        assert!((1100..1600).contains(&hits), "{hits}");
        let uniform = Zipf::new(1000, 0.0);
        let hits = (0..10_000)
            .filter(|_| uniform.sample(&mut rng) == 0)
            .count();
        assert!(hits < 40, "{hits}");
        for _ in 0..100 {
            let order = zipf.order(3, &mut rng);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), order.len());
            assert!((1..=3).contains(&order.len()));
        }
    }
}
