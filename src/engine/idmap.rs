//! Id maps: which container ids become which host ids, parsed from the fuidshift
//! form `b:0:1000000:65536` or the LXC form `u 0 1000000 65536`, and validated so
//! that every shift is exactly invertible.

use super::idrange::IdRange;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether an id is a user id or a group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdKind {
    User,
    Group,
}

/// Forward moves container ids to host ids; reverse moves them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    Forward,
    Reverse,
}

impl Direction {
    pub fn opposite(self) -> Direction {
        match self {
            Direction::Forward => Direction::Reverse,
            Direction::Reverse => Direction::Forward,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
        })
    }
}

/// One line of a map: `count` ids starting at `container_first` correspond to
/// `count` ids starting at `host_first`, for users, groups or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    pub users: bool,
    pub groups: bool,
    pub container_first: u32,
    pub host_first: u32,
    pub count: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdMapError {
    #[error("cannot read map {0:?}: expected `b:0:1000000:65536` (u, g or b : container id : host id : count) or `u 0 1000000 65536`")]
    Syntax(String),
    #[error("map {0:?}: the count must be at least 1")]
    EmptyRange(String),
    #[error("map {0:?}: its ids would reach 4294967295, the kernel's \"no change\" id; choose a lower range")]
    ReachesInvalidId(String),
    #[error(
        "maps {0} and {1}: their container ranges overlap; each container id may be mapped once"
    )]
    ContainerOverlap(String, String),
    #[error("maps {0} and {1}: their host ranges overlap; each host id may be mapped once")]
    HostOverlap(String, String),
    #[error("maps {0} and {1}: a container range overlaps a host range, so the shift could not be undone; use a host range outside the container ids (e.g. b:0:1000000:65536)")]
    ContainerHostOverlap(String, String),
    #[error("map {0}: its container range overlaps its host range, so the shift could not be undone; use a host range outside the container ids (e.g. b:0:1000000:65536)")]
    SelfOverlap(String),
    #[error("no map given: pass --map b:0:1000000:65536")]
    NoMap,
}

impl MapEntry {
    /// Parses `b:0:1000000:65536` or `u 0 1000000 65536`.
    pub fn parse(text: &str) -> Result<MapEntry, IdMapError> {
        let syntax = || IdMapError::Syntax(text.to_string());
        let trimmed = text.trim();
        let fields: Vec<&str> = if trimmed.contains(':') {
            trimmed.split(':').collect()
        } else {
            trimmed.split_whitespace().collect()
        };
        let [kind, container, host, count] = fields[..] else {
            return Err(syntax());
        };
        let (users, groups) = match kind {
            "u" => (true, false),
            "g" => (false, true),
            "b" => (true, true),
            _ => return Err(syntax()),
        };
        let number = |s: &str| s.trim().parse::<u32>().map_err(|_| syntax());
        let entry = MapEntry {
            users,
            groups,
            container_first: number(container)?,
            host_first: number(host)?,
            count: number(count)?,
        };
        entry.checked(text)
    }

    /// The entry if its range is valid; errors quote `text`.
    fn checked(self, text: &str) -> Result<MapEntry, IdMapError> {
        if !self.users && !self.groups {
            return Err(IdMapError::Syntax(text.to_string()));
        }
        if self.count == 0 {
            return Err(IdMapError::EmptyRange(text.to_string()));
        }
        let past_valid = |range: IdRange| range.end() > u64::from(u32::MAX);
        if past_valid(self.container_range()) || past_valid(self.host_range()) {
            return Err(IdMapError::ReachesInvalidId(text.to_string()));
        }
        Ok(self)
    }

    fn applies_to(&self, kind: IdKind) -> bool {
        match kind {
            IdKind::User => self.users,
            IdKind::Group => self.groups,
        }
    }

    /// A piece mapping each id onto itself (LXC's way to share a host id).
    pub fn is_identity(&self) -> bool {
        self.container_first == self.host_first
    }

    fn kinds_overlap(&self, other: &MapEntry) -> bool {
        (self.users && other.users) || (self.groups && other.groups)
    }

    fn container_range(&self) -> IdRange {
        IdRange::new(self.container_first, self.count)
    }

    fn host_range(&self) -> IdRange {
        IdRange::new(self.host_first, self.count)
    }

    /// The range an id is moved out of, for this direction.
    fn source_first(&self, direction: Direction) -> u32 {
        match direction {
            Direction::Forward => self.container_first,
            Direction::Reverse => self.host_first,
        }
    }

    fn target_first(&self, direction: Direction) -> u32 {
        self.source_first(direction.opposite())
    }
}

impl fmt::Display for MapEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match (self.users, self.groups) {
            (true, true) => "b",
            (true, false) => "u",
            _ => "g",
        };
        write!(
            f,
            "{kind}:{}:{}:{}",
            self.container_first, self.host_first, self.count
        )
    }
}

/// What the map says about one id in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shift {
    /// The id lies in a source range and becomes this id.
    Mapped(u32),
    /// The id already lies in a target range: left alone.
    AlreadyTarget,
    /// The id lies in no range: left alone (shows as nobody in the container).
    Unmapped,
}

/// A validated set of map entries; validated when deserialized too (a journal or
/// state file is read back through `IdMap::new`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedIdMap")]
pub struct IdMap {
    entries: Vec<MapEntry>,
}

/// The serialized form of an `IdMap`, before validation.
#[derive(Deserialize)]
struct UncheckedIdMap {
    entries: Vec<MapEntry>,
}

impl TryFrom<UncheckedIdMap> for IdMap {
    type Error = IdMapError;

    fn try_from(unchecked: UncheckedIdMap) -> Result<IdMap, IdMapError> {
        IdMap::new(unchecked.entries)
    }
}

impl IdMap {
    /// Validates that the entries describe an invertible map.
    pub fn new(entries: Vec<MapEntry>) -> Result<IdMap, IdMapError> {
        if entries.is_empty() {
            return Err(IdMapError::NoMap);
        }
        for e in &entries {
            e.checked(&e.to_string())?;
        }
        for (i, a) in entries.iter().enumerate() {
            for b in &entries[i..] {
                if !a.kinds_overlap(b) {
                    continue;
                }
                let name = |e: &MapEntry| e.to_string();
                let crosses = a.container_range().overlaps(b.host_range())
                    || a.host_range().overlaps(b.container_range());
                // An identity piece (`u 1000 1000 1`: a host id shared with the
                // container) maps each id onto itself: nothing to undo.
                if crosses && std::ptr::eq(a, b) && !a.is_identity() {
                    return Err(IdMapError::SelfOverlap(name(a)));
                }
                if std::ptr::eq(a, b) && a.is_identity() {
                    continue;
                }
                if crosses {
                    return Err(IdMapError::ContainerHostOverlap(name(a), name(b)));
                }
                if std::ptr::eq(a, b) {
                    continue;
                }
                if a.container_range().overlaps(b.container_range()) {
                    return Err(IdMapError::ContainerOverlap(name(a), name(b)));
                }
                if a.host_range().overlaps(b.host_range()) {
                    return Err(IdMapError::HostOverlap(name(a), name(b)));
                }
            }
        }
        Ok(IdMap { entries })
    }

    /// Parses and validates several map texts.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<IdMap, IdMapError> {
        let entries = texts
            .iter()
            .map(|t| MapEntry::parse(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        IdMap::new(entries)
    }

    pub fn entries(&self) -> &[MapEntry] {
        &self.entries
    }

    /// Classifies an id for a shift in `direction`.
    pub fn shift(&self, kind: IdKind, id: u32, direction: Direction) -> Shift {
        for e in self.entries.iter().filter(|e| e.applies_to(kind)) {
            let (source, target) = (e.source_first(direction), e.target_first(direction));
            if IdRange::new(source, e.count).contains(id) {
                return Shift::Mapped(target + (id - source));
            }
        }
        if self.in_target(kind, id, direction) {
            Shift::AlreadyTarget
        } else {
            Shift::Unmapped
        }
    }

    /// The id after a shift in `direction` (unchanged when not in a source range).
    pub fn map(&self, kind: IdKind, id: u32, direction: Direction) -> u32 {
        match self.shift(kind, id, direction) {
            Shift::Mapped(new) => new,
            _ => id,
        }
    }

    /// Whether `id` lies in a range that a shift in `direction` moves ids into. An
    /// identity piece's ids are its own source too: never "already moved".
    pub fn in_target(&self, kind: IdKind, id: u32, direction: Direction) -> bool {
        self.entries
            .iter()
            .filter(|e| e.applies_to(kind) && !e.is_identity())
            .any(|e| IdRange::new(e.target_first(direction), e.count).contains(id))
    }

    /// The host uid of the container's root, if uid 0 is mapped.
    pub fn host_root_uid(&self) -> Option<u32> {
        match self.shift(IdKind::User, 0, Direction::Forward) {
            Shift::Mapped(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<String> = self.entries.iter().map(|e| e.to_string()).collect();
        f.write_str(&texts.join(" "))
    }
}

/// The properties the `idmap` fuzz target checks; panics on the first one violated.
/// The input is read as up to 8 map texts, one a line. A map that parses has no
/// entry reaching 4294967295, no overlap, a Display form that parses back to it,
/// and every id a shift moves is moved back by the opposite shift.
#[doc(hidden)]
#[cfg(feature = "testkit")]
pub fn fuzz_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let texts: Vec<&str> = text.lines().take(8).collect();
    for t in &texts {
        if let Ok(e) = MapEntry::parse(t) {
            assert_eq!(MapEntry::parse(&e.to_string()), Ok(e), "entry reparse");
        }
    }
    let Ok(map) = IdMap::parse(&texts) else {
        return;
    };
    let shown = map.to_string();
    let again: Vec<&str> = shown.split(' ').collect();
    assert_eq!(IdMap::parse(&again).as_ref(), Ok(&map), "Display reparse");
    let mut ids = vec![0, 1, u32::MAX - 1, u32::MAX];
    for (i, a) in map.entries.iter().enumerate() {
        let last = |first: u32| u64::from(first) + u64::from(a.count) - 1;
        assert!(a.count > 0 && (a.users || a.groups), "empty entry {a}");
        assert!(
            last(a.container_first) < u64::from(u32::MAX),
            "{a} reaches -1"
        );
        assert!(last(a.host_first) < u64::from(u32::MAX), "{a} reaches -1");
        for b in map.entries[i..].iter().filter(|b| a.kinds_overlap(b)) {
            let crosses = a.container_range().overlaps(b.host_range())
                || a.host_range().overlaps(b.container_range());
            let same = std::ptr::eq(a, b);
            let identity = same && a.is_identity();
            assert!(
                !crosses || identity,
                "{a} and {b}: container range meets host range"
            );
            assert!(
                same || !a.container_range().overlaps(b.container_range()),
                "{a}, {b}"
            );
            assert!(same || !a.host_range().overlaps(b.host_range()), "{a}, {b}");
        }
        for first in [a.container_first, a.host_first] {
            let end = first.saturating_add(a.count);
            ids.extend([first.saturating_sub(1), first, end - 1, end, first ^ 0x5555]);
        }
    }
    let directions = [Direction::Forward, Direction::Reverse];
    for (kind, direction) in [IdKind::User, IdKind::Group]
        .into_iter()
        .flat_map(|k| directions.map(|d| (k, d)))
    {
        for &id in &ids {
            let Shift::Mapped(new) = map.shift(kind, id, direction) else {
                assert_eq!(map.map(kind, id, direction), id, "unmapped id moved");
                continue;
            };
            assert_ne!(new, u32::MAX, "{id} shifted to 4294967295");
            let back = map.shift(kind, new, direction.opposite());
            assert_eq!(back, Shift::Mapped(id), "{id} -> {new} does not come back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(texts: &[&str]) -> IdMap {
        IdMap::parse(texts).unwrap()
    }

    #[test]
    fn parses_both_forms_identically() {
        assert_eq!(
            MapEntry::parse("b:0:1000000:65536").unwrap(),
            MapEntry::parse(" b 0 1000000 65536 ").unwrap()
        );
        let u = MapEntry::parse("u 0 100000 10").unwrap();
        assert!(u.users && !u.groups);
        assert_eq!(u.to_string(), "u:0:100000:10");
    }

    #[test]
    fn rejects_bad_syntax_and_ranges() {
        for bad in [
            "",
            "x:0:1:1",
            "b:0:1",
            "b:0:1:1:1",
            "b:-1:1:1",
            "b 0 1000000 abc",
        ] {
            assert!(
                matches!(MapEntry::parse(bad), Err(IdMapError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            MapEntry::parse("b:0:1:0"),
            Err(IdMapError::EmptyRange(_))
        ));
        assert!(matches!(
            MapEntry::parse("b:0:4294901760:65536"),
            Err(IdMapError::ReachesInvalidId(_))
        ));
        assert!(MapEntry::parse("b:0:4294901759:65536").is_ok());
    }

    #[test]
    fn rejects_overlaps() {
        assert!(matches!(
            IdMap::parse(&["b:0:60000:65536"]),
            Err(IdMapError::SelfOverlap(..))
        ));
        assert!(matches!(
            IdMap::parse(&["u:0:1000000:100", "u:50:2000000:100"]),
            Err(IdMapError::ContainerOverlap(..))
        ));
        assert!(matches!(
            IdMap::parse(&["u:0:1000000:100", "u:500:1000050:100"]),
            Err(IdMapError::HostOverlap(..))
        ));
        assert!(matches!(
            IdMap::parse(&["u:0:1000000:100", "u:1000000:3000000:100"]),
            Err(IdMapError::ContainerHostOverlap(..))
        ));
        // Users and groups are separate id spaces.
        assert!(IdMap::parse(&["u:0:1000000:100", "g:50:1000000:100"]).is_ok());
        assert_eq!(IdMap::parse::<&str>(&[]), Err(IdMapError::NoMap));
    }

    /// A map with a hole, as LXC writes one to share host user 1000: the identity
    /// piece is accepted, its id never moves and never counts as already moved,
    /// and the ids around it shift both ways.
    #[test]
    fn a_map_with_a_hole_shares_its_identity_piece() {
        let m = map(&[
            "u:0:100000:1000",
            "u:1000:1000:1",
            "u:1001:101001:64535",
            "g:0:100000:65536",
        ]);
        let (u, g, fwd, rev) = (
            IdKind::User,
            IdKind::Group,
            Direction::Forward,
            Direction::Reverse,
        );
        assert_eq!(m.shift(u, 999, fwd), Shift::Mapped(100_999));
        assert_eq!(m.shift(u, 1000, fwd), Shift::Mapped(1000));
        assert_eq!(m.shift(u, 1000, rev), Shift::Mapped(1000));
        assert_eq!(m.shift(u, 1001, fwd), Shift::Mapped(101_001));
        assert_eq!(
            m.shift(u, 101_000, rev),
            Shift::Unmapped,
            "the hole's host id"
        );
        assert!(!m.in_target(u, 1000, fwd) && !m.in_target(u, 1000, rev));
        assert_eq!(
            m.shift(g, 1000, fwd),
            Shift::Mapped(101_000),
            "groups have no hole"
        );
        // Only a whole identity piece: one that maps onto part of itself shifts.
        assert!(matches!(
            IdMap::parse(&["u:1000:1001:5"]),
            Err(IdMapError::SelfOverlap(..))
        ));
    }

    #[test]
    fn shifts_both_ways_and_classifies() {
        let m = map(&["b:0:1000000:65536"]);
        let (u, fwd, rev) = (IdKind::User, Direction::Forward, Direction::Reverse);
        assert_eq!(m.shift(u, 0, fwd), Shift::Mapped(1000000));
        assert_eq!(m.shift(u, 65535, fwd), Shift::Mapped(1065535));
        assert_eq!(m.shift(u, 65536, fwd), Shift::Unmapped);
        assert_eq!(m.shift(u, 1000005, fwd), Shift::AlreadyTarget);
        assert_eq!(m.shift(u, 1000005, rev), Shift::Mapped(5));
        assert_eq!(m.shift(u, 5, rev), Shift::AlreadyTarget);
        assert_eq!(m.map(u, 4294967295, fwd), 4294967295);
        assert_eq!(m.host_root_uid(), Some(1000000));
    }

    #[test]
    fn separate_user_and_group_maps() {
        let m = map(&["u:0:1000000:65536", "g:0:2000000:65536"]);
        assert_eq!(m.map(IdKind::User, 7, Direction::Forward), 1000007);
        assert_eq!(m.map(IdKind::Group, 7, Direction::Forward), 2000007);
        assert_eq!(m.map(IdKind::Group, 2000007, Direction::Reverse), 7);
    }

    #[test]
    fn deserialized_maps_are_validated() {
        // Found by the `idmap`/`journal` fuzz seeds: a journal header's map skipped
        // every check, so 4294967290 + 5 wrapped past 4294967295 in `shift`.
        let json = |host: u32, count: u32| {
            format!(
                r#"{{"entries":[{{"users":true,"groups":false,"container_first":0,"host_first":{host},"count":{count}}}]}}"#
            )
        };
        let read = |text: &str| serde_json::from_str::<IdMap>(text).map_err(|e| e.to_string());
        assert!(read(&json(4294967290, 100))
            .unwrap_err()
            .contains("4294967295"));
        assert!(read(&json(1000000, 0)).unwrap_err().contains("at least 1"));
        assert!(read(r#"{"entries":[]}"#).unwrap_err().contains("no map"));
        let both = r#"{"users":false,"groups":false,"container_first":0,"host_first":9,"count":1}"#;
        assert!(read(&format!(r#"{{"entries":[{both}]}}"#)).is_err());
        let good = map(&["b:0:1000000:65536"]);
        assert_eq!(
            read(&serde_json::to_string(&good).unwrap()),
            Ok(good.clone())
        );
        assert!(IdMap::new(vec![MapEntry {
            count: 0,
            ..good.entries[0]
        }])
        .is_err());
    }
}
