//! Locks on what the whole host shares.
//!
//! - [`ConversionLock`]: one conversion at a time per host, an flock on
//!   `/run/lock/lxc-idshift.lock` held from choosing the range to the last write of
//!   subuid, subgid and the config. A second conversion waits for it.
//! - [`ShadowLock`]: the locks shadow's tools (`useradd`, `usermod --add-subuids`...)
//!   take before rewriting `/etc/subuid` and `/etc/subgid`, taken the same way (shadow
//!   4.13, checked with strace): `lckpwdf()`, an fcntl lock on `/etc/.pwd.lock`; then
//!   for each file `F`, the pid (as text, NUL-terminated) written to `F.<pid>`, which is
//!   hard-linked to `F.lock`; a lock whose pid no longer runs is stale and removed.
//!   Released by unlinking `F.lock`, then closing `/etc/.pwd.lock`.

use super::host::Host;
use crate::fsutil::{failed, FileError};
use rustix::fs::{fcntl_lock, flock, FlockOperation};
use rustix::io::Errno;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a lock held by another program is waited for: glibc's `lckpwdf()` gives
/// up after 15 s, and shadow's tools retry a busy `F.lock` 15 times a second apart.
const SHADOW_PATIENCE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{0}; check that its directory exists and root can write there, then retry")]
    File(#[from] FileError),
    #[error("{path} is locked by another program editing the host's accounts (useradd, usermod, passwd, vipw...) for more than {secs} s; wait until it is done, then run the same command again")]
    PwdBusy { path: PathBuf, secs: u64 },
    #[error("{lock} is held by pid {pid} for more than {secs} s; wait until that process (useradd, usermod...) is done, then run the same command again")]
    Busy { lock: PathBuf, pid: u32, secs: u64 },
    #[error("{lock} is held by another Proxmox operation on this container for more than {secs} s (pct, the API); wait until it is done, then run the same command again")]
    ProxmoxBusy { lock: PathBuf, secs: u64 },
    #[error("{lock} exists but names no process ({content:?}); if no useradd or usermod is running, remove it and run the same command again")]
    NoPid { lock: PathBuf, content: String },
    #[error("{lock}: the lock was linked but {temp} has {links} links instead of 2 (a file system without hard links?); remove {lock} if it is left, then retry")]
    LinkCount {
        lock: PathBuf,
        temp: PathBuf,
        links: u64,
    },
}

fn errno_error<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(Errno) -> LockError + 'a {
    move |e| FileError::new(operation, path, e.into()).into()
}

/// Host-wide: one conversion at a time. Released when dropped (or when the process
/// dies: the kernel drops an flock with its last file descriptor).
#[derive(Debug)]
pub struct ConversionLock {
    _file: File,
}

impl ConversionLock {
    /// Takes the lock, waiting for as long as another conversion holds it;
    /// `on_wait` is called once before waiting, with the holder's pid when known.
    pub fn acquire(host: &Host, on_wait: impl FnOnce(Option<u32>)) -> Result<Self, LockError> {
        let path = host.conversion_lock();
        let mut file = open_lock_file(&path, 0o644)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                on_wait(read_pid(&path));
                retry_interrupted(|| flock(&file, FlockOperation::LockExclusive))
                    .map_err(errno_error("lock", &path))?;
            }
            Err(e) => return Err(errno_error("lock", &path)(e)),
        }
        // Whoever waits next can tell the user which process it waits for.
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(failed("write", &path))?;
        Ok(ConversionLock { _file: file })
    }
}

/// Proxmox VE's own lock on a container's config (`lock_config` in pve-container:
/// an flock on `/run/lock/lxc/pve-config-VMID.lock`), held for each read-modify-
/// write of the `.conf`, so that `pct set` and the API do not write it meanwhile.
/// Released when dropped.
#[derive(Debug)]
pub struct ProxmoxConfigLock {
    _file: File,
}

impl ProxmoxConfigLock {
    /// Waits up to 10 s, as Proxmox's own callers do.
    pub fn acquire(host: &Host, vmid: &str) -> Result<Self, LockError> {
        const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
        let path = host.path(format!("/run/lock/lxc/pve-config-{vmid}.lock"));
        let file = open_lock_file(&path, 0o644)?;
        let started = std::time::Instant::now();
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(ProxmoxConfigLock { _file: file }),
                Err(Errno::WOULDBLOCK | Errno::INTR) if started.elapsed() < WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(Errno::WOULDBLOCK) => {
                    return Err(LockError::ProxmoxBusy {
                        lock: path,
                        secs: WAIT.as_secs(),
                    })
                }
                Err(e) => return Err(errno_error("lock", &path)(e)),
            }
        }
    }
}

/// A lock file, created (with `mode`, and its directory) if missing, never truncated:
/// the lock is on it, not in it.
fn open_lock_file(path: &Path, mode: u32) -> Result<File, LockError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(failed("create the directory", dir))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(path)
        .map_err(|e| FileError::new("open", path, e).into())
}

fn retry_interrupted(mut call: impl FnMut() -> rustix::io::Result<()>) -> rustix::io::Result<()> {
    loop {
        match call() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// The pid at the start of a lock file: shadow's `"1234\0"` or our `"1234\n"`.
fn read_pid(path: &Path) -> Option<u32> {
    parse_pid(&fs::read(path).ok()?)
}

fn parse_pid(content: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(content).ok()?;
    let text = text.trim_end_matches(['\0', '\n']);
    text.parse().ok().filter(|&pid| pid > 0)
}

/// shadow's locks on `/etc/subuid` and `/etc/subgid` (and `lckpwdf()`), for one
/// read-modify-write of them. Released when dropped.
#[derive(Debug)]
pub struct ShadowLock {
    /// Lock files we created, unlinked in reverse order on drop.
    held: Vec<PathBuf>,
    /// The `lckpwdf()` lock, released (closed) after the lock files are gone.
    _pwd: File,
}

impl ShadowLock {
    /// Locks the shadow files `files` (e.g. the host's subuid and subgid) as shadow's
    /// tools do, waiting up to 15 s for a lock held by a running process.
    pub fn acquire(host: &Host, files: &[PathBuf]) -> Result<ShadowLock, LockError> {
        let pwd = lock_pwd(&host.pwd_lock())?;
        let mut lock = ShadowLock {
            held: Vec::new(),
            _pwd: pwd,
        };
        for file in files {
            let path = lock_file(file);
            link_lock(file, &path)?;
            lock.held.push(path);
        }
        Ok(lock)
    }
}

impl Drop for ShadowLock {
    fn drop(&mut self) {
        for path in self.held.iter().rev() {
            let _ = fs::remove_file(path);
        }
        // Durably gone: a power cut must not bring a lock back (found by the
        // conversion power cuts).
        let mut dirs: Vec<&Path> = self.held.iter().filter_map(|p| p.parent()).collect();
        dirs.dedup();
        for dir in dirs {
            let _ = crate::fsutil::sync_dir(dir);
        }
    }
}

/// `F.lock`, next to `F`.
pub fn lock_file(file: &Path) -> PathBuf {
    with_suffix(file, ".lock")
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// glibc's `lckpwdf()`: a write lock (fcntl, whole file) on `/etc/.pwd.lock`, opened
/// write-only, created 0600; given up after 15 s.
fn lock_pwd(path: &Path) -> Result<File, LockError> {
    let file = open_lock_file(path, 0o600)?;
    let start = Instant::now();
    loop {
        match fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(Errno::AGAIN | Errno::ACCESS | Errno::INTR)
                if start.elapsed() < SHADOW_PATIENCE =>
            {
                std::thread::sleep(POLL)
            }
            Err(Errno::AGAIN | Errno::ACCESS) => {
                return Err(LockError::PwdBusy {
                    path: path.to_path_buf(),
                    secs: SHADOW_PATIENCE.as_secs(),
                })
            }
            Err(e) => return Err(errno_error("lock", path)(e)),
        }
    }
}

/// shadow's `do_lock_file`: our pid into `F.<pid>`, hard-linked to `F.lock`; the link
/// succeeds only if no lock exists. A lock whose pid is gone is removed and the link
/// tried again; one whose pid runs is waited for (up to 15 s).
fn link_lock(file: &Path, lock: &Path) -> Result<(), LockError> {
    let pid = std::process::id();
    let temp = with_suffix(file, &format!(".{pid}"));
    let result = write_pid_file(&temp, pid).and_then(|()| link_when_free(&temp, lock));
    let _ = fs::remove_file(&temp);
    result
}

fn write_pid_file(temp: &Path, pid: u32) -> Result<(), LockError> {
    let _ = fs::remove_file(temp); // left by a killed run of ours with the same pid
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(failed("create", temp))?;
    file.write_all(format!("{pid}\0").as_bytes())
        .map_err(failed("write", temp))?;
    // On disk before the link that makes it the lock: else a power cut can leave
    // an empty lock file, which shadow's tools and this one refuse forever.
    file.sync_all().map_err(failed("write", temp))?;
    Ok(())
}

fn link_when_free(temp: &Path, lock: &Path) -> Result<(), LockError> {
    let start = Instant::now();
    loop {
        match fs::hard_link(temp, lock) {
            Ok(()) => {
                let links = fs::metadata(temp)
                    .map_err(failed("read the metadata of", temp))?
                    .nlink();
                if links != 2 {
                    return Err(LockError::LinkCount {
                        lock: lock.to_path_buf(),
                        temp: temp.to_path_buf(),
                        links,
                    });
                }
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(FileError::new("link the lock", lock, e).into()),
        }
        match holder(lock)? {
            // Released between our link and our look: try again.
            Holder::Gone => {}
            Holder::Stale(ino) => remove_stale(lock, ino),
            Holder::Running(pid) if start.elapsed() >= SHADOW_PATIENCE => {
                return Err(LockError::Busy {
                    lock: lock.to_path_buf(),
                    pid,
                    secs: SHADOW_PATIENCE.as_secs(),
                })
            }
            Holder::Running(_) => std::thread::sleep(POLL),
        }
    }
}

enum Holder {
    Gone,
    /// The lock's inode, so that only this stale lock is removed.
    Stale(u64),
    Running(u32),
}

fn holder(lock: &Path) -> Result<Holder, LockError> {
    let mut file = match File::open(lock) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Holder::Gone),
        Err(e) => return Err(FileError::new("open", lock, e).into()),
    };
    let meta = file
        .metadata()
        .map_err(failed("read the metadata of", lock))?;
    let ino = meta.ino();
    // Older than this boot: its process is gone whatever its pid names now.
    if boot_time().is_some_and(|boot| meta.mtime() < boot) {
        return Ok(Holder::Stale(ino));
    }
    let mut content = Vec::new();
    io::Read::read_to_end(&mut file, &mut content).map_err(failed("read", lock))?;
    let Some(pid) = parse_pid(&content) else {
        return Err(LockError::NoPid {
            lock: lock.to_path_buf(),
            content: String::from_utf8_lossy(&content).into_owned(),
        });
    };
    let running = rustix::process::Pid::from_raw(pid as i32)
        .map(rustix::process::test_kill_process)
        .is_some_and(|alive| alive != Err(Errno::SRCH));
    Ok(if running {
        Holder::Running(pid)
    } else {
        Holder::Stale(ino)
    })
}

/// When this boot began, in seconds since the epoch (`btime` of /proc/stat).
fn boot_time() -> Option<i64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|t| t.trim().parse().ok())
}

/// Removes a stale lock, unless another process replaced it since we looked.
fn remove_stale(lock: &Path, ino: u64) {
    if fs::symlink_metadata(lock).is_ok_and(|m| m.ino() == ino) {
        let _ = fs::remove_file(lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> (tempfile::TempDir, Host) {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("etc")).unwrap();
        let host = Host::under(tmp.path());
        (tmp, host)
    }

    /// A lock left by a power cut names a pid that another process may hold after
    /// the reboot: one older than this boot is stale, empty or not.
    #[test]
    fn a_lock_from_before_this_boot_is_stale_whatever_it_names() {
        let (_tmp, host) = host();
        let lock = lock_file(&host.subuid());
        for content in [format!("{}\0", std::process::id()), String::new()] {
            fs::write(&lock, &content).unwrap();
            let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
            File::options()
                .write(true)
                .open(&lock)
                .unwrap()
                .set_modified(old)
                .unwrap();
            assert!(matches!(holder(&lock), Ok(Holder::Stale(_))), "{content:?}");
        }
        fs::write(&lock, format!("{}\0", std::process::id())).unwrap();
        assert!(matches!(holder(&lock), Ok(Holder::Running(_))));
        let held = ShadowLock::acquire(&host, &[host.subgid()]).unwrap();
        drop(held);
    }

    #[test]
    fn shadow_lock_links_pid_files_and_unlinks_on_drop() {
        let (_tmp, host) = host();
        let files = [host.subuid(), host.subgid()];
        let lock = ShadowLock::acquire(&host, &files).unwrap();
        for file in &files {
            let content = fs::read(lock_file(file)).unwrap();
            assert_eq!(content, format!("{}\0", std::process::id()).as_bytes());
            let temp = with_suffix(file, &format!(".{}", std::process::id()));
            assert!(!temp.exists(), "the pid file is unlinked once linked");
        }
        assert!(host.pwd_lock().exists());
        drop(lock);
        for file in &files {
            assert!(!lock_file(file).exists());
        }
        // Taken again after release.
        drop(ShadowLock::acquire(&host, &files).unwrap());
    }

    #[test]
    fn a_stale_lock_is_replaced() {
        let (_tmp, host) = host();
        // A pid that cannot run: above the kernel's pid_max limit (4194304).
        fs::write(lock_file(&host.subuid()), "99999999\0").unwrap();
        let lock = ShadowLock::acquire(&host, &[host.subuid()]).unwrap();
        let content = fs::read(lock_file(&host.subuid())).unwrap();
        assert_eq!(content, format!("{}\0", std::process::id()).as_bytes());
        drop(lock);
    }

    #[test]
    fn a_lock_without_a_pid_is_refused_with_its_path() {
        let (_tmp, host) = host();
        let path = lock_file(&host.subgid());
        fs::write(&path, "junk").unwrap();
        let err = ShadowLock::acquire(&host, &[host.subuid(), host.subgid()]).unwrap_err();
        assert!(matches!(err, LockError::NoPid { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(
            !lock_file(&host.subuid()).exists(),
            "the locks taken before the failure are released"
        );
        assert_eq!(fs::read(&path).unwrap(), b"junk", "not ours: left alone");
    }

    #[test]
    fn pids_of_shadow_and_of_our_lock() {
        assert_eq!(parse_pid(b"1234\0"), Some(1234));
        assert_eq!(parse_pid(b"1234\n"), Some(1234));
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"0\0"), None);
        assert_eq!(parse_pid(b"x1\0"), None);
    }

    #[test]
    fn conversion_lock_records_its_pid() {
        let (_tmp, host) = host();
        let lock = ConversionLock::acquire(&host, |_| panic!("nobody holds it")).unwrap();
        assert_eq!(read_pid(&host.conversion_lock()), Some(std::process::id()));
        drop(lock);
        // Released: taken again. (A process forked meanwhile by another test holds a
        // copy of the fd until its exec, so this may wait for a moment.)
        drop(ConversionLock::acquire(&host, |_| {}).unwrap());
    }
}
