//! `verify`: a read-only walk reporting every id that lies outside the host side of
//! the map, i.e. what a container with this map would see as nobody or not at all.

use super::acl::Acl;
use super::caps::FileCaps;
use super::hardlinks::SeenInodes;
use super::idmap::{Direction, IdKind, IdMap};
use super::inode;
use super::report::Counters;
use super::run::{self, RunError};
use super::sys::Inode;
use super::walk::{self, DirNode, Visitor, WalkError};
use serde::Serialize;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many offending paths are listed per kind.
const LISTED: usize = 20;

/// Offending inodes of one kind.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Finding {
    pub count: u64,
    pub first_paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub root: PathBuf,
    pub inodes_seen: u64,
    pub owner: Finding,
    pub group: Finding,
    pub acl: Finding,
    pub capability: Finding,
    pub errors: u64,
    pub error_paths: Vec<super::report::PathError>,
}

impl VerifyReport {
    pub fn clean(&self) -> bool {
        self.errors == 0
            && [&self.owner, &self.group, &self.acl, &self.capability]
                .iter()
                .all(|f| f.count == 0)
    }
}

#[derive(Default)]
struct Tally {
    count: AtomicU64,
    paths: Mutex<Vec<PathBuf>>,
}

impl Tally {
    fn add(&self, path: impl FnOnce() -> PathBuf) {
        if self.count.fetch_add(1, Ordering::Relaxed) < LISTED as u64 {
            self.paths.lock().expect("paths lock").push(path());
        }
    }

    fn finding(self) -> Finding {
        let mut first_paths = self.paths.into_inner().expect("paths lock");
        first_paths.sort();
        Finding {
            count: self.count.into_inner(),
            first_paths,
        }
    }
}

struct Verifier<'a> {
    root: PathBuf,
    map: &'a IdMap,
    seen: SeenInodes,
    counters: Counters,
    owner: Tally,
    group: Tally,
    acl: Tally,
    capability: Tally,
}

impl Verifier<'_> {
    fn on_host_side(&self, kind: IdKind, id: u32) -> bool {
        self.map.in_target(kind, id, Direction::Forward)
    }

    fn acl_ok(&self, bytes: &Option<Vec<u8>>) -> bool {
        let Some(bytes) = bytes else { return true };
        Acl::parse(bytes).is_ok_and(|acl| acl.ids().all(|(kind, id)| self.on_host_side(kind, id)))
    }

    /// A v2 capability (no rootid) in a shifted tree also grants its capabilities
    /// to host users; a v3 one must name a host-side root.
    fn caps_ok(&self, bytes: &Option<Vec<u8>>) -> bool {
        let Some(bytes) = bytes else { return true };
        FileCaps::parse(bytes)
            .ok()
            .and_then(|caps| caps.rootid)
            .is_some_and(|root| self.on_host_side(IdKind::User, root))
    }
}

impl Visitor for Verifier<'_> {
    fn needs_handles(&self) -> bool {
        false
    }

    fn visit(&self, dir: &Arc<DirNode>, name: &CStr, inode: Inode) {
        if !self.seen.first_visit(&inode.stat) {
            return;
        }
        self.counters.inodes_seen.fetch_add(1, Ordering::Relaxed);
        let path = || walk::display_path(&self.root, &dir.entry_path(name));
        let meta = match inode::read_meta(&inode) {
            Ok(meta) => meta,
            Err(e) => {
                self.counters.os_error(path(), e.operation, &e.error);
                return;
            }
        };
        if !self.on_host_side(IdKind::User, meta.uid) {
            self.owner.add(path);
        }
        if !self.on_host_side(IdKind::Group, meta.gid) {
            self.group.add(path);
        }
        if !(self.acl_ok(&meta.acl_access) && self.acl_ok(&meta.acl_default)) {
            self.acl.add(path);
        }
        if !self.caps_ok(&meta.caps) {
            self.capability.add(path);
        }
    }

    fn walk_error(&self, error: WalkError) {
        self.counters.walk_error(&self.root, error);
    }

    fn mount_point(&self, path: PathBuf) {
        self.counters.mount_point(&self.root, &path);
    }
}

/// Checks that every id in the tree lies on the host side of `map`.
pub fn verify(root: &Path, map: &IdMap, threads: Option<usize>) -> Result<VerifyReport, RunError> {
    let verifier = run::read_only_walk(root, threads, |root| Verifier {
        root,
        map,
        seen: SeenInodes::default(),
        counters: Counters::default(),
        owner: Tally::default(),
        group: Tally::default(),
        acl: Tally::default(),
        capability: Tally::default(),
    })?;
    let summary = verifier.counters.summary(0.0);
    Ok(VerifyReport {
        root: verifier.root.clone(),
        inodes_seen: summary.inodes_seen,
        errors: summary.errors,
        error_paths: verifier.counters.errors(),
        owner: verifier.owner.finding(),
        group: verifier.group.finding(),
        acl: verifier.acl.finding(),
        capability: verifier.capability.finding(),
    })
}
