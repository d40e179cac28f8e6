//! The loadgen scenarios, run briefly against the real binary: each passes against a
//! working channel, and its verdict fails against a deliberately broken simulator.

use std::time::Duration;

use loadgen::run::{duplicates, outage, Plan};

fn plan() -> Plan {
    Plan {
        spawn: env!("CARGO_BIN_EXE_lockstep").to_string(),
        orders_per_minute: 6_000,
        duration: Duration::from_secs(2),
        skus: 20,
        channels: 2,
        slo_p99: None,
    }
}

#[test]
fn the_outage_verdict_passes_on_recovery_and_fails_when_the_channel_never_returns() {
    let (report, passed) = outage(&plan(), Duration::from_secs(2), false).unwrap();
    assert!(passed, "{report}");
    assert!(report["orders"].as_u64().unwrap() > 50, "{report}");
    let (report, passed) = outage(&plan(), Duration::from_secs(2), true).unwrap();
    assert!(
        !passed,
        "a channel that never recovers must fail the verdict: {report}"
    );
}

#[test]
fn the_duplicates_verdict_passes_with_stable_ids_and_fails_without_them() {
    let (report, passed) = duplicates(&plan(), 60, false).unwrap();
    assert!(passed, "{report}");
    let (report, passed) = duplicates(&plan(), 60, true).unwrap();
    assert!(
        !passed,
        "copies nobody can tell apart must fail the verdict: {report}"
    );
    assert_eq!(report["skus_wrong"], 20, "{report}");
}

#[test]
fn contention_counts_every_order_and_records_exactly_the_oversells() {
    let plan = Plan {
        channels: 3,
        ..plan()
    };
    let (report, passed) = loadgen::run::contention(&plan, 30, 45).unwrap();
    assert!(passed, "{report}");
    assert_eq!(report["oversells_recorded"], 15, "{report}");
    assert_eq!(report["available"], -15, "{report}");
}

#[test]
fn every_order_is_in_the_audit_when_it_is_acknowledged() {
    let (report, passed) = loadgen::run::audit(&plan(), 40).unwrap();
    assert!(passed, "{report}");
}
