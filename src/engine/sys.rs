//! Every system call the engine makes, behind a small safe API. All `unsafe` of the
//! project lives here: the `*xattrat` syscalls (Linux 6.13+) and `fchmodat2` (6.6+),
//! which libc and rustix do not wrap, each with a fallback for older kernels.

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use std::ffi::{CStr, CString};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

pub use rustix::fs::FileType;

/// What the engine needs to know about one inode, from one `statx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub dev: u64,
    pub mnt_id: u64,
    pub mount_root: bool,
    /// Full st_mode: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Birth time, when the file system records one: with the inode number it
    /// identifies an inode across runs (inode numbers get reused, birth times do not).
    pub btime: Option<(i64, u32)>,
    pub ctime: (i64, u32),
}

impl Stat {
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }

    /// The permission bits chmod can set (setuid, setgid, sticky, rwx).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

fn err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// `statx` of `name` in `dir`, never following a symlink. `name` "." is the dir itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    let wanted = StatxFlags::BASIC_STATS | StatxFlags::BTIME | StatxFlags::MNT_ID;
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC;
    let st = rustix::fs::statx(dir, name, flags, wanted).map_err(err)?;
    let btime = (st.stx_mask & StatxFlags::BTIME.bits() != 0)
        .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec));
    Ok(Stat {
        ino: st.stx_ino,
        dev: (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor),
        mnt_id: st.stx_mnt_id,
        mount_root: st
            .stx_attributes
            .contains(rustix::fs::StatxAttributes::MOUNT_ROOT),
        mode: u32::from(st.stx_mode),
        uid: st.stx_uid,
        gid: st.stx_gid,
        nlink: st.stx_nlink,
        btime,
        ctime: (st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec),
    })
}

/// Opens a directory given by the user (it may be reached through symlinks).
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::empty()).map_err(err)
}

/// Opens subdirectory `name` of `dir`; fails with ELOOP/ENOTDIR rather than follow a symlink.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(err)
}

/// `fchownat(AT_SYMLINK_NOFOLLOW)`.
pub fn chown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // The callers never pass u32::MAX ("no change"): maps are validated against it.
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    );
    rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).map_err(err)
}

static NO_FCHMODAT2: AtomicBool = AtomicBool::new(false);

/// Sets the permission bits of a non-symlink, without following a symlink where the
/// kernel allows it (fchmodat2, Linux 6.6+).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, perm: u32) -> io::Result<()> {
    if !NO_FCHMODAT2.load(Ordering::Relaxed) {
        // SAFETY: name is a valid NUL-terminated string; the fd is borrowed for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fchmodat2,
                dir.as_raw_fd(),
                name.as_ptr(),
                perm as libc::c_uint,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if ret == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
        NO_FCHMODAT2.store(true, Ordering::Relaxed);
    }
    let mode = Mode::from_raw_mode(perm);
    rustix::fs::chmodat(dir, name, mode, AtFlags::empty()).map_err(err)
}

/// `struct xattr_args` of the *xattrat syscalls.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

static NO_XATTRAT: AtomicBool = AtomicBool::new(false);

/// Result of a raw syscall: Ok(n), or None when the kernel lacks it (use the fallback).
fn syscall_result(ret: libc::c_long) -> Option<io::Result<usize>> {
    if ret >= 0 {
        return Some(Ok(ret as usize));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        NO_XATTRAT.store(true, Ordering::Relaxed);
        return None;
    }
    Some(Err(e))
}

/// Path of `name` in `dir` through /proc, for the l*xattr fallbacks: the last
/// component is still never followed.
fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
    let mut bytes = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    bytes.extend_from_slice(name.to_bytes());
    CString::new(bytes).expect("a C string has no interior NUL")
}

/// Names of the xattrs of `name` in `dir`, NUL-separated, into `buf`.
pub fn list_xattrs_at(dir: BorrowedFd<'_>, name: &CStr, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        buf.resize(buf.capacity().max(256), 0);
        match list_xattrs_once(dir, name, buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => buf.reserve(buf.len() * 4),
            Err(e) => return Err(e),
        }
    }
}

fn list_xattrs_once(dir: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    if !NO_XATTRAT.load(Ordering::Relaxed) {
        // SAFETY: buf is writable for buf.len() bytes; name is NUL-terminated.
        let ret = unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if let Some(result) = syscall_result(ret) {
            return result;
        }
    }
    rustix::fs::llistxattr(proc_path(dir, name).as_c_str(), buf).map_err(err)
}

/// Value of xattr `attr` of `name` in `dir`; None when it does not exist.
pub fn get_xattr_at(dir: BorrowedFd<'_>, name: &CStr, attr: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match get_xattr_once(dir, name, attr, &mut buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e),
        }
    }
}

fn get_xattr_once(
    dir: BorrowedFd<'_>,
    name: &CStr,
    attr: &CStr,
    buf: &mut [u8],
) -> io::Result<usize> {
    let value = buf.as_mut_ptr() as u64;
    if let Some(result) = xattrat(SYS_GETXATTRAT, dir, name, attr, value, buf.len()) {
        return result;
    }
    rustix::fs::lgetxattr(proc_path(dir, name).as_c_str(), attr, buf).map_err(err)
}

/// Sets xattr `attr` of `name` in `dir` to `value` (creating or replacing it).
pub fn set_xattr_at(dir: BorrowedFd<'_>, name: &CStr, attr: &CStr, value: &[u8]) -> io::Result<()> {
    let pointer = value.as_ptr() as u64;
    if let Some(result) = xattrat(SYS_SETXATTRAT, dir, name, attr, pointer, value.len()) {
        return result.map(drop);
    }
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::lsetxattr(proc_path(dir, name).as_c_str(), attr, value, flags).map_err(err)
}

/// getxattrat/setxattrat on a value buffer at `value` of `size` bytes; None when the
/// kernel lacks them (use the fallback).
fn xattrat(
    nr: libc::c_long,
    dir: BorrowedFd<'_>,
    name: &CStr,
    attr: &CStr,
    value: u64,
    size: usize,
) -> Option<io::Result<usize>> {
    if NO_XATTRAT.load(Ordering::Relaxed) {
        return None;
    }
    let mut args = XattrArgs {
        value,
        size: u32::try_from(size).unwrap_or(u32::MAX),
        flags: 0,
    };
    // SAFETY: the callers pass a buffer valid for `size` bytes (writable for get);
    // strings are NUL-terminated; the fd is borrowed for the call.
    let ret = unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            attr.as_ptr(),
            &mut args as *mut XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    syscall_result(ret)
}

/// Removes xattr `attr` of `name` in `dir`; absent already is fine.
pub fn remove_xattr_at(dir: BorrowedFd<'_>, name: &CStr, attr: &CStr) -> io::Result<()> {
    let removed = match NO_XATTRAT.load(Ordering::Relaxed) {
        true => None,
        // SAFETY: strings are NUL-terminated; the fd is borrowed for the call.
        false => syscall_result(unsafe {
            libc::syscall(
                SYS_REMOVEXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                attr.as_ptr(),
            )
        }),
    };
    let result = match removed {
        Some(result) => result.map(drop),
        None => rustix::fs::lremovexattr(proc_path(dir, name).as_c_str(), attr).map_err(err),
    };
    match result {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        other => other,
    }
}

/// One directory entry as read by getdents64. Its type is not kept: every entry is
/// stat'ed anyway (its owner is needed), and d_type may be DT_UNKNOWN.
pub struct DirEntry {
    pub name: CString,
}

/// Reads a directory in bounded batches with a large getdents64 buffer.
pub struct DirReader {
    buf: Vec<std::mem::MaybeUninit<u8>>,
}

impl DirReader {
    pub fn new(buffer_bytes: usize) -> DirReader {
        DirReader {
            buf: vec![std::mem::MaybeUninit::uninit(); buffer_bytes],
        }
    }

    /// Calls `batch` with up to `batch_len` entries at a time (never "." or "..").
    pub fn for_each_batch(
        &mut self,
        dir: BorrowedFd<'_>,
        batch_len: usize,
        mut batch: impl FnMut(Vec<DirEntry>),
    ) -> io::Result<()> {
        // getdents64 continues from the fd's offset: rewind in case it was read before.
        rustix::fs::seek(dir, rustix::fs::SeekFrom::Start(0)).map_err(err)?;
        let mut raw = rustix::fs::RawDir::new(dir.as_fd(), &mut self.buf);
        let mut pending = Vec::with_capacity(batch_len);
        while let Some(entry) = raw.next() {
            let entry = entry.map_err(err)?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            pending.push(DirEntry {
                name: name.to_owned(),
            });
            if pending.len() == batch_len {
                batch(std::mem::replace(
                    &mut pending,
                    Vec::with_capacity(batch_len),
                ));
            }
        }
        if !pending.is_empty() {
            batch(pending);
        }
        Ok(())
    }
}

/// Commits every change made on the file system holding `dir` (syncfs).
pub fn sync_file_system(dir: &std::path::Path) -> io::Result<()> {
    let fd = open_dir_path(dir)?;
    rustix::fs::syncfs(&fd).map_err(err)
}

/// Raises the soft open-file limit to the hard limit; returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current != Some(hard) {
            limit.current = Some(hard);
            let _ = setrlimit(Resource::Nofile, limit);
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1 << 20)
}

/// Takes an exclusive lock on an open file without waiting; false when another holds it.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(err(e)),
    }
}

/// Whether the process runs with an effective uid of 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways to reach xattrs, the *xattrat syscalls and the /proc/self/fd
    /// fallback for kernels before 6.13, read and write the same values.
    #[test]
    fn xattr_calls_agree_with_and_without_xattrat() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let fd = open_dir_path(dir.path()).unwrap();
        let (name, attr) = (c"f", c"user.test");
        for fallback in [false, true] {
            NO_XATTRAT.store(fallback, Ordering::Relaxed);
            let value = format!("value-{fallback}");
            set_xattr_at(fd.as_fd(), name, attr, value.as_bytes()).unwrap();
            assert_eq!(
                get_xattr_at(fd.as_fd(), name, attr).unwrap(),
                Some(value.into_bytes())
            );
            let mut list = Vec::new();
            list_xattrs_at(fd.as_fd(), name, &mut list).unwrap();
            assert!(
                list.split(|b| *b == 0).any(|n| n == b"user.test"),
                "{fallback}"
            );
            remove_xattr_at(fd.as_fd(), name, attr).unwrap();
            assert_eq!(get_xattr_at(fd.as_fd(), name, attr).unwrap(), None);
            remove_xattr_at(fd.as_fd(), name, attr).unwrap();
        }
        NO_XATTRAT.store(false, Ordering::Relaxed);
    }

    #[test]
    fn chmod_and_chown_at_do_not_follow_symlinks() {
        if !is_root() {
            eprintln!("SKIPPED: chmod_and_chown_at_do_not_follow_symlinks needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), b"").unwrap();
        std::os::unix::fs::symlink("target", dir.path().join("link")).unwrap();
        let fd = open_dir_path(dir.path()).unwrap();
        chown_at(fd.as_fd(), c"link", 1234, 5678).unwrap();
        let target = stat_at(fd.as_fd(), c"target").unwrap();
        assert_eq!(
            (target.uid, target.gid),
            (0, 0),
            "the target was not touched"
        );
        let link = stat_at(fd.as_fd(), c"link").unwrap();
        assert_eq!((link.uid, link.gid), (1234, 5678));
        assert!(
            chmod_at(fd.as_fd(), c"link", 0o600).is_err(),
            "no chmod through a symlink"
        );
        assert!(
            open_subdir(fd.as_fd(), c"link").is_err(),
            "no descent through a symlink"
        );
    }
}
