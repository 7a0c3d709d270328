//! Which host ids an unprivileged container's ids are: its `lxc.idmap` lines, of any
//! shape LXC accepts. One range for users and groups alike (`u 0 100000 65536` and
//! `g 0 100000 65536`), user and group ranges apart, several pieces, and host ids
//! shared with the container as identity pieces (`u 1000 1000 1`, the way a host
//! user's files are shared through a bind mount).

use crate::engine::idmap::{Direction, IdKind, IdMap, IdMapError, MapEntry};
use crate::engine::idrange::IdRange;
use std::fmt;

/// A validated container map: u and g pieces (never `b`), each kind mapping
/// container id 0, no two pieces overlapping on either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMap {
    entries: Vec<MapEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostMapError {
    #[error(transparent)]
    Invalid(#[from] IdMapError),
    #[error("map {maps} maps no container {kind} 0, so the container's root would have no {kind} on the host and could not start; add a piece for container id 0")]
    NoRoot { maps: String, kind: &'static str },
    #[error("--share-ids: id 0 is root; shared, the container's root would be the host's root, a privileged container. Share the ids of a regular user (e.g. u:1000,g:1000)")]
    SharedRoot,
    #[error("--share-ids {0:?}: expected u:ID, g:ID or b:ID (user, group or both), comma separated, e.g. u:1000,g:1000")]
    SharedSyntax(String),
}

/// A host id shared with the container as itself (`--share-ids u:1000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedId {
    pub kind: IdKind,
    pub id: u32,
}

/// Parses `u:1000,g:1000` (b:ID shares both kinds).
pub fn parse_shared(text: &str) -> Result<Vec<SharedId>, HostMapError> {
    let bad = || HostMapError::SharedSyntax(text.to_string());
    let mut shared = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (kind, id) = item.split_once(':').ok_or_else(bad)?;
        let id: u32 = id.trim().parse().map_err(|_| bad())?;
        let kinds: &[IdKind] = match kind.trim() {
            "u" => &[IdKind::User],
            "g" => &[IdKind::Group],
            "b" => &[IdKind::User, IdKind::Group],
            _ => return Err(bad()),
        };
        shared.extend(kinds.iter().map(|&kind| SharedId { kind, id }));
    }
    if shared.is_empty() || shared.iter().any(|s| s.id == u32::MAX) {
        return Err(bad());
    }
    if shared.iter().any(|s| s.id == 0) {
        return Err(HostMapError::SharedRoot);
    }
    Ok(shared)
}

fn kind_name(kind: IdKind) -> &'static str {
    match kind {
        IdKind::User => "uid",
        IdKind::Group => "gid",
    }
}

fn applies(entry: &MapEntry, kind: IdKind) -> bool {
    match kind {
        IdKind::User => entry.users,
        IdKind::Group => entry.groups,
    }
}

fn piece(kind: IdKind, container_first: u32, host_first: u32, count: u32) -> MapEntry {
    MapEntry {
        users: kind == IdKind::User,
        groups: kind == IdKind::Group,
        container_first,
        host_first,
        count,
    }
}

const KINDS: [IdKind; 2] = [IdKind::User, IdKind::Group];

impl HostMap {
    /// Validates `entries` (a `b` entry counts as a u and a g piece).
    pub fn new(entries: Vec<MapEntry>) -> Result<HostMap, HostMapError> {
        let mut split: Vec<MapEntry> = Vec::new();
        for kind in KINDS {
            let mut pieces: Vec<MapEntry> = (entries.iter())
                .filter(|e| applies(e, kind))
                .map(|e| piece(kind, e.container_first, e.host_first, e.count))
                .collect();
            pieces.sort_by_key(|e| e.container_first);
            split.extend(pieces);
        }
        IdMap::new(split.clone())?;
        let map = HostMap { entries: split };
        for kind in KINDS {
            if map.to_host(kind, 0).is_none() {
                return Err(HostMapError::NoRoot {
                    maps: map.to_string(),
                    kind: kind_name(kind),
                });
            }
        }
        Ok(map)
    }

    /// Container ids 0..count are host ids first.., users and groups alike.
    pub fn simple(first: u32, count: u32) -> Result<HostMap, HostMapError> {
        HostMap::sharing(first, count, &[])
    }

    /// As `simple`, with each of `shared` mapped onto itself: the host id the range
    /// would have given it stays unused, as in LXC's own examples.
    pub fn sharing(first: u32, count: u32, shared: &[SharedId]) -> Result<HostMap, HostMapError> {
        let mut entries = Vec::new();
        for kind in KINDS {
            let mut ids: Vec<u32> = (shared.iter())
                .filter(|s| s.kind == kind)
                .map(|s| s.id)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let mut next = 0u32;
            for &id in &ids {
                if id > next && next < count {
                    let end = id.min(count);
                    entries.push(piece(kind, next, first.saturating_add(next), end - next));
                }
                entries.push(piece(kind, id, id, 1));
                next = next.max(id + 1);
            }
            if next < count {
                entries.push(piece(kind, next, first.saturating_add(next), count - next));
            }
        }
        HostMap::new(entries)
    }

    pub fn entries(&self) -> &[MapEntry] {
        &self.entries
    }

    fn of(&self, kind: IdKind) -> impl Iterator<Item = &MapEntry> {
        self.entries.iter().filter(move |e| applies(e, kind))
    }

    /// The host id of container id `id`, if mapped.
    pub fn to_host(&self, kind: IdKind, id: u32) -> Option<u32> {
        self.of(kind)
            .find(|e| IdRange::new(e.container_first, e.count).contains(id))
            .map(|e| e.host_first + (id - e.container_first))
    }

    /// The host uid of container root.
    pub fn root_uid(&self) -> u32 {
        self.to_host(IdKind::User, 0).unwrap_or(0)
    }

    /// The host gid of container root.
    pub fn root_gid(&self) -> u32 {
        self.to_host(IdKind::Group, 0).unwrap_or(0)
    }

    /// The first host id when the map is one range for users and groups alike.
    pub fn one_range(&self) -> Option<(u32, u32)> {
        let [u, g] = &self.entries[..] else {
            return None;
        };
        let same = (u.container_first, u.host_first, u.count)
            == (g.container_first, g.host_first, g.count);
        same.then_some((u.host_first, u.count))
    }

    /// The host ranges of `kind` the container gets (identity pieces too: LXC maps
    /// only ids root holds in /etc/subuid and /etc/subgid).
    pub fn host_ranges(&self, kind: IdKind) -> Vec<IdRange> {
        self.of(kind)
            .map(|e| IdRange::new(e.host_first, e.count))
            .collect()
    }

    /// Every host id either kind maps (for overlap checks with other containers).
    pub fn all_host_ranges(&self) -> Vec<IdRange> {
        KINDS.iter().flat_map(|&k| self.host_ranges(k)).collect()
    }

    /// The host ids of this map shared with the container as themselves.
    pub fn shared(&self) -> Vec<SharedId> {
        (self.entries.iter())
            .filter(|e| e.is_identity())
            .flat_map(|e| {
                let kind = if e.users { IdKind::User } else { IdKind::Group };
                (0..e.count).map(move |i| SharedId {
                    kind,
                    id: e.container_first + i,
                })
            })
            .collect()
    }

    /// One past the highest container id the map covers, of either kind: a range
    /// this long maps every container id this map does.
    pub fn span(&self) -> u32 {
        (self.entries.iter())
            .map(|e| IdRange::new(e.container_first, e.count).end())
            .max()
            .map_or(0, |end| u32::try_from(end).unwrap_or(u32::MAX))
    }

    /// How many container ids of `kind` the map covers.
    pub fn count(&self, kind: IdKind) -> u32 {
        self.of(kind).map(|e| e.count).fold(0, u32::saturating_add)
    }

    /// The `lxc.idmap` values, u pieces then g pieces.
    pub fn lxc_lines(&self) -> Vec<String> {
        (self.entries.iter())
            .map(|e| {
                let kind = if e.users { "u" } else { "g" };
                format!("{kind} {} {} {}", e.container_first, e.host_first, e.count)
            })
            .collect()
    }

    /// The command-line arguments that convert a container to this map.
    pub fn args(&self) -> String {
        if let Some((first, _)) = self.one_range() {
            return format!("--to {first}");
        }
        let maps: Vec<String> = self.entries.iter().map(|e| format!("--map {e}")).collect();
        maps.join(" ")
    }
}

impl fmt::Display for HostMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<String> = self.entries.iter().map(|e| e.to_string()).collect();
        f.write_str(&texts.join(" "))
    }
}

/// The shift that takes a rootfs holding `from`'s host ids (container ids when
/// None) to `to`'s: a map's own pieces forward or reverse, or, between two maps, each
/// container id's piece composed (container ids `to` does not map stay as they are).
pub fn shift_between(
    from: Option<&HostMap>,
    to: Option<&HostMap>,
) -> Result<Option<(IdMap, Direction)>, IdMapError> {
    let (pieces, direction) = match (from, to) {
        (None, None) => return Ok(None),
        (None, Some(to)) => (to.entries.clone(), Direction::Forward),
        (Some(from), None) => (from.entries.clone(), Direction::Reverse),
        (Some(from), Some(to)) if from == to => (to.entries.clone(), Direction::Forward),
        (Some(from), Some(to)) => (composed(from, to), Direction::Forward),
    };
    Ok(Some((IdMap::new(compact(pieces))?, direction)))
}

/// `pieces` with each u piece that has an identical g piece written once as `b`,
/// the way one-range shifts have always been journaled (`b:0:1000000:65536`).
pub fn compact(pieces: Vec<MapEntry>) -> Vec<MapEntry> {
    let same = |a: &MapEntry, b: &MapEntry| {
        (a.container_first, a.host_first, a.count) == (b.container_first, b.host_first, b.count)
    };
    let (users, groups): (Vec<MapEntry>, Vec<MapEntry>) = pieces.into_iter().partition(|e| e.users);
    let mut out: Vec<MapEntry> = users
        .iter()
        .map(|u| MapEntry {
            groups: groups.iter().any(|g| same(u, g)),
            ..*u
        })
        .collect();
    out.extend(
        groups
            .into_iter()
            .filter(|g| !users.iter().any(|u| same(u, g))),
    );
    out
}

/// For every container id both maps cover: `from`'s host id onto `to`'s.
fn composed(from: &HostMap, to: &HostMap) -> Vec<MapEntry> {
    let mut pieces = Vec::new();
    for kind in KINDS {
        for a in from.of(kind) {
            for b in to.of(kind) {
                let first = a.container_first.max(b.container_first);
                let end = (IdRange::new(a.container_first, a.count).end())
                    .min(IdRange::new(b.container_first, b.count).end());
                if u64::from(first) >= end {
                    continue;
                }
                let count = (end - u64::from(first)) as u32;
                let source = a.host_first + (first - a.container_first);
                let target = b.host_first + (first - b.container_first);
                pieces.push(piece(kind, source, target, count));
            }
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(texts: &[&str]) -> HostMap {
        HostMap::new(texts.iter().map(|t| MapEntry::parse(t).unwrap()).collect()).unwrap()
    }

    #[test]
    fn a_simple_map_is_one_range() {
        let m = HostMap::simple(100000, 65536).unwrap();
        assert_eq!(m.one_range(), Some((100000, 65536)));
        assert_eq!(m.lxc_lines(), ["u 0 100000 65536", "g 0 100000 65536"]);
        assert_eq!(m.args(), "--to 100000");
        assert_eq!(m, map(&["g 0 100000 65536", "u 0 100000 65536"]));
        assert_eq!(m, map(&["b:0:100000:65536"]));
    }

    #[test]
    fn sharing_an_id_leaves_a_hole_as_lxc_writes_it() {
        let shared = parse_shared("u:1000,g:1000").unwrap();
        let m = HostMap::sharing(100000, 65536, &shared).unwrap();
        let expected = map(&[
            "u 0 100000 1000",
            "u 1000 1000 1",
            "u 1001 101001 64535",
            "g 0 100000 1000",
            "g 1000 1000 1",
            "g 1001 101001 64535",
        ]);
        assert_eq!(m, expected);
        assert_eq!(m.one_range(), None);
        assert_eq!(m.to_host(IdKind::User, 1000), Some(1000));
        assert_eq!(m.to_host(IdKind::Group, 1001), Some(101001));
        assert_eq!(m.shared(), shared);
        assert_eq!(m.count(IdKind::User), 65536);
        let again = HostMap::new(
            m.args()
                .split("--map ")
                .filter(|s| !s.trim().is_empty())
                .map(|s| MapEntry::parse(s.trim()).unwrap())
                .collect(),
        );
        assert_eq!(again, Ok(m));
    }

    #[test]
    fn shared_ids_at_the_edges_and_outside_the_range() {
        assert_eq!(parse_shared("b:0"), Err(HostMapError::SharedRoot));
        let first = HostMap::sharing(100000, 10, &parse_shared("g:1").unwrap()).unwrap();
        assert_eq!(
            first,
            map(&["u:0:100000:10", "g:0:100000:1", "g:1:1:1", "g:2:100002:8"])
        );
        let last = HostMap::sharing(100000, 10, &parse_shared("g:9").unwrap()).unwrap();
        assert_eq!(last, map(&["u:0:100000:10", "g:0:100000:9", "g:9:9:1"]));
        let outside = HostMap::sharing(100000, 10, &parse_shared("u:5000").unwrap()).unwrap();
        assert_eq!(outside.to_host(IdKind::User, 5000), Some(5000));
        assert_eq!(outside.to_host(IdKind::User, 9), Some(100009));
        assert!(parse_shared("x:1").is_err() && parse_shared("u:").is_err());
        assert!(parse_shared("").is_err());
    }

    #[test]
    fn a_map_without_root_is_refused() {
        let entries = vec![MapEntry::parse("b 1 100001 10").unwrap()];
        assert!(matches!(
            HostMap::new(entries),
            Err(HostMapError::NoRoot { kind: "uid", .. })
        ));
        let only_users = vec![MapEntry::parse("u 0 100000 10").unwrap()];
        assert!(matches!(
            HostMap::new(only_users),
            Err(HostMapError::NoRoot { kind: "gid", .. })
        ));
    }

    #[test]
    fn moves_between_maps_compose_each_container_id() {
        let split = map(&["u 0 100000 65536", "g 0 200000 65536"]);
        let shared = HostMap::sharing(300000, 65536, &parse_shared("b:1000").unwrap()).unwrap();
        let (m, d) = shift_between(Some(&split), Some(&shared)).unwrap().unwrap();
        assert_eq!(d, Direction::Forward);
        for (kind, from) in [(IdKind::User, 100000), (IdKind::Group, 200000)] {
            for id in [0, 999, 1000, 1001, 65535] {
                let expected = shared.to_host(kind, id).unwrap();
                assert_eq!(m.map(kind, from + id, d), expected, "{kind:?} {id}");
                assert_eq!(m.map(kind, expected, d.opposite()), from + id);
            }
        }
        let (back, d) = shift_between(Some(&split), None).unwrap().unwrap();
        assert_eq!(back.map(IdKind::Group, 200042, d), 42);
        assert_eq!(back.map(IdKind::User, 200042, d), 200042);
    }

    #[test]
    fn adding_a_shared_id_to_a_range_moves_only_that_id() {
        let simple = HostMap::simple(100000, 65536).unwrap();
        let shared = HostMap::sharing(100000, 65536, &parse_shared("u:1000").unwrap()).unwrap();
        let (m, d) = shift_between(Some(&simple), Some(&shared))
            .unwrap()
            .unwrap();
        assert_eq!(m.map(IdKind::User, 101000, d), 1000);
        assert_eq!(m.map(IdKind::User, 100005, d), 100005);
        assert_eq!(m.map(IdKind::Group, 101000, d), 101000);
        assert_eq!(m.map(IdKind::User, 1000, d.opposite()), 101000);
    }
}
