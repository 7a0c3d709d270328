//! The conversion plan as `--dry-run` prints it.

use super::{DeviceOwner, Flavour, Plan};
use crate::diff;
use crate::lxc::hostmap;
use crate::lxc::method::{Layout, Method};
use crate::lxc::mounts::{self, IDMAP_OPTION};
use crate::lxc::units;
use crate::lxc::{perms, unmapped};

/// The plan as `--dry-run` prints it: each file edit as a diff, each permission and
/// ownership change, and what the rootfs shift will do.
pub fn describe(plan: &Plan) -> String {
    let mut text = String::new();
    text += &format!(
        "Container {} ({}): {} -> {}\n",
        plan.container.name,
        plan.container.dir().display(),
        plan.before,
        plan.after
    );
    if let Flavour::Proxmox {
        snapshot: Some(name),
        ..
    } = &plan.flavour
    {
        let vmid = &plan.container.name;
        text += &format!("first: pct snapshot {vmid} {name} (the way back to the container as it is now: pct rollback {vmid} {name})\n");
    }
    let rootfs = plan.rootfs.display();
    match &plan.shift {
        Some((map, direction)) => {
            text += &format!("rootfs {rootfs}: shift {direction} with {map}\n")
        }
        None if plan.after.method == Method::Idmap => {
            text += &format!(
            "rootfs {rootfs}: stays as it is on disk; LXC mounts it idmapped ({IDMAP_OPTION})\n"
        )
        }
        None => text += &format!("rootfs {rootfs}: nothing to shift\n"),
    }
    text += &describe_methods(plan);
    if let Some((map, direction)) = &plan.shift {
        let what = match plan.flavour {
            Flavour::Lxc => "bind mount source",
            Flavour::Proxmox { .. } => "volume",
        };
        for source in &plan.mount_shifts {
            text += &format!(
                "{what} {}: shift {direction} with {map}\n",
                source.display()
            );
        }
    }
    if let Some(to) = plan.to_map() {
        // Only a privileged rootfs can take a wider range: an unprivileged one keeps
        // its own, and so does a map of another shape.
        let offer = plan.before.map.is_none() && to.one_range().is_some();
        text += &unmapped::describe(&plan.unmapped, plan.range, to.root_uid(), offer);
    }
    let map = plan.to_map().map(|m| {
        let pieces: Vec<String> = (hostmap::compact(m.entries().to_vec()).iter())
            .map(|e| e.to_string())
            .collect();
        pieces.join(" --map ")
    });
    text += &mounts::describe(&plan.mounts, map.as_deref());
    for note in &plan.mount_notes {
        text += &format!("  {note}\n");
    }
    for note in &plan.notes {
        text += &format!("note: {note}\n");
    }
    if let Some(why) = &plan.mounts_unlisted {
        text += &format!("warning: the bind mounts could not be listed: {why}\n");
    }
    for edit in plan.edits.iter().chain(plan.udev_rules.iter()) {
        let (old, new) = (edit.old.as_deref(), edit.new.as_deref());
        text += &diff::render_diff(&edit.path, old.unwrap_or(""), new.unwrap_or(""));
    }
    for change in &plan.perms {
        text += &format!("{}\n", perms::describe(change));
    }
    for owner in &plan.device_owners {
        let DeviceOwner { node, uid, gid } = owner;
        text += &format!("chown {uid}:{gid} {}\n", node.display());
    }
    for name in &plan.units.mask {
        let why = (units::FAILING_UNPRIVILEGED.iter())
            .find(|u| u.name == name)
            .map_or("", |u| u.why);
        text += &format!(
            "mask {name} in the rootfs (it cannot work unprivileged: {why}; --to 0 unmasks it)\n"
        );
    }
    for name in &plan.units.unmask {
        text +=
            &format!("unmask {name} in the rootfs (masked by the conversion to unprivileged)\n");
    }
    if plan.udev_rules.is_some() && !plan.udevd_runs {
        text += "note: no udevd runs here (or udevadm is missing): the nodes get their owners now, and the rule takes effect when udevd starts\n";
    }
    text
}

/// For `--dry-run`: whether each rootfs method works on this host and what it
/// would do to the rootfs; the chosen one is marked.
fn describe_methods(plan: &Plan) -> String {
    let (Some(to), Some(probe)) = (plan.to_map(), &plan.idmap_probe) else {
        return String::new();
    };
    let mut text = String::from("rootfs methods on this host (--method):\n");
    for method in [Method::Shift, Method::Idmap] {
        let target = Layout::new(Some(to.clone()), method);
        let works = match (method, probe) {
            (Method::Shift, _) => "works on any kernel".to_string(),
            (Method::Idmap, Ok(())) => "works here".to_string(),
            (Method::Idmap, Err(why)) => format!("does not work here: {why}"),
        };
        let from = plan.before.on_disk();
        let does = match hostmap::shift_between(from, target.on_disk()) {
            Ok(Some((_, _))) if from == target.on_disk() => {
                "walk the rootfs again, shifting only ids not shifted yet".to_string()
            }
            Ok(Some((map, direction))) => {
                format!("shift every inode of the rootfs {direction} with {map} (journaled)")
            }
            _ => "leave every inode of the rootfs as it is".to_string(),
        };
        let option = match method {
            Method::Idmap => format!(", with {IDMAP_OPTION} in lxc.rootfs.options"),
            Method::Shift => String::new(),
        };
        let mark = if method == plan.after.method {
            "*"
        } else {
            " "
        };
        text += &format!("  {mark} {method}: {works}; would {does}{option}\n");
    }
    text
}
