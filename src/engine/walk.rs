//! The parallel, fd-relative walker. Every directory is opened relative to its
//! parent's fd with O_NOFOLLOW, so a symlink swapped in for a directory is never
//! followed and the walk never leaves the root. Directories are processed as rayon
//! tasks; entries of huge directories in bounded batches, in parallel.
//!
//! File descriptors stay bounded on arbitrarily deep trees: a directory keeps its fd
//! only until its reader and every child have opened theirs, and only while a budget
//! allows; otherwise the children reopen it from the nearest ancestor that still
//! holds one (checking its identity).

use super::inode::{self, EntryDir};
use super::sys::{self, DirEntry, DirReader, Inode, Stat};
use rayon::prelude::*;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Entries read per batch: bounds memory on directories with millions of entries.
pub(crate) const BATCH: usize = 2048;
/// Batches at least this long are split across threads.
const PARALLEL_BATCH: usize = 64;
pub(crate) const GETDENTS_BUFFER: usize = 256 * 1024;

/// A directory of the tree: its name in its parent, and maybe an open fd.
pub struct DirNode {
    parent: Option<Arc<DirNode>>,
    name: CString,
    /// What the directory was when visited: a reopen must find the same inode.
    stat: Stat,
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Who still needs `fd`: the directory's reader and its children not yet opened.
    users: AtomicUsize,
    budget: Arc<FdBudget>,
}

/// Counts the directory fds kept open for pending children.
pub struct FdBudget {
    open: AtomicUsize,
    max: usize,
}

impl Drop for DirNode {
    fn drop(&mut self) {
        if self.fd.get_mut().map(|fd| fd.is_some()).unwrap_or(false) {
            self.budget.open.fetch_sub(1, Ordering::Relaxed);
        }
        // Unlink long parent chains iteratively: a recursive drop of 10,000 levels
        // would overflow the stack.
        let mut parent = self.parent.take();
        while let Some(node) = parent {
            parent = match Arc::try_unwrap(node) {
                Ok(mut owned) => owned.parent.take(),
                Err(_) => None,
            };
        }
    }
}

impl DirNode {
    /// The directory's path relative to the root ("." for the root itself).
    pub fn relative_path(&self) -> PathBuf {
        let mut names = Vec::new();
        let mut node = Some(self);
        while let Some(n) = node {
            if n.parent.is_some() {
                names.push(n.name.as_bytes());
            }
            node = n.parent.as_deref();
        }
        let mut path = PathBuf::from(".");
        for name in names.iter().rev() {
            path.push(std::ffi::OsStr::from_bytes(name));
        }
        path
    }

    /// What the directory was when visited.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// Relative path of entry `name` of this directory ("." names the directory itself).
    pub fn entry_path(&self, name: &CStr) -> PathBuf {
        let base = self.relative_path();
        match name.to_bytes() {
            b"." => base,
            bytes => base.join(std::ffi::OsStr::from_bytes(bytes)),
        }
    }

    /// An open fd of this directory, reopening it (and ancestors) if it was closed.
    fn open_fd(&self) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.fd.lock().expect("fd lock").clone() {
            return Ok(fd);
        }
        let mut chain = vec![self];
        let mut fd = loop {
            let top = *chain.last().expect("chain starts with self");
            let parent = top.parent.as_deref().ok_or_else(|| {
                io::Error::other("the root directory's fd was closed; this is a bug")
            })?;
            match parent.fd.lock().expect("fd lock").clone() {
                Some(fd) => break fd,
                None => chain.push(parent),
            }
        };
        for node in chain.iter().rev() {
            let child = sys::open_subdir(fd.as_fd(), &node.name)?;
            let stat = sys::stat_fd(child.as_fd())?;
            if !stat.same_inode(&node.stat) || stat.mnt_id != node.stat.mnt_id {
                return Err(io::Error::other(
                    "directory was replaced during the walk; re-run to finish",
                ));
            }
            fd = Arc::new(child);
        }
        Ok(fd)
    }

    /// One more party (a child about to open) needs this directory's fd.
    fn hold(&self) {
        self.users.fetch_add(1, Ordering::AcqRel);
    }

    /// A party is done with this directory's fd; the last one closes it.
    fn release(&self) {
        if self.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            let kept = self.fd.lock().expect("fd lock").take();
            if kept.is_some() {
                self.budget.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn child(self: &Arc<Self>, name: CString, stat: Stat) -> Arc<DirNode> {
        Arc::new(DirNode {
            parent: Some(self.clone()),
            name,
            stat,
            fd: Mutex::new(None),
            users: AtomicUsize::new(1),
            budget: self.budget.clone(),
        })
    }

    /// Keeps `fd` open for the children if the budget allows.
    fn keep_fd(&self, fd: Arc<OwnedFd>) {
        let budget = &self.budget;
        if budget.open.fetch_add(1, Ordering::Relaxed) < budget.max {
            *self.fd.lock().expect("fd lock") = Some(fd);
        } else {
            budget.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A failure of the walk itself (the tree goes on being walked): which operation
/// failed on which entry, relative to the root.
#[derive(Debug)]
pub struct WalkError {
    pub path: PathBuf,
    pub operation: &'static str,
    pub source: io::Error,
}

/// What the walker asks of its user for every inode.
pub trait Visitor: Sync {
    /// Called once for every name of every inode (the root as "." of itself), with
    /// the inode's handle, never for anything on another mount. `name` is for
    /// messages and records: it can be renamed meanwhile, the handle not. Errors are
    /// the visitor's to record.
    fn visit(&self, dir: &Arc<DirNode>, name: &CStr, inode: Inode);
    /// Whether visits get handles (needed to change an inode). Walks that only read
    /// say no: each entry then costs one statx, as in a plain stat walk.
    fn needs_handles(&self) -> bool {
        true
    }
    /// A batch of entries is done (for progress).
    fn batch_done(&self, _entries: usize) {}
    /// A failure to stat, open or read something: the walk goes on.
    fn walk_error(&self, error: WalkError);
    /// A mount point inside the tree (a directory, or a file bind-mounted over one),
    /// relative to the root: left alone.
    fn mount_point(&self, path: PathBuf);
}

/// The file system the walk stays on.
pub(crate) struct Bounds {
    dev: u64,
    mnt_id: u64,
}

impl Bounds {
    /// The mount of the tree whose root is `root`.
    pub(crate) fn of(root: &Stat) -> Bounds {
        Bounds {
            dev: root.dev,
            mnt_id: root.mnt_id,
        }
    }

    pub(crate) fn contains(&self, stat: &Stat) -> bool {
        stat.dev == self.dev && stat.mnt_id == self.mnt_id && !stat.mount_root
    }
}

struct Walk<'a, V: Visitor> {
    visitor: &'a V,
    bounds: Bounds,
    /// The file system stamps ctimes on renames: listings by name can be proven.
    ctime_marks_renames: bool,
}

/// Walks the tree under `root` (an open directory) on `pool`, calling `visitor` for
/// every inode, in parallel.
pub fn walk<V: Visitor>(pool: &rayon::ThreadPool, root: OwnedFd, visitor: &V) -> io::Result<()> {
    let root_inode = Inode::open_at(root.as_fd(), c".")?;
    let stat = root_inode.stat;
    let ctime_marks_renames = sys::ctime_marks_renames(root.as_fd());
    let limit = sys::raise_fd_limit() as usize;
    let budget = Arc::new(FdBudget {
        open: AtomicUsize::new(1),
        max: (limit / 2).clamp(16, 65536),
    });
    let node = Arc::new(DirNode {
        parent: None,
        name: CString::from(c"."),
        stat,
        fd: Mutex::new(Some(Arc::new(root))),
        users: AtomicUsize::new(1),
        budget,
    });
    let walk = Walk {
        visitor,
        bounds: Bounds::of(&stat),
        ctime_marks_renames,
    };
    visitor.visit(&node, c".", root_inode);
    visitor.batch_done(1);
    pool.scope(|scope| walk.directory(scope, node));
    pool.broadcast(|_| sys::leave_working_directory());
    Ok(())
}

impl<'a, V: Visitor> Walk<'a, V> {
    fn directory<'s>(&'s self, scope: &rayon::Scope<'s>, node: Arc<DirNode>) {
        let opened = node.open_fd();
        if let Some(parent) = &node.parent {
            parent.release();
        }
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => return self.error(node.relative_path(), "open", e),
        };
        let mut reader = DirReader::new(GETDENTS_BUFFER);
        let mut kept = false;
        let result = reader.for_each_batch(fd.as_fd(), BATCH, |entries| {
            let subdirs = self.entries(&node, fd.as_fd(), entries);
            if !subdirs.is_empty() && !kept {
                node.keep_fd(fd.clone());
                kept = true;
            }
            for child in subdirs {
                node.hold();
                scope.spawn(move |scope| self.directory(scope, child));
            }
        });
        node.release();
        if let Err(e) = result {
            self.error(node.relative_path(), "read", e);
        }
    }

    fn error(&self, path: PathBuf, operation: &'static str, source: io::Error) {
        self.visitor.walk_error(WalkError {
            path,
            operation,
            source,
        });
    }

    /// Visits a batch of entries; returns the subdirectories to descend into.
    fn entries(
        &self,
        node: &Arc<DirNode>,
        fd: BorrowedFd<'_>,
        entries: Vec<DirEntry>,
    ) -> Vec<Arc<DirNode>> {
        let count = entries.len();
        let subdirs: Vec<Arc<DirNode>> = if count >= PARALLEL_BATCH {
            entries
                .into_par_iter()
                .with_min_len(16)
                .filter_map(|e| self.entry(node, fd, e))
                .collect()
        } else {
            entries
                .into_iter()
                .filter_map(|e| self.entry(node, fd, e))
                .collect()
        };
        self.visitor.batch_done(count);
        subdirs
    }

    fn entry(
        &self,
        node: &Arc<DirNode>,
        fd: BorrowedFd<'_>,
        entry: DirEntry,
    ) -> Option<Arc<DirNode>> {
        let dir = EntryDir {
            fd,
            stat: node.stat(),
        };
        let inode = match self.visitor.needs_handles() {
            true => inode::open_entry(dir, &entry.name, self.ctime_marks_renames),
            false => inode::stat_entry(dir, &entry.name),
        };
        let inode = match inode {
            Ok(inode) => inode,
            Err(e) => {
                self.error(node.entry_path(&entry.name), "open", e);
                return None;
            }
        };
        let stat = inode.stat;
        if !self.bounds.contains(&stat) {
            self.visitor.mount_point(node.entry_path(&entry.name));
            return None;
        }
        self.visitor.visit(node, &entry.name, inode);
        stat.is_dir().then(|| node.child(entry.name, stat))
    }
}

/// Builds the rayon pool the walks run on.
pub fn thread_pool(threads: Option<usize>) -> io::Result<rayon::ThreadPool> {
    let threads = threads.unwrap_or_else(default_threads);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .stack_size(64 << 20)
        .thread_name(|i| format!("idshift-{i}"))
        .start_handler(|_| sys::own_working_directory())
        .build()
        .map_err(io::Error::other)
}

/// Eight threads per core, 16 to 64. On a cold cache a walk waits on the disk,
/// not the cores: each stat and directory read blocks on its own read request, and
/// only more of them in flight keep the disk's queue busy. On a warm cache the extra
/// threads only share the cores. Measured on 2 cores, 300,000 inodes (BENCHMARKS.md):
/// cold, 16 threads take 4.0 s a direction against 5.2-5.7 s for 2; warm, 16 are as
/// fast as 8 and faster than 2 or 32.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 8).clamp(16, 64)
}

/// Path of an entry under the user's root, for messages.
pub fn display_path(root: &Path, relative: &Path) -> PathBuf {
    match relative.strip_prefix(".") {
        Ok(rest) if rest.as_os_str().is_empty() => root.to_path_buf(),
        Ok(rest) => root.join(rest),
        Err(_) => root.join(relative),
    }
}
