//! Bind mounts of host paths into a container, found in its config, and what they
//! hold as the container would see it.
//!
//! The files of a bind-mounted host directory keep their host owners whatever
//! happens to the rootfs: after a conversion to unprivileged, owners outside the
//! container's map show as nobody (65534) inside and the container cannot write
//! them. [`list`] finds every bind mount the container gets (`lxc.mount.entry`,
//! the `lxc.mount.fstab` file, included configs and directories of configs, in the
//! order LXC reads them), leaving out device nodes (passed through: see `udev`) and
//! kernel file systems. [`scan`] counts, read-only, what one holds and how much of
//! it a given [`View`] would show as nobody.

use super::config::{ConfigError, ContainerConfig, DeviceAccess, MountEntry};
use super::effects::HostEffects;
use super::host::Host;
use super::unmapped::UnmappedIds;
use crate::engine::hardlinks::SeenInodes;
use crate::engine::idmap::{IdKind, MapEntry};
use crate::engine::idrange::IdRange;
use crate::engine::report::Counters;
use crate::engine::sys::{self, Inode};
use crate::engine::walk::{self, DirNode, Visitor, WalkError};
use crate::fsutil::FileError;
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How deep `lxc.include` may nest (LXC's own configs nest two levels).
const MAX_INCLUDE_DEPTH: usize = 16;

/// How many example paths a scan keeps.
const EXAMPLES: usize = 5;

/// The option that makes LXC idmap a bind mount with the container's map.
pub const IDMAP_OPTION: &str = "idmap=container";

/// Host paths that hold kernel file systems or devices, not data.
const KERNEL_PREFIXES: [&str; 2] = ["/proc", "/sys"];

/// statfs magic numbers of kernel file systems: a bind of one of them passes
/// kernel state, not files with owners to shift.
const KERNEL_FS_MAGIC: [i64; 17] = [
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x1cd1,      // devpts
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0x7363_6673, // securityfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x6573_5543, // fusectl
    0x6265_6570, // configfs
    0x6165_676c, // pstore
    0xcafe_4a11, // bpf
    0xde5e_81e4, // efivarfs
    0x1980_0202, // mqueue
    0x9584_58f6, // hugetlbfs
    0x4249_4e4d, // binfmt_misc
    0x6e73_6673, // nsfs
];

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error("{0}; fix or remove the lxc.include / lxc.mount.fstab naming it")]
    Io(#[source] FileError),
    #[error("{path}: lxc.include nests deeper than {MAX_INCLUDE_DEPTH} levels (an include loop?); fix the includes")]
    TooDeep { path: PathBuf },
    #[error("{0}; check that the path is readable")]
    Scan(#[source] FileError),
}

/// Where a mount line was read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Origin {
    /// The container's config, an included config, or the fstab file.
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// A line of the `lxc.mount.fstab` file (else an `lxc.mount.entry`).
    pub fstab: bool,
}

/// One bind mount of a host path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BindMount {
    /// The source as written (a host path).
    pub source: PathBuf,
    /// Where the source is found on this host (under `Host`'s prefix in tests).
    pub host_source: PathBuf,
    pub entry: MountEntry,
    pub origin: Origin,
}

impl BindMount {
    /// Mounted with the container's map (`idmap=container`).
    pub fn idmapped(&self) -> bool {
        self.entry.has_option(IDMAP_OPTION)
    }

    /// Whether its line is in a file of the container's own: in its directory
    /// (`container_dir`) and not in its rootfs. lxc-idshift edits only those; a file
    /// elsewhere may be shared with other containers.
    pub fn in_own_file(&self, container_dir: &Path, rootfs: &Path) -> bool {
        let file = &self.origin.file;
        file.starts_with(container_dir) && !file.starts_with(rootfs)
    }

    /// LXC starts the container without it when the source is missing.
    pub fn optional(&self) -> bool {
        self.entry.has_option("optional")
    }

    /// The line as it would read with `idmap=container` added to its options.
    pub fn with_idmap_line(&self) -> String {
        let e = &self.entry;
        let line = format!(
            "{} {} {} {},{IDMAP_OPTION} 0 0",
            e.source, e.target, e.fstype, e.options
        );
        match self.origin.fstab {
            true => line,
            false => format!("lxc.mount.entry = {line}"),
        }
    }
}

/// A bind mount with what it holds, or why it could not be scanned.
pub type ScannedMount = (BindMount, Result<Scan, String>);

/// What a container's config mounts from the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    /// Bind mounts of host directories and files with data.
    pub binds: Vec<BindMount>,
    /// Device nodes passed through (host paths under `Host`'s prefix), each once.
    pub devices: Vec<PathBuf>,
    /// Things worth saying that are no error (an include that does not exist...).
    pub notes: Vec<String>,
}

/// A mount line, before it is classified.
struct Found {
    entry: MountEntry,
    origin: Origin,
}

/// Every mount line LXC would use, in order, and the fstab file named.
#[derive(Default)]
struct Collected {
    entries: Vec<Found>,
    access: DeviceAccess,
    fstab: Option<(String, Origin)>,
    notes: Vec<String>,
}

/// The bind mounts and devices of the container whose config (at `config_path`,
/// in `container_dir`) is `config`. Includes and the fstab are read under `host`.
pub fn list(
    host: &Host,
    container_dir: &Path,
    config_path: &Path,
    config: &ContainerConfig,
) -> Result<Mounts, MountError> {
    let mut collected = Collected::default();
    collect(host, config_path, config, 0, &mut collected)?;
    let mut lines = collected.entries;
    if let Some((file, origin)) = collected.fstab {
        lines.extend(read_fstab(host, container_dir, &file, &origin)?);
    }
    let mut mounts = Mounts {
        notes: collected.notes,
        ..Mounts::default()
    };
    let mut device_dirs = Vec::new();
    for found in lines {
        classify(host, found, &mut mounts, &mut device_dirs);
    }
    for dir in device_dirs {
        mounts
            .devices
            .extend(allowed_nodes(&dir, &collected.access, DEVICE_DIR_DEPTH));
    }
    mounts.devices.sort();
    mounts.devices.dedup();
    Ok(mounts)
}

fn collect(
    host: &Host,
    path: &Path,
    config: &ContainerConfig,
    depth: usize,
    out: &mut Collected,
) -> Result<(), MountError> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(MountError::TooDeep {
            path: path.to_path_buf(),
        });
    }
    let origin = |line| Origin {
        file: path.to_path_buf(),
        line,
        fstab: false,
    };
    for (line, key, value) in config.assignments() {
        out.access.take(key, value);
        match key {
            "lxc.mount.entry" if value.is_empty() => out.entries.clear(),
            "lxc.mount.entry" => {
                let entry = MountEntry::parse(value).ok_or_else(|| MountError::Config {
                    path: path.to_path_buf(),
                    source: config.bad_mount_line(line),
                })?;
                out.entries.push(Found {
                    entry,
                    origin: origin(line),
                });
            }
            // `lxc.mount` is the pre-2.1 name of `lxc.mount.fstab`.
            "lxc.mount.fstab" | "lxc.mount" => {
                out.fstab = Some((value.to_string(), origin(line))).filter(|_| !value.is_empty());
            }
            "lxc.include" if !Path::new(value).is_absolute() && !value.is_empty() => {
                out.notes.push(format!(
                    "{}:{line}: lxc.include {value} is relative: LXC reads it from the directory the LXC command runs in, so its mounts (if any) are not listed; write it absolute",
                    path.display()
                ));
            }
            "lxc.include" if !value.is_empty() => {
                include(host, Path::new(value), depth, out)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// An `lxc.include`: a config file, or a directory whose `*.conf` files are read in
/// name order (as LXC does).
fn include(host: &Host, value: &Path, depth: usize, out: &mut Collected) -> Result<(), MountError> {
    let path = host.path(value);
    let files = match std::fs::read_dir(&path) {
        Ok(entries) => {
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
                .collect();
            files.sort();
            files
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => vec![path],
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.notes.push(format!(
                "lxc.include {} does not exist: its mounts (if any) are not listed",
                value.display()
            ));
            return Ok(());
        }
        Err(source) => return Err(MountError::Io(FileError::new("list", &path, source))),
    };
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|source| MountError::Io(FileError::new("read", &file, source)))?;
        collect(host, &file, &ContainerConfig::parse(&text), depth + 1, out)?;
    }
    Ok(())
}

/// The lines of the fstab file (a relative path is relative to the container's
/// directory); a missing file is LXC's error at start, so it is one here too.
fn read_fstab(
    host: &Host,
    container_dir: &Path,
    file: &str,
    named_at: &Origin,
) -> Result<Vec<Found>, MountError> {
    let path = match Path::new(file).is_absolute() {
        true => host.path(file),
        false => container_dir.join(file),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|source| MountError::Io(FileError::new("read", &path, source)))?;
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let entry = MountEntry::parse(trimmed).ok_or_else(|| MountError::Config {
            path: path.clone(),
            source: ConfigError::BadMountEntry {
                line: i + 1,
                text: format!(
                    "{line} (named by {}:{})",
                    named_at.file.display(),
                    named_at.line
                ),
            },
        })?;
        found.push(Found {
            entry,
            origin: Origin {
                file: path.clone(),
                line: i + 1,
                fstab: true,
            },
        });
    }
    Ok(found)
}

/// How deep a bind-mounted `/dev` directory is searched for nodes
/// (`/dev/bus/usb/001/002` is two levels down from `/dev/bus/usb`).
const DEVICE_DIR_DEPTH: usize = 3;

/// Sorts a mount line into a bind mount with data, a device (or a `/dev` directory
/// of them), or neither.
fn classify(host: &Host, found: Found, mounts: &mut Mounts, device_dirs: &mut Vec<PathBuf>) {
    let entry = found.entry;
    if !entry.is_bind() || entry.has_option("relative") {
        // proc, sysfs, tmpfs, cgroup...: nothing of the host's files; `relative`: a
        // path in the rootfs itself, shifted with it.
        return;
    }
    let source = PathBuf::from(&entry.source);
    if !source.is_absolute() {
        mounts.notes.push(format!(
            "{}:{}: bind mount source {} is relative without the `relative` option: LXC resolves it against the directory lxc-start runs in, so it is not listed and never shifted; write it absolute",
            found.origin.file.display(),
            found.origin.line,
            source.display()
        ));
        return;
    }
    let host_source = host.path(&source);
    if source.starts_with("/dev") {
        match (host_source.is_dir(), host_source.exists()) {
            (true, _) => device_dirs.push(host_source),
            (false, true) => mounts.devices.push(host_source),
            _ => {}
        }
        return;
    }
    if KERNEL_PREFIXES.iter().any(|p| source.starts_with(p)) || is_kernel_fs(&host_source) {
        return;
    }
    mounts.binds.push(BindMount {
        source,
        host_source,
        entry,
        origin: found.origin,
    });
}

/// The device nodes in a bind-mounted `/dev` directory that the cgroup lines let the
/// container open, `depth` levels down at most; symlinks are not followed.
fn allowed_nodes(dir: &Path, access: &DeviceAccess, depth: usize) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes = Vec::new();
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let kind = meta.file_type();
        if kind.is_dir() && depth > 1 {
            nodes.extend(allowed_nodes(&entry.path(), access, depth - 1));
        }
        let is_char = kind.is_char_device();
        if !is_char && !kind.is_block_device() {
            continue;
        }
        let (major, minor) = (
            rustix::fs::major(meta.rdev()),
            rustix::fs::minor(meta.rdev()),
        );
        if access.allows(is_char, major, minor) {
            nodes.push(entry.path());
        }
    }
    nodes
}

// f_type is i64 on x86_64 but narrower on other architectures.
#[allow(clippy::unnecessary_cast)]
fn is_kernel_fs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| KERNEL_FS_MAGIC.contains(&(s.f_type as i64)))
}

/// Which on-disk ids a container sees as themselves rather than nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The container's map; empty for a privileged container (it sees every id).
    pub maps: Vec<MapEntry>,
    /// Seen through an idmapped mount (`idmap=container`): the ids on disk are
    /// container ids; otherwise host ids.
    pub idmapped: bool,
}

impl View {
    /// Whether the container sees on-disk id `id` (not as nobody).
    pub fn sees(&self, kind: IdKind, id: u32) -> bool {
        if self.maps.is_empty() {
            return true;
        }
        self.maps.iter().any(|m| {
            let applies = match kind {
                IdKind::User => m.users,
                IdKind::Group => m.groups,
            };
            let first = match self.idmapped {
                true => m.container_first,
                false => m.host_first,
            };
            applies && IdRange::new(first, m.count).contains(id)
        })
    }

    /// Whether the container sees an inode of owner `uid` and group `gid` as its own.
    pub fn sees_both(&self, uid: u32, gid: u32) -> bool {
        self.sees(IdKind::User, uid) && self.sees(IdKind::Group, gid)
    }
}

/// Whether `source` can be bind-mounted with `idmap=container` into a container
/// whose ids 0..count are host ids host_first..: known only by trying. LXC must
/// know the option (verified with 5.0.2; `lxc-start --version`), and the kernel and
/// the source's file system must take an idmapped mount of it, which is created,
/// detached, in a scratch user namespace and dropped (nothing is attached or written).
pub fn idmap_works(
    host: &dyn HostEffects,
    source: &Path,
    host_first: u32,
    count: u32,
) -> Result<(), String> {
    lxc_knows_idmap(host)?;
    kernel_idmaps(source, host_first, count)
}

/// Whether this kernel and `source`'s file system take an idmapped mount (tried).
pub fn kernel_idmaps(source: &Path, host_first: u32, count: u32) -> Result<(), String> {
    crate::engine::sys::probe_idmapped_mount(source, host_first, count).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ENOSYS) => {
                "this kernel has no idmapped mounts (Linux 5.12 and later have them)".to_string()
            }
            Some(libc::EINVAL) => format!(
                "the file system of {} cannot be idmapped on this kernel",
                source.display()
            ),
            Some(libc::EPERM) => "creating an idmapped mount needs root".to_string(),
            _ => format!("an idmapped mount of {} failed: {e}", source.display()),
        }
    })
}

/// LXC 5.0 and later take `idmap=container` in a mount entry.
fn lxc_knows_idmap(host: &dyn HostEffects) -> Result<(), String> {
    let out = host
        .run("lxc-start", &["--version".as_ref()])
        .map_err(|e| {
            format!(
                "cannot run lxc-start --version ({e}) to learn whether LXC takes {IDMAP_OPTION}"
            )
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: Option<u32> = version.split('.').next().and_then(|m| m.parse().ok());
    match major {
        Some(major) if major >= 5 => Ok(()),
        _ => Err(format!(
            "LXC {version} may not take {IDMAP_OPTION} (LXC 5.0 and later do)"
        )),
    }
}

/// What a tree (or a single file) holds, as seen through a [`View`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Scan {
    /// Inodes (each hardlinked inode once).
    pub inodes: u64,
    /// Inodes whose owner or group shows as nobody.
    pub nobody: u64,
    /// Per on-disk id that shows as nobody: how many inodes own / group it.
    pub hidden_uids: BTreeMap<u32, u64>,
    pub hidden_gids: BTreeMap<u32, u64>,
    /// A few of those inodes.
    pub examples: Vec<PathBuf>,
    /// Inodes that could not be read (their paths are in `error_examples`).
    pub errors: u64,
    pub error_examples: Vec<String>,
    /// Mount points inside, not entered.
    pub mount_points: u64,
}

impl Scan {
    /// The hidden ids as `UnmappedIds` (for `unmapped::describe` and `wider_range`).
    pub fn hidden(&self) -> UnmappedIds {
        UnmappedIds {
            uids: self.hidden_uids.clone(),
            gids: self.hidden_gids.clone(),
        }
    }

    /// "uid 33 (3 inodes), gid 33 (3 inodes)": the hidden ids, the most common first,
    /// at most `max` of them.
    pub fn hidden_summary(&self, max: usize) -> String {
        let mut ids: Vec<(&str, u32, u64)> = self
            .hidden_uids
            .iter()
            .map(|(&id, &n)| ("uid", id, n))
            .chain(self.hidden_gids.iter().map(|(&id, &n)| ("gid", id, n)))
            .collect();
        ids.sort_by(|a, b| b.2.cmp(&a.2).then(b.0.cmp(a.0)).then(a.1.cmp(&b.1)));
        let mut parts: Vec<String> = ids
            .iter()
            .take(max)
            .map(|(kind, id, n)| {
                let inodes = if *n == 1 { "inode" } else { "inodes" };
                format!("{kind} {id} ({n} {inodes})")
            })
            .collect();
        if ids.len() > max {
            parts.push(format!("and {} more ids", ids.len() - max));
        }
        parts.join(", ")
    }
}

/// Scans `path` (a directory tree, or one file), read-only: stat only, nothing is
/// opened but directories. Other mounts inside are not entered.
pub fn scan(path: &Path, view: &View, threads: Option<usize>) -> Result<Scan, MountError> {
    let failed = |source| MountError::Scan(FileError::new("scan", path, source));
    let meta = std::fs::metadata(path).map_err(failed)?;
    if !meta.is_dir() {
        let mut scan = Scan {
            inodes: 1,
            ..Scan::default()
        };
        tally(&mut scan, view, meta.uid(), meta.gid(), || {
            path.to_path_buf()
        });
        return Ok(scan);
    }
    let fd = sys::open_dir_path(path).map_err(failed)?;
    let pool = walk::thread_pool(threads).map_err(failed)?;
    let scanner = Scanner {
        root: path,
        view,
        seen: SeenInodes::default(),
        counters: Counters::default(),
        inodes: AtomicU64::new(0),
        scan: Mutex::default(),
    };
    walk::walk(&pool, fd, &scanner).map_err(failed)?;
    let mut scan = scanner.scan.into_inner().expect("scan lock");
    scan.inodes = scanner.inodes.load(Ordering::Relaxed);
    scan.errors = scanner.counters.errors.load(Ordering::Relaxed);
    scan.error_examples = scanner
        .counters
        .errors()
        .into_iter()
        .take(EXAMPLES)
        .map(|e| format!("{}: {}", e.path.display(), e.message))
        .collect();
    scan.mount_points = scanner.counters.mount_points().len() as u64;
    Ok(scan)
}

/// Counts one inode of `uid`:`gid` if it shows as nobody (its path made only when
/// it is an example).
fn tally(scan: &mut Scan, view: &View, uid: u32, gid: u32, path: impl FnOnce() -> PathBuf) {
    let (user, group) = (view.sees(IdKind::User, uid), view.sees(IdKind::Group, gid));
    if user && group {
        return;
    }
    scan.nobody += 1;
    if !user {
        *scan.hidden_uids.entry(uid).or_default() += 1;
    }
    if !group {
        *scan.hidden_gids.entry(gid).or_default() += 1;
    }
    if scan.examples.len() < EXAMPLES {
        scan.examples.push(path());
    }
}

struct Scanner<'a> {
    root: &'a Path,
    view: &'a View,
    seen: SeenInodes,
    counters: Counters,
    inodes: AtomicU64,
    /// Everything but `inodes` (counted without the lock).
    scan: Mutex<Scan>,
}

impl Visitor for Scanner<'_> {
    fn needs_handles(&self) -> bool {
        false
    }

    fn visit(&self, dir: &Arc<DirNode>, name: &CStr, inode: Inode) {
        let stat = &inode.stat;
        if !self.seen.first_visit(stat) {
            return;
        }
        self.inodes.fetch_add(1, Ordering::Relaxed);
        if self.view.sees_both(stat.uid, stat.gid) {
            return;
        }
        let mut scan = self.scan.lock().expect("scan lock");
        tally(&mut scan, self.view, stat.uid, stat.gid, || {
            walk::display_path(self.root, &dir.entry_path(name))
        });
    }

    fn walk_error(&self, error: WalkError) {
        self.counters.walk_error(self.root, error);
    }

    fn mount_point(&self, path: PathBuf) {
        self.counters.mount_point(self.root, &path);
    }
}

/// The plan's paragraph about bind mounts, each with its scan (or why it has none);
/// the warnings for a container heading to unprivileged with `map` (as `shift
/// --map` takes it), or to privileged (None).
pub fn describe(mounts: &[ScannedMount], map: Option<&str>) -> String {
    if mounts.is_empty() {
        return String::new();
    }
    let mut text = String::from("bind mounts of host paths (their files are not shifted):\n");
    for (mount, scan) in mounts {
        text += &format!(
            "  {} -> {} ({}:{}){}\n",
            mount.source.display(),
            mount.entry.target,
            mount.origin.file.display(),
            mount.origin.line,
            if mount.idmapped() { ", idmapped" } else { "" }
        );
        match scan {
            Ok(scan) if scan.nobody > 0 && map.is_some() => {
                text += &format!(
                    "    {} inodes, {} of them seen as nobody (65534) inside: {}\n",
                    scan.inodes,
                    scan.nobody,
                    scan.hidden_summary(6)
                );
                text += &format!(
                    "    warning: the container cannot write these files. Add {IDMAP_OPTION} to the entry's options ({}), or, if only this container uses the directory, shift it: `lxc-idshift shift {} --map {}` (and back with --reverse before going privileged)\n",
                    mount.with_idmap_line(),
                    mount.source.display(),
                    map.unwrap_or_default()
                );
            }
            Ok(scan) => text += &format!("    {} inodes, none seen as nobody\n", scan.inodes),
            Err(why) => text += &format!("    not scanned: {why}\n"),
        }
        if mount.idmapped() && map.is_none() {
            text += &format!(
                "    warning: {IDMAP_OPTION} in a privileged container's config makes lxc-start abort: remove it from the options ({}:{})\n",
                mount.origin.file.display(),
                mount.origin.line
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn sources(mounts: &Mounts) -> Vec<String> {
        mounts
            .binds
            .iter()
            .map(|b| b.source.display().to_string())
            .collect()
    }

    #[test]
    fn binds_from_entries_includes_and_fstab_without_devices_or_kernel_fs() {
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::under(tmp.path());
        let dir = tmp.path().join("lxc/web");
        for d in [
            "srv/data",
            "srv/inc",
            "srv/conf-d",
            "srv/tab",
            "dev/ttyUSB0",
        ] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        std::fs::remove_dir(tmp.path().join("dev/ttyUSB0")).unwrap();
        std::fs::write(tmp.path().join("dev/ttyUSB0"), "").unwrap();
        write(
            &tmp.path().join("share/common.conf"),
            "lxc.mount.entry = /srv/inc srv/inc none rbind 0 0\n\
             lxc.mount.entry = /sys/fs/fuse/connections sys/fs/fuse/connections none bind,optional 0 0\n\
             lxc.include = /share/common.conf.d/\n",
        );
        write(
            &tmp.path().join("share/common.conf.d/10-a.conf"),
            "lxc.mount.entry = /srv/conf-d srv/conf-d none bind,create=dir 0 0\n",
        );
        write(
            &tmp.path().join("share/common.conf.d/README"),
            "lxc.mount.entry = /x x none bind 0 0\n",
        );
        write(
            &dir.join("fstab"),
            "# comment\n\n/srv/tab srv/tab none bind 0 0\nproc proc proc nodev 0 0\n",
        );
        let config_text = "lxc.include = /share/common.conf\n\
                           lxc.include = /share/missing.conf\n\
                           lxc.mount.fstab = fstab\n\
                           lxc.mount.entry = proc proc proc nodev,noexec,nosuid 0 0\n\
                           lxc.mount.entry = tmpfs tmp tmpfs defaults 0 0\n\
                           lxc.mount.entry = /dev/ttyUSB0 dev/ttyUSB0 none bind,optional,create=file\n\
                           lxc.mount.entry = /dev/ttyUSB9 dev/ttyUSB9 none bind,optional,create=file\n\
                           lxc.mount.entry = /proc/sys/x proc/x none bind 0 0\n\
                           lxc.mount.entry = dev/null proc/kcore none bind,relative 0 0\n\
                           lxc.mount.entry = srv/rel srv/rel none bind 0 0\n\
                           lxc.include = rel.conf\n\
                           lxc.mount.entry = /srv/data srv/data none bind,create=dir,idmap=container 0 0\n";
        let config_path = dir.join("config");
        write(&config_path, config_text);
        let config = ContainerConfig::parse(config_text);
        let mounts = list(&host, &dir, &config_path, &config).unwrap();
        assert_eq!(
            sources(&mounts),
            ["/srv/inc", "/srv/conf-d", "/srv/data", "/srv/tab"]
        );
        assert_eq!(mounts.devices, [tmp.path().join("dev/ttyUSB0")]);
        // A `relative` source is in the rootfs; a relative one without it is LXC's
        // working directory's: neither is a host bind, the second is said.
        // A relative include is not read either, and said.
        assert_eq!(mounts.notes.len(), 3, "{:?}", mounts.notes);
        assert!(mounts.notes[0].contains("/share/missing.conf"));
        assert!(mounts.notes[1].contains("lxc.include rel.conf is relative"));
        assert!(mounts.notes[2].contains("srv/rel is relative"));
        let data = &mounts.binds[2];
        assert_eq!(data.host_source, tmp.path().join("srv/data"));
        assert!(data.idmapped() && !data.optional());
        assert_eq!(
            data.origin,
            Origin {
                file: config_path.clone(),
                line: 12,
                fstab: false
            }
        );
        assert_eq!(
            mounts.binds[1].origin.file,
            tmp.path().join("share/common.conf.d/10-a.conf")
        );
        let tab = &mounts.binds[3];
        assert_eq!((tab.origin.line, tab.origin.fstab), (3, true));
        assert_eq!(
            tab.with_idmap_line(),
            "/srv/tab srv/tab none bind,idmap=container 0 0"
        );
        assert_eq!(
            mounts.binds[0].with_idmap_line(),
            "lxc.mount.entry = /srv/inc srv/inc none rbind,idmap=container 0 0"
        );
    }

    #[test]
    fn an_empty_entry_clears_the_ones_before_it_and_bad_lines_name_their_file() {
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::under(tmp.path());
        let text = "lxc.mount.entry = /a a none bind 0 0\nlxc.mount.entry =\nlxc.mount.entry = /b b none bind 0 0\n";
        let mounts = list(
            &host,
            tmp.path(),
            Path::new("c"),
            &ContainerConfig::parse(text),
        )
        .unwrap();
        assert_eq!(sources(&mounts), ["/b"]);

        let err = list(
            &host,
            tmp.path(),
            Path::new("/x/config"),
            &ContainerConfig::parse("a = 1\nlxc.mount.entry = /a\n"),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("/x/config") && message.contains("line 2"),
            "{message}"
        );

        let err = list(
            &host,
            tmp.path(),
            Path::new("c"),
            &ContainerConfig::parse("lxc.mount.fstab = /nowhere/fstab\n"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nowhere/fstab"), "{err}");
    }

    #[test]
    fn an_include_loop_is_an_error_not_a_hang() {
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::under(tmp.path());
        write(&tmp.path().join("loop.conf"), "lxc.include = /loop.conf\n");
        let config = ContainerConfig::parse("lxc.include = /loop.conf\n");
        let err = list(&host, tmp.path(), Path::new("c"), &config).unwrap_err();
        assert!(matches!(err, MountError::TooDeep { .. }), "{err}");
    }

    #[test]
    fn the_plan_warns_about_nobody_going_unprivileged_and_idmap_going_privileged() {
        let config = "lxc.mount.entry = /srv/a srv/a none bind,idmap=container 0 0\n";
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::under(tmp.path());
        let found = list(
            &host,
            tmp.path(),
            Path::new("/c"),
            &ContainerConfig::parse(config),
        )
        .unwrap();
        let hidden = Scan {
            inodes: 2,
            nobody: 1,
            hidden_uids: BTreeMap::from([(70_000, 1)]),
            ..Scan::default()
        };
        let mounts = vec![(found.binds[0].clone(), Ok(hidden))];
        let going = describe(&mounts, Some("b:0:1000000:65536"));
        assert!(
            going.contains("/srv/a -> srv/a (/c:1), idmapped"),
            "{going}"
        );
        assert!(
            going
                .contains("2 inodes, 1 of them seen as nobody (65534) inside: uid 70000 (1 inode)"),
            "{going}"
        );
        assert!(going.contains("--map b:0:1000000:65536"), "{going}");
        assert!(!going.contains("lxc-start abort"), "{going}");
        let back = describe(&mounts, None);
        assert!(back.contains("2 inodes, none seen as nobody"), "{back}");
        assert!(
            back.contains("makes lxc-start abort: remove it from the options (/c:1)"),
            "{back}"
        );
        let missing = vec![(
            found.binds[0].clone(),
            Err("/srv/a does not exist".to_string()),
        )];
        assert!(describe(&missing, None).contains("not scanned: /srv/a does not exist"));
        assert_eq!(describe(&[], None), "");
    }

    #[test]
    fn views_of_plain_and_idmapped_mounts() {
        let maps = vec![
            MapEntry::parse("u 0 1000000 65536").unwrap(),
            MapEntry::parse("g 0 1000000 65536").unwrap(),
        ];
        let plain = View {
            maps: maps.clone(),
            idmapped: false,
        };
        assert!(plain.sees(IdKind::User, 1_000_033));
        assert!(!plain.sees(IdKind::User, 33));
        assert!(!plain.sees(IdKind::Group, 1_065_536));
        let idmapped = View {
            maps,
            idmapped: true,
        };
        assert!(idmapped.sees_both(33, 33));
        assert!(!idmapped.sees(IdKind::User, 1_000_033));
        let privileged = View {
            maps: Vec::new(),
            idmapped: false,
        };
        assert!(privileged.sees_both(4_000_000_000, 0));
    }

    #[test]
    fn a_scan_counts_what_shows_as_nobody() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), "x").unwrap();
        std::fs::hard_link(root.join("d/f"), root.join("g")).unwrap();
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let view = View {
            maps: vec![MapEntry {
                users: true,
                groups: true,
                container_first: 0,
                host_first: me.0.max(me.1) + 1,
                count: 10,
            }],
            idmapped: false,
        };
        let scan = scan(root, &view, Some(2)).unwrap();
        // root, d, and one inode for the two names of f.
        assert_eq!((scan.inodes, scan.nobody), (3, 3));
        assert_eq!(scan.hidden_uids, BTreeMap::from([(me.0, 3)]));
        assert_eq!(scan.hidden_gids, BTreeMap::from([(me.1, 3)]));
        assert_eq!(scan.examples.len(), 3);
        assert_eq!(
            scan.hidden_summary(1),
            format!("uid {} (3 inodes), and 1 more ids", me.0)
        );
        let everything = View {
            maps: Vec::new(),
            idmapped: false,
        };
        let seen = super::scan(&root.join("g"), &everything, None).unwrap();
        assert_eq!((seen.inodes, seen.nobody), (1, 0));
    }
}
