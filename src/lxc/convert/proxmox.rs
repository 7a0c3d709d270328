//! The Proxmox VE flavour of a conversion: the container's config is
//! `/etc/pve/lxc/VMID.conf` (Proxmox writes the LXC config from it at every start),
//! its files are its volumes (the rootfs and each storage-backed `mpN`, each a
//! file system and a journaled tree of its own), and while they are shifted the
//! `.conf` holds `lock: disk`, which Proxmox's start, backup, migration and
//! snapshot refuse. Everything else (the course, subordinate ids, units, the
//! shift itself) is the plain conversion's.

use super::*;
use crate::lxc::pve;
use crate::lxc::pve::volume::{self, Location, Source, PASSTHROUGH};
use pve::conf::PveConf;

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
    let now = Layout::new(conf.map().map_err(bad)?, Method::Shift);
    let course = course_from(options, &container, now)?;
    refuse_foreign_lock(&conf, &course, &container, conf_path)?;
    let snapshot = snapshot(options, &course)?;
    let trees = volume_trees((options, effects), &conf, &container)?;
    let recorded = course.interrupted.as_ref().unwrap_or(&course.recorded);
    let binds = bind_plan(
        options,
        &conf,
        (&container, &trees.rootfs),
        &course,
        &recorded.shifted_mounts,
    )?;
    let mut shifted = trees.volumes.clone();
    shifted.extend(binds.shift.iter().cloned());
    let mut notes = range_notes(options, &container, course.to_map())?;
    let (subids, subid_notes) = subid_change(options, &container, &course)?;
    notes.extend(subid_notes);
    notes.extend(shared_ids_note(course.to_map()));
    notes.extend(trees.notes);
    notes.extend(passed_devices(&conf));
    notes.extend(binds.notes);
    if course.to_map().is_some() {
        notes.extend(privileged_only(&conf, &trees.rootfs, &options.host));
    }
    let mut edits = match &subids {
        Some(change) => subid_edits(&options.host, change)?,
        None => Vec::new(),
    };
    let conf_edit = ConfEdit {
        map: course.to_map().cloned(),
        idmap_options: binds.idmap,
    };
    edits.push(FileEdit {
        path: conf_path.to_path_buf(),
        new: Some(conf_edit.apply(&conf).to_text()),
        old: Some(text),
    });
    let units = unit_plan(&trees.rootfs, course.to_map(), &recorded.masked_units);
    let state = match course.interrupted.clone() {
        Some(state) => state,
        None => ConversionState {
            shifted_mounts: shifted.clone(),
            granted_range: grants_new_range(&options.host, subids.as_ref())?,
            masked_units: units.masked.clone(),
            ..ConversionState::between(&course.from, &course.to, course.range)
        },
    };
    let mut unmapped = UnmappedIds::default();
    if let Some((map, direction)) = &course.shift {
        for tree in std::iter::once(&trees.rootfs).chain(&shifted) {
            let scan = unmapped::scan(tree, map, *direction, options.threads)?;
            refuse_linked_outside(&scan, (&container, tree), &options.host)?;
            if tree == &trees.rootfs && course.from.on_disk().is_none() {
                unmapped = scan.unmapped;
            }
        }
    }
    if !options.dry_run {
        pve::host::ensure_stopped(&container, effects)?;
    }
    Ok(Plan {
        flavour: Flavour::Proxmox {
            conf: conf_path.to_path_buf(),
            edit: conf_edit,
            snapshot,
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
        mount_shifts: shifted,
        volume_mounts: trees.mounts,
    })
}

/// What the conversion does to the `.conf`: the map set (`unprivileged`, raw
/// `lxc.idmap` lines) and the lock taken away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfEdit {
    pub map: Option<HostMap>,
    /// Mount points whose `idmap=` is set (Some) or taken away (None).
    pub idmap_options: Vec<(String, Option<String>)>,
}

impl ConfEdit {
    pub fn apply(&self, conf: &PveConf) -> PveConf {
        let edited = conf.with_lock(None).with_map(self.map.as_ref());
        (self.idmap_options.iter()).fold(edited, |conf, (key, value)| {
            conf.with_volume_option(key, "idmap", value.as_deref())
        })
    }
}

/// What becomes of the bind mount points (`mpN: /host/path`), as `--mounts`
/// says: shifted with the volumes (`shift`: only a source that is the
/// container's alone), mounted idmapped by Proxmox (`idmap`, and `auto` where
/// that shows fewer owners as nobody: `idmap=passthrough`, pve-container 6.1.6
/// and later), or kept as they are.
#[derive(Default)]
struct Binds {
    shift: Vec<PathBuf>,
    idmap: Vec<(String, Option<String>)>,
    notes: Vec<String>,
}

fn bind_plan(
    options: &ConvertOptions,
    conf: &PveConf,
    (container, rootfs): (&Container, &Path),
    course: &Course,
    recorded: &[PathBuf],
) -> Result<Binds, ConvertError> {
    let mut binds = Binds::default();
    for v in volume::volumes(conf.entries())? {
        let Source::Bind(path) = &v.source else {
            continue;
        };
        let source = options.host.path(path);
        let said = format!("{} ({} at {})", v.key, path.display(), v.mount_point);
        if recorded.contains(&source) {
            binds.notes.push(format!(
                "{said}: shifted by the conversion that made it unprivileged, it is shifted along"
            ));
            binds.shift.push(source);
            continue;
        }
        let Some(to) = course.to_map() else {
            let note = match v.idmap.as_deref() {
                Some(PASSTHROUGH) => {
                    binds.idmap.push((v.key.clone(), None));
                    "idmap=passthrough taken away: privileged, the container sees its files as they are on disk"
                }
                _ => "a bind mount of a host directory, left as it is",
            };
            binds.notes.push(format!("{said}: {note}"));
            continue;
        };
        if let Some(own) = &v.idmap {
            binds
                .notes
                .push(format!("{said}: its own idmap={own} stays"));
            continue;
        }
        if !source.is_dir() {
            binds.notes.push(format!(
                "{said}: {} is no directory here, left as it is",
                source.display()
            ));
            continue;
        }
        match options.mounts {
            MountsChoice::Shift => {
                if course.from.on_disk().is_some_and(|from| from != to) {
                    return Err(ConvertError::MountShiftOnRangeMove {
                        name: options.name.clone(),
                        mount: source,
                        args: to.args(),
                    });
                }
                refuse_shared_bind(options, (container, rootfs), &source)?;
                binds.notes.push(format!("{said}: shifted with the volumes' map (journaled in {}; --to 0 shifts it back)", container.dir().display()));
                binds.shift.push(source);
            }
            MountsChoice::Keep => binds.notes.push(kept(&said, None)),
            MountsChoice::Idmap | MountsChoice::Auto => {
                let works = pve::host::mount_point_idmap(&options.host)
                    .and_then(|()| mounts::kernel_idmaps(&source, to.root_uid(), to.span()));
                let asked = options.mounts == MountsChoice::Idmap;
                match works {
                    Ok(()) if asked || idmapped_shows_more(&source, to, options.threads) => {
                        binds
                            .idmap
                            .push((v.key.clone(), Some(PASSTHROUGH.to_string())));
                        binds.notes.push(format!("{said}: idmap=passthrough added: Proxmox mounts it idmapped, and the container sees its files with their own owners; nothing on disk changes"));
                    }
                    Ok(()) => binds.notes.push(kept(&said, None)),
                    Err(why) if asked => {
                        return Err(ConvertError::IdmapUnsupported {
                            mount: source,
                            why,
                            name: options.name.clone(),
                        })
                    }
                    Err(why) => binds.notes.push(kept(&said, Some(&why))),
                }
            }
        }
    }
    Ok(binds)
}

fn kept(said: &str, why_not_idmapped: Option<&str>) -> String {
    let why = why_not_idmapped.map_or(String::new(), |w| format!(" (no idmapped mount: {w})"));
    format!("{said}: a bind mount of a host directory, kept as it is{why}: the container sees owners outside its map as nobody; --mounts idmap (idmap=passthrough) or --mounts shift change that")
}

/// Whether `source` mounted idmapped shows fewer owners as nobody than plain.
fn idmapped_shows_more(source: &Path, to: &HostMap, threads: Option<usize>) -> bool {
    let scan = |idmapped| {
        let view = View {
            maps: to.entries().to_vec(),
            idmapped,
        };
        mounts::scan(source, &view, threads).map(|s| s.nobody)
    };
    matches!((scan(true), scan(false)), (Ok(idmapped), Ok(plain)) if idmapped < plain)
}

/// Refuses to shift a bind source that is not the container's alone: what the
/// plain conversion looks for, and on Proxmox other containers' mount points and
/// the storages' directories.
fn refuse_shared_bind(
    options: &ConvertOptions,
    (container, rootfs): (&Container, &Path),
    source: &Path,
) -> Result<(), ConvertError> {
    let mut users = shared::other_users(source, None, (container, rootfs), &options.host);
    users.extend(proxmox_users(source, container, &options.host));
    if users.is_empty() {
        return Ok(());
    }
    Err(ConvertError::SharedMountSource {
        mount: source.to_path_buf(),
        users: users.join("; "),
    })
}

/// Other Proxmox containers binding `source` (or a directory holding it, or one
/// inside it), and storages whose directory overlaps it.
fn proxmox_users(source: &Path, container: &Container, host: &Host) -> Vec<String> {
    let source = shared::canonical(source);
    let overlaps = |other: &Path| shared::overlaps(&source, &shared::canonical(other));
    let mut users = Vec::new();
    let others = pve::host::vmids(host).into_iter();
    for vmid in others.filter(|vmid| *vmid != container.name) {
        let Ok((path, conf)) = pve::host::conf_of(host, &vmid) else {
            continue;
        };
        for v in volume::volumes(conf.entries()).unwrap_or_default() {
            match &v.source {
                Source::Bind(bind) if overlaps(&host.path(bind)) => {
                    users.push(format!(
                        "Proxmox container {vmid} ({}) binds {} too",
                        path.display(),
                        bind.display()
                    ));
                }
                _ => {}
            }
        }
    }
    for storage in pve::host::storages(host).unwrap_or_default() {
        if let Some(dir) = storage.path().filter(|d| overlaps(&host.path(d))) {
            users.push(format!("it is in, or holds, the directory of Proxmox storage {} ({}), which holds the volumes of other guests", storage.id, dir.display()));
        }
    }
    users
}

/// `--snapshot NAME`, checked: a name Proxmox takes, and a conversion that starts
/// now (a snapshot of half-shifted volumes would be no way back).
fn snapshot(options: &ConvertOptions, course: &Course) -> Result<Option<String>, ConvertError> {
    let Some(name) = &options.snapshot else {
        return Ok(None);
    };
    let refused = |why: &str| ConvertError::Snapshot {
        name: name.clone(),
        why: why.to_string(),
    };
    // Proxmox's `pve-configid` format.
    let mut chars = name.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !first || !rest || !(2..=40).contains(&name.len()) {
        return Err(refused(
            "Proxmox names a snapshot with a letter, then 1 to 39 letters, digits, '-' or '_'",
        ));
    }
    if course.interrupted.is_some() {
        return Err(refused("this conversion was interrupted: its volumes are half shifted, and a snapshot of them would be no way back; finish or undo it without --snapshot"));
    }
    Ok(Some(name.clone()))
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
    if *to != pve::conf::default_map() {
        check_range_free(&options.host, container, to)?;
        return Ok(Vec::new());
    }
    let range = IdRange::new(pve::conf::DEFAULT_FIRST, pve::conf::DEFAULT_COUNT);
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
pub fn privileged_only(conf: &PveConf, rootfs: &Path, host: &Host) -> Vec<String> {
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
            let entry = dev_entry(node, host);
            notes.push(format!("{key}: {value}: unprivileged, Proxmox passes a device in with a devN: entry, whose owner and group are the container's (those it has now), which replaces this line and its lxc.cgroup2.devices.allow line: `pct set VMID -devN {entry}` (N: the first free number)"));
        }
    }
    notes
}

/// The `devN:` value passing `node` in as the privileged container has it: its
/// owner, group and mode on the host are the container's own ids (a privileged
/// container's ids are the host's), which Proxmox gives the node inside.
fn dev_entry(node: &str, host: &Host) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(host.path(node)) {
        Ok(meta) => format!(
            "{node},uid={},gid={},mode=0{:o}",
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777
        ),
        Err(_) => format!("{node},gid=GID,mode=0660 (GID: the group that uses it inside, e.g. 20 for dialout; {node} is not on this host now)"),
    }
}

/// The `devN:` entries: Proxmox creates each node inside the container with the
/// owner, group and mode the entry gives, which are container ids whatever the
/// map, so the conversion leaves them as they are.
fn passed_devices(conf: &PveConf) -> Vec<String> {
    let is_dev = |key: &str| {
        key.strip_prefix("dev")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    (conf.entries().into_iter())
        .filter(|(key, _)| is_dev(key))
        .map(|(key, value)| format!("{key} ({value}): a device Proxmox creates inside with these container ids, left as it is"))
        .collect()
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
    /// The logical volume (`VG/LV`) activated for the conversion, deactivated
    /// again after the unmount, as Proxmox leaves a stopped container's volumes.
    activated: Option<String>,
}

/// A logical volume of a stopped container is inactive (no `/dev/VG/LV`):
/// activated as Proxmox's storage plugins do (`lvchange -ay`, `-K` for thin
/// volumes, which skip activation otherwise); its `VG/LV` when this did it.
fn activate(effects: &dyn HostEffects, source: &Path) -> Result<Option<String>, ConvertError> {
    let parts: Vec<&str> = source.iter().filter_map(|c| c.to_str()).collect();
    let in_dev = parts.len() >= 2 && parts[..parts.len() - 2].ends_with(&["dev"]);
    if source.exists() || !in_dev {
        return Ok(None);
    }
    let lv = parts[parts.len() - 2..].join("/");
    let fail = |why: String| ConvertError::VolumeMount {
        volume: source.to_path_buf(),
        why,
    };
    let args = ["-ay", "-K", lv.as_str()].map(std::ffi::OsStr::new);
    let out = (effects.run("lvchange", &args))
        .map_err(|e| fail(format!("cannot activate it: lvchange: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(fail(format!("`lvchange -ay -K {lv}` failed: {said}")));
    }
    Ok(Some(lv))
}

impl VolumeMount {
    /// Tries a few times: the `mount` of a run killed a moment ago may still be
    /// finishing (a child outlives its parent's SIGKILL).
    fn new(
        source: &Path,
        point: &Path,
        activated: Option<String>,
    ) -> Result<VolumeMount, ConvertError> {
        const ATTEMPTS: u32 = 10;
        let fail = |why: String| ConvertError::VolumeMount {
            volume: source.to_path_buf(),
            why,
        };
        // Deactivated again (when dropped) whatever happens next.
        let mut mount = VolumeMount {
            point: point.to_path_buf(),
            activated,
        };
        std::fs::create_dir_all(point).map_err(failed("create the directory", point))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match try_mount(source, point) {
                Ok(()) => return Ok(mount),
                Err(why) if attempt == ATTEMPTS || !source.exists() => {
                    // Nothing mounted: only the activation to undo.
                    mount.point = PathBuf::new();
                    return Err(fail(why));
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(300)),
            }
        }
    }
}

/// A ZFS subvol dataset is its own file system: shifting the directory it is
/// mounted on while it is not mounted would shift nothing of it. Mounted as
/// Proxmox's ZFS plugin does (`zfs mount`), and left mounted, as Proxmox leaves it.
fn mount_dataset(effects: &dyn HostEffects, dataset: &str, dir: &Path) -> Result<(), ConvertError> {
    if is_mount_point(dir) {
        return Ok(());
    }
    let args = ["mount", dataset].map(std::ffi::OsStr::new);
    let said = match effects.run("zfs", &args) {
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("zfs: {e}"),
    };
    match is_mount_point(dir) {
        true => Ok(()),
        false => Err(ConvertError::VolumeMount {
            volume: dir.to_path_buf(),
            why: format!("ZFS dataset {dataset} is not mounted there, and `zfs mount {dataset}` did not mount it ({said}); mount it, then run the same command again"),
        }),
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
        let mounted = !self.point.as_os_str().is_empty();
        if mounted && unmount(&self.point).is_ok() {
            let _ = std::fs::remove_dir(&self.point);
        }
        if let Some(lv) = &self.activated {
            let _ = std::process::Command::new("lvchange")
                .args(["-an", lv])
                .output();
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
    (options, effects): (&ConvertOptions, &dyn HostEffects),
    conf: &PveConf,
    container: &Container,
) -> Result<Trees, ConvertError> {
    let cfg = pve::host::storage_cfg(&options.host);
    let storages = pve::host::storages(&options.host)?;
    let mut trees = Trees {
        rootfs: PathBuf::new(),
        volumes: Vec::new(),
        notes: Vec::new(),
        mounts: Vec::new(),
    };
    for v in volume::volumes(conf.entries())? {
        let (storage, volname) = match &v.source {
            Source::Storage { storage, volname } => (storage, volname),
            // Said by `bind_plan`, which decides what becomes of them.
            Source::Bind(_) => continue,
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
            Location::Directory(dir) => {
                let dir = options.host.path(dir);
                if let Some(dataset) = volume::zfs_dataset(&storages, (storage, volname)) {
                    mount_dataset(effects, &dataset, &dir)?;
                }
                dir
            }
            Location::Image(file) | Location::Block(file) => {
                let point = container.dir().join("lxc-idshift.volumes").join(&v.key);
                trees.notes.push(format!(
                    "{} ({storage}:{volname} at {}): {} holds a file system, mounted at {} for the conversion and unmounted after it",
                    v.key,
                    v.mount_point,
                    file.display(),
                    point.display()
                ));
                let source = options.host.path(file);
                let activated = activate(effects, &source)?;
                let mounted = VolumeMount::new(&source, &point, activated)?;
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

    /// An inactive logical volume is activated as Proxmox's plugins do, by name;
    /// anything else (an image, an active volume) is left alone.
    #[test]
    fn an_inactive_logical_volume_is_activated_by_its_name() {
        use crate::lxc::effects::{HostCall, RecordingHost};
        let root = tempfile::tempdir().unwrap();
        let lv = root.path().join("dev/pve/vm-101-disk-0");
        let host = RecordingHost::new().answer("lvchange", "");
        assert_eq!(
            activate(&host, &lv).unwrap().as_deref(),
            Some("pve/vm-101-disk-0")
        );
        let called = host.calls();
        assert!(
            matches!(&called[..], [HostCall::Run { program, args }]
                if program == "lvchange" && args[..] == ["-ay", "-K", "pve/vm-101-disk-0"]),
            "{called:?}"
        );
        let image = root.path().join("images/101/vm-101-disk-0.raw");
        assert_eq!(activate(&host, &image).unwrap(), None);
        std::fs::create_dir_all(lv.parent().unwrap()).unwrap();
        std::fs::write(&lv, "").unwrap();
        assert_eq!(activate(&host, &lv).unwrap(), None, "active already");
        std::fs::remove_file(&lv).unwrap();
        let without_lvm = RecordingHost::new();
        let err = activate(&without_lvm, &lv).unwrap_err().to_string();
        assert!(err.contains("lvchange"), "{err}");
    }

    /// A ZFS dataset not mounted on its directory is mounted with `zfs mount`, and
    /// refused when that does not mount it: an empty directory is no volume.
    #[test]
    fn an_unmounted_zfs_dataset_is_mounted_or_refused() {
        use crate::lxc::effects::{HostCall, RecordingHost};
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("rpool/data/subvol-101-disk-0");
        std::fs::create_dir_all(&dir).unwrap();
        let host = RecordingHost::new().answer("zfs", "");
        let err = mount_dataset(&host, "rpool/data/subvol-101-disk-0", &dir).unwrap_err();
        assert!(
            err.to_string()
                .contains("zfs mount rpool/data/subvol-101-disk-0"),
            "{err}"
        );
        let called = host.calls();
        assert!(
            matches!(&called[..], [HostCall::Run { program, args }]
                if program == "zfs" && args[..] == ["mount", "rpool/data/subvol-101-disk-0"]),
            "{called:?}"
        );
        // A mount point already: nothing to do.
        let mounted = RecordingHost::new();
        assert!(mount_dataset(&mounted, "any", Path::new("/")).is_ok());
        assert!(mounted.calls().is_empty());
    }

    #[test]
    fn what_works_only_privileged_is_said_with_what_to_do() {
        let rootfs = tempfile::tempdir().unwrap();
        let said = |conf: &str| {
            privileged_only(
                &PveConf::parse(conf),
                rootfs.path(),
                &Host::under(rootfs.path()),
            )
            .join("\n")
        };
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
