//! Hardlink dedupe: an inode with several names is shifted through the first one
//! reached only. Memory grows with the hardlinked inodes alone.

use super::sys::Stat;
use std::collections::HashSet;
use std::sync::Mutex;

const SHARDS: usize = 64;

/// Inode numbers already visited, sharded to keep worker threads from contending.
pub struct SeenInodes {
    shards: Vec<Mutex<HashSet<u64>>>,
}

impl Default for SeenInodes {
    fn default() -> Self {
        SeenInodes {
            shards: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
        }
    }
}

impl SeenInodes {
    /// True the first time an inode is offered; false for every further name of a
    /// hardlinked inode. Directories and single-link inodes are always first.
    pub fn first_visit(&self, stat: &Stat) -> bool {
        if stat.nlink <= 1 || stat.is_dir() {
            return true;
        }
        let shard = &self.shards[(stat.ino % SHARDS as u64) as usize];
        shard.lock().expect("hardlink shard lock").insert(stat.ino)
    }
}
