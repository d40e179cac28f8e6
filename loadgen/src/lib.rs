//! loadgen: channel simulators and load generation for lockstep, over HTTP only. It does
//! not depend on the engine's crate: it sees lockstep as a real channel would.
//!
//! - `webhook_sim`: a Standard Webhooks channel (the `webhook` kind's other end).
//! - `shopify_sim`, `woo_sim`: a Shopify store and a WooCommerce site, each with its
//!   real paths, auth, payloads, signatures, limits and delivery habits.
//! - `walmart_sim` (with `walmart_feed_sim`, its bulk inventory feeds): a Walmart seller.
//! - `sqs_sim`: an Amazon SQS standard queue (SigV4-checked), where Amazon's simulated
//!   account sends `ORDER_CHANGE`.
//! - `sim`: what the simulators share (server, webhook sender with habits, buckets).
//! - `signing`: Standard Webhooks signatures, written here independently of the engine's.
//! - `run`: the open-loop `latency` scenario.

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
