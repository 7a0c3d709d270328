//! The property check the `config` fuzz target runs over the edits (testkit only).

use super::edit::{is_userns_include, range_lines};
use super::line::Line;
use super::ContainerConfig;
use crate::engine::idmap::MapEntry;
use std::path::PathBuf;

/// The properties the `config` fuzz target checks; panics on the first one violated.
/// Any text is made unprivileged as a conversion does, then moved to another range,
/// then made privileged again. Each edit is idempotent, its result reads back with
/// exactly the intended idmap lines and userns include (or none), and every line that
/// is neither an idmap line nor a userns include keeps its bytes and order.
#[doc(hidden)]
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
        let next = current.with_unprivileged(&range_lines(host, count), &include);
        assert_eq!(
            next.with_unprivileged(&range_lines(host, count), &include),
            next
        );
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
