//! Which SKUs' on_hand movements a batch needs in memory: loading them from storage before
//! the batch, and dropping them after it.
//!
//! A SKU keeps every movement newer than its count for the horizon (72 h by default), and
//! every shipment is one: at thousands of orders a minute that is millions of rows, too
//! many for memory. Only two things read them: a count (on_hand becomes its quantity plus
//! the movements after it) and a fold (movements older than the horizon go into the base).
//! Everything else needs only their sum, which the state keeps. So the shard loads a SKU's
//! movements for a batch with a count for it, or when its oldest movement is due a fold
//! (`core::fold_due`), and drops them once the batch is applied: memory holds no
//! movements between batches.

use ahash::AHashSet;

use crate::clock::Micros;
use crate::core::{fold_due, needs_movements, CoreConfig, Input, ShardState, SkuState, StateWrite};
use crate::store::{ShardStore, StoreError};

/// Whether `sku`'s oldest stored movement is due a fold at `now`. Each SKU's state keeps
/// what the shard learnt of it (`SkuState::stored_oldest`; `None` for a SKU without
/// movements): one known there is not looked up in storage again.
fn fold_is_due(
    sku: &str,
    state: &mut SkuState,
    store: &dyn ShardStore,
    now: Micros,
    config: &CoreConfig,
) -> Result<bool, StoreError> {
    let oldest = match state.stored_oldest() {
        Some(known) => known,
        None => {
            let found = store.oldest_movement(sku)?;
            state.set_stored_oldest(found);
            found
        }
    };
    Ok(oldest.is_some_and(|ts| fold_due(ts, now, config)))
}

/// Loads the movements of the SKUs of `inputs` that need them: those with a count in the
/// batch, and (with `folds_at`, the batch's `now`) those due a fold then.
pub fn load_for_batch(
    state: &mut ShardState,
    inputs: &[Input],
    store: &dyn ShardStore,
    config: &CoreConfig,
    folds_at: Option<Micros>,
) -> Result<(), StoreError> {
    let counted: AHashSet<&str> = inputs
        .iter()
        .filter(|i| i.prior.is_none() && needs_movements(&i.event, config))
        .map(|i| i.event.sku.as_str())
        .collect();
    let mut looked_at: AHashSet<&str> = AHashSet::new();
    for input in inputs {
        let sku = input.event.sku.as_str();
        if !looked_at.insert(sku) {
            continue;
        }
        // A SKU seen for the first time has no movements anywhere: `SkuState::new`.
        let Some(sku_state) = state.get_mut(sku) else {
            continue;
        };
        if sku_state.deltas().is_some() {
            continue;
        }
        let folding = match folds_at {
            Some(now) => fold_is_due(sku, sku_state, store, now, config)?,
            None => false,
        };
        if counted.contains(sku) || folding {
            sku_state
                .load_movements(store.movements(sku)?)
                .map_err(|detail| StoreError::Inconsistent {
                    sku: sku.to_string(),
                    detail,
                })?;
        }
    }
    Ok(())
}

/// Drops the movements of the batch's SKUs from memory (they are stored now); with
/// `note`, notes each SKU's oldest stored movement for its next fold.
pub fn unload_after_batch(
    state: &mut ShardState,
    inputs: &[Input],
    writes: &[StateWrite],
    note: bool,
) {
    if note {
        // Movements stored for SKUs whose movements stayed on disk: an oldest known
        // before may be older still.
        for write in writes {
            if let StateWrite::Delta {
                sku,
                ts,
                delta: Some(_),
                ..
            } = write
            {
                if let Some(sku_state) = state.get_mut(sku.as_str()) {
                    if let Some(known) = sku_state.stored_oldest() {
                        sku_state.set_stored_oldest(Some(known.map_or(*ts, |o| o.min(*ts))));
                    }
                }
            }
        }
    }
    // SKUs whose movements were in memory know their oldest exactly.
    for input in inputs {
        if let Some(sku_state) = state.get_mut(input.event.sku.as_str()) {
            if sku_state.deltas().is_some() {
                let first = sku_state.unload_movements();
                if note {
                    sku_state.set_stored_oldest(first);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::MICROS_PER_HOUR;
    use crate::core::apply;
    use crate::core::event::{Event, EventKind};
    use crate::engine::recovery::{rebuild, recover};
    use crate::store::DiskStore;

    const T0: Micros = 1_800_000_000_000_000;

    fn event(kind: EventKind, qty: i64, ts: Micros, key: &str) -> Input {
        Input {
            event: Event {
                sku: "A".into(),
                kind,
                qty,
                source: "erp".into(),
                source_ts: ts,
                received_at: ts,
                key: key.into(),
                line: None,
                origin: None,
            },
            prior: None,
        }
    }

    /// What the shard does with a batch: load, apply, unload, commit.
    fn run_batch(
        store: &DiskStore,
        state: &mut ShardState,
        inputs: &[Input],
        now: Micros,
        seq: u64,
        config: &CoreConfig,
    ) {
        load_for_batch(state, inputs, store, config, Some(now)).unwrap();
        let effects = apply(state, inputs, now, seq, config);
        unload_after_batch(state, inputs, &effects.writes, true);
        store.commit(&effects).unwrap();
        assert!(
            state.values().all(|s| s.deltas().is_none()),
            "no movement stays in memory after a batch"
        );
    }

    #[test]
    fn a_late_count_reads_the_stored_movements_and_old_ones_fold_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let config = CoreConfig {
            horizon_us: MICROS_PER_HOUR,
            ..CoreConfig::default()
        };
        let minute = MICROS_PER_HOUR / 60;
        let mut state = ShardState::default();
        // A receipt of 50, then one shipment of 1 a minute, each its own batch.
        let receipt = [event(EventKind::Adjusted, 50, T0, "receipt")];
        run_batch(&store, &mut state, &receipt, T0, 1, &config);
        for i in 1..=30 {
            let at = T0 + i * minute;
            let ship = [event(EventKind::Adjusted, -1, at, &format!("ship-{i}"))];
            run_batch(&store, &mut state, &ship, at, 1 + i as u64, &config);
        }
        assert_eq!(state["A"].on_hand(), 20);
        assert_eq!(store.movements("A").unwrap().len(), 31);

        // A count taken at minute 10.5 (it saw the receipt and 10 shipments) arrives
        // now: on_hand is the count plus the 20 shipments after it, read from storage.
        let now = T0 + 31 * minute;
        let count = [event(EventKind::Counted, 45, T0 + 21 * minute / 2, "count")];
        run_batch(&store, &mut state, &count, now, 32, &config);
        assert_eq!(state["A"].on_hand(), 45 - 20);
        assert_eq!(
            store.movements("A").unwrap().len(),
            20,
            "those before it went"
        );

        // Past the horizon plus an eighth for the oldest (minute 11), the next event of
        // the SKU folds what is older than the horizon into the base: on_hand unchanged.
        let late = T0 + 11 * minute + MICROS_PER_HOUR + MICROS_PER_HOUR / 8 + minute;
        let one_more = [event(EventKind::Adjusted, 1, late, "restock")];
        run_batch(&store, &mut state, &one_more, late, 33, &config);
        assert_eq!(state["A"].on_hand(), 45 - 20 + 1);
        let kept = store.movements("A").unwrap();
        let cut = late - MICROS_PER_HOUR;
        assert!(
            kept.keys().all(|(ts, _)| *ts >= cut),
            "folded rows are gone"
        );
        assert_eq!(kept.len(), 11 + 1, "shipments 20..=30 and the restock");
        assert_eq!(store.oldest_movement("A").unwrap(), Some(T0 + 20 * minute));

        // The log alone rebuilds the same state, movements and base included, and so
        // does recovery from the checkpoint.
        store.checkpoint().unwrap();
        let mut live = state.clone();
        live.get_mut("A")
            .unwrap()
            .load_movements(kept.clone())
            .unwrap();
        assert_eq!(
            rebuild(
                &store,
                0,
                &crate::engine::settings::History::default(),
                &config
            )
            .unwrap(),
            live
        );
        drop(store);
        let store = DiskStore::open(dir.path()).unwrap();
        let (recovered, _) = recover(&store, &config).unwrap();
        assert_eq!(recovered, state);
        assert_eq!(store.movements("A").unwrap(), kept);
    }
}
