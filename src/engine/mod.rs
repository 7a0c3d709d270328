//! The shifting engine: an fd-relative parallel walker that shifts every inode once.

pub mod acl;
pub mod caps;
pub mod idmap;
pub mod sys;
