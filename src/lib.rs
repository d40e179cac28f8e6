//! lockstep keeps the sellable quantity of every SKU identical on every sales channel,
//! within seconds of any change, on one machine.
//!
//! # Floors (each imports only from those above it in this list; `tests/floors.rs`)
//! - [`clock`]: time as microseconds. [`refusal`]: the JSON refusal every answer shares.
//!   [`metrics`]: the Prometheus recorder. [`tasks`]: supervised background tasks.
//!   [`logging`]: the log's format (every field quoted and escaped as it needs), and a
//!   command's closing error made safe for a terminal.
//! - [`core`]: the pure stock machine: events, SKU state, channel views, records,
//!   `apply(state, batch, now) -> effects`. No I/O, no clock reads.
//! - [`config`]: the TOML configuration (the server, the keys every channel shares, the
//!   catalog), and the core's settings it describes. A kind's own keys are its file's.
//! - [`store`]: each shard's durable log, state and idempotency keys (fjall + rkyv).
//! - [`engine`]: the router (`ahash(sku) % shards`), the shard threads that own SKUs and
//!   run the core over the store, recovery, the settings history.
//! - [`channels`]: one file per channel kind (its adapter: inbound parsing, outbound
//!   requests; its own config keys), the registry of kinds (`channels::kind`), the one
//!   inbound door (`channels::receive`), the native event format, signatures, pacing.
//! - [`propagate`]: per-channel outboxes (the shards' pushes, their one writer) and
//!   pushers, reconciliation (its repairs are events), order polls, queues, and each
//!   channel's first sync (observing until approved).
//! - [`ingest`]: the HTTP edge: verifies, parses and validates requests into events.
//! - [`remote`]: a command's requests to the running server. [`onboarding`]: `plan`,
//!   `approve` and `stock import`, which make them.
//! - [`cli`]: `serve`, `audit`, `replay`, `check-config`, and the one
//!   way a config file is read (`cli::load_config`). [`demo`]: the demo; [`walk`]: its
//!   onboarding walk (`demo --walk`).
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
pub mod logging;
pub mod metrics;
pub mod onboarding;
pub mod propagate;
pub mod refusal;
pub mod remote;
pub mod store;
pub mod tasks;
pub mod walk;
