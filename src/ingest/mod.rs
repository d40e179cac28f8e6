//! The HTTP edge: one listener for webhooks, the native API, the console, /healthz and
//! /metrics.
//!
//! - `server.rs`: the accept loop (hyper 1 on tokio) and shutdown.
//! - `api.rs`: routing, auth, and the handlers.
//! - `sync_api.rs`: a channel's first sync (plan, approve, pause, resume, import).
//! - `audit_stream.rs`: the live audit (server-sent events).
//! - `console.rs`: the operator console at `/console`.
//! - `same_machine.rs`: without an admin token, only local callers and our own pages.
//! - `error.rs`: the engine's errors as refusals (`crate::refusal`).

pub mod api;
pub mod audit_stream;
pub mod console;
pub mod error;
pub mod same_machine;
pub mod server;
pub mod sync_api;

/// Largest request body accepted; larger ones get 413. Channels' own webhooks stay far
/// below it (Shopify caps a webhook at a few hundred KiB).
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest oversized body read to its end before the 413 is sent (see `api::read_body`).
pub const BODY_DRAIN_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The bytes of all request bodies being read at once (each up to `BODY_BYTES_MAX`, for
/// up to `BODY_READ_TIMEOUT`). Bodies are read before any signature can be checked, so
/// without this, as many connections as `connections_max` allows (16,384) sending a
/// MiB each and stalling would hold 16 GiB. Past it a request is 503 `busy` with
/// Retry-After; a webhook is a few KiB, so this is many thousands of them at once.
pub const BODIES_IN_FLIGHT_BYTES_MAX: usize = 256 * 1024 * 1024;
