//! Giving freed heap memory back to the operating system.
//!
//! glibc's allocator keeps what the program frees in its arenas (one per thread that
//! allocates, up to eight per core) for reuse, and returns it to the system only from the
//! top of each heap. lockstep's live heap is bounded (the state, the store's pending rows,
//! fjall's memtables and cache), but it has many allocating threads and transient peaks: a
//! reconciliation pass holds every SKU's head and the channel's levels at once. Measured
//! at 10,000 orders/min with shipping: heaptrack's peak live heap was 69 MB (26 MB of it
//! one reconciliation pass) while resident memory climbed past 190 MiB in 30 minutes, freed
//! memory scattered over the arenas. `malloc_trim(0)` hands the free pages of every arena
//! back (glibc ≥ 2.8 releases whole free pages inside a heap too, not only its top), so
//! resident memory stays nearer the live heap. Not all the way: pages that still hold a
//! live allocation stay, and resident memory still rises pass by pass (the README's soak
//! figures). It runs every `TRIM_INTERVAL` on a blocking thread; a trim takes milliseconds.
//!
//! Elsewhere (musl, other systems) this does nothing.

use std::time::Duration;

/// How often the heap is trimmed: often enough that a reconciliation pass's transient
/// memory is returned within seconds, rarely enough to cost nothing measurable.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Returns the allocator's free pages to the operating system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it is safe to
    // call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims the heap every `TRIM_INTERVAL`, for as long as the runtime runs.
pub fn spawn_trimmer() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    });
}
