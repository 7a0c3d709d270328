//! Container conversion (see issue 3): reading and editing an LXC container's
//! config (`config`) and the host's subordinate id files (`subid`). Both are pure
//! text transformations that keep every untouched line byte-identical, so a
//! `--dry-run` can show the exact diff and a reverse conversion can restore the
//! original files.

pub mod config;
pub mod subid;
