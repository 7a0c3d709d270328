//! The Proxmox VE flavour of a conversion: the container's config is
//! `/etc/pve/lxc/VMID.conf` (Proxmox writes the LXC config from it at every start),
//! its files are its volumes (the rootfs and each storage-backed `mpN`, each a
//! file system and a journaled tree of its own), and while they are shifted the
//! `.conf` holds `lock: disk`, which Proxmox's start, backup, migration and
//! snapshot refuse. Everything else (the course, subordinate ids, units, the
//! shift itself) is the plain conversion's.

use super::*;
use crate::lxc::pve::conf::PveConf;
use crate::lxc::pve::volume::{self, Location, Source};

/// The `lock:` value held while volumes are shifted: a disk operation on the
/// container's volumes, which every Proxmox operation that would read or start
/// them refuses; `pct unlock` clears it (see the README on interruptions).
pub const LOCK: &str = "disk";

/// Plans the conversion of Proxmox VE container `container` (its `.conf` at
/// `conf_path`); changes nothing.
pub(super) fn plan(
    options: &ConvertOptions,
    effects: &dyn HostEffects,
    container: Container,
    conf_path: &Path,
) -> Result<Plan, ConvertError> {
    let text = std::fs::read_to_string(conf_path).map_err(failed("read", conf_path))?;
    let conf = PveConf::parse(&text);
    let bad = |source| ConvertError::ProxmoxConf {
        conf: conf_path.to_path_buf(),
        source,
    };
    let not_yet = |what: &str, why| ConvertError::ProxmoxNotYet {
        vmid: container.name.clone(),
        what: what.to_string(),
        why,
    };
    if options.method == Some(Method::Idmap) {
        return Err(not_yet(
            "--method idmap",
            "Proxmox mounts the volumes itself, without idmap=container",
        ));
    }
    if matches!(options.mounts, MountsChoice::Idmap | MountsChoice::Shift) {
        return Err(not_yet(
            "--mounts idmap or shift",
            "bind mount points (mpN: /host/path) are left as they are",
        ));
    }
    let now = Layout::new(conf.map().map_err(bad)?, Method::Shift);
    let course = course_from(options, &container, now)?;
    refuse_foreign_lock(&conf, &course, &container, conf_path)?;
    let trees = volume_trees(options, &conf, &container)?;
    let mut notes = range_notes(options, &container, course.to_map())?;
    let (subids, subid_notes) = subid_change(options, &container, &course)?;
    notes.extend(subid_notes);
    notes.extend(shared_ids_note(course.to_map()));
    notes.extend(trees.notes);
    if course.to_map().is_some() {
        notes.extend(privileged_only(&conf, &trees.rootfs));
    }
    let mut edits = match &subids {
        Some(change) => subid_edits(&options.host, change)?,
        None => Vec::new(),
    };
    edits.push(FileEdit {
        path: conf_path.to_path_buf(),
        new: Some(conf.with_lock(None).with_map(course.to_map()).to_text()),
        old: Some(text),
    });
    let recorded = course.interrupted.as_ref().unwrap_or(&course.recorded);
    let units = unit_plan(&trees.rootfs, course.to_map(), &recorded.masked_units);
    let state = match course.interrupted.clone() {
        Some(state) => state,
        None => ConversionState {
            shifted_mounts: trees.volumes.clone(),
            granted_range: grants_new_range(&options.host, subids.as_ref())?,
            masked_units: units.masked.clone(),
            ..ConversionState::between(&course.from, &course.to, course.range)
        },
    };
    let mut unmapped = UnmappedIds::default();
    if let Some((map, direction)) = &course.shift {
        for tree in std::iter::once(&trees.rootfs).chain(&trees.volumes) {
            let scan = unmapped::scan(tree, map, *direction, options.threads)?;
            refuse_linked_outside(&scan, (&container, tree), &options.host)?;
            if tree == &trees.rootfs && course.from.on_disk().is_none() {
                unmapped = scan.unmapped;
            }
        }
    }
    if !options.dry_run {
        container.ensure_stopped(effects)?;
    }
    Ok(Plan {
        flavour: Flavour::Proxmox {
            conf: conf_path.to_path_buf(),
        },
        container,
        rootfs: trees.rootfs,
        before: course.from,
        after: course.to,
        idmap_probe: None,
        range: course.range,
        shift: course.shift,
        edits: edits.into_iter().filter(FileEdit::changes).collect(),
        perms: Vec::new(),
        state,
        host_files: vec![options.host.subuid(), options.host.subgid()],
        units,
        udev_rules: None,
        udevd_runs: false,
        device_owners: Vec::new(),
        subids,
        host: options.host.clone(),
        unmapped,
        mounts: Vec::new(),
        mounts_unlisted: None,
        mount_notes: Vec::new(),
        notes,
        mount_shifts: trees.volumes,
        volume_mounts: trees.mounts,
    })
}

/// A range another container maps is refused, but Proxmox's own default range:
/// Proxmox gives it to every unprivileged container, so sharing it is what a
/// Proxmox host expects (said in the plan, with the way to a range of its own).
fn range_notes(
    options: &ConvertOptions,
    container: &Container,
    to: Option<&HostMap>,
) -> Result<Vec<String>, ConvertError> {
    let Some(to) = to else {
        return Ok(Vec::new());
    };
    if *to != crate::lxc::pve::conf::default_map() {
        check_range_free(&options.host, container, to)?;
        return Ok(Vec::new());
    }
    let range = IdRange::new(
        crate::lxc::pve::conf::DEFAULT_FIRST,
        crate::lxc::pve::conf::DEFAULT_COUNT,
    );
    let mut sharing: Vec<String> = (sibling_maps(container, &options.host).into_iter())
        .filter(|s| s.ids.overlaps(range))
        .map(|s| s.container)
        .collect();
    sharing.dedup();
    Ok((!sharing.is_empty())
        .then(|| format!(
            "the range 100000..165535 is Proxmox's default, which container {} maps too, as Proxmox gives it to every unprivileged container; a range of its own (--to auto) keeps a process that escapes one container from the other's files",
            sharing.join(", ")
        ))
        .into_iter()
        .collect())
}

/// What only works in a privileged container, said going unprivileged with what to
/// do instead: `features:` that need host root, raw device passthrough lines that
/// Proxmox's own `devN:` does for an unprivileged container, and Docker without
/// `keyctl=1`.
fn privileged_only(conf: &PveConf, rootfs: &Path) -> Vec<String> {
    let features = conf.value("features").unwrap_or_default();
    let feature = |name: &str| {
        features
            .split(',')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
    };
    let mut notes = Vec::new();
    if let Some(fs) = feature("mount").filter(|v| !v.is_empty()) {
        notes.push(format!("features: mount={fs} lets only a privileged container mount {fs}: unprivileged, mount the share on the host and pass it in as a bind mount point (mpN: /host/path,mp=/path)"));
    }
    if feature("quota") == Some("1") {
        notes.push(
            "features: quota=1 (quotas inside the container) works only privileged".to_string(),
        );
    }
    let docker = ["usr/bin/dockerd", "usr/sbin/dockerd"]
        .iter()
        .any(|p| rootfs.join(p).exists());
    if docker && feature("keyctl") != Some("1") {
        notes.push("Docker is installed in the rootfs: unprivileged it needs features: keyctl=1 (and nesting=1): `pct set VMID -features nesting=1,keyctl=1`".to_string());
    }
    for (key, value) in conf.entries() {
        let device = match key {
            "lxc.mount.entry" => value
                .split_whitespace()
                .next()
                .filter(|s| s.starts_with("/dev/")),
            _ => None,
        };
        if let Some(node) = device {
            notes.push(format!("{key}: {value}: unprivileged, Proxmox passes a device in with `devN: {node},gid=GID,mode=0660` (the container's GID, e.g. 20 for dialout), which replaces this line and its lxc.cgroup2.devices.allow line: `pct set VMID -dev0 {node},gid=20,mode=0660`"));
        }
    }
    notes
}

/// A `lock:` is Proxmox's (refused) unless it is this tool's own, left by an
/// interrupted conversion that the recorded state describes.
fn refuse_foreign_lock(
    conf: &PveConf,
    course: &Course,
    container: &Container,
    conf_path: &Path,
) -> Result<(), ConvertError> {
    match conf.lock() {
        None => Ok(()),
        Some(LOCK) if course.interrupted.is_some() => Ok(()),
        Some(lock) => Err(ConvertError::ProxmoxLocked {
            vmid: container.name.clone(),
            lock: lock.to_string(),
            conf: conf_path.to_path_buf(),
        }),
    }
}

/// The trees a conversion shifts: the rootfs volume and each storage-backed
/// mount point, in the config's order; bind mounts and devices are said.
struct Trees {
    rootfs: PathBuf,
    volumes: Vec<PathBuf>,
    notes: Vec<String>,
    /// Volumes inside images and logical volumes, mounted for the conversion.
    mounts: Vec<VolumeMount>,
}

/// A volume inside an image or a logical volume, mounted for the conversion at a
/// path of its own in the container's directory (the same every run, so that its
/// journal is found again after an interruption); unmounted when dropped, on
/// failure too. One in use elsewhere (the container running, `pct mount`) is
/// refused: shifting it there would race its users.
pub struct VolumeMount {
    point: PathBuf,
}

impl VolumeMount {
    /// Tries a few times: the `mount` of a run killed a moment ago may still be
    /// finishing (a child outlives its parent's SIGKILL).
    fn new(source: &Path, point: &Path) -> Result<VolumeMount, ConvertError> {
        const ATTEMPTS: u32 = 10;
        let fail = |why: String| ConvertError::VolumeMount {
            volume: source.to_path_buf(),
            why,
        };
        std::fs::create_dir_all(point).map_err(failed("create the directory", point))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match try_mount(source, point) {
                Ok(()) => {
                    return Ok(VolumeMount {
                        point: point.to_path_buf(),
                    })
                }
                Err(why) if attempt == ATTEMPTS => return Err(fail(why)),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(300)),
            }
        }
    }
}

/// One attempt: a killed run's mount at `point` taken down, a user elsewhere
/// refused, then `mount [-o loop] source point`.
fn try_mount(source: &Path, point: &Path) -> Result<(), String> {
    if is_mount_point(point) {
        unmount(point)?;
    }
    if let Some(user) = in_use(source) {
        return Err(format!(
            "it is in use ({user}): stop the container and `pct unmount` it first"
        ));
    }
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if source.is_file() {
        args.extend([std::ffi::OsStr::new("-o"), std::ffi::OsStr::new("loop")]);
    }
    args.extend([source.as_os_str(), point.as_os_str()]);
    let out = std::process::Command::new("mount")
        .args(&args)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

impl Drop for VolumeMount {
    fn drop(&mut self) {
        if unmount(&self.point).is_ok() {
            let _ = std::fs::remove_dir(&self.point);
        }
    }
}

fn unmount(point: &Path) -> Result<(), String> {
    let out = std::process::Command::new("umount")
        .arg(point)
        .output()
        .map_err(|e| format!("cannot run umount: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

fn is_mount_point(path: &Path) -> bool {
    shared::mount_points().iter().any(|point| point == path)
}

/// Who uses `source` now: a mount of it, or of a loop device backing it. A loop
/// device of it that nothing mounts is what a run killed while mounting leaves
/// behind: detached.
fn in_use(source: &Path) -> Option<String> {
    let devices = match source.is_file() {
        true => backing_loops(source),
        false => vec![std::fs::canonicalize(source).ok()?],
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for device in devices {
        let mounted = info.lines().find_map(|l| {
            let (_, after) = l.split_once(" - ")?;
            let source = after.split(' ').nth(1)?;
            let same = std::fs::canonicalize(source).ok()? == device;
            same.then(|| {
                format!(
                    "{} mounted at {}",
                    device.display(),
                    l.split(' ').nth(4).unwrap_or("?")
                )
            })
        });
        match mounted {
            Some(user) => return Some(user),
            None if source.is_file() => {
                let _ = std::process::Command::new("losetup")
                    .arg("-d")
                    .arg(&device)
                    .output();
            }
            None => {}
        }
    }
    None
}

/// The loop devices backing `image` (`losetup -j`).
fn backing_loops(image: &Path) -> Vec<PathBuf> {
    let out = std::process::Command::new("losetup")
        .args(["-n", "-O", "NAME", "-j"])
        .arg(image)
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    (text.unwrap_or_default().lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

fn volume_trees(
    options: &ConvertOptions,
    conf: &PveConf,
    container: &Container,
) -> Result<Trees, ConvertError> {
    let cfg = options.host.path("/etc/pve/storage.cfg");
    let storages = match std::fs::read_to_string(&cfg) {
        Ok(text) => volume::parse_storage_cfg(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(FileError::new("read", &cfg, e).into()),
    };
    let mut trees = Trees {
        rootfs: PathBuf::new(),
        volumes: Vec::new(),
        notes: Vec::new(),
        mounts: Vec::new(),
    };
    for v in volume::volumes(conf.entries())? {
        let (storage, volname) = match &v.source {
            Source::Storage { storage, volname } => (storage, volname),
            Source::Bind(path) => {
                trees.notes.push(format!("{} ({} at {}): a bind mount of a host directory, left as it is: its files keep their owners (the container sees those outside its map as nobody)", v.key, path.display(), v.mount_point));
                continue;
            }
            Source::Device(path) => {
                trees.notes.push(format!(
                    "{} ({} at {}): a host device, left as it is",
                    v.key,
                    path.display(),
                    v.mount_point
                ));
                continue;
            }
        };
        let dir = match volume::locate(&storages, &cfg, (storage, volname))? {
            Location::Directory(dir) => options.host.path(dir),
            Location::Image(file) | Location::Block(file) => {
                let point = container.dir().join("lxc-idshift.volumes").join(&v.key);
                let mounted = VolumeMount::new(&options.host.path(file), &point)?;
                trees.mounts.push(mounted);
                point
            }
        };
        if !dir.is_dir() {
            return Err(ConvertError::RootfsNotMounted(dir));
        }
        match v.key.as_str() {
            "rootfs" => trees.rootfs = dir,
            _ => trees.volumes.push(dir),
        }
    }
    if trees.rootfs.as_os_str().is_empty() {
        return Err(ConvertError::NoRootfs {
            config: options
                .host
                .path(format!("/etc/pve/lxc/{}.conf", container.name)),
        });
    }
    Ok(trees)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_works_only_privileged_is_said_with_what_to_do() {
        let rootfs = tempfile::tempdir().unwrap();
        let said = |conf: &str| privileged_only(&PveConf::parse(conf), rootfs.path()).join("\n");
        let nfs = said("features: mount=nfs;cifs,nesting=1\n");
        assert!(
            nfs.contains("mount=nfs;cifs") && nfs.contains("bind mount point"),
            "{nfs}"
        );
        assert!(said("features: quota=1\n").contains("quota=1"));
        assert_eq!(said("features: nesting=1\n"), "");
        std::fs::create_dir_all(rootfs.path().join("usr/bin")).unwrap();
        std::fs::write(rootfs.path().join("usr/bin/dockerd"), "").unwrap();
        assert!(said("features: nesting=1\n").contains("keyctl=1"));
        assert_eq!(said("features: nesting=1,keyctl=1\n"), "");
    }
}
