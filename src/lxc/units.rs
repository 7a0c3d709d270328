//! systemd units that fail only because a container became unprivileged, masked
//! inside its rootfs while it is (as users of unprivileged containers do by hand),
//! so that it boots as healthy as before; `--to 0` unmasks exactly those it masked.
//!
//! A mask is `etc/systemd/system/UNIT -> /dev/null` in the rootfs. The rootfs is the
//! container's: every path is resolved inside it (`RESOLVE_IN_ROOT`), so a link such
//! as `etc -> /etc` never leads to the host's files; a unit the admin configured in
//! `etc/systemd/system` already is left alone.

use crate::fsutil::FileError;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use std::os::fd::OwnedFd;
use std::path::Path;

/// A unit, and why it cannot work in a user namespace.
pub struct FailingUnit {
    pub name: &'static str,
    pub why: &'static str,
}

/// Found failing after conversions of Debian 11, 12 and 13 containers.
pub const FAILING_UNPRIVILEGED: &[FailingUnit] = &[
    FailingUnit {
        name: "sys-kernel-debug.mount",
        why: "debugfs cannot be mounted in a user namespace, and the unprivileged config keeps CAP_SYS_RAWIO, the unit's condition (lxc/lxc#3903)",
    },
    FailingUnit {
        name: "systemd-journald-audit.socket",
        why: "the kernel's audit socket cannot be bound from a user namespace (Debian 11)",
    },
    FailingUnit {
        name: "systemd-modules-load.service",
        why: "kernel modules cannot be loaded from a user namespace, and userns.conf clears the sys_module drop that skipped it (Debian 13)",
    },
];

const MASKS: &str = "etc/systemd/system";
const MASK_TARGET: &str = "/dev/null";
const UNIT_DIRS: [&str; 2] = ["usr/lib/systemd/system", "lib/systemd/system"];

/// The units of `FAILING_UNPRIVILEGED` the rootfs has and does not configure in
/// `etc/systemd/system` yet: what a conversion to unprivileged masks.
pub fn to_mask(rootfs: &Path) -> Vec<&'static FailingUnit> {
    let Some(root) = open_root(rootfs) else {
        return Vec::new();
    };
    let present = |name: &str| {
        UNIT_DIRS
            .iter()
            .any(|d| exists(&root, &format!("{d}/{name}")))
    };
    FAILING_UNPRIVILEGED
        .iter()
        .filter(|u| {
            present(u.name)
                && exists(&root, MASKS)
                && !exists(&root, &format!("{MASKS}/{}", u.name))
        })
        .collect()
}

/// Whether `name` is masked as lxc-idshift masks it.
pub fn is_masked(rootfs: &Path, name: &str) -> bool {
    let masks = open_root(rootfs).and_then(|root| open_masks(&root).ok());
    masks.is_some_and(|dir| {
        rustix::fs::readlinkat(&dir, name, Vec::new())
            .is_ok_and(|t| t.as_bytes() == MASK_TARGET.as_bytes())
    })
}

/// Masks each unit with a link owned as its directory is (by the container's root,
/// in whatever ids the rootfs holds now: a shift that follows moves it along); one
/// masked already is left as it is.
pub fn mask(rootfs: &Path, names: &[String]) -> Result<(), FileError> {
    let dir = masks_dir(rootfs)?;
    let owner = rustix::fs::fstat(&dir)
        .map_err(|e| FileError::new("stat", &rootfs.join(MASKS), e.into()))?;
    let (uid, gid) = (owner.st_uid, owner.st_gid);
    for name in names {
        let failed = |op| {
            let path = rootfs.join(MASKS).join(name);
            move |e: rustix::io::Errno| FileError::new(op, &path, e.into())
        };
        match rustix::fs::symlinkat(MASK_TARGET, &dir, name.as_str()) {
            Err(rustix::io::Errno::EXIST) => continue,
            other => other.map_err(failed("mask the unit (symlink)"))?,
        }
        rustix::fs::chownat(
            &dir,
            name.as_str(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(failed("chown the unit's mask"))?;
    }
    Ok(())
}

/// Removes the masks of `names` that are still lxc-idshift's (a link to /dev/null);
/// one the admin replaced since stays.
pub fn unmask(rootfs: &Path, names: &[String]) -> Result<(), FileError> {
    let dir = masks_dir(rootfs)?;
    for name in names.iter().filter(|n| is_masked(rootfs, n)) {
        rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()).map_err(|e| {
            FileError::new("unmask the unit", &rootfs.join(MASKS).join(name), e.into())
        })?;
    }
    Ok(())
}

fn masks_dir(rootfs: &Path) -> Result<OwnedFd, FileError> {
    let path = rootfs.join(MASKS);
    let root = open_root(rootfs).ok_or_else(|| {
        FileError::new(
            "open",
            rootfs,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })?;
    open_masks(&root).map_err(|e| FileError::new("open", &path, e.into()))
}

fn open_root(rootfs: &Path) -> Option<OwnedFd> {
    rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// `etc/systemd/system`, resolved inside the rootfs.
fn open_masks(root: &OwnedFd) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        MASKS,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Whether `relative` names something inside the rootfs (its symlinks resolved
/// there; a final symlink counts itself, even a dangling one such as a mask).
fn exists(root: &OwnedFd, relative: &str) -> bool {
    let (parent, name) = relative.rsplit_once('/').unwrap_or((".", relative));
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    rustix::fs::openat2(root, parent, flags, Mode::empty(), resolve)
        .and_then(|dir| rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW))
        .is_ok()
}
