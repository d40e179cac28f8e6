//! `loadgen`: the load generator and channel simulators for lockstep (see README.md).
//! The simulators live in the library; the scenarios and the open-loop generator arrive
//! with the load-generation work. Until then the binary says so.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "loadgen: no scenarios yet. The Standard Webhooks simulator is in the library \
         (loadgen::webhook_sim); the open-loop order generator and scenarios come next \
         (see loadgen/README.md)."
    );
    ExitCode::from(2)
}
