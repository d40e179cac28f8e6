//! Property tests of the pure core (DESIGN §2): the final state is a function of the set
//! of events, whatever their arrival order and batching; duplicates never change state;
//! a release or shipment never raises available before its placement is seen;
//! `committed` never goes negative; an oversell is recorded exactly when a placement finds
//! less available than it asks for.

use std::collections::HashMap;

use lockstep::clock::{Micros, MICROS_PER_SECOND};
use lockstep::core::event::{Event, EventKind, FirstResult, LineRef, Outcome};
use lockstep::core::{apply, CoreConfig, Effects, Input, ShardState};
use proptest::prelude::*;

const T0: Micros = 1_800_000_000 * MICROS_PER_SECOND;
const SKUS: [&str; 2] = ["A", "B"];

/// What the property tests generate, before it becomes events.
#[derive(Clone, Debug)]
enum Fact {
    Count {
        sku: usize,
        minute: i64,
        source: usize,
        n: i64,
    },
    Adjust {
        sku: usize,
        minute: i64,
        d: i64,
    },
    Return {
        sku: usize,
        minute: i64,
        q: i64,
    },
    Line {
        sku: usize,
        order: u8,
        line: u8,
        transition: u8,
        minute: i64,
        q: i64,
    },
}

fn fact() -> impl Strategy<Value = Fact> {
    // Minutes in a one-hour window, coarse so that equal timestamps are common.
    let minute = || (0i64..60).prop_map(|m| m / 5 * 5);
    prop_oneof![
        1 => (0..2usize, minute(), 0..2usize, 0i64..40).prop_map(|(sku, minute, source, n)| Fact::Count { sku, minute, source, n }),
        1 => (0..2usize, minute(), -8i64..8).prop_filter("non-zero", |(_, _, d)| *d != 0)
            .prop_map(|(sku, minute, d)| Fact::Adjust { sku, minute, d }),
        1 => (0..2usize, minute(), 1i64..4).prop_map(|(sku, minute, q)| Fact::Return { sku, minute, q }),
        3 => (0..2usize, 0u8..5, 0u8..2, 0u8..3, minute(), 1i64..6)
            .prop_map(|(sku, order, line, transition, minute, q)| Fact::Line { sku, order, line, transition, minute, q }),
    ]
}

fn to_event(fact: &Fact, i: usize) -> Event {
    let at = |minute: i64| T0 + minute * 60 * MICROS_PER_SECOND;
    let base = |sku: usize, kind, qty, source: &str, minute, key: String| Event {
        sku: SKUS[sku].into(),
        kind,
        qty,
        source: source.into(),
        source_ts: at(minute),
        received_at: at(minute),
        key,
        line: None,
        origin: None,
    };
    match *fact {
        Fact::Count {
            sku,
            minute,
            source,
            n,
        } => base(
            sku,
            EventKind::Counted,
            n,
            ["erp", "wms"][source],
            minute,
            format!("count-{i}"),
        ),
        Fact::Adjust { sku, minute, d } => base(
            sku,
            EventKind::Adjusted,
            d,
            "erp",
            minute,
            format!("adj-{i}"),
        ),
        Fact::Return { sku, minute, q } => base(
            sku,
            EventKind::Returned,
            q,
            "erp",
            minute,
            format!("ret-{i}"),
        ),
        Fact::Line {
            sku,
            order,
            line,
            transition,
            minute,
            q,
        } => {
            let kind = [
                EventKind::OrderPlaced,
                EventKind::OrderCancelled,
                EventKind::OrderShipped,
            ][transition as usize];
            let line_ref = LineRef {
                order_id: format!("o{order}"),
                line_id: format!("l{line}"),
            };
            let key = format!(
                "shop/{}/{}/{}",
                line_ref.order_id,
                line_ref.line_id,
                kind.transition()
            );
            Event {
                line: Some(line_ref),
                ..base(sku, kind, q, "shop", minute, key)
            }
        }
    }
}

/// A set of distinct events (one per key, as the ingest derives keys) plus duplicates of
/// some of them, in generated order.
fn events_with_duplicates() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
    (
        prop::collection::vec(fact(), 1..40),
        prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    )
        .prop_map(|(facts, dup_picks)| {
            let mut distinct: Vec<Event> = Vec::new();
            for (i, f) in facts.iter().enumerate() {
                let e = to_event(f, i);
                // One fact per order-line transition: the first one generated wins.
                if !distinct.iter().any(|d| d.sku == e.sku && d.key == e.key) {
                    distinct.push(e);
                }
            }
            let mut all = distinct.clone();
            for pick in dup_picks {
                all.push(distinct[pick.index(distinct.len())].clone());
            }
            (distinct, all)
        })
}

/// Applies `events` in the given order, cut into batches of the given sizes, with a key
/// store between batches as the shard keeps one. Checks the per-step properties.
fn run(events: &[Event], batch_sizes: &[usize]) -> ShardState {
    let config = CoreConfig::default();
    let now = T0 + 2 * 3_600 * MICROS_PER_SECOND;
    let mut state = ShardState::default();
    // Keyed as the store keys them: whose key (SKU, source) and the key.
    let mut keys: HashMap<(String, String, String), FirstResult> = HashMap::new();
    let mut seq = 1;
    let mut rest = events;
    let mut sizes = batch_sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        let inputs: Vec<Input> = batch
            .iter()
            .map(|e| Input {
                event: e.clone(),
                prior: keys
                    .get(&(e.sku.clone(), e.source.clone(), e.key.clone()))
                    .copied(),
            })
            .collect();
        let effects = apply(&mut state, &inputs, now, seq, &config);
        seq += batch.len() as u64;
        assert_eq!(effects.records.len(), batch.len());
        for (record, input) in effects.records.iter().zip(&inputs) {
            match record.outcome {
                Outcome::Duplicate => {
                    assert_eq!(
                        record.available_before, record.available_after,
                        "a duplicate changed state"
                    );
                    assert!(!record.oversell);
                }
                Outcome::Held => {
                    assert!(
                        record.available_after <= record.available_before,
                        "held event raised available: {record:?}"
                    );
                }
                Outcome::Applied if input.event.kind == EventKind::OrderPlaced => {
                    assert_eq!(
                        record.oversell,
                        record.available_before < record.qty,
                        "{record:?}"
                    );
                }
                Outcome::Applied if input.event.kind == EventKind::OrderPlacedTotal => {
                    // A raise holds the units it adds, and oversells when they are more
                    // than were available.
                    let added = record.available_before - record.available_after;
                    assert!(added > 0, "{record:?}");
                    assert_eq!(record.oversell, record.available_before < added);
                }
                _ => assert!(!record.oversell, "only placements oversell: {record:?}"),
            }
            if input.event.kind == EventKind::OrderCancelled && record.outcome != Outcome::Applied {
                assert!(record.available_after <= record.available_before);
            }
        }
        for new in effects.first_results {
            keys.insert((new.sku, new.source, new.key), new.first);
        }
        for sku in state.values() {
            sku.check_invariants().unwrap();
        }
    }
    state
}

/// The oracle: DESIGN §2's formulas evaluated over the set of distinct events.
fn expected(distinct: &[Event], sku: &str) -> (i64, i64) {
    let events: Vec<&Event> = distinct.iter().filter(|e| e.sku == sku).collect();
    let count = events
        .iter()
        .filter(|e| e.kind == EventKind::Counted)
        .max_by(|a, b| (a.source_ts, &a.source, &a.key).cmp(&(b.source_ts, &b.source, &b.key)));
    let movement = |e: &&&Event| match e.kind {
        EventKind::Adjusted | EventKind::Returned => Some(e.qty),
        EventKind::OrderShipped => Some(-e.qty),
        _ => None,
    };
    let on_hand = match count {
        Some(c) => {
            c.qty
                + events
                    .iter()
                    .filter(|e| e.source_ts >= c.source_ts)
                    .filter_map(|e| movement(&e))
                    .sum::<i64>()
        }
        None => events.iter().filter_map(|e| movement(&e)).sum(),
    };
    let mut lines: HashMap<&LineRef, (Option<i64>, i64)> = HashMap::new();
    for e in &events {
        if let Some(line) = &e.line {
            let entry = lines.entry(line).or_default();
            match e.kind {
                EventKind::OrderPlaced => entry.0 = Some(e.qty),
                _ => entry.1 += e.qty,
            }
        }
    }
    let committed = lines
        .values()
        .map(|(placed, out)| placed.map_or(0, |p| (p - out).max(0)))
        .sum();
    (on_hand, committed)
}

/// An event on SKU "A" at T0 (an order line's transitions on line 1 of order `key`).
fn event_at_t0(kind: EventKind, qty: i64, key: &str, source: &str) -> Event {
    Event {
        sku: "A".into(),
        kind,
        qty,
        source: source.into(),
        source_ts: T0,
        received_at: T0,
        key: key.into(),
        line: kind.is_order_line().then(|| LineRef {
            order_id: key.into(),
            line_id: "1".into(),
        }),
        origin: None,
    }
}

/// One channel, "shop", ignoring the levels it reports: the set-up of the channel tests.
fn shop_config(buffer: i64, compare_and_set: bool) -> CoreConfig {
    CoreConfig {
        channels: lockstep::core::ChannelRules::new(vec![lockstep::core::ChannelRule {
            name: "shop".into(),
            buffer,
            max: None,
            inventory_updates: lockstep::config::InventoryUpdates::Ignore,
            compare_and_set,
        }]),
        ..CoreConfig::default()
    }
}

fn stock(state: &ShardState, sku: &str) -> (i64, i64) {
    state
        .get(sku)
        .map_or((0, 0), |s| (s.on_hand(), s.committed))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn final_state_depends_only_on_the_set_of_events(
        (distinct, all) in events_with_duplicates(),
        order_a in any::<u64>(),
        order_b in any::<u64>(),
        sizes_a in prop::collection::vec(1usize..6, 1..5),
        sizes_b in prop::collection::vec(1usize..6, 1..5),
    ) {
        let shuffle = |seed: u64| {
            let mut v = all.clone();
            let mut x = seed | 1;
            for i in (1..v.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                v.swap(i, (x % (i as u64 + 1)) as usize);
            }
            v
        };
        let a = run(&shuffle(order_a), &sizes_a);
        let b = run(&shuffle(order_b), &sizes_b);
        for sku in SKUS {
            prop_assert_eq!(stock(&a, sku), stock(&b, sku), "SKU {}", sku);
            prop_assert_eq!(stock(&a, sku), expected(&distinct, sku), "SKU {} against the formula", sku);
        }
    }

    #[test]
    fn replaying_duplicates_changes_nothing((distinct, _) in events_with_duplicates(), sizes in prop::collection::vec(1usize..6, 1..5)) {
        let once = run(&distinct, &sizes);
        let twice: Vec<Event> = distinct.iter().chain(distinct.iter()).cloned().collect();
        let again = run(&twice, &sizes);
        for sku in SKUS {
            prop_assert_eq!(stock(&once, sku), stock(&again, sku));
        }
    }
}

#[test]
fn a_cancel_before_its_placement_is_held_then_netted() {
    let at = T0;
    let line = LineRef {
        order_id: "9".into(),
        line_id: "1".into(),
    };
    let mk = |kind, key: &str| Event {
        sku: "A".into(),
        kind,
        qty: 2,
        source: "shop".into(),
        source_ts: at,
        received_at: at,
        key: key.into(),
        line: Some(line.clone()),
        origin: None,
    };
    let mut state = ShardState::default();
    let count = Event {
        kind: EventKind::Counted,
        qty: 5,
        line: None,
        ..mk(EventKind::Counted, "c")
    };
    let cancel = mk(EventKind::OrderCancelled, "x");
    let place = mk(EventKind::OrderPlaced, "p");
    let fx = apply(
        &mut state,
        &[
            Input {
                event: count,
                prior: None,
            },
            Input {
                event: cancel,
                prior: None,
            },
        ],
        at,
        1,
        &CoreConfig::default(),
    );
    assert_eq!(fx.records[1].outcome, Outcome::Held);
    assert_eq!(
        state["A"].available(),
        5,
        "the held release did not raise available"
    );
    let fx = apply(
        &mut state,
        &[Input {
            event: place,
            prior: None,
        }],
        at,
        3,
        &CoreConfig::default(),
    );
    assert_eq!(fx.records[0].outcome, Outcome::Applied);
    assert_eq!(
        (state["A"].committed, state["A"].available()),
        (0, 5),
        "placement netted with its release"
    );
    // Kept closed until the horizon: a late running total of the line finds it.
    assert!(state["A"].lines().values().all(|l| l.is_closed()));
}

#[test]
fn counts_older_than_the_horizon_are_stale_and_old_movements_fold() {
    let config = CoreConfig {
        horizon_us: 3_600 * MICROS_PER_SECOND,
        ..CoreConfig::default()
    };
    let now = T0 + 10 * 3_600 * MICROS_PER_SECOND;
    let ev = |kind, qty, hours_ago: i64, key: &str| Event {
        sku: "A".into(),
        kind,
        qty,
        source: "erp".into(),
        source_ts: now - hours_ago * 3_600 * MICROS_PER_SECOND,
        received_at: now,
        key: key.into(),
        line: None,
        origin: None,
    };
    let mut state = ShardState::default();
    let inputs = [
        Input {
            event: ev(EventKind::Adjusted, 4, 5, "old-move"),
            prior: None,
        },
        Input {
            event: ev(EventKind::Counted, 100, 2, "old-count"),
            prior: None,
        },
        Input {
            event: ev(EventKind::Adjusted, 3, 0, "new-move"),
            prior: None,
        },
    ];
    let fx = apply(&mut state, &inputs, now, 1, &config);
    assert_eq!(fx.records[1].outcome, Outcome::Stale);
    assert_eq!(state["A"].on_hand(), 7);
    assert_eq!(
        state["A"].deltas().map(|d| d.len()),
        Some(1),
        "the movement older than the horizon was folded"
    );
    state["A"].check_invariants().unwrap();
}

#[test]
fn a_channels_own_sale_near_our_write_is_pushed_once_more_and_a_later_one_is_not() {
    let config = shop_config(0, false);
    let ev = |kind, qty, ts, key: &str| Event {
        sku: "A".into(),
        kind,
        qty,
        source: "shop".into(),
        source_ts: ts,
        received_at: ts,
        key: key.into(),
        line: (kind == EventKind::OrderPlaced).then(|| LineRef {
            order_id: key.into(),
            line_id: "1".into(),
        }),
        origin: None,
    };
    let input = |event| Input { event, prior: None };
    let mut state = ShardState::default();
    let count = Event {
        source: "api".into(),
        ..ev(EventKind::Counted, 10, T0, "c")
    };
    let acked = T0 + MICROS_PER_SECOND;
    apply(&mut state, &[input(count)], T0, 1, &config);
    apply(
        &mut state,
        &[input(ev(EventKind::Pushed, 10, acked, "p"))],
        acked,
        2,
        &config,
    );
    // Stamped half a second after our acknowledged write: it may have been overwritten.
    let near = apply(
        &mut state,
        &[input(ev(
            EventKind::OrderPlaced,
            1,
            acked + MICROS_PER_SECOND / 2,
            "o1",
        ))],
        acked,
        3,
        &config,
    );
    assert_eq!(state["A"].channels[0].expected(), Some(9));
    assert_eq!(near.pushes.len(), 1, "pushed its target once more");
    assert_eq!(near.pushes[0].target, 9);
    assert!(state["A"].recheck().is_empty(), "never kept");
    // Stamped 5 s after it: the channel already shows it; nothing to push.
    let later = apply(
        &mut state,
        &[input(ev(
            EventKind::OrderPlaced,
            1,
            acked + 5 * MICROS_PER_SECOND,
            "o2",
        ))],
        acked,
        4,
        &config,
    );
    assert_eq!(state["A"].channels[0].expected(), Some(8));
    assert!(later.pushes.is_empty(), "{:?}", later.pushes);
}

/// Steps `state` through events of SKU "A", each a tenth of a second after the last.
fn stepper(
    config: CoreConfig,
) -> impl FnMut(&mut ShardState, EventKind, i64, &str, &str) -> Effects {
    let mut at = T0;
    let mut seq = 1;
    move |state: &mut ShardState, kind, qty, key: &str, source: &str| {
        at += MICROS_PER_SECOND / 10;
        let event = Event {
            sku: "A".into(),
            kind,
            qty,
            source: source.into(),
            source_ts: at,
            received_at: at,
            key: key.into(),
            line: kind.is_order_line().then(|| LineRef {
                order_id: key.into(),
                line_id: "1".into(),
            }),
            origin: None,
        };
        let fx = apply(state, &[Input { event, prior: None }], at, seq, &config);
        seq += 1;
        fx
    }
}

#[test]
fn a_difference_read_from_a_channel_nets_its_own_late_orders_both_ways() {
    let mut state = ShardState::default();
    let mut step = stepper(shop_config(0, true));
    step(&mut state, EventKind::Counted, 10, "c", "api");
    step(&mut state, EventKind::Pushed, 10, "p1", "shop");
    // Read showing 8 where 10 was expected: 2 units of its own sales are on their way.
    let fx = step(&mut state, EventKind::StaleRead, 8, "r1", "shop");
    let view = &state["A"].channels[0];
    assert_eq!(view.unexplained(), 2);
    assert_eq!(fx.pushes[0].target, 8, "the push leaves the gone units out");
    step(&mut state, EventKind::Pushed, 8, "p2", "shop");
    let fx = step(&mut state, EventKind::OrderPlaced, 2, "o1", "shop");
    let view = &state["A"].channels[0];
    assert_eq!(
        (view.expected(), view.unexplained()),
        (Some(8), 0),
        "netted, not lowered again"
    );
    assert!(fx.pushes.is_empty(), "it already shows 8: {:?}", fx.pushes);
    // Read showing 9 where 8 was expected: a cancellation on its way. Never shown early.
    let fx = step(&mut state, EventKind::StaleRead, 9, "r2", "shop");
    assert_eq!(state["A"].channels[0].unexplained(), -1);
    assert!(
        fx.pushes.is_empty(),
        "an excess is not pushed before its event: {:?}",
        fx.pushes
    );
    step(&mut state, EventKind::Pushed, 8, "p3", "shop");
    let fx = step(&mut state, EventKind::OrderCancelled, 1, "o1", "shop");
    let view = &state["A"].channels[0];
    assert_eq!((view.expected(), view.unexplained()), (Some(8), 0));
    assert_eq!(
        fx.pushes[0].target, 9,
        "our write overwrote the restock: push it"
    );
}

/// The orders a read found missing, arriving before any write of ours overwrote their
/// units: the channel still shows them sold, so they lower what it is expected to show
/// (and are explained); a later read then finds nothing unexplained, and the channel
/// is not held below its target.
#[test]
fn orders_a_read_found_that_come_before_our_write_lower_the_expectation() {
    let mut state = ShardState::default();
    let mut step = stepper(shop_config(0, true));
    step(&mut state, EventKind::Counted, 10, "c", "api");
    step(&mut state, EventKind::Pushed, 10, "p1", "shop");
    // Read showing 7 where 10 was expected; our write that follows goes stale again
    // (the store is selling right now), so nothing of ours lands.
    step(&mut state, EventKind::StaleRead, 7, "r1", "shop");
    for n in 0..3 {
        step(
            &mut state,
            EventKind::OrderPlaced,
            1,
            &format!("o{n}"),
            "shop",
        );
    }
    let view = &state["A"].channels[0];
    assert_eq!(
        (view.expected(), view.unexplained()),
        (Some(7), 0),
        "the channel shows 7, as expected now"
    );
    // The next read finds it showing 7: no difference, and its target is 7.
    let fx = step(&mut state, EventKind::StaleRead, 7, "r2", "shop");
    assert_eq!(state["A"].channels[0].unexplained(), 0);
    assert!(fx.pushes.is_empty(), "{:?}", fx.pushes);
    assert_eq!(state["A"].available(), 7);
}

#[test]
fn stale_reads_keep_what_a_write_since_already_left_out_and_never_count_twice() {
    let mut state = ShardState::default();
    let mut step = stepper(shop_config(0, true));
    step(&mut state, EventKind::Counted, 10, "c", "api");
    step(&mut state, EventKind::Pushed, 10, "p1", "shop");
    // Two reads in a row, no write between: the second difference includes the first.
    step(&mut state, EventKind::StaleRead, 8, "r1", "shop");
    step(&mut state, EventKind::StaleRead, 7, "r2", "shop");
    assert_eq!(state["A"].channels[0].unexplained(), 3, "not 2 + 3");
    // Our write of 7 lands; the store then sells 1 more before we hear of any sale.
    step(&mut state, EventKind::Pushed, 7, "p2", "shop");
    let fx = step(&mut state, EventKind::StaleRead, 6, "r3", "shop");
    assert_eq!(
        state["A"].channels[0].unexplained(),
        4,
        "the 3 our write left out are still to come, plus 1 new"
    );
    assert_eq!(fx.pushes[0].target, 6);
    step(&mut state, EventKind::Pushed, 6, "p3", "shop");
    // The orders for those 4 units arrive: all netted, nothing pushed; 6 = available.
    for (n, qty) in [1, 2, 1].into_iter().enumerate() {
        let fx = step(
            &mut state,
            EventKind::OrderPlaced,
            qty,
            &format!("o{n}"),
            "shop",
        );
        assert!(fx.pushes.is_empty(), "{:?}", fx.pushes);
    }
    let view = &state["A"].channels[0];
    assert_eq!((view.expected(), view.unexplained()), (Some(6), 0));
    assert_eq!(state["A"].available(), 6);
}

#[test]
fn a_level_showing_the_target_before_its_acknowledgement_is_an_echo() {
    // A channel can echo our write before the pusher has recorded the acknowledgement.
    let config = shop_config(2, false);
    let ev = event_at_t0;
    let input = |event| Input { event, prior: None };
    let mut state = ShardState::default();
    apply(
        &mut state,
        &[input(ev(EventKind::Counted, 10, "c", "api"))],
        T0,
        1,
        &config,
    );
    // The target is 10 less the buffer: 8; nothing is acknowledged yet.
    assert!(state["A"].channels.iter().all(|c| c.expected().is_none()));
    let echo = apply(
        &mut state,
        &[input(ev(EventKind::Level, 8, "l1", "shop"))],
        T0,
        2,
        &config,
    );
    assert_eq!(echo.results[0].outcome, Outcome::Echo);
    let edit = apply(
        &mut state,
        &[input(ev(EventKind::Level, 5, "l2", "shop"))],
        T0,
        3,
        &config,
    );
    assert_eq!(
        edit.results[0].outcome,
        Outcome::Drift,
        "an edit is still drift"
    );
    assert_eq!(state["A"].on_hand(), 10);
}

/// A line's life as a channel reports it in snapshots: placed `q`, then running totals of
/// released and shipped units that only grow, each snapshot seen by a webhook, a poll, or
/// both, in any order.
fn line_life() -> impl Strategy<Value = (i64, Vec<(i64, i64)>)> {
    (1i64..12, prop::collection::vec((0i64..4, 0i64..4), 1..6)).prop_map(|(q, steps)| {
        let (mut released, mut shipped) = (0, 0);
        let snapshots = steps
            .into_iter()
            .map(|(r, s)| {
                released = (released + r).min(q - shipped);
                shipped = (shipped + s).min(q - released);
                (released, shipped)
            })
            .collect();
        (q, snapshots)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn running_totals_count_each_unit_once_whatever_the_order(
        (q, snapshots) in line_life(),
        seed in any::<u64>(),
        sizes in prop::collection::vec(1usize..4, 1..4),
    ) {
        let line = LineRef { order_id: "o1".into(), line_id: "l1".into() };
        let at = |i: usize| T0 + i as Micros * MICROS_PER_SECOND;
        let mk = |kind: EventKind, qty: i64, i: usize| Event {
            sku: "A".into(),
            kind,
            qty,
            source: "shop".into(),
            source_ts: at(i),
            received_at: at(i),
            key: format!("shop/o1/l1/{}/{qty}", kind.transition()),
            line: Some(line.clone()),
            origin: None,
        };
        let mut events = vec![mk(EventKind::OrderPlaced, q, 0)];
        for (i, (r, s)) in snapshots.iter().enumerate() {
            // Each snapshot twice: the webhook's and the poll's.
            for _ in 0..2 {
                events.push(mk(EventKind::OrderReleasedTotal, *r, i + 1));
                events.push(mk(EventKind::OrderShippedTotal, *s, i + 1));
            }
        }
        let mut x = seed | 1;
        for i in (1..events.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            events.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let (released, shipped) = *snapshots.last().unwrap();
        let state = run(&events, &sizes);
        prop_assert_eq!(stock(&state, "A"), (-shipped, q - released - shipped));
    }
}

/// Applies one event on SKU "A" at T0 (line 1 of `order`, keyed by its transition and
/// quantity) as a batch of its own, the next sequence number from `seq`: its outcome and
/// whether it oversold.
fn feed(
    state: &mut ShardState,
    seq: &mut u64,
    (kind, qty, order): (EventKind, i64, &str),
) -> (Outcome, bool) {
    let mut event = event_at_t0(kind, qty, order, "shop");
    event.key = format!("{order}/{}/{qty}", kind.transition());
    let fx = apply(
        state,
        &[Input { event, prior: None }],
        T0,
        *seq,
        &CoreConfig::default(),
    );
    *seq += 1;
    (fx.records[0].outcome, fx.records[0].oversell)
}

#[test]
fn a_running_total_adds_only_what_the_line_has_not_counted() {
    let mut state = ShardState::default();
    let mut seq = 1;
    let mut feed =
        |state: &mut ShardState, kind, qty: i64| feed(state, &mut seq, (kind, qty, "9")).0;
    feed(&mut state, EventKind::Counted, 10);
    feed(&mut state, EventKind::OrderPlaced, 5);
    // One unit shipped, then a second (the total says 2, not 2 more), then an older
    // report of 1 read late: nothing.
    feed(&mut state, EventKind::OrderShippedTotal, 1);
    feed(&mut state, EventKind::OrderShippedTotal, 2);
    assert_eq!(
        feed(&mut state, EventKind::OrderShippedTotal, 1),
        Outcome::Applied
    );
    assert_eq!((state["A"].on_hand(), state["A"].committed), (8, 3));
    // A unit sent back by the seller's edit and one cancelled: released 2 in all.
    feed(&mut state, EventKind::OrderReleasedTotal, 2);
    feed(&mut state, EventKind::OrderReleasedTotal, 2);
    assert_eq!((state["A"].on_hand(), state["A"].committed), (8, 1));
    // The line's own units: an additive release of the last unit closes it.
    feed(&mut state, EventKind::OrderCancelled, 1);
    assert_eq!((state["A"].committed, state["A"].available()), (0, 8));
    assert!(state["A"].lines().is_empty(), "a closed line is not kept");
}

#[test]
fn a_line_a_running_total_closed_is_kept_until_the_horizon() {
    let mut state = ShardState::default();
    let config = CoreConfig::default();
    let input = |state: &mut ShardState, kind, qty: i64, now: Micros, seq: u64| {
        let mut event = event_at_t0(kind, qty, "9", "shop");
        event.key = format!("{}/{qty}", kind.transition());
        event.source_ts = now;
        event.received_at = now;
        apply(state, &[Input { event, prior: None }], now, seq, &config);
    };
    input(&mut state, EventKind::OrderPlaced, 2, T0, 1);
    input(&mut state, EventKind::OrderShippedTotal, 2, T0, 2);
    // The older snapshot's webhook, after the newer: the closed line is still known.
    input(&mut state, EventKind::OrderShippedTotal, 1, T0, 3);
    assert_eq!((state["A"].on_hand(), state["A"].committed), (-2, 0));
    assert_eq!(state["A"].lines().len(), 1);
    let later = T0 + config.horizon_us + 3_600 * MICROS_PER_SECOND;
    input(&mut state, EventKind::Adjusted, 5, later, 4);
    assert!(state["A"].lines().is_empty(), "pruned past the horizon");
    assert_eq!(state["A"].on_hand(), 3);
}

/// An order line edited before it ships, as a channel that describes the order whole
/// sends it: each snapshot is its placement (first seen wins) and its quantity as a
/// running total (`placed_to/{qty}`), and the shipping snapshot ships the quantity then.
fn edited_line(quantities: &[i64], ships: bool) -> Vec<Vec<Event>> {
    let at = |i: usize| T0 + i as Micros * MICROS_PER_SECOND;
    let mk = |kind: EventKind, qty: i64, i: usize| {
        let mut event = event_at_t0(kind, qty, "9", "shop");
        event.source_ts = at(i);
        event.received_at = at(i);
        event.key = match kind {
            EventKind::OrderPlacedTotal => format!("shop/9/1/placed_to/{qty}"),
            _ => format!("shop/9/1/{}", kind.transition()),
        };
        event
    };
    let snapshot = |q: i64, i: usize| {
        vec![
            mk(EventKind::OrderPlaced, q, i),
            mk(EventKind::OrderPlacedTotal, q, i),
        ]
    };
    let mut snapshots: Vec<Vec<Event>> = quantities
        .iter()
        .enumerate()
        .map(|(i, q)| snapshot(*q, i))
        .collect();
    if ships {
        let last = *quantities.last().unwrap();
        let mut shipped = snapshot(last, quantities.len());
        shipped.push(mk(EventKind::OrderShipped, last, quantities.len()));
        snapshots.push(shipped);
    }
    snapshots
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A raised quantity holds its units whatever order the snapshots arrive in (each
    /// whole, twice: the webhook's and the poll's), and a line that shipped stays
    /// shipped: an older snapshot read after it places nothing again.
    #[test]
    fn an_edited_quantity_holds_the_largest_and_a_shipped_line_nothing_whatever_the_order(
        first in 1i64..5,
        raises in prop::collection::vec(0i64..4, 0..5),
        ships in any::<bool>(),
        seed in any::<u64>(),
        sizes in prop::collection::vec(1usize..4, 1..4),
    ) {
        let quantities: Vec<i64> = raises
            .iter()
            .scan(first, |q, r| { *q += r; Some(*q) })
            .collect::<Vec<_>>();
        let quantities = [vec![first], quantities].concat();
        let mut snapshots = edited_line(&quantities, ships);
        snapshots.extend(snapshots.clone());
        let mut x = seed | 1;
        for i in (1..snapshots.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            snapshots.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let events: Vec<Event> = snapshots.concat();
        let largest = *quantities.last().unwrap();
        let state = run(&events, &sizes);
        let want = if ships { (-largest, 0) } else { (0, largest) };
        prop_assert_eq!(stock(&state, "A"), want);
    }
}

#[test]
fn a_raise_never_places_lowers_or_reopens_a_line() {
    let mut state = ShardState::default();
    let mut seq = 1;
    let mut feed = |state: &mut ShardState, kind, qty: i64, order: &str| {
        feed(state, &mut seq, (kind, qty, order))
    };
    feed(&mut state, EventKind::Counted, 10, "count");
    // A line the SKU does not hold is not placed by its quantity alone.
    assert_eq!(
        feed(&mut state, EventKind::OrderPlacedTotal, 4, "1"),
        (Outcome::Stale, false)
    );
    assert!(state["A"].lines().is_empty());
    // Nor one waiting for its placement (its shipment came first).
    feed(&mut state, EventKind::OrderShippedTotal, 1, "2");
    assert_eq!(
        feed(&mut state, EventKind::OrderPlacedTotal, 3, "2"),
        (Outcome::Stale, false)
    );
    assert_eq!(state["A"].committed, 0);
    feed(&mut state, EventKind::OrderPlaced, 3, "2");
    assert_eq!(state["A"].committed, 2, "3 placed, 1 shipped");
    // Raised from 3 to 5: two more held; the same or a lower quantity changes nothing.
    assert_eq!(
        feed(&mut state, EventKind::OrderPlacedTotal, 5, "2"),
        (Outcome::Applied, false)
    );
    assert_eq!((state["A"].committed, state["A"].available()), (4, 5));
    for qty in [5, 4, 1] {
        assert_eq!(
            feed(&mut state, EventKind::OrderPlacedTotal, qty, "2").0,
            Outcome::Duplicate
        );
    }
    assert_eq!(state["A"].committed, 4);
    // A raise beyond what is available is an oversell, as a placement is.
    assert_eq!(
        feed(&mut state, EventKind::OrderPlacedTotal, 12, "2"),
        (Outcome::Applied, true)
    );
    assert_eq!((state["A"].committed, state["A"].available()), (11, -2));
    // Closed by its totals (kept until the horizon): an edit read after it reopens nothing.
    feed(&mut state, EventKind::OrderShippedTotal, 12, "2");
    assert_eq!(state["A"].lines().len(), 1, "kept closed");
    assert_eq!(
        feed(&mut state, EventKind::OrderPlacedTotal, 13, "2"),
        (Outcome::Stale, false)
    );
    assert_eq!((state["A"].on_hand(), state["A"].committed), (-2, 0));
}

#[test]
fn a_reconciliation_repair_is_pushed_compared_with_the_read_from_its_detection() {
    let config = shop_config(0, true);
    let ev = |kind, qty, ts, key: &str, source: &str| Event {
        sku: "A".into(),
        kind,
        qty,
        source: source.into(),
        source_ts: ts,
        received_at: ts,
        key: key.into(),
        line: None,
        origin: None,
    };
    let input = |event| Input { event, prior: None };
    let mut state = ShardState::default();
    apply(
        &mut state,
        &[input(ev(EventKind::Counted, 10, T0, "c", "api"))],
        T0,
        1,
        &config,
    );
    let acked = T0 + MICROS_PER_SECOND;
    apply(
        &mut state,
        &[input(ev(EventKind::Pushed, 10, acked, "p", "shop"))],
        acked,
        2,
        &config,
    );
    // Much later, reconciliation reads the channel showing 14 (an edit on the channel):
    // the shard pushes the target again, compared with 14 and timed from the read, not
    // from the count. What the channel is expected to show is not the read's to change.
    let found = T0 + 600 * MICROS_PER_SECOND;
    let repair = apply(
        &mut state,
        &[input(ev(EventKind::Reconciled, 14, found, "r1", "shop"))],
        found,
        3,
        &config,
    );
    assert_eq!(repair.pushes.len(), 1, "{:?}", repair.pushes);
    assert_eq!(
        (
            repair.pushes[0].target,
            repair.pushes[0].expected,
            repair.pushes[0].caused_at
        ),
        (10, Some(14), found)
    );
    assert_eq!(state["A"].channels[0].expected(), Some(10));
    assert!(state["A"].repaired().is_empty(), "never kept");
    assert_eq!(stock(&state, "A"), (10, 0), "a repair changes no stock");
    // A channel that does not list the SKU (-1): pushed with no compare value.
    let unlisted = apply(
        &mut state,
        &[input(ev(
            EventKind::Reconciled,
            -1,
            found + 1,
            "r2",
            "shop",
        ))],
        found + 1,
        4,
        &config,
    );
    assert_eq!(unlisted.pushes.len(), 1);
    assert_eq!(unlisted.pushes[0].expected, None);
    // Without a repair, nothing to push: the channel is expected to show its target.
    let quiet = apply(
        &mut state,
        &[input(ev(EventKind::Pushed, 10, found + 2, "p2", "shop"))],
        found + 2,
        5,
        &config,
    );
    assert!(quiet.pushes.is_empty(), "{:?}", quiet.pushes);
}

/// An acknowledged delta moves what the channel is expected to show by the change, from
/// what it is expected to show now: a sale the channel made after the delta landed, whose
/// order came first, stays counted (set to the answer's level, it would be forgotten).
#[test]
fn an_acknowledged_change_keeps_the_sales_taken_before_it() {
    let mut state = ShardState::default();
    let mut step = stepper(shop_config(0, true));
    step(&mut state, EventKind::Counted, 10, "c", "api");
    step(&mut state, EventKind::Pushed, 10, "p1", "shop");
    // A count of 9 goes out as a delta of -1; the store sells one right after it lands,
    // and that order is taken before the delta's answer.
    step(&mut state, EventKind::Counted, 9, "c2", "api");
    step(&mut state, EventKind::OrderPlaced, 1, "o1", "shop");
    let fx = step(&mut state, EventKind::PushedChange, -1, "p2", "shop");
    let view = &state["A"].channels[0];
    assert_eq!(
        view.expected(),
        Some(8),
        "10 - 1 (the order) - 1 (the delta)"
    );
    assert_eq!(state["A"].available(), 8);
    assert!(fx.pushes.is_empty(), "{:?}", fx.pushes);
    assert_eq!(fx.caught_up.len(), 1, "what is queued is out of date");
}

/// The stale compare's read, recorded just before the delta's acknowledgement: units it
/// found missing (sales before the delta landed, orders still on their way) come off
/// and are netted when their orders come; a read that found more than expected had
/// counted sales after the delta landed, already taken, and is forgotten.
#[test]
fn an_acknowledged_change_after_a_read_takes_off_what_the_read_found_missing() {
    let mut state = ShardState::default();
    let mut step = stepper(shop_config(0, true));
    step(&mut state, EventKind::Counted, 10, "c", "api");
    step(&mut state, EventKind::Pushed, 10, "p1", "shop");
    step(&mut state, EventKind::Counted, 9, "c2", "api");
    // The store had sold 1 (order on its way): read 9 where 10 was expected; the delta
    // of -1 lands on it, 8.
    step(&mut state, EventKind::StaleRead, 9, "r1", "shop");
    step(&mut state, EventKind::PushedChange, -1, "p2", "shop");
    let view = &state["A"].channels[0];
    assert_eq!((view.expected(), view.unexplained()), (Some(8), 1));
    let fx = step(&mut state, EventKind::OrderPlaced, 1, "o1", "shop");
    let view = &state["A"].channels[0];
    assert_eq!(
        (view.expected(), view.unexplained()),
        (Some(8), 0),
        "netted"
    );
    assert!(
        fx.pushes.is_empty(),
        "it shows 8, its target: {:?}",
        fx.pushes
    );

    // A count of 8 (available 7) goes as a delta of -1 and lands on the store's 8; the
    // store sells 1 right after, and that order comes before the read is recorded, so
    // the read (8 before the delta) finds one more than the 7 expected by then.
    step(&mut state, EventKind::Counted, 8, "c3", "api");
    step(&mut state, EventKind::OrderPlaced, 1, "o2", "shop");
    step(&mut state, EventKind::StaleRead, 8, "r2", "shop");
    assert_eq!(state["A"].channels[0].unexplained(), -1);
    step(&mut state, EventKind::PushedChange, -1, "p3", "shop");
    let view = &state["A"].channels[0];
    assert_eq!((view.expected(), view.unexplained()), (Some(6), 0));
    assert_eq!(state["A"].available(), 6);
}

/// Only an acknowledged change says what is queued is out of date: a level (`Pushed`)
/// forgets the channel's own events after the write landed that came before it, which
/// the queued push is there to repair.
#[test]
fn only_an_acknowledged_change_drops_the_queued_push() {
    let mut state = ShardState::default();
    let mut step = stepper(shop_config(0, true));
    step(&mut state, EventKind::Counted, 10, "c", "api");
    let fx = step(&mut state, EventKind::Pushed, 10, "p1", "shop");
    assert!(fx.pushes.is_empty() && fx.caught_up.is_empty(), "{fx:?}");
    step(&mut state, EventKind::Counted, 9, "c2", "api");
    let fx = step(&mut state, EventKind::PushedChange, -1, "p2", "shop");
    assert!(fx.pushes.is_empty(), "{:?}", fx.pushes);
    assert_eq!(fx.caught_up.len(), 1);
    // A change that leaves the channel short of its target: a push, not a drop.
    step(&mut state, EventKind::Counted, 12, "c3", "api");
    let fx = step(&mut state, EventKind::PushedChange, 1, "p3", "shop");
    assert_eq!(fx.pushes[0].target, 12);
    assert!(fx.caught_up.is_empty());
}

#[test]
fn a_channel_order_sent_again_after_its_keys_expired_is_not_applied_twice() {
    let day = 24 * 3_600 * MICROS_PER_SECOND;
    // Keys kept 7 days: at `now`, those first seen before `now - 7 days` may be gone
    // (the shard sets this before each batch from its key-expiry clock).
    let at = |now: Micros| CoreConfig {
        forgotten_before: now - 7 * day,
        ..CoreConfig::default()
    };
    // Order 9 of a channel: 2 units placed and shipped (a marketplace's order, placed and
    // shipped the same day), then its snapshot sent again days later, when the
    // marketplace completes it: the same placement and shipment, under the same keys.
    let ev = |kind, order: &str, ts: Micros, origin: Option<Micros>| Event {
        sku: "A".into(),
        kind,
        qty: 2,
        source: "market".into(),
        source_ts: ts,
        received_at: ts,
        key: format!("market/{order}/1/{}", kind.as_str()),
        line: Some(LineRef {
            order_id: order.into(),
            line_id: "1".into(),
        }),
        origin,
    };
    let fresh = |event: Event| Input { event, prior: None };
    let order = |order: &str, placed: Micros, shipped: Option<Micros>, origin| {
        let mut events = vec![fresh(ev(EventKind::OrderPlaced, order, placed, origin))];
        if let Some(ts) = shipped {
            events.push(fresh(ev(EventKind::OrderShipped, order, ts, origin)));
        }
        events
    };
    let count = |n| {
        fresh(Event {
            sku: "A".into(),
            kind: EventKind::Counted,
            qty: n,
            source: "erp".into(),
            source_ts: T0 - day,
            received_at: T0 - day,
            key: "count".into(),
            line: None,
            origin: None,
        })
    };
    let later = T0 + 8 * day;
    let run = |origin: Option<Micros>, config_later: &CoreConfig| {
        let mut state = ShardState::default();
        apply(&mut state, &[count(10)], T0 - day, 1, &at(T0 - day));
        let first = apply(
            &mut state,
            &order("9", T0, Some(T0), origin),
            T0,
            2,
            &at(T0),
        );
        assert!(first.records.iter().all(|r| r.outcome == Outcome::Applied));
        assert_eq!(stock(&state, "A"), (8, 0), "shipped once");
        // Eight days on, every key of the order forgotten (`prior` none, as the shard
        // finds after expiry): its snapshot again, the shipment stamped with the day the
        // marketplace completed it.
        let again = apply(
            &mut state,
            &order("9", T0, Some(later), origin),
            later,
            4,
            config_later,
        );
        (state, again)
    };

    let (state, again) = run(Some(T0), &at(later));
    assert!(
        again.records.iter().all(|r| r.outcome == Outcome::Stale),
        "{:?}",
        again.records.iter().map(|r| r.outcome).collect::<Vec<_>>()
    );
    assert_eq!(
        stock(&state, "A"),
        (8, 0),
        "the shipment did not take its units twice"
    );
    state["A"].check_invariants().unwrap();
    // Without an origin (a native event) the same events are new facts, as before.
    let (state, _) = run(None, &at(later));
    assert_eq!(stock(&state, "A"), (6, 0));
    // Nor is a channel judged whose keys have been kept for less than the retention:
    // nothing of it can have been forgotten (a store connected two days ago, its older
    // orders first seen now).
    let market = CoreConfig {
        channels: lockstep::core::ChannelRules::new(vec![lockstep::core::ChannelRule {
            name: "market".into(),
            buffer: 0,
            max: None,
            inventory_updates: lockstep::config::InventoryUpdates::Ignore,
            compare_and_set: false,
        }]),
        channels_since: vec![later - 2 * day],
        ..at(later)
    };
    let (state, again) = run(Some(T0), &market);
    assert!(again.records.iter().all(|r| r.outcome == Outcome::Applied));
    assert_eq!(stock(&state, "A"), (6, 0));
    let (state, _) = run(
        Some(T0),
        &CoreConfig {
            channels_since: vec![later - 8 * day],
            ..market
        },
    );
    assert_eq!(
        stock(&state, "A"),
        (8, 0),
        "kept longer than the retention: judged"
    );

    // A line the SKU still holds is judged by the line: an old order shipped today.
    let mut state = ShardState::default();
    apply(&mut state, &[count(10)], T0 - day, 1, &at(T0 - day));
    apply(&mut state, &order("7", T0, None, Some(T0)), T0, 2, &at(T0));
    assert_eq!(stock(&state, "A"), (10, 2));
    let shipped = apply(
        &mut state,
        &[fresh(ev(EventKind::OrderShipped, "7", later, Some(T0)))],
        later,
        3,
        &at(later),
    );
    assert_eq!(shipped.records[0].outcome, Outcome::Applied);
    assert_eq!(stock(&state, "A"), (8, 0));
    // An order placed within the keys kept is taken; one from before them is not.
    let recent = later - 6 * day;
    let taken = apply(
        &mut state,
        &order("8", recent, None, Some(recent)),
        later,
        4,
        &at(later),
    );
    assert_eq!(taken.records[0].outcome, Outcome::Applied);
    let old = apply(
        &mut state,
        &order("6", T0, None, Some(T0)),
        later,
        5,
        &at(later),
    );
    assert_eq!(old.records[0].outcome, Outcome::Stale);
    assert_eq!(stock(&state, "A"), (8, 2));

    // A return: one from before the keys kept may have come back already.
    let returned = |key: &str, origin| {
        fresh(Event {
            sku: "A".into(),
            kind: EventKind::Returned,
            qty: 1,
            source: "market".into(),
            source_ts: origin,
            received_at: later,
            key: key.into(),
            line: None,
            origin: Some(origin),
        })
    };
    let fx = apply(
        &mut state,
        &[returned("r-old", T0), returned("r-new", later - day)],
        later,
        6,
        &at(later),
    );
    assert_eq!(fx.records[0].outcome, Outcome::Stale);
    assert_eq!(fx.records[1].outcome, Outcome::Applied);
    assert_eq!(stock(&state, "A"), (9, 2));
    state["A"].check_invariants().unwrap();
}

#[test]
fn a_line_closed_by_a_total_is_kept_a_horizon_from_its_close_also_after_a_restart() {
    let hour = 3_600 * MICROS_PER_SECOND;
    let config = CoreConfig::default(); // a 72 h horizon
    let ev = |kind, qty, ts: Micros| Input {
        event: Event {
            sku: "A".into(),
            kind,
            qty,
            source: "shop".into(),
            source_ts: ts,
            received_at: ts,
            key: format!("shop/9/1/{}/{qty}/{ts}", kind.as_str()),
            line: Some(LineRef {
                order_id: "9".into(),
                line_id: "1".into(),
            }),
            origin: None,
        },
        prior: None,
    };
    let mut live = ShardState::default();
    apply(
        &mut live,
        &[ev(EventKind::OrderPlaced, 2, T0)],
        T0,
        1,
        &config,
    );
    // Shipped in full 100 hours after it was placed: closed by its running total.
    let closed = T0 + 100 * hour;
    apply(
        &mut live,
        &[ev(EventKind::OrderShippedTotal, 2, closed)],
        closed,
        2,
        &config,
    );
    // A start rebuilds the SKU from its stored head and lines.
    let rules = lockstep::core::ChannelRules::default();
    let mut restarted = ShardState::default();
    restarted.insert(
        "A",
        lockstep::core::SkuState::from_parts(
            live["A"].head(&rules),
            live["A"].lines().clone(),
            &rules,
        )
        .unwrap(),
    );
    // An hour on, an older total of the line arrives twice (a delayed webhook, then the
    // poll): the line, closed an hour ago, is still kept, so neither ships a unit again.
    for state in [&mut live, &mut restarted] {
        let now = closed + hour;
        for seq in [3, 4] {
            apply(
                state,
                &[ev(EventKind::OrderShippedTotal, 1, closed - hour)],
                now,
                seq,
                &config,
            );
        }
        assert_eq!(state["A"].committed, 0);
        assert_eq!(state["A"].on_hand(), -2, "shipped 2, once");
    }
}
