//! Counters shared by the walker threads, and the summary a run ends with.

use super::walk::{display_path, WalkError};
use serde::{Deserialize, Serialize};
use std::io;
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

/// One inode that could not be handled, for the report: the path once, what
/// failed, and the errno's name when a system call failed (`--json` keeps it for
/// scripts: EPERM for an immutable file, EROFS for a read-only mount...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathError {
    pub path: PathBuf,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
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
    /// Counts a failure that is no system call's (an xattr that does not parse).
    pub fn error(&self, path: PathBuf, message: String) {
        self.keep(PathError {
            path,
            message,
            errno: None,
        });
    }

    /// Counts a failed system call on `path`: `operation` failed with `source`.
    pub fn os_error(&self, path: PathBuf, operation: &str, source: &io::Error) {
        self.keep(PathError {
            path,
            message: format!("{operation} failed: {source}"),
            errno: source.raw_os_error().and_then(errno_name).map(String::from),
        });
    }

    fn keep(&self, error: PathError) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < KEPT_ERRORS as u64 {
            self.kept_errors.lock().expect("errors lock").push(error);
        }
    }

    /// Counts a failure of the walk over the tree at `root`.
    pub fn walk_error(&self, root: &Path, e: WalkError) {
        self.os_error(display_path(root, &e.path), e.operation, &e.source);
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

/// The symbolic name of the errors a walk over a tree can meet.
pub fn errno_name(code: i32) -> Option<&'static str> {
    let names: &[(i32, &str)] = &[
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EIO, "EIO"),
        (libc::EBADF, "EBADF"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENFILE, "ENFILE"),
        (libc::EMFILE, "EMFILE"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::EROFS, "EROFS"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::ELOOP, "ELOOP"),
        (libc::ENODATA, "ENODATA"),
        (libc::EOVERFLOW, "EOVERFLOW"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::ESTALE, "ESTALE"),
        (libc::EDQUOT, "EDQUOT"),
        (libc::EUCLEAN, "EUCLEAN"),
    ];
    names
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
}
