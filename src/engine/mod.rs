//! The shifting engine: an fd-relative parallel walker that shifts every inode once.

pub mod acl;
pub mod caps;
pub mod hardlinks;
pub mod hex;
pub mod idmap;
pub mod inode;
pub mod journal;
pub mod meta;
pub mod report;
pub mod run;
pub mod safety;
pub mod status;
pub mod sys;
pub mod verify;
pub mod walk;
