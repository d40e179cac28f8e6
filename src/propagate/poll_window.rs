//! The windows an order poll reads a list in, when the list is not sorted by modification
//! time but takes an end bound (Shopify's, Amazon's, eBay's, TikTok's and Walmart's).
//!
//! Why windows. The newest modification time seen on such a list says nothing of the
//! orders not yet read, so a pass cut short (its page cap, a failed call) may store no
//! more than the end of what it read whole. A pass therefore reads `[start, end]` windows
//! (`Reader`), from where it starts (`pass_start`) to its own start, and stores each one's
//! end once it is read whole. A window that holds more than one window may read
//! (`WINDOW_PAGES`, or a channel that says so: Walmart's cap of 10,000 orders a query) is
//! halved and read again from its start, down to `WINDOW_MIN`, or at its first page cut
//! to about half a window's pages where the channel counts the orders it holds. The window
//! after one read whole is as wide, or twice as wide when it held less than half a
//! window's pages and did not have to be narrowed. A pass that follows one cut short fits
//! its windows to the window that one was cut in (`Window::capped`), and starts no further
//! back than the end of a window read when it was already the poll's overlap old. So after
//! a long outage the windows shrink to what a pass reads and the watermark moves as
//! windows finish, where one query of the whole outage would be cut short at the same
//! point on every pass, and a pass that moved the watermark to the newest time it had
//! seen skipped the orders it had not reached.
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
/// it is read on past the window's cap. An instant is in two windows (the overlap), so
/// about 1,000 pages modified at one instant is more than a pass reads: every pass reads
/// it again and none passes it (the console says the poll is not catching up).
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
    /// A pass's first window: everything from `since` to `now`. A watermark written by
    /// hand may be near 0: no window starts before it.
    pub fn first(since: Micros, now: Micros) -> Window {
        let start = since.max(0);
        let until = now.max(start + WINDOW_MIN);
        Window {
            start,
            end: until,
            until,
        }
    }

    /// This window fitted to `cut`, the window a pass before was cut short in: one that
    /// starts well before it ends where it starts (the next then starts there, not
    /// halving its way down to it again), one that starts within it is no wider than it.
    pub fn capped(self, cut: Option<Window>) -> Window {
        let Some(cut) = cut else {
            return self;
        };
        if self.start < cut.start - OVERLAP && self.end > cut.start {
            return self.narrowed(cut.start - self.start).unwrap_or(self);
        }
        if self.start < cut.end {
            return self.narrowed(cut.end - cut.start).unwrap_or(self);
        }
        self
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

/// Where a pass starts reading: `overlap` before the watermark, but no further back than
/// `settled` (less a window's `OVERLAP`), the end of a window read when it was already
/// `overlap` old (`poll::Carried::settled`). A settled time later than the watermark is
/// not this watermark's (one written back by hand), and is not used.
pub fn pass_start(watermark: Micros, overlap: Micros, settled: Option<Micros>) -> Micros {
    let since = watermark - overlap;
    match settled.filter(|s| *s <= watermark) {
        Some(settled) => since.max(settled - OVERLAP),
        None => since,
    }
}

/// A pass's reading of windows, apart from its calls: which window to ask for, and what
/// each page's answer makes of it.
#[derive(Debug)]
pub struct Reader {
    window: Window,
    /// Pages read of the window.
    pages: u32,
    /// Whether the window came from narrowing a wider one: the next is then no wider, as
    /// growing at once would take in again what was too dense.
    narrowed: bool,
    /// The window the pass before was cut short in: windows are no wider until past it,
    /// rather than halving their way down to it again.
    resume: Option<Window>,
}

/// What a page makes of the window.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Read the window's next page (the cursor the page gave).
    NextPage,
    /// Read the window `Reader::window` now gives from its start.
    Narrower,
    /// The window is read whole: the watermark may move to `end`; `finished` when it
    /// reached the pass's end.
    ReadWhole { end: Micros, finished: bool },
}

impl Reader {
    /// A pass from `since` to `now`, the pass before cut short in `resume`.
    pub fn new(since: Micros, now: Micros, resume: Option<Window>) -> Reader {
        Reader {
            window: Window::first(since, now).capped(resume),
            pages: 0,
            narrowed: false,
            resume,
        }
    }

    /// The window being read.
    pub fn window(&self) -> Window {
        self.window
    }

    /// A page of the window was read: `counted`, `too_wide` and `more` as `after_page`
    /// takes them; `Err` fails the pass.
    pub fn turn(
        &mut self,
        counted: Option<u64>,
        too_wide: Option<TooWide>,
        more: bool,
    ) -> Result<Turn, String> {
        self.pages += 1;
        match after_page(&self.window, self.pages, counted, too_wide, more) {
            Step::Page => Ok(Turn::NextPage),
            Step::Narrower(narrower) => {
                self.window = narrower;
                self.pages = 0;
                self.narrowed = true;
                Ok(Turn::Narrower)
            }
            Step::Fail(reason) => Err(reason),
            Step::Done => {
                let end = self.window.end;
                let held = if self.narrowed {
                    WINDOW_PAGES
                } else {
                    self.pages
                };
                let next = self.window.after(held);
                if let Some(next) = next {
                    self.window = next.capped(self.resume);
                    self.pages = 0;
                    self.narrowed = false;
                }
                Ok(Turn::ReadWhole {
                    end,
                    finished: next.is_none(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_halve_to_their_narrowest_widen_after_and_always_move_on() {
        let s = MICROS_PER_SECOND;
        let whole = Window::first(100 * s, 200 * s);
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
        let mut window = Window::first(0, 60 * s);
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
        let w = Window::first(-5 * MICROS_PER_SECOND, 10);
        assert_eq!((w.start, w.end, w.until), (0, WINDOW_MIN, WINDOW_MIN));
        assert_eq!(w.halved(), None);
        assert_eq!(w.after(0), None);
    }

    #[test]
    fn windows_are_fitted_to_the_one_a_pass_was_cut_short_in_until_past_it() {
        let s = MICROS_PER_SECOND;
        let cut = Window::first(100 * s, 130 * s);
        // Well before it: ends where it starts, and the one after starts within it.
        let w = Window::first(50 * s, 200 * s).capped(Some(cut));
        assert_eq!((w.start, w.end, w.until), (50 * s, 100 * s, 200 * s));
        let next = w.after(0).unwrap().capped(Some(cut));
        assert_eq!(
            (next.start, next.end),
            (100 * s - OVERLAP, 130 * s - OVERLAP)
        );
        // Within it: no wider than it; past it, or narrower already: as it was.
        let within = Window::first(110 * s, 200 * s).capped(Some(cut));
        assert_eq!((within.start, within.end), (110 * s, 140 * s));
        let past = Window::first(130 * s, 200 * s);
        assert_eq!(past.capped(Some(cut)), past);
        let narrow = Window::first(100 * s, 110 * s);
        assert_eq!(narrow.capped(Some(cut)), narrow);
        assert_eq!(past.capped(None), past);
    }

    #[test]
    fn a_page_narrows_its_window_when_counted_or_past_the_cap_and_reads_on_at_the_narrowest() {
        let s = MICROS_PER_SECOND;
        let w = Window::first(0, 1_000 * s);
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
        let second = Window::first(0, 1);
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

    /// Passes of at most `PASS_PAGES` pages over a list of 100 orders a page (`orders`,
    /// their modification times, sorted), a watermark moving as windows are read whole:
    /// what `poll.rs` does, without the calls.
    fn passes(orders: &[Micros], now: Micros, counted: bool) -> (usize, Micros, Vec<Window>) {
        const PASS_PAGES: u32 = 1_000;
        let overlap = 300 * MICROS_PER_SECOND;
        let mut watermark = overlap;
        let mut resume = None;
        let mut settled = None;
        let mut read_whole = Vec::new();
        for pass in 1..=20 {
            let mut reader = Reader::new(pass_start(watermark, overlap, settled), now, resume);
            let (mut pages, mut of_window) = (0, 0);
            resume = loop {
                if pages == PASS_PAGES {
                    break Some(reader.window());
                }
                let w = reader.window();
                let held = orders.partition_point(|t| *t <= w.end)
                    - orders.partition_point(|t| *t < w.start);
                let held = held.div_ceil(100).max(1) as u64;
                pages += 1;
                of_window += 1;
                let more = of_window < held;
                match reader.turn(counted.then_some(held), None, more).unwrap() {
                    Turn::NextPage => {}
                    Turn::Narrower => of_window = 0,
                    Turn::ReadWhole { end, finished } => {
                        of_window = 0;
                        read_whole.push(w);
                        if end.min(now) > watermark {
                            watermark = end.min(now);
                            if watermark <= now - overlap {
                                settled = Some(watermark);
                            }
                        }
                        if finished {
                            break None;
                        }
                    }
                }
            };
            if resume.is_none() && watermark == now {
                return (pass, watermark, read_whole);
            }
        }
        (usize::MAX, watermark, read_whole)
    }

    /// Ten orders a second for an hour, and a bulk change: from 101 to 900 pages more at
    /// one instant, or 2,000 pages over ten seconds or five minutes. With or without the
    /// channel's count, a few passes read it all, and the windows read whole cover every
    /// time up to the watermark. Before, a list with no count spent every pass halving its
    /// way back down to the instant and never passed it, and a dense stretch within the
    /// five minutes every pass reads again took each pass's pages for good.
    #[test]
    fn a_dense_stretch_is_passed_in_a_few_passes_and_nothing_before_the_watermark_is_left() {
        let s = MICROS_PER_SECOND;
        let now = 3_600 * s;
        // (pages, over how many seconds)
        for (dense, over) in [(101, 0), (300, 0), (900, 0), (2_000, 10), (2_000, 300)] {
            let mut orders: Vec<Micros> = (0..36_000).map(|i| i * s / 10).collect();
            let step = over * s / (dense * 100);
            orders.extend((0..dense * 100).map(|i| 1_800 * s + 1 + i * step));
            orders.sort_unstable();
            for counted in [false, true] {
                let (passes, watermark, read) = passes(&orders, now, counted);
                assert!(
                    passes <= 8,
                    "{dense} pages over {over} s, counted {counted}: {passes} passes, watermark at {watermark}"
                );
                // The windows read whole cover every time up to the watermark: no gap.
                let mut read = read;
                read.sort_by_key(|w| w.start);
                let mut covered = 0;
                for w in read {
                    assert!(
                        w.start <= covered,
                        "{dense}, counted {counted}: a gap before {w:?}"
                    );
                    covered = covered.max(w.end);
                }
                assert!(covered >= watermark);
            }
        }
    }
}
