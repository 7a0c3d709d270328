//! One shift of a tree: checks, then a read-only scan that records durably what a
//! chown would destroy, then the parallel apply walk. Both walks share one
//! mechanism: `plan` decides each inode's target from its record or its stat.

use super::hardlinks::SeenInodes;
use super::idmap::{Direction, IdMap};
use super::inode::{self, InodeError};
use super::journal::{self, Journal, JournalError, Line, Record, Writer};
use super::meta::{Meta, Shifted};
use super::report::{bump, Counters, PathError, Summary};
use super::safety::{self, TreeError};
use super::sys::{self, Stat};
use super::walk::{self, DirNode, Visitor};
use rustix::fd::BorrowedFd;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("changing owners needs root: run as root (or use --dry-run)")]
    NotRoot,
}

/// Told about the walk's progress; the binary draws a bar with it.
pub trait Progress: Sync {
    fn phase(&self, _name: &str, _total: Option<u64>) {}
    fn advance(&self, _inodes: u64) {}
    fn finish(&self) {}
}

/// No progress display.
pub struct Quiet;
impl Progress for Quiet {}

pub struct ShiftOptions {
    pub root: PathBuf,
    pub map: IdMap,
    pub direction: Direction,
    pub dry_run: bool,
    pub threads: Option<usize>,
    pub journal: Option<PathBuf>,
}

/// What a shift did (or, with --dry-run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct ShiftReport {
    pub root: PathBuf,
    pub direction: Direction,
    pub dry_run: bool,
    /// The run continued an interrupted one (its scan was already recorded).
    pub resumed: bool,
    pub journal: Option<PathBuf>,
    /// The tree is back where its journal started, and the journal was put aside.
    pub journal_archived: bool,
    #[serde(flatten)]
    pub summary: Summary,
    pub error_paths: Vec<PathError>,
    pub mount_points: Vec<PathBuf>,
    /// Why nothing was done, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Shifts the tree at `options.root`.
pub fn shift(options: &ShiftOptions, progress: &dyn Progress) -> Result<ShiftReport, RunError> {
    if !options.dry_run && !sys::is_root() {
        return Err(RunError::NotRoot);
    }
    let root = safety::check_tree(&options.root)?;
    let journal_path = options
        .journal
        .clone()
        .unwrap_or_else(|| journal::default_path(&root));
    let pool = walk::thread_pool(options.threads).map_err(|source| RunError::Io {
        path: root.clone(),
        source,
    })?;
    let run = RunContext {
        root: &root,
        map: &options.map,
        direction: options.direction,
        pool: &pool,
        progress,
    };
    if options.dry_run {
        return run.dry_run(&journal_path);
    }
    let journal = Journal::open(&journal_path, &root, &options.map)?;
    run.journaled(journal)
}

/// What every phase of one run needs.
struct RunContext<'a> {
    root: &'a Path,
    map: &'a IdMap,
    direction: Direction,
    pool: &'a rayon::ThreadPool,
    progress: &'a dyn Progress,
}

impl<'a> RunContext<'a> {
    fn io_error(&self, source: std::io::Error) -> RunError {
        RunError::Io {
            path: self.root.to_path_buf(),
            source,
        }
    }

    fn walk<V: Visitor>(&self, visitor: &V) -> Result<(), RunError> {
        let fd = sys::open_dir_path(self.root).map_err(|e| self.io_error(e))?;
        walk::walk(self.pool, fd, visitor).map_err(|e| self.io_error(e))
    }

    fn journaled(&self, journal: Journal) -> Result<ShiftReport, RunError> {
        if journal.state.untouched() {
            if let Some(note) = self.untouched_tree_note(&journal)? {
                let path = journal.path.clone();
                journal.discard()?;
                return Ok(self.unchanged(path, &note));
            }
        }
        let started = Instant::now();
        let writer = journal.writer()?;
        let resume = journal
            .state
            .unfinished_run(self.direction)
            .and_then(|r| r.scanned);
        let (plan, total) = match resume {
            Some(total) => (Plan::recorded(&journal.state), total),
            None => self.durable_scan(&journal, &writer)?,
        };
        let apply = Apply::new(self, &plan, &writer);
        self.progress.phase("shifting", Some(total));
        self.walk(&apply)?;
        self.progress.finish();
        let counters = &apply.base.counters;
        let summary = counters.summary(started.elapsed().as_secs_f64());
        let clean = summary.errors == 0;
        if clean {
            // "Done" must never reach the disk before the tree's own changes do.
            sys::sync_file_system(self.root).map_err(|e| self.io_error(e))?;
            writer.send(Line::Done {
                summary: summary.clone(),
            });
        }
        writer
            .finish()
            .map_err(|source| journal_io(&journal, source))?;
        let back_at_start =
            journal.state.runs.first().map(|r| r.direction) == Some(self.direction.opposite());
        let journal_path = journal.path.clone();
        let journal_archived = clean && back_at_start;
        if journal_archived {
            journal.archive()?;
        }
        Ok(ShiftReport {
            root: self.root.to_path_buf(),
            direction: self.direction,
            dry_run: false,
            resumed: resume.is_some(),
            journal: Some(journal_path),
            journal_archived,
            summary,
            error_paths: counters.errors(),
            mount_points: counters.mount_points(),
            note: None,
        })
    }

    /// A new run's scan, made durable before the apply walk may write anything.
    fn durable_scan(&self, journal: &Journal, writer: &Writer) -> Result<(Plan, u64), RunError> {
        let state = &journal.state;
        let first = !state.runs.iter().any(|r| r.scanned.is_some());
        writer.send(Line::Run {
            direction: self.direction,
            first,
            started: unix_now(),
        });
        let scan = self.scan(
            &state.records,
            first,
            state.last_run_finished(),
            Some(writer),
        )?;
        let xattr_inodes: Vec<u64> = scan.plan.xattr_inodes.iter().copied().collect();
        for chunk in xattr_inodes.chunks(4096) {
            writer.send(Line::Xattrs {
                inos: chunk.to_vec(),
            });
        }
        // The records on disk first, then the mark that the scan is complete.
        writer
            .sync()
            .map_err(|source| journal_io(journal, source))?;
        writer.send(Line::Scanned {
            inodes: scan.inodes,
        });
        writer
            .sync()
            .map_err(|source| journal_io(journal, source))?;
        Ok((scan.plan, scan.inodes))
    }

    /// Nothing is to be done when this journal never touched the tree and the run
    /// would only undo: either the interrupted runs it would undo, or a finished run
    /// that already returned the tree to its start (the archived journal says so).
    /// Walking anyway would take ids the tree held from the start for shifted ones.
    fn untouched_tree_note(&self, journal: &Journal) -> Result<Option<String>, RunError> {
        if journal
            .state
            .runs
            .first()
            .is_some_and(|r| r.direction != self.direction)
        {
            return Ok(Some(
                "the interrupted run had not changed anything yet: nothing to undo".into(),
            ));
        }
        let archived = journal::archive_path(&journal.path);
        if !archived.exists() {
            return Ok(None);
        }
        let state = journal::State::read(&archived)?;
        let last = state.runs.last();
        let same = last.is_some_and(|r| r.direction == self.direction && r.done.is_some());
        if !same || state.maps.as_ref() != Some(self.map) {
            return Ok(None);
        }
        Ok(Some(format!(
            "a {} run with these maps already returned this tree to where it started \
             (journal {}); nothing to do. To shift it again anyway, move that file aside",
            self.direction,
            archived.display()
        )))
    }

    fn unchanged(&self, journal: PathBuf, note: &str) -> ShiftReport {
        ShiftReport {
            root: self.root.to_path_buf(),
            direction: self.direction,
            dry_run: false,
            resumed: false,
            journal: Some(journal),
            journal_archived: false,
            summary: Summary::default(),
            error_paths: Vec::new(),
            mount_points: Vec::new(),
            note: Some(note.to_string()),
        }
    }

    /// A scan that writes nothing: its predicted counts are the report.
    fn dry_run(&self, journal_path: &Path) -> Result<ShiftReport, RunError> {
        let started = Instant::now();
        let state = match journal_path.exists() {
            true => journal::State::read(journal_path)?,
            false => journal::State::default(),
        };
        let first = !state.runs.iter().any(|r| r.scanned.is_some());
        let scan = self.scan(&state.records, first, state.last_run_finished(), None)?;
        Ok(ShiftReport {
            root: self.root.to_path_buf(),
            direction: self.direction,
            dry_run: true,
            resumed: false,
            journal: None,
            journal_archived: false,
            summary: scan.counters.summary(started.elapsed().as_secs_f64()),
            error_paths: scan.counters.errors(),
            mount_points: scan.counters.mount_points(),
            note: None,
        })
    }

    fn scan(
        &self,
        known: &HashMap<u64, Record>,
        first: bool,
        validate_ctime: bool,
        writer: Option<&Writer>,
    ) -> Result<ScanResult, RunError> {
        self.progress.phase("scanning", None);
        let scan = Scan {
            base: Base::new(self),
            known,
            first,
            validate_ctime,
            writer,
            kept: Mutex::new(Plan::default()),
        };
        self.walk(&scan)?;
        self.progress.finish();
        let inodes = scan.base.counters.inodes_seen.load(Ordering::Relaxed)
            + scan.base.counters.hardlinks.load(Ordering::Relaxed);
        Ok(ScanResult {
            inodes,
            plan: scan.kept.into_inner().expect("plan lock"),
            counters: scan.base.counters,
        })
    }
}

fn journal_io(journal: &Journal, source: std::io::Error) -> RunError {
    RunError::Io {
        path: journal.path.clone(),
        source,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the apply walk needs from the scan.
#[derive(Debug, Default)]
struct Plan {
    records: HashMap<u64, Record>,
    /// Inodes with ACLs or capabilities that need no record: read their xattrs.
    xattr_inodes: HashSet<u64>,
}

impl Plan {
    /// The plan of an interrupted run, as its journal recorded it.
    fn recorded(state: &journal::State) -> Plan {
        Plan {
            records: state.records.clone(),
            xattr_inodes: state.xattr_inodes.clone(),
        }
    }
}

struct ScanResult {
    inodes: u64,
    plan: Plan,
    counters: Counters,
}

/// The target of one inode. A record made by a run in the same direction gives the
/// source to shift; one made by a run in the other direction is undone exactly.
pub fn plan(record: Option<&Record>, current: &Meta, map: &IdMap, direction: Direction) -> Shifted {
    match record {
        Some(r) if r.direction == direction => r.source.shifted(map, direction),
        Some(r) => Shifted {
            meta: r.source.clone(),
            unmapped: current.shifted(map, direction).unmapped,
            problems: Vec::new(),
        },
        None => current.shifted(map, direction),
    }
}

/// What both walks share: the map, the counters, hardlink dedupe and progress.
struct Base<'a> {
    root: &'a Path,
    map: &'a IdMap,
    direction: Direction,
    progress: &'a dyn Progress,
    counters: Counters,
    seen: SeenInodes,
}

impl<'a> Base<'a> {
    fn new(run: &RunContext<'a>) -> Base<'a> {
        Base {
            root: run.root,
            map: run.map,
            direction: run.direction,
            progress: run.progress,
            counters: Counters::default(),
            seen: SeenInodes::default(),
        }
    }

    /// Counts the inode; false for a further name of an inode already handled.
    fn first_visit(&self, stat: &Stat) -> bool {
        let first = self.seen.first_visit(stat);
        bump(&self.counters.hardlinks, !first);
        bump(&self.counters.inodes_seen, first);
        first
    }

    fn path(&self, dir: &DirNode, name: &CStr) -> PathBuf {
        walk::display_path(self.root, &dir.entry_path(name))
    }

    fn inode_error(&self, dir: &DirNode, name: &CStr, e: InodeError) {
        self.counters.error(self.path(dir, name), e.to_string());
    }

    /// Counts what a planned change does; `problems` become errors.
    fn count(&self, dir: &DirNode, name: &CStr, shifted: &Shifted) {
        bump(&self.counters.unmapped, shifted.unmapped);
        for problem in &shifted.problems {
            self.counters.error(self.path(dir, name), problem.clone());
        }
    }
}

/// The read-only first walk: records what a re-walk could not reconstruct.
struct Scan<'a> {
    base: Base<'a>,
    known: &'a HashMap<u64, Record>,
    /// The journal's first run also records inodes already holding target ids.
    first: bool,
    /// After a finished run the tree may have been used: a record whose inode
    /// changed since it was applied no longer describes it.
    validate_ctime: bool,
    writer: Option<&'a Writer>,
    /// The records this run relies on (still valid ones and new ones), and the
    /// inodes whose xattrs the apply walk must read.
    kept: Mutex<Plan>,
}

impl Scan<'_> {
    fn valid_record(&self, stat: &Stat) -> Option<&Record> {
        let record = self.known.get(&stat.ino)?;
        let same_inode = record.btime == stat.btime;
        let unchanged =
            !self.validate_ctime || record.applied_ctime.is_none_or(|c| c == stat.ctime);
        if same_inode && unchanged {
            return Some(record);
        }
        if let Some(writer) = self.writer {
            writer.send(Line::Forget { ino: stat.ino });
        }
        None
    }

    /// What a re-walk could not reconstruct: what a chown destroys, and on the
    /// journal's first run, ids already where the shift moves ids to. ACL entries
    /// otherwise shift idempotently, so ACLs alone need no record.
    fn needs_record(&self, meta: &Meta, stat: &Stat) -> bool {
        (!stat.is_symlink() && meta.chown_destroys(stat.is_dir()))
            || (self.first && meta.has_target_ids(self.base.map, self.base.direction))
    }

    fn keep(&self, ino: u64, record: Option<Record>, has_xattrs: bool) {
        if record.is_none() && !has_xattrs {
            return;
        }
        let mut plan = self.kept.lock().expect("plan lock");
        match record {
            Some(record) => drop(plan.records.insert(ino, record)),
            None => drop(plan.xattr_inodes.insert(ino)),
        }
    }
}

impl Visitor for Scan<'_> {
    fn visit(&self, dir: &DirNode, fd: BorrowedFd<'_>, name: &CStr, stat: &Stat) {
        let base = &self.base;
        if !base.first_visit(stat) {
            return;
        }
        let current = match inode::read_meta(fd, name, stat) {
            Ok(meta) => meta,
            Err(e) => return base.inode_error(dir, name, e),
        };
        let record = match self.valid_record(stat) {
            Some(record) => Some(record.clone()),
            None if self.needs_record(&current, stat) => {
                let record = Record {
                    ino: stat.ino,
                    btime: stat.btime,
                    direction: base.direction,
                    source: current.clone(),
                    path: dir.entry_path(name).to_string_lossy().into_owned(),
                    applied_ctime: None,
                };
                if let Some(writer) = self.writer {
                    writer.send(Line::Rec(record.clone()));
                }
                Some(record)
            }
            None => None,
        };
        let shifted = plan(record.as_ref(), &current, base.map, base.direction);
        base.count(dir, name, &shifted);
        let target = &shifted.meta;
        let chowned = (current.uid, current.gid) != (target.uid, target.gid);
        let c = &base.counters;
        bump(&c.changed, current != *target);
        bump(
            &c.acls,
            (&current.acl_access, &current.acl_default)
                != (&target.acl_access, &target.acl_default),
        );
        bump(
            &c.capabilities,
            current.caps != target.caps || (chowned && target.caps.is_some() && !stat.is_dir()),
        );
        bump(
            &c.setid_restored,
            chowned && !stat.is_dir() && !stat.is_symlink() && target.perm & 0o6000 != 0,
        );
        self.keep(stat.ino, record, current.has_id_xattrs());
    }

    fn report(&self) -> (&Path, &Counters) {
        (self.base.root, &self.base.counters)
    }

    fn batch_done(&self, entries: usize) {
        self.base.progress.advance(entries as u64);
    }
}

/// How often (in inodes) the apply walk notes its progress in the journal.
const PROGRESS_EVERY: u64 = 1 << 16;

/// The second walk: makes every inode its planned target.
struct Apply<'a> {
    base: Base<'a>,
    plan: &'a Plan,
    writer: &'a Writer,
    done: AtomicU64,
}

impl<'a> Apply<'a> {
    fn new(run: &RunContext<'a>, plan: &'a Plan, writer: &'a Writer) -> Apply<'a> {
        Apply {
            base: Base::new(run),
            plan,
            writer,
            done: AtomicU64::new(0),
        }
    }

    fn shift_inode(
        &self,
        dir: &DirNode,
        fd: BorrowedFd<'_>,
        name: &CStr,
        stat: &Stat,
    ) -> Result<(), InodeError> {
        let base = &self.base;
        let record = self
            .plan
            .records
            .get(&stat.ino)
            .filter(|r| r.btime == stat.btime);
        // Other inodes had no id-bearing xattrs at the scan: the stat says it all.
        let current = match record.is_some() || self.plan.xattr_inodes.contains(&stat.ino) {
            true => inode::read_meta(fd, name, stat)?,
            false => inode::meta_from_stat(stat),
        };
        let shifted = plan(record, &current, base.map, base.direction);
        base.count(dir, name, &shifted);
        let applied = inode::apply(fd, name, stat, &current, &shifted.meta)?;
        let c = &base.counters;
        bump(&c.changed, applied.changed);
        bump(&c.acls, applied.acls);
        bump(&c.capabilities, applied.caps);
        bump(&c.setid_restored, applied.setid_restored);
        if record.is_some() {
            if let Ok(after) = sys::stat_at(fd, name) {
                self.writer.send(Line::Applied {
                    ino: stat.ino,
                    ctime: after.ctime,
                });
            }
        }
        Ok(())
    }
}

impl Visitor for Apply<'_> {
    fn visit(&self, dir: &DirNode, fd: BorrowedFd<'_>, name: &CStr, stat: &Stat) {
        if !self.base.first_visit(stat) {
            return;
        }
        if let Err(e) = self.shift_inode(dir, fd, name, stat) {
            self.base.inode_error(dir, name, e);
        }
    }

    fn report(&self) -> (&Path, &Counters) {
        (self.base.root, &self.base.counters)
    }

    fn batch_done(&self, entries: usize) {
        self.base.progress.advance(entries as u64);
        let before = self.done.fetch_add(entries as u64, Ordering::Relaxed);
        if (before + entries as u64) / PROGRESS_EVERY != before / PROGRESS_EVERY {
            self.writer.send(Line::Progress {
                inodes: before + entries as u64,
            });
        }
    }
}
