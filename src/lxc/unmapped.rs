//! Owners and groups in a rootfs that a conversion's map leaves alone: a privileged
//! container may hold files of uid 100000 or 4294967294, beyond the container range.
//! Unprivileged, the container sees them as nobody (65534). The plan counts them per
//! id, and offers the `--range` that would map them when there is one. The same
//! walk finds files with hard links outside the rootfs (`cp -al` copies): a shift
//! must leave them alone, so a conversion is refused before its first write.

use crate::engine::hardlinks::SeenInodes;
use crate::engine::idmap::{Direction, IdKind, IdMap, Shift};
use crate::engine::report::Counters;
use crate::engine::run::{self, RunError};
use crate::engine::sys::Inode;
use crate::engine::walk::{self, DirNode, Visitor, WalkError};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How many inodes own or group each unmapped id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnmappedIds {
    pub uids: BTreeMap<u32, u64>,
    pub gids: BTreeMap<u32, u64>,
}

impl UnmappedIds {
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.uids.keys().chain(self.gids.keys()).copied()
    }

    /// The smallest range (a multiple of 65536) mapping container ids 0.. onto host
    /// ids from `host_first` that holds the most of these ids, with the ids it
    /// still leaves out; None when no range maps any of them (host ids must stay
    /// below 4294967295).
    pub fn wider_range(&self, host_first: u32) -> Option<(u32, Vec<u32>)> {
        let fits = |id: u32| {
            let range = (u64::from(id) + 1).div_ceil(65536) * 65536;
            (u64::from(host_first) + range <= u64::from(u32::MAX)).then_some(range)
        };
        let range = self.ids().filter_map(fits).max()?;
        let mut left: Vec<u32> = self.ids().filter(|&id| u64::from(id) >= range).collect();
        left.sort();
        left.dedup();
        Some((u32::try_from(range).ok()?, left))
    }
}

/// What a read-only walk of a rootfs finds before its shift.
#[derive(Debug, Default)]
pub struct RootfsScan {
    /// The owners and groups the map leaves alone, per id.
    pub unmapped: UnmappedIds,
    /// How many hardlinked inodes have names outside the rootfs.
    pub linked_outside: usize,
    /// One name of the first of them (by inode number), to show.
    pub linked_outside_example: Option<PathBuf>,
}

/// Counts, per id, the owners and groups in `root` that `map` shifted in
/// `direction` would leave alone (neither in its source nor already in its target),
/// and the inodes with hard links outside `root`. A read-only walk: stat only, no
/// file is opened.
pub fn scan(
    root: &Path,
    map: &IdMap,
    direction: Direction,
    threads: Option<usize>,
) -> Result<RootfsScan, RunError> {
    let scanner = run::read_only_walk(root, threads, |root| Scanner {
        root,
        counters: Counters::default(),
        map,
        direction,
        seen: SeenInodes::default(),
        found: Mutex::default(),
    })?;
    let outside = scanner.seen.linked_from_outside();
    let example = outside
        .first()
        .map(|o| walk::display_path(&scanner.root, &o.first.0.entry_path(&o.first.1)));
    Ok(RootfsScan {
        unmapped: scanner.found.into_inner().expect("unmapped ids lock"),
        linked_outside: outside.len(),
        linked_outside_example: example,
    })
}

struct Scanner<'a> {
    root: PathBuf,
    map: &'a IdMap,
    direction: Direction,
    /// Each hardlinked inode's first name, kept to name it if it has others outside.
    seen: SeenInodes<(Arc<DirNode>, CString)>,
    counters: Counters,
    found: Mutex<UnmappedIds>,
}

impl Visitor for Scanner<'_> {
    fn needs_handles(&self) -> bool {
        false
    }

    fn visit(&self, dir: &Arc<DirNode>, name: &CStr, inode: Inode) {
        let stat = &inode.stat;
        let first_name = || (dir.clone(), name.to_owned());
        if !self.seen.name_seen(stat, first_name).first {
            return;
        }
        let unmapped =
            |kind, id| matches!(self.map.shift(kind, id, self.direction), Shift::Unmapped);
        let (uid, gid) = (
            unmapped(IdKind::User, stat.uid),
            unmapped(IdKind::Group, stat.gid),
        );
        if uid || gid {
            let mut found = self.found.lock().expect("unmapped ids lock");
            if uid {
                *found.uids.entry(stat.uid).or_default() += 1;
            }
            if gid {
                *found.gids.entry(stat.gid).or_default() += 1;
            }
        }
    }

    fn walk_error(&self, error: WalkError) {
        self.counters.walk_error(&self.root, error);
    }

    fn mount_point(&self, path: PathBuf) {
        self.counters.mount_point(&self.root, &path);
    }
}

/// How many ids `describe` lists per kind.
const LISTED: usize = 20;

/// The plan's paragraph about them: each id and its count, and the `--range` that
/// maps them when converting from privileged (`offer_range`).
pub fn describe(ids: &UnmappedIds, range: u32, host_first: u32, offer_range: bool) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let mut text = format!(
        "ids outside the container's range 0..{}, left as they are: inside the container they show as nobody (65534)\n",
        range - 1
    );
    for (kind, counts) in [("uid", &ids.uids), ("gid", &ids.gids)] {
        for (id, count) in counts.iter().take(LISTED) {
            let inodes = if *count == 1 { "inode" } else { "inodes" };
            text += &format!("  {kind} {id}: {count} {inodes}\n");
        }
        if counts.len() > LISTED {
            text += &format!("  ... and {} more {kind}s\n", counts.len() - LISTED);
        }
    }
    match ids.wider_range(host_first).filter(|_| offer_range) {
        Some((wider, left)) if wider > range => {
            text += &format!(
                "  --range {wider} would map them (container ids 0..{})",
                wider - 1
            );
            if !left.is_empty() {
                let left: Vec<String> = left.iter().map(u32::to_string).collect();
                text += &format!(", except {}, which no range can reach", left.join(", "));
            }
            text += "\n";
        }
        _ => {}
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(uids: &[(u32, u64)], gids: &[(u32, u64)]) -> UnmappedIds {
        UnmappedIds {
            uids: uids.iter().copied().collect(),
            gids: gids.iter().copied().collect(),
        }
    }

    #[test]
    fn the_range_that_maps_them() {
        let found = ids(&[(100_000, 3), (4_294_967_294, 1)], &[(65_536, 2)]);
        assert_eq!(
            found.wider_range(1_000_000),
            Some((131_072, vec![4_294_967_294]))
        );
        assert_eq!(ids(&[(4_294_967_294, 1)], &[]).wider_range(1_000_000), None);
        assert_eq!(
            ids(&[(65_535, 1)], &[]).wider_range(0),
            Some((65_536, vec![]))
        );
    }

    #[test]
    fn described_per_id_with_the_range_offered() {
        let found = ids(&[(100_000, 3), (4_294_967_294, 1)], &[(100_000, 1)]);
        assert_eq!(
            describe(&found, 65536, 1_000_000, true),
            "ids outside the container's range 0..65535, left as they are: inside the container they show as nobody (65534)\n\
             \x20 uid 100000: 3 inodes\n\
             \x20 uid 4294967294: 1 inode\n\
             \x20 gid 100000: 1 inode\n\
             \x20 --range 131072 would map them (container ids 0..131071), except 4294967294, which no range can reach\n"
        );
        assert!(!describe(&found, 65536, 1_000_000, false).contains("--range"));
        assert_eq!(describe(&UnmappedIds::default(), 65536, 0, true), "");
    }
}
