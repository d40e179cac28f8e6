//! The in-memory forms of what every SKU carries: a channel's view (`View`) and the
//! latest count (`LatestCount`). The shard holds one of each per SKU and configured
//! channel, a million SKUs and more, so they are kept small; what is stored stays the
//! records' forms (`records::ChannelView`, `records::CountMark`), converted at the
//! boundary (`SkuState::head`, `SkuState::from_parts`), so the on-disk format is theirs.
//!
//! A `records::ChannelView` is 104 bytes, three of them 320 of jemalloc's; a `View` is 32,
//! three of them 96: its two optional quantities keep "none" as `i64::MIN` (`MaybeQty`),
//! and what few views ever hold (a pending level, an unexplained shortfall: 64 bytes) is
//! boxed apart, allocated only while set (`Rare`).

use crate::clock::Micros;
use crate::core::records::{ChannelView, CountMark, PendingLevel};

/// An optional quantity in 8 bytes: `i64::MIN` is "none". No quantity can be it: every
/// quantity is a sum of event quantities, each within ±`QTY_MAX` (10^9), so reaching
/// -2^63 would take 9.2 billion events on one SKU (the i64 arithmetic on them overflows
/// at the same distance). Stored views are checked as they are read (`View::of`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct MaybeQty(i64);

const NO_QTY: i64 = i64::MIN;

impl MaybeQty {
    const NONE: MaybeQty = MaybeQty(NO_QTY);

    fn get(self) -> Option<i64> {
        (self.0 != NO_QTY).then_some(self.0)
    }

    fn of(qty: Option<i64>) -> MaybeQty {
        match qty {
            Some(q) => {
                debug_assert_ne!(q, NO_QTY, "a quantity no event can make");
                MaybeQty(q)
            }
            None => MaybeQty::NONE,
        }
    }
}

impl Default for MaybeQty {
    fn default() -> MaybeQty {
        MaybeQty::NONE
    }
}

impl std::fmt::Debug for MaybeQty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// What the engine knows a channel shows for a SKU: `records::ChannelView`'s facts (each
/// field's meaning is documented there), in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    acked: MaybeQty,
    acked_at: Micros,
    expected: MaybeQty,
    /// `None` exactly while every part of it is at its default (`tidy` keeps it so, and
    /// equality relies on it).
    rare: Option<Box<Rare>>,
}

/// The parts of a view that few SKUs ever hold, and then only for seconds: a `delta`
/// channel's level waiting out its settle window, a shortfall read from the channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rare {
    pending: Option<PendingLevel>,
    unexplained: i64,
    unexplained_until: Micros,
}

impl View {
    /// A stored view in memory; `Err` for a quantity no event can make (`MaybeQty`).
    pub fn of(stored: ChannelView) -> Result<View, String> {
        let ChannelView {
            acked,
            acked_at,
            expected,
            pending,
            unexplained,
            unexplained_until,
        } = stored;
        if acked == Some(NO_QTY) || expected == Some(NO_QTY) {
            return Err(format!(
                "a stored view holds the quantity {NO_QTY}, which no event can make"
            ));
        }
        let rare = Rare {
            pending,
            unexplained,
            unexplained_until,
        };
        // Boxed only when it holds something: recovery builds a view per SKU and channel.
        Ok(View {
            acked: MaybeQty::of(acked),
            acked_at,
            expected: MaybeQty::of(expected),
            rare: (rare != Rare::default()).then(|| Box::new(rare)),
        })
    }

    /// The stored form: `View::of(view.record()) == view`.
    pub fn record(&self) -> ChannelView {
        let rare = self.rare.as_deref();
        ChannelView {
            acked: self.acked(),
            acked_at: self.acked_at,
            expected: self.expected(),
            pending: rare.and_then(|r| r.pending.clone()),
            unexplained: self.unexplained(),
            unexplained_until: self.unexplained_until(),
        }
    }

    pub fn is_default(&self) -> bool {
        *self == View::default()
    }

    pub fn acked(&self) -> Option<i64> {
        self.acked.get()
    }

    pub fn acked_at(&self) -> Micros {
        self.acked_at
    }

    pub fn expected(&self) -> Option<i64> {
        self.expected.get()
    }

    pub fn pending(&self) -> Option<&PendingLevel> {
        self.rare.as_ref().and_then(|r| r.pending.as_ref())
    }

    pub fn unexplained(&self) -> i64 {
        self.rare.as_ref().map_or(0, |r| r.unexplained)
    }

    pub fn unexplained_until(&self) -> Micros {
        self.rare.as_ref().map_or(0, |r| r.unexplained_until)
    }

    /// The channel acknowledged `qty` (its source time `at`): it shows it.
    pub fn acknowledge(&mut self, qty: i64, at: Micros) {
        self.acked = MaybeQty::of(Some(qty));
        self.acked_at = at;
        self.expected = MaybeQty::of(Some(qty));
    }

    pub fn set_expected(&mut self, expected: Option<i64>) {
        self.expected = MaybeQty::of(expected);
    }

    /// Adds `change` to what the channel should show, once it has an expectation.
    pub fn shift_expected(&mut self, change: i64) {
        if let Some(expected) = self.expected() {
            self.expected = MaybeQty::of(Some(expected + change));
        }
    }

    pub fn set_pending(&mut self, pending: Option<PendingLevel>) {
        self.rare_mut().pending = pending;
        self.tidy();
    }

    /// The pending level, to follow the channel's own orders during its window.
    pub fn pending_mut(&mut self) -> Option<&mut PendingLevel> {
        self.rare.as_mut().and_then(|r| r.pending.as_mut())
    }

    pub fn set_unexplained(&mut self, unexplained: i64, until: Micros) {
        let rare = self.rare_mut();
        rare.unexplained = unexplained;
        rare.unexplained_until = until;
        self.tidy();
    }

    /// Takes `netted` off the unexplained difference (`core::net_unexplained`).
    pub fn net(&mut self, netted: i64) {
        if netted != 0 {
            self.rare_mut().unexplained -= netted;
            self.tidy();
        }
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Frees the rare part once it holds nothing.
    fn tidy(&mut self) {
        if self.rare.as_deref().is_some_and(|r| *r == Rare::default()) {
            self.rare = None;
        }
    }
}

/// The latest count of a SKU (`records::CountMark`) in memory: its source and key in one
/// allocation instead of two strings of 24 bytes each plus theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestCount {
    pub ts: Micros,
    /// Where the source ends in `text`.
    source_len: usize,
    /// The source, then the key.
    text: Box<str>,
}

impl LatestCount {
    pub fn of(mark: &CountMark) -> LatestCount {
        LatestCount {
            ts: mark.ts,
            source_len: mark.source.len(),
            text: format!("{}{}", mark.source, mark.key).into_boxed_str(),
        }
    }

    pub fn source(&self) -> &str {
        &self.text[..self.source_len]
    }

    pub fn key(&self) -> &str {
        &self.text[self.source_len..]
    }

    /// What counts compare by: (ts, source, key), as `CountMark::order_key`.
    pub fn order_key(&self) -> (Micros, &str, &str) {
        (self.ts, self.source(), self.key())
    }

    /// The stored form.
    pub fn mark(&self) -> CountMark {
        CountMark {
            ts: self.ts,
            source: self.source().to_string(),
            key: self.key().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_and_a_count_are_their_records_in_memory() {
        let views = [
            ChannelView::default(),
            ChannelView {
                acked: Some(5),
                acked_at: 7,
                expected: Some(-3),
                ..ChannelView::default()
            },
            ChannelView {
                expected: Some(0),
                pending: Some(PendingLevel {
                    level: 4,
                    at: 1,
                    expected_at: 2,
                    settles_at: 3,
                    seq: 9,
                }),
                unexplained: -2,
                unexplained_until: 11,
                ..ChannelView::default()
            },
        ];
        for stored in views {
            let view = View::of(stored.clone()).unwrap();
            assert_eq!(view.record(), stored);
            assert_eq!(view.is_default(), stored == ChannelView::default());
        }
        let impossible = ChannelView {
            expected: Some(i64::MIN),
            ..ChannelView::default()
        };
        assert!(View::of(impossible).is_err());

        let mark = CountMark {
            ts: 3,
            source: "erp".into(),
            key: "count-1".into(),
        };
        let count = LatestCount::of(&mark);
        assert_eq!(count.mark(), mark);
        assert_eq!(count.order_key(), mark.order_key());
    }

    #[test]
    fn the_rare_part_is_freed_once_it_holds_nothing() {
        let mut view = View::default();
        view.set_unexplained(2, 10);
        assert!(view.rare.is_some());
        view.net(2);
        assert_eq!(view.unexplained(), 0);
        view.set_unexplained(0, 0);
        assert!(view.rare.is_none() && view.is_default());
    }

    /// What every SKU pays per channel and for its count: a regression here is paid a
    /// million times over (issue #18; the README's "Memory per SKU").
    #[test]
    fn a_view_is_32_bytes_and_a_count_32() {
        assert_eq!(std::mem::size_of::<View>(), 32);
        assert_eq!(std::mem::size_of::<Option<LatestCount>>(), 32);
    }
}
