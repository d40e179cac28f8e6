//! A channel's current levels taken as counts (`lockstep stock import --from CHANNEL`,
//! `POST /v1/channels/{name}/import-levels`): for a seller whose store is the truth today.
//!
//! Every SKU the catalog maps to the channel is read through the channel's budget (the
//! reads pause as reconciliation's do, so an approved channel's pushes keep half of
//! it), and each listed level becomes a count of what is available
//! (`counted_available`: on_hand := level + committed, as `PUT /v1/skus/{sku}` with
//! `{"available": n}` does), through the engine like every event. Its key is
//! `stock-import/{channel}/{sku}/{level}`, so importing the same levels again is answered
//! as duplicates and changes nothing; a level that changed since is a new count.
//!
//! A listing the channel refuses to read while it answers the others (a deleted product,
//! an unmapped SKU; told by the canary, `told`) is left as it is and named, so that one
//! bad listing does not stop every import at the same place; a channel that is down
//! stops the import.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use super::told::{read_batches, Canary, OnFailure, Reader};
use super::{ChannelLink, Reads};
use crate::clock::now_micros;
use crate::core::event::{Event, EventKind, Outcome, QTY_MAX};
use crate::engine::Engine;

/// SKUs read and submitted at a time: memory for one page of the catalog.
const IMPORT_PAGE: usize = 1_000;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Catalog SKUs of the channel read (unread ones apart).
    pub read: usize,
    /// Counts taken (new).
    pub counted: usize,
    /// Counts already taken by an earlier import of the same levels.
    pub duplicates: usize,
    /// SKUs the channel does not list: left as they are.
    pub unlisted: Vec<String>,
    /// SKUs whose level is beyond any count the engine takes (a typo of billions): left
    /// as they are, named, rather than failing the page they are on.
    pub out_of_range: Vec<String>,
    /// SKUs the channel shows below zero (sold past its stock, or taking backorders):
    /// left as they are and named. Nothing says how many are on the shelf, and a count
    /// of zero would drop the orders the channel still owes.
    pub below_zero: Vec<String>,
    /// SKUs whose read the channel refused while it answered others: left as they are,
    /// named, with the last refusal's reason.
    pub unread: Vec<String>,
    pub unread_reason: Option<String>,
}

impl ImportReport {
    pub fn json(&self) -> Value {
        json!({
            "read": self.read,
            "counted": self.counted,
            "duplicates": self.duplicates,
            "unlisted": self.unlisted,
            "out_of_range": self.out_of_range,
            "below_zero": self.below_zero,
            "unread": self.unread,
            "unread_reason": self.unread_reason,
        })
    }
}

/// Why an import stopped, and what it had taken by then: the pages before the one that
/// failed are counted (their keys make importing again repeat none of them).
#[derive(Debug)]
pub struct ImportStopped {
    pub cause: ImportFailure,
    pub taken: ImportReport,
}

/// What stopped an import.
#[derive(Debug)]
pub enum ImportFailure {
    /// The channel could not be read.
    Read(String),
    /// The engine did not take a page (busy past the import's wait, storage failed).
    Engine(crate::engine::EngineError),
}

impl ImportStopped {
    /// What was taken before it stopped, in words.
    pub fn taken_so_far(&self) -> String {
        let unread = match self.taken.unread.len() {
            0 => String::new(),
            n => format!(", {n} could not be read"),
        };
        format!(
            "{} of {} SKUs read before it stopped were counted ({} already were{unread}); \
             importing again takes the rest and counts none of them twice",
            self.taken.counted, self.taken.read, self.taken.duplicates
        )
    }
}

/// Reads `skus` (the catalog's for this channel) and submits their levels as counts.
pub async fn import_levels(
    link: &ChannelLink,
    engine: &Engine,
    client: &reqwest::Client,
    skus: &[String],
) -> Result<ImportReport, ImportStopped> {
    let mut report = ImportReport::default();
    let caller = link.reader(client.clone());
    let channel = link.adapter.name();
    let mut canary = Canary::default();
    let reader = Reader {
        link,
        caller: &caller,
        engine,
        reads: Reads::Asked,
        on_failure: OnFailure::Stop,
    };
    for page in skus.chunks(IMPORT_PAGE) {
        let mut levels = HashMap::new();
        let mut refused = HashSet::new();
        // Read as a reconciliation pass reads (`read_batches`), so that a refused listing
        // costs the SKUs of its own read alone.
        let names: Vec<&str> = page.iter().map(String::as_str).collect();
        for group in read_batches(link.adapter.as_ref(), &names) {
            let group: Vec<String> = group.iter().map(|i| page[*i].clone()).collect();
            let told = reader.read_or_refused(&group, &mut canary).await;
            match told {
                // The last a read names a SKU is what it shows.
                Ok(Ok(found)) => levels.extend(found),
                Ok(Err(reason)) => {
                    refused.extend(group);
                    report.unread_reason = Some(reason);
                }
                Err(reason) => {
                    return Err(ImportStopped {
                        cause: ImportFailure::Read(reason),
                        taken: report,
                    })
                }
            }
        }
        let now = now_micros();
        let mut events = Vec::new();
        for sku in page {
            if refused.contains(sku) {
                report.unread.push(sku.clone());
                continue;
            }
            match levels.get(sku).copied().flatten() {
                Some(level) if level > QTY_MAX => report.out_of_range.push(sku.clone()),
                Some(level) if level >= 0 => events.push(Event {
                    sku: sku.clone(),
                    kind: EventKind::CountedAvailable,
                    qty: level,
                    source: "import".to_string(),
                    source_ts: now,
                    received_at: now,
                    key: format!("stock-import/{channel}/{sku}/{level}"),
                    line: None,
                    origin: None,
                }),
                Some(_) => report.below_zero.push(sku.clone()),
                None => report.unlisted.push(sku.clone()),
            }
        }
        if !events.is_empty() {
            let results = match submit_waiting(engine, events).await {
                Ok(results) => results,
                Err(e) => {
                    return Err(ImportStopped {
                        cause: ImportFailure::Engine(e),
                        taken: report,
                    })
                }
            };
            for result in results {
                match result.outcome {
                    Outcome::Duplicate => report.duplicates += 1,
                    _ => report.counted += 1,
                }
            }
        }
        // Read once the engine took the page: a page it refused is not counted as read.
        report.read += page.len() - refused.len();
    }
    if let Err(reason) = canary.end() {
        return Err(ImportStopped {
            cause: ImportFailure::Read(reason),
            taken: report,
        });
    }
    Ok(report)
}

/// Submits, waiting out a busy engine (an import is not in a hurry).
async fn submit_waiting(
    engine: &Engine,
    events: Vec<Event>,
) -> Result<Vec<crate::core::event::EventResult>, crate::engine::EngineError> {
    let mut wait = Duration::from_millis(20);
    loop {
        match engine.submit(events.clone()).await {
            Err(crate::engine::EngineError::Busy { .. }) if wait < Duration::from_secs(5) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
}
