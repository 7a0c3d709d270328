//! Mount entries (`lxc.mount.entry` lines and `lxc.mount.fstab` files): their fields,
//! and options added to or removed from them in place.

use super::line::{split_line, written_value, Line};
use super::{ConfigError, ContainerConfig};

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

impl ContainerConfig {
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

    /// The config with `option` removed from every `lxc.mount.entry`.
    pub fn without_mount_option(&self, option: &str) -> ContainerConfig {
        let lines = self
            .lines
            .iter()
            .map(|l| edited_mount_line(l, option, false).unwrap_or_else(|| l.clone()))
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxc::config::test_configs::{parse, DEBIAN};

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
}
