//! Carrying out a conversion plan: subordinate ids, the recorded ownerships, the
//! rootfs shift, the config and other file edits, permissions and devices.

use super::{
    proxmox, read_subid_text, ConversionState, ConvertError, FileEdit, Flavour, Outcome, Plan,
    ROOT_USER,
};
use crate::engine::idmap::IdMap;
use crate::engine::journal;
use crate::engine::run::{Progress, ShiftOptions, ShiftReport};
use crate::fsutil;
use crate::lxc::config::guard;
use crate::lxc::container::Container;
use crate::lxc::effects::HostEffects;
use crate::lxc::lock::{ProxmoxConfigLock, ShadowLock};
use crate::lxc::pve::conf::PveConf;
use crate::lxc::subid::SubIds;
use std::path::{Path, PathBuf};

/// Carries out a plan. Order: the start guard, the record of the conversion,
/// subordinate ids, the rootfs (journaled), the config (which takes the guard
/// away), permissions, devices. Each step is idempotent.
/// Every change goes through `effects` (the host, or a test's recording double).
pub fn execute(
    plan: Plan,
    effects: &dyn HostEffects,
    threads: Option<usize>,
    progress: &dyn Progress,
) -> Result<Outcome, ConvertError> {
    // An earlier run killed mid-write may have left temp files next to these.
    let container = &plan.container;
    for file in [container.state_file(), container.config()] {
        fsutil::remove_stale_temps(&file);
    }
    for file in &plan.host_files {
        fsutil::remove_stale_temps(file);
    }
    // Nothing is done when nothing changes; otherwise the start guard comes first,
    // then the state.
    let units = &plan.units;
    let changes_units = !units.mask.is_empty() || !units.unmask.is_empty();
    if plan.shift.is_some() || !plan.edits.is_empty() || !plan.perms.is_empty() || changes_units {
        match &plan.flavour {
            Flavour::Lxc => {
                guard_start(effects, &plan)?;
                write_state(effects, &plan.container, &plan.state)?;
            }
            // The state first: a lock without it would look like Proxmox's own.
            Flavour::Proxmox { conf, snapshot, .. } => {
                if let Some(name) = snapshot {
                    take_snapshot(effects, &plan.container.name, name)?;
                }
                write_state(effects, &plan.container, &plan.state)?;
                lock_conf(effects, &plan, conf)?;
            }
        }
    }
    apply_subids(effects, &plan)?;
    // Masked before the shift, owned as the rootfs is now: the shift moves them along.
    if !units.mask.is_empty() {
        effects.mask_units(&plan.rootfs, &units.mask, true)?;
    }
    let shift = match &plan.shift {
        Some((map, direction)) => Some(effects.shift(
            &ShiftOptions {
                root: plan.rootfs.clone(),
                map: map.clone(),
                direction: *direction,
                dry_run: false,
                threads,
                journal: Some(plan.container.journal_for(map)),
            },
            progress,
        )?),
        None => None,
    };
    let mut mount_shifts = Vec::new();
    if let (Some((map, direction)), false) = (&plan.shift, failed(&shift)) {
        for source in &plan.mount_shifts {
            let report = effects.shift(
                &ShiftOptions {
                    root: source.clone(),
                    map: map.clone(),
                    direction: *direction,
                    dry_run: false,
                    threads,
                    journal: Some(mount_journal(&plan.container, source, map)),
                },
                progress,
            )?;
            let stop = report.summary.errors > 0;
            mount_shifts.push(report);
            if stop {
                break;
            }
        }
    }
    if failed(&shift) || mount_shifts.iter().any(|s| s.summary.errors > 0) {
        // The config keeps saying what the rootfs was: finish the shifts first.
        return Ok(Outcome {
            plan,
            shift,
            mount_shifts,
            udev_reloaded: None,
        });
    }
    // The container's files (the config last); the host's are applied above.
    let _conf_lock = match &plan.flavour {
        Flavour::Proxmox { .. } => Some(ProxmoxConfigLock::acquire(
            &plan.host,
            &plan.container.name,
        )?),
        Flavour::Lxc => None,
    };
    let conf = match &plan.flavour {
        Flavour::Proxmox { conf, edit, .. } => Some((conf, edit)),
        Flavour::Lxc => None,
    };
    for edit in plan.edits.iter().filter(|e| {
        !plan.host_files.contains(&e.path) && conf.is_none_or(|(conf, _)| e.path != *conf)
    }) {
        write_edit(effects, edit)?;
    }
    // The .conf as it is now (a snapshot section may have come since the plan),
    // edited; also when nothing else changes, its lock goes.
    if let Some((conf, edit)) = conf {
        let text = std::fs::read_to_string(conf).map_err(fsutil::failed("read", conf))?;
        let edited = edit.apply(&PveConf::parse(&text)).to_text();
        if edited != text {
            effects.write_file(conf, &edited)?;
        }
    }
    effects.apply_perms(&plan.perms)?;
    if !plan.units.unmask.is_empty() {
        effects.mask_units(&plan.rootfs, &plan.units.unmask, false)?;
    }
    finish_state(effects, &plan)?;
    let udev_reloaded = apply_devices(effects, &plan)?;
    Ok(Outcome {
        plan,
        shift,
        mount_shifts,
        udev_reloaded,
    })
}

/// Keeps the container from starting until the config's final write (see
/// `config::guard`); then refuses a container that started before the guard was
/// there (it had passed the plan's check while this conversion waited for its
/// locks), taking the guard away again when this run put it there.
fn guard_start(effects: &dyn HostEffects, plan: &Plan) -> Result<(), ConvertError> {
    let config = plan.container.config();
    let Some(edit) = plan.edits.iter().find(|e| e.path == config) else {
        return Ok(());
    };
    let on_disk = edit.old.as_deref().unwrap_or_default();
    let added = !guard::is_guarded(on_disk);
    if added {
        effects.write_file(&config, &guard::with_guard(on_disk))?;
    }
    if let Err(running) = plan.flavour.ensure_stopped(&plan.container, effects) {
        if added {
            effects.write_file(&config, on_disk)?;
        }
        return Err(running.into());
    }
    Ok(())
}

/// Proxmox VE: `lock: disk` in the `.conf` (under Proxmox's config lock) keeps
/// the container from starting, and from backups and migrations, until the final
/// write of the `.conf`; then a container that started meanwhile is refused, the
/// lock taken away again when this run set it.
fn lock_conf(effects: &dyn HostEffects, plan: &Plan, conf: &Path) -> Result<(), ConvertError> {
    let set = {
        let _lock = ProxmoxConfigLock::acquire(&plan.host, &plan.container.name)?;
        let text = std::fs::read_to_string(conf).map_err(fsutil::failed("read", conf))?;
        let parsed = PveConf::parse(&text);
        let set = parsed.lock() != Some(proxmox::LOCK);
        if set {
            effects.write_file(conf, &parsed.with_lock(Some(proxmox::LOCK)).to_text())?;
        }
        set.then_some(parsed)
    };
    if let Err(running) = plan.flavour.ensure_stopped(&plan.container, effects) {
        if let Some(before) = set {
            let _lock = ProxmoxConfigLock::acquire(&plan.host, &plan.container.name)?;
            effects.write_file(conf, &before.to_text())?;
        }
        return Err(running.into());
    }
    Ok(())
}

/// `pct snapshot VMID NAME`: Proxmox snapshots every volume and the `.conf`, or
/// refuses (storage that cannot snapshot, a lock) before anything is changed.
fn take_snapshot(effects: &dyn HostEffects, vmid: &str, name: &str) -> Result<(), ConvertError> {
    let failed = |why: String| ConvertError::ProxmoxSnapshot {
        vmid: vmid.to_string(),
        name: name.to_string(),
        why,
    };
    let description = "before lxc-idshift changed its id map";
    let args = ["snapshot", vmid, name, "--description", description].map(std::ffi::OsStr::new);
    let out = effects
        .run("pct", &args)
        .map_err(|e| failed(format!("cannot run pct: {e}")))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
    }
}

fn failed(shift: &Option<ShiftReport>) -> bool {
    shift.as_ref().is_some_and(|s| s.summary.errors > 0)
}

/// The journal of a bind mount source's shift: in the container's directory, named
/// after the source (see `journal::tree_tag`) and the map. A journal of the
/// earlier naming (the whole path, where that fit in a name) is still found.
pub fn mount_journal(container: &Container, source: &Path, map: &IdMap) -> PathBuf {
    let tag = crate::lxc::container::map_tag(map);
    let legacy: String = source
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let legacy = container
        .dir()
        .join(format!("lxc-idshift.mount{legacy}.{tag}.journal"));
    if legacy.file_name().is_some_and(|n| n.len() <= 255) && legacy.exists() {
        return legacy;
    }
    let name = journal::tree_tag(source);
    container
        .dir()
        .join(format!("lxc-idshift.mount.{name}.{tag}.journal"))
}

/// A finished conversion to unprivileged keeps the recorded ownerships for the way
/// back; a finished conversion to privileged needs no state.
fn finish_state(effects: &dyn HostEffects, plan: &Plan) -> Result<(), ConvertError> {
    let path = plan.container.state_file();
    match plan.after.map {
        Some(_) => write_state(
            effects,
            &plan.container,
            &ConversionState {
                perms: plan.state.perms.clone(),
                shifted_mounts: plan.mount_shifts.clone(),
                // Finished: going back keeps the range unless --release-range.
                granted_range: false,
                device_owners: plan.state.device_owners.clone(),
                masked_units: plan.units.masked.clone(),
                ..ConversionState::between(&plan.after, &plan.after, plan.range)
            },
        ),
        None if path.exists() => Ok(effects.remove_file(&path)?),
        None => Ok(()),
    }
}

fn write_edit(effects: &dyn HostEffects, edit: &FileEdit) -> Result<(), ConvertError> {
    let Some(text) = &edit.new else {
        return match effects.remove_file(&edit.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        };
    };
    if let Some(dir) = edit.path.parent() {
        std::fs::create_dir_all(dir).map_err(fsutil::failed("create the directory", dir))?;
    }
    Ok(effects.write_file(&edit.path, text)?)
}

fn apply_devices(effects: &dyn HostEffects, plan: &Plan) -> Result<Option<bool>, ConvertError> {
    for owner in &plan.device_owners {
        effects.chown(&owner.node, owner.uid, owner.gid)?;
    }
    match &plan.udev_rules {
        Some(edit) => {
            write_edit(effects, edit)?;
            if !plan.udevd_runs {
                return Ok(Some(false));
            }
            let nodes: Vec<PathBuf> = plan.device_owners.iter().map(|o| o.node.clone()).collect();
            let reloaded = effects.reload_udev(&nodes);
            Ok(Some(
                reloaded.map_err(fsutil::failed("reload udev for", &edit.path))?,
            ))
        }
        None => Ok(None),
    }
}

/// Applies the change to /etc/subuid and /etc/subgid under shadow's locks, to the
/// files as they are then: a line `useradd` or `usermod` added since the plan stays,
/// and a range given to another user meanwhile is refused.
fn apply_subids(effects: &dyn HostEffects, plan: &Plan) -> Result<(), ConvertError> {
    let Some(change) = &plan.subids else {
        return Ok(());
    };
    let files = [plan.host.subuid(), plan.host.subgid()];
    for dir in files.iter().filter_map(|f| f.parent()) {
        std::fs::create_dir_all(dir).map_err(fsutil::failed("create the directory", dir))?;
    }
    let _lock = ShadowLock::acquire(&plan.host, &files)?;
    for (path, users) in files.iter().zip([true, false]) {
        let old = read_subid_text(path)?;
        let ids = SubIds::parse(old.as_deref().unwrap_or_default());
        let new = change.apply(ROOT_USER, users, &ids)?;
        if new != ids || old.is_none() {
            effects.write_shadow_file(path, old.as_deref(), &new.to_text())?;
        }
    }
    Ok(())
}

fn write_state(
    effects: &dyn HostEffects,
    container: &Container,
    state: &ConversionState,
) -> Result<(), ConvertError> {
    let path = container.state_file();
    // A Proxmox container never started has no directory under the lxcpath yet.
    let dir = container.dir();
    std::fs::create_dir_all(&dir).map_err(fsutil::failed("create the directory", &dir))?;
    let text = serde_json::to_string_pretty(state).expect("conversion state serializes");
    Ok(effects.write_file(&path, &text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxc::effects::RealHost;

    /// Two sources whose paths read alike, or a source path of any length, each get
    /// a journal of their own whose name fits in NAME_MAX.
    #[test]
    fn each_mount_source_has_a_journal_of_its_own() {
        let container = Container {
            name: "c".into(),
            lxcpath: PathBuf::from("/var/lib/lxc"),
        };
        let map = IdMap::parse(&["b:0:1000000:65536"]).unwrap();
        let journal = |source: &str| mount_journal(&container, Path::new(source), &map);
        assert_ne!(journal("/srv/a_b"), journal("/srv/a/b"));
        let long = format!("/srv{}", "/directory".repeat(300));
        let name = journal(&long);
        assert!(name.file_name().unwrap().len() <= 255, "{}", name.display());
        assert!(name.starts_with("/var/lib/lxc/c/"));
    }

    /// A failed write names its path once, with the way on.
    #[test]
    fn a_failed_write_names_its_path_once() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("config");
        std::fs::create_dir(&taken).unwrap();
        let edit = FileEdit {
            path: taken.clone(),
            old: None,
            new: Some("lxc.uts.name = x\n".into()),
        };
        let message = write_edit(&RealHost, &edit).unwrap_err().to_string();
        let path = taken.display().to_string();
        assert_eq!(message.matches(&path).count(), 1, "{message}");
        assert!(message.ends_with("run the same command again"), "{message}");
    }
}
