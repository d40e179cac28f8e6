//! lockstep keeps the sellable quantity of every SKU identical on every sales channel,
//! within seconds of any change, on one machine.
//!
//! # Floors (each imports only from those above it in this list; `tests/floors.rs`)
//! - [`clock`]: time as microseconds. [`refusal`]: the JSON refusal every answer shares.
//!   [`metrics`]: the Prometheus recorder. [`tasks`]: supervised background tasks.
//! - [`core`]: the pure stock machine: events, SKU state, channel views, records,
//!   `apply(state, batch, now) -> effects`. No I/O, no clock reads.
//! - [`config`]: the TOML configuration, and the core's settings it describes.
//! - [`store`]: each shard's durable log, state and idempotency keys (fjall + rkyv).
//! - [`engine`]: the router (`ahash(sku) % shards`), the shard threads that own SKUs and
//!   run the core over the store, recovery, the settings history.
//! - [`channels`]: one adapter per channel kind (inbound parsing, outbound requests), the
//!   native event format, signatures, pacing.
//! - [`propagate`]: per-channel outboxes and pushers, reconciliation, order polls, queues.
//! - [`ingest`]: the HTTP edge: verifies, parses and validates requests into events.
//! - [`cli`]: `serve`, `audit`, `replay`. [`demo`]: the demo.
//!
//! DESIGN.md is the shared picture; `docs/durability.md` narrates the write path.

pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod demo;
pub mod engine;
pub mod ingest;
pub mod metrics;
pub mod propagate;
pub mod refusal;
pub mod store;
pub mod tasks;
