//! loadgen: channel simulators and load generation for lockstep, over HTTP only. It does
//! not depend on the engine's crate: it sees lockstep as a real channel would.
//!
//! Simulators, one per channel kind, each with its real paths, auth, payloads,
//! signatures, limits and delivery habits, each on a `market::Market`:
//! - `shopify_sim`, `woo_sim`: a Shopify store and a WooCommerce site (their orders kept
//!   in their own shapes beside the market).
//! - `bigcommerce_sim`, `amazon_sim`, `ebay_sim`, `walmart_sim`, `etsy_sim`,
//!   `tiktok_sim`: the marketplaces (their orders the market's neutral ones).
//! - `webhook_sim`: a Standard Webhooks channel (the `webhook` kind's other end).
//! - `sqs_sim`: the Amazon SQS standard queue `amazon_sim` delivers orders through,
//!   SigV4-checked; a queue, not a shop, so on `sim` alone. `walmart_feed_sim`: Walmart's
//!   bulk inventory feeds, a part of `walmart_sim`.
//!
//! What they share, bottom first (no circle of imports: `tests/floors.rs`):
//! - `signing`: Standard Webhooks signatures, written here independently of the
//!   engine's.
//! - `sim`: the HTTP server, JSON replies, arrival records, the `Fault` a simulator can
//!   be told to show, the token `Bucket`, the webhook `Sender` with its habits, and the
//!   `Simulator` trait every kind implements.
//! - `market`: a shop (listings, orders, arrivals, call log, fault, rate bucket), its
//!   server and its sender, and the time formats channels use.
//! - `fleet`: one simulator of every kind over the same SKUs, from the `KINDS`
//!   registry, with the credentials and the config that connect lockstep to them.
//!
//! Load generation:
//! - `traffic`: arrivals, SKU skew, lines, channels, delivery habits, fault windows.
//! - `usage`: the CPU a run took (the machine's, lockstep's, the generator's) and the
//!   connections lockstep refused: what a failed `ceiling` step ran out of.
//! - `run`: the scenarios on Standard Webhooks channels (`latency`, and `soak`,
//!   `ceiling` and `burst` built on it; `outage`, `duplicates`, `contention`, `audit`),
//!   the lockstep they start, and the table of a report.
//! - `mixed`: every kind at once, on the `fleet`; `push_order`: two of it side by side,
//!   `first_come` against `risk` (`mixed --compare-push-order`).
//! - `memory`: resident bytes per SKU at a million SKUs, and the restart after `kill -9`.
//! - `report`: the HTML report of a run (inline SVG plots).
//! - `main.rs`: the `loadgen` command; `bin/bare_hyper.rs`: the bare hyper peer of
//!   `benches/peers.sh`, and `bin/signed_hooks.rs` its signed-webhook driver.

pub mod amazon_sim;
pub mod bigcommerce_sim;
pub mod discovery;
pub mod ebay_sim;
pub mod etsy_sim;
pub mod fleet;
pub mod market;
pub mod memory;
pub mod mixed;
pub mod push_order;
pub mod report;
pub mod run;
pub mod shopify_sim;
pub mod signing;
pub mod sim;
pub mod sqs_sim;
pub mod tiktok_sim;
pub mod traffic;
pub mod usage;
pub mod walmart_feed_sim;
pub mod walmart_sim;
pub mod webhook_sim;
pub mod woo_sim;
