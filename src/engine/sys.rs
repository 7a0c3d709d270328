//! Every system call the engine makes, behind a small safe API. All `unsafe` of the
//! project lives here.
//!
//! Every per-inode operation goes through an [`Inode`]: an `O_PATH|O_NOFOLLOW` handle
//! opened once per directory entry, stat'ed through itself. What is changed is
//! therefore always the inode that was stat'ed, even when the tree is renamed under
//! the walk, and never anything a symlink points to. Kernel paths (see
//! [`kernel_paths`]): `fchmodat2` (Linux 6.6+) or chmod through `/proc/self/fd/N`;
//! `listxattrat` (6.13+) for the cheap by-name xattr hint, before it `llistxattr` by
//! name from a walker thread's own working directory, otherwise the handle alone.

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use serde::Serialize;
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

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
    /// The device a device node stands for (0 for other types).
    pub rdev: u64,
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

    /// The inode's identity: its device and inode number.
    pub fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// Whether `other` is the same inode (maybe seen through another mount).
    pub fn same_inode(&self, other: &Stat) -> bool {
        self.id() == other.id()
    }
}

fn err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn statx_flags() -> (AtFlags, StatxFlags) {
    let wanted = StatxFlags::BASIC_STATS | StatxFlags::BTIME | StatxFlags::MNT_ID;
    (AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC, wanted)
}

fn to_stat(st: &rustix::fs::Statx) -> Stat {
    let btime = (st.stx_mask & StatxFlags::BTIME.bits() != 0)
        .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec));
    Stat {
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
        rdev: (u64::from(st.stx_rdev_major) << 32) | u64::from(st.stx_rdev_minor),
    }
}

/// `statx` of `name` in `dir`, never following a symlink. `name` "." is the dir itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    let (flags, wanted) = statx_flags();
    rustix::fs::statx(dir, name, flags, wanted)
        .map(|st| to_stat(&st))
        .map_err(err)
}

/// `statx` of the inode an fd refers to (any fd, O_PATH included).
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let (flags, wanted) = statx_flags();
    rustix::fs::statx(fd, c"", flags | AtFlags::EMPTY_PATH, wanted)
        .map(|st| to_stat(&st))
        .map_err(err)
}

/// Opens a directory for reading without touching its atime where allowed (root,
/// or the owner; a dry run as another user falls back to a plain open).
fn open_dir_flags(dir: BorrowedFd<'_>, name: &CStr, extra: OFlags) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | extra;
    match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(err),
        other => other.map_err(err),
    }
}

/// Opens a directory given by the user (it may be reached through symlinks).
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    open_dir_flags(rustix::fs::CWD, &path, OFlags::empty())
}

/// Opens subdirectory `name` of `dir`; fails with ELOOP/ENOTDIR rather than follow a symlink.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    open_dir_flags(dir, name, OFlags::NOFOLLOW)
}

/// Which kernel interfaces this process uses (probed once; see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelPaths {
    /// chmod through the handle with `fchmodat2` (else through /proc/self/fd).
    pub fchmodat2: bool,
    /// the by-name xattr hint with `listxattrat` (else with `llistxattr` from inside
    /// the name's directory, on walker threads with their own working directory).
    pub xattrat: bool,
}

const UNKNOWN: u8 = 0;
const PRESENT: u8 = 1;
const ABSENT: u8 = 2;
static FCHMODAT2: AtomicU8 = AtomicU8::new(UNKNOWN);
static XATTRAT: AtomicU8 = AtomicU8::new(UNKNOWN);

const SYS_FCHMODAT2: libc::c_long = 452;
const SYS_LISTXATTRAT: libc::c_long = 465;

/// Whether syscall `nr` exists: called with an invalid fd it fails with EBADF,
/// or ENOSYS on a kernel (or under a seccomp filter) without it.
fn probe(state: &AtomicU8, nr: libc::c_long) -> bool {
    match state.load(Ordering::Relaxed) {
        PRESENT => return true,
        ABSENT => return false,
        _ => {}
    }
    // SAFETY: an invalid fd and a NULL path/buffer: the kernel only validates them.
    let ret = unsafe { libc::syscall(nr, -1, std::ptr::null::<u8>(), 0, 0, 0, 0) };
    let present = !(ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS));
    state.store(if present { PRESENT } else { ABSENT }, Ordering::Relaxed);
    present
}

pub fn kernel_paths() -> KernelPaths {
    KernelPaths {
        fchmodat2: probe(&FCHMODAT2, SYS_FCHMODAT2),
        xattrat: probe(&XATTRAT, SYS_LISTXATTRAT),
    }
}

thread_local! {
    /// This walker thread has a working directory of its own (`unshare(CLONE_FS)`).
    static OWN_WORKING_DIR: Cell<bool> = const { Cell::new(false) };
    /// The directory (dev, ino) this walker thread works in now, if any.
    static WORKING_DIR: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Gives the calling walker thread a working directory of its own where the kernel
/// has no `listxattrat` (before 6.13): there, a name's xattrs can only be listed by
/// a path, and one relative to the thread's working directory costs a lookup of the
/// name alone, where `/proc/self/fd/N` costs a walk through procfs. Never called on
/// the main thread: its working directory is the user's.
pub fn own_working_directory() {
    if !probe(&XATTRAT, SYS_LISTXATTRAT) {
        detach_working_directory();
    }
}

fn detach_working_directory() {
    // SAFETY: unshare(CLONE_FS) only detaches this thread's cwd, root and umask.
    let unshared = unsafe { libc::unshare(libc::CLONE_FS) } == 0;
    OWN_WORKING_DIR.with(|own| own.set(unshared));
}

/// Moves a walker thread out of the tree (to "/"), so that an idle worker does not
/// keep the tree's file system busy: an unmount right after a run must not fail.
pub fn leave_working_directory() {
    if WORKING_DIR.with(|dir| dir.take()).is_some() {
        let _ = rustix::process::chdir(c"/");
    }
}

/// The names of the xattrs of `name` in `dir` (`dir_id` its dev and inode number),
/// NUL-separated, into `buf`, by name, never following a symlink: `listxattrat`, or
/// before it `llistxattr` relative to a walker thread's own working directory. Only
/// a hint of what the inode holds: the name may lead to another inode by the time
/// it is opened (`inode::Listing` says when the hint is trusted). None where
/// neither call is available (the caller lists through the handle).
pub fn list_xattrs_hint(
    dir: BorrowedFd<'_>,
    dir_id: (u64, u64),
    name: &CStr,
    buf: &mut Vec<u8>,
) -> Option<io::Result<()>> {
    if !probe(&XATTRAT, SYS_LISTXATTRAT) {
        return list_xattrs_in_working_dir(dir, dir_id, name, buf);
    }
    Some(fill_list(buf, |buf| {
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
        match ret {
            n if n >= 0 => Ok(n as usize),
            _ => Err(io::Error::last_os_error()),
        }
    }))
}

/// `llistxattr(name)` from inside `dir`, on a walker thread with its own working
/// directory: it moves there first unless it already is (the identity is the
/// directory's dev and inode number, checked when the walker opened it).
fn list_xattrs_in_working_dir(
    dir: BorrowedFd<'_>,
    id: (u64, u64),
    name: &CStr,
    buf: &mut Vec<u8>,
) -> Option<io::Result<()>> {
    if !OWN_WORKING_DIR.with(Cell::get) {
        return None;
    }
    if WORKING_DIR.with(Cell::get) != Some(id) {
        WORKING_DIR.with(|dir| dir.set(None));
        rustix::process::fchdir(dir).ok()?;
        WORKING_DIR.with(|dir| dir.set(Some(id)));
    }
    Some(fill_list(buf, |buf| {
        rustix::fs::llistxattr(name, buf).map_err(err)
    }))
}

/// For tests and benchmarks: from now on, this thread and every process it starts
/// get ENOSYS from `fchmodat2` (Linux 6.6) and the `*xattrat` calls (6.13), as on
/// the kernels LXC hosts run (Debian 12's 6.1, Ubuntu 22.04's 5.15, RHEL 9's
/// 5.14), so that the fallbacks do the work. A seccomp filter (no privilege needed);
/// only prctl on a static program, so it may run between fork and exec.
#[cfg(feature = "testkit")]
pub fn emulate_old_kernel() -> io::Result<()> {
    old_kernel::install(&old_kernel::NEW_SYSCALLS)
}

/// For tests: [`emulate_old_kernel`], and `unshare` fails with EPERM too (as under
/// a confining seccomp profile), so that no walker thread gets a working directory
/// of its own and every listing goes through the handle.
#[cfg(feature = "testkit")]
pub fn emulate_old_kernel_refusing_unshare() -> io::Result<()> {
    // Stacked filters all run; the kernel keeps the strictest answer.
    emulate_old_kernel()?;
    old_kernel::install(&old_kernel::UNSHARE)
}

#[cfg(feature = "testkit")]
mod old_kernel {
    #[repr(C)]
    pub struct SockFilter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }

    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }

    const fn op(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }
    const LOAD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15;
    const JGE: u16 = 0x35;
    const JGT: u16 = 0x25;
    const RET: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const ALLOW: u32 = 0x7fff_0000;
    const ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;
    const EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    /// fchmodat2 (452) and setxattrat..removexattrat (463-466) answer ENOSYS.
    pub static NEW_SYSCALLS: [SockFilter; 8] = [
        op(LOAD, 0, 0, 4),
        op(JEQ, 0, 4, AUDIT_ARCH_X86_64),
        op(LOAD, 0, 0, 0),
        op(JEQ, 3, 0, 452),
        op(JGE, 0, 1, 463),
        op(JGT, 0, 1, 466),
        op(RET, 0, 0, ALLOW),
        op(RET, 0, 0, ENOSYS),
    ];

    /// unshare (272) answers EPERM.
    pub static UNSHARE: [SockFilter; 6] = [
        op(LOAD, 0, 0, 4),
        op(JEQ, 0, 2, AUDIT_ARCH_X86_64),
        op(LOAD, 0, 0, 0),
        op(JEQ, 1, 0, 272),
        op(RET, 0, 0, ALLOW),
        op(RET, 0, 0, EPERM),
    ];

    pub fn install(filter: &'static [SockFilter]) -> std::io::Result<()> {
        let program = SockFprog {
            len: filter.len() as u16,
            filter: filter.as_ptr(),
        };
        // SAFETY: the program points at a static filter; prctl copies it.
        let failed = unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, 2, &program as *const SockFprog) != 0
        };
        match failed {
            true => Err(std::io::Error::last_os_error()),
            false => Ok(()),
        }
    }
}

/// Runs a listxattr-like call into `buf`, growing it on ERANGE.
fn fill_list(
    buf: &mut Vec<u8>,
    mut call: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<()> {
    loop {
        buf.resize(buf.capacity().max(256), 0);
        match call(buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => buf.reserve(buf.len() * 4),
            Err(e) => return Err(e),
        }
    }
}

/// One inode of the tree, held by an `O_PATH|O_NOFOLLOW` fd: no device is opened, no
/// symlink followed, and every change reaches exactly the inode `stat` describes.
/// Walks that only read may do without the handle: such an inode is read by name,
/// and can be changed by nothing.
pub struct Inode {
    access: Access,
    pub stat: Stat,
    /// The names of its xattrs, NUL-separated, when they were listed by name and
    /// are provably this inode's (`inode::open_entry`); None: list through `access`.
    pub listed_xattrs: Option<Vec<u8>>,
}

enum Access {
    Handle(OwnedFd),
    /// Entry `name` of the directory fd `dir` (whose identity is `dir_id`), read by
    /// name: for walks that only read, which keep `dir` open while they visit it.
    ReadByName {
        dir: RawFd,
        dir_id: (u64, u64),
        name: CString,
    },
}

impl Inode {
    /// Opens entry `name` of `dir` ("." for `dir` itself) and stats it.
    pub fn open_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Inode> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(err)?;
        let stat = stat_fd(fd.as_fd())?;
        Ok(Inode {
            access: Access::Handle(fd),
            stat,
            listed_xattrs: None,
        })
    }

    /// Stats entry `name` of `dir` (`dir_stat` its stat) without opening it: one
    /// statx, as a plain stat walk does. Its xattrs are then read by name (only
    /// valid while `dir` is open), and nothing can change it.
    pub fn stat_at(dir: BorrowedFd<'_>, dir_stat: &Stat, name: &CStr) -> io::Result<Inode> {
        let stat = stat_at(dir, name)?;
        Ok(Inode {
            access: Access::ReadByName {
                dir: dir.as_raw_fd(),
                dir_id: dir_stat.id(),
                name: name.to_owned(),
            },
            stat,
            listed_xattrs: None,
        })
    }

    fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        match &self.access {
            Access::Handle(fd) => Ok(fd.as_fd()),
            Access::ReadByName { .. } => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// `/proc/self/fd/N`: following it reaches this very inode (a symlink itself,
    /// not its target), which is how the path-based calls act on an O_PATH fd.
    fn proc_path(&self) -> io::Result<CString> {
        self.fd().map(|fd| proc_fd_path(&fd))
    }

    /// The inode's current stat (through the handle).
    pub fn restat(&self) -> io::Result<Stat> {
        stat_fd(self.fd()?)
    }

    /// `fchownat(fd, "", AT_EMPTY_PATH)`: a symlink's own owner, never its target's.
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        // The callers never pass u32::MAX ("no change"): maps are validated against it.
        let (uid, gid) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        rustix::fs::chownat(self.fd()?, c"", Some(uid), Some(gid), AtFlags::EMPTY_PATH).map_err(err)
    }

    /// `fchownat(fd, "", -1, -1, AT_EMPTY_PATH)`: no id changes, but the ctime is
    /// stamped as by any change; like every chown of a non-directory it also clears
    /// setuid/setgid and removes the capability.
    pub fn stamp_ctime(&self) -> io::Result<()> {
        rustix::fs::chownat(self.fd()?, c"", None, None, AtFlags::EMPTY_PATH).map_err(err)
    }

    /// Sets the permission bits of this (non-symlink) inode.
    pub fn chmod(&self, perm: u32) -> io::Result<()> {
        if self.stat.is_symlink() {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        if probe(&FCHMODAT2, SYS_FCHMODAT2) {
            // SAFETY: "" is NUL-terminated; the fd is borrowed for the call.
            let ret = unsafe {
                libc::syscall(
                    SYS_FCHMODAT2,
                    self.fd()?.as_raw_fd(),
                    c"".as_ptr(),
                    perm as libc::c_uint,
                    libc::AT_EMPTY_PATH,
                )
            };
            if ret == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) {
                return Err(e);
            }
        }
        let mode = Mode::from_raw_mode(perm);
        rustix::fs::chmod(self.proc_path()?.as_c_str(), mode).map_err(err)
    }

    /// Names of this inode's xattrs, NUL-separated, into `buf`.
    pub fn list_xattrs(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        match &self.access {
            Access::Handle(fd) => {
                let path = proc_fd_path(fd);
                fill_list(buf, |buf| {
                    rustix::fs::listxattr(path.as_c_str(), buf).map_err(err)
                })
            }
            Access::ReadByName { dir, dir_id, name } => {
                // SAFETY: the walker keeps `dir` open while the entry is visited.
                let dir = unsafe { BorrowedFd::borrow_raw(*dir) };
                match list_xattrs_hint(dir, *dir_id, name, buf) {
                    Some(listed) => listed,
                    None => fill_list(buf, |buf| {
                        let path = read_by_name_path(dir.as_raw_fd(), name);
                        rustix::fs::llistxattr(path.as_c_str(), buf).map_err(err)
                    }),
                }
            }
        }
    }

    /// Value of xattr `attr`; None when it does not exist.
    pub fn get_xattr(&self, attr: &CStr) -> io::Result<Option<Vec<u8>>> {
        let get = |buf: &mut [u8]| match &self.access {
            Access::Handle(fd) => rustix::fs::getxattr(proc_fd_path(fd).as_c_str(), attr, buf),
            Access::ReadByName { dir, name, .. } => {
                rustix::fs::lgetxattr(read_by_name_path(*dir, name).as_c_str(), attr, buf)
            }
        };
        let mut buf = vec![0u8; 256];
        loop {
            match get(&mut buf[..]) {
                Ok(len) => {
                    buf.truncate(len);
                    return Ok(Some(buf));
                }
                Err(Errno::NODATA) => return Ok(None),
                Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// Sets xattr `attr` to `value` (creating or replacing it).
    pub fn set_xattr(&self, attr: &CStr, value: &[u8]) -> io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::setxattr(self.proc_path()?.as_c_str(), attr, value, flags).map_err(err)
    }

    /// Removes xattr `attr`; absent already is fine.
    pub fn remove_xattr(&self, attr: &CStr) -> io::Result<()> {
        match rustix::fs::removexattr(self.proc_path()?.as_c_str(), attr) {
            Err(Errno::NODATA) | Ok(()) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// A symlink's target, read through the handle (or by name), never followed.
    pub fn link_target(&self) -> io::Result<Vec<u8>> {
        let target = match &self.access {
            Access::Handle(fd) => rustix::fs::readlinkat(fd, c"", Vec::new()),
            Access::ReadByName { dir, name, .. } => {
                // SAFETY: a read-only walk keeps `dir` open while it visits the entry.
                let dir = unsafe { BorrowedFd::borrow_raw(*dir) };
                rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new())
            }
        };
        target.map(CString::into_bytes).map_err(err)
    }

    /// The inode's generation number (`FS_IOC_GETVERSION`): with the inode number it
    /// identifies the inode where the file system records no birth time. Only regular
    /// files and directories are opened for it (never a device or a FIFO); None
    /// where the type or the file system gives none.
    pub fn generation(&self) -> Option<u32> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let opened = match self.stat.file_type() {
            FileType::Directory => rustix::fs::openat(self.fd().ok()?, c".", flags, Mode::empty()),
            FileType::RegularFile => {
                rustix::fs::open(self.proc_path().ok()?.as_c_str(), flags, Mode::empty())
            }
            _ => return None,
        };
        let file = opened.ok()?;
        // The reopened file must still be this inode (the /proc link cannot change,
        // but a check costs one statx on a rare path).
        if !stat_fd(file.as_fd()).ok()?.same_inode(&self.stat) {
            return None;
        }
        const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
        let mut version: libc::c_long = 0;
        // SAFETY: the ioctl writes one long into `version`; the fd is open.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_GETVERSION, &mut version) };
        (ret == 0).then_some(version as u32)
    }
}

/// `/proc/self/fd/DIR/NAME`: reaches entry `name` of directory fd `dir` without
/// following it if it is a symlink (for the `l*xattr` calls).
fn read_by_name_path(dir: RawFd, name: &CStr) -> CString {
    let mut path = format!("/proc/self/fd/{dir}/").into_bytes();
    path.extend_from_slice(name.to_bytes());
    CString::new(path).expect("a file name holds no NUL")
}

/// `/proc/self/fd/N`: following it reaches the very inode fd N holds.
fn proc_fd_path(fd: &impl AsRawFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
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
pub fn sync_file_system(dir: BorrowedFd<'_>) -> io::Result<()> {
    rustix::fs::syncfs(dir).map_err(err)
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

/// Takes an exclusive flock on an open file or directory without waiting; false
/// when another open file description holds it.
pub fn try_lock_exclusive(fd: impl AsFd) -> io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(err(e)),
    }
}

/// A time that every inode change from now on gets as its ctime or later, and that
/// every change made before this call predates: the current time rounded up to the
/// file system's timestamp granularity (`whole_seconds` for file systems that keep
/// seconds only), waited out on the coarse clock the kernel stamps ctimes with.
pub fn ctime_boundary(whole_seconds: bool) -> (i64, u32) {
    let now = clock(libc::CLOCK_REALTIME);
    let boundary = match whole_seconds {
        true => (now.0 + 1, 0),
        false => now,
    };
    while clock(libc::CLOCK_REALTIME_COARSE) < boundary {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    boundary
}

/// The coarse real-time clock, which the kernel stamps ctimes with (or, on file
/// systems with fine-grained timestamps, with a time no earlier).
pub fn coarse_now() -> (i64, u32) {
    clock(libc::CLOCK_REALTIME_COARSE)
}

/// Whether the file system holding `fd` is one known to stamp an inode's ctime with
/// this machine's clock whenever a rename or link gives it a name or takes one away:
/// ext2-4, xfs, btrfs, f2fs and tmpfs. A network file system stamps with its
/// server's clock; ZFS and the others were not checked.
pub fn ctime_marks_renames(fd: BorrowedFd<'_>) -> bool {
    const MARKING: [u64; 5] = [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010, 0x0102_1994];
    // f_type is i64 on x86_64 but narrower (and signed) on other architectures.
    rustix::fs::fstatfs(fd).is_ok_and(|s| MARKING.contains(&(s.f_type as u64 & 0xffff_ffff)))
}

/// Whether the file system holding `fd` is known to write an inode's new owner and
/// its new ctime in one transaction, so that a crash keeps both or neither: xfs
/// (`xfs_setattr_nonsize`), btrfs (`btrfs_setattr`), and tmpfs (nothing survives).
/// ext4 is not (its setattr writes the owner with the quota transfer in one journal
/// handle and the ctime in a later one), nor is any file system not checked.
pub fn owner_and_ctime_land_together(fd: BorrowedFd<'_>) -> bool {
    const TOGETHER: [u64; 3] = [0x5846_5342, 0x9123_683E, 0x0102_1994];
    rustix::fs::fstatfs(fd).is_ok_and(|s| TOGETHER.contains(&(s.f_type as u64 & 0xffff_ffff)))
}

fn clock(id: libc::clockid_t) -> (i64, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; the clock ids exist since Linux 2.6.32.
    let ret = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(ret, 0, "clock_gettime of a clock every kernel has");
    (ts.tv_sec, ts.tv_nsec as u32)
}

/// Whether the process runs with an effective uid of 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether `source` can be mounted idmapped for a container whose ids 0..count are
/// host ids host_first..: an idmapped copy of its mount is made, detached, with a
/// scratch user namespace of that map (`open_tree(OPEN_TREE_CLONE)`, then
/// `mount_setattr(MOUNT_ATTR_IDMAP)`), and dropped. Nothing is attached, nothing
/// written. The error says why not: ENOSYS before Linux 5.12, EINVAL where the file
/// system cannot be idmapped, EPERM without root.
pub fn probe_idmapped_mount(
    source: &std::path::Path,
    host_first: u32,
    count: u32,
) -> io::Result<()> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let userns = scratch_user_namespace(host_first, count)?;
    let path = CString::new(source.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated path; the returned fd is owned below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: attr lives across the call and its size is passed with it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match ret {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A user namespace mapping ids 0..count to host_first.. (users and groups), held
/// by the returned fd: a child is cloned into a new user namespace, its maps are
/// written, its namespace opened, and the child let go.
fn scratch_user_namespace(host_first: u32, count: u32) -> io::Result<OwnedFd> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [read_end, write_end] = fds;
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a fork-like clone (no CLONE_VM); the child makes only async-signal-safe
    // calls (close, read, _exit) and never returns into Rust code.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        // SAFETY: see above; waits until the parent closes its end, then exits.
        unsafe {
            libc::close(write_end);
            let mut byte = 0u8;
            libc::read(read_end, (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    let child = (pid > 0).then_some(pid as libc::pid_t);
    let clone_failed = (pid < 0).then(io::Error::last_os_error);
    // SAFETY: the read end is ours and no longer needed by the parent.
    unsafe { libc::close(read_end) };
    let result = match (child, clone_failed) {
        (None, failed) => Err(failed.unwrap_or_else(|| io::Error::other("clone returned 0"))),
        (Some(pid), _) => (|| {
            let line = format!("0 {host_first} {count}\n");
            std::fs::write(format!("/proc/{pid}/uid_map"), &line)?;
            std::fs::write(format!("/proc/{pid}/gid_map"), &line)?;
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
            Ok(OwnedFd::from(ns))
        })(),
    };
    // SAFETY: closing our write end lets the child exit; then it is reaped.
    unsafe {
        libc::close(write_end);
        if let Some(pid) = child {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(dir: &OwnedFd, name: &CStr) -> Inode {
        Inode::open_at(dir.as_fd(), name).unwrap()
    }

    /// Through the handle, xattrs are those of the inode itself, a symlink's own
    /// included; the by-name hint sees the same names.
    #[test]
    fn xattrs_through_the_handle_are_the_inodes_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let fd = open_dir_path(dir.path()).unwrap();
        let file = inode(&fd, c"f");
        let attr = c"user.test";
        file.set_xattr(attr, b"value").unwrap();
        assert_eq!(file.get_xattr(attr).unwrap(), Some(b"value".to_vec()));
        let mut list = Vec::new();
        file.list_xattrs(&mut list).unwrap();
        assert!(list.split(|b| *b == 0).any(|n| n == b"user.test"));
        let dir_stat = stat_fd(fd.as_fd()).unwrap();
        if let Some(hint) = list_xattrs_hint(fd.as_fd(), dir_stat.id(), c"f", &mut list) {
            hint.unwrap();
            assert!(list.split(|b| *b == 0).any(|n| n == b"user.test"));
        }
        file.remove_xattr(attr).unwrap();
        assert_eq!(file.get_xattr(attr).unwrap(), None);
        file.remove_xattr(attr).unwrap();
    }

    /// The fallback before `listxattrat`: a walker thread lists a name's xattrs from
    /// inside the name's directory, follows the directories it is given, never moves
    /// the process's (the user's) working directory, and leaves for "/" when asked.
    #[test]
    fn a_walker_thread_lists_in_its_own_working_directory_and_leaves_it() {
        let user_cwd = std::env::current_dir().unwrap();
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        for (i, dir) in dirs.iter().enumerate() {
            std::fs::write(dir.path().join("f"), b"").unwrap();
            if i == 0 {
                inode(&open_dir_path(dir.path()).unwrap(), c"f")
                    .set_xattr(c"user.here", b"1")
                    .unwrap();
            }
        }
        let paths: Vec<_> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        std::thread::spawn(move || {
            detach_working_directory();
            assert!(OWN_WORKING_DIR.with(Cell::get), "unshare(CLONE_FS)");
            let thread_cwd = || std::fs::read_link("/proc/thread-self/cwd").unwrap();
            for (round, path) in paths.iter().chain(paths.iter().rev()).enumerate() {
                let fd = open_dir_path(path).unwrap();
                let stat = stat_fd(fd.as_fd()).unwrap();
                let mut list = Vec::new();
                list_xattrs_in_working_dir(fd.as_fd(), stat.id(), c"f", &mut list)
                    .expect("a walker thread lists by name")
                    .unwrap();
                let listed = list.split(|b| *b == 0).any(|n| n == b"user.here");
                assert_eq!(listed, path == &paths[0], "round {round}: {path:?}");
                assert_eq!(&thread_cwd(), path, "round {round}");
            }
            leave_working_directory();
            assert_eq!(thread_cwd(), std::path::Path::new("/"));
        })
        .join()
        .unwrap();
        assert_eq!(std::env::current_dir().unwrap(), user_cwd, "the user's cwd");
    }

    #[test]
    fn an_idmapped_mount_of_a_directory_can_be_probed() {
        if !is_root() {
            return crate::skip_test("an_idmapped_mount_of_a_directory_can_be_probed needs root");
        }
        let tmp = tempfile::tempdir().unwrap();
        // ext4 (this machine's and CI's /tmp) supports idmapped mounts since 5.12;
        // before, as on 5.10 in the kernel matrix (tests/kernels.rs), none exist.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut numbers = release.split(['.', '-']).map(|n| n.parse().unwrap_or(0));
        let version: (u32, u32) = (numbers.next().unwrap(), numbers.next().unwrap());
        let probed = probe_idmapped_mount(tmp.path(), 1_000_000, 65536);
        if version < (5, 12) {
            assert_eq!(probed.unwrap_err().raw_os_error(), Some(libc::ENOSYS));
            return;
        }
        probed.unwrap();
        let err = probe_idmapped_mount(&tmp.path().join("missing"), 1_000_000, 65536).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        // /proc cannot be idmapped.
        assert!(probe_idmapped_mount(std::path::Path::new("/proc"), 1_000_000, 65536).is_err());
    }

    #[test]
    fn inodes_read_by_name_see_the_symlink_itself_and_change_nothing() {
        if !is_root() {
            crate::skip_test(
                "inodes_read_by_name_see_the_symlink_itself_and_change_nothing needs root",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), b"").unwrap();
        std::os::unix::fs::symlink("target", dir.path().join("link")).unwrap();
        let fd = open_dir_path(dir.path()).unwrap();
        inode(&fd, c"link")
            .set_xattr(c"trusted.l", b"link")
            .unwrap();
        inode(&fd, c"target")
            .set_xattr(c"trusted.t", b"target")
            .unwrap();
        let dir_stat = stat_fd(fd.as_fd()).unwrap();
        let link = Inode::stat_at(fd.as_fd(), &dir_stat, c"link").unwrap();
        assert!(link.stat.is_symlink());
        let mut names = Vec::new();
        link.list_xattrs(&mut names).unwrap();
        assert_eq!(names, b"trusted.l\0");
        assert_eq!(
            link.get_xattr(c"trusted.l").unwrap(),
            Some(b"link".to_vec())
        );
        assert_eq!(link.get_xattr(c"trusted.t").unwrap(), None);
        let refused = |r: io::Result<()>| r.unwrap_err().raw_os_error() == Some(libc::EBADF);
        assert!(refused(link.chown(1, 1)), "no change without a handle");
        assert!(refused(link.set_xattr(c"trusted.x", b"x")));
        assert_eq!(stat_at(fd.as_fd(), c"link").unwrap().uid, 0);
    }

    #[test]
    fn handles_never_reach_through_a_symlink() {
        if !is_root() {
            crate::skip_test("handles_never_reach_through_a_symlink needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), b"").unwrap();
        std::os::unix::fs::symlink("target", dir.path().join("link")).unwrap();
        let fd = open_dir_path(dir.path()).unwrap();
        let link = inode(&fd, c"link");
        assert!(link.stat.is_symlink());
        link.chown(1234, 5678).unwrap();
        // trusted.* is allowed on symlinks (user.* is not): it lands on the link.
        link.set_xattr(c"trusted.t", b"x").unwrap();
        let target = stat_at(fd.as_fd(), c"target").unwrap();
        assert_eq!((target.uid, target.gid), (0, 0), "target untouched");
        let target_xattr = inode(&fd, c"target").get_xattr(c"trusted.t").unwrap();
        assert_eq!(target_xattr, None, "no xattr on the target");
        assert_eq!(link.get_xattr(c"trusted.t").unwrap(), Some(b"x".to_vec()));
        let after = link.restat().unwrap();
        assert_eq!((after.uid, after.gid), (1234, 5678));
        assert!(link.chmod(0o600).is_err(), "no chmod of a symlink");
        assert!(open_subdir(fd.as_fd(), c"link").is_err(), "no descent");
    }

    /// Renames are trusted to stamp ctimes on the local file systems that do (tmpfs
    /// here, where the machine has one), never on procfs or others.
    #[test]
    fn only_known_file_systems_are_trusted_to_stamp_renames() {
        let proc = open_dir_path(std::path::Path::new("/proc")).unwrap();
        assert!(!ctime_marks_renames(proc.as_fd()));
        let shm = std::path::Path::new("/dev/shm");
        const TMPFS: u64 = 0x0102_1994;
        if rustix::fs::statfs(shm).is_ok_and(|s| s.f_type as u64 == TMPFS) {
            assert!(ctime_marks_renames(open_dir_path(shm).unwrap().as_fd()));
        }
    }

    /// chmod through the handle (fchmodat2) and through /proc/self/fd (the fallback
    /// of kernels before 6.6) both reach the inode, setuid bits included.
    #[test]
    fn chmod_reaches_the_inode_on_both_kernel_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let fd = open_dir_path(dir.path()).unwrap();
        let file = inode(&fd, c"f");
        let before = FCHMODAT2.load(Ordering::Relaxed);
        for (state, perm) in [(ABSENT, 0o4755), (PRESENT, 0o2711)] {
            if state == PRESENT && !probe(&AtomicU8::new(UNKNOWN), SYS_FCHMODAT2) {
                continue;
            }
            FCHMODAT2.store(state, Ordering::Relaxed);
            file.chmod(perm).unwrap();
            assert_eq!(file.restat().unwrap().perm(), perm, "state {state}");
        }
        FCHMODAT2.store(before, Ordering::Relaxed);
    }

    #[test]
    fn generation_identifies_files_and_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let fd = open_dir_path(dir.path()).unwrap();
        assert_eq!(inode(&fd, c"l").generation(), None);
        // tmpfs and ext4 give one; some file systems do not: then both are None.
        let file = inode(&fd, c"f").generation();
        assert_eq!(file, inode(&fd, c"f").generation(), "stable");
    }
}
