//! Who else uses a directory: before `--mounts shift` re-owns a bind mount source
//! with the container's range, everything on the host that the re-owning would hurt
//! is looked for. Any one of them makes the source not the container's alone:
//! - its entry lies in a file outside the container's directory (other containers
//!   may include that file);
//! - it holds an lxcpath, the container's own directory or another container's
//!   (whose config LXC runs hooks from as host root: re-owned, the converted
//!   container's root could write one), or lies inside another container's
//!   directory;
//! - it is, holds or lies inside the container's rootfs (shifted with the rootfs
//!   already: a second shift would move its ids twice);
//! - another container, under any lxcpath of the host, binds it, a directory inside
//!   it, or one holding it;
//! - it holds a host user's home, or lies inside one;
//! - another file system is mounted inside it (a shift never crosses into it, so the
//!   container would see its files as nobody).

use super::accounts;
use super::config::ContainerConfig;
use super::container::{default_lxcpath, Container};
use super::effects::RealHost;
use super::host::Host;
use super::mounts;
use std::path::{Path, PathBuf};

/// Users, like host accounts, get uids from here (login.defs' UID_MIN default).
const FIRST_USER_UID: u32 = 1000;
/// `nobody`, and everything above, is no user with a home to protect.
const NOBODY: u32 = 65534;

/// What else uses `source` (a bind mount source of `container`), one sentence per
/// user found; empty when it is the container's alone. `foreign_entry`: the file
/// holding its entry, when that file is not in the container's own directory.
pub fn other_users(
    source: &Path,
    foreign_entry: Option<&Path>,
    (container, rootfs): (&Container, &Path),
    host: &Host,
) -> Vec<String> {
    let source = canonical(source);
    let mut found = Vec::new();
    if let Some(file) = foreign_entry {
        found.push(format!(
            "its entry is in {}, outside the container's directory, which other containers may include too",
            file.display()
        ));
    }
    let own = canonical(&container.dir());
    found.extend(own_users(&source, container, rootfs));
    for lxcpath in lxcpaths(container, host) {
        if lxcpath.starts_with(&source) {
            found.push(format!(
                "it holds the lxcpath {} (every container's config and rootfs there)",
                lxcpath.display()
            ));
            continue;
        }
        for other in others(&lxcpath, &own) {
            found.extend(container_users(&source, &other, host));
        }
    }
    for (user, home) in homes(host) {
        if overlaps(&source, &home) {
            found.push(format!(
                "it is in, or holds, host user {user}'s home {} ({user} would lose access)",
                home.display()
            ));
        }
    }
    found.extend(nested_mounts(&source));
    found
}

/// What re-owning `source` would do to the container itself: its config, or its
/// rootfs shifted a second time.
fn own_users(source: &Path, container: &Container, rootfs: &Path) -> Vec<String> {
    let (dir, rootfs) = (canonical(&container.dir()), canonical(rootfs));
    let mut found = Vec::new();
    if dir.starts_with(source) {
        found.push(format!(
            "it holds the container's own directory {} (its config: LXC runs that config's hooks as host root, and the container's root could write one)",
            dir.display()
        ));
    }
    if overlaps(source, &rootfs) {
        found.push(format!(
            "it is in, or holds, the container's own rootfs {} (shifted with it already: a second shift would move its ids twice)",
            rootfs.display()
        ));
    }
    found
}

/// Whether one path holds the other (or they are the same).
pub(crate) fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

pub(crate) fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Every other container of the host, under any of its lxcpaths.
pub fn other_containers(container: &Container, host: &Host) -> Vec<Container> {
    let own = canonical(&container.dir());
    (lxcpaths(container, host).iter())
        .flat_map(|lxcpath| others(lxcpath, &own))
        .collect()
}

/// Every lxcpath of the host: the container's, the system's (`lxc-config`, read
/// only), and each user's (`~/.local/share/lxc`), those that exist.
fn lxcpaths(container: &Container, host: &Host) -> Vec<PathBuf> {
    let mut paths = vec![
        container.lxcpath.clone(),
        default_lxcpath(&RealHost),
        host.path("/var/lib/lxc"),
    ];
    paths.extend(
        homes(host)
            .into_iter()
            .map(|(_, home)| home.join(".local/share/lxc")),
    );
    let mut paths: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| canonical(p))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The other containers whose overlay rootfs has `rootfs` (or a directory in it)
/// as its lower layer (`lxc-copy -s -B overlay` clones), with their configs.
pub fn overlay_clones(rootfs: &Path, container: &Container, host: &Host) -> Vec<(String, PathBuf)> {
    let rootfs = canonical(rootfs);
    (other_containers(container, host).into_iter())
        .filter(|other| {
            let text = std::fs::read_to_string(other.config()).unwrap_or_default();
            let layers = ContainerConfig::parse(&text)
                .rootfs()
                .and_then(|r| r.overlay_layers());
            layers.is_some_and(|(lower, _)| overlaps(&rootfs, &canonical(&lower)))
        })
        .map(|other| (other.name.clone(), other.config()))
        .collect()
}

/// The other containers whose rootfs holds the inode at `path` (a name in `rootfs`)
/// at the same place: hard links of a `cp -al` copy, named in a refusal.
pub fn rootfs_sharing(
    path: &Path,
    rootfs: &Path,
    container: &Container,
    host: &Host,
) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(relative), Ok(meta)) = (path.strip_prefix(rootfs), std::fs::symlink_metadata(path))
    else {
        return Vec::new();
    };
    let same = |other: &Container| {
        let text = std::fs::read_to_string(other.config()).unwrap_or_default();
        let Some(theirs) = ContainerConfig::parse(&text).rootfs() else {
            return false;
        };
        std::fs::symlink_metadata(theirs.location.join(relative))
            .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
    };
    (other_containers(container, host).iter())
        .filter(|other| same(other))
        .map(|other| other.name.clone())
        .collect()
}

/// What re-owning `source` would do to container `other`: its directory, or a
/// bind mount of its own.
fn container_users(source: &Path, other: &Container, host: &Host) -> Vec<String> {
    let dir = canonical(&other.dir());
    if overlaps(source, &dir) {
        return vec![format!(
            "it is in, or holds, container {}'s directory {} (its config and rootfs: LXC runs that config's hooks as host root)",
            other.name,
            dir.display()
        )];
    }
    (bind_sources(other, host).iter())
        .filter(|bind| overlaps(source, &canonical(bind)))
        .map(|bind| {
            format!(
                "container {} ({}) binds {} too",
                other.name,
                other.config().display(),
                bind.display()
            )
        })
        .collect()
}

/// The containers under `lxcpath` other than the one in `own`.
fn others(lxcpath: &Path, own: &Path) -> Vec<Container> {
    let Ok(entries) = std::fs::read_dir(lxcpath) else {
        return Vec::new();
    };
    let mut containers: Vec<Container> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|name| Container {
            name,
            lxcpath: lxcpath.to_path_buf(),
        })
        .filter(|c| c.config().is_file() && canonical(&c.dir()) != own)
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    containers
}

/// The host paths `container` binds (as far as its config can be read).
fn bind_sources(container: &Container, host: &Host) -> Vec<PathBuf> {
    let config_path = container.config();
    let Ok(text) = std::fs::read_to_string(&config_path) else {
        return Vec::new();
    };
    let config = ContainerConfig::parse(&text);
    mounts::list(host, &container.dir(), &config_path, &config)
        .map(|found| found.binds.into_iter().map(|b| b.host_source).collect())
        .unwrap_or_default()
}

/// Host users (uids FIRST_USER_UID up to nobody) and their homes, under `host`.
fn homes(host: &Host) -> Vec<(String, PathBuf)> {
    let passwd = accounts::passwd_text(host).unwrap_or_default();
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (name, uid, home) = (fields.first()?, fields.get(2)?, fields.get(5)?);
            let uid: u32 = uid.trim().parse().ok()?;
            let real = (FIRST_USER_UID..NOBODY).contains(&uid) && home.starts_with('/');
            (real && *home != "/").then(|| (name.to_string(), canonical(&host.path(home))))
        })
        .collect()
}

/// Every mount point of this mount namespace (from /proc/self/mountinfo).
pub(crate) fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_point(point)))
        .collect()
}

/// File systems mounted strictly inside `source`.
fn nested_mounts(source: &Path) -> Vec<String> {
    mount_points()
        .into_iter()
        .filter(|point| point.starts_with(source) && point != source)
        .map(|point| {
            format!(
                "a file system is mounted inside it at {} (a shift does not cross into it: the container would see its files as nobody)",
                point.display()
            )
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_point(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped_as_mountinfo_writes_them() {
        assert_eq!(unescape_mount_point("/srv/my\\040data"), "/srv/my data");
        assert_eq!(unescape_mount_point("/a\\134b"), "/a\\b");
        assert_eq!(unescape_mount_point("/plain"), "/plain");
    }

    /// Containers are those with a config; the container itself is not another.
    #[test]
    fn other_containers_are_found_under_its_lxcpath() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::create_dir(tmp.path().join(name)).unwrap();
        }
        std::fs::write(tmp.path().join("a/config"), "").unwrap();
        std::fs::write(tmp.path().join("b/config"), "").unwrap();
        let a = Container {
            name: "a".into(),
            lxcpath: tmp.path().to_path_buf(),
        };
        let prefix = tempfile::tempdir().unwrap();
        let lxcpath = canonical(tmp.path());
        let names: Vec<String> = other_containers(&a, &Host::under(prefix.path()))
            .into_iter()
            .filter(|c| c.lxcpath == lxcpath)
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn paths_overlap_when_one_holds_the_other() {
        assert!(overlaps(Path::new("/srv"), Path::new("/srv/data")));
        assert!(overlaps(Path::new("/srv/data"), Path::new("/srv")));
        assert!(overlaps(Path::new("/srv"), Path::new("/srv")));
        assert!(!overlaps(
            Path::new("/srv/data"),
            Path::new("/srv/database")
        ));
    }
}
