//! `loadgen`: the load generator and channel simulators for lockstep (see README.md).
//! The simulators and scenarios arrive with propagation; until then it says so.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "loadgen: no scenarios yet. The channel simulators and the open-loop order generator \
         arrive with propagation (see loadgen/README.md)."
    );
    ExitCode::from(2)
}
