//! What a run used of the machine, and so what a `ceiling` step ran out of: the CPU of
//! the whole machine, of lockstep's process and of the generator's own (read from `/proc`
//! before and after the traffic), and the connections lockstep closed at its connection
//! limit (its `lockstep_connections_refused_total`). Everything shares one machine here,
//! so a step that fails with the machine busy throughout names the CPU, and says who
//! took it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on Linux's x86 and ARM ABIs.
const TICKS_PER_SECOND: f64 = 100.0;

/// The machine busier than this share of all its cores over a step is out of CPU: what
/// is left is the scheduler's slack, and queues grow in every process.
const BUSY_FULL: f64 = 0.90;

/// What is counted at one moment.
pub struct Snapshot {
    at: Instant,
    /// The machine's busy and total ticks, all cores.
    machine: Option<(u64, u64)>,
    /// Ticks of lockstep's process (when the generator started it) and of this one.
    lockstep: Option<u64>,
    generator: Option<u64>,
    connections_refused: Option<f64>,
}

impl Snapshot {
    /// Counts now: lockstep's process `pid` when known, its `/metrics` at `base`.
    pub fn take(pid: Option<u32>, base: &str) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            machine: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| machine_ticks(&s)),
            lockstep: pid.and_then(process_ticks),
            generator: process_ticks(std::process::id()),
            connections_refused: connections_refused(base),
        }
    }
}

/// Busy and total ticks of all cores from `/proc/stat`'s first line (`cpu user nice
/// system idle iowait irq softirq steal ...`): idle and iowait are not busy; guest time
/// is inside user already.
fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    Some((total - fields[3] - fields[4], total))
}

/// User and system ticks of process `pid` (`/proc/PID/stat` fields 14 and 15, counted
/// after the command name, which may hold spaces, in parentheses).
fn process_ticks(pid: u32) -> Option<u64> {
    ticks_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn ticks_of(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (the state) is the first after the name: utime is 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Lockstep's count of connections closed at its limit; `None` when it does not answer
/// within a few seconds (then the step says nothing of it).
fn connections_refused(base: &str) -> Option<f64> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    // A refusal (an admin token the generator does not hold) says nothing either.
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("lockstep_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        // Not counted yet: none refused.
        .or(Some(0.0))
}

/// What a run used between two snapshots.
pub struct Usage {
    pub cores: usize,
    /// The machine's busy share of all its cores.
    pub machine_busy: Option<f64>,
    /// Cores' worth of CPU each process took.
    pub lockstep_cores: Option<f64>,
    pub generator_cores: Option<f64>,
    pub connections_refused: Option<f64>,
}

impl Usage {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Usage {
        let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let cores_of = |a: Option<u64>, b: Option<u64>| {
            Some(b?.saturating_sub(a?) as f64 / TICKS_PER_SECOND / seconds)
        };
        Usage {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            machine_busy: match (before.machine, after.machine) {
                (Some((busy_a, total_a)), Some((busy_b, total_b))) if total_b > total_a => {
                    Some(busy_b.saturating_sub(busy_a) as f64 / (total_b - total_a) as f64)
                }
                _ => None,
            },
            lockstep_cores: cores_of(before.lockstep, after.lockstep),
            generator_cores: cores_of(before.generator, after.generator),
            connections_refused: match (before.connections_refused, after.connections_refused) {
                (Some(a), Some(b)) => Some((b - a).max(0.0)),
                _ => None,
            },
        }
    }

    pub fn to_json(&self) -> Value {
        let round = |v: Option<f64>, places: i32| {
            v.map(|v| (v * 10f64.powi(places)).round() / 10f64.powi(places))
        };
        json!({
            "cores": self.cores,
            "machine_busy_percent": round(self.machine_busy.map(|b| b * 100.0), 1),
            "lockstep_cores": round(self.lockstep_cores, 2),
            "generator_cores": round(self.generator_cores, 2),
            "connections_refused": self.connections_refused,
        })
    }

    /// The limits this run met, each said plainly; empty when it met none of them.
    pub fn limits(&self) -> Vec<String> {
        let mut limits = Vec::new();
        if let Some(busy) = self.machine_busy.filter(|b| *b >= BUSY_FULL) {
            let cores = |v: Option<f64>| v.map_or("?".to_string(), |c| format!("{c:.2}"));
            limits.push(format!(
                "the machine's CPU: {:.0}% of its {} cores busy (lockstep {} cores, the \
                 generator and its simulators {})",
                busy * 100.0,
                self.cores,
                cores(self.lockstep_cores),
                cores(self.generator_cores),
            ));
        }
        if let Some(refused) = self.connections_refused.filter(|n| *n > 0.0) {
            limits.push(format!(
                "lockstep's connection limit: {refused:.0} connections closed at once \
                 (answers slower than orders came, each waiting order holding a connection)"
            ));
        }
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_line_counts_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
        assert_eq!(machine_ticks(stat), Some((160, 980)));
        assert_eq!(machine_ticks("intr 1 2 3\n"), None);
        assert_eq!(machine_ticks("cpu  1 x 3 4 5\n"), None);
    }

    #[test]
    fn a_process_s_ticks_are_read_past_a_name_with_spaces() {
        // After the name: the state, ten more fields, then utime 17 and stime 23.
        let stat = "4242 (tokio (rt) 1) S 1 2 3 4 5 6 7 8 9 10 17 23 0 0 20 0 8 0 99";
        assert_eq!(ticks_of(stat), Some(40));
        assert_eq!(ticks_of("4242 (cut short) S 1 2"), None);
        // And this very process is read.
        assert!(process_ticks(std::process::id()).is_some());
    }

    #[test]
    fn a_busy_machine_names_the_cpu_and_refusals_name_the_connection_limit() {
        let usage = Usage {
            cores: 2,
            machine_busy: Some(0.97),
            lockstep_cores: Some(1.21),
            generator_cores: Some(0.72),
            connections_refused: Some(12_720.0),
        };
        let limits = usage.limits();
        assert_eq!(limits.len(), 2, "{limits:?}");
        assert!(limits[0].contains("97% of its 2 cores busy (lockstep 1.21 cores"));
        assert!(limits[1].contains("12720 connections"));
        let idle = Usage {
            machine_busy: Some(0.55),
            connections_refused: Some(0.0),
            ..usage
        };
        assert!(idle.limits().is_empty(), "{:?}", idle.limits());
    }
}
