//! lxc-idshift: shift the ownership of an LXC container's root filesystem between
//! a privileged (host ids) and an unprivileged (subordinate ids) layout.
//!
//! `engine` is the performance-critical core (walker, per-inode shift, xattr codecs,
//! journal); `lxc` is the orchestration of a container conversion; `sample` and
//! `manifest` serve the demo and the tests.

pub mod engine;
pub mod lxc;
#[cfg(feature = "demo")]
pub mod manifest;
#[cfg(feature = "demo")]
pub mod sample;

/// Says LOUDLY that a unit test could not run; under `CI=true` a skip is a failure.
#[cfg(test)]
pub(crate) fn skip_test(what: &str) {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    assert!(!ci, "SKIPPED: {what} (CI=true: every test must run)");
    eprintln!("\n!!!!!!!! SKIPPED: {what} !!!!!!!!\n");
}
