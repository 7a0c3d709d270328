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

use crate::engine::idmap::{IdMapError, MapEntry};
use std::path::{Path, PathBuf};

const IDMAP_KEYS: [&str; 2] = ["lxc.idmap", "lxc.id_map"];
const INCLUDE_KEY: &str = "lxc.include";
const ROOTFS_OPTIONS_KEY: &str = "lxc.rootfs.options";

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

/// One line: its text without the line ending, and the ending ("\n", "\r\n", or ""
/// for a last line without one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    text: String,
    eol: String,
}

impl Line {
    /// A new line; its ending is set by `ContainerConfig::edited`.
    fn new(text: String) -> Line {
        Line {
            text,
            eol: String::new(),
        }
    }

    /// `(key, value)` of an assignment; None for blank lines, comments and other text.
    fn entry(&self) -> Option<(&str, &str)> {
        let text = self.text.trim_start();
        if text.starts_with('#') {
            return None;
        }
        let (key, value) = text.split_once('=')?;
        Some((key.trim(), unquote(value.trim())))
    }

    fn value_of(&self, key: &str) -> Option<&str> {
        self.entry().filter(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn is_idmap(&self) -> bool {
        self.entry().is_some_and(|(k, _)| IDMAP_KEYS.contains(&k))
    }

    fn include(&self) -> Option<&Path> {
        self.value_of(INCLUDE_KEY)
            .filter(|v| !v.is_empty())
            .map(Path::new)
    }

    /// The same line with another value: indentation, key and spacing (trailing
    /// spaces too) are kept so that the diff shows only the value changing, and
    /// changing it back gives the same bytes.
    fn with_value(&self, value: &str) -> Line {
        let eq = self.text.find('=').map_or(self.text.len(), |i| i + 1);
        let after = &self.text[eq..];
        let gap = after.len() - after.trim_start().len();
        let trail = &after[after.trim_end().len().max(gap)..];
        Line {
            text: format!("{}{value}{trail}", &self.text[..eq + gap]),
            eol: self.eol.clone(),
        }
    }
}

/// Drops one pair of matching quotes around a value, as LXC does.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

fn is_legacy_key(key: &str) -> bool {
    LEGACY_KEYS.contains(&key) || LEGACY_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// `debian` for `.../debian.common.conf`; None for the global `common.conf`.
fn distro_of_common(include: &Path) -> Option<&str> {
    let name = include.file_name()?.to_str()?;
    name.strip_suffix(".common.conf").filter(|d| !d.is_empty())
}

/// `userns.conf` or a distro's `<distro>.userns.conf`.
fn is_userns_include(include: &Path) -> bool {
    include
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("userns.conf"))
}

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

/// One `lxc.mount.entry = SOURCE TARGET FSTYPE OPTIONS [DUMP PASS]`, fields as
/// written (fstab escapes such as `\040` are left alone).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MountEntry {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: String,
}

impl MountEntry {
    /// `SOURCE TARGET FSTYPE OPTIONS [DUMP PASS]` (an `lxc.mount.entry` value or an
    /// fstab line); None when the fields are too few or too many.
    pub fn parse(value: &str) -> Option<MountEntry> {
        let fields: Vec<&str> = value.split_whitespace().collect();
        let [source, target, fstype, options, ..] = fields[..] else {
            return None;
        };
        if fields.len() > 6 {
            return None;
        }
        Some(MountEntry {
            source: source.to_string(),
            target: target.to_string(),
            fstype: fstype.to_string(),
            options: options.to_string(),
        })
    }

    /// Whether `option` (e.g. `optional`, `idmap=container`) is among the options.
    pub fn has_option(&self, option: &str) -> bool {
        self.options.split(',').any(|o| o == option)
    }

    /// A bind mount of a host path: its files keep host ownership after a shift.
    pub fn is_bind(&self) -> bool {
        self.options.split(',').any(|o| o == "bind" || o == "rbind")
    }
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

    /// The `lxc.mount.entry` lines in effect.
    pub fn mount_entries(&self) -> Result<Vec<MountEntry>, ConfigError> {
        let mut mounts = Vec::new();
        for (index, key, value) in self.entries() {
            if key != "lxc.mount.entry" {
                continue;
            }
            if value.is_empty() {
                mounts.clear(); // an empty assignment clears the entries before it
                continue;
            }
            mounts.push(MountEntry::parse(value).ok_or_else(|| self.bad_mount(index))?);
        }
        Ok(mounts)
    }

    /// `(line number from 1, key, value)` of every assignment, in file order.
    pub fn assignments(&self) -> Vec<(usize, &str, &str)> {
        self.entries().map(|(i, k, v)| (i + 1, k, v)).collect()
    }

    /// The value LXC uses for a single-valued key (its last assignment).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.last_value(&[key])
    }

    /// The config with `option` added to (`present`) or removed from the options of
    /// the `lxc.mount.entry` at 1-based `line`; every other byte stays. Adding an
    /// option already there, or removing one that is not, changes nothing.
    pub fn with_mount_option(&self, line: usize, option: &str, present: bool) -> ContainerConfig {
        let mut lines = self.lines.clone();
        if let Some(l) = lines.get_mut(line.wrapping_sub(1)) {
            if let Some(edited) = edited_mount_line(l, option, present) {
                *l = edited;
            }
        }
        ContainerConfig { lines }
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

    /// The config with `option` removed from every `lxc.mount.entry`.
    pub fn without_mount_option(&self, option: &str) -> ContainerConfig {
        let lines = self
            .lines
            .iter()
            .map(|l| edited_mount_line(l, option, false).unwrap_or_else(|| l.clone()))
            .collect();
        ContainerConfig { lines }
    }

    /// The error for a mount line (1-based `line`) that does not parse.
    pub fn bad_mount_line(&self, line: usize) -> ConfigError {
        self.bad_mount(line - 1)
    }

    fn bad_mount(&self, index: usize) -> ConfigError {
        ConfigError::BadMountEntry {
            line: index + 1,
            text: self.lines[index].text.clone(),
        }
    }

    /// The config for an unprivileged container whose ids 0..count are host ids
    /// host_first..: ensures `lxc.include = <userns_include>` (replacing another
    /// `*userns.conf` include in place, else right after the `<distro>.common.conf`
    /// include, else after the last include, else at the end) and one u and one g
    /// idmap line. Existing idmap lines are rewritten in place (the first u and the
    /// first g line; the others are dropped); missing ones go right after the
    /// include, or next to their existing partner. Idempotent.
    pub fn with_unprivileged(
        &self,
        host_first: u32,
        count: u32,
        userns_include: &Path,
    ) -> ContainerConfig {
        let key = if self.legacy_keys() {
            "lxc.id_map"
        } else {
            "lxc.idmap"
        };
        let wanted = [
            format!("u 0 {host_first} {count}"),
            format!("g 0 {host_first} {count}"),
        ];
        let lines = with_include(&self.lines, userns_include);
        let (mut lines, placed) = with_idmaps_in_place(&lines, &wanted);
        let new_line = |i: usize| Line::new(format!("{key} = {}", wanted[i]));
        match placed {
            [Some(_), Some(_)] => {}
            [Some(u), None] => lines.insert(u + 1, new_line(1)),
            [None, Some(g)] => lines.insert(g, new_line(0)),
            [None, None] => {
                let at = lines
                    .iter()
                    .position(|l| l.include() == Some(userns_include))
                    .map_or(lines.len(), |i| i + 1);
                lines.splice(at..at, [new_line(0), new_line(1)]);
            }
        }
        self.edited(lines)
    }

    /// The config for a privileged container: no idmap lines, no `*userns.conf`
    /// include. Idempotent; undoes `with_unprivileged` exactly when the original had
    /// neither.
    pub fn with_privileged(&self) -> ContainerConfig {
        let lines = self
            .lines
            .iter()
            .filter(|l| !l.is_idmap() && !l.include().is_some_and(is_userns_include))
            .cloned()
            .collect();
        self.edited(lines)
    }

    /// The userns include for this config's distro: for an include of
    /// `<dir>/<distro>.common.conf`, `<dir>/<distro>.userns.conf` if `exists` says so,
    /// else `<dir>/userns.conf`; None without a distro common include.
    pub fn userns_include(&self, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
        let includes = self.includes();
        let (common, distro) = includes
            .iter()
            .filter_map(|p| distro_of_common(p).map(|d| (p, d)))
            .next_back()?;
        let dir = common.parent().unwrap_or(Path::new(""));
        let distro_userns = dir.join(format!("{distro}.userns.conf"));
        if exists(&distro_userns) {
            Some(distro_userns)
        } else {
            Some(dir.join("userns.conf"))
        }
    }

    /// A config made of `lines` with the file's line-ending shape restored: every
    /// line but the last ends like the file's lines do, and the last ends only if
    /// the original last line did (so removing what was added gives the same bytes).
    fn edited(&self, mut lines: Vec<Line>) -> ContainerConfig {
        let eol = self
            .lines
            .iter()
            .map(|l| l.eol.as_str())
            .find(|e| !e.is_empty())
            .unwrap_or("\n")
            .to_string();
        let ends_open = self.lines.last().is_some_and(|l| l.eol.is_empty());
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.iter_mut().enumerate() {
            // A blank line left without its ending would vanish: it keeps it.
            if i == last && ends_open && !line.text.is_empty() {
                line.eol.clear();
            } else if line.eol.is_empty() && line.text.ends_with('\r') {
                // "X\r" + "\n" would read back as "X" ending in "\r\n".
                line.eol = "\r\n".to_string();
            } else if line.eol.is_empty() {
                line.eol.clone_from(&eol);
            }
        }
        ContainerConfig { lines }
    }
}

/// `line`, an `lxc.mount.entry`, with `option` added to or removed from its options
/// field (the fourth), the spacing between fields kept; None when it is no mount
/// entry or nothing changes.
fn edited_mount_line(line: &Line, option: &str, present: bool) -> Option<Line> {
    let value = line.value_of("lxc.mount.entry")?;
    let new_value = edited_mount_fields(value, option, present)?;
    Some(line.with_value(&written_value(&new_value)))
}

/// Mount fields (`SOURCE TARGET FSTYPE OPTIONS ...`) with `option` added to or
/// removed from the fourth, all spacing kept; None when there is no fourth field or
/// nothing changes.
fn edited_mount_fields(value: &str, option: &str, present: bool) -> Option<String> {
    // Byte range of the fourth whitespace-separated field.
    let mut fields = Vec::new();
    let mut start = None;
    for (i, c) in value.char_indices().chain([(value.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                fields.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    let range = fields.get(3)?.clone();
    let options: Vec<&str> = value[range.clone()].split(',').collect();
    let has = options.contains(&option);
    let new_options = match (present, has) {
        (true, false) => format!("{},{option}", &value[range.clone()]),
        (false, true) => options
            .iter()
            .filter(|o| **o != option)
            .copied()
            .collect::<Vec<_>>()
            .join(","),
        _ => return None,
    };
    // An options field cannot be empty: `defaults` stands for none.
    let new_options = if new_options.is_empty() {
        "defaults".to_string()
    } else {
        new_options
    };
    Some(format!(
        "{}{new_options}{}",
        &value[..range.start],
        &value[range.end..]
    ))
}

/// The text of an `lxc.mount.fstab` file with `option` added to or removed from
/// the options of its 1-based `line` (None: of every line); comments, blank lines
/// and every other byte stay.
pub fn fstab_with_option(text: &str, line: Option<usize>, option: &str, present: bool) -> String {
    let mut out = String::with_capacity(text.len() + option.len() + 1);
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let Line { text: body, eol } = split_line(raw);
        let chosen = line.is_none_or(|l| l == i + 1);
        let comment = body.trim_start().starts_with('#');
        let edited = match chosen && !comment {
            true => edited_mount_fields(&body, option, present),
            false => None,
        };
        out.push_str(edited.as_deref().unwrap_or(&body));
        out.push_str(&eol);
    }
    out
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

/// Splits one `split_inclusive` piece into text and line ending.
fn split_line(raw: &str) -> Line {
    let (text, eol) = if let Some(t) = raw.strip_suffix("\r\n") {
        (t, "\r\n")
    } else if let Some(t) = raw.strip_suffix('\n') {
        (t, "\n")
    } else {
        (raw, "")
    };
    Line {
        text: text.to_string(),
        eol: eol.to_string(),
    }
}

/// `value` as written after `key = `, so that it reads back as itself: quoted when
/// LXC would otherwise trim its outer spaces or drop quotes around it.
fn written_value(value: &str) -> String {
    if value.trim() != value || unquote(value) != value {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

/// `lines` with `lxc.include = <include>` present (see `with_unprivileged`).
fn with_include(lines: &[Line], include: &Path) -> Vec<Line> {
    let mut out = lines.to_vec();
    if out.iter().any(|l| l.include() == Some(include)) {
        return out;
    }
    let value = written_value(&include.to_string_lossy());
    if let Some(i) = out
        .iter()
        .position(|l| l.include().is_some_and(is_userns_include))
    {
        out[i] = out[i].with_value(&value);
        return out;
    }
    // After the distro's common include: userns.conf must undo what it sets up.
    let common = out
        .iter()
        .rposition(|l| l.include().is_some_and(|p| distro_of_common(p).is_some()));
    let at = common
        .or_else(|| out.iter().rposition(|l| l.include().is_some()))
        .map_or(out.len(), |i| i + 1);
    out.insert(at, Line::new(format!("{INCLUDE_KEY} = {value}")));
    out
}

/// `lines` with the first u and the first g idmap line set to `wanted` and every
/// other idmap line dropped (duplicates, split maps, clearing lines, invalid lines);
/// also returns where the u and g lines ended up.
fn with_idmaps_in_place(lines: &[Line], wanted: &[String; 2]) -> (Vec<Line>, [Option<usize>; 2]) {
    let mut out = Vec::with_capacity(lines.len() + 2);
    let mut placed = [None, None];
    for line in lines {
        if !line.is_idmap() {
            out.push(line.clone());
            continue;
        }
        let value = line.entry().map_or("", |(_, v)| v);
        let slot = match value.split_whitespace().next() {
            Some("u") => Some(0),
            Some("g") => Some(1),
            _ => None,
        };
        if let Some(slot) = slot.filter(|&s| placed[s].is_none()) {
            placed[slot] = Some(out.len());
            out.push(line.with_value(&wanted[slot]));
        }
    }
    (out, placed)
}

/// The properties the `config` fuzz target checks; panics on the first one violated.
/// Any text is made unprivileged as a conversion does, then moved to another range,
/// then made privileged again. Each edit is idempotent, its result reads back with
/// exactly the intended idmap lines and userns include (or none), and every line that
/// is neither an idmap line nor a userns include keeps its bytes and order.
#[doc(hidden)]
#[cfg(feature = "testkit")]
pub fn fuzz_edit(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let config = ContainerConfig::parse(&text);
    assert_eq!(config.to_text(), text, "parse loses bytes");
    let seed = (data.iter()).fold(7u32, |h, &b| h.wrapping_mul(31).wrapping_add(b.into()));
    let include = (config.userns_include(|_| seed & 1 == 0))
        .unwrap_or_else(|| PathBuf::from("/usr/share/lxc/config/userns.conf"));
    let kept = |c: &ContainerConfig| -> Vec<String> {
        let involved = |l: &Line| l.is_idmap() || l.include().is_some_and(is_userns_include);
        let lines = c.lines.iter().filter(|l| !involved(l));
        lines.map(|l| format!("{}{}", l.text, l.eol)).collect()
    };
    // Only the last line may gain or lose its line ending.
    let same_kept = |c: &ContainerConfig, want: &[String]| {
        let got = kept(&ContainerConfig::parse(&c.to_text()));
        let bare = |l: &String| l.trim_end_matches(['\r', '\n']).to_string();
        let last = |v: &[String]| v.split_last().map(|(l, rest)| (bare(l), rest.to_vec()));
        got == want || last(&got) == last(want)
    };
    let original = kept(&config);
    let (count, mut current) = (1 + (seed >> 8) % 70000, config);
    for host in [100_000 + (seed % 4096) * 65536, 300_000_000] {
        let next = current.with_unprivileged(host, count, &include);
        assert_eq!(next.with_unprivileged(host, count, &include), next);
        let reread = ContainerConfig::parse(&next.to_text());
        let map = |users| MapEntry {
            users,
            groups: !users,
            container_first: 0,
            host_first: host,
            count,
        };
        // Either order: existing u and g lines are rewritten where they stand.
        let mut maps = reread.idmaps().expect("the idmap lines read back");
        maps.sort_by_key(|m| m.groups);
        assert_eq!(maps, [map(true), map(false)]);
        assert!(reread.includes().contains(&include), "include missing");
        assert!(same_kept(&next, &original), "a line changed: {next:?}");
        current = next;
    }
    // The rootfs option: added, read back, removed to the same bytes (when the
    // config holds it nowhere yet).
    let idmap = "idmap=container";
    if !text.contains(idmap) {
        let added = current.with_rootfs_option(idmap, true);
        assert_eq!(added.with_rootfs_option(idmap, true), added);
        assert!(ContainerConfig::parse(&added.to_text()).rootfs_idmapped());
        let removed = ContainerConfig::parse(&added.to_text()).with_rootfs_option(idmap, false);
        assert_eq!(
            removed.to_text(),
            current.to_text(),
            "rootfs option round trip"
        );
    }
    let privileged = current.with_privileged();
    assert_eq!(privileged.with_privileged(), privileged);
    let reread = ContainerConfig::parse(&privileged.to_text());
    assert_eq!(reread.idmaps().ok(), Some(vec![]), "idmap left");
    assert!(!reread.includes().iter().any(|p| is_userns_include(p)));
    assert!(same_kept(&privileged, &original), "a line changed");
    assert_eq!(reread.lines.len(), original.len(), "a line added");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `lxc-create -t debian` writes (LXC 3+ keys), plus an admin's additions.
    const DEBIAN: &str = "\
lxc.net.0.type = veth
lxc.net.0.hwaddr = 00:16:3e:5a:1c:22
lxc.net.0.link = lxcbr0
lxc.net.0.flags = up
lxc.apparmor.profile = generated
lxc.apparmor.allow_nesting = 1
lxc.rootfs.path = dir:/var/lib/lxc/jeedom1/rootfs

# Common configuration
lxc.include = /usr/share/lxc/config/debian.common.conf

# Container specific configuration
lxc.tty.max = 4
lxc.uts.name = jeedom1
lxc.arch = amd64
lxc.pty.max = 1024

# Zigbee stick for jeedom
  lxc.cgroup2.devices.allow = c 188:* rwm
lxc.mount.entry = /dev/ttyUSB0 dev/ttyUSB0 none bind,optional,create=file
lxc.mount.entry=/srv/backup   var/backup none bind,create=dir 0 0
";

    /// What the LXC 2.0 `lxc-debian` template wrote.
    const LEGACY: &str = "\
lxc.network.type = veth
lxc.network.hwaddr = 00:16:3e:11:22:33
lxc.network.link = lxcbr0
lxc.network.flags = up
lxc.rootfs = /var/lib/lxc/old1/rootfs
lxc.rootfs.backend = dir

# Common configuration
lxc.include = /usr/share/lxc/config/debian.common.conf

# Container specific configuration
lxc.tty = 4
lxc.utsname = old1
lxc.arch = amd64
";

    const USERNS: &str = "/usr/share/lxc/config/debian.userns.conf";

    fn parse(text: &str) -> ContainerConfig {
        ContainerConfig::parse(text)
    }

    fn unprivileged(text: &str, host: u32) -> String {
        parse(text)
            .with_unprivileged(host, 65536, Path::new(USERNS))
            .to_text()
    }

    /// Lines of `new` that are not in `old`, and lines of `old` not in `new`.
    fn changed_lines<'a>(old: &'a str, new: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
        let added = new.lines().filter(|l| !old.lines().any(|o| o == *l));
        let removed = old.lines().filter(|l| !new.lines().any(|n| n == *l));
        (added.collect(), removed.collect())
    }

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
    fn makes_a_debian_config_unprivileged() {
        let out = unprivileged(DEBIAN, 100000);
        let expected = DEBIAN.replace(
            "debian.common.conf\n",
            "debian.common.conf\n\
             lxc.include = /usr/share/lxc/config/debian.userns.conf\n\
             lxc.idmap = u 0 100000 65536\n\
             lxc.idmap = g 0 100000 65536\n",
        );
        assert_eq!(out, expected);
        let maps = parse(&out).idmaps().unwrap();
        let u = MapEntry::parse("u 0 100000 65536").unwrap();
        let g = MapEntry::parse("g 0 100000 65536").unwrap();
        assert_eq!(maps, vec![u, g]);
    }

    #[test]
    fn legacy_config_gets_legacy_keys() {
        let config = parse(LEGACY);
        assert!(config.legacy_keys());
        let rootfs = config.rootfs().unwrap();
        assert_eq!(
            (rootfs.backend, rootfs.location),
            (Backend::Dir, "/var/lib/lxc/old1/rootfs".into())
        );
        let out = unprivileged(LEGACY, 100000);
        let (added, removed) = changed_lines(LEGACY, &out);
        assert_eq!(
            added,
            [
                "lxc.include = /usr/share/lxc/config/debian.userns.conf",
                "lxc.id_map = u 0 100000 65536",
                "lxc.id_map = g 0 100000 65536"
            ]
        );
        assert!(removed.is_empty());
        assert_eq!(parse(&out).idmaps().unwrap().len(), 2);
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
    fn existing_idmap_is_replaced_in_place() {
        let text = format!(
            "{DEBIAN}lxc.include = {USERNS}\n# moved once already\n  lxc.idmap=u 0 1000000 65536\nlxc.idmap = g 0 1000000 65536\n# end\n"
        );
        let out = unprivileged(&text, 200000);
        let expected = text
            .replace("lxc.idmap=u 0 1000000", "lxc.idmap=u 0 200000")
            .replace("lxc.idmap = g 0 1000000", "lxc.idmap = g 0 200000");
        assert_eq!(out, expected);
    }

    #[test]
    fn split_and_partial_maps_become_one_u_and_one_g_line() {
        let split = "lxc.include = /c/debian.userns.conf\nlxc.idmap = u 0 100000 1000\nlxc.idmap = u 1000 1000 1\nlxc.idmap = u 1001 101001 64535\nlxc.idmap = g 0 100000 65536\n";
        let out = parse(split).with_unprivileged(300000, 65536, Path::new("/c/debian.userns.conf"));
        assert_eq!(
            out.to_text(),
            "lxc.include = /c/debian.userns.conf\nlxc.idmap = u 0 300000 65536\nlxc.idmap = g 0 300000 65536\n"
        );
        let only_g = "a = 1\nlxc.idmap = g 0 5 6\nb = 2\n";
        let out = parse(only_g).with_unprivileged(100000, 65536, Path::new("/c/userns.conf"));
        assert_eq!(
            out.to_text(),
            "a = 1\nlxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\nb = 2\nlxc.include = /c/userns.conf\n"
        );
    }

    #[test]
    fn both_edits_are_idempotent() {
        for text in [DEBIAN, LEGACY, "lxc.arch = amd64", ""] {
            let once = parse(text).with_unprivileged(100000, 65536, Path::new(USERNS));
            let twice = once.with_unprivileged(100000, 65536, Path::new(USERNS));
            assert_eq!(once, twice);
            let privileged = once.with_privileged();
            assert_eq!(privileged.with_privileged(), privileged);
        }
    }

    #[test]
    fn unprivileged_then_privileged_gives_back_the_original() {
        for text in [
            DEBIAN,
            LEGACY,
            "lxc.arch = amd64",
            "lxc.include = /x/common.conf",
            "a = 1\r\nlxc.include = /x/debian.common.conf\r\nb = 2",
            "",
        ] {
            let config = parse(text);
            let there = config.with_unprivileged(100000, 65536, Path::new(USERNS));
            assert_ne!(there.to_text(), text);
            assert_eq!(there.with_privileged().to_text(), text, "{text:?}");
        }
    }

    #[test]
    fn include_placement_without_a_distro_include() {
        let text = "lxc.include = /usr/share/lxc/config/common.conf\nlxc.arch = amd64";
        let out = parse(text).with_unprivileged(1, 2, Path::new("/u/userns.conf"));
        assert_eq!(
            out.to_text(),
            "lxc.include = /usr/share/lxc/config/common.conf\nlxc.include = /u/userns.conf\nlxc.idmap = u 0 1 2\nlxc.idmap = g 0 1 2\nlxc.arch = amd64"
        );
        let out = parse("lxc.arch = amd64").with_unprivileged(1, 2, Path::new("/u/userns.conf"));
        assert_eq!(
            out.to_text(),
            "lxc.arch = amd64\nlxc.include = /u/userns.conf\nlxc.idmap = u 0 1 2\nlxc.idmap = g 0 1 2"
        );
    }

    #[test]
    fn another_userns_include_is_replaced_in_place() {
        let text = "lxc.include = /x/debian.common.conf\n# userns\nlxc.include = /x/userns.conf\n";
        let out = parse(text).with_unprivileged(1, 2, Path::new("/x/debian.userns.conf"));
        assert_eq!(
            out.to_text(),
            "lxc.include = /x/debian.common.conf\n# userns\nlxc.include = /x/debian.userns.conf\nlxc.idmap = u 0 1 2\nlxc.idmap = g 0 1 2\n"
        );
        assert_eq!(
            out.with_privileged().to_text(),
            "lxc.include = /x/debian.common.conf\n# userns\n"
        );
    }

    #[test]
    fn userns_include_prefers_the_distro_file() {
        let config = parse(DEBIAN);
        let dir = Path::new("/usr/share/lxc/config");
        assert_eq!(
            config.userns_include(|_| true),
            Some(dir.join("debian.userns.conf"))
        );
        assert_eq!(
            config.userns_include(|_| false),
            Some(dir.join("userns.conf"))
        );
        let asked = std::cell::RefCell::new(Vec::new());
        config.userns_include(|p| {
            asked.borrow_mut().push(p.to_path_buf());
            false
        });
        assert_eq!(asked.into_inner(), vec![dir.join("debian.userns.conf")]);
        let global_only = parse("lxc.include = /usr/share/lxc/config/common.conf\n");
        assert_eq!(global_only.userns_include(|_| true), None);
        assert_eq!(parse("").userns_include(|_| true), None);
    }

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
    fn mount_entries() {
        let mounts = parse(DEBIAN).mount_entries().unwrap();
        assert_eq!(
            mounts,
            vec![
                MountEntry {
                    source: "/dev/ttyUSB0".into(),
                    target: "dev/ttyUSB0".into(),
                    fstype: "none".into(),
                    options: "bind,optional,create=file".into(),
                },
                MountEntry {
                    source: "/srv/backup".into(),
                    target: "var/backup".into(),
                    fstype: "none".into(),
                    options: "bind,create=dir".into(),
                },
            ]
        );
        assert!(mounts[0].is_bind());
        let cleared = parse("lxc.mount.entry = a b c d\nlxc.mount.entry =\nlxc.mount.entry = proc proc proc nodev 0 0\n");
        assert_eq!(cleared.mount_entries().unwrap().len(), 1);
        assert!(!cleared.mount_entries().unwrap()[0].is_bind());
        let err = parse("lxc.arch = x\nlxc.mount.entry = /a b\n")
            .mount_entries()
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::BadMountEntry {
                line: 2,
                text: "lxc.mount.entry = /a b".into()
            }
        );
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn a_mount_option_is_added_and_removed_in_place() {
        let text = "# x\nlxc.mount.entry = /srv/data\tsrv/data none bind,create=dir 0 0\r\nlxc.mount.entry=/a a none bind\n";
        let config = parse(text);
        let added = config.with_mount_option(2, "idmap=container", true);
        assert_eq!(
            added.to_text(),
            text.replace("bind,create=dir 0", "bind,create=dir,idmap=container 0")
        );
        assert_eq!(added.with_mount_option(2, "idmap=container", true), added);
        assert_eq!(
            added
                .with_mount_option(2, "idmap=container", false)
                .to_text(),
            text
        );
        let both = added.with_mount_option(3, "idmap=container", true);
        assert!(both
            .to_text()
            .ends_with("lxc.mount.entry=/a a none bind,idmap=container\n"));
        assert_eq!(both.without_mount_option("idmap=container").to_text(), text);
        // Not a mount entry, or out of range: nothing changes.
        assert_eq!(config.with_mount_option(1, "x", true), config);
        assert_eq!(config.with_mount_option(99, "x", true), config);
        assert_eq!(config.with_mount_option(0, "x", true), config);
        let only = parse("lxc.mount.entry = /a a none idmap=container 0 0\n");
        assert_eq!(
            only.without_mount_option("idmap=container").to_text(),
            "lxc.mount.entry = /a a none defaults 0 0\n"
        );
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

    #[test]
    fn an_fstab_option_is_added_and_removed_in_place() {
        let text = "# c\n/srv/a srv/a none bind,create=dir 0 0\r\n\n  /b\tb none bind";
        let added = fstab_with_option(text, Some(4), "idmap=container", true);
        assert_eq!(
            added,
            text.replace("b none bind", "b none bind,idmap=container")
        );
        let both = fstab_with_option(&added, Some(2), "idmap=container", true);
        assert!(both.contains("/srv/a srv/a none bind,create=dir,idmap=container 0 0\r\n"));
        assert_eq!(
            fstab_with_option(&both, None, "idmap=container", false),
            text
        );
        // A comment, a blank line or a short line is left alone.
        assert_eq!(fstab_with_option(text, Some(1), "x", true), text);
        assert_eq!(fstab_with_option(text, Some(3), "x", true), text);
        assert_eq!(fstab_with_option("a b c\n", None, "x", true), "a b c\n");
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

    #[test]
    fn render_diff_shows_the_change_with_context() {
        use crate::diff::render_diff;
        let new = unprivileged(DEBIAN, 100000);
        let diff = render_diff(Path::new("/var/lib/lxc/jeedom1/config"), DEBIAN, &new);
        let expected = "\
--- /var/lib/lxc/jeedom1/config
+++ /var/lib/lxc/jeedom1/config
@@ -8,6 +8,9 @@
 
 # Common configuration
 lxc.include = /usr/share/lxc/config/debian.common.conf
+lxc.include = /usr/share/lxc/config/debian.userns.conf
+lxc.idmap = u 0 100000 65536
+lxc.idmap = g 0 100000 65536
 
 # Container specific configuration
 lxc.tty.max = 4
";
        assert_eq!(diff, expected);
        assert_eq!(render_diff(Path::new("c"), DEBIAN, DEBIAN), "");
    }

    #[test]
    fn an_include_with_outer_spaces_is_quoted_so_it_reads_back() {
        // Found by the `config` fuzz seeds: `/x/userns.conf` was written unquoted
        // after a quoted ` /x/debian.common.conf`, read back as another path, and a
        // second conversion added the include again.
        let config = parse("lxc.include = \" /x/debian.common.conf\"\n");
        let include = config.userns_include(|_| false).unwrap();
        assert_eq!(include, Path::new(" /x/userns.conf"));
        let once = config.with_unprivileged(100000, 65536, &include);
        assert!(once
            .to_text()
            .contains("lxc.include = \" /x/userns.conf\"\n"));
        assert!(parse(&once.to_text()).includes().contains(&include));
        assert_eq!(once.with_unprivileged(100000, 65536, &include), once);
        assert_eq!(written_value("/a/userns.conf"), "/a/userns.conf");
        assert_eq!(written_value("'/a'"), "\"'/a'\"");
    }

    #[test]
    fn a_blank_line_before_a_removed_open_last_line_stays() {
        // Found by the `config` fuzzer: removing a userns include that ended the file
        // without a newline took the ending of the blank line before it, so the blank
        // line vanished.
        let config = parse("a = 1\n\nlxc.include = /a/b.userns.conf");
        assert_eq!(config.with_privileged().to_text(), "a = 1\n\n");
        let open = parse("a = 1\nlxc.include = /a/b.userns.conf");
        assert_eq!(open.with_privileged().to_text(), "a = 1");
        let added = parse("a = 1").with_unprivileged(100000, 65536, Path::new(USERNS));
        assert_eq!(added.with_privileged().to_text(), "a = 1");
    }
}
