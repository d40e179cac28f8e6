//! The settings that decide stock (the horizon, the channels and what each is shown),
//! stored with the data (`lockstep.settings`), and their history.
//!
//! The log records events, not the settings they were applied under, so a log re-applied
//! under other settings gives other stock: a count acknowledged under a 168 h horizon is
//! stale under the default 72 h. Recovery therefore re-applies a shard's log tail under
//! the settings in effect when it was written (the file's newest era), whatever the
//! command's own config says, and a command that only inspects never changes them.
//!
//! A server started with different settings first recovers under the old ones and
//! checkpoints (so no record past a checkpoint was written under an older era), then
//! appends an era that takes effect from each shard's next sequence number, durably,
//! before it accepts an event. `lockstep replay`, which re-applies the whole log, takes
//! each record under the era it was written in; the audit shows each change.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::clock::Micros;
use crate::config::InventoryUpdates;
use crate::core::{ChannelRule, CoreConfig};
use crate::engine::EngineError;

pub const SETTINGS_FILE: &str = "lockstep.settings";

/// A data directory whose log holds events but no settings file: the settings the log
/// was written under are unknown, and guessing them changes stock.
pub fn missing(data_dir: &Path) -> EngineError {
    EngineError::DataDir(format!(
        "{} holds logged events but no {SETTINGS_FILE} (the settings they were applied \
         under): restore it from a backup",
        data_dir.display()
    ))
}

/// One channel's rule, as stored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct StoredRule {
    name: String,
    buffer: i64,
    max: Option<i64>,
    inventory_updates: InventoryUpdates,
    compare_and_set: bool,
}

/// The settings of one era, as stored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct StoredSettings {
    horizon_us: Micros,
    channels: Vec<StoredRule>,
}

impl StoredSettings {
    fn of(core: &CoreConfig) -> StoredSettings {
        StoredSettings {
            horizon_us: core.horizon_us,
            channels: core
                .channels
                .iter()
                .map(|(_, r)| StoredRule {
                    name: r.name.clone(),
                    buffer: r.buffer,
                    max: r.max,
                    inventory_updates: r.inventory_updates,
                    compare_and_set: r.compare_and_set,
                })
                .collect(),
        }
    }

    fn core(&self) -> CoreConfig {
        CoreConfig {
            horizon_us: self.horizon_us,
            channels: self
                .channels
                .iter()
                .map(|r| ChannelRule {
                    name: r.name.clone(),
                    buffer: r.buffer,
                    max: r.max,
                    inventory_updates: r.inventory_updates,
                    compare_and_set: r.compare_and_set,
                })
                .collect(),
            // Not stored: replay takes a record's `stale` as it was logged
            // (`recovery::input_of`), so the keys' retention decides nothing there.
            ..CoreConfig::default()
        }
    }
}

/// Settings in effect from a sequence number on, per shard.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Era {
    /// Engine time the server that began it started.
    pub since: Micros,
    /// Per shard, the first sequence number applied under these settings.
    pub from_seq: Vec<u64>,
    settings: StoredSettings,
}

impl Era {
    pub fn core(&self) -> CoreConfig {
        self.settings.core()
    }

    /// The channels these settings name.
    pub fn channel_names(&self) -> impl Iterator<Item = String> + '_ {
        self.settings.channels.iter().map(|r| r.name.clone())
    }

    /// What changed from `before`, in words, for the audit and the start-up log.
    pub fn changes_from(&self, before: Option<&Era>) -> Vec<String> {
        let Some(before) = before else {
            return vec!["first settings stored".to_string()];
        };
        let (old, new) = (&before.settings, &self.settings);
        let mut out = Vec::new();
        if old.horizon_us != new.horizon_us {
            let hours = |us: Micros| us / crate::clock::MICROS_PER_HOUR;
            out.push(format!(
                "horizon {} h -> {} h",
                hours(old.horizon_us),
                hours(new.horizon_us)
            ));
        }
        for rule in &new.channels {
            match old.channels.iter().find(|r| r.name == rule.name) {
                None => out.push(format!("channel {} added", rule.name)),
                Some(was) if was != rule => out.push(format!(
                    "channel {}: buffer {} -> {}, max {:?} -> {:?}, inventory_updates {:?} -> {:?}",
                    rule.name,
                    was.buffer,
                    rule.buffer,
                    was.max,
                    rule.max,
                    was.inventory_updates,
                    rule.inventory_updates
                )),
                Some(_) => {}
            }
        }
        for rule in &old.channels {
            if !new.channels.iter().any(|r| r.name == rule.name) {
                out.push(format!("channel {} removed", rule.name));
            }
        }
        if out.is_empty() {
            out.push("channel order changed".to_string());
        }
        out
    }

    pub fn json(&self, before: Option<&Era>) -> serde_json::Value {
        serde_json::json!({
            "since": crate::clock::format_rfc3339(self.since),
            "from_seq": self.from_seq,
            "horizon_hours": self.settings.horizon_us / crate::clock::MICROS_PER_HOUR,
            "channels": self.settings.channels,
            "changes": self.changes_from(before),
        })
    }
}

/// Every era a data directory has had, oldest first.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub eras: Vec<Era>,
}

impl History {
    /// The stored history; empty for a data directory no server has started on. An
    /// unreadable file is an error, never a reset: the settings decide stock.
    pub fn read(data_dir: &Path) -> Result<History, EngineError> {
        let path = data_dir.join(SETTINGS_FILE);
        let bad = |detail: String| {
            EngineError::DataDir(format!(
                "{}: {detail}; it records the settings the log was written under: restore it from a backup",
                path.display()
            ))
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let history: History =
                    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                if history.eras.is_empty() {
                    return Err(bad("it holds no settings".into()));
                }
                Ok(history)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(History::default()),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// Every era begun after record `since`, for the audit (sequence numbers are global
    /// across shards, so an era's first is the same on each).
    pub fn changes_json(&self, since: u64) -> Vec<serde_json::Value> {
        self.eras
            .iter()
            .enumerate()
            .filter(|(_, era)| era.from_seq.iter().max().is_some_and(|from| *from > since))
            .map(|(i, era)| era.json(i.checked_sub(1).map(|b| &self.eras[b])))
            .collect()
    }

    /// When `channel`'s idempotency keys began to be kept: the start of the first era
    /// that named it; `None` if none has.
    pub fn channel_since(&self, channel: &str) -> Option<Micros> {
        self.eras
            .iter()
            .find(|era| era.settings.channels.iter().any(|r| r.name == channel))
            .map(|era| era.since)
    }

    /// The settings the log's tail was written under; `None` before the first server.
    pub fn current(&self) -> Option<&Era> {
        self.eras.last()
    }

    /// The settings record `seq` of `shard` was applied under (the first era's for
    /// records older than every era: a log written before settings were stored).
    pub fn at(&self, shard: usize, seq: u64) -> Option<&Era> {
        self.index_at(shard, seq).map(|i| &self.eras[i])
    }

    /// The index in `eras` of `at`'s answer.
    pub fn index_at(&self, shard: usize, seq: u64) -> Option<usize> {
        let applies = |era: &Era| era.from_seq.get(shard).is_some_and(|from| *from <= seq);
        match self.eras.iter().rposition(applies) {
            Some(i) => Some(i),
            None if self.eras.is_empty() => None,
            None => Some(0),
        }
    }

    /// Appends an era for `core` if it differs from the current one, starting after
    /// each shard's `last_seqs`, and stores the history durably. Returns the new era.
    pub fn begin(
        &mut self,
        data_dir: &Path,
        core: &CoreConfig,
        last_seqs: &[u64],
        now: Micros,
    ) -> Result<Option<&Era>, EngineError> {
        let settings = StoredSettings::of(core);
        if self.current().is_some_and(|era| era.settings == settings) {
            return Ok(None);
        }
        self.eras.push(Era {
            since: now,
            from_seq: last_seqs.iter().map(|s| s.saturating_add(1)).collect(),
            settings,
        });
        let path = data_dir.join(SETTINGS_FILE);
        let text = serde_json::to_vec_pretty(self).expect("settings serialize");
        crate::store::small_file::write_durably(&path, &text, false)
            .map_err(|e| EngineError::DataDir(format!("{}: {e}", path.display())))?;
        Ok(self.eras.last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(horizon_hours: i64, buffer: i64) -> CoreConfig {
        CoreConfig {
            horizon_us: horizon_hours * crate::clock::MICROS_PER_HOUR,
            channels: vec![ChannelRule {
                name: "shop".into(),
                buffer,
                max: None,
                inventory_updates: InventoryUpdates::Ignore,
                compare_and_set: false,
            }]
            .into(),
            ..CoreConfig::default()
        }
    }

    #[test]
    fn eras_are_kept_durably_and_found_by_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::read(dir.path()).unwrap();
        assert!(history.current().is_none());
        assert!(history
            .begin(dir.path(), &core(168, 0), &[0, 0], 1)
            .unwrap()
            .is_some());
        // The same settings again: no new era.
        assert!(history
            .begin(dir.path(), &core(168, 0), &[5, 9], 2)
            .unwrap()
            .is_none());
        let era = history
            .begin(dir.path(), &core(72, 2), &[5, 9], 3)
            .unwrap()
            .unwrap();
        assert_eq!(era.from_seq, vec![6, 10]);
        let history = History::read(dir.path()).unwrap();
        assert_eq!(history.eras.len(), 2);
        assert_eq!(
            history.at(0, 5).unwrap().core().horizon_us,
            core(168, 0).horizon_us
        );
        assert_eq!(
            history.at(0, 6).unwrap().core().horizon_us,
            core(72, 0).horizon_us
        );
        let buffer_at = |seq| {
            let core = history.at(1, seq).unwrap().core();
            core.channels.named("shop").unwrap().buffer
        };
        assert_eq!(buffer_at(9), 0);
        assert_eq!(buffer_at(10), 2);
        let changes = history.eras[1].changes_from(history.eras.first());
        assert_eq!(changes.len(), 2, "{changes:?}");
    }

    /// When each channel's keys began to be kept (`core::forgotten` judges no channel
    /// before it has kept them the whole retention): the first era naming it.
    #[test]
    fn a_channel_is_kept_since_the_first_era_that_named_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::read(dir.path()).unwrap();
        history.begin(dir.path(), &core(72, 0), &[0], 10).unwrap();
        history.begin(dir.path(), &core(72, 3), &[0], 20).unwrap();
        let history = History::read(dir.path()).unwrap();
        assert_eq!(history.eras.len(), 2);
        assert_eq!(history.channel_since("shop"), Some(10));
        assert_eq!(history.channel_since("other"), None);
    }

    #[test]
    fn an_unreadable_settings_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), b"").unwrap();
        let e = History::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains(SETTINGS_FILE), "{e}");
    }
}
