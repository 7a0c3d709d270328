//! Metadata manifest: every inode of a tree with its type, mode, owners, device
//! number, symlink target, all xattrs and hardlink identity, for exact comparisons
//! before and after a shift.
//!
//! The walk never follows symlinks and never enters another filesystem: entries whose
//! st_dev differs from the root's (mount points) are left out with what is below them.

use crate::fsutil::{failed, FileError};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    fn of(ft: fs::FileType) -> FileKind {
        if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else if ft.is_block_device() {
            FileKind::BlockDevice
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Regular
        }
    }
}

/// The metadata of one name in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: FileKind,
    /// Permission bits with setuid, setgid and sticky (st_mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number, for character and block devices only.
    pub rdev: Option<u64>,
    /// Size, for regular files only (a cheap guard against content damage).
    pub size: Option<u64>,
    pub symlink_target: Option<Vec<u8>>,
    /// Every xattr, name -> raw value.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// When the inode has several names in the tree: the smallest of them (this
    /// entry's own path included), so identical trees compare equal.
    pub same_inode_as: Option<Vec<u8>>,
}

/// Entries keyed by path relative to the root, as raw bytes; the root itself is `b""`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub entries: BTreeMap<Vec<u8>, Entry>,
}

/// Largest xattr name list and value the kernel returns (XATTR_LIST_MAX, XATTR_SIZE_MAX).
const XATTR_MAX: usize = 65536;

/// Reads every xattr of `path` without following a final symlink.
fn xattrs_of(path: &Path, buf: &mut [u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, FileError> {
    let mut out = BTreeMap::new();
    let len = match rustix::fs::llistxattr(path, &mut *buf) {
        Ok(len) => len,
        // Filesystems without xattr support have none to compare.
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(out),
        Err(e) => return Err(FileError::new("list the xattrs of", path, e.into())),
    };
    let names: Vec<Vec<u8>> = buf[..len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    for name in names {
        match rustix::fs::lgetxattr(path, OsStr::from_bytes(&name), &mut *buf) {
            Ok(len) => {
                out.insert(name, buf[..len].to_vec());
            }
            // Removed between list and get.
            Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(FileError::new("read an xattr of", path, e.into())),
        }
    }
    Ok(out)
}

fn entry_of(path: &Path, meta: &fs::Metadata, buf: &mut [u8]) -> Result<Entry, FileError> {
    let kind = FileKind::of(meta.file_type());
    let symlink_target = if kind == FileKind::Symlink {
        Some(
            fs::read_link(path)
                .map_err(failed("read the link", path))?
                .into_os_string()
                .into_vec(),
        )
    } else {
        None
    };
    let is_device = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
    Ok(Entry {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: is_device.then_some(meta.rdev()),
        size: (kind == FileKind::Regular).then_some(meta.len()),
        symlink_target,
        xattrs: xattrs_of(path, buf)?,
        same_inode_as: None,
    })
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut rel = dir.to_vec();
    if !rel.is_empty() {
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
}

/// Collects the manifest of the tree at `root` (not following a symlink at `root`).
pub fn collect(root: &Path) -> Result<Manifest, FileError> {
    let mut buf = vec![0u8; XATTR_MAX];
    let mut manifest = Manifest::default();
    let mut links: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
    let root_meta = fs::symlink_metadata(root).map_err(failed("read the metadata of", root))?;
    let dev = root_meta.dev();
    let entry = entry_of(root, &root_meta, &mut buf)?;
    manifest.entries.insert(Vec::new(), entry);
    let mut stack: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    if root_meta.is_dir() {
        stack.push((root.to_path_buf(), Vec::new()));
    }
    while let Some((dir, rel_dir)) = stack.pop() {
        for child in fs::read_dir(&dir).map_err(failed("list", &dir))? {
            let child = child.map_err(failed("list", &dir))?;
            let path = child.path();
            let meta =
                fs::symlink_metadata(&path).map_err(failed("read the metadata of", &path))?;
            if meta.dev() != dev {
                continue; // a mount point: another filesystem, not part of the tree
            }
            let rel = join(&rel_dir, child.file_name().as_bytes());
            if !meta.is_dir() && meta.nlink() > 1 {
                links
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            manifest
                .entries
                .insert(rel.clone(), entry_of(&path, &meta, &mut buf)?);
            if meta.is_dir() {
                stack.push((path, rel));
            }
        }
    }
    for names in links.into_values().filter(|n| n.len() > 1) {
        let smallest = names.iter().min().cloned();
        for name in &names {
            if let Some(e) = manifest.entries.get_mut(name) {
                e.same_inode_as = smallest.clone();
            }
        }
    }
    Ok(manifest)
}

/// A relative path for humans: `.` for the root, non-UTF-8 bytes escaped.
pub fn show_path(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".to_string()
    } else {
        rel.escape_ascii().to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Field-by-field differences of one path, `left -> right`.
fn entry_diff(path: &str, a: &Entry, b: &Entry, out: &mut Vec<String>) {
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{path}: {name} {x} -> {y}"));
        }
    };
    field("type", format!("{:?}", a.kind), format!("{:?}", b.kind));
    field("mode", format!("{:04o}", a.mode), format!("{:04o}", b.mode));
    field("uid", a.uid.to_string(), b.uid.to_string());
    field("gid", a.gid.to_string(), b.gid.to_string());
    field("rdev", format!("{:?}", a.rdev), format!("{:?}", b.rdev));
    field("size", format!("{:?}", a.size), format!("{:?}", b.size));
    let target = |t: &Option<Vec<u8>>| t.as_deref().map_or("none".into(), show_path);
    field(
        "symlink target",
        target(&a.symlink_target),
        target(&b.symlink_target),
    );
    let same = |t: &Option<Vec<u8>>| {
        t.as_deref().map_or("own inode".into(), |p| {
            format!("same inode as {}", show_path(p))
        })
    };
    field("hardlink", same(&a.same_inode_as), same(&b.same_inode_as));
    let names: std::collections::BTreeSet<&Vec<u8>> =
        a.xattrs.keys().chain(b.xattrs.keys()).collect();
    for name in names {
        let value =
            |m: &BTreeMap<Vec<u8>, Vec<u8>>| m.get(name).map_or("absent".into(), |v| hex(v));
        field(
            &format!("xattr {}", show_path(name)),
            value(&a.xattrs),
            value(&b.xattrs),
        );
    }
}

impl Manifest {
    pub fn get(&self, rel: &[u8]) -> Option<&Entry> {
        self.entries.get(rel)
    }

    /// Human-readable differences from `self` (left) to `other` (right), at most
    /// `max` of them plus a count of the rest; empty when the trees are identical.
    pub fn diff(&self, other: &Manifest, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let paths: std::collections::BTreeSet<&Vec<u8>> =
            self.entries.keys().chain(other.entries.keys()).collect();
        for rel in paths {
            let path = show_path(rel);
            match (self.entries.get(rel), other.entries.get(rel)) {
                (Some(a), Some(b)) if a != b => entry_diff(&path, a, b, &mut out),
                (Some(_), None) => out.push(format!("{path}: only in left")),
                (None, Some(_)) => out.push(format!("{path}: only in right")),
                _ => {}
            }
        }
        if out.len() > max {
            let more = out.len() - max;
            out.truncate(max);
            out.push(format!("... and {more} more differences"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn collects_types_links_and_xattrs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"abc").unwrap();
        fs::hard_link(root.join("d/f"), root.join("g")).unwrap();
        symlink("/nowhere", root.join("d/s")).unwrap();
        rustix::fs::lsetxattr(
            root.join("g"),
            "user.k",
            b"\0v",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let m = collect(root).unwrap();
        assert_eq!(m.entries.len(), 5);
        assert_eq!(m.get(b"").unwrap().kind, FileKind::Directory);
        let f = m.get(b"d/f").unwrap();
        assert_eq!((f.kind, f.size), (FileKind::Regular, Some(3)));
        assert_eq!(f.same_inode_as.as_deref(), Some(&b"d/f"[..]));
        assert_eq!(
            m.get(b"g").unwrap().same_inode_as.as_deref(),
            Some(&b"d/f"[..])
        );
        assert_eq!(
            f.xattrs.get(&b"user.k"[..]).map(Vec::as_slice),
            Some(&b"\0v"[..])
        );
        let s = m.get(b"d/s").unwrap();
        assert_eq!(s.symlink_target.as_deref(), Some(&b"/nowhere"[..]));
        assert_eq!(m.diff(&collect(root).unwrap(), 10), Vec::<String>::new());
    }

    #[test]
    fn diff_names_each_difference_and_caps_the_count() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a"), b"").unwrap();
        let left = collect(tmp.path()).unwrap();
        let mut right = left.clone();
        let a = right.entries.get_mut(&b"a"[..]).unwrap();
        a.uid += 1_000_000;
        a.mode |= 0o4000;
        a.xattrs.insert(b"user.x".to_vec(), vec![1]);
        let copy = a.clone();
        right.entries.insert(b"\xff".to_vec(), copy);
        right.entries.remove(&b""[..]);
        let d = left.diff(&right, 100);
        assert_eq!(d.len(), 5, "{d:#?}");
        assert!(d.iter().any(|l| l.starts_with("a: uid ")));
        assert!(d.iter().any(|l| l == "a: xattr user.x absent -> 0x01"));
        assert!(d.iter().any(|l| l == "\\xff: only in right"));
        assert!(d.iter().any(|l| l == ".: only in left"));
        let capped = left.diff(&right, 2);
        assert_eq!(capped.len(), 3);
        assert_eq!(capped[2], "... and 3 more differences");
    }
}
