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
        traffic: loadgen::traffic::Traffic::default(),
        ..Plan::default()
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

#[test]
fn latency_with_poisson_arrivals_hot_skus_multi_line_orders_and_duplicates() {
    let plan = Plan {
        traffic: loadgen::traffic::Traffic {
            arrivals: loadgen::traffic::Arrivals::Poisson,
            skew: 1.0,
            lines: 3,
            duplicate_rate: 0.3,
            reorder_rate: 0.3,
            mix: vec![3.0, 1.0],
            faults: vec!["outage:1:0.5+1".parse().unwrap()],
            ship_after: None,
            ..Default::default()
        },
        ..plan()
    };
    let (report, passed) = loadgen::run::latency(&plan).unwrap();
    assert!(passed, "{report}");
    let orders = report["orders"].as_u64().unwrap();
    assert!(orders > 100, "{report}");
    assert!(
        report["order_lines"].as_u64().unwrap() > orders,
        "multi-line orders: {report}"
    );
    assert!(report["duplicates_sent"].as_u64().unwrap() > 10, "{report}");
    assert!(report["reordered_sent"].as_u64().unwrap() > 10, "{report}");
    assert!(
        report["pushes_refused"]["ch1"].as_u64().unwrap() > 0,
        "the outage refused pushes to ch1: {report}"
    );
    let from_ch0 = report["orders_by_channel"]["ch0"].as_u64().unwrap();
    assert!(from_ch0 * 10 > orders * 6, "the 3:1 mix: {report}");
    assert_eq!(report["lost"], 0);
    assert_eq!(report["unconverged"], 0, "{report}");
    assert_eq!(
        report["skus_miscounted"], 0,
        "every line committed once, duplicates included: {report}"
    );
    // The same run against an impossible bar fails its verdict.
    let strict = Plan {
        slo_p99: Some(Duration::from_micros(1)),
        ..plan
    };
    let (report, passed) = loadgen::run::latency(&strict).unwrap();
    assert!(!passed, "{report}");
}

#[test]
fn deliveries_in_flight_stay_within_the_connections_given() {
    // Every order delivered twice at once: two deliveries in flight unless bounded.
    let traffic = |connections| loadgen::traffic::Traffic {
        duplicate_rate: 1.0,
        connections,
        ..Default::default()
    };
    let most = |connections| {
        let plan = Plan {
            duration: Duration::from_secs(1),
            traffic: traffic(connections),
            ..plan()
        };
        let (report, _) = loadgen::run::latency(&plan).unwrap();
        assert_eq!(report["lost"], 0, "{report}");
        report["deliveries_in_flight_most"].as_u64().unwrap()
    };
    assert!(most(loadgen::traffic::CONNECTIONS) >= 2, "copies overlap");
    assert_eq!(most(1), 1, "one connection: one delivery at a time");
}

#[test]
fn ceiling_steps_up_until_a_step_fails_and_reports_the_rate_held() {
    let plan = Plan {
        duration: Duration::from_secs(1),
        ..plan()
    };
    let (report, passed) = loadgen::run::ceiling(&plan, 2).unwrap();
    assert!(passed, "{report}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{report}");
    assert_eq!(steps[1]["orders_per_minute"], 9_000, "1.5 times the last");
    assert_eq!(report["held_orders_per_minute"], 9_000, "{report}");
    // Each step says what it took of the machine, read from the spawned lockstep's
    // process and the generator's own, so a step that fails can name what ran out.
    for step in steps {
        let usage = &step["usage"];
        let busy = usage["machine_busy_percent"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&busy), "{usage}");
        assert!(usage["lockstep_cores"].as_f64().unwrap() > 0.0, "{usage}");
        assert!(usage["generator_cores"].as_f64().unwrap() > 0.0, "{usage}");
        assert_eq!(usage["connections_refused"], 0.0, "{usage}");
    }
    assert_eq!(
        report["limited_by"],
        serde_json::json!([]),
        "no step failed"
    );
}

#[test]
fn a_ceiling_step_whose_orders_wait_fails_on_its_pace_and_says_so() {
    // One connection for 5,000 orders due in a second: they wait their turn, answered
    // at a fraction of the rate due, whatever the step's p99 says.
    let plan = Plan {
        orders_per_minute: 300_000,
        duration: Duration::from_secs(1),
        traffic: loadgen::traffic::Traffic {
            connections: 1,
            ..Default::default()
        },
        ..plan()
    };
    let (report, passed) = loadgen::run::ceiling(&plan, 1).unwrap();
    assert!(!passed, "{report}");
    let limits = report["limited_by"].as_array().unwrap();
    assert!(
        limits
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("the pace: ")),
        "{report}"
    );
}

#[test]
fn soak_samples_lockstep_memory_and_finds_it_flat() {
    let plan = Plan {
        duration: Duration::from_secs(4),
        traffic: loadgen::traffic::Traffic {
            ship_after: Some(Duration::from_millis(500)),
            ..Default::default()
        },
        ..plan()
    };
    let (report, passed) = loadgen::run::soak(&plan, Duration::from_millis(200)).unwrap();
    assert!(passed, "{report}");
    let samples = report["rss_mib"].as_array().unwrap();
    assert!(samples.len() >= 12, "{report}");
    assert!(samples.iter().all(|s| s["mib"].as_f64().unwrap() > 1.0));
    assert_eq!(report["memory_flat"], true);
}

#[test]
fn mixed_converges_on_every_channel_kind_and_fails_when_one_never_takes_a_write() {
    let plan = Plan {
        orders_per_minute: 600,
        duration: Duration::from_secs(3),
        skus: 20,
        ..plan()
    };
    let settle = Duration::from_secs(30);
    let (report, passed) = loadgen::mixed::mixed_with(&plan, false, settle).unwrap();
    assert!(passed, "{report}");
    assert_eq!(report["orders_by_channel"].as_object().unwrap().len(), 9);
    assert_eq!(report["skus_miscounted"], 0, "{report}");
    let settle = Duration::from_secs(5);
    let (report, passed) = loadgen::mixed::mixed_with(&plan, true, settle).unwrap();
    assert!(
        !passed,
        "a channel that refuses every write must fail: {report}"
    );
    assert_eq!(
        report["unconverged_channels"],
        serde_json::json!(["walmart"]),
        "{report}"
    );
}
