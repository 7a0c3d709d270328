//! The floor of a shift that keeps this project's promises, for benchmarks only
//! (feature `testkit`, `examples/safe_floor`): per inode exactly the system calls no
//! safe shift can do without (its xattrs listed by name, an `O_PATH` handle opened,
//! stat'ed, chowned through and closed; each directory opened and checked), on the
//! same threads as a real run, then one `syncfs`. Nothing else: no journal, no
//! hardlink dedupe, no ACL, capability or mode care. Like `examples/bare_lchown`,
//! it moves ids 0..65536 to 1000000.. and back.

use super::sys::{self, DirEntry, DirReader, Inode, Stat};
use rayon::prelude::*;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const SHIFT: u32 = 1_000_000;
const COUNT: u32 = 65_536;
const BATCH: usize = 2048;

thread_local! {
    static LISTING: RefCell<Vec<u8>> = RefCell::new(vec![0; 256]);
}

/// Shifts every inode under `root` as the floor does; returns the inodes chowned.
pub fn shift_floor(root: &Path, reverse: bool, threads: Option<usize>) -> io::Result<u64> {
    let pool = super::walk::thread_pool(threads)?;
    let root = sys::open_dir_path(root)?;
    let root_inode = Inode::open_at(root.as_fd(), c".")?;
    let floor = Floor {
        reverse,
        dev: root_inode.stat.dev,
        chowned: AtomicU64::new(0),
    };
    floor.shift(&root_inode)?;
    let (stat, walked) = (root_inode.stat, root.try_clone()?);
    pool.scope(|scope| floor.directory(scope, walked, stat));
    sys::sync_file_system(root.as_fd())?;
    Ok(floor.chowned.load(Ordering::Relaxed))
}

struct Floor {
    reverse: bool,
    dev: u64,
    chowned: AtomicU64,
}

impl Floor {
    fn shifted(&self, id: u32) -> u32 {
        match self.reverse {
            false if id < COUNT => id + SHIFT,
            true if (SHIFT..SHIFT + COUNT).contains(&id) => id - SHIFT,
            _ => id,
        }
    }

    /// Chowns an inode whose ids move (a hardlinked inode's later names find it
    /// shifted already: one chown per inode, as in a real run).
    fn shift(&self, inode: &Inode) -> io::Result<()> {
        let (uid, gid) = (self.shifted(inode.stat.uid), self.shifted(inode.stat.gid));
        if (uid, gid) == (inode.stat.uid, inode.stat.gid) {
            return Ok(());
        }
        inode.chown(uid, gid)?;
        self.chowned.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn directory<'s>(&'s self, scope: &rayon::Scope<'s>, fd: OwnedFd, stat: Stat) {
        let mut reader = DirReader::new(256 * 1024);
        let read = reader.for_each_batch(fd.as_fd(), BATCH, |entries: Vec<DirEntry>| {
            let subdirs: Vec<(OwnedFd, Stat)> = entries
                .into_par_iter()
                .with_min_len(16)
                .filter_map(|e| self.entry(fd.as_fd(), &stat, &e).ok().flatten())
                .collect();
            for (child, child_stat) in subdirs {
                scope.spawn(move |scope| self.directory(scope, child, child_stat));
            }
        });
        if let Err(e) = read {
            eprintln!("safe_floor: cannot read a directory: {e}");
        }
    }

    /// Lists, opens, stats and chowns one entry; returns it opened for reading
    /// (and checked) if it is a directory on the same file system.
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
        if inode.stat.dev != self.dev {
            return Ok(None);
        }
        self.shift(&inode)?;
        if !inode.stat.is_dir() {
            return Ok(None);
        }
        let child = sys::open_subdir(dir, &entry.name)?;
        let stat = sys::stat_fd(child.as_fd())?;
        Ok(stat.same_inode(&inode.stat).then_some((child, stat)))
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
