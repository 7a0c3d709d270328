//! `lxc-idshift check NAME`: will this container start and work? Read-only, for any
//! container, privileged or not.
//!
//! It reports the container's mode, id range and rootfs method, and looks for what
//! breaks an unprivileged container: root not owning the range in /etc/subuid or
//! /etc/subgid (LXC maps ids through newuidmap, which refuses), rootfs owners the
//! container sees as nobody, a parent directory of the rootfs or of a bind mount
//! source that the container's root cannot traverse, bind mounts and passed-through
//! devices whose owners show as nobody, devices without a udev rule. Each problem
//! carries the command that fixes it.

use super::config::{self, guard, ContainerConfig};
use super::container::{Container, ContainerError};
use super::convert::{self, ConversionState};
use super::effects::RealHost;
use super::host::Host;
use super::hostmap::HostMap;
use super::manager::OtherManager;
use super::method::Layout;
use super::mounts::{self, BindMount, MountError, Scan, View, IDMAP_OPTION};
use super::pve::conf::PveConf;
use super::shared;
use super::subid::SubIds;
use super::udev;
use super::units;
use crate::engine::acl::{
    Acl, AclEntry, ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ,
};
use crate::engine::idmap::{IdKind, MapEntry};
use crate::engine::xattr_names::ACL_ACCESS;
use crate::fsutil::FileError;
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The owner of system containers' subordinate ids, by name and by uid.
const ROOT_OWNERS: [&str; 2] = ["root", "0"];

pub struct CheckOptions {
    pub name: String,
    pub lxcpath: Option<PathBuf>,
    pub threads: Option<usize>,
    pub host: Host,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("{path}: {source}")]
    Config {
        path: PathBuf,
        source: config::ConfigError,
    },
    #[error(transparent)]
    Mounts(#[from] MountError),
    #[error("{0}; check that it exists and is readable, then run `lxc-idshift check` again")]
    Io(#[source] FileError),
    #[error("{config}: no lxc.rootfs.path; is this an LXC container config?")]
    NoRootfs { config: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckError + '_ {
    move |source| CheckError::Io(FileError::new("read", path, source))
}

/// What is wrong, as a stable name (the `--json` field `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A conversion was interrupted: the rootfs is half-way.
    InterruptedConversion,
    /// The config holds lxc-idshift's start guard though no conversion is
    /// unfinished: every start refuses.
    StartGuard,
    /// Root does not own the container's range in /etc/subuid or /etc/subgid.
    RangeNotOwned,
    /// Inodes of the rootfs have owners the container sees as nobody.
    RootfsIdsOutsideMap,
    /// The container's root cannot traverse a parent of its rootfs or of a bind
    /// mount source.
    ParentNotTraversable,
    /// A bind mount's source does not exist (and the entry is not optional).
    MountSourceMissing,
    /// A bind mount holds files the container sees as nobody.
    MountShowsNobody,
    /// An `idmap=container` mount (bind or rootfs) that this kernel, file system or
    /// LXC cannot make: the container does not start.
    IdmapUnsupported,
    /// A bind mount source another container's conversion shifted with its rootfs
    /// (`--mounts shift`): its files carry that container's host ids.
    MountShiftedByOther,
    /// A systemd unit of the rootfs that fails in an unprivileged container is
    /// not masked.
    UnitFailsUnprivileged,
    /// A passed-through device node's owner or group shows as nobody.
    DeviceShowsNobody,
    /// A passed-through device has no udev rule giving it the container's ids.
    DeviceWithoutUdevRule,
}

impl ProblemKind {
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::InterruptedConversion => "interrupted_conversion",
            ProblemKind::StartGuard => "start_guard",
            ProblemKind::RangeNotOwned => "range_not_owned",
            ProblemKind::RootfsIdsOutsideMap => "rootfs_ids_outside_map",
            ProblemKind::ParentNotTraversable => "parent_not_traversable",
            ProblemKind::MountSourceMissing => "mount_source_missing",
            ProblemKind::MountShowsNobody => "mount_shows_nobody",
            ProblemKind::IdmapUnsupported => "idmap_unsupported",
            ProblemKind::MountShiftedByOther => "mount_shifted_by_other",
            ProblemKind::UnitFailsUnprivileged => "unit_fails_unprivileged",
            ProblemKind::DeviceShowsNobody => "device_shows_nobody",
            ProblemKind::DeviceWithoutUdevRule => "device_without_udev_rule",
        }
    }
}

/// One problem: what, where, and the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub path: PathBuf,
    pub message: String,
    pub fix: String,
}

/// The container's id range: the host ids its root and first ids map to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Range {
    pub uid_first: u32,
    pub gid_first: u32,
    pub count: u32,
    /// Whether root's lines in /etc/subuid and /etc/subgid cover every map line.
    pub subuid_owned: bool,
    pub subgid_owned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountCheck {
    pub source: PathBuf,
    pub target: String,
    pub options: String,
    pub file: PathBuf,
    pub line: usize,
    pub idmapped: bool,
    /// None when the source does not exist.
    pub scan: Option<Scan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceCheck {
    pub node: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Whether the container sees the node's owner and group (not nobody).
    pub seen: bool,
    /// The udev rule line lxc-idshift wrote for it, if any.
    pub udev_rule: Option<String>,
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub container: String,
    pub config: PathBuf,
    /// "privileged" or "unprivileged".
    pub mode: &'static str,
    /// The `lxc.idmap` lines in effect.
    pub maps: Vec<String>,
    pub range: Option<Range>,
    /// "shift" (the rootfs holds host ids) or "idmap" (`lxc.rootfs.options =
    /// idmap=container`: it holds container ids and is mounted idmapped).
    pub method: &'static str,
    pub rootfs: PathBuf,
    /// Of the rootfs, for an unprivileged container.
    pub rootfs_scan: Option<Scan>,
    pub mounts: Vec<MountCheck>,
    pub devices: Vec<DeviceCheck>,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
}

impl CheckReport {
    /// No problem: the container should start and work.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the container; reads only. An error means it could not be checked.
pub fn check(options: &CheckOptions) -> Result<CheckReport, CheckError> {
    let container = Container::find_on(
        &options.name,
        options.lxcpath.as_deref(),
        &RealHost,
        &options.host,
    )?;
    // A Proxmox container is checked as Proxmox would start it, from its .conf.
    let manager = OtherManager::of(&container, &options.host);
    let config_path = manager
        .as_ref()
        .map_or(container.config(), |m| m.conf.clone());
    let text = std::fs::read_to_string(&config_path).map_err(io_error(&config_path))?;
    let proxmox_conf = manager.as_ref().map(|_| PveConf::parse(&text));
    let (text, view_notes) = match &proxmox_conf {
        Some(conf) => crate::lxc::pve::view::lxc_config(conf, &options.host),
        None => (text, Vec::new()),
    };
    let start_guard = guard::is_guarded(&text);
    let config = ContainerConfig::parse(&guard::unguarded(&text));
    let bad_config = |source| CheckError::Config {
        path: config_path.clone(),
        source,
    };
    let maps = config.idmaps().map_err(bad_config)?;
    let rootfs = config.rootfs().ok_or_else(|| CheckError::NoRootfs {
        config: config_path.clone(),
    })?;
    let method = match rootfs_options(&config).any(|o| o == IDMAP_OPTION) {
        true => "idmap",
        false => "shift",
    };
    let found = mounts::list(&options.host, &container.dir(), &config_path, &config)?;
    let mut checker = Checker {
        options,
        container: &container,
        config: &config,
        maps: &maps,
        report: CheckReport {
            container: container.name.clone(),
            config: config_path.clone(),
            mode: if maps.is_empty() {
                "privileged"
            } else {
                "unprivileged"
            },
            maps: maps.iter().map(lxc_map).collect(),
            range: None,
            method,
            rootfs: rootfs.location.clone(),
            rootfs_scan: None,
            mounts: Vec::new(),
            devices: Vec::new(),
            problems: Vec::new(),
            notes: found.notes.clone(),
        },
    };
    if let (Some(manager), Some(conf)) = (&manager, &proxmox_conf) {
        checker.report.notes.push(manager.said(&container));
        checker.report.notes.extend(view_notes);
        // Said of a privileged container too: what going unprivileged would need.
        let said =
            crate::lxc::convert::proxmox::privileged_only(conf, &rootfs.location, &options.host);
        checker.report.notes.extend(said);
    }
    checker.interrupted()?;
    let interrupted = !checker.report.problems.is_empty();
    if start_guard && !interrupted {
        let message = "its config holds lxc-idshift's start guard, so every start refuses, \
            but no conversion of it is unfinished"
            .to_string();
        let now = Layout::of_config(checker.host_map(), checker.config);
        let fix = format!(
            "{} {}   (converts it to what it is, which takes the guard away)",
            checker.command(),
            now.args()
        );
        checker.problem(ProblemKind::StartGuard, &config_path, message, fix);
    }
    if let Some(Err(e)) = (!maps.is_empty()).then(|| HostMap::new(maps.clone())) {
        checker.report.notes.push(format!(
            "its map cannot be converted: {e}; the fixes below that run `lxc-idshift --to` do not apply to it until the map is fixed"
        ));
    }
    if !maps.is_empty() {
        checker.range()?;
        if rootfs.backend == config::Backend::Dir || rootfs.location.is_dir() {
            checker.rootfs(&rootfs.location, method == "idmap")?;
            if method == "idmap" {
                let fix = format!(
                    "{} --to {} --method shift   (shifts the rootfs to host ids instead and removes {IDMAP_OPTION} from lxc.rootfs.options in {})",
                    checker.command(),
                    checker.root_host_id(IdKind::User).unwrap_or(0),
                    config_path.display()
                );
                checker.idmap_works(&rootfs.location, fix);
            }
        } else {
            checker.report.notes.push(format!(
                "rootfs {} is not a directory here: its owners were not checked",
                rootfs.raw
            ));
        }
        let mut paths = vec![rootfs.location.clone()];
        paths.extend(found.binds.iter().map(|b| b.host_source.clone()));
        checker.traversal(&paths);
    }
    for bind in &found.binds {
        checker.mount(bind)?;
    }
    for node in &found.devices {
        checker.device(node);
    }
    if manager.is_some() {
        checker.proxmox_fixes();
    }
    Ok(checker.report)
}

/// `u 0 1000000 65536`, as the config writes it.
fn lxc_map(m: &MapEntry) -> String {
    let kind = if m.users { "u" } else { "g" };
    format!("{kind} {} {} {}", m.container_first, m.host_first, m.count)
}

fn rootfs_options(config: &ContainerConfig) -> impl Iterator<Item = &str> {
    config
        .value("lxc.rootfs.options")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
}

struct Checker<'a> {
    options: &'a CheckOptions,
    container: &'a Container,
    config: &'a ContainerConfig,
    maps: &'a [MapEntry],
    report: CheckReport,
}

impl Checker<'_> {
    fn problem(&mut self, kind: ProblemKind, path: &Path, message: String, fix: String) {
        self.report.problems.push(Problem {
            kind,
            path: path.to_path_buf(),
            message,
            fix,
        });
    }

    fn name(&self) -> &str {
        &self.container.name
    }

    /// `lxc-idshift NAME [--lxcpath DIR]`: the start of a command for this container.
    fn command(&self) -> String {
        let mut command = format!("lxc-idshift {}", self.name());
        if let Some(path) = &self.options.lxcpath {
            command += &format!(" --lxcpath {}", path.display());
        }
        command
    }

    /// The host id of the container's root (first map line of container id 0).
    /// Proxmox writes the LXC config itself: a bind mount point is fixed through
    /// its `mpN` (idmap=passthrough), a device through a `devN` entry.
    fn proxmox_fixes(&mut self) {
        let to = self.root_host_id(IdKind::User).unwrap_or(0);
        let mounts = format!(
            "{} --to {to} --mounts idmap   (gives its mount point idmap=passthrough: pve-container 6.1.6 and later; or --mounts shift to re-own a source that is the container's alone)",
            self.command()
        );
        for problem in &mut self.report.problems {
            match problem.kind {
                ProblemKind::MountShowsNobody => problem.fix = mounts.clone(),
                ProblemKind::DeviceShowsNobody | ProblemKind::DeviceWithoutUdevRule => {
                    problem.fix = format!(
                        "pass it in with a devN entry instead of raw lxc lines: see the note on {} above",
                        problem.path.display()
                    )
                }
                _ => {}
            }
        }
    }

    fn root_host_id(&self, kind: IdKind) -> Option<u32> {
        self.maps
            .iter()
            .find(|m| {
                m.container_first == 0
                    && match kind {
                        IdKind::User => m.users,
                        IdKind::Group => m.groups,
                    }
            })
            .map(|m| m.host_first)
    }

    /// The container's map, when it is one lxc-idshift converts.
    fn host_map(&self) -> Option<HostMap> {
        HostMap::new(self.maps.to_vec()).ok()
    }

    fn view(&self, idmapped: bool) -> View {
        View {
            maps: self.maps.to_vec(),
            idmapped,
        }
    }

    /// A conversion recorded as heading elsewhere than the config says.
    fn interrupted(&mut self) -> Result<(), CheckError> {
        let path = self.container.state_file();
        let state: ConversionState = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| io_error(&path)(std::io::Error::other(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let now = Layout::of_config(self.host_map(), self.config);
        if !state.interrupted_at(&now) {
            return Ok(());
        }
        let message = format!(
            "a conversion from {} to {} was interrupted: the rootfs is partly shifted, \
             and the container cannot start until it is finished or undone (lxc-idshift's \
             start guard in its config makes every start through LXC refuse)",
            state.origin_layout(),
            state.target_layout()
        );
        let fix = format!(
            "{0} {1}   (to finish it; or {0} {2} to undo it)",
            self.command(),
            state.target_layout().args(),
            state.origin_layout().args()
        );
        self.problem(ProblemKind::InterruptedConversion, &path, message, fix);
        Ok(())
    }

    /// Root must own every host id the maps use, in /etc/subuid and /etc/subgid.
    fn range(&mut self) -> Result<(), CheckError> {
        let host = &self.options.host;
        let mut owned = [true, true];
        let mut missing: [Vec<String>; 2] = Default::default();
        let mut others: Vec<String> = Vec::new();
        for (i, (path, kind)) in [
            (host.subuid(), IdKind::User),
            (host.subgid(), IdKind::Group),
        ]
        .into_iter()
        .enumerate()
        {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(io_error(&path)(e)),
            };
            let ids = SubIds::parse(&text);
            let lines = self.maps.iter().filter(|m| match kind {
                IdKind::User => m.users,
                IdKind::Group => m.groups,
            });
            for m in lines {
                if ROOT_OWNERS
                    .iter()
                    .any(|owner| ids.covers(owner, m.host_first, m.count))
                {
                    continue;
                }
                owned[i] = false;
                let span = format!(
                    "{}-{}",
                    m.host_first,
                    u64::from(m.host_first) + u64::from(m.count) - 1
                );
                if let Some(other) = ids.overlapping_other("root", m.host_first, m.count) {
                    others.push(format!(
                        "{} gives ids {}-{} to {}",
                        path.display(),
                        other.ids.first,
                        other.ids.last(),
                        other.owner
                    ));
                }
                missing[i].push(span);
            }
        }
        let count = self.maps.iter().map(|m| m.count).max().unwrap_or(0);
        self.report.range = Some(Range {
            uid_first: self.root_host_id(IdKind::User).unwrap_or(0),
            gid_first: self.root_host_id(IdKind::Group).unwrap_or(0),
            count,
            subuid_owned: owned[0],
            subgid_owned: owned[1],
        });
        if owned == [true, true] {
            return Ok(());
        }
        let mut parts = Vec::new();
        for (file, spans) in [("/etc/subuid", &missing[0]), ("/etc/subgid", &missing[1])] {
            if !spans.is_empty() {
                parts.push(format!("ids {} in {file}", spans.join(", ")));
            }
        }
        let mut message = format!(
            "root does not own {}: with newuidmap installed LXC refuses to start the container",
            parts.join(" nor ")
        );
        let fix = if others.is_empty() {
            let mut fix = String::from("usermod");
            for span in &missing[0] {
                fix += &format!(" --add-subuids {span}");
            }
            for span in &missing[1] {
                fix += &format!(" --add-subgids {span}");
            }
            fix + " root"
        } else {
            message += &format!(
                "; {}: two owners of the same ids could reach each other's files",
                others.join("; ")
            );
            format!(
                "{} --to auto   (moves the container to a free range)",
                self.command()
            )
        };
        let path = match owned[0] {
            false => host.subuid(),
            true => host.subgid(),
        };
        self.problem(ProblemKind::RangeNotOwned, &path, message, fix);
        Ok(())
    }

    /// The rootfs's owners as the container sees them.
    /// Units the rootfs has that fail in an unprivileged container, not masked.
    fn units(&mut self, rootfs: &Path) {
        for unit in units::to_mask(rootfs) {
            let message = format!(
                "systemd unit {} fails in an unprivileged container ({}), so the container boots degraded",
                unit.name, unit.why
            );
            let fix = format!(
                "{} --to {}   (masks it in the rootfs; --to 0 unmasks it)",
                self.command(),
                self.root_host_id(IdKind::User).unwrap_or(0)
            );
            let path = rootfs.join("etc/systemd/system").join(unit.name);
            self.problem(ProblemKind::UnitFailsUnprivileged, &path, message, fix);
        }
    }

    fn rootfs(&mut self, rootfs: &Path, idmapped: bool) -> Result<(), CheckError> {
        self.units(rootfs);
        let scan = mounts::scan(rootfs, &self.view(idmapped), self.options.threads)?;
        if scan.nobody > 0 {
            let message = format!(
                "{} of {} inodes of the rootfs have owners or groups the container sees as nobody (65534): {}; e.g. {}",
                scan.nobody,
                scan.inodes,
                scan.hidden_summary(6),
                scan.examples[0].display()
            );
            let fix = self.rootfs_fix(rootfs, &scan, idmapped);
            self.problem(ProblemKind::RootfsIdsOutsideMap, rootfs, message, fix);
        }
        self.report.rootfs_scan = Some(scan);
        Ok(())
    }

    /// Unshifted container ids: the conversion again (idempotent) shifts them;
    /// ids beyond the range: a wider range, or giving them an owner inside it.
    fn rootfs_fix(&self, rootfs: &Path, scan: &Scan, idmapped: bool) -> String {
        let range = self.report.range.as_ref().expect("range checked first");
        let (first, count) = (range.uid_first, range.count);
        let in_container_range = |id: &u32| *id < count;
        let unshifted = !idmapped
            && scan
                .hidden_uids
                .keys()
                .chain(scan.hidden_gids.keys())
                .any(in_container_range);
        let mut fixes = Vec::new();
        if unshifted {
            let now = Layout::of_config(self.host_map(), self.config);
            fixes.push(format!(
                "{} {}   (shifts the container ids 0..{} it finds to host ids)",
                self.command(),
                now.args(),
                count - 1
            ));
        }
        let beyond: Vec<u32> = scan
            .hidden_uids
            .keys()
            .chain(scan.hidden_gids.keys())
            .copied()
            .filter(|id| idmapped || !in_container_range(id))
            .collect();
        if !beyond.is_empty() {
            let (owner, span) = match idmapped {
                true => (0, format!("0..{}", count - 1)),
                false => (
                    first,
                    format!("{first}..{}", u64::from(first) + u64::from(count) - 1),
                ),
            };
            fixes.push(format!(
                "{}   (gives them to the container's root; any owner in {span} will do)",
                find_chown(rootfs, scan, owner, &beyond)
            ));
        }
        fixes.join("; and ")
    }

    /// Every parent directory of each path must let the container's root through.
    fn traversal(&mut self, paths: &[PathBuf]) {
        let (Some(uid), Some(gid)) = (
            self.root_host_id(IdKind::User),
            self.root_host_id(IdKind::Group),
        ) else {
            return;
        };
        let view = self.view(false);
        let mut seen: Vec<PathBuf> = Vec::new();
        for path in paths {
            for closed in closed_parents(path, (uid, gid), &view, &mut seen) {
                let what = match paths.first() == Some(path) {
                    true => "cannot start",
                    false => "cannot start with this bind mount",
                };
                let message = format!("{}: the container {what}", closed.message);
                self.problem(
                    ProblemKind::ParentNotTraversable,
                    &closed.dir,
                    message,
                    closed.fix,
                );
            }
        }
    }

    /// A source (or a directory holding or inside it) that another container's
    /// conversion shifted: its files hold that container's host ids, whatever this
    /// container sees of them.
    fn shifted_by_others(&mut self, bind: &BindMount) {
        let source = std::fs::canonicalize(&bind.host_source).unwrap_or(bind.host_source.clone());
        for other in shared::other_containers(self.container, &self.options.host) {
            let Ok(Some(state)) = convert::read_state(&other) else {
                continue;
            };
            let overlapping = (state.shifted_mounts.iter())
                .map(|s| std::fs::canonicalize(s).unwrap_or(s.clone()))
                .any(|s| s.starts_with(&source) || source.starts_with(&s));
            if !overlapping {
                continue;
            }
            let message = format!(
                "bind mount source {} ({}:{}) was shifted with container {}'s rootfs (--mounts shift): its files belong to that container's host ids now, and this container's users may no longer own or reach them",
                bind.source.display(),
                bind.origin.file.display(),
                bind.origin.line,
                other.name
            );
            let fix = format!(
                "lxc-idshift {} --lxcpath {} --to 0   (shifts it back), then convert {} again with --mounts idmap, or give one of them a directory of its own",
                other.name,
                other.lxcpath.display(),
                other.name
            );
            self.problem(ProblemKind::MountShiftedByOther, &bind.source, message, fix);
        }
    }

    fn mount(&mut self, bind: &BindMount) -> Result<(), CheckError> {
        let mut check = MountCheck {
            source: bind.source.clone(),
            target: bind.entry.target.clone(),
            options: bind.entry.options.clone(),
            file: bind.origin.file.clone(),
            line: bind.origin.line,
            idmapped: bind.idmapped(),
            scan: None,
        };
        if !bind.host_source.exists() {
            match bind.optional() {
                true => self.report.notes.push(format!(
                    "bind mount source {} does not exist (optional: the container starts without it)",
                    bind.source.display()
                )),
                false => {
                    let message = format!(
                        "bind mount source {} ({}:{}) does not exist: the container cannot start",
                        bind.source.display(),
                        bind.origin.file.display(),
                        bind.origin.line
                    );
                    let fix = format!(
                        "mkdir -p {}   (or add `optional` to the entry's options)",
                        bind.source.display()
                    );
                    self.problem(ProblemKind::MountSourceMissing, &bind.source, message, fix);
                }
            }
            self.report.mounts.push(check);
            return Ok(());
        }
        self.shifted_by_others(bind);
        let scan = mounts::scan(
            &bind.host_source,
            &self.view(bind.idmapped()),
            self.options.threads,
        )?;
        if scan.nobody > 0 {
            let message = format!(
                "bind mount {} -> {} ({}:{}): {} of {} inodes show as nobody (65534) inside, which the container cannot write: {}; e.g. {}",
                bind.source.display(),
                bind.entry.target,
                bind.origin.file.display(),
                bind.origin.line,
                scan.nobody,
                scan.inodes,
                scan.hidden_summary(6),
                scan.examples[0].display()
            );
            let fix = self.mount_fix(bind, &scan);
            self.problem(ProblemKind::MountShowsNobody, &bind.source, message, fix);
        }
        check.scan = Some(scan);
        self.report.mounts.push(check);
        if bind.idmapped() && self.maps.is_empty() {
            let message = format!(
                "bind mount {} ({}:{}) has {IDMAP_OPTION}, which makes lxc-start abort in a privileged container",
                bind.source.display(),
                bind.origin.file.display(),
                bind.origin.line
            );
            let fix = format!(
                "in {} line {}, remove {IDMAP_OPTION} from the options",
                bind.origin.file.display(),
                bind.origin.line
            );
            self.problem(ProblemKind::IdmapUnsupported, &bind.source, message, fix);
        }
        if bind.idmapped() && !self.maps.is_empty() {
            let fix = format!(
                "in {} line {}, remove {IDMAP_OPTION} from the options and shift the directory instead: lxc-idshift shift {} --map b:0:{}:{}",
                bind.origin.file.display(),
                bind.origin.line,
                bind.source.display(),
                self.root_host_id(IdKind::User).unwrap_or(0),
                self.maps.iter().map(|m| m.count).max().unwrap_or(65536)
            );
            self.idmap_works(&bind.host_source, fix);
        }
        Ok(())
    }

    /// An idmapped mount of `path` with the container's map must be possible (tried
    /// in a scratch user namespace, as root only; nothing is attached).
    fn idmap_works(&mut self, path: &Path, fix: String) {
        let (Some(first), Some(map)) = (
            self.root_host_id(IdKind::User),
            self.maps.iter().find(|m| m.users && m.container_first == 0),
        ) else {
            return;
        };
        if !crate::engine::sys::is_root() {
            self.report.notes.push(format!(
                "{}: whether an idmapped mount works is tried as root only",
                path.display()
            ));
            return;
        }
        if let Err(why) = mounts::idmap_works(&RealHost, path, first, map.count) {
            let message = format!(
                "{} is mounted with {IDMAP_OPTION}, which cannot work here: {why}; the container does not start",
                path.display()
            );
            self.problem(ProblemKind::IdmapUnsupported, path, message, fix);
        }
    }

    /// A plain bind mount: idmap it (the ids on disk stay; kernel 5.12+ and a file
    /// system that supports it). Already idmapped: the ids beyond the range need
    /// owners inside it.
    fn mount_fix(&self, bind: &BindMount, scan: &Scan) -> String {
        let range = self.report.range.as_ref().expect("range checked first");
        if bind.idmapped() {
            let beyond: Vec<u32> = scan
                .hidden_uids
                .keys()
                .chain(scan.hidden_gids.keys())
                .copied()
                .collect();
            return format!(
                "{}   (ids on an idmapped mount must lie in 0..{}; choose the owner each file should have)",
                find_chown(&bind.source, scan, 0, &beyond),
                range.count - 1
            );
        }
        let by_hand = format!(
            "in {} line {}, add {IDMAP_OPTION} to the options: `{}`",
            bind.origin.file.display(),
            bind.origin.line,
            bind.with_idmap_line()
        );
        match bind.in_own_file(&self.container.dir(), &self.report.rootfs) {
            true => format!(
                "{} --to {} --mounts idmap   (adds {IDMAP_OPTION} where an idmapped mount works; or {by_hand})",
                self.command(),
                range.uid_first
            ),
            false => by_hand,
        }
    }

    fn device(&mut self, node: &Path) {
        let Ok(meta) = std::fs::metadata(node) else {
            return;
        };
        let view = self.view(false);
        let mut check = DeviceCheck {
            node: node.to_path_buf(),
            uid: meta.uid(),
            gid: meta.gid(),
            seen: view.sees_both(meta.uid(), meta.gid()),
            udev_rule: None,
        };
        let Some(uid) = self.root_host_id(IdKind::User) else {
            self.report.devices.push(check);
            return;
        };
        let rules_path = udev::rules_path(&self.options.host, self.name());
        let rules = std::fs::read_to_string(&rules_path).unwrap_or_default();
        match udev::probe(&self.options.host, node) {
            Ok(device) => check.udev_rule = udev::find_rule(&rules, &device).map(str::to_string),
            Err(e) => self
                .report
                .notes
                .push(format!("device {}: {e}", node.display())),
        }
        let convert = format!(
            "{} --to {uid}   (writes the udev rule and gives the node to the container now)",
            self.command()
        );
        if check.udev_rule.is_none() {
            let message = format!(
                "device {} has no udev rule in {}: its owner goes back to the host's at the next replug or boot, and the container sees it as nobody",
                node.display(),
                rules_path.display()
            );
            self.problem(
                ProblemKind::DeviceWithoutUdevRule,
                node,
                message,
                convert.clone(),
            );
        }
        if !check.seen {
            let message = format!(
                "device {} is owned by {}:{}, which the container sees as nobody: it cannot open it",
                node.display(),
                meta.uid(),
                meta.gid()
            );
            let fix = match check.udev_rule {
                Some(_) => format!(
                    "udevadm control --reload && udevadm trigger {}   (applies the rule in {})",
                    node.display(),
                    rules_path.display()
                ),
                None => convert,
            };
            self.problem(ProblemKind::DeviceShowsNobody, node, message, fix);
        }
        self.report.devices.push(check);
    }
}

/// The directory's access ACL (`system.posix_acl_access`, not following a
/// symlink); None without one, or when it cannot be read or parsed (the mode bits
/// then decide, as they do for the kernel without an ACL).
fn access_acl(dir: &Path) -> Option<Acl> {
    let mut buf = vec![0u8; 65536];
    let len = rustix::fs::lgetxattr(dir, ACL_ACCESS, &mut buf[..]).ok()?;
    Acl::parse(&buf[..len]).ok()
}

/// A parent directory the container's root cannot search.
pub struct ClosedParent {
    pub dir: PathBuf,
    /// What blocks whom, naming the path it is a parent of.
    pub message: String,
    /// The command that opens it to the container's root alone.
    pub fix: String,
}

/// The parents of `path` (as written and canonical) that a process of host uid
/// `uid`, gid `gid` (the container's root, seeing ids through `view`) cannot
/// search, skipping those in `seen` (and adding the ones looked at).
pub fn closed_parents(
    path: &Path,
    (uid, gid): (u32, u32),
    view: &View,
    seen: &mut Vec<PathBuf>,
) -> Vec<ClosedParent> {
    let canonical = std::fs::canonicalize(path).ok();
    let chains = std::iter::once(path).chain(canonical.as_deref());
    let mut closed = Vec::new();
    for dir in chains.flat_map(|p| p.ancestors().skip(1)) {
        if dir.as_os_str().is_empty() || seen.iter().any(|s| s == dir) {
            continue;
        }
        seen.push(dir.to_path_buf());
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            continue;
        };
        let acl = access_acl(dir);
        if meta.is_symlink() || traversable(&meta, acl.as_ref(), (uid, gid), view) {
            continue;
        }
        let message = format!(
            "the container's root (host uid {uid}, gid {gid}) cannot traverse {} ({}:{} {:04o}), a parent of {}",
            dir.display(),
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777,
            path.display(),
        );
        // With an ACL, o+x may not reach the container's root (a named entry of
        // its uid or gid comes first): an entry of its own does.
        let fix = match acl {
            Some(_) => format!("setfacl -m u:{uid}:x {}", dir.display()),
            None => format!("chmod o+x {}", dir.display()),
        };
        closed.push(ClosedParent {
            dir: dir.to_path_buf(),
            message,
            fix,
        });
    }
    closed
}

/// Whether a process of host uid `uid`, gid `gid` (the container's root, with no
/// supplementary groups) may search the directory. Its capabilities count only on
/// inodes whose owner and group it maps; else the access ACL decides if there is
/// one, else the mode bits.
fn traversable(
    meta: &std::fs::Metadata,
    acl: Option<&Acl>,
    (uid, gid): (u32, u32),
    view: &View,
) -> bool {
    if view.sees_both(meta.uid(), meta.gid()) {
        return true; // CAP_DAC_READ_SEARCH in its own user namespace
    }
    if let Some(acl) = acl {
        return acl_grants_search(acl, (meta.uid(), meta.gid()), (uid, gid));
    }
    let mode = meta.mode();
    let bit = if meta.uid() == uid {
        0o100
    } else if meta.gid() == gid {
        0o010
    } else {
        0o001
    };
    mode & bit != 0
}

/// The kernel's ACL check (fs/posix_acl.c, posix_acl_permission) for search: the
/// owner's entry; else a named user entry; else the owning group's and named group
/// entries, any one granting; else other. The mask limits all but owner and other.
fn acl_grants_search(acl: &Acl, (owner, group): (u32, u32), (uid, gid): (u32, u32)) -> bool {
    const SEARCH: u16 = 0o1;
    let tagged = |tag: u16| acl.entries.iter().filter(move |e| e.tag == tag);
    let mask = tagged(ACL_MASK).next().map_or(0o7, |e| e.perm);
    let grants = |e: &AclEntry| e.perm & SEARCH != 0;
    let masked = |e: &AclEntry| e.perm & mask & SEARCH != 0;
    if uid == owner {
        return tagged(ACL_USER_OBJ).any(grants);
    }
    if let Some(entry) = tagged(ACL_USER).find(|e| e.id == uid) {
        return masked(entry);
    }
    let mut groups = tagged(ACL_GROUP_OBJ)
        .filter(|_| gid == group)
        .chain(tagged(ACL_GROUP).filter(|e| e.id == gid))
        .peekable();
    if groups.peek().is_some() {
        return groups.any(masked);
    }
    tagged(ACL_OTHER).any(grants)
}

/// `find DIR -xdev \( -uid A -o -gid B \) -exec chown -h OWNER:OWNER {} +` for the
/// hidden ids among `ids`.
fn find_chown(dir: &Path, scan: &Scan, owner: u32, ids: &[u32]) -> String {
    let mut tests = Vec::new();
    for id in ids {
        if scan.hidden_uids.contains_key(id) && !tests.contains(&format!("-uid {id}")) {
            tests.push(format!("-uid {id}"));
        }
        if scan.hidden_gids.contains_key(id) && !tests.contains(&format!("-gid {id}")) {
            tests.push(format!("-gid {id}"));
        }
    }
    format!(
        "find {} -xdev \\( {} \\) -exec chown -h {owner}:{owner} {{}} +",
        dir.display(),
        tests.join(" -o ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_find_command_names_each_hidden_id_once() {
        let scan = Scan {
            hidden_uids: BTreeMap::from([(33, 2), (100_000, 1)]),
            hidden_gids: BTreeMap::from([(33, 2)]),
            ..Scan::default()
        };
        assert_eq!(
            find_chown(Path::new("/srv/data"), &scan, 0, &[33, 100_000, 33]),
            "find /srv/data -xdev \\( -uid 33 -o -gid 33 -o -uid 100000 \\) -exec chown -h 0:0 {} +"
        );
    }

    #[test]
    fn traversal_by_owner_group_other_or_capability() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let view = View {
            maps: vec![
                MapEntry::parse("u 0 1000000 65536").unwrap(),
                MapEntry::parse("g 0 1000000 65536").unwrap(),
            ],
            idmapped: false,
        };
        let me = rustix::process::geteuid().as_raw();
        let my_gid = rustix::process::getegid().as_raw();
        let set = |mode: u32| {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
            std::fs::metadata(&dir).unwrap()
        };
        // Owned by us (not in the map): only our bits count for us...
        assert!(traversable(&set(0o700), None, (me, 1), &view));
        assert!(!traversable(&set(0o070), None, (me, my_gid), &view));
        // ...the group's for our group, the others' for anyone else.
        assert!(traversable(&set(0o710), None, (me + 1, my_gid), &view));
        assert!(!traversable(&set(0o770), None, (me + 1, my_gid + 1), &view));
        assert!(traversable(&set(0o701), None, (me + 1, my_gid + 1), &view));
    }

    const ANY: u32 = u32::MAX;

    /// An ACL: owner rwx, group r-x, other as given, and `extra` entries, in the
    /// order the kernel wants them (by tag).
    fn acl(other: u16, extra: &[(u16, u16, u32)]) -> Acl {
        let mut entries = vec![
            (ACL_USER_OBJ, 0o7, ANY),
            (ACL_GROUP_OBJ, 0o5, ANY),
            (ACL_OTHER, other, ANY),
        ];
        entries.extend_from_slice(extra);
        entries.sort_by_key(|e| e.0);
        Acl {
            entries: entries
                .into_iter()
                .map(|(tag, perm, id)| AclEntry { tag, perm, id })
                .collect(),
        }
    }

    #[test]
    fn search_by_acl_follows_the_kernels_order() {
        let (owner, group) = (0, 0);
        let root = (1_000_000, 1_000_000);
        let with = |extra: &[(u16, u16, u32)]| acl(0, extra);
        // Nothing for the container's root: other's entry says no.
        assert!(!acl_grants_search(&with(&[]), (owner, group), root));
        // A named user entry grants search, unless the mask takes it away.
        let user = (ACL_USER, 0o1, 1_000_000);
        assert!(acl_grants_search(
            &with(&[user, (ACL_MASK, 0o5, ANY)]),
            (owner, group),
            root
        ));
        assert!(!acl_grants_search(
            &with(&[user, (ACL_MASK, 0o4, ANY)]),
            (owner, group),
            root
        ));
        // A named user entry without x wins over other's x.
        let denied = acl(0o1, &[(ACL_USER, 0o4, 1_000_000), (ACL_MASK, 0o5, ANY)]);
        assert!(!acl_grants_search(&denied, (owner, group), root));
        // A named group entry, or the owning group's, grants it through the mask.
        let group_entry = (ACL_GROUP, 0o1, 1_000_000);
        assert!(acl_grants_search(
            &with(&[group_entry, (ACL_MASK, 0o1, ANY)]),
            (owner, group),
            root
        ));
        assert!(acl_grants_search(&with(&[]), (owner, 1_000_000), root));
        assert!(!acl_grants_search(
            &with(&[(ACL_MASK, 0o4, ANY)]),
            (owner, 1_000_000),
            root
        ));
        // The owner's entry decides for the owner.
        assert!(acl_grants_search(&with(&[]), (1_000_000, group), root));
    }

    #[test]
    fn traversal_reads_the_directorys_acl() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o750))
            .unwrap();
        let view = View {
            maps: vec![MapEntry::parse("u 0 1000000 65536").unwrap()],
            idmapped: false,
        };
        let meta = std::fs::metadata(&dir).unwrap();
        let root = (1_000_000, 1_000_000);
        assert_eq!(access_acl(&dir), None);
        assert!(!traversable(&meta, None, root, &view));
        let granted = acl(0, &[(ACL_USER, 0o1, 1_000_000), (ACL_MASK, 0o5, ANY)]);
        if let Err(e) = rustix::fs::lsetxattr(
            &dir,
            ACL_ACCESS,
            &granted.to_bytes(),
            rustix::fs::XattrFlags::empty(),
        ) {
            return crate::skip_test(&format!("this file system takes no ACL: {e}"));
        }
        let read = access_acl(&dir).expect("the ACL reads back");
        assert_eq!(read, granted);
        let meta = std::fs::metadata(&dir).unwrap();
        assert!(traversable(&meta, Some(&read), root, &view));
    }
}
