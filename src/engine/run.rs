//! One shift of a tree: checks, then a read-only scan that records durably what a
//! chown would destroy, then the parallel apply walk. Both walks share one
//! mechanism: `plan` decides each inode's target from its record or its metadata.
//! A resumed run scans again too, so whatever changed since the interrupted scan
//! (a new capability, a new ACL) is recorded like on a first run.

use super::hardlinks::SeenInodes;
use super::idmap::{Direction, IdMap};
use super::inode::{self, InodeError};
use super::journal::{self, Identity, Journal, JournalError, Line, Record, Writer};
use super::meta::{Meta, Shifted};
use super::report::{bump, Counters, PathError, Summary};
use super::safety::{self, Tree, TreeError};
use super::sys::{self, Inode, KernelPaths};
use super::walk::{self, DirNode, Visitor};
use rustix::fd::AsFd;
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
    let pool = walk::thread_pool(options.threads).map_err(|source| RunError::Io {
        path: tree.path.clone(),
        source,
    })?;
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
    let journal = Journal::open(&journal_path, &tree, &options.map)?;
    run.journaled(journal)
}

/// Opens the tree at `root` (with every refusal) and walks it once, read-only, with
/// the visitor `make` builds from the tree's canonical path; returns the visitor.
pub fn read_only_walk<V: Visitor>(
    root: &Path,
    threads: Option<usize>,
    make: impl FnOnce(PathBuf) -> V,
) -> Result<V, RunError> {
    let tree = safety::open_tree(root)?;
    let io = |source| RunError::Io {
        path: tree.path.clone(),
        source,
    };
    let pool = walk::thread_pool(threads).map_err(io)?;
    let visitor = make(tree.path.clone());
    walk::walk(&pool, tree.dup_fd().map_err(io)?, &visitor).map_err(io)?;
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
    fn io_error(&self, source: std::io::Error) -> RunError {
        RunError::Io {
            path: self.root.to_path_buf(),
            source,
        }
    }

    /// Every phase walks from the root fd opened (and checked) once.
    fn walk<V: Visitor>(&self, visitor: &V) -> Result<(), RunError> {
        let fd = self.tree.dup_fd().map_err(|e| self.io_error(e))?;
        walk::walk(self.pool, fd, visitor).map_err(|e| self.io_error(e))
    }

    fn report(&self, counters: &Counters, seconds: f64) -> ShiftReport {
        ShiftReport {
            root: self.root.to_path_buf(),
            direction: self.direction,
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
            if let Some(note) = self.untouched_tree_note(&journal)? {
                let path = journal.path.clone();
                journal.discard()?;
                return Ok(self.unchanged(path, &note));
            }
        }
        let started = Instant::now();
        let writer = journal.writer()?;
        let resumed = journal
            .state
            .unfinished_run(self.direction)
            .is_some_and(|r| r.scanned.is_some());
        let (plan, total) = self.durable_scan(&journal, &writer, resumed)?;
        let apply = Apply::new(self, &plan, &writer);
        self.progress.phase("shifting", Some(total));
        self.walk(&apply)?;
        self.progress.finish();
        let counters = &apply.base.counters;
        counters.absorb_errors(&plan.scan_errors);
        let clean = counters.errors.load(Ordering::Relaxed) == 0;
        if clean {
            // "Done" must never reach the disk before the tree's own changes do.
            sys::sync_file_system(self.tree.fd.as_fd()).map_err(|e| self.io_error(e))?;
            let summary = counters.summary(started.elapsed().as_secs_f64());
            writer.send(Line::Done { summary });
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
            resumed,
            journal: Some(journal_path),
            journal_archived,
            ..self.report(counters, started.elapsed().as_secs_f64())
        })
    }

    /// A run's scan, made durable before the apply walk may write anything. A new
    /// run starts a run line; a resumed one adds to its records (what changed since
    /// its first scan), never taking ids it already shifted for original ones.
    fn durable_scan(
        &self,
        journal: &Journal,
        writer: &Writer,
        resumed: bool,
    ) -> Result<(Plan, u64), RunError> {
        let state = &journal.state;
        let first = !resumed && !state.runs.iter().any(|r| r.scanned.is_some());
        if !resumed {
            writer.send(Line::Run {
                direction: self.direction,
                first,
                started: unix_now(),
            });
        }
        let scan = self.scan(
            &state.records,
            first,
            state.last_run_finished(),
            Some(writer),
        )?;
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
            journal: Some(journal),
            note: Some(note.to_string()),
            ..self.report(&Counters::default(), 0.0)
        }
    }

    /// A scan that writes nothing: its predicted counts are the report.
    fn dry_run(&self, journal_path: &Path) -> Result<ShiftReport, RunError> {
        let started = Instant::now();
        let state = match journal_path.exists() {
            true => journal::State::read(journal_path)?,
            false => journal::State::default(),
        };
        let resumed = state
            .unfinished_run(self.direction)
            .is_some_and(|r| r.scanned.is_some());
        let first = !resumed && !state.runs.iter().any(|r| r.scanned.is_some());
        let scan = self.scan(&state.records, first, state.last_run_finished(), None)?;
        Ok(ShiftReport {
            dry_run: true,
            ..self.report(&scan.counters, started.elapsed().as_secs_f64())
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
            linked: Mutex::default(),
        };
        self.walk(&scan)?;
        self.progress.finish();
        scan.fail_linked_from_outside();
        let inodes = scan.base.counters.inodes_seen.load(Ordering::Relaxed)
            + scan.base.counters.hardlinks.load(Ordering::Relaxed);
        let mut plan = scan.kept.into_inner().expect("plan lock");
        plan.scan_errors = scan.base.counters.errors();
        Ok(ScanResult {
            inodes,
            plan,
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
    /// Inodes whose ACLs or capability the scan found: the apply walk reads the
    /// xattrs of these (and of recorded ones) only; the others shift from their stat.
    /// A resumed run scans again, so what was added since an interruption is listed.
    xattr_inodes: HashSet<u64>,
    /// Inodes the scan could not read or understand (an unreadable or unparseable
    /// ACL or capability): the apply walk leaves them exactly as they are.
    failed: HashSet<u64>,
    /// The scan's errors, reported with the apply walk's.
    scan_errors: Vec<PathError>,
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
    fn first_visit(&self, inode: &Inode) -> bool {
        let first = self.seen.first_visit(&inode.stat);
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

    /// Counts what a planned change does. An inode with problems (an xattr that
    /// does not parse) is reported and must be left alone: false.
    fn count(&self, dir: &DirNode, name: &CStr, shifted: &Shifted) -> bool {
        bump(&self.counters.unmapped, shifted.unmapped);
        for problem in &shifted.problems {
            let message = format!("{problem}; the inode was left as it is");
            self.counters.error(self.path(dir, name), message);
        }
        shifted.problems.is_empty()
    }

    /// The record that belongs to this inode, if any. A record whose identity cannot
    /// be proven is never applied: the inode is shifted from what it holds now and
    /// reported, so that its mode and capabilities get a look.
    fn matching<'r>(
        &self,
        record: Option<&'r Record>,
        fresh: bool,
        (dir, name): (&DirNode, &CStr),
        inode: &Inode,
    ) -> Option<&'r Record> {
        let record = record?;
        match record.matches(inode, fresh) {
            Identity::Same => Some(record),
            Identity::Other => None,
            Identity::Unproven => {
                let message = "its journal record cannot be proven to be this inode's (the \
                    file system keeps no birth time or generation for it, and it changed); \
                    shifted from what it holds now: check its mode and capabilities";
                self.counters
                    .error(self.path(dir, name), message.to_string());
                None
            }
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
    /// inodes the apply walk must leave alone.
    kept: Mutex<Plan>,
    /// The first path of each hardlinked inode, to name it in a report.
    linked: Mutex<HashMap<u64, PathBuf>>,
}

impl Scan<'_> {
    fn valid_record(&self, dir: &DirNode, name: &CStr, inode: &Inode) -> Option<&Record> {
        let stat = &inode.stat;
        let known = self.known.get(&stat.ino);
        let record = self.base.matching(known, false, (dir, name), inode);
        let unchanged = !self.validate_ctime
            || record.is_some_and(|r| r.applied_ctime.is_none_or(|c| c == stat.ctime));
        if record.is_some() && unchanged {
            return record;
        }
        if let (Some(writer), Some(_)) = (self.writer, known) {
            writer.send(Line::Forget { ino: stat.ino });
        }
        None
    }

    /// What a re-walk could not reconstruct: what a chown destroys (setuid/setgid,
    /// a capability, on symlinks too), and on the journal's first run, ids already
    /// where the shift moves ids to. ACL entries shift idempotently: no record.
    fn needs_record(&self, meta: &Meta, inode: &Inode) -> bool {
        meta.chown_destroys(inode.stat.is_dir())
            || (self.first && meta.has_target_ids(self.base.map, self.base.direction))
    }

    fn new_record(&self, dir: &DirNode, name: &CStr, inode: &Inode, source: &Meta) -> Record {
        let stat = &inode.stat;
        Record {
            ino: stat.ino,
            btime: stat.btime,
            generation: stat.btime.is_none().then(|| inode.generation()).flatten(),
            ctime: stat.ctime,
            direction: self.base.direction,
            source: source.clone(),
            path: dir.entry_path(name).to_string_lossy().into_owned(),
            applied_ctime: None,
        }
    }

    /// An inode with names outside the tree (hard links made on the host, such as a
    /// deduplication across containers) is left alone: shifting it would change the
    /// files outside the tree too.
    fn fail_linked_from_outside(&self) {
        let linked = self.linked.lock().expect("links lock");
        let mut kept = self.kept.lock().expect("plan lock");
        for (ino, links, seen) in self.base.seen.linked_from_outside() {
            kept.failed.insert(ino);
            let path = linked.get(&ino).cloned().unwrap_or_default();
            let message = format!(
                "has {links} hard links but only {seen} inside the tree: the others are \
                 outside it, so shifting it would change those files too; it was left as \
                 it is. Give this name its own copy (cp -a FILE FILE.new && mv FILE.new \
                 FILE), then run the same command again"
            );
            self.base.counters.error(path, message);
        }
    }

    fn fail(&self, inode: &Inode) {
        self.kept
            .lock()
            .expect("plan lock")
            .failed
            .insert(inode.stat.ino);
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
}

impl Visitor for Scan<'_> {
    fn visit(&self, dir: &DirNode, dir_fd: BorrowedFd<'_>, name: &CStr, inode: &Inode) {
        let base = &self.base;
        if !base.first_visit(inode) {
            return;
        }
        if inode.stat.nlink > 1 && !inode.stat.is_dir() {
            let path = base.path(dir, name);
            self.linked
                .lock()
                .expect("links lock")
                .insert(inode.stat.ino, path);
        }
        let current = match inode::read_meta(dir_fd, name, inode) {
            Ok(meta) => meta,
            Err(e) => {
                self.fail(inode);
                return base.inode_error(dir, name, e);
            }
        };
        let record = match self.valid_record(dir, name, inode) {
            Some(record) => Some(record.clone()),
            None if self.needs_record(&current, inode) => {
                let record = self.new_record(dir, name, inode, &current);
                if let Some(writer) = self.writer {
                    writer.send(Line::Rec(record.clone()));
                }
                Some(record)
            }
            None => None,
        };
        let shifted = plan(record.as_ref(), &current, base.map, base.direction);
        if !base.count(dir, name, &shifted) {
            return self.fail(inode);
        }
        self.count_predicted(inode, &current, &shifted.meta);
        if record.is_none() && !current.has_id_xattrs() {
            return;
        }
        let mut kept = self.kept.lock().expect("plan lock");
        match record {
            Some(record) => drop(kept.records.insert(inode.stat.ino, record)),
            None => drop(kept.xattr_inodes.insert(inode.stat.ino)),
        }
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

    /// Makes the inode its target, from its record if one belongs to it. Its owner
    /// and mode come from the handle's stat, its xattrs are read again where the scan
    /// found any.
    fn shift_inode(
        &self,
        dir: &DirNode,
        dir_fd: BorrowedFd<'_>,
        name: &CStr,
        inode: &Inode,
    ) -> Result<(), InodeError> {
        let base = &self.base;
        let known = self.plan.records.get(&inode.stat.ino);
        // The plan's records were all made or checked by this run's scan.
        let record = base.matching(known, true, (dir, name), inode);
        let current = match known.is_some() || self.plan.xattr_inodes.contains(&inode.stat.ino) {
            true => inode::read_meta(dir_fd, name, inode)?,
            false => inode::meta_from_stat(&inode.stat),
        };
        let shifted = plan(record, &current, base.map, base.direction);
        if !base.count(dir, name, &shifted) {
            return Ok(());
        }
        let applied = inode::apply(inode, &current, &shifted.meta)?;
        let c = &base.counters;
        bump(&c.changed, applied.changed);
        bump(&c.acls, applied.acls);
        bump(&c.capabilities, applied.caps);
        bump(&c.setid_restored, applied.setid_restored);
        if record.is_some() {
            if let Ok(after) = inode.restat() {
                self.writer.send(Line::Applied {
                    ino: inode.stat.ino,
                    ctime: after.ctime,
                });
            }
        }
        Ok(())
    }
}

impl Visitor for Apply<'_> {
    fn visit(&self, dir: &DirNode, dir_fd: BorrowedFd<'_>, name: &CStr, inode: &Inode) {
        if !self.base.first_visit(inode) || self.plan.failed.contains(&inode.stat.ino) {
            return;
        }
        if let Err(e) = self.shift_inode(dir, dir_fd, name, inode) {
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
