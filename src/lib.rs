//! lxc-idshift: shift the ownership of an LXC container's root filesystem between
//! a privileged (host ids) and an unprivileged (subordinate ids) layout.
//!
//! `engine` is the performance-critical core (walker, per-inode shift, xattr codecs,
//! journal); `lxc` is the orchestration of a container conversion; `sample` and
//! `manifest` (feature `demo`, on by default) serve the demo and the tests. The
//! re-exports below are the entry points the front end and the tests use.

// Raw syscalls and their `unsafe` live in `engine::sys` alone (it allows them).
#![deny(unsafe_code)]

pub mod diff;
pub mod engine;
pub(crate) mod fsutil;
pub mod lxc;
#[cfg(feature = "demo")]
pub mod manifest;
#[cfg(feature = "demo")]
pub mod sample;

pub use engine::idmap::{Direction, IdKind, IdMap};
pub use engine::run::{shift, Progress, Quiet, ShiftOptions, ShiftReport};
pub use engine::status::{status, StatusReport};
pub use engine::sys::is_root;
pub use engine::verify::{verify, VerifyReport};
pub use fsutil::FileError;
pub use lxc::check::{check, CheckOptions, CheckReport};
pub use lxc::convert::{ConvertOptions, MountsChoice, Outcome, Plan};
pub use lxc::host::Host;

/// Says LOUDLY that a unit test could not run; under `CI=true` a skip is a failure.
#[cfg(test)]
pub(crate) fn skip_test(what: &str) {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    assert!(!ci, "SKIPPED: {what} (CI=true: every test must run)");
    eprintln!("\n!!!!!!!! SKIPPED: {what} !!!!!!!!\n");
}
