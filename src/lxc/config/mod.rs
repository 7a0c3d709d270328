//! An LXC container config (`/var/lib/lxc/NAME/config`), read and edited line by line.
//!
//! The file is kept as its lines, verbatim: an edit changes, inserts or removes only
//! the lines it is about, so the admin's comments, order and spacing survive, and
//! undoing an edit gives back the original bytes.
//!
//! Syntax, as LXC reads it: `key = value`, spaces around `=` optional, leading spaces
//! allowed, `#` starts a comment line, the value is trimmed and one pair of matching
//! quotes around it is dropped. A later assignment of a single-valued key wins; an
//! empty `lxc.idmap =` or `lxc.mount.entry =` clears the entries before it.
//!
//! Parts: `line` (one line and how LXC reads its value), `rootfs` (backend,
//! location and mount options of the rootfs), `mount_entry` (mount entries and
//! their options), `device_access` (the devices the cgroup lines allow), `edit` (the unprivileged and privileged edits), `guard` (the
//! lines that keep a container from starting while a conversion is unfinished).

mod device_access;
mod edit;
#[cfg(feature = "testkit")]
mod fuzz;
pub mod guard;
mod line;
mod mount_entry;
mod rootfs;
#[cfg(test)]
mod test_configs;

pub use device_access::DeviceAccess;
#[doc(hidden)]
#[cfg(feature = "testkit")]
pub use fuzz::fuzz_edit;
pub use mount_entry::{fstab_with_option, MountEntry};
pub use rootfs::{Backend, Rootfs};

use crate::engine::idmap::{IdMapError, MapEntry};
use line::{split_line, Line};
use std::path::{Path, PathBuf};

const IDMAP_KEYS: [&str; 2] = ["lxc.idmap", "lxc.id_map"];
const INCLUDE_KEY: &str = "lxc.include";

/// Keys renamed in LXC 2.1 and removed in 3.0 (the list `lxc-update-config` converts).
/// Any one of them marks a config written for LXC 2.x or older.
const LEGACY_KEYS: &[&str] = &[
    "lxc.rootfs",
    "lxc.rootfs.backend",
    "lxc.id_map",
    "lxc.utsname",
    "lxc.network",
    "lxc.tty",
    "lxc.pts",
    "lxc.devttydir",
    "lxc.mount",
    "lxc.aa_profile",
    "lxc.aa_allow_incomplete",
    "lxc.se_context",
    "lxc.seccomp",
    "lxc.console",
    "lxc.haltsignal",
    "lxc.rebootsignal",
    "lxc.stopsignal",
    "lxc.syslog",
    "lxc.loglevel",
    "lxc.logfile",
    "lxc.init_cmd",
    "lxc.init_uid",
    "lxc.init_gid",
    "lxc.pivotdir",
    "lxc.kmsg",
];

/// Legacy key families: `lxc.network.0.link`, `lxc.network.type`, `lxc.limit.nofile`.
const LEGACY_PREFIXES: &[&str] = &["lxc.network.", "lxc.limit."];

fn is_legacy_key(key: &str) -> bool {
    LEGACY_KEYS.contains(&key) || LEGACY_PREFIXES.iter().any(|p| key.starts_with(p))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("line {line} `{text}`: {reason}; write it as `{key} = u 0 100000 65536` (u or g, container id, host id, count) or remove it")]
    BadIdmap {
        line: usize,
        key: String,
        text: String,
        reason: String,
    },
    #[error("line {line} `{text}`: expected `lxc.mount.entry = SOURCE TARGET FSTYPE OPTIONS [DUMP PASS]`; correct or remove the line")]
    BadMountEntry { line: usize, text: String },
}

/// An LXC container config, kept as its lines verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    lines: Vec<Line>,
}

impl ContainerConfig {
    pub fn parse(text: &str) -> ContainerConfig {
        let lines = text.split_inclusive('\n').map(split_line).collect();
        ContainerConfig { lines }
    }

    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            text.push_str(&line.text);
            text.push_str(&line.eol);
        }
        text
    }

    /// `(line index, key, value)` of every assignment, in file order.
    fn entries(&self) -> impl Iterator<Item = (usize, &str, &str)> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| line.entry().map(|(k, v)| (i, k, v)))
    }

    /// The last value of any of `keys`: the one LXC ends up using.
    fn last_value(&self, keys: &[&str]) -> Option<&str> {
        self.entries()
            .filter(|(_, k, _)| keys.contains(k))
            .last()
            .map(|(_, _, v)| v)
    }

    /// The `lxc.idmap` / `lxc.id_map` entries in effect (u lines have `users`, g lines
    /// `groups`). A line LXC would reject is an error rather than silently skipped.
    pub fn idmaps(&self) -> Result<Vec<MapEntry>, ConfigError> {
        let mut maps = Vec::new();
        for (index, key, value) in self.entries() {
            if !IDMAP_KEYS.contains(&key) {
                continue;
            }
            if value.is_empty() {
                maps.clear(); // an empty assignment clears the maps before it
                continue;
            }
            maps.push(self.parse_idmap(index, key, value)?);
        }
        Ok(maps)
    }

    fn parse_idmap(&self, index: usize, key: &str, value: &str) -> Result<MapEntry, ConfigError> {
        let bad = |reason: String| ConfigError::BadIdmap {
            line: index + 1,
            key: key.to_string(),
            text: self.lines[index].text.clone(),
            reason,
        };
        // LXC knows only u and g lines, space separated (not the `b:` shorthand).
        let kind = value.split_whitespace().next();
        if !matches!(kind, Some("u" | "g")) || value.contains(':') {
            return Err(bad("the type must be u or g".to_string()));
        }
        MapEntry::parse(value).map_err(|e| {
            bad(match e {
                IdMapError::Syntax(_) => "expected four fields".to_string(),
                other => other.to_string(),
            })
        })
    }

    /// Whether the config is written in pre-2.1 style. Markers: any key renamed in
    /// LXC 2.1 (`lxc.rootfs`, `lxc.utsname`, `lxc.id_map`, `lxc.network.*`, `lxc.tty`,
    /// `lxc.pts`, `lxc.mount`, `lxc.haltsignal`, ... see `LEGACY_KEYS`), so new keys
    /// added to such a file must use the old spelling too.
    pub fn legacy_keys(&self) -> bool {
        self.entries().any(|(_, key, _)| is_legacy_key(key))
    }

    /// The `lxc.include` values, in file order.
    pub fn includes(&self) -> Vec<PathBuf> {
        self.lines
            .iter()
            .filter_map(Line::include)
            .map(Path::to_path_buf)
            .collect()
    }

    /// `(line number from 1, key, value)` of every assignment, in file order.
    pub fn assignments(&self) -> Vec<(usize, &str, &str)> {
        self.entries().map(|(i, k, v)| (i + 1, k, v)).collect()
    }

    /// The value LXC uses for a single-valued key (its last assignment).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.last_value(&[key])
    }
}

#[cfg(test)]
mod tests {
    use super::test_configs::{parse, DEBIAN, LEGACY};
    use super::*;

    #[test]
    fn round_trips_exactly() {
        for text in [
            DEBIAN,
            LEGACY,
            "",
            "\n",
            "lxc.arch = amd64",
            "a = 1\r\nb = 2\r\n# c\r\n",
            "  # indented comment\n\tlxc.uts.name=x  \n\n\n",
            "not an assignment\nlxc.arch = amd64\r",
        ] {
            assert_eq!(parse(text).to_text(), text);
        }
    }

    #[test]
    fn reads_a_debian_config() {
        let config = parse(DEBIAN);
        let rootfs = config.rootfs().unwrap();
        assert_eq!(rootfs.backend, Backend::Dir);
        assert_eq!(rootfs.location, Path::new("/var/lib/lxc/jeedom1/rootfs"));
        assert_eq!(rootfs.raw, "dir:/var/lib/lxc/jeedom1/rootfs");
        assert!(!config.legacy_keys());
        assert_eq!(config.idmaps().unwrap(), vec![]);
        assert_eq!(
            config.includes(),
            vec![PathBuf::from("/usr/share/lxc/config/debian.common.conf")]
        );
    }

    #[test]
    fn legacy_markers() {
        for text in [
            "lxc.utsname = a",
            "lxc.network.0.link = br0",
            "lxc.network.type = veth",
            "lxc.pts = 1024",
            "lxc.tty = 4",
            "lxc.mount = /var/lib/lxc/a/fstab",
            "lxc.haltsignal = SIGPWR",
            "lxc.aa_profile = unconfined",
            "lxc.id_map = u 0 100000 65536",
            "lxc.limit.nofile = 1024",
        ] {
            assert!(parse(text).legacy_keys(), "{text}");
        }
        for text in [
            "lxc.uts.name = a",
            "lxc.net.0.link = br0",
            "lxc.pty.max = 1024",
            "lxc.tty.max = 4",
            "lxc.mount.fstab = /f",
            "lxc.mount.auto = proc",
            "lxc.signal.halt = SIGPWR",
            "# lxc.utsname = commented out",
        ] {
            assert!(!parse(text).legacy_keys(), "{text}");
        }
    }

    #[test]
    fn idmap_errors_name_the_line() {
        let err = parse("# x\nlxc.idmap = b 0 100000 65536\n")
            .idmaps()
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("line 2 `lxc.idmap = b 0 100000 65536`: the type must be u or g"),
            "{message}"
        );
        assert!(
            message.contains("lxc.idmap = u 0 100000 65536"),
            "{message}"
        );
        let err = parse("lxc.id_map = u 0 100000").idmaps().unwrap_err();
        assert!(err.to_string().contains("expected four fields"), "{err}");
        let cleared = parse("lxc.idmap = u 0 1 2\nlxc.idmap =\nlxc.idmap = g 0 1 2\n");
        assert_eq!(
            cleared.idmaps().unwrap(),
            vec![MapEntry::parse("g 0 1 2").unwrap()]
        );
    }
}
