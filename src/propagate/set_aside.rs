//! The orders a channel's order poll set aside, kept in the data directory: listed, but a
//! follow-up read of theirs (Amazon's getOrderItems, BigCommerce's lines, eBay's shipping
//! fulfillments) failed in a way another try may mend (a 5xx, a timeout, a throttle past
//! its retries, a 401 or 403: anything but a refusal for good, which leaves the order out).
//! Before, such a failure failed the pass, and since the next pass started from the same
//! watermark and met the same order, one order the channel kept failing to give (a
//! corrupted order answering 500, a 403 for one order alone) stopped every later order of
//! that channel from reaching the poll for good. Set aside, the pass reads on past it and
//! the watermark moves; the order is read again at the start of every pass
//! (`OrderPoll::read_again`, at most ten a pass: `propagate::poll`), in turn, until it is
//! read or the channel refuses it for
//! good (left out and said, as any refused order). The first read that fails ends that
//! pass's tries and goes to the back (`still`), so an order that never mends does not
//! keep the others from theirs.
//!
//! What fails for every order is not set aside order by order: a page that would set
//! aside more than `channels::SET_ASIDE_IN_A_ROW_MAX` one after another, none read
//! between them, fails, as every pass did before (an
//! outage of the follow-up call, credentials that stopped working: logged as `order poll
//! failed`, on the console, no watermark stored past its orders), which also bounds what
//! such an outage costs a pass. And at most `SET_ASIDE_MAX` orders are kept: a pass that
//! would keep more fails the same way, nothing lost. The file is written durably before
//! the watermark moves past what it holds, readable by the owner alone and without the
//! buyer's personal fields (`channels::PollPage::set_aside`); one that is there but cannot
//! be read fails the pass (never a silent start from nothing, which would forget orders).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::channels::SetAside;
use crate::clock::Micros;

/// Most orders a poll keeps aside.
pub const SET_ASIDE_MAX: usize = 100;

/// One order kept aside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(flatten)]
    pub order: SetAside,
    /// When it was first set aside.
    pub since: Micros,
}

/// A channel's orders set aside, as its file holds them, oldest first.
#[derive(Debug)]
pub struct AsideFile {
    path: PathBuf,
    kept: Vec<Kept>,
}

/// The file that keeps a channel's orders set aside.
pub fn path(data_dir: &Path, channel: &str) -> PathBuf {
    data_dir.join(format!("poll-{channel}.set-aside"))
}

impl AsideFile {
    /// What `path` holds: nothing when there is no file.
    pub fn load(path: PathBuf) -> Result<AsideFile, String> {
        let kept = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} does not hold the orders the poll set aside ({e}): the poll stops here rather than forget them; \
                     delete it to forget them",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(AsideFile { path, kept })
    }

    /// The orders kept, oldest first.
    pub fn kept(&self) -> &[Kept] {
        &self.kept
    }

    /// Keeps `found` (an order already kept takes its new listing and reason, and keeps
    /// its time), durably. More than `SET_ASIDE_MAX` in all: nothing is kept, and the
    /// error says why (the pass fails, to read them again from its watermark).
    pub fn add(&mut self, found: Vec<SetAside>, now: Micros) -> Result<(), String> {
        if found.is_empty() {
            return Ok(());
        }
        let mut kept = self.kept.clone();
        for order in found {
            match kept.iter_mut().find(|k| k.order.id == order.id) {
                Some(k) => k.order = order,
                None => kept.push(Kept { order, since: now }),
            }
        }
        if kept.len() > SET_ASIDE_MAX {
            let last = &kept[kept.len() - 1].order;
            return Err(format!(
                "more than {SET_ASIDE_MAX} orders would be set aside, their follow-up reads failing (order {}: {}): the poll reads them again from its watermark",
                last.id, last.why
            ));
        }
        self.store(&kept)?;
        self.kept = kept;
        Ok(())
    }

    /// Forgets the order `id` (read, or left out), durably.
    pub fn remove(&mut self, id: &str) -> Result<(), String> {
        let kept: Vec<Kept> = self
            .kept
            .iter()
            .filter(|k| k.order.id != id)
            .cloned()
            .collect();
        if kept.len() != self.kept.len() {
            self.store(&kept)?;
            self.kept = kept;
        }
        Ok(())
    }

    /// The order `id` is still aside, the latest try failing with `why`: it goes to the
    /// back, so that the next pass tries the others first (one that never mends would
    /// otherwise end every pass's tries before them), durably with its reason.
    pub fn still(&mut self, id: &str, why: String) -> Result<(), String> {
        let mut kept = self.kept.clone();
        if let Some(at) = kept.iter().position(|k| k.order.id == id) {
            let mut k = kept.remove(at);
            k.order.why = why;
            kept.push(k);
            self.store(&kept)?;
            self.kept = kept;
        }
        Ok(())
    }

    fn store(&self, kept: &[Kept]) -> Result<(), String> {
        let bytes = serde_json::to_vec(kept).expect("set-aside orders serialize");
        crate::store::small_file::write_durably(&self.path, &bytes, true)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(id: &str, why: &str) -> SetAside {
        SetAside {
            id: id.into(),
            listed: json!({"id": id}),
            why: why.into(),
        }
    }

    #[test]
    fn orders_are_kept_across_loads_once_each_and_forgotten_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "amazon");
        let mut aside = AsideFile::load(file.clone()).unwrap();
        assert!(aside.kept().is_empty(), "no file: nothing aside");
        aside
            .add(vec![order("1", "HTTP 500"), order("2", "HTTP 503")], 10)
            .unwrap();
        aside.add(vec![order("1", "HTTP 502")], 20).unwrap();
        let loaded = AsideFile::load(file.clone()).unwrap();
        let kept: Vec<_> = loaded
            .kept()
            .iter()
            .map(|k| (k.order.id.as_str(), k.order.why.as_str(), k.since))
            .collect();
        assert_eq!(
            kept,
            [("1", "HTTP 502", 10), ("2", "HTTP 503", 10)],
            "set aside again: its new reason, its first time"
        );
        aside.still("1", "HTTP 504".into()).unwrap();
        let turn: Vec<_> = AsideFile::load(file.clone())
            .unwrap()
            .kept()
            .iter()
            .map(|k| (k.order.id.clone(), k.order.why.clone()))
            .collect();
        assert_eq!(
            turn,
            [
                ("2".into(), "HTTP 503".into()),
                ("1".into(), "HTTP 504".into())
            ],
            "still failing: to the back, with its reason, durably"
        );
        aside.remove("1").unwrap();
        let ids: Vec<_> = AsideFile::load(file)
            .unwrap()
            .kept()
            .iter()
            .map(|k| k.order.id.clone())
            .collect();
        assert_eq!(ids, ["2"]);
    }

    #[test]
    fn a_page_sets_aside_orders_without_personal_fields_and_fails_past_a_few_in_a_row() {
        use crate::channels::{PollPage, SET_ASIDE_IN_A_ROW_MAX};
        let mut page = PollPage::default();
        let listed = json!({"id": 7, "status_id": 11, "billing_address": {"email": "a@b.c"}, "buyer": {"username": "x"},
            "lineItems": [{"sku": "A", "giftDetails": {"recipientEmail": "r@b.c", "senderName": "S"}}]});
        let aside = |page: &mut PollPage, id: usize| {
            page.set_aside(id.to_string(), &listed, "HTTP 500".into())
        };
        // Failing for their own sake, orders read between them: any number aside.
        for i in 0..2 * SET_ASIDE_IN_A_ROW_MAX {
            aside(&mut page, i).unwrap();
            page.took(Vec::new());
        }
        assert_eq!(
            page.set_aside[0].listed,
            json!({"id": 7, "status_id": 11, "lineItems": [{"sku": "A"}]})
        );
        for i in 0..SET_ASIDE_IN_A_ROW_MAX {
            aside(&mut page, 100 + i).unwrap();
        }
        let err = aside(&mut page, 9).unwrap_err();
        assert!(
            err.contains("for every order") && err.contains("order 9: HTTP 500"),
            "{err}"
        );
        assert_eq!(page.set_aside.len(), 3 * SET_ASIDE_IN_A_ROW_MAX);
    }

    #[test]
    fn more_than_the_most_keeps_nothing_and_an_unreadable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "bc");
        let mut aside = AsideFile::load(file.clone()).unwrap();
        let many: Vec<_> = (0..SET_ASIDE_MAX)
            .map(|i| order(&i.to_string(), "HTTP 500"))
            .collect();
        aside.add(many, 1).unwrap();
        let err = aside.add(vec![order("last", "HTTP 500")], 2).unwrap_err();
        assert!(
            err.contains("more than 100 orders") && err.contains("order last: HTTP 500"),
            "{err}"
        );
        assert_eq!(
            AsideFile::load(file.clone()).unwrap().kept().len(),
            SET_ASIDE_MAX
        );
        std::fs::write(&file, b"not json").unwrap();
        let err = AsideFile::load(file).unwrap_err();
        assert!(
            err.contains("does not hold the orders the poll set aside"),
            "{err}"
        );
    }
}
