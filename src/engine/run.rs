//! One shift of a tree: checks, then one parallel walk. Per batch of directory
//! entries, each inode's target is decided (`plan`, from its journal record or its
//! metadata); what a re-walk could not reconstruct is recorded, and the inodes whose
//! records must be on disk before they change wait for a group commit (when enough
//! wait, and at the end of the walk); all others change at once. A resumed run walks again, so
//! whatever changed since the interruption (a new capability, a new ACL) is
//! recorded like on a first run.

use super::hardlinks::SeenInodes;
use super::idmap::{Direction, IdMap};
use super::inode;
use super::journal::{
    self, FirstRun, Identity, Journal, JournalError, Line, Record, State, Writer,
};
use super::meta::{Meta, Shifted};
use super::report::{bump, Counters, PathError, Summary};
use super::safety::{self, Tree, TreeError};
use super::sys::{self, Inode, KernelPaths};
use super::walk::{self, DirNode, Visitor, WalkError};
use crate::fsutil::{failed, FileError};
use rustix::fd::AsFd;
use serde::Serialize;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Displayed as itself, but kept as the source: `--json` finds its path and errno.
    #[error("{0}")]
    File(#[from] FileError),
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
    /// The map it shifted with (the JSON report has its direction and counts).
    #[serde(skip)]
    pub map: IdMap,
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
    /// Which kernel interfaces did the work (old kernels take the fallbacks).
    pub kernel: KernelPaths,
    /// Why nothing was done, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Shifts the tree at `options.root`.
pub fn shift(options: &ShiftOptions, progress: &dyn Progress) -> Result<ShiftReport, RunError> {
    if !options.dry_run && !sys::is_root() {
        return Err(RunError::NotRoot);
    }
    let tree = safety::open_tree(&options.root)?;
    let journal_path = options
        .journal
        .clone()
        .unwrap_or_else(|| journal::default_path(&tree.path));
    let pool = walk::thread_pool(options.threads)
        .map_err(failed("start the worker threads for", &tree.path))?;
    let run = RunContext {
        tree: &tree,
        root: &tree.path,
        map: &options.map,
        direction: options.direction,
        pool: &pool,
        progress,
    };
    if options.dry_run {
        return run.dry_run(&journal_path);
    }
    tree.lock()?;
    let open = || Journal::open(&journal_path, &tree, &options.map, options.direction);
    let mut journal = open()?;
    if journal.state.back_at_start() {
        // The run that brought the tree back was cut before it put this aside.
        journal.archive()?;
        journal = open()?;
    } else if journal.state.untouched() && started_elsewhere(&journal, &options.map)? {
        // Left by a run that went the no-op way from the tree's start and was cut
        // before it wrote: it says nothing about the tree.
        journal.discard()?;
        journal = open()?;
    }
    run.journaled(journal)
}

/// Whether the archived journal of these maps, which brought the tree back to its
/// start, started in another direction than `journal` (a journal no run wrote to).
fn started_elsewhere(journal: &Journal, map: &IdMap) -> Result<bool, RunError> {
    let start = archived_state(&journal.path, map)?.and_then(|s| s.first_direction());
    Ok(start.is_some() && start != journal.state.first_direction())
}

/// The archived journal (`*.done`) beside `path`, when it holds runs with `map`.
fn archived_state(path: &Path, map: &IdMap) -> Result<Option<State>, RunError> {
    let archived = journal::archive_path(path);
    if !archived.exists() {
        return Ok(None);
    }
    let state = State::read(&archived)?;
    Ok((state.maps.as_ref() == Some(map)).then_some(state))
}

/// Opens the tree at `root` (with every refusal) and walks it once, read-only, with
/// the visitor `make` builds from the tree's canonical path; returns the visitor.
pub fn read_only_walk<V: Visitor>(
    root: &Path,
    threads: Option<usize>,
    make: impl FnOnce(PathBuf) -> V,
) -> Result<V, RunError> {
    let tree = safety::open_tree(root)?;
    let pool =
        walk::thread_pool(threads).map_err(failed("start the worker threads for", &tree.path))?;
    let visitor = make(tree.path.clone());
    let walk_failed = failed("walk", &tree.path);
    walk::walk(&pool, tree.dup_fd().map_err(walk_failed)?, &visitor).map_err(walk_failed)?;
    Ok(visitor)
}

/// What every phase of one run needs.
struct RunContext<'a> {
    tree: &'a Tree,
    root: &'a Path,
    map: &'a IdMap,
    direction: Direction,
    pool: &'a rayon::ThreadPool,
    progress: &'a dyn Progress,
}

impl<'a> RunContext<'a> {
    /// The walk starts from the root fd opened (and checked) once.
    fn walk<V: Visitor>(&self, visitor: &V) -> Result<(), RunError> {
        let walk_failed = failed("walk", self.root);
        let fd = self.tree.dup_fd().map_err(walk_failed)?;
        walk::walk(self.pool, fd, visitor).map_err(walk_failed)?;
        Ok(())
    }

    fn report(&self, counters: &Counters, seconds: f64) -> ShiftReport {
        ShiftReport {
            root: self.root.to_path_buf(),
            direction: self.direction,
            map: self.map.clone(),
            dry_run: false,
            resumed: false,
            journal: None,
            journal_archived: false,
            summary: counters.summary(seconds),
            error_paths: counters.errors(),
            mount_points: counters.mount_points(),
            kernel: sys::kernel_paths(),
            note: None,
        }
    }

    fn journaled(&self, journal: Journal) -> Result<ShiftReport, RunError> {
        if journal.state.untouched() {
            if let Some((note, keep)) = self.untouched_tree_note(&journal)? {
                let path = journal.path.clone();
                if !keep {
                    journal.discard()?;
                }
                return Ok(self.unchanged(path, &note));
            }
        }
        let started = Instant::now();
        let writer = journal.writer()?;
        let state = &journal.state;
        let resumed = state
            .unfinished_run(self.direction)
            .is_some_and(|r| r.writing);
        let history = self.history(state);
        self.start_writing(&journal, &writer, &history, resumed)?;
        let shift = ShiftWalk::new(self, history, Some(&writer));
        self.progress.phase("shifting", None);
        self.walk(&shift)?;
        shift.flush();
        self.progress.finish();
        shift.report_linked_from_outside();
        let counters = &shift.base.counters;
        let clean = counters.errors.load(Ordering::Relaxed) == 0;
        if clean {
            // "Done" must never reach the disk before the tree's own changes do.
            sys::sync_file_system(self.tree.fd.as_fd())
                .map_err(failed("sync the file system of", self.root))?;
            let summary = counters.summary(started.elapsed().as_secs_f64());
            writer.send(Line::Done { summary });
        }
        writer
            .finish()
            .map_err(|source| journal_io(&journal, source))?;
        let back_at_start = state.first_direction() == Some(self.direction.opposite());
        let journal_path = journal.path.clone();
        let journal_archived = clean && back_at_start;
        if journal_archived {
            journal.archive()?;
        }
        Ok(ShiftReport {
            resumed,
            journal: Some(journal_path),
            journal_archived,
            ..self.report(counters, started.elapsed().as_secs_f64())
        })
    }

    /// What the journal's earlier runs mean for this one.
    fn history<'s>(&self, state: &'s State) -> History<'s> {
        let untouched = match state.first_run() {
            Some(first) => Untouched::Before(first),
            // No run ever wrote: this one is the first, and finds everything as it was.
            None if state.untouched() => Untouched::All,
            None => Untouched::Unknown,
        };
        History {
            known: &state.records,
            validate_ctime: state.last_run_finished(),
            untouched,
        }
    }

    /// Notes durably, before the first write, that this run writes. The journal's
    /// first writing run also notes the ctime boundary that tells, after an
    /// interruption, the inodes it never reached from those it changed; it waits
    /// until the file system's clock has passed that boundary (a few milliseconds,
    /// up to a second where ctimes keep whole seconds only).
    fn start_writing(
        &self,
        journal: &Journal,
        writer: &Writer,
        history: &History,
        resumed: bool,
    ) -> Result<(), RunError> {
        let first = matches!(history.untouched, Untouched::All);
        if !resumed {
            writer.send(Line::Run {
                direction: self.direction,
                first,
                started: unix_now(),
            });
        }
        let whole_seconds = self.tree.stat.ctime.1 == 0;
        let untouched_before = first.then(|| sys::ctime_boundary(whole_seconds));
        writer.send(Line::Writing { untouched_before });
        writer.sync().map_err(|source| journal_io(journal, source))
    }

    /// Nothing is to be done when this journal never touched the tree and the run
    /// would only undo: either the interrupted runs it would undo, or a finished run
    /// that already returned the tree to its start (the archived journal says so).
    /// Walking anyway would take ids the tree held from the start for shifted ones.
    /// The note, and whether the journal stays: the one of interrupted runs does, so
    /// that the same undo, run again, again does nothing.
    fn untouched_tree_note(&self, journal: &Journal) -> Result<Option<(String, bool)>, RunError> {
        let first = journal.state.first_direction();
        if first.is_some_and(|d| d != self.direction) {
            let note = format!(
                "the interrupted run had not changed anything yet: nothing to undo. To run \
                 this direction anyway (the tree was shifted by something else), move its \
                 journal {} aside",
                journal.path.display()
            );
            return Ok(Some((note, true)));
        }
        let Some(state) = archived_state(&journal.path, self.map)? else {
            return Ok(None);
        };
        let last = state.runs.last();
        let same = last.is_some_and(|r| r.direction == self.direction && r.done.is_some());
        if !same {
            return Ok(None);
        }
        let archived = journal::archive_path(&journal.path);
        let note = format!(
            "a {} run with these maps already returned this tree to where it started \
             (journal {}); nothing to do. To shift it again anyway, move that file aside",
            self.direction,
            archived.display()
        );
        Ok(Some((note, false)))
    }

    fn unchanged(&self, journal: PathBuf, note: &str) -> ShiftReport {
        ShiftReport {
            journal: Some(journal),
            note: Some(note.to_string()),
            ..self.report(&Counters::default(), 0.0)
        }
    }

    /// The same walk, deciding everything and writing nothing: its predicted counts
    /// are the report.
    fn dry_run(&self, journal_path: &Path) -> Result<ShiftReport, RunError> {
        let started = Instant::now();
        let state = match journal_path.exists() {
            true => journal::State::read(journal_path)?,
            false => journal::State::default(),
        };
        let state = match state.back_at_start() {
            true => journal::State::default(),
            false => state,
        };
        let shift = ShiftWalk::new(self, self.history(&state), None);
        self.progress.phase("scanning", None);
        self.walk(&shift)?;
        self.progress.finish();
        shift.report_linked_from_outside();
        Ok(ShiftReport {
            dry_run: true,
            ..self.report(&shift.base.counters, started.elapsed().as_secs_f64())
        })
    }
}

fn journal_io(journal: &Journal, source: std::io::Error) -> RunError {
    FileError::new("write the journal", &journal.path, source).into()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The target of one inode. A record made by a run in the same direction gives the
/// source to shift; one made by a run in the other direction is undone exactly.
pub fn inode_target(
    record: Option<&Record>,
    current: &Meta,
    map: &IdMap,
    direction: Direction,
) -> Shifted {
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

/// What the journal's earlier runs tell this run.
struct History<'a> {
    known: &'a HashMap<u64, Record>,
    /// After a finished run the tree may have been used: a record whose inode
    /// changed since it was applied no longer describes it.
    validate_ctime: bool,
    untouched: Untouched,
}

/// Which inodes no run of the journal has touched yet, while none has finished.
///
/// The journal's first run must record the inodes that already hold ids where it
/// moves ids to (`has_target_ids`): afterwards, nothing else tells them from the
/// ones it moved there. It records each one when it reaches it, before it changes
/// it. Interrupted, it has not reached them all, so a later run must tell an
/// untouched inode from one the first run changed: the ctime does (see
/// [`State::first_run`]). Such an untouched inode is what the first run would have
/// found: a run in the first run's direction records it as the first would have;
/// one in the other direction (an undo) leaves it exactly as it is. Hardlinks need
/// nothing more: the ctime belongs to the inode, whichever name reaches it first.
enum Untouched {
    /// This run is the journal's first writing run: every inode is as it was.
    All,
    /// An earlier run started writing and none finished.
    Before(FirstRun),
    /// A run finished (its records are complete), or the journal comes from a
    /// version that recorded everything before writing.
    Unknown,
}

/// The record an inode is shifted with, and whether it is new.
enum Decision<'r> {
    /// No record: shift what the inode holds.
    Plain,
    /// A record of an earlier run that still describes this inode.
    Journaled(&'r Record),
    /// A record this run makes: journaled, and on disk before the inode changes.
    New(Record),
    /// An inode no run has touched, met by a run undoing the first: as it was.
    AsFound(Record),
}

impl Decision<'_> {
    fn record(&self) -> Option<&Record> {
        match self {
            Decision::Plain => None,
            Decision::Journaled(record) => Some(record),
            Decision::New(record) | Decision::AsFound(record) => Some(record),
        }
    }
}

/// What every visit shares: the map, the counters, hardlink dedupe and progress.
struct Base<'a> {
    root: &'a Path,
    map: &'a IdMap,
    direction: Direction,
    progress: &'a dyn Progress,
    counters: Counters,
    /// Hardlinked inodes, with the directory and name of each one's first name.
    seen: SeenInodes<(Arc<DirNode>, CString)>,
}

impl<'a> Base<'a> {
    fn path(&self, dir: &DirNode, name: &CStr) -> PathBuf {
        walk::display_path(self.root, &dir.entry_path(name))
    }

    /// Counts what a planned change does. An inode with problems (an xattr that
    /// does not parse) is reported and must be left alone: false.
    fn count(&self, path: impl Fn() -> PathBuf, shifted: &Shifted) -> bool {
        bump(&self.counters.unmapped, shifted.unmapped);
        for problem in &shifted.problems {
            let message = format!("{problem}; the inode was left as it is");
            self.counters.error(path(), message);
        }
        shifted.problems.is_empty()
    }
}

/// Inodes that wait for their records before one group commit applies them all:
/// few fsyncs (each one also commits the file system's metadata journal), few fds.
const GROUP_COMMIT: usize = 256;

/// How often (in inodes) the walk notes its progress in the journal.
const PROGRESS_EVERY: u64 = 1 << 16;

/// The one walk of a run: decides, records and applies; or, without a journal
/// writer (--dry-run), decides and counts.
struct ShiftWalk<'a> {
    base: Base<'a>,
    history: History<'a>,
    writer: Option<&'a Writer>,
    /// Whether a change to an untouched inode is preceded by a stamp of its ctime:
    /// where the file system could write the change without the ctime.
    stamp_untouched: bool,
    done: AtomicU64,
    /// Inodes whose new records must reach the disk before they change.
    waiting: Mutex<Vec<Pending>>,
}

/// An inode whose new record must be on disk before it changes.
struct Pending {
    path: PathBuf,
    inode: Inode,
    current: Meta,
    target: Meta,
}

impl<'a> ShiftWalk<'a> {
    fn new(run: &RunContext<'a>, history: History<'a>, writer: Option<&'a Writer>) -> Self {
        ShiftWalk {
            base: Base {
                root: run.root,
                map: run.map,
                direction: run.direction,
                progress: run.progress,
                counters: Counters::default(),
                seen: SeenInodes::default(),
            },
            history,
            writer,
            stamp_untouched: !sys::owner_and_ctime_land_together(run.tree.fd.as_fd()),
            done: AtomicU64::new(0),
            waiting: Mutex::default(),
        }
    }

    /// Counts the name; true when the inode is to be handled now: at its only
    /// name, or at the last of its hard links (only then is it known that none lies
    /// outside the tree).
    fn handle_now(&self, dir: &Arc<DirNode>, name: &CStr, inode: &Inode) -> bool {
        let first_name = || (dir.clone(), name.to_owned());
        let seen = self.base.seen.name_seen(&inode.stat, first_name);
        bump(&self.base.counters.hardlinks, !seen.first);
        bump(&self.base.counters.inodes_seen, seen.first);
        seen.last
    }

    /// Where an inode stands: untouched by every run of the journal (and which
    /// direction the first went), or not known to be.
    fn untouched(&self, stat: &sys::Stat) -> Option<Direction> {
        match self.history.untouched {
            Untouched::All => Some(self.base.direction),
            Untouched::Before(first) => {
                (stat.ctime < first.untouched_before).then_some(first.direction)
            }
            Untouched::Unknown => None,
        }
    }

    fn decide(&self, dir: &DirNode, name: &CStr, inode: &Inode, current: &Meta) -> Decision<'a> {
        let stat = &inode.stat;
        let (map, direction) = (self.base.map, self.base.direction);
        let record = |direction| self.new_record(dir, name, inode, current, direction);
        // Untouched by every run of the journal: as the first run found it (a record
        // of it, if any, says the same), so handled as the first run would.
        match self.untouched(stat) {
            Some(first) if first != direction => return Decision::AsFound(record(first)),
            Some(_) if current.has_target_ids(map, direction) => {
                return Decision::New(record(direction))
            }
            Some(_) => return self.decide_by_meta(stat, current, record),
            None => {}
        }
        let known = self.history.known.get(&stat.ino);
        if let Some(record) = self.valid_record(known, (dir, name), inode) {
            return Decision::Journaled(record);
        }
        if let (Some(writer), Some(_)) = (self.writer, known) {
            writer.send(Line::Forget { ino: stat.ino });
        }
        self.decide_by_meta(stat, current, record)
    }

    /// Without a journal record: one is made only where a chown destroys what a
    /// re-walk could not rebuild.
    fn decide_by_meta(
        &self,
        stat: &sys::Stat,
        current: &Meta,
        record: impl FnOnce(Direction) -> Record,
    ) -> Decision<'a> {
        match current.chown_destroys(stat.is_dir()) {
            true => Decision::New(record(self.base.direction)),
            false => Decision::Plain,
        }
    }

    /// The journal's record of this inode, if it still describes it. A record whose
    /// identity cannot be proven is never applied: the inode is shifted from what
    /// it holds now and reported, so that its mode and capabilities get a look.
    fn valid_record(
        &self,
        known: Option<&'a Record>,
        (dir, name): (&DirNode, &CStr),
        inode: &Inode,
    ) -> Option<&'a Record> {
        let record = known?;
        match record.matches(inode, false) {
            Identity::Same => {}
            Identity::Other => return None,
            Identity::Unproven => {
                let message = "its journal record cannot be proven to be this inode's (the \
                    file system keeps no birth time or generation for it, and it changed); \
                    shifted from what it holds now: check its mode and capabilities";
                self.base
                    .counters
                    .error(self.base.path(dir, name), message.to_string());
                return None;
            }
        }
        let ctime = inode.stat.ctime;
        let unchanged = record.applied_ctime.is_none_or(|c| c == ctime);
        (!self.history.validate_ctime || unchanged).then_some(record)
    }

    fn new_record(
        &self,
        dir: &DirNode,
        name: &CStr,
        inode: &Inode,
        source: &Meta,
        direction: Direction,
    ) -> Record {
        let stat = &inode.stat;
        Record {
            ino: stat.ino,
            btime: stat.btime,
            generation: stat.btime.is_none().then(|| inode.generation()).flatten(),
            fingerprint: stat
                .btime
                .is_none()
                .then(|| journal::fingerprint(inode))
                .flatten(),
            ctime: stat.ctime,
            direction,
            source: source.clone(),
            path: dir.entry_path(name).to_string_lossy().into_owned(),
            applied_ctime: None,
        }
    }

    /// Decides an inode's target; queues it when it must wait for its record to
    /// reach the disk, else applies it (or, in a dry run, counts it) at once.
    fn shift_inode(&self, dir: &DirNode, name: &CStr, inode: Inode) {
        let path = || self.base.path(dir, name);
        let current = match inode::read_meta(&inode) {
            Ok(meta) => meta,
            Err(e) => {
                self.base.counters.os_error(path(), e.operation, &e.error);
                return;
            }
        };
        let decision = self.decide(dir, name, &inode, &current);
        let shifted = inode_target(
            decision.record(),
            &current,
            self.base.map,
            self.base.direction,
        );
        if !self.base.count(path, &shifted) {
            return;
        }
        let Some(writer) = self.writer else {
            self.count_predicted(&inode, &current, &shifted.meta);
            return;
        };
        let target = shifted.meta;
        let journaled = match decision {
            Decision::New(record) => {
                writer.send(Line::Rec(record));
                if current != target {
                    let path = path();
                    return self.queue(Pending {
                        path,
                        inode,
                        current,
                        target,
                    });
                }
                true
            }
            Decision::Journaled(_) => true,
            Decision::Plain | Decision::AsFound(_) => false,
        };
        self.apply(&path, &inode, &current, &target, journaled);
    }

    /// Makes the inode its target; notes the ctime of a recorded one afterwards, so
    /// that a later run can tell whether it was changed since. The path is built
    /// only for a report: most inodes never need it.
    fn apply(
        &self,
        path: &dyn Fn() -> PathBuf,
        inode: &Inode,
        current: &Meta,
        target: &Meta,
        recorded: bool,
    ) {
        // A change to an inode no run has touched yet must never reach the disk
        // without its new ctime, which is what tells it from an untouched one.
        let stamp_first = self.stamp_untouched && self.untouched(&inode.stat).is_some();
        let applied = match inode::apply(inode, current, target, stamp_first) {
            Ok(applied) => applied,
            Err(e) => return self.base.counters.os_error(path(), e.operation, &e.error),
        };
        let c = &self.base.counters;
        bump(&c.changed, applied.changed);
        bump(&c.acls, applied.acls);
        bump(&c.capabilities, applied.caps);
        bump(&c.setid_restored, applied.setid_restored);
        let Some(writer) = self.writer.filter(|_| recorded) else {
            return;
        };
        if let Ok(after) = inode.restat() {
            writer.send(Line::Applied {
                ino: inode.stat.ino,
                ctime: after.ctime,
            });
        }
    }

    fn count_predicted(&self, inode: &Inode, current: &Meta, target: &Meta) {
        let stat = &inode.stat;
        let chowned = (current.uid, current.gid) != (target.uid, target.gid);
        let c = &self.base.counters;
        bump(&c.changed, current != target);
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
    }

    /// An inode with names outside the tree (hard links made on the host, such as a
    /// deduplication across containers) was left alone: shifting it would change the
    /// files outside the tree too.
    fn report_linked_from_outside(&self) {
        for outside in self.base.seen.linked_from_outside() {
            let (links, seen) = (outside.links, outside.seen);
            let (dir, name) = &outside.first;
            let path = self.base.path(dir, name);
            let message = format!(
                "has {links} hard links but only {seen} inside the tree: the others are \
                 outside it, so shifting it would change those files too; it was left as \
                 it is. Give this name its own copy (cp -a FILE FILE.new && mv FILE.new \
                 FILE), then run the same command again"
            );
            self.base.counters.error(path, message);
        }
    }

    /// Queues an inode that waits for its record; the one that fills the queue
    /// commits it for everybody.
    fn queue(&self, pending: Pending) {
        let full = {
            let mut waiting = self.waiting.lock().expect("waiting lock");
            waiting.push(pending);
            match waiting.len() >= GROUP_COMMIT {
                true => std::mem::take(&mut *waiting),
                false => Vec::new(),
            }
        };
        self.apply_pending(full);
    }

    /// Applies what still waits once the walk is over.
    fn flush(&self) {
        let rest = std::mem::take(&mut *self.waiting.lock().expect("waiting lock"));
        self.apply_pending(rest);
    }

    /// The records on disk (one group commit), then the inodes that waited for them.
    fn apply_pending(&self, pending: Vec<Pending>) {
        let Some(writer) = self.writer.filter(|_| !pending.is_empty()) else {
            return;
        };
        if let Err(e) = writer.sync() {
            for p in pending {
                let operation = "not changed: writing its journal record";
                self.base.counters.os_error(p.path, operation, &e);
            }
            return;
        }
        for p in pending {
            let path = || p.path.clone();
            self.apply(&path, &p.inode, &p.current, &p.target, true);
        }
    }
}

impl Visitor for ShiftWalk<'_> {
    /// A dry run only reads.
    fn needs_handles(&self) -> bool {
        self.writer.is_some()
    }

    fn visit(&self, dir: &Arc<DirNode>, name: &CStr, inode: Inode) {
        if self.handle_now(dir, name, &inode) {
            self.shift_inode(dir, name, inode);
        }
    }

    fn batch_done(&self, entries: usize) {
        self.base.progress.advance(entries as u64);
        let before = self.done.fetch_add(entries as u64, Ordering::Relaxed);
        if let Some(writer) = self.writer {
            if (before + entries as u64) / PROGRESS_EVERY != before / PROGRESS_EVERY {
                writer.send(Line::Progress {
                    inodes: before + entries as u64,
                });
            }
        }
    }

    fn walk_error(&self, error: WalkError) {
        self.base.counters.walk_error(self.base.root, error);
    }

    fn mount_point(&self, path: PathBuf) {
        self.base.counters.mount_point(self.base.root, &path);
    }
}
