//! `/etc/subuid` and `/etc/subgid`: lines `owner:first:count` giving an owner (a user
//! name, or a numeric uid) the host ids first..first+count.
//!
//! The file is kept as its lines verbatim (comments, blank and malformed lines
//! included), so an edit touches only the line it adds or removes.

use crate::engine::idrange::IdRange;

/// One line, with its line ending; `range` is None for comments, blank and
/// malformed lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    raw: String,
    range: Option<Range>,
}

/// Ids a line of the file gives to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRange {
    pub owner: String,
    pub ids: IdRange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    owner: String,
    first: u32,
    count: u32,
}

impl Range {
    /// Its ids (a malformed-but-parsed line may reach past 4294967295).
    fn ids(&self) -> IdRange {
        IdRange::new(self.first, self.count)
    }
}

fn span(first: u32, count: u32) -> String {
    format!(
        "{first}-{}",
        IdRange::new(first, count).end().saturating_sub(1)
    )
}

/// `owner:first:count`, exactly three fields; anything else is kept as text.
fn parse_range(text: &str) -> Option<Range> {
    if text.starts_with('#') {
        return None;
    }
    let mut fields = text.split(':');
    let (owner, first, count) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || owner.is_empty() {
        return None;
    }
    Some(Range {
        owner: owner.to_string(),
        first: first.parse().ok()?,
        count: count.parse().ok()?,
    })
}

fn parse_line(raw: &str) -> Line {
    let text = raw.strip_suffix('\n').unwrap_or(raw);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Line {
        raw: raw.to_string(),
        range: parse_range(text),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubIdError {
    #[error("ids {} for {user} are already given to {owner}: line {line} `{owner}:{owner_first}:{owner_count}` owns {}; choose a range outside it (e.g. the lowest free one), or remove that line if {owner} no longer needs it", span(*first, *count), span(*owner_first, *owner_count))]
    Overlap {
        user: String,
        first: u32,
        count: u32,
        owner: String,
        owner_first: u32,
        owner_count: u32,
        line: usize,
    },
    #[error("range {first}:{count} for {user}: the count must be at least 1 and the ids must stay below 4294967295")]
    InvalidRange {
        user: String,
        first: u32,
        count: u32,
    },
    #[error("owner {0:?}: a name must be non-empty and hold no `:` or line break")]
    InvalidOwner(String),
}

/// The contents of a subuid or subgid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIds {
    lines: Vec<Line>,
}

impl SubIds {
    pub fn parse(text: &str) -> SubIds {
        SubIds {
            lines: text.split_inclusive('\n').map(parse_line).collect(),
        }
    }

    pub fn to_text(&self) -> String {
        self.lines.iter().map(|l| l.raw.as_str()).collect()
    }

    /// `(line number, range)` of every valid line.
    fn ranges(&self) -> impl Iterator<Item = (usize, &Range)> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.range.as_ref().map(|r| (i + 1, r)))
    }

    /// The ranges of every line of `user`. The owner is matched as written: a
    /// caller that accepts both forms asks for the name and for the uid.
    pub fn ranges_of(&self, user: &str) -> Vec<IdRange> {
        self.ranges()
            .filter(|(_, r)| r.owner == user)
            .map(|(_, r)| IdRange::new(r.first, r.count))
            .collect()
    }

    /// Whether `user`'s lines together cover first..first+count. Adjacent or
    /// overlapping lines count together, as shadow's `newuidmap` accepts them.
    pub fn covers(&self, user: &str, first: u32, count: u32) -> bool {
        if count == 0 {
            return false;
        }
        let ranges = self.ranges_of(user);
        let (mut next, end) = (u64::from(first), IdRange::new(first, count).end());
        // Walk from `first`: each step jumps to the end of a range holding `next`.
        while let Some(reach) = ranges
            .iter()
            .filter(|r| r.contains(next))
            .map(|r| r.end())
            .max()
        {
            if reach >= end {
                return true;
            }
            next = reach;
        }
        false
    }

    /// The first line of another owner sharing ids with first..first+count.
    pub fn overlapping_other(&self, user: &str, first: u32, count: u32) -> Option<OwnedRange> {
        self.overlap(user, first, count).map(|(_, r)| OwnedRange {
            owner: r.owner.clone(),
            ids: r.ids(),
        })
    }

    fn overlap(&self, user: &str, first: u32, count: u32) -> Option<(usize, &Range)> {
        self.ranges()
            .find(|(_, r)| r.owner != user && r.ids().overlaps(IdRange::new(first, count)))
    }

    /// Makes `user` own first..first+count: unchanged when already covered, an
    /// error when another owner holds any of the ids, else `user:first:count` is
    /// appended.
    pub fn with_range(&self, user: &str, first: u32, count: u32) -> Result<SubIds, SubIdError> {
        if user.is_empty() || user.contains([':', '\n', '\r']) {
            return Err(SubIdError::InvalidOwner(user.to_string()));
        }
        // Ids must stay below 4294967295, the kernel's "no change" id.
        if count == 0 || IdRange::new(first, count).end() > u64::from(u32::MAX) {
            return Err(SubIdError::InvalidRange {
                user: user.to_string(),
                first,
                count,
            });
        }
        if self.covers(user, first, count) {
            return Ok(self.clone());
        }
        if let Some((line, r)) = self.overlap(user, first, count) {
            return Err(SubIdError::Overlap {
                user: user.to_string(),
                first,
                count,
                owner: r.owner.clone(),
                owner_first: r.first,
                owner_count: r.count,
                line,
            });
        }
        Ok(self.appended(format!("{user}:{first}:{count}\n")))
    }

    fn appended(&self, raw: String) -> SubIds {
        let mut lines = self.lines.clone();
        // A last line without its newline gets one, or the new line would join it.
        if let Some(last) = lines.last_mut().filter(|l| !l.raw.ends_with('\n')) {
            last.raw.push('\n');
        }
        lines.push(parse_line(&raw));
        SubIds { lines }
    }

    /// Removes every line exactly `user:first:count` (for `--release-range`);
    /// other lines of `user` stay.
    pub fn without_range(&self, user: &str, first: u32, count: u32) -> SubIds {
        let wanted = Range {
            owner: user.to_string(),
            first,
            count,
        };
        let lines = self
            .lines
            .iter()
            .filter(|l| l.range.as_ref() != Some(&wanted))
            .cloned()
            .collect();
        SubIds { lines }
    }

    /// The range of every line, of any owner: the `taken` of `lowest_free`.
    pub fn all_ranges(&self) -> Vec<IdRange> {
        self.ranges()
            .map(|(_, r)| IdRange::new(r.first, r.count))
            .collect()
    }
}

/// The lines of one file (/etc/subuid or /etc/subgid) a conversion adds or removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeChanges {
    /// `with_range`: the owner gets each (unless it has it).
    pub grant: Vec<IdRange>,
    /// `without_range`: each line `owner:first:count` goes.
    pub release: Vec<IdRange>,
}

impl RangeChanges {
    pub fn is_empty(&self) -> bool {
        self.grant.is_empty() && self.release.is_empty()
    }

    fn apply(&self, owner: &str, ids: &SubIds) -> Result<SubIds, SubIdError> {
        let mut out = ids.clone();
        for r in &self.release {
            out = out.without_range(owner, r.first, r.count);
        }
        for r in &self.grant {
            out = out.with_range(owner, r.first, r.count)?;
        }
        Ok(out)
    }
}

/// What a conversion does to an owner's subordinate ids, user ids in /etc/subuid
/// and group ids in /etc/subgid; applied to the files as they are when the lock is
/// held, so lines others added since the plan stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubIdChange {
    pub users: RangeChanges,
    pub groups: RangeChanges,
}

impl SubIdChange {
    /// The same ranges granted in both files.
    pub fn grant(first: u32, count: u32) -> SubIdChange {
        let both = RangeChanges {
            grant: vec![IdRange::new(first, count)],
            release: Vec::new(),
        };
        SubIdChange {
            users: both.clone(),
            groups: both,
        }
    }

    /// The same line removed from both files.
    pub fn release(first: u32, count: u32) -> SubIdChange {
        let both = RangeChanges {
            grant: Vec::new(),
            release: vec![IdRange::new(first, count)],
        };
        SubIdChange {
            users: both.clone(),
            groups: both,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    /// Applies the changes of one file: /etc/subuid for `users`, else /etc/subgid.
    pub fn apply(&self, owner: &str, users: bool, ids: &SubIds) -> Result<SubIds, SubIdError> {
        match users {
            true => self.users.apply(owner, ids),
            false => self.groups.apply(owner, ids),
        }
    }
}

/// The lowest start >= `min` that is a multiple of `align` (0 counts as 1) and
/// begins `count` ids free of every range in `taken`; the ids stay below
/// 4294967295. Callers use min = 100000 to stay clear of regular users.
pub fn lowest_free(count: u32, align: u32, min: u32, taken: &[IdRange]) -> Option<u32> {
    if count == 0 {
        return None;
    }
    let align = u64::from(align.max(1));
    let align_up = |id: u64| id.div_ceil(align) * align;
    let mut start = align_up(u64::from(min));
    loop {
        let wanted = IdRange::new(u32::try_from(start).ok()?, count);
        if wanted.end() > u64::from(u32::MAX) {
            return None;
        }
        // Jump past the furthest range in the way; `start` only grows, so this ends.
        let blocker = (taken.iter().copied())
            .filter(|r| r.overlaps(wanted))
            .map(IdRange::end)
            .max();
        match blocker {
            None => return Some(wanted.first),
            Some(past) => start = align_up(past),
        }
    }
}

/// The properties the `subid` fuzz target checks; panics on the first one violated.
/// Any text keeps its bytes; giving root a range (picked near the file's own ranges)
/// covers it, is refused exactly when another owner holds one of its ids, appends
/// one line, and removing that range gives the text back (its last line ended).
#[doc(hidden)]
#[cfg(feature = "testkit")]
pub fn fuzz_edit(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let ids = SubIds::parse(&text);
    assert_eq!(ids.to_text(), text, "parse loses bytes");
    let seed = (data.iter()).fold(7u32, |h, &b| h.wrapping_mul(31).wrapping_add(b.into()));
    let taken = ids.all_ranges();
    let IdRange {
        first: near,
        count: size,
    } = taken
        .get(seed as usize % taken.len().max(1))
        .copied()
        .unwrap_or(IdRange::new(100_000, 65_536));
    let first = near.wrapping_add(seed % 5).wrapping_sub(2);
    let count = [size, 65_536, 1, seed % 3][(seed >> 4) as usize % 4];
    let other = ids.overlapping_other("root", first, count);
    let added = match ids.with_range("root", first, count) {
        Ok(added) => added,
        Err(SubIdError::InvalidRange { .. }) => {
            assert!(count == 0 || IdRange::new(first, count).end() >= u64::from(u32::MAX));
            return;
        }
        Err(SubIdError::Overlap { owner, line, .. }) => {
            assert!(other.is_some_and(|o| o.owner == owner) && line >= 1);
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(
        added.covers("root", first, count),
        "added range not covered"
    );
    if added == ids {
        return;
    }
    assert_eq!(other, None, "overlap with another owner created silently");
    let mut ended = text.into_owned();
    if !ended.is_empty() && !ended.ends_with('\n') {
        ended.push('\n');
    }
    assert_eq!(added.to_text(), format!("{ended}root:{first}:{count}\n"));
    assert_eq!(added.without_range("root", first, count).to_text(), ended);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBUID: &str = "\
# managed by hand
root:100000:65536
lxcuser:165536:65536

1000:231072:65536
broken line
#old:1:2
";

    #[test]
    fn parses_and_round_trips() {
        for text in [SUBUID, "", "a:1:2", "a:1:2\r\nb:x:3\n", "\n\n"] {
            assert_eq!(SubIds::parse(text).to_text(), text);
        }
        let ids = SubIds::parse(SUBUID);
        assert_eq!(ids.ranges_of("root"), vec![IdRange::new(100000, 65536)]);
        assert_eq!(ids.ranges_of("1000"), vec![IdRange::new(231072, 65536)]);
        assert_eq!(ids.ranges_of("old"), vec![]);
        assert_eq!(ids.ranges_of("broken line"), vec![]);
        assert_eq!(ids.all_ranges().len(), 3);
    }

    #[test]
    fn coverage_by_one_or_adjacent_lines() {
        let ids = SubIds::parse("root:100000:65536\nroot:165536:65536\nu:300000:10\n");
        assert!(ids.covers("root", 100000, 65536));
        assert!(ids.covers("root", 100100, 10));
        assert!(
            ids.covers("root", 100000, 131072),
            "adjacent lines together"
        );
        assert!(!ids.covers("root", 100000, 131073));
        assert!(!ids.covers("root", 99999, 2));
        assert!(!ids.covers("root", 100000, 0));
        assert!(!ids.covers("u", 100000, 10));
        let gap = SubIds::parse("root:0:10\nroot:11:10\n");
        assert!(!gap.covers("root", 0, 21));
    }

    #[test]
    fn overlap_with_another_owner_is_refused_with_a_clear_message() {
        let ids = SubIds::parse(SUBUID);
        assert_eq!(
            ids.overlapping_other("root", 200000, 65536),
            Some(OwnedRange {
                owner: "lxcuser".to_string(),
                ids: IdRange::new(165536, 65536)
            })
        );
        assert_eq!(ids.overlapping_other("lxcuser", 200000, 10), None);
        assert_eq!(
            ids.overlapping_other("root", 165535, 1),
            None,
            "ends touch, no overlap"
        );
        let err = ids.with_range("root", 200000, 65536).unwrap_err();
        assert!(
            matches!(err, SubIdError::Overlap { line: 3, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "ids 200000-265535 for root are already given to lxcuser: line 3 `lxcuser:165536:65536` owns 165536-231071; choose a range outside it (e.g. the lowest free one), or remove that line if lxcuser no longer needs it"
        );
    }

    #[test]
    fn with_range_appends_once() {
        let ids = SubIds::parse(SUBUID);
        assert_eq!(ids.with_range("root", 100000, 65536).unwrap(), ids);
        let added = ids.with_range("root", 1000000, 65536).unwrap();
        assert_eq!(added.to_text(), format!("{SUBUID}root:1000000:65536\n"));
        assert_eq!(added.with_range("root", 1000000, 65536).unwrap(), added);
        assert!(added.covers("root", 1000000, 65536));
        let open_end = SubIds::parse("a:1:2").with_range("b", 10, 2).unwrap();
        assert_eq!(open_end.to_text(), "a:1:2\nb:10:2\n");
        assert!(matches!(
            ids.with_range("x", 5, 0),
            Err(SubIdError::InvalidRange { .. })
        ));
        assert!(matches!(
            ids.with_range("x", u32::MAX, 1),
            Err(SubIdError::InvalidRange { .. })
        ));
        assert!(matches!(
            ids.with_range("a:b", 5, 1),
            Err(SubIdError::InvalidOwner(_))
        ));
    }

    #[test]
    fn without_range_removes_only_the_exact_line() {
        let ids = SubIds::parse(SUBUID);
        let added = ids.with_range("root", 1000000, 65536).unwrap();
        assert_eq!(added.without_range("root", 1000000, 65536), ids);
        assert_eq!(ids.without_range("root", 100000, 65535), ids);
        assert_eq!(ids.without_range("lxcuser", 100000, 65536), ids);
        let removed = ids.without_range("root", 100000, 65536);
        assert_eq!(removed.to_text(), SUBUID.replace("root:100000:65536\n", ""));
    }

    #[test]
    fn lowest_free_skips_taken_ranges_and_aligns() {
        assert_eq!(lowest_free(65536, 65536, 100000, &[]), Some(131072));
        assert_eq!(lowest_free(65536, 1, 100000, &[]), Some(100000));
        let ids = SubIds::parse(SUBUID);
        // 131072 meets root's and lxcuser's lines, 262144 meets 1000's (up to 296607).
        assert_eq!(
            lowest_free(65536, 65536, 100000, &ids.all_ranges()),
            Some(327680)
        );
        assert_eq!(
            lowest_free(65536, 1, 100000, &ids.all_ranges()),
            Some(296608)
        );
        let taken = [IdRange::new(131072, 65536), IdRange::new(196608, 1)];
        assert_eq!(lowest_free(65536, 65536, 100000, &taken), Some(262144));
        assert_eq!(lowest_free(10, 0, 5, &[IdRange::new(0, 6)]), Some(6));
        assert_eq!(lowest_free(0, 65536, 100000, &[]), None);
        assert_eq!(lowest_free(65536, 65536, u32::MAX - 65536, &[]), None);
        let last = u32::MAX - 65536;
        assert_eq!(
            lowest_free(65536, 1, last, &[]),
            Some(last),
            "ends at 4294967294"
        );
        assert_eq!(
            lowest_free(65537, 1, last, &[]),
            None,
            "would reach 4294967295"
        );
    }

    #[test]
    fn changes_apply_to_the_file_as_it_is_now() {
        let grant = SubIdChange::grant(1000000, 65536);
        let now = SubIds::parse("u:300000:10\n");
        let granted = grant.apply("root", true, &now).unwrap();
        assert_eq!(granted.to_text(), "u:300000:10\nroot:1000000:65536\n");
        assert_eq!(grant.apply("root", false, &granted).unwrap(), granted);
        let release = SubIdChange::release(1000000, 65536);
        assert_eq!(release.apply("root", true, &granted).unwrap(), now);
        let taken = SubIds::parse("u:1000005:1\n");
        assert!(grant.apply("root", true, &taken).is_err());
        // A shared id's line goes while the range's line comes, each file its own.
        let mut move_on = SubIdChange::grant(2000000, 65536);
        move_on.users.release.push(IdRange::new(1000, 1));
        let shared = SubIds::parse("root:1000:1\n");
        let moved = move_on.apply("root", true, &shared).unwrap();
        assert_eq!(moved.to_text(), "root:2000000:65536\n");
        let groups = move_on.apply("root", false, &shared).unwrap();
        assert_eq!(groups.to_text(), "root:1000:1\nroot:2000000:65536\n");
    }
}
