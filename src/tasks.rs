//! Supervised background tasks: a pusher, a poll, a queue reader or a reconciler that
//! panics (a bug, or an answer nobody foresaw) is logged, counted in
//! `lockstep_task_restarts_total{task}` and started again after a pause, instead of
//! leaving its channel silently unserved until the process restarts.

use std::future::Future;
use std::time::Duration;

/// The pause before a task that panicked is started again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Spawns `start()` and starts it again whenever it panics; a task that returns is done.
pub fn supervise<F, Fut>(task: String, start: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(start()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    let why = e.into_panic();
                    let why = why
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| why.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(%task, panic = %why, "task panicked: starting it again");
                    metrics::counter!("lockstep_task_restarts_total", "task" => task.clone())
                        .increment(1);
                    tokio::time::sleep(RESTART_PAUSE).await;
                }
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_started_again() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        supervise("test".into(), move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        });
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "two panics, two restarts, then done"
        );
    }
}
