//! Hardlink dedupe: an inode with several names is shifted once, through the last
//! one reached. Memory grows with the hardlinked inodes alone. The names seen are
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

/// Where a name stands among its inode's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameSeen {
    /// The first name of the inode reached (it counts the inode).
    pub first: bool,
    /// The last of its names: all its links are in the tree, so it may be changed.
    pub last: bool,
}

impl SeenInodes {
    /// Counts one name of the inode. Directories and single-link inodes have one
    /// name, both first and last. A hardlinked inode is handled at its last name:
    /// only then is it known that no name lies outside the tree.
    pub fn name_seen(&self, stat: &Stat) -> NameSeen {
        if stat.nlink <= 1 || stat.is_dir() {
            return NameSeen {
                first: true,
                last: true,
            };
        }
        let shard = &self.shards[(stat.ino % SHARDS as u64) as usize];
        let mut shard = shard.lock().expect("hardlink shard lock");
        let names = shard.entry(stat.ino).or_insert(Names {
            links: stat.nlink,
            seen: 0,
        });
        names.seen += 1;
        NameSeen {
            first: names.seen == 1,
            last: names.seen == names.links,
        }
    }

    /// True the first time an inode is offered (for walks that only read).
    pub fn first_visit(&self, stat: &Stat) -> bool {
        self.name_seen(stat).first
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
