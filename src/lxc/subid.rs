//! `/etc/subuid` and `/etc/subgid`: lines `owner:first:count` giving an owner (a user
//! name, or a numeric uid) the host ids first..first+count.
//!
//! The file is kept as its lines verbatim (comments, blank and malformed lines
//! included), so an edit touches only the line it adds or removes.

use crate::engine::idrange::IdRange;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// One line, with its line ending; `range` is None for comments, blank and
/// malformed lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    raw: String,
    range: Option<Range>,
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

    /// `(first, count)` of every line of `user`. The owner is matched as written: a
    /// caller that accepts both forms asks for the name and for the uid.
    pub fn ranges_of(&self, user: &str) -> Vec<(u32, u32)> {
        self.ranges()
            .filter(|(_, r)| r.owner == user)
            .map(|(_, r)| (r.first, r.count))
            .collect()
    }

    /// Whether `user`'s lines together cover first..first+count. Adjacent or
    /// overlapping lines count together, as shadow's `newuidmap` accepts them.
    pub fn covers(&self, user: &str, first: u32, count: u32) -> bool {
        if count == 0 {
            return false;
        }
        let ranges: Vec<IdRange> = (self.ranges_of(user).into_iter())
            .map(|(f, c)| IdRange::new(f, c))
            .collect();
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

    /// The first line of another owner sharing ids with first..first+count:
    /// `(owner, first, count)`.
    pub fn overlapping_other(
        &self,
        user: &str,
        first: u32,
        count: u32,
    ) -> Option<(String, u32, u32)> {
        self.overlap(user, first, count)
            .map(|(_, r)| (r.owner.clone(), r.first, r.count))
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

    /// `(first, count)` of every line, of any owner: the `taken` of `lowest_free`.
    pub fn all_ranges(&self) -> Vec<(u32, u32)> {
        self.ranges().map(|(_, r)| (r.first, r.count)).collect()
    }
}

/// What a conversion does to an owner's subordinate ids; applied to the file as it
/// is when the lock is held, so lines others added since the plan stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubIdChange {
    /// `with_range`: the owner gets first..first+count (unless it has them).
    Grant { first: u32, count: u32 },
    /// `without_range`: the line `owner:first:count` goes.
    Release { first: u32, count: u32 },
}

impl SubIdChange {
    pub fn apply(&self, owner: &str, ids: &SubIds) -> Result<SubIds, SubIdError> {
        match *self {
            SubIdChange::Grant { first, count } => ids.with_range(owner, first, count),
            SubIdChange::Release { first, count } => Ok(ids.without_range(owner, first, count)),
        }
    }
}

/// The lowest start >= `min` that is a multiple of `align` (0 counts as 1) and
/// begins `count` ids free of every `(first, count)` in `taken`; the ids stay below
/// 4294967295. Callers use min = 100000 to stay clear of regular users.
pub fn lowest_free(count: u32, align: u32, min: u32, taken: &[(u32, u32)]) -> Option<u32> {
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
        let blocker = (taken.iter())
            .map(|&(f, c)| IdRange::new(f, c))
            .filter(|r| r.overlaps(wanted))
            .map(IdRange::end)
            .max();
        match blocker {
            None => return Some(wanted.first),
            Some(past) => start = align_up(past),
        }
    }
}

/// Names the path in an I/O error, keeping its kind.
fn at_path(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// The file a write to `path` must replace: a symlink's target, so the link stays.
fn real_target(path: &Path) -> io::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path),
        _ => Ok(path.to_path_buf()),
    }
}

/// The file a replacement lands on (a symlink's target), its directory, and the
/// mode and owner the new file keeps (0644 root:root for a new file).
fn replaced(path: &Path) -> io::Result<(PathBuf, PathBuf, (u32, u32, u32))> {
    let target = real_target(path).map_err(|e| at_path(path, e))?;
    let keep = match fs::metadata(&target) {
        Ok(meta) => (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (0o644, 0, 0),
        Err(e) => return Err(at_path(&target, e)),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((target, dir, keep))
}

/// fsyncs a directory, so that a rename in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| at_path(dir, e))
}

/// Replaces a file's contents atomically: a temp file in the same directory with
/// the original's owner and mode (0644 root:root for a new file) is written,
/// fsynced and renamed over it, then the directory is fsynced. Readers see the old
/// or the new contents, never a mix; errors name the path.
pub fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let (target, dir, (mode, uid, gid)) = replaced(path)?;
    remove_stale_temps(&target);
    let temp = temp_path(&dir, &target);
    let result = write_temp(&temp, text, mode, uid, gid)
        .and_then(|()| fs::rename(&temp, &target))
        .map_err(|e| at_path(&target, e));
    if result.is_err() {
        let _ = fs::remove_file(&temp); // best effort: the error that matters is the first
        return result;
    }
    sync_dir(&dir)
}

/// Replaces a shadow file (/etc/subuid, /etc/subgid) as shadow's tools do, to be
/// called with its lock held ([`super::lock::ShadowLock`]): the old contents go to
/// `F-` (the backup `useradd` and `usermod` keep), the new ones to `F+`, fsynced and
/// renamed over `F`, then the directory is fsynced. Both keep the original's owner
/// and mode (0644 root:root for a new file); a symlink's target is replaced.
pub fn write_with_backup(path: &Path, old: Option<&str>, text: &str) -> io::Result<()> {
    let (target, dir, (mode, uid, gid)) = replaced(path)?;
    let sibling = |suffix: &str| {
        let mut name = target.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let replace = |file: &Path, text: &str| {
        // Whatever a killed writer left there goes; create_new never follows a link.
        match fs::remove_file(file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at_path(file, e)),
            _ => {}
        }
        write_temp(file, text, mode, uid, gid).map_err(|e| at_path(file, e))
    };
    if let Some(old) = old {
        replace(&sibling("-"), old)?;
    }
    let new = sibling("+");
    replace(&new, text)?;
    fs::rename(&new, &target).map_err(|e| at_path(&target, e))?;
    sync_dir(&dir)
}

/// `.<name>.lxc-idshift.<pid>.<n>` next to the target: same filesystem, so the
/// rename is atomic; the pid and counter keep concurrent writers apart.
fn temp_path(dir: &Path, target: &Path) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = target
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.lxc-idshift.{}.{n}", std::process::id()))
}

/// Removes the temp files that writers of `target` killed before their rename left
/// (their pid no longer runs): a SIGKILL must not litter /etc.
pub fn remove_stale_temps(target: &Path) {
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!(".{name}.lxc-idshift.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        let dead = pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if dead {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn write_temp(temp: &Path, text: &str, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    file.write_all(text.as_bytes())?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    // chmod after chown: chown clears setuid/setgid bits.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()
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
    let (near, size) = taken
        .get(seed as usize % taken.len().max(1))
        .copied()
        .unwrap_or((100_000, 65_536));
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
            assert!(other.is_some_and(|(o, _, _)| o == owner) && line >= 1);
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

    #[test]
    fn write_atomically_removes_temps_of_killed_writers() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("subuid");
        // pid 0 never names a running writer; our own pid does.
        let stale = dir.path().join(".subuid.lxc-idshift.0.3");
        let live = dir
            .path()
            .join(format!(".subuid.lxc-idshift.{}.99", std::process::id()));
        fs::write(&stale, "half").unwrap();
        fs::write(&live, "busy").unwrap();
        write_atomically(&target, "root:1000000:65536\n").unwrap();
        assert!(!stale.exists(), "a dead writer's temp file is removed");
        assert!(live.exists(), "a live writer's temp file is left alone");
        assert_eq!(fs::read_to_string(&target).unwrap(), "root:1000000:65536\n");
    }

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
        assert_eq!(ids.ranges_of("root"), vec![(100000, 65536)]);
        assert_eq!(ids.ranges_of("1000"), vec![(231072, 65536)]);
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
            Some(("lxcuser".to_string(), 165536, 65536))
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
        let taken = [(131072, 65536), (196608, 1)];
        assert_eq!(lowest_free(65536, 65536, 100000, &taken), Some(262144));
        assert_eq!(lowest_free(10, 0, 5, &[(0, 6)]), Some(6));
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

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_with_backup_keeps_the_old_file_as_shadow_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        fs::write(&path, "a:1:2\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(dir.path().join("subuid+"), "left by a killed writer").unwrap();
        write_with_backup(&path, Some("a:1:2\n"), "a:1:2\nroot:5:6\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a:1:2\nroot:5:6\n");
        let backup = dir.path().join("subuid-");
        assert_eq!(fs::read_to_string(&backup).unwrap(), "a:1:2\n");
        for file in [&path, &backup] {
            assert_eq!(fs::metadata(file).unwrap().mode() & 0o7777, 0o640);
        }
        assert_eq!(files_in(dir.path()), ["subuid", "subuid-"]);
        let new = dir.path().join("subgid");
        write_with_backup(&new, None, "b:1:2\n").unwrap();
        assert_eq!(fs::read_to_string(&new).unwrap(), "b:1:2\n");
        assert!(!dir.path().join("subgid-").exists(), "no backup of nothing");
    }

    #[test]
    fn changes_apply_to_the_file_as_it_is_now() {
        let grant = SubIdChange::Grant {
            first: 1000000,
            count: 65536,
        };
        let now = SubIds::parse("u:300000:10\n");
        let granted = grant.apply("root", &now).unwrap();
        assert_eq!(granted.to_text(), "u:300000:10\nroot:1000000:65536\n");
        assert_eq!(grant.apply("root", &granted).unwrap(), granted);
        let release = SubIdChange::Release {
            first: 1000000,
            count: 65536,
        };
        assert_eq!(release.apply("root", &granted).unwrap(), now);
        let taken = SubIds::parse("u:1000005:1\n");
        assert!(grant.apply("root", &taken).is_err());
    }

    #[test]
    fn write_atomically_keeps_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let is_root = rustix::process::geteuid().is_root();
        if is_root {
            std::os::unix::fs::chown(&path, Some(1234), Some(5678)).unwrap();
        }
        let before = fs::metadata(&path).unwrap();
        write_atomically(&path, "root:100000:65536\n").unwrap();
        let after = fs::metadata(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "root:100000:65536\n");
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_ne!(
            after.ino(),
            before.ino(),
            "replaced by rename, not rewritten"
        );
        assert_eq!(files_in(dir.path()), ["subuid"]);
    }

    #[test]
    fn write_atomically_creates_follows_links_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subgid");
        if rustix::process::geteuid().is_root() {
            write_atomically(&path, "a:1:2\n").unwrap();
            let meta = fs::metadata(&path).unwrap();
            assert_eq!(
                (meta.mode() & 0o7777, meta.uid(), meta.gid()),
                (0o644, 0, 0)
            );
        } else {
            fs::write(&path, "a:1:2\n").unwrap();
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("subgid", &link).unwrap();
        write_atomically(&link, "b:3:4\n").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&path).unwrap(), "b:3:4\n");
        assert_eq!(files_in(dir.path()), ["link", "subgid"]);
        let missing = dir.path().join("no-such-dir/subuid");
        let err = write_atomically(&missing, "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("no-such-dir/subuid"), "{err}");
    }
}
