//! Container conversion: the thin orchestration around the engine. `container`
//! finds a container, `config` and `subid` edit its config and the host's
//! subordinate id files (keeping every untouched line byte-identical), `perms` and
//! `udev` handle the directory permissions and passed-through devices, `host`
//! makes every host path redirectable for tests, and `convert` plans and runs it all.

pub mod config;
pub mod container;
pub mod convert;
pub mod host;
pub mod perms;
pub mod subid;
pub mod udev;
