//! The shifting engine: an fd-relative parallel walker that shifts every inode once.

pub mod acl;
pub mod caps;
#[cfg(feature = "testkit")]
pub mod floor;
pub(crate) mod hardlinks;
pub(crate) mod hex;
pub mod idmap;
pub mod idrange;
pub(crate) mod inode;
pub mod journal;
pub(crate) mod le;
pub mod meta;
pub mod report;
pub mod run;
pub(crate) mod safety;
pub mod status;
// The one module allowed raw syscalls and `unsafe`: everything else calls its safe wrappers.
#[allow(unsafe_code)]
pub(crate) mod sys;
#[cfg(feature = "testkit")]
pub use sys::{emulate_old_kernel, emulate_old_kernel_refusing_unshare};
pub mod verify;
pub(crate) mod walk;
pub mod xattr_names;
