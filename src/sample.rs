//! Sample trees: a small realistic container rootfs for the demo and the tests, and
//! (with the `testkit` feature) a large deterministic rootfs-like tree for benchmarks.
//!
//! Both need root: they chown to many ids, mknod devices and write `trusted.*` and
//! `security.capability` xattrs.

use crate::engine::acl::{Acl, AclEntry};
use crate::engine::caps::FileCaps;
use crate::engine::xattr_names::{ACL_ACCESS, ACL_DEFAULT, CAPS};
use crate::fsutil::{failed, FileError};
use rustix::fs::{self as rfs, FileType, Mode, XattrFlags, CWD};
use std::ffi::{CStr, OsStr};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

#[cfg(feature = "testkit")]
mod bulk;
#[cfg(feature = "testkit")]
pub use bulk::{build_bulk_tree, build_host_range_inodes};

/// Relative paths of the sample rootfs that tests and the demo look at.
pub mod paths {
    /// setuid root binary, mode 4755, owner 0:0.
    pub const SETUID_ROOT: &str = "usr/bin/passwd";
    /// setuid root binary hardlinked from another directory (see `SETUID_LINK`).
    pub const SETUID_HARDLINKED: &str = "usr/bin/sudo";
    pub const SETUID_LINK: &str = "usr/lib/sudo/sudoedit";
    /// setgid binary, mode 2755, owner 0:5.
    pub const SETGID: &str = "usr/bin/wall";
    /// security.capability v2, cap_net_raw+ep, owner 0:0.
    pub const CAP_NET_RAW: &str = "bin/ping";
    /// security.capability v2, cap_net_bind_service permitted only, owner 33:33.
    pub const CAP_NO_EFFECTIVE: &str = "usr/lib/cap-helper";
    /// plain root-owned file, mode 0644.
    pub const ROOT_FILE: &str = "etc/hostname";
    /// directory with access and default ACLs holding USER and GROUP entries.
    pub const ACL_DIR: &str = "home/alice/shared";
    /// file whose ACL names an id outside the map (70000).
    pub const ACL_UNMAPPED: &str = "home/alice/shared/odd-acl.txt";
    /// owned by 1000033:1000033, already in the host range.
    pub const HOST_RANGE: &str = "var/lib/already-host";
    /// owned by 70000:70000, in no range of b:0:1000000:65536.
    pub const UNMAPPED: &str = "var/lib/stray";
    /// the same inode under three directories, owned by 1000:1000.
    pub const HARDLINKS: [&str; 3] = [
        "home/alice/photo.jpg",
        "home/bob/photo.jpg",
        "var/backups/photo.jpg",
    ];
    /// absolute symlink to the host's /etc/passwd when seen from the host.
    pub const SYMLINK_OUT: &str = "etc/host-passwd";
    pub const SYMLINK_DANGLING: &str = "etc/dangling";
    pub const CHAR_DEVICE: &str = "dev/null";
    pub const BLOCK_DEVICE: &str = "dev/sda";
    pub const FIFO: &str = "dev/initctl";
    pub const SOCKET: &str = "run/daemon.sock";
    pub const STICKY: &str = "tmp";
    pub const USER_XATTR: &str = "home/alice/notes.txt";
    pub const TRUSTED_XATTR: &str = "var/lib/trusted-file";
    /// a non-UTF-8 name (Latin-1 "café.txt").
    pub const NON_UTF8: &[u8] = b"home/alice/caf\xe9.txt";
}

/// What `build_sample_rootfs` made.
#[derive(Debug, Clone)]
pub struct SampleInfo {
    /// Inodes created, the root directory included (hardlinks count once).
    pub inodes: usize,
    /// Relative paths worth looking at before and after a shift.
    pub telling_paths: Vec<PathBuf>,
}

const CAP_NET_RAW: u32 = 13;
const CAP_NET_BIND_SERVICE: u32 = 10;

/// security.capability v2 bytes: magic|flags, then permitted/inheritable words.
pub fn caps_v2(permitted: u64, effective: bool) -> Vec<u8> {
    let words = vec![permitted as u32, 0, (permitted >> 32) as u32, 0];
    let caps = FileCaps {
        revision: 2,
        flags: u32::from(effective),
        words,
        rootid: None,
    };
    caps.to_bytes()
}

pub use crate::engine::acl::{
    ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ,
};

/// system.posix_acl_* bytes from (tag, perm, id) entries; the kernel wants them
/// sorted by tag then id, which the caller provides.
pub fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let entries = entries.iter().map(|&(tag, perm, id)| AclEntry {
        tag,
        perm,
        // The kernel writes -1 in the entries that carry no id.
        id: if tag == ACL_USER || tag == ACL_GROUP {
            id
        } else {
            u32::MAX
        },
    });
    Acl {
        entries: entries.collect(),
    }
    .to_bytes()
}

/// Refuses early with a clear message, rather than failing on the first chown.
fn require_root(what: &str) -> io::Result<()> {
    if crate::is_root() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{what} must run as root: it chowns to many ids, creates device nodes and writes trusted.* and security.capability xattrs"),
        ))
    }
}

fn require_empty_dir(root: &Path) -> io::Result<()> {
    if fs::read_dir(root)?.next().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not empty", root.display()),
        ));
    }
    Ok(())
}

/// Creates inodes by relative byte path under a root, counting them.
struct Builder {
    root: PathBuf,
    inodes: usize,
}

impl Builder {
    fn new(root: &Path) -> Builder {
        Builder {
            root: root.to_path_buf(),
            inodes: 0,
        }
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    /// chown first, then chmod: chown clears setuid/setgid on non-directories.
    fn own(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), FileError> {
        lchown(path, Some(uid), Some(gid)).map_err(failed("chown", path))?;
        fs::set_permissions(path, Permissions::from_mode(mode)).map_err(failed("chmod", path))
    }

    fn root_dir(&mut self, mode: u32, uid: u32, gid: u32) -> Result<(), FileError> {
        self.inodes += 1;
        self.own(&self.root.clone(), mode, uid, gid)
    }

    fn dir(&mut self, rel: &[u8], mode: u32, uid: u32, gid: u32) -> Result<(), FileError> {
        let path = self.path(rel);
        fs::create_dir(&path).map_err(failed("create the directory", &path))?;
        self.inodes += 1;
        self.own(&path, mode, uid, gid)
    }

    fn file(
        &mut self,
        rel: &[u8],
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), FileError> {
        let path = self.path(rel);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed("create", &path))?;
        f.write_all(content).map_err(failed("write", &path))?;
        drop(f);
        self.inodes += 1;
        self.own(&path, mode, uid, gid)
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8], uid: u32, gid: u32) -> Result<(), FileError> {
        let path = self.path(rel);
        symlink(OsStr::from_bytes(target), &path).map_err(failed("create the symlink", &path))?;
        self.inodes += 1;
        lchown(&path, Some(uid), Some(gid)).map_err(failed("chown", &path))
    }

    fn node(
        &mut self,
        rel: &[u8],
        kind: FileType,
        dev: (u32, u32),
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), FileError> {
        let path = self.path(rel);
        let dev = rfs::makedev(dev.0, dev.1);
        rfs::mknodat(CWD, &path, kind, Mode::from_raw_mode(0o600), dev)
            .map_err(|e| FileError::new("create the device node", &path, e.into()))?;
        self.inodes += 1;
        self.own(&path, mode, uid, gid)
    }

    fn socket(&mut self, rel: &[u8], mode: u32, uid: u32, gid: u32) -> Result<(), FileError> {
        let path = self.path(rel);
        // Binding creates the socket inode; it stays after the listener is closed.
        drop(UnixListener::bind(&path).map_err(failed("create the socket", &path))?);
        self.inodes += 1;
        self.own(&path, mode, uid, gid)
    }

    /// A second name for an existing inode: not counted as a new inode.
    fn hardlink(&self, existing: &[u8], new: &[u8]) -> Result<(), FileError> {
        let new = self.path(new);
        fs::hard_link(self.path(existing), &new).map_err(failed("create the hard link", &new))
    }

    fn xattr(&self, rel: &[u8], name: &CStr, value: &[u8]) -> Result<(), FileError> {
        let path = self.path(rel);
        rfs::lsetxattr(&path, name, value, XattrFlags::empty()).map_err(|e| {
            let operation = format!("set {} on", name.to_string_lossy());
            FileError::new(operation, &path, e.into())
        })
    }
}

/// Builds a realistic small rootfs under `root`, an existing empty directory.
pub fn build_sample_rootfs(root: &Path) -> io::Result<SampleInfo> {
    require_root("build_sample_rootfs")?;
    require_empty_dir(root)?;
    let mut b = Builder::new(root);
    b.root_dir(0o755, 0, 0)?;
    system_dirs(&mut b)?;
    binaries(&mut b)?;
    etc_and_links(&mut b)?;
    devices(&mut b)?;
    var_tree(&mut b)?;
    homes(&mut b)?;
    let telling = [
        paths::SETUID_ROOT,
        paths::SETUID_HARDLINKED,
        paths::SETUID_LINK,
        paths::SETGID,
        paths::CAP_NET_RAW,
        paths::CAP_NO_EFFECTIVE,
        paths::ACL_DIR,
        paths::ACL_UNMAPPED,
        paths::HOST_RANGE,
        paths::UNMAPPED,
        paths::HARDLINKS[0],
        paths::HARDLINKS[1],
        paths::SYMLINK_OUT,
        paths::SYMLINK_DANGLING,
        paths::CHAR_DEVICE,
        paths::BLOCK_DEVICE,
        paths::FIFO,
        paths::SOCKET,
        paths::STICKY,
        paths::TRUSTED_XATTR,
    ];
    let mut telling_paths: Vec<PathBuf> = telling.iter().map(PathBuf::from).collect();
    telling_paths.push(PathBuf::from(OsStr::from_bytes(paths::NON_UTF8)));
    Ok(SampleInfo {
        inodes: b.inodes,
        telling_paths,
    })
}

fn system_dirs(b: &mut Builder) -> Result<(), FileError> {
    for dir in [
        "bin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib/sudo",
        "usr/share",
        "usr/share/zoneinfo",
        "etc",
        "dev",
        "run",
        "var",
        "var/lib",
        "var/log",
        "var/backups",
        "home",
    ] {
        b.dir(dir.as_bytes(), 0o755, 0, 0)?;
    }
    b.dir(b"root", 0o700, 0, 0)?;
    b.file(b"root/.bashrc", b"PS1='# '\n", 0o644, 0, 0)?;
    // Sticky world-writable directories.
    b.dir(b"tmp", 0o1777, 0, 0)?;
    b.dir(b"var/tmp", 0o1777, 0, 0)
}

fn binaries(b: &mut Builder) -> Result<(), FileError> {
    b.file(b"bin/busybox", b"\x7fELF busybox\n", 0o755, 0, 0)?;
    b.symlink(b"bin/sh", b"busybox", 0, 0)?;
    b.file(b"bin/su", b"\x7fELF su\n", 0o4755, 0, 0)?;
    b.file(
        paths::SETUID_ROOT.as_bytes(),
        b"\x7fELF passwd\n",
        0o4755,
        0,
        0,
    )?;
    b.file(
        paths::SETUID_HARDLINKED.as_bytes(),
        b"\x7fELF sudo\n",
        0o4755,
        0,
        0,
    )?;
    b.hardlink(
        paths::SETUID_HARDLINKED.as_bytes(),
        paths::SETUID_LINK.as_bytes(),
    )?;
    b.file(paths::SETGID.as_bytes(), b"\x7fELF wall\n", 0o2755, 0, 5)?;
    b.file(b"usr/bin/crontab", b"\x7fELF crontab\n", 0o2755, 0, 102)?;
    b.file(
        paths::CAP_NET_RAW.as_bytes(),
        b"\x7fELF ping\n",
        0o755,
        0,
        0,
    )?;
    b.xattr(
        paths::CAP_NET_RAW.as_bytes(),
        CAPS,
        &caps_v2(1 << CAP_NET_RAW, true),
    )?;
    b.file(
        paths::CAP_NO_EFFECTIVE.as_bytes(),
        b"\x7fELF helper\n",
        0o750,
        33,
        33,
    )?;
    let bind = caps_v2(1 << CAP_NET_BIND_SERVICE, false);
    b.xattr(paths::CAP_NO_EFFECTIVE.as_bytes(), CAPS, &bind)?;
    // The same inode in two directories.
    b.file(b"bin/gzip", b"\x7fELF gzip\n", 0o755, 0, 0)?;
    b.hardlink(b"bin/gzip", b"usr/bin/gunzip")?;
    b.file(b"usr/lib/libc.so.6", b"\x7fELF libc\n", 0o755, 0, 0)?;
    b.symlink(b"usr/lib/libc.so", b"libc.so.6", 0, 0)
}

fn etc_and_links(b: &mut Builder) -> Result<(), FileError> {
    b.file(
        b"etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
        0,
        0,
    )?;
    b.file(b"etc/group", b"root:x:0:\n", 0o644, 0, 0)?;
    b.file(b"etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640, 0, 42)?;
    b.file(paths::ROOT_FILE.as_bytes(), b"sample\n", 0o644, 0, 0)?;
    b.file(b"usr/share/zoneinfo/UTC", b"TZif2\n", 0o644, 0, 0)?;
    // Absolute targets resolve against the host when seen from the host.
    b.symlink(b"etc/localtime", b"/usr/share/zoneinfo/UTC", 0, 0)?;
    b.symlink(paths::SYMLINK_OUT.as_bytes(), b"/etc/passwd", 0, 0)?;
    b.symlink(b"etc/mtab", b"/proc/self/mounts", 0, 0)?;
    b.symlink(
        paths::SYMLINK_DANGLING.as_bytes(),
        b"../nonexistent/target",
        100,
        101,
    )
}

fn devices(b: &mut Builder) -> Result<(), FileError> {
    b.node(
        paths::CHAR_DEVICE.as_bytes(),
        FileType::CharacterDevice,
        (1, 3),
        0o666,
        0,
        0,
    )?;
    b.node(b"dev/zero", FileType::CharacterDevice, (1, 5), 0o666, 0, 0)?;
    b.node(
        paths::BLOCK_DEVICE.as_bytes(),
        FileType::BlockDevice,
        (8, 0),
        0o660,
        0,
        6,
    )?;
    b.node(paths::FIFO.as_bytes(), FileType::Fifo, (0, 0), 0o600, 0, 0)?;
    b.socket(paths::SOCKET.as_bytes(), 0o660, 33, 33)
}

fn var_tree(b: &mut Builder) -> Result<(), FileError> {
    b.dir(b"var/www", 0o755, 33, 33)?;
    b.file(b"var/www/index.html", b"<h1>hi</h1>\n", 0o644, 33, 33)?;
    // A setgid directory whose default ACL is inherited by new files.
    b.dir(b"var/www/uploads", 0o2775, 33, 33)?;
    let rwx = 7;
    let access = [
        (ACL_USER_OBJ, rwx, 0),
        (ACL_USER, rwx, 1000),
        (ACL_GROUP_OBJ, rwx, 0),
        (ACL_GROUP, 5, 100),
        (ACL_MASK, rwx, 0),
        (ACL_OTHER, 5, 0),
    ];
    b.xattr(b"var/www/uploads", ACL_ACCESS, &acl_xattr(&access))?;
    b.xattr(b"var/www/uploads", ACL_DEFAULT, &acl_xattr(&access))?;
    b.file(b"var/log/syslog", b"boot\n", 0o640, 104, 4)?;
    b.dir(b"var/mail", 0o2775, 0, 8)?;
    b.file(b"var/lib/nobody-file", b"", 0o644, 65534, 65534)?;
    b.file(
        paths::HOST_RANGE.as_bytes(),
        b"host\n",
        0o644,
        1_000_033,
        1_000_033,
    )?;
    b.file(
        paths::UNMAPPED.as_bytes(),
        b"stray\n",
        0o644,
        70_000,
        70_000,
    )?;
    b.file(b"var/lib/mixed", b"", 0o640, 100, 70_000)?;
    b.file(paths::TRUSTED_XATTR.as_bytes(), b"", 0o644, 0, 0)?;
    b.xattr(
        paths::TRUSTED_XATTR.as_bytes(),
        c"trusted.overlay.opaque",
        b"y",
    )?;
    b.xattr(
        paths::TRUSTED_XATTR.as_bytes(),
        c"trusted.sample",
        &[0, 1, 2, 0xff, 0],
    )
}

fn homes(b: &mut Builder) -> Result<(), FileError> {
    b.dir(b"home/alice", 0o750, 1000, 1000)?;
    b.dir(b"home/bob", 0o750, 1001, 1001)?;
    b.file(paths::USER_XATTR.as_bytes(), b"milk\n", 0o600, 1000, 1000)?;
    b.xattr(paths::USER_XATTR.as_bytes(), c"user.comment", b"groceries")?;
    b.xattr(
        paths::USER_XATTR.as_bytes(),
        c"user.binary",
        &[0xde, 0xad, 0, 0xbe, 0xef],
    )?;
    b.file(paths::NON_UTF8, b"latin-1 name\n", 0o644, 1000, 1000)?;
    b.dir(b"home/alice/\xff\xfe-dir", 0o755, 1000, 1000)?;
    b.file(b"home/alice/\xff\xfe-dir/inner\x80", b"", 0o644, 1000, 1000)?;
    let [first, second, third] = paths::HARDLINKS;
    b.file(first.as_bytes(), b"JFIF\n", 0o644, 1000, 1000)?;
    b.hardlink(first.as_bytes(), second.as_bytes())?;
    b.hardlink(first.as_bytes(), third.as_bytes())?;
    shared_acl_dir(b)
}

fn shared_acl_dir(b: &mut Builder) -> Result<(), FileError> {
    let dir = paths::ACL_DIR.as_bytes();
    b.dir(dir, 0o2770, 1000, 100)?;
    let (rwx, rx, rw, r) = (7, 5, 6, 4);
    let access = [
        (ACL_USER_OBJ, rwx, 0),
        (ACL_USER, rx, 33),
        (ACL_USER, rwx, 1001),
        (ACL_GROUP_OBJ, rwx, 0),
        (ACL_GROUP, rx, 33),
        (ACL_GROUP, rwx, 100),
        (ACL_MASK, rwx, 0),
        (ACL_OTHER, 0, 0),
    ];
    let default = [
        (ACL_USER_OBJ, rwx, 0),
        (ACL_USER, rx, 33),
        (ACL_USER, rwx, 1001),
        (ACL_GROUP_OBJ, rx, 0),
        (ACL_GROUP, rwx, 1000),
        (ACL_MASK, rwx, 0),
        (ACL_OTHER, 0, 0),
    ];
    b.xattr(dir, ACL_ACCESS, &acl_xattr(&access))?;
    b.xattr(dir, ACL_DEFAULT, &acl_xattr(&default))?;
    b.file(b"home/alice/shared/report.txt", b"q3\n", 0o660, 1000, 100)?;
    let report = [
        (ACL_USER_OBJ, rw, 0),
        (ACL_USER, rw, 1001),
        (ACL_GROUP_OBJ, rw, 0),
        (ACL_GROUP, r, 33),
        (ACL_MASK, rw, 0),
        (ACL_OTHER, 0, 0),
    ];
    b.xattr(
        b"home/alice/shared/report.txt",
        ACL_ACCESS,
        &acl_xattr(&report),
    )?;
    b.file(paths::ACL_UNMAPPED.as_bytes(), b"", 0o640, 1000, 100)?;
    let odd = [
        (ACL_USER_OBJ, rw, 0),
        (ACL_USER, r, 70_000),
        (ACL_GROUP_OBJ, r, 0),
        (ACL_MASK, r, 0),
        (ACL_OTHER, 0, 0),
    ];
    b.xattr(paths::ACL_UNMAPPED.as_bytes(), ACL_ACCESS, &acl_xattr(&odd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        let root = crate::is_root();
        if !root {
            crate::skip_test("sample tests need root");
        }
        root
    }

    #[test]
    fn caps_and_acl_layouts() {
        let caps = caps_v2(1 << CAP_NET_RAW, true);
        assert_eq!(caps.len(), 20);
        assert_eq!(&caps[0..4], &0x0200_0001u32.to_le_bytes());
        assert_eq!(&caps[4..8], &(1u32 << 13).to_le_bytes());
        let acl = acl_xattr(&[(ACL_USER_OBJ, 7, 0), (ACL_USER, 5, 33), (ACL_OTHER, 0, 0)]);
        assert_eq!(acl.len(), 4 + 3 * 8);
        assert_eq!(&acl[4 + 4..4 + 8], &u32::MAX.to_le_bytes());
        assert_eq!(&acl[12 + 4..12 + 8], &33u32.to_le_bytes());
    }

    #[test]
    fn sample_rootfs_has_the_telling_cases() {
        use std::os::unix::fs::MetadataExt;
        if !is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let info = build_sample_rootfs(tmp.path()).unwrap();
        assert!(info.inodes > 50, "{}", info.inodes);
        for rel in &info.telling_paths {
            assert!(
                fs::symlink_metadata(tmp.path().join(rel)).is_ok(),
                "{rel:?}"
            );
        }
        let meta = |rel: &str| fs::symlink_metadata(tmp.path().join(rel)).unwrap();
        assert_eq!(meta(paths::SETUID_ROOT).mode() & 0o7777, 0o4755);
        assert_eq!(meta(paths::SETGID).mode() & 0o7777, 0o2755);
        assert_eq!(meta(paths::STICKY).mode() & 0o7777, 0o1777);
        assert_eq!(meta(paths::HOST_RANGE).uid(), 1_000_033);
        assert_eq!(meta(paths::HARDLINKS[2]).nlink(), 3);
        let caps = rfs::lgetxattr(
            tmp.path().join(paths::CAP_NET_RAW),
            CAPS,
            &mut [0u8; 64][..],
        );
        assert_eq!(caps.unwrap(), 20);
        assert!(
            build_sample_rootfs(tmp.path()).is_err(),
            "a non-empty root is refused"
        );
    }

    #[test]
    fn bulk_tree_is_deterministic_and_sized() {
        if !is_root() {
            return;
        }
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let made = build_bulk_tree(a.path(), 3000).unwrap();
        assert_eq!(made, 3000);
        assert_eq!(build_bulk_tree(b.path(), 3000).unwrap(), made);
        let (ma, mb) = (
            crate::manifest::collect(a.path()).unwrap(),
            crate::manifest::collect(b.path()).unwrap(),
        );
        assert_eq!(ma.diff(&mb, 5), Vec::<String>::new());
        let setuid = ma.entries.values().filter(|e| e.mode & 0o4000 != 0).count();
        let linked = ma
            .entries
            .values()
            .filter(|e| e.same_inode_as.is_some())
            .count();
        let acls = ma
            .entries
            .values()
            .filter(|e| e.xattrs.contains_key(ACL_ACCESS.to_bytes()))
            .count();
        assert!(
            setuid >= 1 && linked >= 2 && acls >= 1,
            "{setuid} {linked} {acls}"
        );
    }
}
