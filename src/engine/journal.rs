//! The journal: an append-only file of JSON lines, kept outside the tree and locked
//! for the whole run, that makes every run resumable and undoable after SIGKILL or
//! a power cut.
//!
//! A run records the original metadata of every inode a re-walk could not
//! reconstruct, and has the record on disk before it changes the inode (a group
//! commit shared by many inodes): those a chown damages (setuid/setgid, file
//! capabilities) and, while no run has finished, those that already hold ids in the
//! target range. All other inodes (ACL entries included) shift idempotently, so a
//! resumed run walks again. A record is applied only to the inode it was taken
//! from: see [`Record::matches`]. Which inodes no run has touched yet is told by
//! their ctime: see [`State::first_run`].
//!
//! # Why no interruption loses anything
//!
//! What must be on disk before what, whatever the file system:
//! 1. `writing`, with the first writing run's ctime boundary B, before the first
//!    change to the tree; every ctime in the tree is older than B then (the run
//!    waits for the clock to pass it) and every change after it gets B or later.
//! 2. An inode's record before any change to that inode (group commits).
//! 3. A new ctime before any change to an inode whose ctime is older than B. ext4
//!    does not give that by itself: its setattr writes a new owner with the quota
//!    transfer in one journal handle and the new ctime in a later one, so a commit
//!    between the two makes "new owner, old ctime" durable (seen in real power
//!    cuts). There the run first stamps the ctime alone (a chown to -1:-1), then
//!    changes the inode: two updates of one inode reach the disk in order (jbd2
//!    commits transactions in order and a cut keeps a prefix of them), so a change
//!    on disk implies the stamp on disk. xfs (`xfs_setattr_nonsize`) and btrfs
//!    (`btrfs_setattr`) write owner and ctime in one transaction, and tmpfs keeps
//!    nothing: no stamp there (`sys::owner_and_ctime_land_together`); every other
//!    file system gets the stamp. xattr writes (ACLs, capabilities) stamp the ctime
//!    in the transaction that writes the value on all three.
//! 4. B stays in force until a run finishes: a resumed run's `writing` carries no
//!    boundary and keeps the first one's. `done` is written only after a `syncfs` of
//!    the tree, so a finished run's changes and records are all on disk.
//! 5. A run that brings the tree back to where the journal started renames the
//!    journal aside and syncs its directory; cut before that, the next run finds the
//!    journal back at its start and puts it aside itself ([`State::back_at_start`]).
//!
//! Hence, while no run has finished, an inode whose ctime is older than B holds
//! what it held before the first run, in any interleaving of kills and power cuts
//! of forward runs, resumes and undos: a run in the first run's direction handles
//! it as the first run would (recording it if it holds target ids), a run in the
//! other direction leaves it as it is. Every other inode was reached by some run;
//! whatever it held that a re-walk could not rebuild has a record on disk (2), and
//! the rest moves between the two ranges exactly, so the last direction run to its
//! end gives exactly that direction's tree.

use super::idmap::{Direction, IdMap};
use super::meta::Meta;
use super::report::Summary;
use super::safety::Tree;
use super::sys::{self, Inode};
use crate::fsutil::{failed, FileError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

pub const FORMAT_VERSION: u32 = 1;
pub const DEFAULT_DIR: &str = "/var/lib/lxc-idshift";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Displayed as itself, but kept as the source: `--json` finds its path and errno.
    #[error("{0}")]
    File(#[from] FileError),
    #[error(
        "journal {path} is locked by another lxc-idshift run on this tree; wait for it to finish"
    )]
    Locked { path: PathBuf },
    #[error("journal {path}, line {line}: {message}; move the file aside only if you know the tree's state")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("journal {path} belongs to {recorded}, not to {given}; pass another --journal")]
    OtherTree {
        path: PathBuf,
        recorded: String,
        given: String,
    },
    #[error("journal {path} records runs on this tree with maps {recorded}; use those maps (with --reverse to return the tree to where it started) or pass another --journal")]
    OtherMaps { path: PathBuf, recorded: String },
    #[error(
        "journal {path} lies inside the tree {root}; it must be kept outside (pass --journal)"
    )]
    InsideTree { path: PathBuf, root: PathBuf },
}

/// The original metadata of one inode, as recorded by the scan of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub ino: u64,
    /// With `ino`, identifies the inode across runs (inode numbers are reused).
    pub btime: Option<(i64, u32)>,
    /// Where the file system records no birth time: the inode's generation
    /// (FS_IOC_GETVERSION; regular files and directories only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Where neither exists (symlinks, device nodes, FIFOs and sockets without a
    /// birth time): a hash of what the inode cannot change without being a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<u64>,
    /// ctime when the scan recorded it.
    pub ctime: (i64, u32),
    /// Direction of the run that recorded it: `source` is the tree before that run.
    pub direction: Direction,
    pub source: Meta,
    /// For people reading the journal.
    pub path: String,
    /// ctime after the last run that applied it, to notice later changes.
    #[serde(skip)]
    pub applied_ctime: Option<(i64, u32)>,
}

/// Whether a record belongs to the inode that now has its inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The record was taken from this very inode.
    Same,
    /// Another inode reuses the number: the record is stale.
    Other,
    /// The file system gives no way to tell (no birth time, no generation, and the
    /// inode changed since): the record must not be applied.
    Unproven,
}

impl Record {
    /// A record applies only to the inode it was taken from: proven by the birth
    /// time, else by the generation, else (symlinks, device nodes, FIFOs, sockets)
    /// by their fingerprint: none of these can carry privilege of their own, and
    /// an inode with another type, device or target is surely another. Records of
    /// older versions have none of these; their ctime may be of whole seconds, so it
    /// proves identity only where nothing else could have happened: unchanged since
    /// this run's own scan (`fresh`: the record was made or checked by this
    /// process), or since a finished run applied it.
    pub fn matches(&self, inode: &Inode, fresh: bool) -> Identity {
        let stat = &inode.stat;
        let same = |yes: bool| if yes { Identity::Same } else { Identity::Other };
        if self.ino != stat.ino {
            return Identity::Other;
        }
        if self.btime.is_some() || stat.btime.is_some() {
            return same(self.btime == stat.btime);
        }
        if let Some(generation) = self.generation {
            return same(inode.generation() == Some(generation));
        }
        if let Some(fingerprint) = self.fingerprint {
            return same(self::fingerprint(inode) == Some(fingerprint));
        }
        let unchanged_since_scan = fresh && self.ctime == stat.ctime;
        if unchanged_since_scan || self.applied_ctime == Some(stat.ctime) {
            return Identity::Same;
        }
        Identity::Unproven
    }
}

/// For an inode that can carry no privilege of its own (no regular file, no
/// directory): FNV-1a over its type, device number and symlink target, which no
/// change gives it short of making a new inode. None where the target cannot be read.
pub fn fingerprint(inode: &Inode) -> Option<u64> {
    let stat = &inode.stat;
    let kind = stat.file_type();
    if matches!(kind, sys::FileType::RegularFile | sys::FileType::Directory) {
        return None;
    }
    let target = match kind {
        sys::FileType::Symlink => inode.link_target().ok()?,
        _ => Vec::new(),
    };
    let (kind, rdev) = (
        (stat.mode & 0o170000).to_le_bytes(),
        stat.rdev.to_le_bytes(),
    );
    Some(fnv1a(kind.iter().chain(&rdev).chain(&target)))
}

/// The FNV-1a hash: small, and stable across versions (records are kept on disk).
pub(crate) fn fnv1a<'b>(bytes: impl IntoIterator<Item = &'b u8>) -> u64 {
    (bytes.into_iter()).fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// One line of the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Line {
    /// The journal's first line, on disk together with the file's name: a run
    /// killed at any point after has left its direction behind.
    Header {
        version: u32,
        root: String,
        maps: IdMap,
        /// The direction of the run that made the journal (None: older versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        direction: Option<Direction>,
    },
    Run {
        direction: Direction,
        first: bool,
        started: u64,
    },
    Rec(Record),
    /// A record found stale by a scan (the inode changed since it was applied).
    Forget {
        ino: u64,
    },
    /// The run writes to the tree from here on. On the journal's first writing run:
    /// every inode it changes gets a ctime of `untouched_before` or later, every
    /// inode changed before has an older one.
    Writing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        untouched_before: Option<(i64, u32)>,
    },
    /// Written by versions that scanned the whole tree before writing (same meaning
    /// as `Writing`, and that scan recorded every inode the first run needed).
    Scanned {
        inodes: u64,
    },
    Progress {
        inodes: u64,
    },
    Applied {
        ino: u64,
        ctime: (i64, u32),
    },
    Done {
        summary: Summary,
    },
}

/// What the journal says about one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunState {
    pub direction: Direction,
    pub first: bool,
    pub started: u64,
    /// Whether the run may have written to the tree.
    pub writing: bool,
    /// What its `Writing` line says (None for a journal of a scanning version).
    pub untouched_before: Option<(i64, u32)>,
    pub progress: u64,
    pub done: Option<Summary>,
}

/// The journal's first writing run, while none has finished: see [`State::first_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstRun {
    pub direction: Direction,
    pub untouched_before: (i64, u32),
}

/// Everything a journal file holds, replayed.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub root: Option<String>,
    pub maps: Option<IdMap>,
    /// The direction of the run that made the journal, from its header.
    pub made_by: Option<Direction>,
    pub runs: Vec<RunState>,
    pub records: HashMap<u64, Record>,
}

impl State {
    fn apply(&mut self, line: Line) {
        match line {
            Line::Header {
                root,
                maps,
                direction,
                ..
            } => {
                self.root = Some(root);
                self.maps = Some(maps);
                self.made_by = direction;
            }
            Line::Run {
                direction,
                first,
                started,
            } => self.runs.push(RunState {
                direction,
                first,
                started,
                writing: false,
                untouched_before: None,
                progress: 0,
                done: None,
            }),
            Line::Rec(record) => {
                self.records.insert(record.ino, record);
            }
            Line::Forget { ino } => {
                self.records.remove(&ino);
            }
            // A resumed run notes that it writes again, with no boundary of its
            // own: the boundary its first part noted still holds.
            Line::Writing { untouched_before } => self.with_last_run(|r| {
                r.writing = true;
                r.untouched_before = r.untouched_before.or(untouched_before);
            }),
            Line::Scanned { .. } => self.with_last_run(|r| r.writing = true),
            Line::Progress { inodes } => self.with_last_run(|r| r.progress = inodes),
            Line::Applied { ino, ctime } => {
                if let Some(record) = self.records.get_mut(&ino) {
                    record.applied_ctime = Some(ctime);
                }
            }
            Line::Done { summary } => self.with_last_run(|r| r.done = Some(summary)),
        }
    }

    fn with_last_run(&mut self, f: impl FnOnce(&mut RunState)) {
        if let Some(run) = self.runs.last_mut() {
            f(run);
        }
    }

    /// Reads a journal file; a torn last line (a crash mid-write) is ignored.
    pub fn read(path: &Path) -> Result<State, JournalError> {
        let file = File::open(path).map_err(failed("read the journal", path))?;
        State::read_from(BufReader::new(file), path)
    }

    /// Reads a journal's bytes, as `read` reads its file; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<State, JournalError> {
        State::read_from(bytes, path)
    }

    /// Replays the lines of `reader`. Only a last line without its line ending can be
    /// torn by a crash, and is ignored; any other line that does not parse is an error.
    fn read_from(mut reader: impl BufRead, path: &Path) -> Result<State, JournalError> {
        let mut state = State::default();
        let mut line = Vec::new();
        for index in 1.. {
            line.clear();
            let read = reader.read_until(b'\n', &mut line);
            if read.map_err(failed("read the journal", path))? == 0 {
                break;
            }
            let torn = line.pop_if(|b| *b == b'\n').is_none();
            match serde_json::from_slice::<Line>(&line) {
                Ok(parsed) => state.apply(parsed),
                Err(_) if torn => break,
                Err(e) => {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        line: index,
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(state)
    }

    /// The run a new invocation in `direction` continues, if any: the last run, when
    /// it goes the same way and has not finished.
    pub fn unfinished_run(&self, direction: Direction) -> Option<&RunState> {
        self.runs
            .last()
            .filter(|r| r.direction == direction && r.done.is_none())
    }

    /// Whether no run of this journal ever wrote to the tree (every one was
    /// interrupted before its first write, or none started).
    pub fn untouched(&self) -> bool {
        self.runs.iter().all(|r| !r.writing)
    }

    /// While no run has finished: the journal's first writing run, whose records
    /// of inodes already holding target ids may be incomplete (it was interrupted
    /// before it reached them all). An inode whose ctime is older than its boundary
    /// was never touched by any run of this journal, power cuts included (points 1,
    /// 3 and 4 of the module's argument), and for every name of a hardlinked inode.
    /// None once a run finished (its records are complete), and for journals of
    /// scanning versions (their scan recorded everything before the first write).
    pub fn first_run(&self) -> Option<FirstRun> {
        if self.runs.iter().any(|r| r.done.is_some()) {
            return None;
        }
        let first = self.runs.iter().find(|r| r.writing)?;
        Some(FirstRun {
            direction: first.direction,
            untouched_before: first.untouched_before?,
        })
    }

    /// Whether the last run finished and brought the tree back to where the
    /// journal's first run found it: what the journal says no longer matters.
    pub fn back_at_start(&self) -> bool {
        let last = self.runs.last().map(|r| r.direction.opposite());
        self.last_run_finished() && last == self.first_direction()
    }

    /// The direction the journal started in: that of the run that made it.
    pub fn first_direction(&self) -> Option<Direction> {
        self.made_by.or(self.runs.first().map(|r| r.direction))
    }

    /// Whether the last run finished cleanly (so the tree may have been used since).
    pub fn last_run_finished(&self) -> bool {
        self.runs.last().is_some_and(|r| r.done.is_some())
    }
}

/// The default journal of a tree: one file per canonical path.
pub fn default_path(root: &Path) -> PathBuf {
    Path::new(DEFAULT_DIR).join(format!("{}.journal", tree_tag(root)))
}

/// The readable part of a journal's name kept for a tree: a name must fit in
/// NAME_MAX (255) whatever the length of the tree's path.
const READABLE_MAX: usize = 100;

/// A file-name-safe tag for a tree: the end of its path (at most READABLE_MAX
/// characters) and a hash of all of it, which keeps two paths that read alike apart.
pub fn tree_tag(root: &Path) -> String {
    let text = root.to_string_lossy();
    let readable: String = text
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let readable = &readable[readable.len().saturating_sub(READABLE_MAX)..];
    let hash = fnv1a(root.as_os_str().as_encoded_bytes());
    format!("{readable}-{hash:016x}")
}

/// Where a finished journal is kept for `status` once the tree is back where it started.
pub fn archive_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".done");
    PathBuf::from(name)
}

/// An open, locked journal.
pub struct Journal {
    pub path: PathBuf,
    file: File,
    pub state: State,
}

impl Journal {
    /// Opens (creating if needed, for a run in `direction`) and locks the journal of
    /// `tree`, and checks that it lies outside the tree (by identity) and belongs to
    /// this tree and these maps.
    pub fn open(
        path: &Path,
        tree: &Tree,
        maps: &IdMap,
        direction: Direction,
    ) -> Result<Journal, JournalError> {
        let root = tree.path.as_path();
        let given = root.to_string_lossy().into_owned();
        let header = Line::Header {
            version: FORMAT_VERSION,
            root: given.clone(),
            maps: maps.clone(),
            direction: Some(direction),
        };
        let file = open_outside(path, tree, &line_bytes(&header))?;
        let file = match file {
            Some(file) => file,
            None => {
                return Err(JournalError::InsideTree {
                    path: path.into(),
                    root: root.into(),
                })
            }
        };
        if !sys::try_lock_exclusive(&file).map_err(failed("lock the journal", path))? {
            return Err(JournalError::Locked { path: path.into() });
        }
        drop_torn_tail(&file).map_err(failed("repair the torn last line of the journal", path))?;
        let state = State::read(path)?;
        if let Some(recorded) = &state.root {
            if *recorded != given {
                return Err(JournalError::OtherTree {
                    path: path.into(),
                    recorded: recorded.clone(),
                    given,
                });
            }
        }
        if let Some(recorded) = &state.maps {
            if recorded != maps {
                return Err(JournalError::OtherMaps {
                    path: path.into(),
                    recorded: recorded.to_string(),
                });
            }
        }
        let mut journal = Journal {
            path: path.into(),
            file,
            state,
        };
        if journal.state.root.is_none() {
            // Made without its header (where the file system cannot make a file
            // whole before naming it): the run that made it changed nothing.
            journal.append_now(&header)?;
            journal.state.apply(header);
        }
        Ok(journal)
    }

    fn append_now(&mut self, line: &Line) -> Result<(), JournalError> {
        let io_err = failed("write the journal", &self.path);
        self.file.write_all(&line_bytes(line)).map_err(io_err)?;
        self.file.sync_data().map_err(io_err)?;
        Ok(())
    }

    /// Starts the background writer; lines sent to it are batched, never fsynced one by one.
    pub fn writer(&self) -> Result<Writer, JournalError> {
        let file = (self.file.try_clone())
            .map_err(failed("open a second handle of the journal", &self.path))?;
        let (tx, rx) = crossbeam_channel::unbounded::<Message>();
        let thread = std::thread::spawn(move || write_lines(file, rx));
        Ok(Writer {
            tx,
            thread: Some(thread),
        })
    }

    /// Renames the journal aside once the tree is back at its starting point, so the
    /// next run starts a fresh journal. The lock goes with the open file.
    pub fn archive(self) -> Result<PathBuf, JournalError> {
        let archived = archive_path(&self.path);
        std::fs::rename(&self.path, &archived)
            .map_err(failed("move aside the finished journal", &self.path))?;
        // A journal left in place after a cut would hide the next run's first-run
        // duties; `back_at_start` catches it, this makes it rare.
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed("sync the journal's directory", dir))?;
        Ok(archived)
    }

    /// Removes a journal that holds nothing the tree depends on.
    pub fn discard(self) -> Result<(), JournalError> {
        std::fs::remove_file(&self.path).map_err(failed("remove the empty journal", &self.path))?;
        Ok(())
    }
}

fn line_bytes(line: &Line) -> Vec<u8> {
    let mut text = serde_json::to_vec(line).expect("journal lines serialize");
    text.push(b'\n');
    text
}

/// Opens the journal file without following a symlink in its last component,
/// creating it with `header` as its content where it does not exist; None when its
/// directory is the tree or lies inside it.
fn open_outside(path: &Path, tree: &Tree, header: &[u8]) -> Result<Option<File>, FileError> {
    use rustix::fs::{Mode, OFlags};
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "names no file");
        FileError::new("open the journal", path, source)
    })?;
    // Checked before anything is created (the nearest existing directory), and
    // again once the directory exists.
    let existing = dir
        .ancestors()
        .find(|d| d.as_os_str().is_empty() || d.is_dir());
    let existing = match existing {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let inside = |fd: &rustix::fd::OwnedFd| tree.contains_dir(rustix::fd::AsFd::as_fd(fd));
    let existing_failed = failed("open the directory", existing);
    let existing_fd = sys::open_dir_path(existing).map_err(existing_failed)?;
    if inside(&existing_fd).map_err(existing_failed)? {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).map_err(failed("create the journal's directory", dir))?;
    // The journal is created in the very directory checked here: one fd for both.
    let dir_failed = failed("open the journal's directory", dir);
    let dir_fd = sys::open_dir_path(dir).map_err(dir_failed)?;
    if inside(&dir_fd).map_err(dir_failed)? {
        return Ok(None);
    }
    let open_failed = failed("open the journal", path);
    create_whole(&dir_fd, name, header).map_err(failed("create the journal", path))?;
    let flags = OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir_fd, name, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| open_failed(io::Error::from_raw_os_error(e.raw_os_error())))?;
    let file = File::from(fd);
    if !file.metadata().map_err(open_failed)?.is_file() {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
        return Err(open_failed(source));
    }
    Ok(Some(file))
}

/// Where `name` does not exist in `dir`, makes it a file holding `content`, on
/// disk before the name is: an unnamed file (O_TMPFILE) written, synced, then
/// linked in, and the directory synced. A file system without O_TMPFILE leaves the
/// creation to the caller's plain open. An existing name is left as it is.
fn create_whole(
    dir: &rustix::fd::OwnedFd,
    name: &std::ffi::OsStr,
    content: &[u8],
) -> io::Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let exists = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
    if !matches!(exists, Err(rustix::io::Errno::NOENT)) {
        return Ok(());
    }
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    let unnamed = match rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    (&unnamed).write_all(content)?;
    unnamed.sync_all()?;
    match rustix::fs::linkat(&unnamed, "", dir, name, AtFlags::EMPTY_PATH) {
        Ok(()) => rustix::fs::fsync(dir).map_err(io::Error::from),
        // Another run made it first: its content stands.
        Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Truncates a partial last line left by a crash, so the next line starts clean.
fn drop_torn_tail(file: &File) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut reader = file;
    let mut keep = len;
    let mut byte = [0u8; 1];
    while keep > 0 {
        reader.seek(SeekFrom::Start(keep - 1))?;
        reader.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            break;
        }
        keep -= 1;
    }
    if keep != len {
        file.set_len(keep)?;
    }
    Ok(())
}

enum Message {
    Line(Line),
    Sync(crossbeam_channel::Sender<io::Result<()>>),
}

/// Sends journal lines to the writer thread.
pub struct Writer {
    tx: crossbeam_channel::Sender<Message>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Writer {
    pub fn send(&self, line: Line) {
        // The writer only stops on an I/O error, which `sync` and `finish` report.
        let _ = self.tx.send(Message::Line(line));
    }

    /// Returns once every line sent so far is on stable storage.
    pub fn sync(&self) -> io::Result<()> {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(Message::Sync(ack_tx))
            .map_err(|_| io::Error::other("journal writer stopped"))?;
        ack_rx
            .recv()
            .map_err(|_| io::Error::other("journal writer stopped"))?
    }

    /// Syncs and stops the writer.
    pub fn finish(mut self) -> io::Result<()> {
        self.sync()?;
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let (tx, _) = crossbeam_channel::unbounded();
        drop(std::mem::replace(&mut self.tx, tx));
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("journal writer panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Writes the lines as they come. A sync is a group commit: every sync request
/// already queued behind it (with the lines sent before them) shares its fsync.
fn write_lines(file: File, rx: crossbeam_channel::Receiver<Message>) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let write = |out: &mut BufWriter<File>, line: &Line| -> io::Result<()> {
        serde_json::to_writer(&mut *out, line).map_err(io::Error::other)?;
        out.write_all(b"\n")
    };
    while let Ok(message) = rx.recv() {
        let mut acks = match message {
            Message::Line(line) => {
                write(&mut out, &line)?;
                continue;
            }
            Message::Sync(ack) => vec![ack],
        };
        while let Ok(message) = rx.try_recv() {
            match message {
                Message::Line(line) => write(&mut out, &line)?,
                Message::Sync(ack) => acks.push(ack),
            }
        }
        let result = out.flush().and_then(|()| out.get_ref().sync_data());
        for ack in acks {
            let copy = result
                .as_ref()
                .map(|_| ())
                .map_err(|e| io::Error::new(e.kind(), e.to_string()));
            let _ = ack.send(copy);
        }
        result?;
    }
    out.flush()
}

/// The properties the `journal` fuzz target checks; panics on the first one violated.
/// Any bytes give a state or a `Corrupt` error naming one of their lines. The lines
/// that parse, written out again, give the state of applying them, and so does the
/// part of them that every truncation of that journal keeps.
#[doc(hidden)]
#[cfg(feature = "testkit")]
pub fn fuzz_read(data: &[u8]) {
    let path = Path::new("fuzz.journal");
    let pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let parsed: Vec<Line> = (pieces.iter())
        .filter_map(|piece| serde_json::from_slice(piece).ok())
        .collect();
    let (mut states, mut journal, mut ends) = (vec![State::default()], Vec::new(), vec![]);
    for line in parsed {
        journal.extend(serde_json::to_vec(&line).expect("journal lines serialize"));
        journal.push(b'\n');
        ends.push(journal.len());
        let mut next = states.last().expect("one state").clone();
        next.apply(line);
        states.push(next);
    }
    let all = states.last().expect("one state");
    match State::parse(data, path) {
        Ok(state) => assert!(same_state(&state, all), "state differs once rewritten"),
        Err(JournalError::Corrupt { line, .. }) => assert!((1..=pieces.len()).contains(&line)),
        Err(e) => panic!("unexpected error: {e}"),
    }
    if let Some(maps) = &all.maps {
        let texts: Vec<String> = maps.entries().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            IdMap::parse(&texts).as_ref(),
            Ok(maps),
            "an invalid map was read"
        );
    }
    let step = (journal.len() / 64).max(1);
    let cuts = (0..=journal.len()).step_by(step);
    for cut in cuts.chain(ends.iter().flat_map(|&e| [e - 2, e - 1])) {
        // A line counts once all of it but its line ending is there.
        let complete = ends.iter().filter(|&&e| e - 1 <= cut).count();
        let state = State::parse(&journal[..cut], path).expect("a cut journal reads");
        assert!(same_state(&state, &states[complete]), "cut at {cut}");
    }
}

/// Whether two states hold the same (`State` has no `PartialEq`).
#[cfg(feature = "testkit")]
fn same_state(a: &State, b: &State) -> bool {
    let runs = |s: &State| serde_json::to_value(&s.runs).ok();
    (a.root == b.root && a.maps == b.maps && a.records == b.records) && runs(a) == runs(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::safety;
    use std::fs::OpenOptions;

    fn map() -> IdMap {
        IdMap::parse(&["b:0:1000000:65536"]).unwrap()
    }

    fn record(ino: u64) -> Record {
        Record {
            ino,
            btime: Some((1, 2)),
            generation: None,
            fingerprint: None,
            ctime: (3, 4),
            direction: Direction::Forward,
            source: Meta {
                uid: 0,
                gid: 0,
                perm: 0o4755,
                acl_access: None,
                acl_default: None,
                caps: None,
            },
            path: "./bin/su".into(),
            applied_ctime: None,
        }
    }

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = safety::open_tree(dir.path()).unwrap();
        (dir, tree)
    }

    #[test]
    fn lines_survive_a_torn_tail_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (_t, root) = tree();
        {
            let journal = Journal::open(&path, &root, &map(), Direction::Forward).unwrap();
            let writer = journal.writer().unwrap();
            writer.send(Line::Run {
                direction: Direction::Forward,
                first: true,
                started: 1,
            });
            writer.send(Line::Rec(record(7)));
            writer.send(Line::Writing {
                untouched_before: Some((3, 4)),
            });
            writer.send(Line::Applied {
                ino: 7,
                ctime: (5, 6),
            });
            writer.finish().unwrap();
        }
        // A crash in the middle of a line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"t\":\"progr").unwrap();
        drop(file);
        let journal = Journal::open(&path, &root, &map(), Direction::Forward).unwrap();
        let state = &journal.state;
        assert_eq!(state.runs.len(), 1);
        assert!(state.runs[0].writing);
        let first = FirstRun {
            direction: Direction::Forward,
            untouched_before: (3, 4),
        };
        assert_eq!(state.first_run(), Some(first));
        assert_eq!(state.records[&7].applied_ctime, Some((5, 6)));
        assert!(state.unfinished_run(Direction::Forward).is_some());
        assert!(state.unfinished_run(Direction::Reverse).is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'), "torn tail removed");
    }

    /// A resumed first run notes `writing` again without a boundary of its own; the
    /// boundary of its first part must survive, or inodes no run ever reached would
    /// pass for changed ones (issue: a killed resume lost the first run's boundary).
    #[test]
    fn a_resumed_run_keeps_the_first_parts_boundary() {
        let run = r#"{"t":"run","direction":"Forward","first":true,"started":1}"#;
        let first = r#"{"t":"writing","untouched_before":[1796530529,639424637]}"#;
        let resumed = r#"{"t":"writing"}"#;
        let text = format!("{run}\n{first}\n{resumed}\n{resumed}\n");
        let state = State::parse(text.as_bytes(), Path::new("j")).unwrap();
        let boundary = FirstRun {
            direction: Direction::Forward,
            untouched_before: (1_796_530_529, 639_424_637),
        };
        assert_eq!(state.first_run(), Some(boundary));
        fuzz_read(text.as_bytes());
    }

    #[test]
    fn refuses_other_maps_other_trees_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (_t, root) = tree();
        let held = Journal::open(&path, &root, &map(), Direction::Forward).unwrap();
        assert!(matches!(
            Journal::open(&path, &root, &map(), Direction::Forward),
            Err(JournalError::Locked { .. })
        ));
        drop(held);
        let other = IdMap::parse(&["b:0:2000000:65536"]).unwrap();
        assert!(matches!(
            Journal::open(&path, &root, &other, Direction::Forward),
            Err(JournalError::OtherMaps { .. })
        ));
        let (_o, other_tree) = tree();
        assert!(matches!(
            Journal::open(&path, &other_tree, &map(), Direction::Forward),
            Err(JournalError::OtherTree { .. })
        ));
    }

    /// Inside the tree by any path, plain or through a symlink to the tree; nothing
    /// is created there. (A relative path from inside: tests/hostile.rs.)
    #[test]
    fn refuses_journals_inside_the_tree_by_identity() {
        let (dir, root) = tree();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let link = elsewhere.path().join("link-to-tree");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let new_dirs = link.join("new/dirs/j");
        for path in [
            dir.path().join("j"),
            link.join("sub/j"),
            link.join("j"),
            new_dirs,
        ] {
            assert!(
                matches!(
                    Journal::open(&path, &root, &map(), Direction::Forward),
                    Err(JournalError::InsideTree { .. })
                ),
                "{}",
                path.display()
            );
        }
        assert!(!dir.path().join("j").exists() && !dir.path().join("sub/j").exists());
        assert!(
            !dir.path().join("new").exists(),
            "no directory made in the tree"
        );
    }

    #[test]
    fn default_paths_differ_and_live_outside() {
        let a = default_path(Path::new("/var/lib/lxc/a-b/rootfs"));
        let b = default_path(Path::new("/var/lib/lxc/a/b/rootfs"));
        assert_ne!(a, b);
        assert!(a.starts_with(DEFAULT_DIR));
    }

    /// A path of any length LXC accepts (PATH_MAX) still gives a name that fits in
    /// NAME_MAX, and two long paths differing only at their start stay apart.
    #[test]
    fn a_journal_name_fits_whatever_the_paths_length() {
        let deep = |first: &str| PathBuf::from(format!("/{first}{}", "/d123456789".repeat(400)));
        let (a, b) = (default_path(&deep("a")), default_path(&deep("b")));
        assert!(a.file_name().unwrap().len() <= 255, "{}", a.display());
        assert_ne!(a, b);
    }

    #[test]
    fn only_a_last_line_without_its_ending_counts_as_torn() {
        // Found while writing the `journal` fuzz property: a complete (newline-ended)
        // last line that does not parse was ignored like a torn one, but kept by
        // `drop_torn_tail`, so the next run appended after it and the journal read
        // after that failed in the middle, once the tree had changed.
        let path = Path::new("j");
        let run = r#"{"t":"run","direction":"Forward","first":true,"started":1}"#;
        let torn = State::parse(format!("{run}\n{{\"t\":\"prog").as_bytes(), path);
        assert_eq!(torn.unwrap().runs.len(), 1);
        let ended = State::parse(format!("{run}\n{{\"t\":\"prog\n").as_bytes(), path);
        assert!(
            matches!(ended, Err(JournalError::Corrupt { line: 2, .. })),
            "{ended:?}"
        );
        let complete = State::parse(run.as_bytes(), path).unwrap();
        assert_eq!(
            complete.runs.len(),
            1,
            "a complete line without its ending counts"
        );
        fuzz_read(format!("{run}\n{run}").as_bytes());
    }
}
