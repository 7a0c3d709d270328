//! Hardlink dedupe: an inode with several names is shifted once, through the last
//! one reached. Memory grows with the hardlinked inodes alone (and what a walk keeps
//! of each one's first name: the shift keeps its directory's node). The names seen are
//! counted too: an inode with fewer names in the tree than links has names outside
//! it (links made on the host), and shifting it would change those files as well.

use super::sys::Stat;
use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 64;

/// For each hardlinked inode: its link count, the names seen so far, and where
/// its first name was (to name it in a report).
#[derive(Debug)]
struct Names<W> {
    links: u32,
    seen: u32,
    first: W,
}

/// Inode numbers already visited, sharded to keep worker threads from contending.
/// `W` is what a walk keeps of an inode's first name (nothing, for walks that only
/// read).
pub struct SeenInodes<W = ()> {
    shards: Vec<Mutex<HashMap<u64, Names<W>>>>,
}

impl<W> Default for SeenInodes<W> {
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

/// A hardlinked inode some of whose names lie outside the walked tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedFromOutside<W> {
    pub ino: u64,
    pub links: u32,
    pub seen: u32,
    /// What the walk kept of its first name.
    pub first: W,
}

impl<W> SeenInodes<W> {
    /// Counts one name of the inode. Directories and single-link inodes have one
    /// name, both first and last. A hardlinked inode is handled at its last name:
    /// only then is it known that no name lies outside the tree. `first_name` is
    /// called only for the first name of a hardlinked inode.
    pub fn name_seen(&self, stat: &Stat, first_name: impl FnOnce() -> W) -> NameSeen {
        if stat.nlink <= 1 || stat.is_dir() {
            return NameSeen {
                first: true,
                last: true,
            };
        }
        let shard = &self.shards[(stat.ino % SHARDS as u64) as usize];
        let mut shard = shard.lock().expect("hardlink shard lock");
        let names = shard.entry(stat.ino).or_insert_with(|| Names {
            links: stat.nlink,
            seen: 0,
            first: first_name(),
        });
        names.seen += 1;
        NameSeen {
            first: names.seen == 1,
            last: names.seen == names.links,
        }
    }

    /// The inodes with names outside the walked tree, by inode number.
    pub fn linked_from_outside(&self) -> Vec<LinkedFromOutside<W>>
    where
        W: Clone,
    {
        let mut outside: Vec<LinkedFromOutside<W>> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.lock().expect("hardlink shard lock");
                shard
                    .iter()
                    .filter(|(_, n)| n.seen < n.links)
                    .map(|(ino, n)| LinkedFromOutside {
                        ino: *ino,
                        links: n.links,
                        seen: n.seen,
                        first: n.first.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        outside.sort_unstable_by_key(|o| o.ino);
        outside
    }
}

impl SeenInodes {
    /// True the first time an inode is offered (for walks that only read).
    pub fn first_visit(&self, stat: &Stat) -> bool {
        self.name_seen(stat, || ()).first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64, nlink: u32) -> Stat {
        Stat {
            ino,
            dev: 1,
            mnt_id: 1,
            mount_root: false,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            nlink,
            btime: None,
            ctime: (0, 0),
            rdev: 0,
        }
    }

    #[test]
    fn a_hardlinked_inode_is_handled_at_its_last_name_and_keeps_its_first() {
        let seen: SeenInodes<&str> = SeenInodes::default();
        let names = ["a/x", "b/x", "c/x"].map(|n| seen.name_seen(&file(7, 3), || n));
        let flags = names.map(|s| (s.first, s.last));
        assert_eq!(flags, [(true, false), (false, false), (false, true)]);
        assert!(seen.linked_from_outside().is_empty());
    }

    #[test]
    fn names_missing_from_the_tree_are_reported_with_the_first_name_only() {
        let seen: SeenInodes<String> = SeenInodes::default();
        let mut calls = 0;
        for name in ["a/y", "b/y"] {
            seen.name_seen(&file(9, 5), || {
                calls += 1;
                name.to_string()
            });
        }
        let single = seen.name_seen(&file(10, 1), || unreachable!("one link"));
        assert_eq!((single.first, single.last), (true, true));
        assert_eq!(calls, 1, "the first name is kept once, not per name");
        let outside = seen.linked_from_outside();
        let expected = LinkedFromOutside {
            ino: 9,
            links: 5,
            seen: 2,
            first: "a/y".to_string(),
        };
        assert_eq!(outside, vec![expected]);
    }
}
