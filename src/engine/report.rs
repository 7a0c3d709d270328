//! Counters shared by the walker threads, and the summary a run ends with.

use super::walk::{display_path, WalkError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How many failed paths are kept for the report; all are counted.
const KEPT_ERRORS: usize = 1000;

/// What a run did, in numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub inodes_seen: u64,
    pub changed: u64,
    pub hardlinks: u64,
    pub acls: u64,
    pub capabilities: u64,
    pub setid_restored: u64,
    pub unmapped: u64,
    pub errors: u64,
    pub mount_points_skipped: u64,
    pub seconds: f64,
    pub inodes_per_second: f64,
}

/// One inode that could not be handled, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathError {
    pub path: PathBuf,
    pub message: String,
}

/// Lock-free counters updated by every worker.
#[derive(Debug, Default)]
pub struct Counters {
    pub inodes_seen: AtomicU64,
    pub changed: AtomicU64,
    pub hardlinks: AtomicU64,
    pub acls: AtomicU64,
    pub capabilities: AtomicU64,
    pub setid_restored: AtomicU64,
    pub unmapped: AtomicU64,
    pub errors: AtomicU64,
    pub mount_points_skipped: AtomicU64,
    kept_errors: Mutex<Vec<PathError>>,
    mount_points: Mutex<Vec<PathBuf>>,
}

pub fn bump(counter: &AtomicU64, yes: bool) {
    if yes {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Counters {
    pub fn error(&self, path: PathBuf, message: String) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < KEPT_ERRORS as u64 {
            self.kept_errors
                .lock()
                .expect("errors lock")
                .push(PathError { path, message });
        }
    }

    /// Counts a failure of the walk over the tree at `root`.
    pub fn walk_error(&self, root: &Path, e: WalkError) {
        let message = format!("{} failed: {}", e.operation, e.source);
        self.error(display_path(root, &e.path), message);
    }

    /// Notes a mount point (relative to the tree at `root`) that was left alone.
    pub fn mount_point(&self, root: &Path, relative: &Path) {
        let path = display_path(root, relative);
        self.mount_points_skipped.fetch_add(1, Ordering::Relaxed);
        self.mount_points.lock().expect("mounts lock").push(path);
    }

    /// The failed paths kept so far, sorted.
    pub fn errors(&self) -> Vec<PathError> {
        let mut errors = self.kept_errors.lock().expect("errors lock").clone();
        errors.sort_by(|a, b| a.path.cmp(&b.path));
        errors
    }

    pub fn mount_points(&self) -> Vec<PathBuf> {
        let mut mounts = self.mount_points.lock().expect("mounts lock").clone();
        mounts.sort();
        mounts
    }

    pub fn summary(&self, seconds: f64) -> Summary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let seen = get(&self.inodes_seen);
        Summary {
            inodes_seen: seen,
            changed: get(&self.changed),
            hardlinks: get(&self.hardlinks),
            acls: get(&self.acls),
            capabilities: get(&self.capabilities),
            setid_restored: get(&self.setid_restored),
            unmapped: get(&self.unmapped),
            errors: get(&self.errors),
            mount_points_skipped: get(&self.mount_points_skipped),
            seconds,
            inodes_per_second: if seconds > 0.0 {
                seen as f64 / seconds
            } else {
                0.0
            },
        }
    }
}
