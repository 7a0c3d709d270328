//! A Proxmox VE container config, `/etc/pve/lxc/VMID.conf`, read and edited line by
//! line: every line a conversion does not change keeps its bytes (the description's
//! `#` lines, snapshot sections `[name]`, `[pve:pending]`, raw `lxc.*` keys), so
//! that Proxmox reads back what it wrote and a snapshot rollback restores exactly
//! the section it saved.
//!
//! Facts (pve-container's `parse_pct_config`, `write_pct_config`, `parse_id_maps`):
//! the main section runs to the first `[name]` line; `key: value` lines; `lxc.*`
//! raw keys also as `lxc.key = value`; keys written sorted, raw `lxc.*` keys last in
//! file order. A raw `lxc.idmap` makes the container unprivileged with that map;
//! else `unprivileged: 1` gives `u 0 100000 65536` / `g 0 100000 65536`.

use crate::engine::idmap::MapEntry;
use crate::lxc::hostmap::{HostMap, HostMapError};

/// The map Proxmox gives an unprivileged container without raw `lxc.idmap` lines,
/// and the range the lxc-pve package gives root in /etc/subuid and /etc/subgid.
pub const DEFAULT_FIRST: u32 = 100_000;
pub const DEFAULT_COUNT: u32 = 65_536;

const IDMAP_KEY: &str = "lxc.idmap";
const UNPRIVILEGED_KEY: &str = "unprivileged";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PveConfError {
    #[error("line {line}: `{key}: {value}` is no boolean (Proxmox reads 1, yes, on, true, 0, no, off, false; it takes anything else for true): write 1 or 0 there with `pct set`, then run the same command again")]
    NotBoolean {
        line: usize,
        key: String,
        value: String,
    },
    #[error("line {line}: `{text}`: {reason}; fix the line (Proxmox passes it to LXC as it is), then run the same command again")]
    BadIdmap {
        line: usize,
        text: String,
        reason: String,
    },
    #[error(transparent)]
    Map(#[from] HostMapError),
}

/// One line verbatim: its text and its ending ("\n", "\r\n", or "" at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfLine {
    text: String,
    eol: String,
}

impl ConfLine {
    fn new(text: String) -> ConfLine {
        ConfLine {
            text,
            eol: "\n".to_string(),
        }
    }

    /// `[name]`: a snapshot section or `[pve:pending]`.
    fn is_section(&self) -> bool {
        let t = self.text.trim_end();
        t.starts_with('[') && t.ends_with(']')
    }

    /// `(key, value)` of `key: value` or a raw `lxc.key = value`; None for the
    /// description's `#` lines, blank lines and section headers.
    fn entry(&self) -> Option<(&str, &str)> {
        let text = self.text.trim();
        if text.starts_with('#') || self.is_section() {
            return None;
        }
        let colon = text.find(':');
        let equals = text
            .find('=')
            .filter(|_| text.trim_start().starts_with("lxc."));
        let at = match (colon, equals) {
            (Some(c), Some(e)) => c.min(e),
            (c, e) => c.or(e)?,
        };
        let key = text[..at].trim();
        let valid = key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        (!key.is_empty() && valid).then(|| (key, text[at + 1..].trim()))
    }

    fn key(&self) -> Option<&str> {
        self.entry().map(|(k, _)| k)
    }

    fn is_raw_lxc(&self) -> bool {
        self.key().is_some_and(|k| k.starts_with("lxc."))
    }
}

/// A container's `.conf`, every byte kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PveConf {
    lines: Vec<ConfLine>,
}

impl PveConf {
    pub fn parse(text: &str) -> PveConf {
        let lines = text
            .split_inclusive('\n')
            .map(|raw| {
                let (text, eol) = match raw.strip_suffix("\r\n") {
                    Some(t) => (t, "\r\n"),
                    None => match raw.strip_suffix('\n') {
                        Some(t) => (t, "\n"),
                        None => (raw, ""),
                    },
                };
                ConfLine {
                    text: text.to_string(),
                    eol: eol.to_string(),
                }
            })
            .collect();
        PveConf { lines }
    }

    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            text += &line.text;
            text += &line.eol;
        }
        text
    }

    /// One past the main section's last line (the first section header, or the end).
    fn main_end(&self) -> usize {
        (self.lines.iter())
            .position(ConfLine::is_section)
            .unwrap_or(self.lines.len())
    }

    fn main(&self) -> impl Iterator<Item = (usize, &ConfLine)> {
        self.lines.iter().enumerate().take(self.main_end())
    }

    /// The value of `key` in the main section (the last one counts, as in Proxmox).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.main()
            .filter_map(|(_, l)| l.entry())
            // Proxmox skips a key without a value.
            .filter(|(k, v)| *k == key && !v.is_empty())
            .map(|(_, v)| v)
            .last()
    }

    /// The main section's `key: value` entries, in file order.
    pub fn entries(&self) -> Vec<(&str, &str)> {
        self.main().filter_map(|(_, l)| l.entry()).collect()
    }

    /// `lock:`, which blocks start, backup and migration while it is set.
    pub fn lock(&self) -> Option<&str> {
        self.value("lock")
    }

    /// Whether `unprivileged:` says so (absent: privileged).
    pub fn unprivileged(&self) -> Result<bool, PveConfError> {
        let found = self
            .main()
            .filter_map(|(i, l)| l.entry().map(|e| (i, e)))
            .filter(|(_, (k, _))| *k == UNPRIVILEGED_KEY)
            .last();
        let Some((index, (key, value))) = found else {
            return Ok(false);
        };
        match value.to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" => Ok(true),
            "0" | "no" | "off" | "false" => Ok(false),
            _ => Err(PveConfError::NotBoolean {
                line: index + 1,
                key: key.to_string(),
                value: value.to_string(),
            }),
        }
    }

    /// The raw `lxc.idmap` pieces of the main section, in file order.
    pub fn raw_idmaps(&self) -> Result<Vec<MapEntry>, PveConfError> {
        let mut maps = Vec::new();
        for (index, line) in self.main() {
            let Some((IDMAP_KEY, value)) = line.entry() else {
                continue;
            };
            let bad = |reason: String| PveConfError::BadIdmap {
                line: index + 1,
                text: line.text.clone(),
                reason,
            };
            if !matches!(value.split_whitespace().next(), Some("u" | "g")) || value.contains(':') {
                return Err(bad("the type must be u or g".to_string()));
            }
            maps.push(MapEntry::parse(value).map_err(|e| bad(e.to_string()))?);
        }
        Ok(maps)
    }

    /// The map the container runs with, as Proxmox derives it at start: the raw
    /// `lxc.idmap` lines, else the default map when unprivileged; None when
    /// privileged.
    pub fn map(&self) -> Result<Option<HostMap>, PveConfError> {
        let raw = self.raw_idmaps()?;
        if !raw.is_empty() {
            return Ok(Some(HostMap::new(raw)?));
        }
        match self.unprivileged()? {
            true => Ok(Some(default_map())),
            false => Ok(None),
        }
    }

    /// The config for `map` (None: privileged): `unprivileged: 1` set (in place, or
    /// where Proxmox's sorted keys put it) or removed, and raw `lxc.idmap` lines
    /// only for a map other than Proxmox's default (where the first one was, else
    /// after the main section's last line). Nothing else changes.
    pub fn with_map(&self, map: Option<&HostMap>) -> PveConf {
        let end = self.main_end();
        let mut main: Vec<ConfLine> = self.lines[..end].to_vec();
        // Raw lines that say this map already stay as they are, in their order.
        let raw = self.raw_idmaps().ok().filter(|r| !r.is_empty());
        let same = raw.and_then(|r| HostMap::new(r).ok()).as_ref() == map;
        let first_idmap = main.iter().position(|l| l.key() == Some(IDMAP_KEY));
        if !same {
            main.retain(|l| l.key() != Some(IDMAP_KEY));
        }
        set_key(&mut main, UNPRIVILEGED_KEY, map.map(|_| "1"));
        let custom = map.filter(|m| **m != default_map() && !same);
        if let Some(map) = custom {
            let lines =
                (map.lxc_lines().into_iter()).map(|v| ConfLine::new(format!("{IDMAP_KEY}: {v}")));
            let at = first_idmap
                .map(|i| i.min(main.len()))
                .unwrap_or_else(|| content_end(&main));
            main.splice(at..at, lines);
        }
        self.rebuilt(main, end)
    }

    /// The config with option `name=value` of volume entry `key` (`mp0`) set, or
    /// removed (None); its other options and their order kept.
    pub fn with_volume_option(&self, key: &str, name: &str, value: Option<&str>) -> PveConf {
        let end = self.main_end();
        let mut main: Vec<ConfLine> = self.lines[..end].to_vec();
        for line in main.iter_mut().filter(|l| l.key() == Some(key)) {
            let old = line.entry().map_or("", |(_, v)| v);
            let prefix = format!("{name}=");
            let mut items: Vec<String> = (old.split(','))
                .filter(|item| !item.starts_with(&prefix))
                .map(String::from)
                .collect();
            items.extend(value.map(|v| format!("{prefix}{v}")));
            *line = with_value(line, &items.join(","));
        }
        self.rebuilt(main, end)
    }

    /// The config with `lock: value` set, or removed (None).
    pub fn with_lock(&self, lock: Option<&str>) -> PveConf {
        let end = self.main_end();
        let mut main: Vec<ConfLine> = self.lines[..end].to_vec();
        set_key(&mut main, "lock", lock);
        self.rebuilt(main, end)
    }

    /// `main` followed by the sections as they were; line endings as the file's.
    fn rebuilt(&self, mut main: Vec<ConfLine>, end: usize) -> PveConf {
        let eol = (self.lines.iter())
            .map(|l| l.eol.as_str())
            .find(|e| !e.is_empty())
            .unwrap_or("\n");
        let last = main.len().saturating_sub(1);
        let main_ended_open =
            end == self.lines.len() && self.lines.last().is_some_and(|l| l.eol.is_empty());
        for (i, line) in main.iter_mut().enumerate() {
            let open = i == last && main_ended_open;
            line.eol = match (open, line.eol.is_empty()) {
                (true, _) => String::new(),
                (false, true) => eol.to_string(),
                (false, false) => line.eol.clone(),
            };
        }
        main.extend_from_slice(&self.lines[end..]);
        PveConf { lines: main }
    }
}

/// Proxmox's map for `unprivileged: 1` without raw `lxc.idmap` lines.
pub fn default_map() -> HostMap {
    HostMap::simple(DEFAULT_FIRST, DEFAULT_COUNT).expect("Proxmox's default map is valid")
}

/// `key: value` set in `main` (the first line of the key rewritten in place, its
/// duplicates dropped: Proxmox reads the last), or every line of it removed.
fn set_key(main: &mut Vec<ConfLine>, key: &str, value: Option<&str>) {
    let first = main.iter().position(|l| l.key() == Some(key));
    let kept = match (value, first) {
        (Some(value), Some(at)) => Some((at, with_value(&main[at], value))),
        (Some(value), None) => {
            let at = sorted_position(main, key);
            main.insert(at, ConfLine::new(format!("{key}: {value}")));
            return;
        }
        (None, _) => None,
    };
    let mut index = 0;
    main.retain(|l| {
        index += 1;
        l.key() != Some(key) || kept.as_ref().is_some_and(|(at, _)| *at == index - 1)
    });
    if let Some((at, line)) = kept {
        main[at] = line;
    }
}

/// `line` with its value replaced, its key and spacing kept.
fn with_value(line: &ConfLine, value: &str) -> ConfLine {
    let text = &line.text;
    let colon = text.find(':').unwrap_or(text.len());
    let after = &text[(colon + 1).min(text.len())..];
    let gap = after.len() - after.trim_start().len();
    ConfLine {
        text: format!("{}{value}", &text[..colon + 1 + gap]),
        eol: line.eol.clone(),
    }
}

/// Where Proxmox's writer, which sorts the keys, would put `key`: before the first
/// key sorting after it, else after the last key (raw `lxc.*` keys come last).
fn sorted_position(main: &[ConfLine], key: &str) -> usize {
    let plain = |l: &ConfLine| l.key().is_some() && !l.is_raw_lxc();
    if let Some(at) = main.iter().position(|l| plain(l) && l.key() > Some(key)) {
        return at;
    }
    if let Some(last) = main.iter().rposition(plain) {
        return last + 1;
    }
    main.iter()
        .position(ConfLine::is_raw_lxc)
        .unwrap_or_else(|| content_end(main))
}

/// One past the last line with content: blank lines before a section stay there.
fn content_end(main: &[ConfLine]) -> usize {
    main.iter()
        .rposition(|l| !l.text.trim().is_empty())
        .map_or(0, |i| i + 1)
}

/// The properties the `pve_conf` fuzz target checks; panics on the first one
/// violated. Any text reads back byte for byte; for a config whose map reads,
/// each edit (privileged, Proxmox's default map, a map with a hole, a lock) gives
/// that map back, is idempotent, and leaves every section after the main one as
/// it was.
#[doc(hidden)]
#[cfg(any(test, feature = "testkit"))]
pub fn fuzz_edit(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let conf = PveConf::parse(&text);
    assert_eq!(conf.to_text(), text, "parse loses bytes");
    if conf.map().is_err() {
        return;
    }
    let sections = |c: &PveConf| c.lines[c.main_end()..].to_vec();
    let shared = [crate::lxc::hostmap::SharedId {
        kind: crate::engine::idmap::IdKind::User,
        id: 1000,
    }];
    let holes = HostMap::sharing(200_000, 65_536, &shared).expect("a valid map");
    for target in [None, Some(default_map()), Some(holes)] {
        let edited = conf.with_map(target.as_ref());
        assert_eq!(
            edited.map().ok(),
            Some(target.clone()),
            "edit gives its map"
        );
        assert_eq!(
            edited.with_map(target.as_ref()),
            edited,
            "edit is idempotent"
        );
        assert_eq!(sections(&edited), sections(&conf), "sections unchanged");
        let reparsed = PveConf::parse(&edited.to_text());
        assert_eq!(reparsed.map().ok(), Some(target), "edit reads back");
    }
    let locked = conf.with_lock(Some("disk"));
    assert_eq!(locked.lock(), Some("disk"), "lock set");
    assert_eq!(
        sections(&locked),
        sections(&conf),
        "sections unchanged by lock"
    );
    if conf.main().all(|(_, l)| l.key() != Some("lock")) {
        assert_eq!(
            locked.with_lock(None),
            conf,
            "lock removed gives the config back"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proxmox VE 9's own reading of these configs (see its README).
    const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pve-reference");

    fn reference(name: &str) -> Option<String> {
        std::fs::read_to_string(format!("{REFERENCE}/{name}")).ok()
    }

    const C101: &str = "arch: amd64\ncores: 2\nfeatures: nesting=1\nhostname: jeedom1\nmemory: 2048\nmp0: /srv/data,mp=/data\nnet0: name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:5A:3E:01,ip=dhcp,type=veth\nostype: debian\nrootfs: local-zfs:subvol-101-disk-0,size=8G\nswap: 512\nlxc.cgroup2.devices.allow: c 188:* rwm\nlxc.mount.entry: /dev/ttyUSB0 dev/ttyUSB0 none bind,optional,create=file\n";

    const C103: &str = "#Custom idmap%3A uid%2Fgid 1000 passed through to the host\narch: amd64\ncores: 1\ndev0: /dev/ttyUSB0,gid=20,mode=0660\nhostname: idmap-holes\nparent: before-idmap\nrootfs: local-zfs:subvol-103-disk-0,size=8G\nswap: 512\nunprivileged: 1\nlxc.idmap: u 0 100000 1000\nlxc.idmap: g 0 100000 1000\nlxc.idmap: u 1000 1000 1\nlxc.idmap: g 1000 1000 1\nlxc.idmap: u 1001 101001 64535\nlxc.idmap: g 1001 101001 64535\n\n[before-idmap]\n#snapshot taken before the idmap change\narch: amd64\nrootfs: local-zfs:subvol-103-disk-0,size=8G\nsnaptime: 1764400000\nunprivileged: 1\n";

    #[test]
    fn a_volume_option_is_added_and_removed_in_place() {
        let conf = PveConf::parse(C103);
        let added = conf.with_volume_option("rootfs", "idmap", Some("passthrough"));
        let text = added.to_text();
        assert!(
            text.contains("\nrootfs: local-zfs:subvol-103-disk-0,size=8G,idmap=passthrough\n"),
            "{text}"
        );
        // The snapshot section's rootfs line is the snapshot's own.
        assert!(text.ends_with(
            "rootfs: local-zfs:subvol-103-disk-0,size=8G\nsnaptime: 1764400000\nunprivileged: 1\n"
        ));
        let set_again = added.with_volume_option("rootfs", "idmap", Some("u:0:0:1"));
        assert_eq!(set_again.to_text().matches("idmap=").count(), 1);
        let removed = added.with_volume_option("rootfs", "idmap", None);
        assert_eq!(removed.to_text(), C103);
    }

    #[test]
    fn every_byte_reads_back() {
        for text in [
            C101,
            C103,
            "a: 1\r\nb: 2",
            "",
            "\n\n[x]\n",
            "lxc.idmap = u 0 1 2",
        ] {
            assert_eq!(PveConf::parse(text).to_text(), text);
        }
    }

    #[test]
    fn the_map_is_derived_as_proxmox_derives_it() {
        assert_eq!(PveConf::parse(C101).map(), Ok(None));
        let unprivileged =
            PveConf::parse(&C101.replace("swap: 512\n", "swap: 512\nunprivileged: 1\n"));
        assert_eq!(unprivileged.map(), Ok(Some(default_map())));
        let holes = PveConf::parse(C103).map().unwrap().unwrap();
        assert_eq!(holes.root_uid(), 100_000);
        assert_eq!(holes.shared().len(), 2);
        // A raw map alone makes it unprivileged, as Proxmox's start does.
        let raw_only =
            PveConf::parse("lxc.idmap: u 0 200000 65536\nlxc.idmap = g 0 200000 65536\n");
        assert_eq!(
            raw_only.map().unwrap().unwrap().one_range(),
            Some((200_000, 65_536))
        );
        // The snapshot's own flag is not the container's.
        let snap_only = PveConf::parse("arch: amd64\n\n[s]\nunprivileged: 1\n");
        assert_eq!(snap_only.map(), Ok(None));
    }

    #[test]
    fn a_flag_that_is_no_boolean_is_an_error() {
        let conf = PveConf::parse("arch: amd64\nunprivileged: maybe\n");
        assert!(matches!(
            conf.unprivileged(),
            Err(PveConfError::NotBoolean { line: 2, .. })
        ));
        assert_eq!(
            PveConf::parse("unprivileged: On\n").unprivileged(),
            Ok(true)
        );
        assert_eq!(
            PveConf::parse("unprivileged: 0\n").unprivileged(),
            Ok(false)
        );
    }

    #[test]
    fn going_unprivileged_with_the_default_map_adds_only_the_flag_where_proxmox_writes_it() {
        let conf = PveConf::parse(C101);
        let unprivileged = conf.with_map(Some(&default_map()));
        let expected = C101.replace("swap: 512\n", "swap: 512\nunprivileged: 1\n");
        assert_eq!(unprivileged.to_text(), expected);
        assert_eq!(unprivileged.with_map(None).to_text(), C101);
        assert_eq!(unprivileged.with_map(Some(&default_map())), unprivileged);
    }

    #[test]
    fn a_custom_map_is_written_as_raw_lines_and_snapshots_stay_byte_identical() {
        let conf = PveConf::parse(C103);
        let snapshot = &C103[C103.find("\n[before-idmap]").unwrap()..];
        let privileged = conf.with_map(None);
        let text = privileged.to_text();
        assert!(text.ends_with(snapshot), "{text}");
        assert!(
            !text[..text.len() - snapshot.len()].contains("lxc.idmap"),
            "{text}"
        );
        assert!(
            !text[..text.len() - snapshot.len()].contains("unprivileged"),
            "{text}"
        );
        let holes = conf.map().unwrap().unwrap();
        let back = privileged.with_map(Some(&holes)).to_text();
        assert!(back.ends_with(snapshot), "{back}");
        assert_eq!(PveConf::parse(&back).map(), Ok(Some(holes.clone())));
        // In place: the same map gives the same bytes.
        assert_eq!(conf.with_map(Some(&holes)).to_text(), C103);
        // Moving to the default map drops the raw lines, keeps the flag.
        let default = conf.with_map(Some(&default_map())).to_text();
        assert!(
            !default.split("\n\n[").next().unwrap().contains("lxc.idmap"),
            "{default}"
        );
        assert_eq!(PveConf::parse(&default).map(), Ok(Some(default_map())));
    }

    /// Configs stitched from the lines real ones hold, in any order: the fuzz
    /// target's properties hold for each.
    #[test]
    fn stitched_configs_keep_the_edit_properties() {
        let pieces = [
            "arch: amd64",
            "unprivileged: 1",
            "unprivileged: 0",
            "lock: backup",
            "lock:",
            "#a description",
            "",
            "   ",
            "[snap]",
            "[pve:pending]",
            "delete: swap",
            "lxc.idmap: u 0 100000 65536",
            "lxc.idmap: g 0 100000 65536",
            "lxc.idmap = u 1000 1000 1",
            "lxc.idmap: g 0 300000 65536",
            "zzz: last",
            "lxc.mount.entry: /dev/x dev/x none bind",
            "rootfs: local:sub,size=1G",
            "swap: 512",
            "unprivileged:1",
            " arch : amd64 ",
            "a-b: c",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..4000 {
            let mut text = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let count = (seed % 9) as usize;
            for i in 0..count {
                let pick = (seed >> (i * 5 + 3)) as usize % pieces.len();
                text += pieces[pick];
                text += if (seed >> (i + 40)) & 7 == 0 {
                    "\r\n"
                } else {
                    "\n"
                };
            }
            if seed & 1 == 1 {
                text.pop();
            }
            let outcome = std::panic::catch_unwind(|| fuzz_edit(text.as_bytes()));
            assert!(outcome.is_ok(), "{text:?}");
        }
    }

    #[test]
    fn the_lock_is_set_and_removed_in_place() {
        let conf = PveConf::parse(C101);
        let locked = conf.with_lock(Some("disk"));
        assert_eq!(locked.lock(), Some("disk"));
        assert!(locked
            .to_text()
            .contains("hostname: jeedom1\nlock: disk\nmemory: 2048\n"));
        assert_eq!(locked.with_lock(None), conf);
        let pending = PveConf::parse("arch: amd64\n\n[pve:pending]\nlock: x\n");
        assert_eq!(pending.lock(), None);
    }

    #[test]
    fn the_reference_configs_parse_as_proxmox_parsed_them() {
        let Some(text) = reference("103.conf") else {
            panic!("{REFERENCE}/103.conf is missing");
        };
        let conf = PveConf::parse(&text);
        assert_eq!(conf.to_text(), text);
        let idmap: serde_json::Value =
            serde_json::from_str(&reference("expected/103.idmap").unwrap()).unwrap();
        let map = conf.map().unwrap().unwrap();
        let expected: Vec<String> = (idmap["id_map"].as_array().unwrap().iter())
            .map(|e| {
                let f: Vec<&str> = e
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                f.join(" ")
            })
            .collect();
        let mut ours = map.lxc_lines();
        let mut theirs = expected.clone();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
        assert_eq!(
            map.root_uid().to_string(),
            idmap["rootuid"].as_str().unwrap()
        );
        // Proxmox writes its keys sorted; the flag goes where its writer puts it.
        let written = reference("expected/102.write").unwrap();
        let privileged = PveConf::parse(&written).with_map(None).to_text();
        assert_eq!(privileged, written.replace("unprivileged: 1\n", ""));
        let again = PveConf::parse(&privileged).with_map(Some(&default_map()));
        assert_eq!(again.to_text(), written);
        for name in ["101", "102"] {
            let text = reference(&format!("{name}.conf")).unwrap();
            let conf = PveConf::parse(&text);
            assert_eq!(conf.to_text(), text, "{name}");
            let parsed: serde_json::Value =
                serde_json::from_str(&reference(&format!("expected/{name}.parse")).unwrap())
                    .unwrap();
            let flag = parsed["unprivileged"].as_i64() == Some(1);
            assert_eq!(conf.unprivileged(), Ok(flag), "{name}");
            assert_eq!(conf.value("rootfs"), parsed["rootfs"].as_str(), "{name}");
        }
        let broken = PveConf::parse(&reference("199.conf").unwrap());
        assert!(matches!(
            broken.unprivileged(),
            Err(PveConfError::NotBoolean { .. })
        ));
    }
}
