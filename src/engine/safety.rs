//! Checks on the tree a user names, made before anything is written: a typo must
//! never re-own the host. The tree is opened once; every check and every later
//! phase of the run uses that one fd, so swapping the path for a symlink midway
//! changes nothing.

use super::sys::{self, Stat};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {source}; name the container's root directory (`ls -ld {path}` shows what is there)")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a directory; name the root directory of the container's file system")]
    NotADirectory { path: PathBuf },
    #[error("{path} is the host's root directory; refusing to re-own the host (name the container's rootfs)")]
    HostRoot { path: PathBuf },
    #[error("{path} holds the host's own {host_dir}; refusing to re-own the host (name the container's rootfs)")]
    HoldsHostDir {
        path: PathBuf,
        host_dir: &'static str,
    },
    #[error("{path} is the host's own {host_dir} or lies inside it; refusing to re-own the host (name the container's rootfs)")]
    InsideHostDir {
        path: PathBuf,
        host_dir: &'static str,
    },
    #[error("{path} is or holds the host's {host_dir}; refusing to re-own the host's own files (name one container's rootfs, such as /var/lib/lxc/NAME/rootfs)")]
    HoldsHostFiles {
        path: PathBuf,
        host_dir: &'static str,
    },
    #[error("another lxc-idshift run is working on {path} right now; wait for it to finish (lxc-idshift status {path})")]
    Busy { path: PathBuf },
}

/// The host directories whose presence inside a tree, or around it, means the tree
/// is the host's.
const HOST_DIRS: [&str; 2] = ["/etc", "/usr"];

/// Host directories that hold other programs' files (and the containers' own
/// directories): a tree may lie inside them, but never be one or hold one.
const HOST_SHARED_DIRS: [&str; 12] = [
    "/tmp",
    "/var",
    "/var/tmp",
    "/var/lib",
    "/var/lib/lxc",
    "/var/log",
    "/home",
    "/root",
    "/boot",
    "/srv",
    "/opt",
    "/run",
];

/// How many parent directories are followed up before giving up (a bound, not a
/// limit any real tree reaches).
const MAX_DEPTH: usize = 4096;

/// The tree of one run, opened once.
#[derive(Debug)]
pub struct Tree {
    /// The canonical path, for messages and the journal's name only.
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub stat: Stat,
}

impl Tree {
    /// An fd of the tree's root for one walk (the same open directory).
    pub fn dup_fd(&self) -> std::io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Holds the tree for this process until it exits: a second run on the same
    /// tree is refused whatever its journal (the lock is on the root directory).
    pub fn lock(&self) -> Result<(), TreeError> {
        match sys::try_lock_exclusive(&self.fd) {
            Ok(true) => Ok(()),
            Ok(false) => Err(TreeError::Busy {
                path: self.path.clone(),
            }),
            Err(source) => Err(TreeError::Unreadable {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Whether the directory `dir` is this tree's root or lies below it (by
    /// identity: symlinks, relative paths and bind mounts of the tree all count).
    pub fn contains_dir(&self, dir: BorrowedFd<'_>) -> std::io::Result<bool> {
        Ok(ancestors(dir)?.iter().any(|s| s.same_inode(&self.stat)))
    }
}

/// Opens the tree's root and refuses anything that is not a container's tree.
pub fn open_tree(path: &Path) -> Result<Tree, TreeError> {
    let unreadable = |source| TreeError::Unreadable {
        path: path.into(),
        source,
    };
    let canonical = path.canonicalize().map_err(unreadable)?;
    let fd = match sys::open_dir_path(&canonical) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(TreeError::NotADirectory { path: path.into() })
        }
        other => other.map_err(unreadable)?,
    };
    let stat = sys::stat_fd(fd.as_fd()).map_err(unreadable)?;
    let tree = Tree {
        path: canonical,
        fd,
        stat,
    };
    refuse_host(&tree, path)?;
    Ok(tree)
}

/// The tree, by identity, must not be the host's root, hold /etc or /usr (a bind
/// mount of / elsewhere holds the same ones), nor be or lie inside one of them.
fn refuse_host(tree: &Tree, given: &Path) -> Result<(), TreeError> {
    let unreadable = |source| TreeError::Unreadable {
        path: given.into(),
        source,
    };
    let host = |p: &str| sys::stat_at(rustix::fs::CWD, &std::ffi::CString::new(p).ok()?).ok();
    if host("/").is_some_and(|root| root.same_inode(&tree.stat)) {
        return Err(TreeError::HostRoot { path: given.into() });
    }
    let around = ancestors(tree.fd.as_fd()).map_err(unreadable)?;
    for host_dir in HOST_DIRS {
        let Some(host_stat) = host(host_dir) else {
            continue;
        };
        let name = std::ffi::CString::new(&host_dir[1..]).expect("no NUL");
        let inside = sys::stat_at(tree.fd.as_fd(), &name).ok();
        if inside.is_some_and(|s| s.same_inode(&host_stat)) {
            return Err(TreeError::HoldsHostDir {
                path: given.into(),
                host_dir,
            });
        }
        if around.iter().any(|s| s.same_inode(&host_stat)) {
            return Err(TreeError::InsideHostDir {
                path: given.into(),
                host_dir,
            });
        }
    }
    refuse_shared(tree, given)
}

/// The tree, by identity, must not be one of [`HOST_SHARED_DIRS`] or one of their
/// parents: `shift /tmp` would re-own every program's temporary files.
fn refuse_shared(tree: &Tree, given: &Path) -> Result<(), TreeError> {
    for host_dir in HOST_SHARED_DIRS {
        let Ok(fd) = sys::open_dir_path(Path::new(host_dir)) else {
            continue;
        };
        let Ok(up) = ancestors(fd.as_fd()) else {
            continue;
        };
        if up.iter().any(|s| s.same_inode(&tree.stat)) {
            return Err(TreeError::HoldsHostFiles {
                path: given.into(),
                host_dir,
            });
        }
    }
    Ok(())
}

/// `dir` and every directory above it, found through "..", up to the root of the
/// process's file system namespace.
fn ancestors(dir: BorrowedFd<'_>) -> std::io::Result<Vec<Stat>> {
    let mut stats = vec![sys::stat_fd(dir)?];
    let mut current = sys::open_subdir(dir, c"..")?;
    for _ in 0..MAX_DEPTH {
        let stat = sys::stat_fd(current.as_fd())?;
        let last = stats.last().expect("starts with dir");
        if stat.same_inode(last) && stat.mnt_id == last.mnt_id {
            return Ok(stats);
        }
        stats.push(stat);
        current = sys::open_subdir(current.as_fd(), c"..")?;
    }
    Err(std::io::Error::other("directory nested too deep"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_host_directories_other_programs_share_and_their_parents() {
        for dir in [
            "/tmp",
            "/var/tmp/",
            "/var/lib",
            "/var",
            "/tmp/../var/lib/..",
        ] {
            let refused = open_tree(Path::new(dir));
            assert!(
                matches!(refused, Err(TreeError::HoldsHostFiles { .. })),
                "{dir}: {refused:?}"
            );
        }
        // A tree inside them is what a container's rootfs is.
        let inside = tempfile::tempdir().unwrap();
        assert!(open_tree(inside.path()).is_ok());
    }

    #[test]
    fn refuses_host_and_non_directories() {
        assert!(matches!(
            open_tree(Path::new("/")),
            Err(TreeError::HostRoot { .. })
        ));
        assert!(matches!(
            open_tree(Path::new("/usr/..")),
            Err(TreeError::HostRoot { .. })
        ));
        assert!(matches!(
            open_tree(Path::new("/etc/hostname")),
            Err(TreeError::NotADirectory { .. })
        ));
        assert!(matches!(
            open_tree(Path::new("/nonexistent/x")),
            Err(TreeError::Unreadable { .. })
        ));
        for inside in ["/etc", "/usr", "/usr/share", "/etc/default"] {
            assert!(
                matches!(
                    open_tree(Path::new(inside)),
                    Err(TreeError::InsideHostDir { .. })
                ),
                "{inside}"
            );
        }
    }

    #[test]
    fn accepts_a_plain_tree_and_canonicalizes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let weird = dir.path().join("etc/..");
        let tree = open_tree(&weird).unwrap();
        assert_eq!(tree.path, dir.path().canonicalize().unwrap());
        let sub = sys::open_dir_path(&dir.path().join("etc")).unwrap();
        assert!(tree.contains_dir(sub.as_fd()).unwrap());
        assert!(tree.contains_dir(tree.fd.as_fd()).unwrap());
        let outside = sys::open_dir_path(Path::new("/tmp")).unwrap();
        assert!(!tree.contains_dir(outside.as_fd()).unwrap());
    }

    #[test]
    fn a_second_lock_on_the_same_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_tree(dir.path()).unwrap();
        first.lock().unwrap();
        let second = open_tree(dir.path()).unwrap();
        assert!(matches!(second.lock(), Err(TreeError::Busy { .. })));
        drop(first);
        // A process another test spawns meanwhile holds a copy of the fd, and so
        // the lock, until its exec: a moment, but long enough under TCG to fail
        // this on 5.10 in the kernel matrix.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while matches!(second.lock(), Err(TreeError::Busy { .. }))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        second.lock().unwrap();
    }

    fn bind_mounted(source: &str, check: impl Fn(Result<Tree, TreeError>) -> bool) {
        if !sys::is_root() {
            crate::skip_test(&format!("bind mount of {source} needs root"));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mount = |args: &[&std::ffi::OsStr]| {
            let status = std::process::Command::new(args[0])
                .args(&args[1..])
                .status();
            assert!(status.unwrap().success(), "{args:?}");
        };
        mount(&[
            "mount".as_ref(),
            "--bind".as_ref(),
            source.as_ref(),
            dir.path().as_os_str(),
        ]);
        let result = open_tree(dir.path());
        let refused = format!("{result:?}");
        let ok = check(result);
        mount(&["umount".as_ref(), dir.path().as_os_str()]);
        assert!(ok, "{source}: {refused}");
    }

    #[test]
    fn refuses_a_bind_mount_of_the_host_root() {
        bind_mounted("/", |r| {
            matches!(
                r,
                Err(TreeError::HostRoot { .. } | TreeError::HoldsHostDir { .. })
            )
        });
    }

    #[test]
    fn refuses_a_bind_mount_of_a_shared_host_directory() {
        // Another path to /var/lib is still /var/lib: refused by identity.
        bind_mounted("/var/lib", |r| {
            matches!(r, Err(TreeError::HoldsHostFiles { .. }))
        });
    }

    #[test]
    fn refuses_a_bind_mount_of_the_host_etc() {
        bind_mounted("/etc", |r| {
            matches!(r, Err(TreeError::InsideHostDir { .. }))
        });
    }
}
