//! The queue reader: inbound from a channel's own queue (Amazon's SQS, where SP-API sends
//! `ORDER_CHANGE`). A long poll at a time; the messages' events are submitted, and only
//! once the engine has made them durable are the messages deleted, so a crash, a refused
//! submit or a lost delete leaves them to be received again (after the queue's
//! visibility timeout). A message received again is a duplicate: its notification id is
//! remembered, and its events' keys make them duplicates in any case.

use std::sync::Arc;
use std::time::Duration;

use crate::channels::{Caller, ChannelAdapter, QueueMessage};
use crate::clock::now_micros;
use crate::engine::Engine;

/// A receive waits at most 20 s at the queue; the call may take this long in all.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Waits after a failed receive, doubling up to the most.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Reads `adapter`'s queue for as long as the engine runs.
pub async fn run(adapter: Arc<dyn ChannelAdapter>, engine: Arc<Engine>) {
    let Some(queue) = adapter.order_queue() else {
        return;
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(RECEIVE_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client builds");
    let caller = Caller::new(client);
    let name = adapter.name().to_string();
    // Served at 0 from the start, so the first refusal shows as an increase.
    for counter in [
        "lockstep_queue_messages_total",
        "lockstep_queue_refused_total",
    ] {
        metrics::counter!(counter, "channel" => name.clone()).absolute(0);
    }
    let mut retry = RETRY_MIN;
    while !engine.is_stopped() {
        let messages = match queue.receive(&caller).await {
            Ok(messages) => {
                retry = RETRY_MIN;
                messages
            }
            Err(reason) => {
                tracing::warn!(channel = %name, %reason, retry_in_ms = retry.as_millis() as u64, "queue receive failed");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        metrics::counter!("lockstep_queue_messages_total", "channel" => name.clone())
            .increment(messages.len() as u64);
        if let Err(reason) = take(adapter.as_ref(), &engine, &caller, messages).await {
            tracing::warn!(channel = %name, %reason, "queue messages not taken; they come again after the visibility timeout");
        }
    }
}

/// Submits one receive's messages and deletes those that were taken.
async fn take(
    adapter: &dyn ChannelAdapter,
    engine: &Engine,
    caller: &Caller,
    messages: Vec<QueueMessage>,
) -> Result<(), String> {
    let queue = adapter.order_queue().ok_or("the channel has no queue")?;
    let seen = adapter.seen();
    let now = now_micros();
    let mut events = Vec::new();
    let mut notifications = Vec::new();
    let mut taken = Vec::new();
    for message in messages {
        match queue.events(&message.body, now) {
            Ok(inbound) => {
                let known = inbound
                    .notification
                    .as_ref()
                    .is_some_and(|id| seen.is_some_and(|s| s.contains(id)));
                if !known {
                    events.extend(inbound.events);
                    notifications.extend(inbound.notification);
                }
                taken.push(message);
            }
            // Never deleted: the queue's redrive policy moves it aside after its
            // maximum receives (README, "Amazon").
            Err(reason) => {
                metrics::counter!("lockstep_queue_refused_total", "channel" => adapter.name().to_string())
                    .increment(1);
                tracing::warn!(channel = %adapter.name(), queue_message = %message.id, %reason, "queue message cannot be taken; left in the queue");
            }
        }
    }
    super::poll::submit_waiting(engine, events).await?;
    // Durable now: remembered, then deleted.
    if let Some(seen) = seen {
        for id in notifications {
            seen.insert(id);
        }
    }
    if taken.is_empty() {
        return Ok(());
    }
    queue.delete(caller, &taken).await
}
