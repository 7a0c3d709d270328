//! Small file-system helpers shared by the modules that write host files: the
//! error of an operation on a path, and whole-file replacement that readers and a
//! SIGKILL never see half done.

use crate::engine::report::errno_name;
use std::borrow::Cow;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// An operation on a path that failed: the path, what was done to it, and the
/// system's error, each said once (`cannot write /etc/subuid: Permission denied`).
/// The module errors wrap it rather than naming the path again.
#[derive(Debug, thiserror::Error)]
#[error("cannot {operation} {}: {source}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    /// A verb phrase that reads before the path: "read", "write", "list"...
    pub operation: Cow<'static, str>,
    pub source: io::Error,
}

impl FileError {
    pub fn new(
        operation: impl Into<Cow<'static, str>>,
        path: &Path,
        source: io::Error,
    ) -> FileError {
        FileError {
            path: path.to_path_buf(),
            operation: operation.into(),
            source,
        }
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The errno's symbolic name (EACCES, EROFS...) when a system call failed.
    pub fn errno(&self) -> Option<&'static str> {
        self.source.raw_os_error().and_then(errno_name)
    }
}

/// Keeps the kind and the whole error (a caller can downcast to it), for the
/// functions that return `io::Result`.
impl From<FileError> for io::Error {
    fn from(error: FileError) -> io::Error {
        io::Error::new(error.kind(), error)
    }
}

/// `.map_err(failed("write", path))`: an io error becomes a [`FileError`].
pub fn failed<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl Fn(io::Error) -> FileError + Copy + 'a {
    move |source| FileError::new(operation, path, source)
}

/// The file a write to `path` must replace: a symlink's target, so the link stays.
fn real_target(path: &Path) -> io::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path),
        _ => Ok(path.to_path_buf()),
    }
}

/// The mode, owner and group a replacement keeps.
type Keep = (u32, u32, u32);

/// The file a replacement lands on (a symlink's target), its directory, and the
/// mode and owner the new file keeps (0644 root:root for a new file).
fn replaced(path: &Path) -> Result<(PathBuf, PathBuf, Keep), FileError> {
    let target = real_target(path).map_err(failed("resolve the link", path))?;
    let keep = match fs::metadata(&target) {
        Ok(meta) => (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (0o644, 0, 0),
        Err(e) => return Err(FileError::new("read the owner and mode of", &target, e)),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((target, dir, keep))
}

/// fsyncs a directory, so that a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed("sync the directory", dir))
}

/// Replaces a file's contents atomically: a temp file in the same directory with
/// the original's owner and mode (0644 root:root for a new file) is written,
/// fsynced and renamed over it, then the directory is fsynced. Readers see the old
/// or the new contents, never a mix; errors name the path.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), FileError> {
    let (target, dir, (mode, uid, gid)) = replaced(path)?;
    remove_stale_temps(&target);
    let temp = temp_path(&dir, &target);
    let result = write_temp(&temp, text, mode, uid, gid)
        .and_then(|()| fs::rename(&temp, &target))
        .map_err(failed("write", &target));
    if result.is_err() {
        let _ = fs::remove_file(&temp); // best effort: the error that matters is the first
        return result;
    }
    sync_dir(&dir)
}

/// Replaces a shadow file (/etc/subuid, /etc/subgid) as shadow's tools do, to be
/// called with its lock held ([`super::lock::ShadowLock`]): the old contents go to
/// `F-` (the backup `useradd` and `usermod` keep), the new ones to `F+`, fsynced and
/// renamed over `F`, then the directory is fsynced. Both keep the original's owner
/// and mode (0644 root:root for a new file); a symlink's target is replaced.
pub fn write_with_backup(path: &Path, old: Option<&str>, text: &str) -> Result<(), FileError> {
    let (target, dir, (mode, uid, gid)) = replaced(path)?;
    let sibling = |suffix: &str| {
        let mut name = target.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let replace = |file: &Path, text: &str| {
        // Whatever a killed writer left there goes; create_new never follows a link.
        match fs::remove_file(file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(FileError::new("remove", file, e))
            }
            _ => {}
        }
        write_temp(file, text, mode, uid, gid).map_err(failed("write", file))
    };
    if let Some(old) = old {
        replace(&sibling("-"), old)?;
    }
    let new = sibling("+");
    replace(&new, text)?;
    fs::rename(&new, &target).map_err(failed("rename the new file over", &target))?;
    sync_dir(&dir)
}

/// `.<name>.lxc-idshift.<pid>.<n>` next to the target: same filesystem, so the
/// rename is atomic; the pid and counter keep concurrent writers apart.
fn temp_path(dir: &Path, target: &Path) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = target
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.lxc-idshift.{}.{n}", std::process::id()))
}

/// Removes the temp files that writers of `target` killed before their rename left
/// (their pid no longer runs): a SIGKILL must not litter /etc.
pub fn remove_stale_temps(target: &Path) {
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!(".{name}.lxc-idshift.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        let dead = pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if dead {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn write_temp(temp: &Path, text: &str, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    file.write_all(text.as_bytes())?;
    // A file system that fixes owners and modes itself (Proxmox's pmxcfs under
    // /etc/pve) refuses chown and chmod: fine when the file has them already.
    let has = |file: &fs::File| -> io::Result<(u32, u32, u32)> {
        let meta = file.metadata()?;
        Ok((meta.uid(), meta.gid(), meta.mode() & 0o7777))
    };
    if let Err(e) = std::os::unix::fs::fchown(&file, Some(uid), Some(gid)) {
        let (now_uid, now_gid, _) = has(&file)?;
        if (now_uid, now_gid) != (uid, gid) {
            return Err(e);
        }
    }
    // chmod after chown: chown clears setuid/setgid bits.
    if let Err(e) = file.set_permissions(fs::Permissions::from_mode(mode)) {
        if has(&file)?.2 != mode & 0o7777 {
            return Err(e);
        }
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomically_removes_temps_of_killed_writers() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("subuid");
        // pid 0 never names a running writer; our own pid does.
        let stale = dir.path().join(".subuid.lxc-idshift.0.3");
        let live = dir
            .path()
            .join(format!(".subuid.lxc-idshift.{}.99", std::process::id()));
        fs::write(&stale, "half").unwrap();
        fs::write(&live, "busy").unwrap();
        write_atomically(&target, "root:1000000:65536\n").unwrap();
        assert!(!stale.exists(), "a dead writer's temp file is removed");
        assert!(live.exists(), "a live writer's temp file is left alone");
        assert_eq!(fs::read_to_string(&target).unwrap(), "root:1000000:65536\n");
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_with_backup_keeps_the_old_file_as_shadow_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        fs::write(&path, "a:1:2\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(dir.path().join("subuid+"), "left by a killed writer").unwrap();
        write_with_backup(&path, Some("a:1:2\n"), "a:1:2\nroot:5:6\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a:1:2\nroot:5:6\n");
        let backup = dir.path().join("subuid-");
        assert_eq!(fs::read_to_string(&backup).unwrap(), "a:1:2\n");
        for file in [&path, &backup] {
            assert_eq!(fs::metadata(file).unwrap().mode() & 0o7777, 0o640);
        }
        assert_eq!(files_in(dir.path()), ["subuid", "subuid-"]);
        let new = dir.path().join("subgid");
        write_with_backup(&new, None, "b:1:2\n").unwrap();
        assert_eq!(fs::read_to_string(&new).unwrap(), "b:1:2\n");
        assert!(!dir.path().join("subgid-").exists(), "no backup of nothing");
    }

    #[test]
    fn write_atomically_keeps_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        if crate::is_root() {
            std::os::unix::fs::chown(&path, Some(1234), Some(5678)).unwrap();
        }
        let before = fs::metadata(&path).unwrap();
        write_atomically(&path, "root:100000:65536\n").unwrap();
        let after = fs::metadata(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "root:100000:65536\n");
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_ne!(
            after.ino(),
            before.ino(),
            "replaced by rename, not rewritten"
        );
        assert_eq!(files_in(dir.path()), ["subuid"]);
    }

    #[test]
    fn write_atomically_creates_follows_links_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subgid");
        if crate::is_root() {
            write_atomically(&path, "a:1:2\n").unwrap();
            let meta = fs::metadata(&path).unwrap();
            assert_eq!(
                (meta.mode() & 0o7777, meta.uid(), meta.gid()),
                (0o644, 0, 0)
            );
        } else {
            fs::write(&path, "a:1:2\n").unwrap();
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("subgid", &link).unwrap();
        write_atomically(&link, "b:3:4\n").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&path).unwrap(), "b:3:4\n");
        assert_eq!(files_in(dir.path()), ["link", "subgid"]);
        let missing = dir.path().join("no-such-dir/subuid");
        let err = write_atomically(&missing, "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("no-such-dir/subuid"), "{err}");
    }

    #[test]
    fn a_failed_write_names_its_path_once_and_its_errno() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir/subuid");
        let err = write_atomically(&missing, "x").unwrap_err();
        let message = err.to_string();
        let path = missing.display().to_string();
        assert!(
            message.starts_with(&format!("cannot write {path}: ")),
            "{message}"
        );
        assert_eq!(message.matches(&path).count(), 1, "{message}");
        assert_eq!(err.errno(), Some("ENOENT"));
        assert_eq!(err.path, missing);
        // A directory where the file should be: the rename over it fails.
        let taken = dir.path().join("subgid");
        fs::create_dir(&taken).unwrap();
        let err = write_with_backup(&taken, None, "x").unwrap_err();
        let message = err.to_string();
        let path = taken.display().to_string();
        assert_eq!(message.matches(&path).count(), 1, "{message}");
        assert_eq!(err.errno(), Some("EISDIR"), "{message}");
        // Through io::Error the kind and the whole error stay.
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::IsADirectory);
        let inner = io.get_ref().and_then(|e| e.downcast_ref::<FileError>());
        assert_eq!(inner.map(|e| e.path.clone()), Some(taken));
    }
}
