//! lockstep keeps the sellable quantity of every SKU identical on every sales channel,
//! within seconds of any change, on one machine.
//!
//! # Layout (the data path, in order)
//! - [`ingest`]: the HTTP edge. Verifies, parses and validates requests into events.
//! - [`engine`]: the router (`ahash(sku) % shards`), the shard threads that own SKUs, and
//!   the pure core that applies events (`engine::core::apply`).
//! - [`store`]: each shard's durable log, state and idempotency keys (fjall + rkyv).
//! - [`propagate`]: per-channel outboxes and pushers (pacing, retries, timing).
//! - [`channels`]: one adapter per channel kind: inbound parsing, outbound requests.
//! - [`config`]: the TOML configuration. [`clock`]: time as microseconds. [`metrics`]:
//!   the Prometheus recorder.
//! - [`cli`]: the `audit` and `replay` commands' logic. [`tasks`]: supervised background
//!   tasks.
//!
//! DESIGN.md is the shared picture; `docs/durability.md` narrates the write path.

pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod engine;
pub mod ingest;
pub mod metrics;
pub mod propagate;
pub mod store;
pub mod tasks;
