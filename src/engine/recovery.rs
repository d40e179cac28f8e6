//! Recovery and replay: bringing a shard's state back from storage.
//!
//! - `recover`: on start, load the stored state, then re-apply log records newer than the
//!   state's checkpoint: the state rows are written at checkpoints, every few seconds, so
//!   the tail holds the batches since the last one (up to `CHECKPOINT_RECORDS`).
//!   A log chunk that fails its envelope check stops the start with an error naming the
//!   shard and the chunk, and nothing is deleted: fjall's journal already drops a torn
//!   batch, so every chunk it returns was written whole and may have been acknowledged
//!   (a bit flipped on disk, or a chunk of a newer lockstep after a rollback).
//! - `rebuild`: the state from the log alone, for `lockstep replay`, each record under the
//!   settings it was written under (`settings.rs`).
//!
//! Both re-apply records under the settings the data directory stores, never a command's
//! own: a store opened read-only (`DiskStore::open_read_only`) keeps what they re-apply
//! in memory, so an inspecting command leaves the directory as it found it.

use crate::core::event::{Event, FirstResult, LineRef, Outcome, ORIGIN_LOGGED_STALE};
use crate::core::records::LogRecord;
use crate::core::{apply, realign_channels, CoreConfig, Input, ShardState};
use crate::engine::movements::{load_for_batch, unload_after_batch};
use crate::engine::settings::History;
use crate::store::{ShardStore, StoreError};

/// What recovery found, for the start-up log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub skus: usize,
    pub checkpoint: u64,
    /// Log records past the checkpoint that were applied again.
    pub replayed: usize,
}

/// The event a log record holds.
pub fn event_of(record: &LogRecord) -> Event {
    Event {
        sku: record.sku.clone(),
        kind: record.kind,
        qty: record.qty,
        source: record.source.clone(),
        source_ts: record.source_ts,
        received_at: record.received_at,
        key: record.key.clone(),
        line: record.order_id.as_ref().map(|order_id| LineRef {
            order_id: order_id.clone(),
            line_id: record.line_id.clone().unwrap_or_default(),
        }),
        origin: None,
    }
}

/// The core's input for re-applying a logged record as it was applied: a duplicate is fed
/// as a duplicate again (it changes nothing but the SKU's audit chain).
fn input_of(record: &LogRecord) -> Input {
    let prior = (record.outcome == Outcome::Duplicate).then_some(FirstResult {
        outcome: Outcome::Applied,
        oversell: false,
        on_hand: record.on_hand_after,
        committed: record.committed_after,
        available: record.available_after,
        seq: record.seq,
    });
    let mut event = event_of(record);
    if record.outcome == Outcome::Stale {
        // Whatever made it stale is not all in the log (a line's `origin`): the core
        // takes it as stale again.
        event.origin = Some(ORIGIN_LOGGED_STALE);
    }
    Input { event, prior }
}

/// Loads a shard's state and finishes whatever its log holds beyond the checkpoint.
pub fn recover(
    store: &dyn ShardStore,
    config: &CoreConfig,
) -> Result<(ShardState, RecoveryReport), StoreError> {
    let loaded = store.load_state(&config.channels)?;
    let mut state = loaded.skus;
    let mut report = RecoveryReport {
        checkpoint: loaded.checkpoint,
        ..RecoveryReport::default()
    };
    let mut tail = Vec::new();
    for item in store.log_after(loaded.checkpoint) {
        match item {
            Ok(chunk) => tail.push(chunk),
            Err(e) => return Err(e),
        }
    }
    // Chunk by chunk, as the batches were applied; the chunks are stored already, so only
    // their state rows and keys are taken.
    for chunk in tail.iter().filter(|c| !c.is_empty()) {
        let inputs: Vec<Input> = chunk.iter().map(input_of).collect();
        // The store's rows include every replayed chunk before this one (`reapply`),
        // which is what a count here must see. Folds wait for the live shard.
        load_for_batch(&mut state, &inputs, store, config, None)?;
        let effects = apply(
            &mut state,
            &inputs,
            chunk[0].applied_at,
            chunk[0].seq,
            config,
        );
        unload_after_batch(&mut state, &inputs, &effects.writes, false);
        store.reapply(&effects)?;
        report.replayed += chunk.len();
    }
    // The replayed rows are stored now, so the next start does not replay them again.
    store.checkpoint()?;
    report.skus = state.len();
    Ok((state, report))
}

/// Rebuilds shard `shard`'s state from its log alone, applying each record as it was
/// applied, under the settings of its era in `history` (`fallback` when none is stored).
/// Every movement stays in memory: this is the offline check, not the serving path.
pub fn rebuild(
    store: &dyn ShardStore,
    shard: usize,
    history: &History,
    fallback: &CoreConfig,
) -> Result<ShardState, StoreError> {
    let mut state = ShardState::default();
    // The era of the records so far, and its settings.
    let mut current: Option<(Option<usize>, CoreConfig)> = None;
    for chunk in store.log_after(0) {
        for record in chunk? {
            let era = history.index_at(shard, record.seq);
            if current.as_ref().is_none_or(|(at, _)| *at != era) {
                let now = era.map_or_else(|| fallback.clone(), |i| history.eras[i].core());
                if let Some((_, before)) = &current {
                    if before.channels != now.channels {
                        realign_channels(&mut state, &before.channels, &now.channels);
                    }
                }
                current = Some((era, now));
            }
            let config = &current.as_ref().expect("set above").1;
            apply(
                &mut state,
                &[input_of(&record)],
                record.applied_at,
                record.seq,
                config,
            );
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{apply, CoreConfig, ShardState};
    use crate::store::disk::tests::{mixed, with_movements};
    use crate::store::DiskStore;

    #[test]
    fn rows_and_keys_past_the_checkpoint_come_back_from_the_log_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let config = CoreConfig::default();
        let at = 1_800_000_000_000_000;
        let mut state = ShardState::default();
        let mut firsts = Vec::new();
        {
            let store = DiskStore::open(&path).unwrap();
            let before = apply(&mut state, &mixed("a", at), at, 1, &config);
            store.commit(&before).unwrap();
            store.checkpoint().unwrap();
            let after = apply(&mut state, &mixed("b", at + 10), at + 10, 14, &config);
            store.commit(&after).unwrap();
            // Readers see the batch past the checkpoint before it is stored as rows.
            let head = store.head("A").unwrap().unwrap();
            assert_eq!(head.last_seq, state["A"].head(&config.channels).last_seq);
            let heads = store.heads_after(None, 10).unwrap();
            assert_eq!(heads.len(), 2);
            assert!(heads
                .iter()
                .all(|(sku, h)| *h == state[sku.as_str()].head(&config.channels)));
            firsts.extend(before.first_results);
            firsts.extend(after.first_results);
            // Dropped without a checkpoint, as a kill -9 would leave it.
        }
        let store = DiskStore::open(&path).unwrap();
        assert_eq!(store.load_state(&config.channels).unwrap().checkpoint, 13);
        let (recovered, report) = recover(&store, &config).unwrap();
        assert_eq!(report.replayed, 13);
        assert_eq!(with_movements(&store, recovered), state);
        for new in &firsts {
            assert_eq!(
                store
                    .lookup(&new.sku, &new.source, &new.key)
                    .unwrap()
                    .as_ref(),
                Some(&new.first),
                "{new:?}"
            );
        }
        // Recovery stored what it replayed: the next start replays nothing.
        drop(store);
        let store = DiskStore::open(&path).unwrap();
        let (again, report) = recover(&store, &config).unwrap();
        assert_eq!((report.checkpoint, report.replayed), (26, 0));
        assert_eq!(with_movements(&store, again), state);
        assert_eq!(store.lookup("A", "test", "b-0").unwrap().unwrap().seq, 14);
    }
}
