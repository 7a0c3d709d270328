//! Checks on the tree a user names, made before anything is written: a typo must
//! never re-own the host.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {source}; check the path")]
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
}

/// The host directories whose presence inside a tree means the tree is the host.
const HOST_DIRS: [&str; 2] = ["/etc", "/usr"];

/// Resolves the tree's path and refuses anything that is not a container's tree.
/// Returns the canonical path.
pub fn check_tree(path: &Path) -> Result<PathBuf, TreeError> {
    let unreadable = |source| TreeError::Unreadable {
        path: path.into(),
        source,
    };
    let canonical = path.canonicalize().map_err(unreadable)?;
    let meta = std::fs::metadata(&canonical).map_err(unreadable)?;
    if !meta.is_dir() {
        return Err(TreeError::NotADirectory { path: path.into() });
    }
    if canonical == Path::new("/") || same_inode(&canonical, Path::new("/")) {
        return Err(TreeError::HostRoot { path: path.into() });
    }
    for host_dir in HOST_DIRS {
        // By identity, not by name: a bind mount of / elsewhere holds the same /etc.
        let inside = canonical.join(host_dir.trim_start_matches('/'));
        if Path::new(host_dir).starts_with(&canonical) || same_inode(&inside, Path::new(host_dir)) {
            return Err(TreeError::HoldsHostDir {
                path: path.into(),
                host_dir,
            });
        }
    }
    Ok(canonical)
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_host_and_non_directories() {
        assert!(matches!(
            check_tree(Path::new("/")),
            Err(TreeError::HostRoot { .. })
        ));
        assert!(matches!(
            check_tree(Path::new("/usr/..")),
            Err(TreeError::HostRoot { .. })
        ));
        assert!(matches!(
            check_tree(Path::new("/etc/hostname")),
            Err(TreeError::NotADirectory { .. })
        ));
        assert!(matches!(
            check_tree(Path::new("/nonexistent/x")),
            Err(TreeError::Unreadable { .. })
        ));
    }

    #[test]
    fn accepts_a_plain_tree_and_canonicalizes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let weird = dir.path().join("etc/..");
        assert_eq!(
            check_tree(&weird).unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }

    #[test]
    fn refuses_a_bind_mount_of_the_host_root() {
        if !crate::engine::sys::is_root() {
            eprintln!("SKIPPED: refuses_a_bind_mount_of_the_host_root needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["--bind", "/"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let result = check_tree(dir.path());
        std::process::Command::new("umount")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            matches!(
                result,
                Err(TreeError::HostRoot { .. } | TreeError::HoldsHostDir { .. })
            ),
            "{result:?}"
        );
    }
}
