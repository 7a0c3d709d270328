//! Hardlink dedupe: an inode with several names is shifted through the first one
//! reached only. Memory grows with the hardlinked inodes alone. The names seen are
//! counted too: an inode with fewer names in the tree than links has names outside
//! it (links made on the host), and shifting it would change those files as well.

use super::sys::Stat;
use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 64;

/// For each hardlinked inode: its link count, and the names seen so far.
#[derive(Debug, Clone, Copy)]
struct Names {
    links: u32,
    seen: u32,
}

/// Inode numbers already visited, sharded to keep worker threads from contending.
pub struct SeenInodes {
    shards: Vec<Mutex<HashMap<u64, Names>>>,
}

impl Default for SeenInodes {
    fn default() -> Self {
        SeenInodes {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
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
        let mut shard = shard.lock().expect("hardlink shard lock");
        let names = shard.entry(stat.ino).or_insert(Names {
            links: stat.nlink,
            seen: 0,
        });
        names.seen += 1;
        names.seen == 1
    }

    /// The inodes with names outside the walked tree: (inode, links, names seen).
    pub fn linked_from_outside(&self) -> Vec<(u64, u32, u32)> {
        let mut outside: Vec<(u64, u32, u32)> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.lock().expect("hardlink shard lock");
                shard
                    .iter()
                    .filter(|(_, n)| n.seen < n.links)
                    .map(|(ino, n)| (*ino, n.links, n.seen))
                    .collect::<Vec<_>>()
            })
            .collect();
        outside.sort_unstable();
        outside
    }
}
