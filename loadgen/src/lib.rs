//! loadgen: channel simulators and load generation for lockstep, over HTTP only. It does
//! not depend on the engine's crate: it sees lockstep as a real channel would.
//!
//! Simulators, one per channel kind, each with its real paths, auth, payloads,
//! signatures, limits and delivery habits:
//! - `shopify_sim`, `woo_sim`: a Shopify store and a WooCommerce site.
//! - `bigcommerce_sim`, `amazon_sim` (orders through `sqs_sim`, an Amazon SQS standard
//!   queue, SigV4-checked), `ebay_sim`, `walmart_sim` (bulk inventory through
//!   `walmart_feed_sim`), `etsy_sim`, `tiktok_sim`: the marketplaces, on `market`.
//! - `webhook_sim`: a Standard Webhooks channel (the `webhook` kind's other end).
//!
//! What they share, bottom first (no circle of imports: `tests/floors.rs`):
//! - `sim`: the HTTP server, JSON replies, arrival records, the webhook sender with
//!   habits, buckets. `signing`: Standard Webhooks signatures, written here
//!   independently of the engine's.
//! - `market`: what the marketplace simulators share (listings, orders, faults, limits).
//! - `fleet`: one simulator of every kind over the same SKUs, and the config that
//!   connects lockstep to them.
//!
//! Load generation:
//! - `traffic`: arrivals, SKU skew, lines, channels, delivery habits.
//! - `run`: the open-loop `latency` scenario; `mixed`: every kind at once.
//! - `report`: the HTML report of a run (inline SVG plots).
//! - `main.rs`: the `loadgen` command; `bin/bare_hyper.rs`: the bare hyper peer of
//!   `benches/peers.sh`.

pub mod amazon_sim;
pub mod bigcommerce_sim;
pub mod ebay_sim;
pub mod etsy_sim;
pub mod fleet;
pub mod market;
pub mod mixed;
pub mod report;
pub mod run;
pub mod shopify_sim;
pub mod signing;
pub mod sim;
pub mod sqs_sim;
pub mod tiktok_sim;
pub mod traffic;
pub mod walmart_feed_sim;
pub mod walmart_sim;
pub mod webhook_sim;
pub mod woo_sim;
