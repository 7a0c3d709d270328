//! The container's root filesystem: its backend and location (`lxc.rootfs.path`),
//! and its mount options (`lxc.rootfs.options`, where `idmap=container` goes).

use super::line::{written_value, Line};
use super::ContainerConfig;
use std::path::PathBuf;

const ROOTFS_OPTIONS_KEY: &str = "lxc.rootfs.options";

/// The storage backend named by the `type:` prefix of `lxc.rootfs.path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Dir,
    Btrfs,
    Zfs,
    Overlay,
    Lvm,
    Loop,
    Nbd,
    Rbd,
    Other(String),
}

impl Backend {
    fn from_name(name: &str) -> Backend {
        match name {
            "dir" => Backend::Dir,
            "btrfs" => Backend::Btrfs,
            "zfs" => Backend::Zfs,
            "overlay" | "overlayfs" => Backend::Overlay,
            "lvm" => Backend::Lvm,
            "loop" => Backend::Loop,
            "nbd" => Backend::Nbd,
            "rbd" => Backend::Rbd,
            other => Backend::Other(other.to_string()),
        }
    }
}

/// The container's root filesystem: `raw` is the config value, `location` what
/// follows the backend prefix (a directory, a device, a zfs dataset, an image file,
/// or for overlay `LOWER:UPPER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub backend: Backend,
    pub location: PathBuf,
    pub raw: String,
}

impl Rootfs {
    /// Splits `type:location`. A value without a prefix is a plain path: a directory
    /// unless a legacy `lxc.rootfs.backend` names another type. (LXC itself probes
    /// a plain block device path; callers must check that a Dir location is a directory.)
    fn parse(raw: &str, legacy_backend: Option<&str>) -> Rootfs {
        let prefixed = raw.split_once(':').filter(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric())
        });
        let (backend, location) = match prefixed {
            Some((name, rest)) => (Backend::from_name(name), rest),
            None => (legacy_backend.map_or(Backend::Dir, Backend::from_name), raw),
        };
        Rootfs {
            backend,
            location: PathBuf::from(location),
            raw: raw.to_string(),
        }
    }

    /// For an overlay rootfs, its `(lower, upper)` directories: the lower one is
    /// usually another container's rootfs and must not be shifted with this one.
    pub fn overlay_layers(&self) -> Option<(PathBuf, PathBuf)> {
        if self.backend != Backend::Overlay {
            return None;
        }
        let (lower, upper) = self.location.to_str()?.rsplit_once(':')?;
        Some((PathBuf::from(lower), PathBuf::from(upper)))
    }
}

impl ContainerConfig {
    /// `lxc.rootfs.path` or legacy `lxc.rootfs`; None when unset or set empty.
    pub fn rootfs(&self) -> Option<Rootfs> {
        let raw = self
            .last_value(&["lxc.rootfs.path", "lxc.rootfs"])
            .filter(|v| !v.is_empty())?;
        Some(Rootfs::parse(raw, self.last_value(&["lxc.rootfs.backend"])))
    }

    /// Whether the rootfs is mounted idmapped (`lxc.rootfs.options` holding
    /// `idmap=container`): the rootfs stays unshifted on disk.
    pub fn rootfs_idmapped(&self) -> bool {
        self.last_value(&[ROOTFS_OPTIONS_KEY])
            .is_some_and(|options| split_options(options).any(|o| o.trim() == "idmap=container"))
    }

    /// The config with `option` added to (`present`) or removed from the rootfs
    /// mount options, every other byte kept. Added: appended to the
    /// `lxc.rootfs.options` in effect, or on a new line after it (when empty) or
    /// after `lxc.rootfs.path`. Removed: from every `lxc.rootfs.options` line; a line
    /// left without options goes. So removing what was added gives back the bytes.
    pub fn with_rootfs_option(&self, option: &str, present: bool) -> ContainerConfig {
        let mut lines = self.lines.clone();
        if !present {
            lines = lines
                .iter()
                .filter_map(|l| without_rootfs_option(l, option))
                .collect();
            return self.edited(lines);
        }
        let last = self
            .entries()
            .filter(|(_, k, _)| *k == ROOTFS_OPTIONS_KEY)
            .last()
            .map(|(i, _, v)| (i, v.to_string()));
        match last {
            Some((_, value)) if split_options(&value).any(|o| o.trim() == option) => {}
            Some((i, value)) if !value.trim().is_empty() => {
                lines[i] = lines[i].with_value(&written_value(&format!("{value},{option}")));
            }
            at => {
                let after = at.map(|(i, _)| i).or_else(|| {
                    self.entries()
                        .filter(|(_, k, _)| ["lxc.rootfs.path", "lxc.rootfs"].contains(k))
                        .last()
                        .map(|(i, _, _)| i)
                });
                let at = after.map_or(lines.len(), |i| i + 1);
                lines.insert(at, Line::new(format!("{ROOTFS_OPTIONS_KEY} = {option}")));
            }
        }
        self.edited(lines)
    }
}

/// The options of a mount options value, as written (spaces kept).
fn split_options(value: &str) -> impl Iterator<Item = &str> {
    value.split(',')
}

/// `line` without `option` if it is an `lxc.rootfs.options` holding it; None when
/// no option is left (the line goes).
fn without_rootfs_option(line: &Line, option: &str) -> Option<Line> {
    let Some(value) = line.value_of(ROOTFS_OPTIONS_KEY) else {
        return Some(line.clone());
    };
    if !split_options(value).any(|o| o.trim() == option) {
        return Some(line.clone());
    }
    let kept: Vec<&str> = split_options(value)
        .filter(|o| o.trim() != option)
        .collect();
    let kept = kept.join(",");
    (!kept.trim().is_empty()).then(|| line.with_value(&written_value(&kept)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxc::config::test_configs::parse;
    use std::path::Path;

    #[test]
    fn rootfs_backends() {
        let cases = [
            (
                "dir:/var/lib/lxc/a/rootfs",
                Backend::Dir,
                "/var/lib/lxc/a/rootfs",
            ),
            (
                "/var/lib/lxc/a/rootfs",
                Backend::Dir,
                "/var/lib/lxc/a/rootfs",
            ),
            ("/srv/odd:name/rootfs", Backend::Dir, "/srv/odd:name/rootfs"),
            (
                "btrfs:/var/lib/lxc/a/rootfs",
                Backend::Btrfs,
                "/var/lib/lxc/a/rootfs",
            ),
            ("zfs:pool/x", Backend::Zfs, "pool/x"),
            ("overlay:/a:/b", Backend::Overlay, "/a:/b"),
            ("overlayfs:/a:/b", Backend::Overlay, "/a:/b"),
            ("lvm:/dev/vg/x", Backend::Lvm, "/dev/vg/x"),
            ("loop:/x.img", Backend::Loop, "/x.img"),
            ("nbd:/x.qcow2:1", Backend::Nbd, "/x.qcow2:1"),
            ("rbd:pool/img", Backend::Rbd, "pool/img"),
            ("aufs:/a:/b", Backend::Other("aufs".into()), "/a:/b"),
        ];
        for (raw, backend, location) in cases {
            let rootfs = parse(&format!("lxc.rootfs.path = {raw}\n"))
                .rootfs()
                .unwrap();
            assert_eq!(
                rootfs,
                Rootfs {
                    backend,
                    location: location.into(),
                    raw: raw.into()
                }
            );
        }
        let overlay = parse("lxc.rootfs.path = overlay:/a:/b").rootfs().unwrap();
        assert_eq!(overlay.overlay_layers(), Some(("/a".into(), "/b".into())));
        let legacy = parse("lxc.rootfs.backend = btrfs\nlxc.rootfs = /r\n")
            .rootfs()
            .unwrap();
        assert_eq!(legacy.backend, Backend::Btrfs);
        assert_eq!(
            parse("lxc.rootfs.path = \"/q\"").rootfs().unwrap().location,
            Path::new("/q")
        );
        assert_eq!(
            parse("lxc.rootfs.path = /a\nlxc.rootfs.path =\n").rootfs(),
            None
        );
        assert_eq!(parse("# lxc.rootfs.path = /a\n").rootfs(), None);
    }

    #[test]
    fn the_rootfs_option_is_merged_in_and_removed_byte_identically() {
        const IDMAP: &str = "idmap=container";
        let cases = [
            // No options line: one is added right after lxc.rootfs.path.
            (
                "# c\nlxc.rootfs.path = dir:/r\nlxc.uts.name = a",
                "# c\nlxc.rootfs.path = dir:/r\nlxc.rootfs.options = idmap=container\nlxc.uts.name = a",
            ),
            // Merged into the options in effect (the last line), spacing kept.
            (
                "lxc.rootfs.options = ro\r\nlxc.rootfs.path=dir:/r\r\nlxc.rootfs.options=noatime, nodev\r\n",
                "lxc.rootfs.options = ro\r\nlxc.rootfs.path=dir:/r\r\nlxc.rootfs.options=noatime, nodev,idmap=container\r\n",
            ),
            // An empty options line stays; a new one follows it.
            (
                "lxc.rootfs.path = dir:/r\nlxc.rootfs.options =\n",
                "lxc.rootfs.path = dir:/r\nlxc.rootfs.options =\nlxc.rootfs.options = idmap=container\n",
            ),
            // Legacy key, no rootfs options.
            (
                "lxc.rootfs = /r\n",
                "lxc.rootfs = /r\nlxc.rootfs.options = idmap=container\n",
            ),
        ];
        for (before, after) in cases {
            let added = parse(before).with_rootfs_option(IDMAP, true);
            assert_eq!(added.to_text(), after);
            assert!(added.rootfs_idmapped(), "{after}");
            assert_eq!(added.with_rootfs_option(IDMAP, true), added, "idempotent");
            let removed = added.with_rootfs_option(IDMAP, false);
            assert_eq!(removed.to_text(), before, "round trip");
            assert!(!removed.rootfs_idmapped());
            assert_eq!(removed.with_rootfs_option(IDMAP, false), removed);
        }
        // Removed wherever it is, with its spaces; a line left empty goes.
        let text =
            "lxc.rootfs.options = idmap=container\nlxc.rootfs.options = ro, idmap=container ,x\n";
        assert_eq!(
            parse(text).with_rootfs_option(IDMAP, false).to_text(),
            "lxc.rootfs.options = ro,x\n"
        );
        // Already there: nothing changes.
        let there = parse("lxc.rootfs.options = idmap=container,ro\n");
        assert_eq!(there.with_rootfs_option(IDMAP, true), there);
    }
}
