//! The windows an order poll reads a list in, when the list is not sorted by modification
//! time but takes an end bound (Shopify's, Amazon's, eBay's, TikTok's and Walmart's).
//!
//! Why windows. The newest modification time seen on such a list says nothing of the
//! orders not yet read, so a pass cut short (its page cap, a failed call) may store no
//! more than the end of what it read whole. A pass therefore reads `[start, end]` windows,
//! first from the watermark (less the poll's overlap) to the pass's start, and stores each
//! one's end once it is read whole. A window that holds more than one window may read
//! (`WINDOW_PAGES`, or a channel that says so: Walmart's cap of 10,000 orders a query) is
//! halved and read again from its start, down to `WINDOW_MIN`, or at its first page cut to
//! about half a window's pages where the channel counts the orders it holds; the window
//! after one read whole is as wide, or twice as wide when it held less than half a
//! window's pages. So after a long outage the windows shrink to what a pass reads and the
//! watermark moves as windows finish, where one query of the whole outage would be cut
//! short at the same point on every pass, and a pass that moved the watermark to the
//! newest time it had seen skipped the orders it had not reached.
//!
//! The next window starts `OVERLAP` before the last one ended: the channels' bounds are
//! seconds or milliseconds and inclusive or exclusive, so an order modified at that
//! instant is in one of the two whatever they are; orders read twice are duplicates by
//! their keys.

use crate::channels::TooWide;
use crate::clock::{Micros, MICROS_PER_SECOND};

/// Most pages one window reads before it is halved.
pub const WINDOW_PAGES: u32 = 100;

/// How far a window starts before the last one's end: a second, the coarsest of the
/// channels' resolutions (Shopify's and TikTok's times are seconds).
pub const OVERLAP: Micros = MICROS_PER_SECOND;
/// The narrowest window: twice the overlap, so that the window after one read whole, even
/// halved, starts later than it did. More than a window's pages of orders modified within
/// it is read on past the window's cap, up to the pass's cap (past that, each pass reads
/// the same pages again: over 100,000 orders modified within two seconds).
pub const WINDOW_MIN: Micros = 2 * OVERLAP;

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
        self.narrowed((self.end - self.start) / 2)
    }

    /// The window cut to `width` (at least `WINDOW_MIN`), read from its start, or `None`
    /// when that is no narrower.
    pub fn narrowed(&self, width: Micros) -> Option<Window> {
        let end = self.start + width.max(WINDOW_MIN);
        (end < self.end).then_some(Window { end, ..*self })
    }

    /// The window after this one, read whole in `pages`: from `OVERLAP` before this
    /// one's end, twice as wide when it held less than half of `WINDOW_PAGES`, else as
    /// wide (doubling a window near full would overshoot at once and read half a window
    /// for nothing), up to the pass's end; `None` when this one reached it. It always
    /// ends later than this one, and even halved starts later (`WINDOW_MIN` is twice
    /// `OVERLAP`).
    pub fn after(&self, pages: u32) -> Option<Window> {
        (self.end < self.until).then(|| {
            let start = self.end - OVERLAP;
            let grow = if pages < WINDOW_PAGES / 2 { 2 } else { 1 };
            let width = (self.end - self.start) * grow;
            Window {
                start,
                end: start.saturating_add(width.max(WINDOW_MIN)).min(self.until),
                until: self.until,
            }
        })
    }
}

/// What follows a page of a window.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read the window's next page.
    Page,
    /// Read this narrower window from its start (what was read of the wider one comes
    /// again: duplicates by their keys).
    Narrower(Window),
    /// The window is read whole.
    Done,
    /// The pass fails, for this reason.
    Fail(String),
}

/// What follows the `pages`-th page of `window`: `counted`, the pages the channel says
/// the window holds (`PollPage::pages`, read at a first page only); `too_wide`, what the
/// channel said of it; `more`, whether a page follows. A window counted at more than
/// `WINDOW_PAGES` is cut to about half that at once; one that runs past `WINDOW_PAGES`,
/// or that the channel calls too wide, is halved. One that cannot be narrowed any more is
/// read on (`OverCap`) or fails the pass with the channel's refusal.
pub fn after_page(
    window: &Window,
    pages: u32,
    counted: Option<u64>,
    too_wide: Option<TooWide>,
    more: bool,
) -> Step {
    let counted = counted.filter(|n| pages == 1 && *n > u64::from(WINDOW_PAGES));
    let too_wide = too_wide.or_else(|| {
        let over = counted.is_some() || (pages >= WINDOW_PAGES && more);
        over.then_some(TooWide::OverCap)
    });
    if let Some(too_wide) = too_wide {
        let narrower = match counted {
            Some(total) => {
                let width = (window.end - window.start) as f64;
                let share = f64::from(WINDOW_PAGES / 2) / total as f64;
                window.narrowed((width * share) as Micros)
            }
            None => window.halved(),
        };
        match (narrower, too_wide) {
            (Some(narrower), _) => return Step::Narrower(narrower),
            (None, TooWide::Refused(reason)) => return Step::Fail(reason),
            (None, TooWide::OverCap) => {}
        }
    }
    if more {
        Step::Page
    } else {
        Step::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_halve_to_their_narrowest_widen_after_and_always_move_on() {
        let s = MICROS_PER_SECOND;
        let whole = Window::first(100 * s, 200 * s, None);
        assert_eq!(whole.until, 200 * s);
        let half = whole.halved().unwrap();
        assert_eq!(
            (half.start, half.end, half.until),
            (100 * s, 150 * s, 200 * s)
        );
        // The next window overlaps the last by a second and is twice as wide (or as
        // wide), up to the pass's end.
        let next = half.after(1).unwrap();
        assert_eq!((next.start, next.end), (150 * s - OVERLAP, 200 * s));
        assert_eq!(next.after(1), None);
        let same = half.halved().unwrap().after(WINDOW_PAGES / 2).unwrap();
        assert_eq!(
            (same.start, same.end),
            (125 * s - OVERLAP, 150 * s - OVERLAP)
        );
        // Narrowed to a width, never below `WINDOW_MIN`, never wider.
        assert_eq!(whole.narrowed(10 * s).map(|w| w.end), Some(110 * s));
        assert_eq!(whole.narrowed(0).map(|w| w.end), Some(100 * s + WINDOW_MIN));
        assert_eq!(whole.narrowed(100 * s), None);
        // Halved down to `WINDOW_MIN`, a window still moves the pass on, and so does the
        // one after it halved.
        let mut narrow = half;
        while let Some(h) = narrow.halved() {
            narrow = h;
        }
        assert!(narrow.end - narrow.start <= 2 * WINDOW_MIN);
        for pages in [0, WINDOW_PAGES] {
            let after = narrow.after(pages).unwrap();
            assert!(
                after.start > narrow.start && after.end > narrow.end,
                "{after:?}"
            );
            let halved = after.halved().unwrap_or(after);
            assert!(halved.start > narrow.start, "{halved:?}");
        }
    }

    /// A stretch where every window is too wide until it cannot be narrowed: the windows
    /// read whole still move on, each starting later than the one before.
    #[test]
    fn a_dense_stretch_is_read_in_windows_that_always_move_on() {
        let s = MICROS_PER_SECOND;
        let mut window = Window::first(0, 60 * s, None);
        let mut read_whole = Vec::new();
        for _ in 0..10_000 {
            match after_page(&window, 1, None, Some(TooWide::OverCap), false) {
                Step::Narrower(narrower) => window = narrower,
                Step::Done => {
                    read_whole.push(window);
                    match window.after(WINDOW_PAGES) {
                        Some(next) => window = next,
                        None => break,
                    }
                }
                step => panic!("{step:?}"),
            }
        }
        assert_eq!(read_whole.last().map(|w| w.end), Some(60 * s));
        for pair in read_whole.windows(2) {
            assert!(
                pair[1].start > pair[0].start && pair[1].end > pair[0].end,
                "{pair:?}"
            );
        }
        // Each window as narrow as windows go, overlapping the last by `OVERLAP`.
        assert!(read_whole.iter().all(|w| w.end - w.start <= WINDOW_MIN));
    }

    #[test]
    fn a_first_window_never_starts_before_zero_nor_is_narrower_than_the_narrowest() {
        let w = Window::first(-5 * MICROS_PER_SECOND, 10, None);
        assert_eq!((w.start, w.end, w.until), (0, WINDOW_MIN, WINDOW_MIN));
        assert_eq!(w.halved(), None);
        assert_eq!(w.after(0), None);
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

    #[test]
    fn a_page_narrows_its_window_when_counted_or_past_the_cap_and_reads_on_at_the_narrowest() {
        let s = MICROS_PER_SECOND;
        let w = Window::first(0, 1_000 * s, None);
        let over = Some(TooWide::OverCap);
        let refused = || Some(TooWide::Refused("no".into()));
        // Within the cap: the next page, or done.
        assert_eq!(after_page(&w, 1, Some(100), None, true), Step::Page);
        assert_eq!(after_page(&w, 7, None, None, false), Step::Done);
        // Counted at 500 pages on its first page: cut to a tenth (50 of 500 pages).
        let Step::Narrower(n) = after_page(&w, 1, Some(500), None, true) else {
            panic!("not narrowed");
        };
        assert_eq!((n.start, n.end), (0, 100 * s));
        // A count past the first page is not read again.
        assert_eq!(after_page(&w, 2, Some(500), None, true), Step::Page);
        // Past the cap with more to come, or called too wide: halved.
        let half = Step::Narrower(w.halved().unwrap());
        assert_eq!(after_page(&w, WINDOW_PAGES, None, None, true), half);
        assert_eq!(after_page(&w, WINDOW_PAGES, None, None, false), Step::Done);
        assert_eq!(after_page(&w, 1, None, over.clone(), true), half);
        assert_eq!(after_page(&w, 3, None, refused(), false), half);
        // `WINDOW_MIN` cannot be narrowed: over the cap it reads on, refused it fails.
        let second = Window::first(0, 1, None);
        assert_eq!(after_page(&second, 1, Some(500), None, true), Step::Page);
        assert_eq!(
            after_page(&second, WINDOW_PAGES, None, None, true),
            Step::Page
        );
        assert_eq!(after_page(&second, 1, None, over, false), Step::Done);
        assert_eq!(
            after_page(&second, 1, None, refused(), false),
            Step::Fail("no".into())
        );
    }
}
