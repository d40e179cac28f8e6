//! The windows an order poll reads a list in, when the list is not sorted by modification
//! time but takes an end bound (Shopify's, Amazon's, eBay's, TikTok's and Walmart's).
//!
//! Why windows. The newest modification time seen on such a list says nothing of the
//! orders not yet read, so a pass cut short (its page cap, a failed call) may store no
//! more than the end of what it read whole. A pass therefore reads `[start, end]` windows,
//! first the whole span up to the pass's start, and stores each one's end once it is read
//! whole. A window that holds more than one window may read (`WINDOW_PAGES`, or a channel
//! that says so: Walmart's cap of 10,000 orders a query) is halved and read again from its
//! start, down to `WINDOW_MIN`; the window after one read whole is twice as wide. So after
//! a long outage the windows shrink to what a pass reads, every order is read, and the
//! watermark moves as windows finish, where one query of the whole outage would be cut
//! short at the same point on every pass and never move it.
//!
//! The next window starts `OVERLAP` before the last one ended: the channels' bounds are
//! seconds or milliseconds and inclusive or exclusive, so an order modified at that
//! instant is in one of the two whatever they are; orders read twice are duplicates by
//! their keys.

use crate::clock::{Micros, MICROS_PER_SECOND};

/// The narrowest window: more than a window's pages of orders modified within one second
/// is read on past the window's cap (a pass cut short there reads it again).
pub const WINDOW_MIN: Micros = MICROS_PER_SECOND;
/// How far a window starts before the last one's end: a second, the coarsest of the
/// channels' resolutions (Shopify's and TikTok's times are seconds).
pub const OVERLAP: Micros = MICROS_PER_SECOND;

/// A window of modification time being read, and the pass's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Micros,
    pub end: Micros,
    /// Where the pass ends: its start, when its first window was cut.
    pub until: Micros,
}

impl Window {
    /// A pass's first window: everything from `since` to `now`, or `width` of it (where
    /// the pass before was cut short). A watermark written by hand may be near 0: no
    /// window starts before it.
    pub fn first(since: Micros, now: Micros, width: Option<Micros>) -> Window {
        let start = since.max(0);
        let until = now.max(start + WINDOW_MIN);
        let width = width.unwrap_or(Micros::MAX).max(WINDOW_MIN);
        Window {
            start,
            end: start.saturating_add(width).min(until),
            until,
        }
    }

    /// The window's first half, read from its start, or `None` when it is `WINDOW_MIN`
    /// already.
    pub fn halved(&self) -> Option<Window> {
        (self.end - self.start > WINDOW_MIN).then(|| Window {
            end: self.start + ((self.end - self.start) / 2).max(WINDOW_MIN),
            ..*self
        })
    }

    /// The window after this one, read whole: from `OVERLAP` before this one's end, twice
    /// as wide, up to the pass's end; `None` when this one reached it. It always ends
    /// later than this one (twice `WINDOW_MIN` is more than `OVERLAP`).
    pub fn after(&self) -> Option<Window> {
        (self.end < self.until).then(|| {
            let start = self.end - OVERLAP;
            let width = (2 * (self.end - self.start)).max(2 * WINDOW_MIN);
            Window {
                start,
                end: start.saturating_add(width).min(self.until),
                until: self.until,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_halve_to_a_second_widen_after_and_always_move_on() {
        let s = MICROS_PER_SECOND;
        let whole = Window::first(100 * s, 200 * s, None);
        assert_eq!(whole.until, 200 * s);
        let half = whole.halved().unwrap();
        assert_eq!(
            (half.start, half.end, half.until),
            (100 * s, 150 * s, 200 * s)
        );
        // The next window overlaps the last by a second and is twice as wide, up to the
        // pass's end.
        let next = half.after().unwrap();
        assert_eq!((next.start, next.end), (150 * s - OVERLAP, 200 * s));
        assert_eq!(next.after(), None);
        // Halved down to a second, a window still moves the pass on.
        let mut narrow = half;
        while let Some(h) = narrow.halved() {
            narrow = h;
        }
        assert_eq!(narrow.end - narrow.start, s);
        let after = narrow.after().unwrap();
        assert!(
            after.start >= narrow.start && after.end > narrow.end,
            "{after:?}"
        );
        assert_eq!(after.end - after.start, 2 * s);
        let later = after.after().unwrap();
        assert!(later.start > narrow.start && later.end > after.end);
    }

    #[test]
    fn a_first_window_never_starts_before_zero_nor_is_narrower_than_a_second() {
        let w = Window::first(-5 * MICROS_PER_SECOND, 10, None);
        assert_eq!((w.start, w.end, w.until), (0, WINDOW_MIN, WINDOW_MIN));
        assert_eq!(w.halved(), None);
        assert_eq!(w.after(), None);
        let w = Window::first(0, 100 * MICROS_PER_SECOND, Some(0));
        assert_eq!(w.end, WINDOW_MIN);
    }

    #[test]
    fn a_first_window_takes_the_width_the_pass_before_was_cut_at() {
        let s = MICROS_PER_SECOND;
        let w = Window::first(100 * s, 200 * s, Some(30 * s));
        assert_eq!((w.start, w.end, w.until), (100 * s, 130 * s, 200 * s));
        // Never past the pass's start.
        let w = Window::first(100 * s, 200 * s, Some(300 * s));
        assert_eq!(w.end, 200 * s);
    }
}
