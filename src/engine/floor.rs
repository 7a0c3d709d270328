//! The floor of a shift that keeps this project's promises, for benchmarks only
//! (feature `testkit`, `examples/safe_floor`): per inode exactly the system calls no
//! safe shift can do without (its xattrs listed by name, an `O_PATH` handle opened,
//! stat'ed, chowned through and closed; each directory opened and checked), on the
//! same threads as a real run, then one `syncfs`. Nothing else: no journal, no
//! hardlink dedupe, no ACL, capability or mode care. Like `examples/bare_lchown`,
//! it moves ids 0..65536 to 1000000.. and back, staying on the tree's mount.

use super::idmap::{Direction, IdKind, IdMap};
use super::sys::{self, DirEntry, DirReader, Inode, Stat};
use super::walk::{Bounds, BATCH, GETDENTS_BUFFER};
use rayon::prelude::*;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static LISTING: RefCell<Vec<u8>> = RefCell::new(vec![0; 256]);
}

/// Shifts every inode under `root` as the floor does; returns the inodes chowned.
/// Any entry it could not handle fails the whole run: a floor that skipped work
/// would time less than the work.
pub fn shift_floor(root: &Path, reverse: bool, threads: Option<usize>) -> io::Result<u64> {
    let pool = super::walk::thread_pool(threads)?;
    let root = sys::open_dir_path(root)?;
    let root_inode = Inode::open_at(root.as_fd(), c".")?;
    let floor = Floor {
        map: IdMap::parse(&["b:0:1000000:65536"]).map_err(io::Error::other)?,
        direction: match reverse {
            false => Direction::Forward,
            true => Direction::Reverse,
        },
        bounds: Bounds::of(&root_inode.stat),
        chowned: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    floor.shift(&root_inode)?;
    let (stat, walked) = (root_inode.stat, root.try_clone()?);
    pool.scope(|scope| floor.directory(scope, walked, stat));
    sys::sync_file_system(root.as_fd())?;
    match floor.failed.load(Ordering::Relaxed) {
        0 => Ok(floor.chowned.load(Ordering::Relaxed)),
        failed => Err(io::Error::other(format!(
            "{failed} entries or directories failed (the first is printed above)"
        ))),
    }
}

struct Floor {
    map: IdMap,
    direction: Direction,
    bounds: Bounds,
    chowned: AtomicU64,
    failed: AtomicU64,
}

impl Floor {
    /// Counts a failure, printing the first one.
    fn fail(&self, what: &str, error: io::Error) {
        if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("safe_floor: {what}: {error}");
        }
    }

    /// Chowns an inode whose ids move (a hardlinked inode's later names find it
    /// shifted already: one chown per inode, as in a real run).
    fn shift(&self, inode: &Inode) -> io::Result<()> {
        let stat = &inode.stat;
        let uid = self.map.map(IdKind::User, stat.uid, self.direction);
        let gid = self.map.map(IdKind::Group, stat.gid, self.direction);
        if (uid, gid) == (stat.uid, stat.gid) {
            return Ok(());
        }
        inode.chown(uid, gid)?;
        self.chowned.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn directory<'s>(&'s self, scope: &rayon::Scope<'s>, fd: OwnedFd, stat: Stat) {
        let mut reader = DirReader::new(GETDENTS_BUFFER);
        let read = reader.for_each_batch(fd.as_fd(), BATCH, |entries: Vec<DirEntry>| {
            let subdirs: Vec<(OwnedFd, Stat)> = entries
                .into_par_iter()
                .with_min_len(16)
                .filter_map(|e| match self.entry(fd.as_fd(), &stat, &e) {
                    Ok(subdir) => subdir,
                    Err(error) => {
                        self.fail(&e.name.to_string_lossy(), error);
                        None
                    }
                })
                .collect();
            for (child, child_stat) in subdirs {
                scope.spawn(move |scope| self.directory(scope, child, child_stat));
            }
        });
        if let Err(error) = read {
            self.fail("reading a directory", error);
        }
    }

    /// Lists, opens, stats and chowns one entry; returns it opened for reading
    /// (and checked) if it is a directory on the tree's mount.
    fn entry(
        &self,
        dir: BorrowedFd<'_>,
        dir_stat: &Stat,
        entry: &DirEntry,
    ) -> io::Result<Option<(OwnedFd, Stat)>> {
        LISTING
            .with_borrow_mut(|buf| sys::list_xattrs_hint(dir, dir_stat.id(), &entry.name, buf))
            .transpose()?;
        let inode = Inode::open_at(dir, &entry.name)?;
        if !self.bounds.contains(&inode.stat) {
            return Ok(None);
        }
        self.shift(&inode)?;
        if !inode.stat.is_dir() {
            return Ok(None);
        }
        let child = sys::open_subdir(dir, &entry.name)?;
        let stat = sys::stat_fd(child.as_fd())?;
        match stat.same_inode(&inode.stat) {
            true => Ok(Some((child, stat))),
            false => Err(io::Error::other("directory replaced during the walk")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn owners(root: &Path) -> Vec<(String, u32, u32)> {
        ["", "d", "d/f", "d/link", "d/hard", "l"]
            .iter()
            .map(|name| {
                let meta = std::fs::symlink_metadata(root.join(name)).unwrap();
                (name.to_string(), meta.uid(), meta.gid())
            })
            .collect()
    }

    #[test]
    fn the_floor_moves_every_inode_once_and_back() {
        if !sys::is_root() {
            return crate::skip_test(
                "floor::the_floor_moves_every_inode_once_and_back (needs root)",
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"x").unwrap();
        std::fs::hard_link(root.join("d/f"), root.join("d/hard")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("d/link")).unwrap();
        std::os::unix::fs::symlink("d", root.join("l")).unwrap();
        for name in ["", "d", "d/f", "d/link", "l"] {
            std::os::unix::fs::lchown(root.join(name), Some(7), Some(8)).unwrap();
        }
        let before = owners(root);
        let passwd = std::fs::metadata("/etc/passwd").unwrap();

        // 5 inodes: the root, d, f (two names, one chown), and the two symlinks.
        assert_eq!(shift_floor(root, false, Some(2)).unwrap(), 5);
        let shifted = owners(root);
        assert!(
            shifted
                .iter()
                .all(|(_, u, g)| (*u, *g) == (1_000_007, 1_000_008)),
            "{shifted:?}"
        );
        assert_eq!(
            std::fs::metadata("/etc/passwd").unwrap().uid(),
            passwd.uid()
        );

        assert_eq!(shift_floor(root, true, Some(2)).unwrap(), 5);
        assert_eq!(owners(root), before);
    }
}
