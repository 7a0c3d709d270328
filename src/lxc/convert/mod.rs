//! `lxc-idshift NAME --to HOSTID`: the whole privileged <-> unprivileged conversion of
//! a container. Everything is checked and planned before the first write; every step
//! is idempotent, and the rootfs shift is journaled, so running the same command
//! again after an interruption finishes the job.

mod describe;
mod execute;
pub mod proxmox;
#[cfg(test)]
mod tests;

pub use describe::describe;
pub use execute::{execute, mount_journal};

use super::accounts::{self, HostAccounts, IdBounds, SubIdBounds};
use super::check;
use super::config::{self, Backend, ContainerConfig};
use super::container::{Container, ContainerError};
use super::effects::HostEffects;
use super::host::Host;
use super::hostmap::{self, HostMap, HostMapError, SharedId};
use super::lock;
use super::manager::OtherManager;
use super::method::{self, Layout, Method};
use super::mounts::{self, Origin, ScannedMount, View, IDMAP_OPTION};
use super::perms::{self, Ownership, PermChange};
use super::pve;
use super::shared;
use super::subid::{self, SubIdChange, SubIds};
use super::udev;
use super::units;
use super::unmapped::{self, UnmappedIds};
use crate::engine::idmap::{Direction, IdKind, IdMap, MapEntry};
use crate::engine::idrange::IdRange;
use crate::engine::run::{self, ShiftReport};
use crate::fsutil::{failed, FileError};
use std::path::{Path, PathBuf};

/// The user that owns the subordinate ids of system containers.
const ROOT_USER: &str = "root";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Privileged,
    HostId(u32),
    Auto,
    /// `--map`: the whole map, of any shape.
    Map(HostMap),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(text: &str) -> Result<Target, String> {
        match text {
            "auto" => Ok(Target::Auto),
            "0" => Ok(Target::Privileged),
            n => n.parse().map(Target::HostId).map_err(|_| {
                format!("--to {n:?}: expected 0 (privileged), a host id such as 1000000, or auto")
            }),
        }
    }
}

/// What `--mounts` asks for the bind mounts of host paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MountsChoice {
    /// `idmap` where an idmapped mount of the source works and shows fewer owners
    /// as nobody, else `keep` with the warning.
    #[default]
    Auto,
    /// `idmap=container` added to each entry; refused where it does not work.
    Idmap,
    /// The source directories shifted with the rootfs (journaled in the container's
    /// directory, shifted back by `--to 0`): for directories only this container uses.
    Shift,
    /// Left as they are; the plan says what the container will see as nobody.
    Keep,
}

impl std::str::FromStr for MountsChoice {
    type Err = String;
    fn from_str(text: &str) -> Result<MountsChoice, String> {
        match text {
            "idmap" => Ok(MountsChoice::Idmap),
            "keep" => Ok(MountsChoice::Keep),
            "shift" => Ok(MountsChoice::Shift),
            "auto" => Ok(MountsChoice::Auto),
            other => Err(format!("--mounts {other:?}: expected idmap, shift or keep")),
        }
    }
}

pub struct ConvertOptions {
    pub name: String,
    pub to: Target,
    pub range: u32,
    pub lxcpath: Option<PathBuf>,
    pub dry_run: bool,
    pub devices: Vec<PathBuf>,
    pub release_range: bool,
    pub threads: Option<usize>,
    pub host: Host,
    /// `--mounts`: what happens to bind mounts of host paths.
    pub mounts: MountsChoice,
    /// `--method`: how the rootfs becomes unprivileged (None: the container's own
    /// method when it is unprivileged already, else shift).
    pub method: Option<Method>,
    /// `--share-ids`: host ids the container gets as themselves (with --to HOSTID
    /// or auto).
    pub share_ids: Vec<SharedId>,
    /// `--snapshot NAME`: Proxmox VE only, a `pct snapshot` before the first change.
    pub snapshot: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    SubId(#[from] subid::SubIdError),
    #[error(transparent)]
    Device(#[from] udev::DeviceError),
    #[error(transparent)]
    Shift(#[from] run::RunError),
    #[error(transparent)]
    Map(#[from] crate::engine::idmap::IdMapError),
    #[error("{config}: {source}; nothing was changed")]
    ContainerMap {
        config: PathBuf,
        source: HostMapError,
    },
    #[error(transparent)]
    TargetMap(#[from] HostMapError),
    #[error("--share-ids is for unprivileged targets (--to HOSTID or --to auto): a privileged container's ids are all the host's own")]
    ShareWithoutTarget,
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Accounts(#[from] accounts::AccountError),
    #[error(transparent)]
    Mounts(#[from] mounts::MountError),
    /// An operation on a file failed; the error names the path.
    #[error("{0}; fix that, then run the same command again")]
    File(#[from] FileError),
    #[error("{config}: no lxc.rootfs.path, so this is no LXC container config; `lxc-idshift list` shows the containers there (-P DIR names another lxcpath)")]
    NoRootfs { config: PathBuf },
    #[error("rootfs {rootfs} uses the {backend} backend, which lxc-idshift cannot shift in place: {why}")]
    UnsupportedRootfs {
        rootfs: String,
        backend: String,
        why: &'static str,
    },
    #[error(
        "rootfs {0} is not a mounted directory; mount it (btrfs subvolume / zfs dataset) and retry"
    )]
    RootfsNotMounted(PathBuf),
    #[error("range {first}..{last} overlaps container {other}'s map ({other_first}..{other_last}); choose another --to (or --to auto)")]
    RangeTaken {
        first: u32,
        last: u32,
        other: String,
        other_first: u32,
        other_last: u32,
    },
    #[error("no free range of {count} ids between {min} and {max} (SUB_UID_MIN/SUB_GID_MIN and SUB_UID_MAX/SUB_GID_MAX in {login_defs}); raise those bounds or pass --to HOSTID explicitly")]
    NoFreeRange {
        count: u32,
        min: u32,
        max: u32,
        login_defs: PathBuf,
    },
    #[error("range {first}..{last} holds the host's {account}: container ids would be that account on the host; choose another --to (--to auto skips host accounts)")]
    HostAccountInRange {
        first: u32,
        last: u32,
        account: String,
    },
    #[error("bind mount {mount} cannot be idmapped: {why}; convert with --mounts keep (the container sees its files' owners as nobody) or fix the cause, then run `lxc-idshift {name} --to ...` again")]
    IdmapUnsupported {
        mount: PathBuf,
        why: String,
        name: String,
    },
    #[error("{count} files of {tree} have hard links outside it (for example {example}{with}): a shift would change those other names too, so it could neither finish nor come back exactly. Nothing was changed. Give it files of its own, e.g. `cp -a {tree} {tree}.own && mv {tree} {tree}.shared && mv {tree}.own {tree}` (cp -a keeps the hard links inside the copy), then run the same command again")]
    RootfsSharesInodes {
        tree: PathBuf,
        count: usize,
        example: PathBuf,
        with: String,
    },
    #[error("lxc.rootfs.path = {value} in {config} is a relative path, which LXC resolves against the directory the LXC command runs in: lxc-idshift cannot tell which directory that is. Nothing was changed: write the rootfs's absolute path there, then run the same command again")]
    RelativeRootfs { config: PathBuf, value: String },
    #[error("bind mount source {mount} was shifted with the rootfs by an earlier conversion, but it is no longer a directory there{now}. Nothing was changed: put it back at {mount} and run the same command again; if it is gone for good, create an empty directory there first")]
    ShiftedSourceMissing { mount: PathBuf, now: String },
    #[error("--mounts shift would re-own bind mount source {mount} with the container's range, but it is not the container's alone: {users}. Convert with --mounts idmap (the container sees its files with their owners; nothing on disk changes) or --mounts keep, or give the container a directory of its own")]
    SharedMountSource { mount: PathBuf, users: String },
    #[error("{conf}: {source}")]
    ProxmoxConf {
        conf: PathBuf,
        source: crate::lxc::pve::conf::PveConfError,
    },
    #[error(transparent)]
    ProxmoxVolume(#[from] crate::lxc::pve::volume::VolumeError),
    #[error("volume {volume} cannot be mounted for the conversion: {why}; nothing was changed")]
    VolumeMount { volume: PathBuf, why: String },
    #[error("container {vmid} holds `lock: {lock}` in {conf}: Proxmox is in the middle of another operation on it (or one was interrupted). Nothing was changed: let it finish, or {}, then run the same command again", match lock.as_str() {
        "mounted" => format!("unmount its volumes with `pct unmount {vmid}`"),
        _ => format!("clear it with `pct unlock {vmid}` if you know it is stale"),
    })]
    ProxmoxLocked {
        vmid: String,
        lock: String,
        conf: PathBuf,
    },
    #[error("--snapshot {name}: {why}; nothing was changed")]
    Snapshot { name: String, why: String },
    #[error("container {vmid}: `pct snapshot {vmid} {name}` failed: {why}. Nothing was changed: take a backup instead (vzdump {vmid}) and run the same command without --snapshot, or move the volumes to storage that snapshots (ZFS, Btrfs, LVM-thin, Ceph)")]
    ProxmoxSnapshot {
        vmid: String,
        name: String,
        why: String,
    },
    #[error("container {vmid}: {what} is not converted by lxc-idshift yet ({why}). Nothing was changed; Proxmox's backup and `pct restore --unprivileged` converts it meanwhile")]
    ProxmoxNotYet {
        vmid: String,
        what: String,
        why: &'static str,
    },
    #[error("rootfs {rootfs} is the lower layer of container {other}'s overlay rootfs ({config}): shifting it would change {other}'s files too. Make {other} a full copy first (lxc-copy -n {other} -N NEWNAME -B dir, then lxc-destroy -n {other}), then run the same command again; nothing was changed")]
    LowerLayerOfClone {
        rootfs: PathBuf,
        other: String,
        config: PathBuf,
    },
    #[error("{message}: the container could not start after the conversion. Open it to the container's root ({fix}), then run the same command again; nothing was changed")]
    ParentNotTraversable { message: String, fix: String },
    #[error("--range must be at least 1; leave it out for the default, 65536")]
    EmptyRange,
    #[error("a conversion from {origin} to {target} was interrupted: finish it ({target_args}) or undo it ({origin_args}) first")]
    Interrupted {
        origin: Layout,
        target: Layout,
        origin_args: String,
        target_args: String,
    },
    #[error("rootfs {rootfs} cannot be mounted idmapped here: {why}; convert with --method shift instead (`lxc-idshift {name} {args} --method shift` shifts the rootfs once and works on any kernel)")]
    RootfsIdmapUnsupported {
        rootfs: PathBuf,
        why: String,
        name: String,
        args: String,
    },
    #[error("--method is for unprivileged targets: leave it out with --to 0 (going privileged removes {IDMAP_OPTION} or shifts the rootfs back, whichever the container uses)")]
    MethodWithoutTarget,
    #[error("--method idmap leaves the rootfs unshifted, so nothing shifts bind mount sources along ({why}): use --mounts idmap or --mounts keep, or --method shift")]
    MountShiftWithIdmap { why: String },
    #[error("--mounts shift while moving {name} between host ranges: bind mount source {mount} was never shifted, and only a conversion from privileged shifts a source (its files hold the host's own ids). Use --mounts idmap or --mounts keep for this move, or go `lxc-idshift {name} --to 0` first and then `{args} --mounts shift`")]
    MountShiftOnRangeMove {
        name: String,
        mount: PathBuf,
        args: String,
    },
}

/// What a conversion records in the container's directory before its first write:
/// where it comes from and where it heads, so that an interrupted conversion can be
/// finished or undone even though the config still describes where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConversionState {
    /// Host id of container root before the conversion (None: privileged).
    pub origin: Option<u32>,
    /// Host id of container root it heads for.
    pub target: Option<u32>,
    pub range: u32,
    /// Ownerships before the first conversion to unprivileged, restored by `--to 0`.
    pub perms: Vec<Ownership>,
    /// Bind mount sources shifted with the rootfs (`--mounts shift`), shifted back
    /// by `--to 0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shifted_mounts: Vec<PathBuf>,
    /// The rootfs method before and after (absent: shift, as before methods existed).
    #[serde(default, skip_serializing_if = "Method::is_shift")]
    pub origin_method: Method,
    #[serde(default, skip_serializing_if = "Method::is_shift")]
    pub target_method: Method,
    /// Whether this conversion gave root its range (root did not hold it before):
    /// undoing it, interrupted, takes the range back, so that /etc/subuid and
    /// /etc/subgid are as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub granted_range: bool,
    /// The owners of the passed-through device nodes before the first conversion to
    /// unprivileged, given back by `--to 0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_owners: Vec<DeviceOwner>,
    /// The systemd units masked in the rootfs because they cannot work
    /// unprivileged, unmasked by `--to 0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked_units: Vec<String>,
    /// The whole maps when they are not one range (`origin`/`target` and `range`
    /// say it for one range): split user and group ranges, holes, shared ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_map: Option<Vec<MapEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_map: Option<Vec<MapEntry>>,
}

impl ConversionState {
    /// A state for a conversion between two layouts.
    pub(super) fn between(origin: &Layout, target: &Layout, range: u32) -> ConversionState {
        let pieces = |l: &Layout| {
            (l.map.as_ref())
                .filter(|m| m.one_range() != Some((m.root_uid(), range)))
                .map(|m| m.entries().to_vec())
        };
        ConversionState {
            origin: origin.root(),
            target: target.root(),
            range,
            origin_method: origin.method,
            target_method: target.method,
            origin_map: pieces(origin),
            target_map: pieces(target),
            ..ConversionState::default()
        }
    }

    /// The map of one end: None when privileged (`root` None).
    fn map_of(
        root: Option<u32>,
        pieces: &Option<Vec<MapEntry>>,
        range: u32,
    ) -> Result<Option<HostMap>, HostMapError> {
        let Some(root) = root else {
            return Ok(None);
        };
        match pieces {
            Some(pieces) => HostMap::new(pieces.clone()).map(Some),
            None => HostMap::simple(root, range).map(Some),
        }
    }

    /// A state read back is checked by `valid`, so its maps read here.
    pub fn origin_layout(&self) -> Layout {
        let map = Self::map_of(self.origin, &self.origin_map, self.range);
        Layout::new(map.ok().flatten(), self.origin_method)
    }

    pub fn target_layout(&self) -> Layout {
        let map = Self::map_of(self.target, &self.target_map, self.range);
        Layout::new(map.ok().flatten(), self.target_method)
    }

    /// Whether each end's map is valid (a state file is read back through this).
    fn valid(&self) -> Result<(), HostMapError> {
        Self::map_of(self.origin, &self.origin_map, self.range)?;
        Self::map_of(self.target, &self.target_map, self.range)?;
        Ok(())
    }

    /// Whether the recorded conversion was interrupted, the container's config
    /// saying it is at `now`: the config is written after the rootfs, so a state
    /// heading elsewhere is one whose rootfs may be half-way.
    pub fn interrupted_at(&self, now: &Layout) -> bool {
        self.target_layout() != *now
    }
}

/// A device node and the host owner and group it gets (or had).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceOwner {
    pub node: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// A file rewritten by the conversion; None stands for a file that does not exist
/// (before) or is removed (after).
#[derive(Debug, Clone)]
pub struct FileEdit {
    pub path: PathBuf,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl FileEdit {
    fn changes(&self) -> bool {
        self.old != self.new
    }
}

/// Everything the conversion will do, decided before anything is written.
pub struct Plan {
    /// Plain LXC, or the host flavour that owns the container's config.
    pub flavour: Flavour,
    pub container: Container,
    pub rootfs: PathBuf,
    /// Where the container stands before and after: its map and rootfs method.
    pub before: Layout,
    pub after: Layout,
    /// Whether an idmapped mount of the rootfs works here with the target's map
    /// (probed for `--method idmap` and `--dry-run`; None when not probed).
    pub idmap_probe: Option<Result<(), String>>,
    pub range: u32,
    pub shift: Option<(IdMap, Direction)>,
    pub edits: Vec<FileEdit>,
    pub perms: Vec<PermChange>,
    /// Recorded before the first write.
    pub state: ConversionState,
    /// The host files a conversion may rewrite (subordinate ids, udev rule).
    pub host_files: Vec<PathBuf>,
    /// The units masked (going unprivileged) or unmasked (going privileged) in the
    /// rootfs.
    pub units: UnitPlan,
    pub udev_rules: Option<FileEdit>,
    /// Whether a udevd runs to reload `udev_rules` (asked while planning).
    pub udevd_runs: bool,
    pub device_owners: Vec<DeviceOwner>,
    /// What happens to root's subordinate ids; the edits above show it, but
    /// `execute` applies it to the files as they are once locked.
    pub subids: Option<SubIdChange>,
    pub host: Host,
    /// Owners and groups in the rootfs that the shift leaves alone (they show as
    /// nobody inside), per id; empty unless the rootfs shifts from container ids 0..
    pub unmapped: UnmappedIds,
    /// The bind mounts of host paths, each with what it holds as the container
    /// will see it (or why it could not be scanned). Their files are not shifted.
    pub mounts: Vec<ScannedMount>,
    /// Why the bind mounts could not be listed, if they could not.
    pub mounts_unlisted: Option<String>,
    /// What `--mounts` decided for each bind mount, in words.
    pub mount_notes: Vec<String>,
    /// What the conversion does differently from what was asked, and why.
    pub notes: Vec<String>,
    /// Bind mount sources shifted with the rootfs's map and direction.
    pub mount_shifts: Vec<PathBuf>,
    /// Volumes mounted for the conversion (Proxmox VE images and logical
    /// volumes), unmounted when the plan is dropped.
    pub volume_mounts: Vec<proxmox::VolumeMount>,
}

impl Plan {
    /// The map after the conversion (None: privileged).
    pub fn to_map(&self) -> Option<&HostMap> {
        self.after.map.as_ref()
    }
}

/// Where a container's config lives and how a conversion keeps it from starting
/// meanwhile: the one place the host flavours differ once planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavour {
    /// `<lxcpath>/<name>/config`, guarded by a start hook (`config::guard`).
    Lxc,
    /// Proxmox VE: `/etc/pve/lxc/VMID.conf`, from which Proxmox writes the LXC
    /// config at every start, guarded by its `lock:` (see `proxmox`).
    Proxmox {
        conf: PathBuf,
        /// Applied to the `.conf` as it is at the final write (others, `pct
        /// snapshot` among them, may have written it since the plan).
        edit: proxmox::ConfEdit,
        /// `--snapshot NAME`, taken before the first change.
        snapshot: Option<String>,
    },
}

impl Flavour {
    /// Refuses a running container, asking the manager that starts it.
    pub fn ensure_stopped(
        &self,
        container: &Container,
        effects: &dyn HostEffects,
    ) -> Result<(), ContainerError> {
        match self {
            Flavour::Lxc => container.ensure_stopped(effects),
            Flavour::Proxmox { .. } => crate::lxc::pve::host::ensure_stopped(container, effects),
        }
    }
}

/// What a conversion did.
pub struct Outcome {
    pub plan: Plan,
    pub shift: Option<ShiftReport>,
    /// The shifts of bind mount sources (`--mounts shift`), in plan order.
    pub mount_shifts: Vec<ShiftReport>,
    pub udev_reloaded: Option<bool>,
}

/// Plans the conversion: checks everything (last, unless `--dry-run`, that the
/// container is stopped), changes nothing; `effects` runs the LXC tools. A caller
/// that goes on to `execute` takes [`lock::ConversionLock`] before planning and
/// holds it until `execute` returns, so that no other conversion chooses the same
/// range meanwhile.
pub fn plan(options: &ConvertOptions, effects: &dyn HostEffects) -> Result<Plan, ConvertError> {
    if options.range == 0 {
        return Err(ConvertError::EmptyRange);
    }
    let container = Container::find_on(
        &options.name,
        options.lxcpath.as_deref(),
        effects,
        &options.host,
    )?;
    if let Some(manager) = OtherManager::of(&container, &options.host) {
        return proxmox::plan(options, effects, container, &manager.conf);
    }
    if let Some(name) = &options.snapshot {
        return Err(ConvertError::Snapshot {
            name: name.clone(),
            why: "snapshots are taken for Proxmox VE containers only (plain LXC's lxc-snapshot copies a directory rootfs whole: take it yourself first if you want one)".into(),
        });
    }
    let config_path = container.config();
    let on_disk = std::fs::read_to_string(&config_path).map_err(failed("read", &config_path))?;
    // An interrupted conversion left its start guard: planned from the config as it
    // was, and the final write takes the guard away.
    let config = ContainerConfig::parse(&config::guard::unguarded(&on_disk));
    let rootfs = shiftable_rootfs(&config, &config_path)?;
    if let Some((other, config)) = shared::overlay_clones(&rootfs, &container, &options.host).pop()
    {
        return Err(ConvertError::LowerLayerOfClone {
            rootfs,
            other,
            config,
        });
    }
    let course = course(options, &container, &config)?;
    let idmap_probe = idmap_probe(options, effects, &rootfs, &course)?;
    if let Some(to) = course.to_map() {
        check_range_free(&options.host, &container, to)?;
    }
    let (subids, mut notes) = subid_change(options, &container, &course)?;
    notes.extend(shared_ids_note(course.to_map()));
    let mut edits = match &subids {
        Some(change) => subid_edits(&options.host, change)?,
        None => Vec::new(),
    };
    let shifted_mounts = &course
        .interrupted
        .as_ref()
        .unwrap_or(&course.recorded)
        .shifted_mounts;
    if course.to.method == Method::Idmap {
        refuse_mount_shift(options, shifted_mounts)?;
    }
    let mount_plan = mount_plan(
        (options, effects),
        (&container, &rootfs),
        &config,
        (course.from.on_disk(), course.to_map()),
        shifted_mounts,
    )?;
    let in_config = |o: &&Origin| o.file == config_path;
    let with_mounts = match course.to.map {
        Some(_) => mount_plan
            .edited
            .iter()
            .filter(in_config)
            .fold(config.clone(), |c, o| {
                c.with_mount_option(o.line, IDMAP_OPTION, true)
            }),
        None => config.without_mount_option(IDMAP_OPTION),
    };
    let others: Vec<&Origin> = mount_plan.edited.iter().filter(|o| !in_config(o)).collect();
    // Before the config's: the config is written last.
    edits.extend(mount_file_edits(&others, course.to.map.is_some())?);
    edits.push(FileEdit {
        new: Some(new_config(options, &with_mounts, &course).to_text()),
        path: config_path,
        old: Some(on_disk),
    });
    let (perms, record_perms) = perm_plan(&container, course.to_map(), &course.recorded.perms)?;
    if let Some(map) = course.to_map() {
        refuse_closed_parents(&rootfs, map, &perms)?;
    }
    let mount_shifts = match &course.interrupted {
        Some(state) => state.shifted_mounts.clone(),
        None if course.to.map.is_none() => course.recorded.shifted_mounts.clone(),
        None => {
            let mut all = course.recorded.shifted_mounts.clone();
            for source in &mount_plan.shift_sources {
                if !all.contains(source) {
                    all.push(source.clone());
                }
            }
            all
        }
    };
    refuse_missing_shifted(&mount_shifts, &mount_plan)?;
    let recorded_devices = &course
        .interrupted
        .as_ref()
        .unwrap_or(&course.recorded)
        .device_owners;
    let devices = device_plan(
        options,
        (&container, &config),
        &rootfs,
        course.to_map(),
        recorded_devices,
    )?;
    let recorded_units = &course
        .interrupted
        .as_ref()
        .unwrap_or(&course.recorded)
        .masked_units;
    let units = unit_plan(&rootfs, course.to_map(), recorded_units);
    let state = match course.interrupted.clone() {
        Some(state) => state,
        None => ConversionState {
            perms: record_perms,
            shifted_mounts: mount_shifts.clone(),
            granted_range: grants_new_range(&options.host, subids.as_ref())?,
            device_owners: devices.original,
            masked_units: units.masked.clone(),
            ..ConversionState::between(&course.from, &course.to, course.range)
        },
    };
    // Every shift walks the rootfs first (stat only): what the map leaves out and
    // files linked from outside, refused before the first write.
    let scan = match &course.shift {
        Some((map, direction)) => Some(unmapped::scan(&rootfs, map, *direction, options.threads)?),
        None => None,
    };
    if let Some(scan) = &scan {
        refuse_linked_outside(scan, (&container, &rootfs), &options.host)?;
    }
    // So does each bind mount source shifted along (shifted after the rootfs: a
    // refusal there would leave the conversion half-way).
    for source in mount_shifts.iter().filter(|s| s.is_dir()) {
        if let Some((map, direction)) = &course.shift {
            let found = unmapped::scan(source, map, *direction, options.threads)?;
            refuse_linked_outside(&found, (&container, source), &options.host)?;
        }
    }
    // Towards a container from privileged ids (0..): what its map leaves out. An
    // idmapped rootfs stays as it is: scanned for the --dry-run plan only, so that
    // the conversion itself costs no walk.
    let idmapped_from_zero = course.from.map.is_none() && course.to.method == Method::Idmap;
    let unmapped = match (&course.shift, course.to_map(), scan) {
        (Some(_), _, Some(scan)) if course.from.on_disk().is_none() => scan.unmapped,
        (None, Some(map), _) if idmapped_from_zero && options.dry_run => {
            let view = View {
                maps: map.entries().to_vec(),
                idmapped: true,
            };
            mounts::scan(&rootfs, &view, options.threads)?.hidden()
        }
        _ => UnmappedIds::default(),
    };
    if !options.dry_run {
        container.ensure_stopped(effects)?;
    }
    Ok(Plan {
        flavour: Flavour::Lxc,
        container,
        rootfs,
        before: course.from,
        after: course.to,
        idmap_probe,
        range: course.range,
        shift: course.shift,
        edits: edits.into_iter().filter(FileEdit::changes).collect(),
        perms,
        state,
        host_files: vec![
            options.host.subuid(),
            options.host.subgid(),
            udev::rules_path(&options.host, &options.name),
        ],
        udevd_runs: udev::udevd_runs(&options.host),
        units,
        udev_rules: devices.rules,
        device_owners: devices.owners,
        subids,
        host: options.host.clone(),
        unmapped,
        mounts: mount_plan.mounts,
        mounts_unlisted: mount_plan.unlisted,
        mount_notes: mount_plan.notes,
        notes,
        mount_shifts,
        volume_mounts: Vec::new(),
    })
}

/// Tries an idmapped mount of the rootfs with the target's map (nothing attached,
/// nothing written) when the target is idmapped, or to tell in a `--dry-run` plan;
/// an idmapped target where it does not work is refused.
fn idmap_probe(
    options: &ConvertOptions,
    effects: &dyn HostEffects,
    rootfs: &Path,
    course: &Course,
) -> Result<Option<Result<(), String>>, ConvertError> {
    let wanted = options.dry_run || course.to.method == Method::Idmap;
    let Some(map) = course.to_map().filter(|_| wanted) else {
        return Ok(None);
    };
    let probe = mounts::idmap_works(effects, rootfs, map.root_uid(), map.span());
    match (&probe, course.to.method) {
        (Err(why), Method::Idmap) => Err(ConvertError::RootfsIdmapUnsupported {
            rootfs: rootfs.to_path_buf(),
            why: why.clone(),
            name: options.name.clone(),
            args: map.args(),
        }),
        _ => Ok(Some(probe)),
    }
}

/// The container's root must traverse every parent of its rootfs to start: one it
/// cannot, and that the plan's permission changes do not open, is refused (what
/// `check` would report after the conversion), with the command that opens it.
fn refuse_closed_parents(
    rootfs: &Path,
    map: &HostMap,
    perms: &[PermChange],
) -> Result<(), ConvertError> {
    let view = View {
        maps: map.entries().to_vec(),
        idmapped: false,
    };
    let mut seen: Vec<PathBuf> = perms.iter().map(|p| p.path.clone()).collect();
    let ids = (map.root_uid(), map.root_gid());
    match check::closed_parents(rootfs, ids, &view, &mut seen)
        .into_iter()
        .next()
    {
        Some(closed) => Err(ConvertError::ParentNotTraversable {
            message: closed.message,
            fix: closed.fix,
        }),
        None => Ok(()),
    }
}

/// `--mounts shift` re-owns a source with the container's range: refused where
/// anything but this container uses it (see `shared`), naming each.
fn refuse_shared_source(
    options: &ConvertOptions,
    (container, rootfs): (&Container, &Path),
    bind: &mounts::BindMount,
    editable: bool,
) -> Result<(), ConvertError> {
    let foreign_entry = (!editable).then_some(bind.origin.file.as_path());
    let users = shared::other_users(
        &bind.host_source,
        foreign_entry,
        (container, rootfs),
        &options.host,
    );
    if users.is_empty() {
        return Ok(());
    }
    Err(ConvertError::SharedMountSource {
        mount: bind.source.clone(),
        users: users.join("; "),
    })
}

/// Files of a tree to shift (the rootfs, a bind source) with hard links outside it
/// (a `cp -al` copy, a deduplication across containers): a shift must leave them
/// alone, and the conversion could then neither finish nor come back exactly.
/// Refused before the first write, naming the containers whose rootfs shares them.
fn refuse_linked_outside(
    scan: &unmapped::RootfsScan,
    (container, tree): (&Container, &Path),
    host: &Host,
) -> Result<(), ConvertError> {
    let Some(example) = scan.linked_outside_example.clone() else {
        return Ok(());
    };
    let sharing = shared::rootfs_sharing(&example, tree, container, host);
    Err(ConvertError::RootfsSharesInodes {
        tree: tree.to_path_buf(),
        count: scan.linked_outside,
        example,
        with: match sharing.is_empty() {
            true => String::new(),
            false => format!(
                ", the same file as in container {}'s rootfs",
                sharing.join(", ")
            ),
        },
    })
}

/// A source an earlier conversion shifted must still be where it was: its shift is
/// undone (or finished) after the rootfs's, and a source gone by then would leave
/// the conversion between states. Refused before anything is written, naming the
/// source the config binds now when it could be the same one moved.
fn refuse_missing_shifted(shifted: &[PathBuf], plan: &MountPlan) -> Result<(), ConvertError> {
    let Some(missing) = shifted.iter().find(|s| !s.is_dir()) else {
        return Ok(());
    };
    let now: Vec<String> = (plan.mounts.iter())
        .map(|(bind, _)| &bind.host_source)
        .filter(|source| !shifted.contains(source) && source.is_dir())
        .map(|source| source.display().to_string())
        .collect();
    Err(ConvertError::ShiftedSourceMissing {
        mount: missing.clone(),
        now: match now.is_empty() {
            true => String::new(),
            false => format!(
                " (the config now binds {}: if it moved there, move it back and restore its entry)",
                now.join(", ")
            ),
        },
    })
}

/// An idmapped rootfs is not shifted, so no bind mount source can shift along.
fn refuse_mount_shift(options: &ConvertOptions, shifted: &[PathBuf]) -> Result<(), ConvertError> {
    let why = match (options.mounts, shifted.first()) {
        (_, Some(source)) => format!(
            "{} was shifted by an earlier conversion: go --to 0 first to shift it back",
            source.display()
        ),
        (MountsChoice::Shift, None) => "--mounts shift".to_string(),
        _ => return Ok(()),
    };
    Err(ConvertError::MountShiftWithIdmap { why })
}

/// The included configs and fstab file of the container (in its directory) with
/// `idmap=container` added to (`present`) or removed from the mount lines at
/// `origins`; each file read now, every other byte kept.
fn mount_file_edits(origins: &[&Origin], present: bool) -> Result<Vec<FileEdit>, ConvertError> {
    let mut files: Vec<&Path> = origins.iter().map(|o| o.file.as_path()).collect();
    files.sort();
    files.dedup();
    let mut edits = Vec::new();
    for file in files {
        let old = std::fs::read_to_string(file).map_err(failed("read", file))?;
        let mut new = old.clone();
        for origin in origins.iter().filter(|o| o.file == file) {
            new = match origin.fstab {
                true => config::fstab_with_option(&new, Some(origin.line), IDMAP_OPTION, present),
                false => ContainerConfig::parse(&new)
                    .with_mount_option(origin.line, IDMAP_OPTION, present)
                    .to_text(),
            };
        }
        edits.push(FileEdit {
            path: file.to_path_buf(),
            old: Some(old),
            new: Some(new),
        });
    }
    Ok(edits)
}

/// What happens to the bind mounts: each with what it holds as the container will
/// see it after the conversion (its entry as it will read), the mount lines that
/// gain `idmap=container` (or lose it, going privileged), and what was decided, in
/// words.
struct MountPlan {
    mounts: Vec<ScannedMount>,
    unlisted: Option<String>,
    edited: Vec<Origin>,
    /// Sources newly chosen for shifting (`--mounts shift`).
    shift_sources: Vec<PathBuf>,
    notes: Vec<String>,
}

/// Decides, per bind mount, between idmap and keep (`--mounts`); reads only. A
/// config whose mounts cannot be listed (an unreadable include, a missing fstab) is
/// said in the plan, not refused: LXC reports it at start. Going privileged, the
/// entries of the container's own files lose `idmap=container` (lxc-start aborts on
/// it without a user namespace). Its own files are those in its directory (outside
/// the rootfs): others may be shared with other containers and are not edited.
fn mount_plan(
    (options, effects): (&ConvertOptions, &dyn HostEffects),
    (container, rootfs): (&Container, &Path),
    config: &ContainerConfig,
    (from, to): (Option<&HostMap>, Option<&HostMap>),
    shifted: &[PathBuf],
) -> Result<MountPlan, ConvertError> {
    let mut plan = MountPlan {
        mounts: Vec::new(),
        unlisted: None,
        edited: Vec::new(),
        shift_sources: Vec::new(),
        notes: Vec::new(),
    };
    let config_path = container.config();
    let found = match mounts::list(&options.host, &container.dir(), &config_path, config) {
        Ok(found) => found,
        Err(e) => {
            plan.unlisted = Some(e.to_string());
            return Ok(plan);
        }
    };
    let maps = to.map_or(Vec::new(), |map| map.entries().to_vec());
    let scan = |bind: &mounts::BindMount, idmapped: bool| match bind.host_source.exists() {
        true => mounts::scan(
            &bind.host_source,
            &View {
                maps: maps.clone(),
                idmapped,
            },
            options.threads,
        )
        .map_err(|e| e.to_string()),
        false => Err(format!("{} does not exist", bind.source.display())),
    };
    for mut bind in found.binds {
        let editable = bind.in_own_file(&container.dir(), rootfs);
        let Some(to) = to else {
            if bind.idmapped() && editable {
                bind.entry = without_option(&bind.entry, IDMAP_OPTION);
                plan.edited.push(bind.origin.clone());
            }
            let scanned = scan(&bind, bind.idmapped());
            plan.mounts.push((bind, scanned));
            continue;
        };
        let plain = scan(&bind, bind.idmapped());
        let recorded = shifted.contains(&bind.host_source);
        let shift =
            options.mounts == MountsChoice::Shift && !bind.idmapped() && bind.host_source.is_dir();
        if shift && !recorded && from.is_some_and(|from| from != to) {
            return Err(ConvertError::MountShiftOnRangeMove {
                name: options.name.clone(),
                mount: bind.host_source.clone(),
                args: to.args(),
            });
        }
        if recorded {
            // Shifted by an earlier conversion: it moves with the rootfs.
            let scanned = scan(&bind, false);
            plan.mounts.push((bind, scanned));
            continue;
        }
        if shift {
            refuse_shared_source(options, (container, rootfs), &bind, editable)?;
            // After the shift its container ids 0..range are host ids: what an
            // idmapped view of it shows now.
            plan.notes.push(format!(
                "{}: shifted with the rootfs's map (journaled in {}; --to 0 shifts it back)",
                bind.source.display(),
                container.dir().display()
            ));
            plan.shift_sources.push(bind.host_source.clone());
            let scanned = scan(&bind, true);
            plan.mounts.push((bind, scanned));
            continue;
        }
        let wanted = match (options.mounts, &plain) {
            _ if bind.idmapped() => false,
            (MountsChoice::Keep | MountsChoice::Shift, _) => false,
            (MountsChoice::Idmap, _) => true,
            // Idmapped only where that shows fewer owners as nobody than a plain bind.
            (MountsChoice::Auto, Ok(scan)) if scan.nobody > 0 => {
                matches!(
                    scan_idmapped(&bind, scan, &maps, options.threads),
                    Some(true)
                )
            }
            (MountsChoice::Auto, _) => false,
        };
        if !wanted || !bind.host_source.exists() {
            plan.mounts.push((bind, plain));
            continue;
        }
        let works = match editable {
            true => mounts::idmap_works(effects, &bind.host_source, to.root_uid(), to.span()),
            false => Err(format!(
                "the entry is in {} line {}, outside the container's directory (it may be shared with other containers), which lxc-idshift does not edit: add {IDMAP_OPTION} there",
                bind.origin.file.display(),
                bind.origin.line
            )),
        };
        match (works, options.mounts) {
            (Ok(()), _) => {
                plan.edited.push(bind.origin.clone());
                bind.entry = with_option(&bind.entry, IDMAP_OPTION);
                plan.notes.push(format!(
                    "{}: {IDMAP_OPTION} added to its entry: the container sees its files with their own owners; nothing on disk changes",
                    bind.source.display()
                ));
                let scanned = scan(&bind, true);
                plan.mounts.push((bind, scanned));
            }
            (Err(why), MountsChoice::Idmap) => {
                return Err(ConvertError::IdmapUnsupported {
                    mount: bind.source.clone(),
                    why,
                    name: options.name.clone(),
                })
            }
            (Err(why), _) => {
                plan.notes.push(format!(
                    "{}: kept as it is: an idmapped mount does not work here ({why})",
                    bind.source.display()
                ));
                plan.mounts.push((bind, plain));
            }
        }
    }
    Ok(plan)
}

/// Whether the bind would show fewer owners as nobody idmapped than plain (None
/// when the idmapped view cannot be scanned).
fn scan_idmapped(
    bind: &mounts::BindMount,
    plain: &mounts::Scan,
    maps: &[MapEntry],
    threads: Option<usize>,
) -> Option<bool> {
    let view = View {
        maps: maps.to_vec(),
        idmapped: true,
    };
    let idmapped = mounts::scan(&bind.host_source, &view, threads).ok()?;
    Some(idmapped.nobody < plain.nobody)
}

fn with_option(entry: &config::MountEntry, option: &str) -> config::MountEntry {
    let mut entry = entry.clone();
    entry.options = format!("{},{option}", entry.options);
    entry
}

fn without_option(entry: &config::MountEntry, option: &str) -> config::MountEntry {
    let mut entry = entry.clone();
    let kept: Vec<&str> = entry.options.split(',').filter(|o| *o != option).collect();
    entry.options = match kept.is_empty() {
        true => "defaults".to_string(),
        false => kept.join(","),
    };
    entry
}

/// Where the container is, where it goes, and the shift that takes its rootfs there.
struct Course {
    from: Layout,
    to: Layout,
    /// How many container ids a new one-range target maps (the span of the
    /// container's own map when it has one).
    range: u32,
    shift: Option<(IdMap, Direction)>,
    /// The state of a conversion that was interrupted, if one was.
    interrupted: Option<ConversionState>,
    recorded: ConversionState,
}

impl Course {
    fn to_map(&self) -> Option<&HostMap> {
        self.to.map.as_ref()
    }
}

fn course(
    options: &ConvertOptions,
    container: &Container,
    config: &ContainerConfig,
) -> Result<Course, ConvertError> {
    let from = current_map(config, &container.config())?;
    course_from(options, container, Layout::of_config(from, config))
}

/// The course from `now`, where the container's config says it stands.
fn course_from(
    options: &ConvertOptions,
    container: &Container,
    now: Layout,
) -> Result<Course, ConvertError> {
    let recorded = read_state(container)?;
    let interrupted = recorded.clone().filter(|s| s.interrupted_at(&now));
    let range = match (&interrupted, &now.map) {
        (Some(state), _) => state.range,
        (None, Some(map)) => map.span(),
        _ => options.range,
    };
    let to = match (&interrupted, &options.to) {
        (Some(state), Target::Auto) => state.target_layout().map,
        _ => target_map(options, container, range)?,
    };
    if to.is_none() && options.method.is_some() {
        return Err(ConvertError::MethodWithoutTarget);
    }
    // A map the container already has is where it is; a new one must not give
    // it a host account (but the ids it shares on purpose).
    if let Some(map) = to.as_ref().filter(|&to| Some(to) != now.map.as_ref()) {
        check_no_account(&options.host, map)?;
    }
    let (target, shift) = match &interrupted {
        None => {
            let method = method::target_method(options.method, &now, to.as_ref());
            let target = Layout::new(to, method);
            let shift = hostmap::shift_between(now.on_disk(), target.on_disk())?;
            (target, shift)
        }
        Some(state) => resume_or_undo(state, target_of(to.as_ref(), options.method, state)?)?,
    };
    Ok(Course {
        from: now,
        to: target,
        range,
        shift,
        interrupted,
        recorded: recorded.unwrap_or_default(),
    })
}

/// Root gets the target map's host ids. Going privileged, `--release-range` gives
/// up the map's ranges, and so does undoing an interrupted conversion that granted
/// them. Host ids shared with the container as themselves (`root:1000:1`: root may
/// map that host user) go whenever the container stops sharing them. Lines another
/// container of the host still needs stay (said in the notes).
fn subid_change(
    options: &ConvertOptions,
    container: &Container,
    course: &Course,
) -> Result<(Option<SubIdChange>, Vec<String>), ConvertError> {
    let mut change = SubIdChange::default();
    if let Some(to) = course.to_map() {
        change.users.grant = subid_ranges(to, IdKind::User);
        change.groups.grant = subid_ranges(to, IdKind::Group);
    }
    // An interrupted conversion holds its target's range (granted before the
    // shift); one on its way to privileged still holds its origin's until its
    // subid files say otherwise (a power cut may come before they do).
    let held = match &course.interrupted {
        Some(state) => (state.target_layout().map).or_else(|| state.origin_layout().map),
        None => course.from.map.clone(),
    };
    let undo_grant = (course.interrupted.as_ref()).is_some_and(|s| s.granted_range);
    let release_range = course.to.map.is_none() && (options.release_range || undo_grant);
    let mut notes = Vec::new();
    if let Some(held) = held.filter(|h| Some(h) != course.to_map()) {
        let siblings = sibling_maps(container, &options.host);
        for (kind, changes) in [
            (IdKind::User, &mut change.users),
            (IdKind::Group, &mut change.groups),
        ] {
            let shared_now = (course.to_map()).map_or(Vec::new(), |m| m.shared());
            for range in subid_ranges(&held, kind) {
                let shared = held
                    .shared()
                    .iter()
                    .any(|s| s.kind == kind && range.contains(s.id));
                let kept_shared = shared_now
                    .iter()
                    .any(|s| s.kind == kind && range.contains(s.id));
                let goes = release_range || (shared && !kept_shared);
                if !goes || changes.grant.contains(&range) {
                    continue;
                }
                let users: Vec<&str> = (siblings.iter())
                    .filter(|s| s.kind == kind && s.ids.overlaps(range))
                    .map(|s| s.container.as_str())
                    .collect();
                match users.is_empty() {
                    true => changes.release.push(range),
                    false => notes.push(format!(
                        "root keeps {}..{} in {}: container {} still maps it (released, it would no longer start)",
                        range.first,
                        range.last(),
                        subid_file(kind),
                        users.join(", ")
                    )),
                }
            }
        }
    }
    notes.dedup();
    Ok(((!change.is_empty()).then_some(change), notes))
}

/// What sharing host ids gives away, said in every plan that shares some.
fn shared_ids_note(to: Option<&HostMap>) -> Option<String> {
    let shared = to?.shared();
    let names: Vec<String> = (shared.iter())
        .map(|s| match s.kind {
            IdKind::User => format!("uid {}", s.id),
            IdKind::Group => format!("gid {}", s.id),
        })
        .collect();
    (!names.is_empty()).then(|| format!(
        "{} inside the container are the host's own: the container's root has full power over that host user's and group's files wherever the container can reach them (read, change, delete, create files owned by them). Share only an account made for this container",
        names.join(", ")
    ))
}

fn subid_file(kind: IdKind) -> &'static str {
    match kind {
        IdKind::User => "/etc/subuid",
        IdKind::Group => "/etc/subgid",
    }
}

/// The lines root needs to map `map`'s host ids of `kind`: a line per shared id,
/// and the pieces of one range with holes (the same offset from container to host
/// ids, as `--share-ids` makes them) as that one range, `root:100000:65536`.
fn subid_ranges(map: &HostMap, kind: IdKind) -> Vec<IdRange> {
    let of_kind = |e: &&MapEntry| {
        if e.users {
            kind == IdKind::User
        } else {
            kind == IdKind::Group
        }
    };
    let mut pieces: Vec<&MapEntry> = map.entries().iter().filter(of_kind).collect();
    pieces.sort_by_key(|e| e.host_first);
    let offset = |e: &MapEntry| i64::from(e.host_first) - i64::from(e.container_first);
    // Identity pieces have offset 0 and merge only when they touch.
    let mut merged: Vec<(IdRange, i64)> = Vec::new();
    for e in pieces {
        let range = IdRange::new(e.host_first, e.count);
        match merged.last_mut() {
            Some((last, at))
                if *at == offset(e) && (*at != 0 || last.end() == u64::from(range.first)) =>
            {
                last.count = (range.end() - u64::from(last.first)) as u32
            }
            _ => merged.push((range, offset(e))),
        }
    }
    merged.into_iter().map(|(range, _)| range).collect()
}

fn new_config(
    options: &ConvertOptions,
    config: &ContainerConfig,
    course: &Course,
) -> ContainerConfig {
    let config = match course.to_map() {
        Some(map) => {
            let include = config
                .userns_include(|p| options.host.path(p).exists())
                .unwrap_or_else(|| PathBuf::from("/usr/share/lxc/config/userns.conf"));
            config.with_unprivileged(&map.lxc_lines(), &include)
        }
        None => config.with_privileged(),
    };
    config.with_rootfs_option(IDMAP_OPTION, course.to.method == Method::Idmap)
}

/// The rootfs directory, if its backend can be shifted in place.
fn shiftable_rootfs(config: &ContainerConfig, path: &Path) -> Result<PathBuf, ConvertError> {
    let rootfs = config.rootfs().ok_or_else(|| ConvertError::NoRootfs {
        config: path.to_path_buf(),
    })?;
    let refuse = |why| ConvertError::UnsupportedRootfs {
        rootfs: rootfs.raw.clone(),
        backend: format!("{:?}", rootfs.backend).to_lowercase(),
        why,
    };
    if !rootfs.location.is_absolute() {
        return Err(ConvertError::RelativeRootfs {
            config: path.to_path_buf(),
            value: rootfs.raw.clone(),
        });
    }
    match &rootfs.backend {
        Backend::Dir => Ok(rootfs.location.clone()),
        Backend::Btrfs | Backend::Zfs if rootfs.location.is_dir() => Ok(rootfs.location.clone()),
        Backend::Btrfs | Backend::Zfs => Err(ConvertError::RootfsNotMounted(rootfs.location.clone())),
        Backend::Overlay => Err(refuse("an overlay's lower layers are shared and read-only; copy it to a dir: rootfs first (lxc-copy -B dir)")),
        Backend::Lvm | Backend::Loop | Backend::Nbd | Backend::Rbd => Err(refuse("the file system is inside a block device or image; mount it and point lxc.rootfs.path at the directory, or convert with lxc-copy -B dir")),
        Backend::Other(_) => Err(refuse("unknown backend; use a dir: rootfs")),
    }
}

/// The container's map now: None when privileged.
fn current_map(config: &ContainerConfig, path: &Path) -> Result<Option<HostMap>, ConvertError> {
    let maps = config.idmaps()?;
    if maps.is_empty() {
        return Ok(None);
    }
    HostMap::new(maps)
        .map(Some)
        .map_err(|source| ConvertError::ContainerMap {
            config: path.to_path_buf(),
            source,
        })
}

/// The map `--to` (with `--share-ids`) or `--map` names; None for privileged.
fn target_map(
    options: &ConvertOptions,
    container: &Container,
    range: u32,
) -> Result<Option<HostMap>, ConvertError> {
    let first = match &options.to {
        Target::Privileged if options.share_ids.is_empty() => return Ok(None),
        Target::Privileged => return Err(ConvertError::ShareWithoutTarget),
        Target::Map(map) => return Ok(Some(map.clone())),
        Target::HostId(id) => *id,
        Target::Auto => {
            let mut taken = taken_ranges(&options.host, container)?;
            taken.extend(HostAccounts::load(&options.host)?.taken());
            let IdBounds { min, max } = SubIdBounds::load(&options.host)?.both();
            subid::lowest_free(range, range.max(65536), min, &taken)
                .filter(|&first| u64::from(first) + u64::from(range) - 1 <= u64::from(max))
                .ok_or_else(|| ConvertError::NoFreeRange {
                    count: range,
                    min,
                    max,
                    login_defs: options.host.login_defs(),
                })?
        }
    };
    Ok(Some(HostMap::sharing(first, range, &options.share_ids)?))
}

/// Refuses a map whose host ids hold the uid or gid of a host account, but for
/// the ids it shares with the container on purpose.
fn check_no_account(host: &Host, map: &HostMap) -> Result<(), ConvertError> {
    let accounts = HostAccounts::load(host)?;
    let ranges = map.entries().iter().filter(|e| !e.is_identity());
    for e in ranges {
        if let Some(account) = accounts.first_in(e.host_first, e.count) {
            return Err(ConvertError::HostAccountInRange {
                first: e.host_first,
                last: e.host_first.saturating_add(e.count - 1),
                account: account.to_string(),
            });
        }
    }
    Ok(())
}

/// Ranges that `--to auto` must avoid: other users' subordinate ids and other
/// containers' maps.
fn taken_ranges(host: &Host, container: &Container) -> Result<Vec<IdRange>, ConvertError> {
    let mut taken: Vec<IdRange> = sibling_maps(container, host)
        .into_iter()
        .map(|sibling| sibling.ids)
        .collect();
    for path in [host.subuid(), host.subgid()] {
        let ids = read_subids(&path)?;
        let own = ids.ranges_of(ROOT_USER);
        taken.extend(ids.all_ranges().into_iter().filter(|r| !own.contains(r)));
    }
    Ok(taken)
}

/// Whether `change` gives root a range it does not hold yet.
fn grants_new_range(host: &Host, change: Option<&SubIdChange>) -> Result<bool, ConvertError> {
    let Some(change) = change else {
        return Ok(false);
    };
    for (path, changes) in [
        (host.subuid(), &change.users),
        (host.subgid(), &change.groups),
    ] {
        let ids = read_subids(&path)?;
        if (changes.grant.iter()).any(|r| !ids.covers(ROOT_USER, r.first, r.count)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The host ids of one kind another container of the host (under any lxcpath)
/// maps; ids it shares as themselves are not counted as its range.
struct SiblingMap {
    container: String,
    kind: IdKind,
    ids: IdRange,
    shared: bool,
}

/// Proxmox containers' maps come from their `.conf` (the LXC config of their last
/// start may be outdated, or missing for one never started).
fn sibling_maps(container: &Container, host: &Host) -> Vec<SiblingMap> {
    let proxmox = (pve::host::vmids(host).into_iter())
        .filter(|vmid| *vmid != container.name)
        .filter_map(|vmid| {
            let map = pve::host::map_of(host, &vmid).ok()??;
            Some((vmid, map.entries().to_vec()))
        });
    let lxc = (shared::other_containers(container, host).into_iter())
        .filter(|c| pve::host::conf_path(host, &c.name).is_none())
        .filter_map(|c| {
            let text = std::fs::read_to_string(c.config()).ok()?;
            let maps = ContainerConfig::parse(&text).idmaps().ok()?;
            Some((c.name, maps))
        });
    proxmox
        .chain(lxc)
        .flat_map(|(name, maps)| {
            maps.into_iter().flat_map(move |m| {
                let name = name.clone();
                [(m.users, IdKind::User), (m.groups, IdKind::Group)]
                    .into_iter()
                    .filter(|(applies, _)| *applies)
                    .map(move |(_, kind)| SiblingMap {
                        container: name.clone(),
                        kind,
                        ids: IdRange::new(m.host_first, m.count),
                        shared: m.is_identity(),
                    })
            })
        })
        .collect()
}

/// Refuses a map whose host ids (but those shared as themselves) another container
/// maps.
fn check_range_free(host: &Host, container: &Container, map: &HostMap) -> Result<(), ConvertError> {
    let siblings = sibling_maps(container, host);
    for e in map.entries().iter().filter(|e| !e.is_identity()) {
        let wanted = IdRange::new(e.host_first, e.count);
        let kind = if e.users { IdKind::User } else { IdKind::Group };
        let taken =
            (siblings.iter()).find(|s| s.kind == kind && !s.shared && wanted.overlaps(s.ids));
        if let Some(sibling) = taken {
            return Err(ConvertError::RangeTaken {
                first: wanted.first,
                last: wanted.last(),
                other: sibling.container.clone(),
                other_first: sibling.ids.first,
                other_last: sibling.ids.last(),
            });
        }
    }
    Ok(())
}

/// Which end of an interrupted conversion `--to` (and `--method`, if given) names:
/// its target (finish it), its origin (undo it), or neither. When both ends have
/// the same host id, `--to` alone finishes.
fn target_of(
    to: Option<&HostMap>,
    asked: Option<Method>,
    state: &ConversionState,
) -> Result<Layout, ConvertError> {
    let named = |end: &Layout| {
        end.map.as_ref() == to && asked.is_none_or(|m| Layout::new(to.cloned(), m) == *end)
    };
    [state.target_layout(), state.origin_layout()]
        .into_iter()
        .find(named)
        .ok_or_else(|| ConvertError::Interrupted {
            origin: state.origin_layout(),
            target: state.target_layout(),
            origin_args: state.origin_layout().args(),
            target_args: state.target_layout().args(),
        })
}

/// The shift that finishes an interrupted conversion (towards its target) or undoes
/// it (back to its origin): the same map, so its journal continues or reverts
/// exactly. `end` is one of the two (see `target_of`).
fn resume_or_undo(
    state: &ConversionState,
    end: Layout,
) -> Result<(Layout, Option<(IdMap, Direction)>), ConvertError> {
    let (origin, target) = (state.origin_layout(), state.target_layout());
    let shift = hostmap::shift_between(origin.on_disk(), target.on_disk())?;
    match end == target {
        true => Ok((end, shift)),
        false => Ok((
            end,
            shift.map(|(map, direction)| (map, direction.opposite())),
        )),
    }
}

fn read_subids(path: &Path) -> Result<SubIds, ConvertError> {
    Ok(SubIds::parse(&read_subid_text(path)?.unwrap_or_default()))
}

/// The file's text; None when it does not exist.
fn read_subid_text(path: &Path) -> Result<Option<String>, ConvertError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new("read", path, e).into()),
    }
}

/// The change as the files are now (for the plan and `--dry-run`).
fn subid_edits(host: &Host, change: &SubIdChange) -> Result<Vec<FileEdit>, ConvertError> {
    [(host.subuid(), true), (host.subgid(), false)]
        .into_iter()
        .map(|(path, users)| {
            let ids = read_subids(&path)?;
            Ok(FileEdit {
                new: Some(change.apply(ROOT_USER, users, &ids)?.to_text()),
                old: Some(ids.to_text()),
                path,
            })
        })
        .collect()
}

/// Permission changes, and the ownerships to record before making them.
fn perm_plan(
    container: &Container,
    to: Option<&HostMap>,
    recorded: &[Ownership],
) -> Result<(Vec<PermChange>, Vec<Ownership>), ConvertError> {
    let dir = container.dir();
    match to {
        Some(map) => {
            let changes = perms::unprivileged_changes(&dir, &container.config(), map.root_gid())?;
            let recorded = match recorded.is_empty() {
                true => changes.iter().map(|c| c.before.clone()).collect(),
                false => recorded.to_vec(),
            };
            Ok((changes, recorded))
        }
        None => {
            let changes = perms::restore_changes(recorded)?;
            Ok((changes, recorded.to_vec()))
        }
    }
}

/// The state recorded by an earlier conversion, if any.
pub fn read_state(container: &Container) -> Result<Option<ConversionState>, ConvertError> {
    let path = container.state_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let parse = |e: String| FileError::new("parse", &path, std::io::Error::other(e));
            let state: ConversionState =
                serde_json::from_str(&text).map_err(|e| parse(e.to_string()))?;
            state.valid().map_err(|e| parse(e.to_string()))?;
            Ok(Some(state))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new("read", &path, e).into()),
    }
}

/// The udev rule file and the owners of passed-through device nodes; a privileged
/// container, or one without devices, has no rule file.
/// The udev rule, the owners the device nodes get, and the owners they had before
/// the first conversion to unprivileged (`recorded`, else read now): going
/// privileged, the nodes get those back.
fn device_plan(
    options: &ConvertOptions,
    (container, config): (&Container, &ContainerConfig),
    rootfs: &Path,
    to: Option<&HostMap>,
    recorded: &[DeviceOwner],
) -> Result<DevicePlan, ConvertError> {
    let rules = match to {
        Some(map) => device_rules(options, (container, config), rootfs, map)?,
        None => Vec::new(),
    };
    let original = match recorded.is_empty() {
        true => rules
            .iter()
            .filter_map(|r| current_owner(&r.device.node))
            .collect(),
        false => recorded.to_vec(),
    };
    let owners = match to {
        Some(_) => rules
            .iter()
            .map(|r| DeviceOwner {
                node: r.device.node.clone(),
                uid: r.owner,
                gid: r.group,
            })
            .collect(),
        None => original.clone(),
    };
    let path = udev::rules_path(&options.host, &options.name);
    let edit = FileEdit {
        old: std::fs::read_to_string(&path).ok(),
        new: (!rules.is_empty()).then(|| udev::rules_text(&options.name, &rules)),
        path,
    };
    Ok(DevicePlan {
        rules: Some(edit).filter(FileEdit::changes),
        owners,
        original,
    })
}

/// What happens to the systemd units that cannot work unprivileged.
#[derive(Debug, Clone, Default)]
pub struct UnitPlan {
    /// Masked now (going unprivileged: those the rootfs has and does not configure).
    pub mask: Vec<String>,
    /// Unmasked now (going privileged: those a conversion masked).
    pub unmask: Vec<String>,
    /// Masked once this conversion is done.
    pub masked: Vec<String>,
}

fn unit_plan(rootfs: &Path, to: Option<&HostMap>, recorded: &[String]) -> UnitPlan {
    if to.is_none() {
        return UnitPlan {
            unmask: recorded.to_vec(),
            ..UnitPlan::default()
        };
    }
    // Every one not masked now, recorded or not (a mask removed by hand comes back).
    let mask: Vec<String> = (units::to_mask(rootfs).into_iter())
        .map(|u| u.name.to_string())
        .collect();
    let mut masked: Vec<String> = recorded.to_vec();
    masked.extend(mask.iter().filter(|n| !recorded.contains(n)).cloned());
    UnitPlan {
        mask,
        unmask: Vec::new(),
        masked,
    }
}

/// What happens to the passed-through devices.
struct DevicePlan {
    /// The udev rule file's edit, if it changes.
    rules: Option<FileEdit>,
    /// The owners the nodes get now.
    owners: Vec<DeviceOwner>,
    /// Their owners before the first conversion to unprivileged.
    original: Vec<DeviceOwner>,
}

fn current_owner(node: &Path) -> Option<DeviceOwner> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(node).ok()?;
    Some(DeviceOwner {
        node: node.to_path_buf(),
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

fn device_rules(
    options: &ConvertOptions,
    (container, config): (&Container, &ContainerConfig),
    rootfs: &Path,
    map: &HostMap,
) -> Result<Vec<udev::DeviceRule>, ConvertError> {
    let nodes = device_nodes((container, config), &options.host, &options.devices)?;
    let mut rules = Vec::new();
    for node in nodes {
        let device = udev::probe(&options.host, &node)?;
        // The node's group as the container names it: the host's "dialout" is the
        // container's "dialout", gid 20 there, 1000020 on the host.
        let group = udev::container_group_name(&options.host.root, device.gid)
            .and_then(|name| udev::container_gid(rootfs, &name))
            .unwrap_or(device.gid);
        rules.push(udev::DeviceRule {
            device,
            owner: map.root_uid(),
            group: map.to_host(IdKind::Group, group).unwrap_or(group),
        });
    }
    Ok(rules)
}

/// Device nodes passed in: `lxc.mount.entry` sources under the host's /dev (in the
/// config, its includes and fstab; the nodes of a `/dev` directory that its cgroup
/// lines allow), and `--device`. A missing source (an optional entry, an unplugged
/// device) has nothing to own; a missing `--device` is reported by `probe`.
fn device_nodes(
    (container, config): (&Container, &ContainerConfig),
    host: &Host,
    extra: &[PathBuf],
) -> Result<Vec<PathBuf>, ConvertError> {
    let listed = mounts::list(host, &container.dir(), &container.config(), config)
        .map(|m| m.devices)
        .unwrap_or_default();
    let mut nodes: Vec<PathBuf> = config
        .mount_entries()?
        .into_iter()
        .map(|m| PathBuf::from(m.source))
        .filter(|source| source.starts_with("/dev/"))
        .map(|source| host.path(source))
        .filter(|node| node.exists() && !node.is_dir())
        .chain(listed)
        .chain(extra.iter().cloned())
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}
