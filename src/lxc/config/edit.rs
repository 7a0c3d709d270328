//! The edits a conversion makes: unprivileged (one u and one g idmap line and the
//! distro's userns include) and privileged (neither), each changing only the lines
//! it is about; `edited` restores the file's line endings after any edit.

use super::line::{written_value, Line};
use super::{ContainerConfig, INCLUDE_KEY};
use std::path::{Path, PathBuf};

/// `debian` for `.../debian.common.conf`; None for the global `common.conf`.
fn distro_of_common(include: &Path) -> Option<&str> {
    let name = include.file_name()?.to_str()?;
    name.strip_suffix(".common.conf").filter(|d| !d.is_empty())
}

/// `userns.conf` or a distro's `<distro>.userns.conf`.
pub(super) fn is_userns_include(include: &Path) -> bool {
    include
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("userns.conf"))
}

impl ContainerConfig {
    /// The config for an unprivileged container with the idmap lines `idmaps` (u
    /// and g values such as `u 0 100000 65536`): ensures `lxc.include =
    /// <userns_include>` (replacing another `*userns.conf` include in place, else
    /// right after the `<distro>.common.conf` include, else after the last include,
    /// else at the end). The u lines take the place of the first existing u line,
    /// the g lines that of the first g line (other idmap lines are dropped); missing
    /// ones go right after the include, or next to their existing partner.
    /// Idempotent.
    pub fn with_unprivileged(&self, idmaps: &[String], userns_include: &Path) -> ContainerConfig {
        let key = if self.legacy_keys() {
            "lxc.id_map"
        } else {
            "lxc.idmap"
        };
        let of_kind = |kind: &str| -> Vec<Line> {
            (idmaps.iter())
                .filter(|v| v.split_whitespace().next() == Some(kind))
                .map(|v| Line::new(format!("{key} = {v}")))
                .collect()
        };
        let wanted = [of_kind("u"), of_kind("g")];
        let lines = with_include(&self.lines, userns_include);
        let (mut lines, placed) = with_idmaps_in_place(&lines, &wanted);
        match placed {
            [Some(_), Some(_)] => {}
            [Some(u), None] => {
                let at = u + wanted[0].len();
                lines.splice(at..at, wanted[1].clone());
            }
            [None, Some(g)] => {
                lines.splice(g..g, wanted[0].clone());
            }
            [None, None] => {
                let at = lines
                    .iter()
                    .position(|l| l.include() == Some(userns_include))
                    .map_or(lines.len(), |i| i + 1);
                lines.splice(at..at, wanted.concat());
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
    pub(super) fn edited(&self, mut lines: Vec<Line>) -> ContainerConfig {
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

/// The u and g idmap values of one range: container ids 0..count are host ids
/// host_first.., users and groups alike.
#[cfg(any(test, feature = "testkit"))]
pub fn range_lines(host_first: u32, count: u32) -> Vec<String> {
    ["u", "g"]
        .map(|kind| format!("{kind} 0 {host_first} {count}"))
        .to_vec()
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

/// `lines` with the first u and the first g idmap line replaced by `wanted`'s u and
/// g lines (the first keeps its spelling and comment) and every other idmap line
/// dropped (other pieces, clearing lines, invalid lines); also returns where the u
/// and g lines begin.
fn with_idmaps_in_place(
    lines: &[Line],
    wanted: &[Vec<Line>; 2],
) -> (Vec<Line>, [Option<usize>; 2]) {
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
            let mut pieces = wanted[slot].iter();
            if let Some(first) = pieces.next() {
                let value = first.entry().map_or("", |(_, v)| v);
                out.push(line.with_value(value));
            }
            out.extend(pieces.cloned());
        }
    }
    (out, placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::idmap::MapEntry;
    use crate::lxc::config::test_configs::{parse, DEBIAN, LEGACY};
    use crate::lxc::config::Backend;

    const USERNS: &str = "/usr/share/lxc/config/debian.userns.conf";

    fn unprivileged(text: &str, host: u32) -> String {
        parse(text)
            .with_unprivileged(&range_lines(host, 65536), Path::new(USERNS))
            .to_text()
    }

    /// Lines of `new` that are not in `old`, and lines of `old` not in `new`.
    fn changed_lines<'a>(old: &'a str, new: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
        let added = new.lines().filter(|l| !old.lines().any(|o| o == *l));
        let removed = old.lines().filter(|l| !new.lines().any(|n| n == *l));
        (added.collect(), removed.collect())
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
        let out = parse(split).with_unprivileged(
            &range_lines(300000, 65536),
            Path::new("/c/debian.userns.conf"),
        );
        assert_eq!(
            out.to_text(),
            "lxc.include = /c/debian.userns.conf\nlxc.idmap = u 0 300000 65536\nlxc.idmap = g 0 300000 65536\n"
        );
        let only_g = "a = 1\nlxc.idmap = g 0 5 6\nb = 2\n";
        let out = parse(only_g)
            .with_unprivileged(&range_lines(100000, 65536), Path::new("/c/userns.conf"));
        assert_eq!(
            out.to_text(),
            "a = 1\nlxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\nb = 2\nlxc.include = /c/userns.conf\n"
        );
    }

    #[test]
    fn both_edits_are_idempotent() {
        for text in [DEBIAN, LEGACY, "lxc.arch = amd64", ""] {
            let once =
                parse(text).with_unprivileged(&range_lines(100000, 65536), Path::new(USERNS));
            let twice = once.with_unprivileged(&range_lines(100000, 65536), Path::new(USERNS));
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
            let there = config.with_unprivileged(&range_lines(100000, 65536), Path::new(USERNS));
            assert_ne!(there.to_text(), text);
            assert_eq!(there.with_privileged().to_text(), text, "{text:?}");
        }
    }

    #[test]
    fn include_placement_without_a_distro_include() {
        let text = "lxc.include = /usr/share/lxc/config/common.conf\nlxc.arch = amd64";
        let out = parse(text).with_unprivileged(&range_lines(1, 2), Path::new("/u/userns.conf"));
        assert_eq!(
            out.to_text(),
            "lxc.include = /usr/share/lxc/config/common.conf\nlxc.include = /u/userns.conf\nlxc.idmap = u 0 1 2\nlxc.idmap = g 0 1 2\nlxc.arch = amd64"
        );
        let out = parse("lxc.arch = amd64")
            .with_unprivileged(&range_lines(1, 2), Path::new("/u/userns.conf"));
        assert_eq!(
            out.to_text(),
            "lxc.arch = amd64\nlxc.include = /u/userns.conf\nlxc.idmap = u 0 1 2\nlxc.idmap = g 0 1 2"
        );
    }

    #[test]
    fn another_userns_include_is_replaced_in_place() {
        let text = "lxc.include = /x/debian.common.conf\n# userns\nlxc.include = /x/userns.conf\n";
        let out =
            parse(text).with_unprivileged(&range_lines(1, 2), Path::new("/x/debian.userns.conf"));
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
        let once = config.with_unprivileged(&range_lines(100000, 65536), &include);
        assert!(once
            .to_text()
            .contains("lxc.include = \" /x/userns.conf\"\n"));
        assert!(parse(&once.to_text()).includes().contains(&include));
        assert_eq!(
            once.with_unprivileged(&range_lines(100000, 65536), &include),
            once
        );
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
        let added =
            parse("a = 1").with_unprivileged(&range_lines(100000, 65536), Path::new(USERNS));
        assert_eq!(added.with_privileged().to_text(), "a = 1");
    }
}
