//! Permissions around an unprivileged container's directory.
//!
//! The container's root (host uid H, host gid G) must traverse every parent of its
//! rootfs; other host users must not reach into the container directory. The rootfs
//! itself keeps its own mode: a rootfs of mode 0750 makes "/" unreadable for every
//! non-root user inside the container. So the container directory is restricted
//! (root:G 0750) and the parents only ever gain o+x.

use crate::fsutil::{failed, FileError};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The owner, group and permission bits (including setuid/setgid/sticky) of a path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ownership {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Ownership {
    /// The current state of `path` itself (a symlink is not followed).
    pub fn of(path: &Path) -> Result<Ownership, FileError> {
        let meta =
            std::fs::symlink_metadata(path).map_err(failed("read the owner and mode of", path))?;
        Ok(Ownership {
            path: path.to_path_buf(),
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
        })
    }

    fn with(&self, uid: u32, gid: u32, mode: u32) -> Ownership {
        Ownership {
            path: self.path.clone(),
            uid,
            gid,
            mode,
        }
    }
}

/// One planned change of a path's ownership and/or mode, with the reason shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermChange {
    pub path: PathBuf,
    pub before: Ownership,
    pub after: Ownership,
    pub why: &'static str,
}

const WHY_CONTAINER_DIR: &str =
    "the container's root must traverse it and other host users must not reach into it";
const WHY_CONFIG: &str = "other host users must not read the container's config";
const WHY_PARENT: &str = "the container's root must traverse every parent of its rootfs";
const WHY_RESTORE: &str = "restoring the state recorded before the conversion";

/// The changes for an unprivileged container: the container dir -> root:G 0750
/// (setuid/setgid/sticky off), the config -> no more than 0640 (owner kept), and each
/// parent of the container dir up to / that lacks o+x -> o+x added (no bit removed).
/// Symlinks in the given paths are resolved: the change must land on the real
/// directory and file, and the directories holding the links must be traversable too.
/// Reads only; the `before` of each change is what to record for [`restore_changes`].
pub fn unprivileged_changes(
    container_dir: &Path,
    config: &Path,
    host_gid: u32,
) -> Result<Vec<PermChange>, FileError> {
    let real_dir = canonical(container_dir)?;
    let real_config = canonical(config)?;
    let mut changes = traversal_changes(&parents(&[container_dir, &real_dir]))?;
    let dir = Ownership::of(&real_dir)?;
    changes.extend(change(dir.with(0, host_gid, 0o750), dir, WHY_CONTAINER_DIR));
    let conf = Ownership::of(&real_config)?;
    // Masking (rather than setting 0640) never loosens a stricter mode such as 0600.
    let after = conf.with(conf.uid, conf.gid, conf.mode & 0o640);
    changes.extend(change(after, conf, WHY_CONFIG));
    Ok(changes)
}

/// The changes that give o+x to each of `dirs` lacking it (e.g. the parents of a
/// rootfs kept outside the container directory). Symlinks are left alone: their
/// mode means nothing, and the directories they lead to are listed separately.
pub fn traversal_changes(dirs: &[PathBuf]) -> Result<Vec<PermChange>, FileError> {
    let mut changes = Vec::new();
    for dir in dirs {
        if std::fs::symlink_metadata(dir)
            .map_err(failed("read the mode of", dir))?
            .is_symlink()
        {
            continue;
        }
        let now = Ownership::of(dir)?;
        changes.extend(change(
            now.with(now.uid, now.gid, now.mode | 0o001),
            now,
            WHY_PARENT,
        ));
    }
    Ok(changes)
}

/// The proper ancestors of each path, from "/" down, each once.
fn parents(paths: &[&Path]) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = Vec::new();
    for path in paths {
        let mut chain: Vec<&Path> = path.ancestors().skip(1).collect();
        chain.retain(|p| !p.as_os_str().is_empty());
        for dir in chain.into_iter().rev() {
            if !all.iter().any(|known| known == dir) {
                all.push(dir.to_path_buf());
            }
        }
    }
    all
}

fn canonical(path: &Path) -> Result<PathBuf, FileError> {
    std::fs::canonicalize(path).map_err(failed("resolve", path))
}

/// A change from `before` to `after`, or none when they already agree (so a second
/// plan after applying the first is empty).
fn change(after: Ownership, before: Ownership, why: &'static str) -> Option<PermChange> {
    (after != before).then(|| PermChange {
        path: before.path.clone(),
        before,
        after,
        why,
    })
}

/// The changes that bring each recorded path back to its recorded state (for going
/// back to privileged). A recorded path that no longer exists is an error.
pub fn restore_changes(recorded: &[Ownership]) -> Result<Vec<PermChange>, FileError> {
    let mut changes = Vec::new();
    for wanted in recorded {
        let now = Ownership::of(&wanted.path)?;
        changes.extend(change(wanted.clone(), now, WHY_RESTORE));
    }
    Ok(changes)
}

/// Applies the changes in order: chown, then chmod (a chown clears setuid/setgid on
/// files, the chmod sets the wanted bits back). Each path is opened without following
/// a final symlink and changed through that descriptor, so a path swapped for a link
/// after planning cannot redirect the change. The error names the path.
pub fn apply(changes: &[PermChange]) -> Result<(), FileError> {
    for change in changes {
        apply_one(&change.after).map_err(failed("change the owner and mode of", &change.path))?;
    }
    Ok(())
}

fn apply_one(after: &Ownership) -> std::io::Result<()> {
    let file = open_no_follow(&after.path)?;
    let meta = file.metadata()?;
    if !meta.is_dir() && !meta.is_file() {
        // Plans only hold directories and the config file; anything else is a surprise.
        return Err(std::io::Error::other("not a directory or regular file"));
    }
    // Skipping an unneeded chown keeps the setuid/setgid bits it would strip.
    if (meta.uid(), meta.gid()) != (after.uid, after.gid) {
        std::os::unix::fs::fchown(&file, Some(after.uid), Some(after.gid))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(after.mode))
}

/// Opens `path` itself: ELOOP if it is a symlink; NONBLOCK so that a FIFO put in
/// its place cannot hang the open.
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// One line for the user, e.g. "chown root:1000000 /var/lib/lxc/x (was root:root):
/// the container's root must traverse it ..."; a mode change reads "chmod 0750 ...".
pub fn describe(change: &PermChange) -> String {
    let (b, a) = (&change.before, &change.after);
    let ids_change = (b.uid, b.gid) != (a.uid, a.gid);
    let mode_change = b.mode != a.mode;
    let mut did = Vec::new();
    let mut was = Vec::new();
    if ids_change {
        did.push(format!("chown {}:{}", id_name(a.uid), id_name(a.gid)));
        was.push(format!("{}:{}", id_name(b.uid), id_name(b.gid)));
    }
    if mode_change || !ids_change {
        did.push(format!("chmod {:04o}", a.mode));
        was.push(format!("{:04o}", b.mode));
    }
    format!(
        "{} {} (was {}): {}",
        did.join(", "),
        change.path.display(),
        was.join(" "),
        change.why
    )
}

/// 0 is root in every host; other ids are shown as numbers (the shifted ones have
/// no name on the host anyway).
fn id_name(id: u32) -> String {
    match id {
        0 => "root".to_string(),
        _ => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u32 = 1_000_000;

    fn set(path: &Path, uid: u32, gid: u32, mode: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// base/srv (0700) / lxc (0750) / web (2755 root:root) / config (0644) + rootfs (0755).
    /// base itself (a tempdir) is made 0700 too.
    fn tree(base: &Path) -> (PathBuf, PathBuf) {
        set(base, 0, 0, 0o700);
        let dir = base.join("srv/lxc/web");
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        std::fs::write(dir.join("config"), "lxc.uts.name = web\n").unwrap();
        set(&base.join("srv"), 0, 0, 0o700);
        set(&base.join("srv/lxc"), 0, 0, 0o750);
        set(&dir, 0, 0, 0o2755);
        set(&dir.join("config"), 0, 0, 0o644);
        set(&dir.join("rootfs"), 0, 0, 0o755);
        (dir.clone(), dir.join("config"))
    }

    fn state(paths: &[PathBuf]) -> Vec<Ownership> {
        paths.iter().map(|p| Ownership::of(p).unwrap()).collect()
    }

    #[test]
    fn plan_apply_replan_restore() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (dir, config) = tree(&base);
        let rootfs_before = Ownership::of(&dir.join("rootfs")).unwrap();

        let changes = unprivileged_changes(&dir, &config, G).unwrap();
        // Nothing outside the tempdir may need a change on this machine (/tmp has o+x):
        // otherwise the test would chmod the host.
        assert!(
            changes.iter().all(|c| c.path.starts_with(&base)),
            "{changes:#?}"
        );
        let got: Vec<(PathBuf, u32, u32, u32)> = changes
            .iter()
            .map(|c| (c.path.clone(), c.after.uid, c.after.gid, c.after.mode))
            .collect();
        assert_eq!(
            got,
            vec![
                (base.clone(), 0, 0, 0o701),
                (base.join("srv"), 0, 0, 0o701),
                (base.join("srv/lxc"), 0, 0, 0o751),
                (dir.clone(), 0, G, 0o750),
                (config.clone(), 0, 0, 0o640),
            ]
        );
        assert_eq!(changes[1].before.mode, 0o700);
        assert_eq!(changes[3].before.mode, 0o2755);

        let recorded: Vec<Ownership> = changes.iter().map(|c| c.before.clone()).collect();
        apply(&changes).unwrap();
        let paths: Vec<PathBuf> = changes.iter().map(|c| c.path.clone()).collect();
        assert_eq!(
            state(&paths),
            changes.iter().map(|c| c.after.clone()).collect::<Vec<_>>()
        );
        // The rootfs keeps its own mode.
        assert_eq!(Ownership::of(&dir.join("rootfs")).unwrap(), rootfs_before);
        // Idempotent: a second plan finds nothing to do.
        assert_eq!(unprivileged_changes(&dir, &config, G).unwrap(), vec![]);

        let restore = restore_changes(&recorded).unwrap();
        assert_eq!(restore.len(), recorded.len());
        apply(&restore).unwrap();
        assert_eq!(state(&paths), recorded);
        assert_eq!(restore_changes(&recorded).unwrap(), vec![]);
    }

    #[test]
    fn restore_brings_back_setgid_and_a_file_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        set(&file, 0, 0, 0o644);
        let recorded = vec![Ownership {
            path: file.clone(),
            uid: 1000,
            gid: 100,
            mode: 0o2750,
        }];
        apply(&restore_changes(&recorded).unwrap()).unwrap();
        assert_eq!(state(&[file]), recorded);
    }

    #[test]
    fn a_stricter_config_mode_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (dir, config) = tree(&base);
        set(&config, 0, 0, 0o600);
        let changes = unprivileged_changes(&dir, &config, G).unwrap();
        assert!(changes.iter().all(|c| c.path != config));
    }

    #[test]
    fn a_symlinked_container_dir_changes_its_target_and_both_parent_chains() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (dir, _) = tree(&base);
        let links = base.join("links");
        std::fs::create_dir(&links).unwrap();
        set(&links, 0, 0, 0o700);
        std::os::unix::fs::symlink(&dir, links.join("web")).unwrap();
        let changes =
            unprivileged_changes(&links.join("web"), &links.join("web/config"), G).unwrap();
        let paths: Vec<&Path> = changes.iter().map(|c| c.path.as_path()).collect();
        assert!(paths.contains(&links.as_path()));
        assert!(paths.contains(&base.join("srv/lxc").as_path()));
        assert!(paths.contains(&dir.as_path()));
        assert!(paths.contains(&dir.join("config").as_path()));
        assert!(!paths.contains(&links.join("web").as_path()));
    }

    #[test]
    fn apply_refuses_a_symlink_and_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        set(&target, 0, 0, 0o755);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let before = Ownership {
            path: link.clone(),
            uid: 0,
            gid: 0,
            mode: 0o755,
        };
        let change = PermChange {
            path: link.clone(),
            after: before.with(0, G, 0o750),
            before,
            why: WHY_CONTAINER_DIR,
        };
        let err = apply(&[change]).unwrap_err();
        assert!(err.to_string().contains("link"), "{err}");
        assert_eq!(Ownership::of(&target).unwrap().mode, 0o755);
        assert_eq!(Ownership::of(&target).unwrap().gid, 0);
    }

    #[test]
    fn describe_says_what_was_and_why() {
        let before = Ownership {
            path: "/var/lib/lxc/x".into(),
            uid: 0,
            gid: 0,
            mode: 0o750,
        };
        let chown = PermChange {
            path: before.path.clone(),
            after: before.with(0, G, 0o750),
            before: before.clone(),
            why: "the container's root must traverse it",
        };
        assert_eq!(
            describe(&chown),
            "chown root:1000000 /var/lib/lxc/x (was root:root): the container's root must traverse it"
        );
        let both = PermChange {
            after: before.with(0, G, 0o750),
            before: before.with(0, 0, 0o2755),
            ..chown.clone()
        };
        assert_eq!(
            describe(&both),
            "chown root:1000000, chmod 0750 /var/lib/lxc/x (was root:root 2755): the container's root must traverse it"
        );
        let chmod = PermChange {
            path: "/var/lib".into(),
            before: before.with(0, 0, 0o750),
            after: before.with(0, 0, 0o751),
            why: WHY_PARENT,
        };
        assert_eq!(
            describe(&chmod),
            format!("chmod 0751 /var/lib (was 0750): {WHY_PARENT}")
        );
    }

    #[test]
    fn ownership_round_trips_through_json() {
        let o = Ownership {
            path: "/var/lib/lxc/x".into(),
            uid: 0,
            gid: 1_000_000,
            mode: 0o750,
        };
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<Ownership>(&json).unwrap(), o);
    }
}
