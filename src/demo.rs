//! `lxc-idshift demo`: a sample rootfs shifted to 1000000 and back, showing a few
//! telling files at each step and proving with a full manifest that nothing was lost.

use crate::output;
use anyhow::Context;
use lxc_idshift::engine::acl::Acl;
use lxc_idshift::engine::caps::FileCaps;
use lxc_idshift::engine::xattr_names::{ACL_ACCESS, ACL_DEFAULT, CAPS};
use lxc_idshift::manifest::{self, Entry, Manifest};
use lxc_idshift::sample::{self, paths};
use lxc_idshift::{Direction, IdKind, IdMap, Quiet, ShiftOptions};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const MAP: &str = "b:0:1000000:65536";

/// The files shown at each step: one of each case the shift must get right.
const SHOWN: [&str; 8] = [
    paths::SETUID_ROOT,
    paths::SETGID,
    paths::CAP_NET_RAW,
    paths::ACL_DIR,
    paths::HOST_RANGE,
    paths::UNMAPPED,
    paths::CHAR_DEVICE,
    paths::SYMLINK_OUT,
];

pub fn run(keep: bool) -> anyhow::Result<u8> {
    anyhow::ensure!(
        lxc_idshift::is_root(),
        "the demo changes file owners: run it as root (cargo run --release -- demo)"
    );
    let tmp = tempfile_dir()?;
    let rootfs = tmp.join("rootfs");
    std::fs::create_dir(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let info = sample::build_sample_rootfs(&rootfs).context("building the sample rootfs")?;
    out!(
        "Sample rootfs with {} inodes in {}\n",
        info.inodes,
        rootfs.display()
    );
    let map = IdMap::parse(&[MAP])?;
    let before = collect(&rootfs)?;
    show(
        "Before (a privileged container: host ids are container ids)",
        &before,
    );

    shift(&rootfs, &tmp, &map, Direction::Forward)?;
    let shifted = collect(&rootfs)?;
    show(
        &format!("After `lxc-idshift shift {} --map {MAP}`", rootfs.display()),
        &shifted,
    );
    out!("`lxc-idshift verify` lists what the container cannot map; the sample holds id 70000 on purpose:");
    let report = lxc_idshift::verify(&rootfs, &map, None)?;
    output::verify_report(&report, &map, false)?;
    out!();

    shift(&rootfs, &tmp, &map, Direction::Reverse)?;
    let after = collect(&rootfs)?;
    show("After `--reverse`", &after);
    let differences = before.diff(&after, 20);
    if differences.is_empty() {
        out!(
            "Nothing lost: all {} paths have the same type, mode (setuid/setgid/sticky), owner, \
             group, every xattr (ACLs, capabilities, user.*, trusted.*) and hardlink identity \
             as before.",
            before.entries.len()
        );
    } else {
        out!(
            "DIFFERENCES after the round trip:\n{}",
            differences.join("\n")
        );
    }
    if keep {
        out!("Kept {}", tmp.display());
    } else {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    Ok(if differences.is_empty() { 0 } else { 1 })
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("lxc-idshift-demo-{}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn shift(rootfs: &Path, tmp: &Path, map: &IdMap, direction: Direction) -> anyhow::Result<()> {
    let options = ShiftOptions {
        root: rootfs.to_path_buf(),
        map: map.clone(),
        direction,
        dry_run: false,
        threads: None,
        journal: Some(tmp.join("journal")),
    };
    let report = lxc_idshift::shift(&options, &Quiet)?;
    output::shift_report(&report, false)?;
    out!();
    Ok(())
}

fn collect(root: &Path) -> anyhow::Result<Manifest> {
    manifest::collect(root).with_context(|| format!("reading the metadata of {}", root.display()))
}

fn show(title: &str, manifest: &Manifest) {
    out!("{title}:");
    for path in SHOWN {
        if let Some(entry) = manifest.entries.get(path.as_bytes()) {
            out!("  {path:<24} {}", describe(entry));
        }
    }
    out!();
}

/// One line: mode, owner, and the id-bearing xattrs decoded.
fn describe(entry: &Entry) -> String {
    let mut text = format!("{:04o} {:>7}:{:<7}", entry.mode, entry.uid, entry.gid);
    if let Some(caps) = entry.xattrs.get(CAPS.to_bytes()) {
        text += &match FileCaps::parse(caps) {
            Ok(c) => match c.rootid {
                Some(root) => format!(" caps v3 rootid {root}"),
                None => format!(" caps v{}", c.revision),
            },
            Err(e) => format!(" caps ({e})"),
        };
    }
    for (name, label) in [(ACL_ACCESS, "acl"), (ACL_DEFAULT, "default acl")] {
        if let Some(Ok(acl)) = entry.xattrs.get(name.to_bytes()).map(|v| Acl::parse(v)) {
            let ids: Vec<String> = acl
                .ids()
                .map(|(kind, id)| format!("{}:{id}", if kind == IdKind::User { "u" } else { "g" }))
                .collect();
            text += &format!(" {label} [{}]", ids.join(" "));
        }
    }
    if let Some(target) = &entry.symlink_target {
        text += &format!(
            " -> {}",
            std::ffi::OsStr::from_bytes(target).to_string_lossy()
        );
    }
    text
}
