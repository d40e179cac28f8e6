//! Recovery and replay: bringing a shard's state back from storage.
//!
//! - `recover`: on start, load the stored state, then re-apply log records newer than the
//!   state's checkpoint: the state rows are written at checkpoints, every few seconds, so
//!   the tail holds the batches since the last one (up to `CHECKPOINT_RECORDS`).
//!   A log chunk that fails its envelope check stops the start with an error naming the
//!   shard and the chunk, and nothing is deleted: fjall's journal already drops a torn
//!   batch, so every chunk it returns was written whole and may have been acknowledged
//!   (a bit flipped on disk, or a chunk of a newer lockstep after a rollback).
//! - `rebuild`: the state from the log alone, for `lockstep replay`.

use crate::engine::core::{apply, CoreConfig, Input, ShardState};
use crate::engine::event::{Event, FirstResult, LineRef, Outcome};
use crate::engine::movements::{load_for_batch, unload_after_batch};
use crate::store::records::LogRecord;
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
    Input {
        event: event_of(record),
        prior,
    }
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
        unload_after_batch(&mut state, &inputs, &effects.writes, None);
        store.reapply(&effects)?;
        report.replayed += chunk.len();
    }
    // The replayed rows are stored now, so the next start does not replay them again.
    store.checkpoint()?;
    report.skus = state.len();
    Ok((state, report))
}

/// Rebuilds a shard's state from its log alone, applying each record as it was applied.
/// Every movement stays in memory: this is the offline check, not the serving path.
pub fn rebuild(store: &dyn ShardStore, config: &CoreConfig) -> Result<ShardState, StoreError> {
    let mut state = ShardState::default();
    for chunk in store.log_after(0) {
        for record in chunk? {
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
