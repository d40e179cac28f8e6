//! Whether lockstep writes to each channel: **observing** (its first sync, until
//! approved), **pushing**, or **paused** by an operator; kept with the data
//! (`lockstep.sync`), and each change for the audit.
//!
//! A seller connecting a store that is live today fears one thing above the rest: a new
//! sync tool writing its own idea of stock over every listing before anyone looked. So a
//! channel the data directory has not seen before starts **observing**: its webhooks,
//! order polls and queues are taken as always (its orders move stock), its levels are
//! read when a plan asks (`Reconciler::plan`), its pushes wait in its outbox, and
//! nothing is written to it until it is approved (`lockstep approve`, or
//! `POST /v1/channels/{name}/approve`). Its pusher then starts with everything that
//! waited, and its reconciliation begins.
//!
//! Which channels are new: a channel named in the data directory's settings history
//! (`engine/settings.rs`) was pushing before this file existed and goes on pushing; any
//! other starts as its `first_sync` key says (`observe` by default). `first_sync = "push"`
//! set on a channel that is observing approves it at the next start (automated set-ups).
//! Once pushing, a channel never observes again: the first sync is over.
//!
//! An operator may pause a pushing channel (`lockstep pause`, `POST
//! /v1/channels/{name}/pause`): its pusher and reconciliation stop, its changes wait in
//! its outbox as an observing channel's do, its orders are taken; `resume` lets the
//! waiting changes go. A pause lasts across restarts until resumed.
//!
//! The file is written durably (`store::small_file`) before a state takes effect, so an
//! approval survives a crash the moment it is answered. An unreadable file stops the
//! start with its path: guessing could write to a store nobody approved.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::{format_rfc3339, now_micros, Micros};
use crate::config::{Config, FirstSync};
use crate::core::ByChannel;
use crate::propagate::ChannelLink;

pub const SYNC_FILE: &str = "lockstep.sync";

/// Whether lockstep writes to a channel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Read and planned; nothing written until approved.
    Observing,
    /// Pushed to, reconciled.
    Pushing,
    /// Paused by an operator: written nothing until resumed.
    Paused,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Observing => "observing",
            SyncState::Pushing => "pushing",
            SyncState::Paused => "paused",
        }
    }
}

/// One change of a channel's state: who made it, when and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SyncChange {
    pub channel: String,
    pub state: SyncState,
    pub at: Micros,
    pub by: String,
    pub why: String,
}

impl SyncChange {
    pub fn json(&self) -> Value {
        json!({
            "channel": self.channel,
            "state": self.state.as_str(),
            "at": format_rfc3339(self.at),
            "by": self.by,
            "why": self.why,
        })
    }
}

#[derive(Serialize, Deserialize, Default, Debug)]
struct Stored {
    changes: Vec<SyncChange>,
}

impl Stored {
    fn current(&self, channel: &str) -> Option<&SyncChange> {
        self.changes.iter().rev().find(|c| c.channel == channel)
    }
}

/// What an operator's action did.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    /// The channel is in the state asked for from now on.
    Now,
    /// It was in that state already: nothing changed.
    Already,
    /// The action does not apply to the channel's state (why, in words).
    Refused(String),
}

/// An operator's action on a channel's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Observing → pushing: the first sync approved.
    Approve,
    /// Pushing → paused.
    Pause,
    /// Paused → pushing.
    Resume,
}

impl Action {
    /// (the state it leaves, the state it makes, the word the audit records).
    fn transition(self) -> (SyncState, SyncState, &'static str) {
        match self {
            Action::Approve => (SyncState::Observing, SyncState::Pushing, "approved"),
            Action::Pause => (SyncState::Pushing, SyncState::Paused, "paused"),
            Action::Resume => (SyncState::Paused, SyncState::Pushing, "resumed"),
        }
    }

    /// Why the action does not apply to a channel in `state`.
    fn refusal(self, channel: &str, state: SyncState) -> String {
        match (self, state) {
            (Action::Approve, SyncState::Paused) => {
                format!("channel {channel:?} was approved and is paused: resume it")
            }
            (_, SyncState::Observing) => format!(
                "channel {channel:?} is observing (nothing is written to it): approve it first"
            ),
            (_, state) => format!("channel {channel:?} is {}", state.as_str()),
        }
    }
}

/// Every configured channel's state, and the file that keeps them.
pub struct SyncBook {
    path: PathBuf,
    stored: Mutex<Stored>,
    links: ByChannel<std::sync::Arc<ChannelLink>>,
}

/// Why `open` refused to start.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {detail}; it records which channels lockstep may write to: restore it from a backup, or remove it to have every channel not in the settings history observe again")]
pub struct SyncFileError {
    path: String,
    detail: String,
}

impl SyncBook {
    /// Reads the file, settles the state of every configured channel (see the module
    /// doc; `seen` are the channels the settings history names), stores any change
    /// durably, and sets each link's gate. Returns the book and the changes it made.
    pub fn open(
        config: &Config,
        seen: &BTreeSet<String>,
        links: ByChannel<std::sync::Arc<ChannelLink>>,
    ) -> Result<(SyncBook, Vec<SyncChange>), SyncFileError> {
        let path = config.server.data_dir.join(SYNC_FILE);
        let mut stored = read(&path)?;
        let now = now_micros();
        let mut made = Vec::new();
        for channel in &config.channels {
            let name = &channel.name;
            let change = |state, by: &str, why: &str| SyncChange {
                channel: name.clone(),
                state,
                at: now,
                by: by.to_string(),
                why: why.to_string(),
            };
            let current = stored.current(name).map(|c| c.state);
            let wanted = match (current, channel.first_sync) {
                (None, _) if seen.contains(name) => Some(change(
                    SyncState::Pushing,
                    "lockstep",
                    "the channel was pushing before its first sync was recorded",
                )),
                (None, FirstSync::Push) | (Some(SyncState::Observing), FirstSync::Push) => Some(
                    change(SyncState::Pushing, "config", "first_sync = \"push\""),
                ),
                (None, FirstSync::Observe) => Some(change(
                    SyncState::Observing,
                    "lockstep",
                    "new to this data directory: observing until approved",
                )),
                (Some(_), _) => None,
            };
            made.extend(wanted);
        }
        stored.changes.extend(made.iter().cloned());
        if !made.is_empty() {
            write(&path, &stored)?;
        }
        let book = SyncBook {
            path,
            stored: Mutex::new(stored),
            links,
        };
        for link in book.links.values() {
            let state = book.state(link.adapter.name());
            link.sync.send_replace(state);
        }
        Ok((book, made))
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A configured channel's state (`Pushing` for a name the book does not hold).
    pub fn state(&self, channel: &str) -> SyncState {
        self.stored()
            .current(channel)
            .map_or(SyncState::Pushing, |c| c.state)
    }

    /// A configured channel's latest change.
    pub fn current(&self, channel: &str) -> Option<SyncChange> {
        self.stored().current(channel).cloned()
    }

    /// Every change, oldest first, for the audit.
    pub fn changes_json(&self) -> Vec<Value> {
        self.stored().changes.iter().map(SyncChange::json).collect()
    }

    /// Carries out an operator's action on a channel, durably before it takes effect;
    /// `None` for a name no channel has.
    pub fn act(
        &self,
        channel: &str,
        action: Action,
        by: &str,
    ) -> Result<Option<Changed>, std::io::Error> {
        let Some(link) = self.links.values().find(|l| l.adapter.name() == channel) else {
            return Ok(None);
        };
        let (from, to, why) = action.transition();
        let mut stored = self.stored();
        let state = stored
            .current(channel)
            .map_or(SyncState::Pushing, |c| c.state);
        if state == to {
            return Ok(Some(Changed::Already));
        }
        if state != from {
            return Ok(Some(Changed::Refused(action.refusal(channel, state))));
        }
        stored.changes.push(SyncChange {
            channel: channel.to_string(),
            state: to,
            at: now_micros(),
            by: by.to_string(),
            why: why.to_string(),
        });
        if let Err(e) = write_stored(&self.path, &stored) {
            stored.changes.pop();
            return Err(e);
        }
        drop(stored);
        link.sync.send_replace(to);
        tracing::info!(channel, by, state = to.as_str(), "{why}");
        Ok(Some(Changed::Now))
    }
}

/// Every first-sync change a data directory holds, oldest first (for `lockstep audit`
/// with the server stopped).
pub fn changes_in(data_dir: &Path) -> Result<Vec<Value>, SyncFileError> {
    Ok(read(&data_dir.join(SYNC_FILE))?
        .changes
        .iter()
        .map(SyncChange::json)
        .collect())
}

fn read(path: &Path) -> Result<Stored, SyncFileError> {
    let bad = |detail: String| SyncFileError {
        path: path.display().to_string(),
        detail,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(e) => Err(bad(e.to_string())),
    }
}

fn write_stored(path: &Path, stored: &Stored) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(stored).expect("sync states serialize");
    crate::store::small_file::write_durably(path, &text, false)
}

fn write(path: &Path, stored: &Stored) -> Result<(), SyncFileError> {
    write_stored(path, stored).map_err(|e| SyncFileError {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}
