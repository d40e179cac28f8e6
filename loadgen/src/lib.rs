//! loadgen: channel simulators and load generation for lockstep, over HTTP only. It does
//! not depend on the engine's crate: it sees lockstep as a real channel would.
//!
//! - `webhook_sim`: a Standard Webhooks channel (the `webhook` kind's other end).
//! - `signing`: Standard Webhooks signatures, written here independently of the engine's.
//! - `run`: the open-loop `latency` scenario.

pub mod run;
pub mod signing;
pub mod webhook_sim;
