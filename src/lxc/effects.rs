//! What a conversion does to the host outside reading it, behind one narrow trait:
//! running the LXC tools and udevadm, replacing and removing host files, changing
//! ownerships, shifting a tree. [`RealHost`] does it; [`RecordingHost`] (tests only)
//! records each call in order and answers from canned data, so that the
//! conversion's order and refusals are tested without root. The end-to-end tests
//! keep exercising [`RealHost`].
//!
//! (Named apart from [`super::host::Host`], which says *where* the host's files are.)

use crate::engine::run::{self, Progress, RunError, ShiftOptions, ShiftReport};
use crate::fsutil::{self, failed, FileError};
use crate::lxc::{perms, udev, units};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Everything the conversion changes on the host, and the programs it runs. A
/// change that fails names its path and operation ([`FileError`]); running a
/// program or udevadm leaves that to the caller.
pub trait HostEffects {
    /// Runs a program (`lxc-info`, `lxc-config`, `lxc-start`) and returns what it printed.
    fn run(&self, program: &str, args: &[&OsStr]) -> io::Result<Output>;
    /// Replaces a file's contents atomically ([`fsutil::write_atomically`]).
    fn write_file(&self, path: &Path, text: &str) -> Result<(), FileError>;
    /// Replaces a shadow file keeping its backup ([`fsutil::write_with_backup`]).
    fn write_shadow_file(
        &self,
        path: &Path,
        old: Option<&str>,
        text: &str,
    ) -> Result<(), FileError>;
    fn remove_file(&self, path: &Path) -> Result<(), FileError>;
    /// Applies planned ownership and mode changes in order ([`perms::apply`]).
    fn apply_perms(&self, changes: &[perms::PermChange]) -> Result<(), FileError>;
    /// Gives a device node its owner and group (a by-id link is followed).
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), FileError>;
    /// Masks (`mask`) or unmasks systemd units in the rootfs ([`units`]).
    fn mask_units(&self, rootfs: &Path, names: &[String], mask: bool) -> Result<(), FileError>;
    /// `udevadm control --reload` and `trigger`; Ok(false) when udevadm is not installed.
    fn reload_udev(&self, nodes: &[PathBuf]) -> io::Result<bool>;
    /// Shifts a tree with the engine ([`run::shift`]). A host effect too: only root
    /// can chown a tree, and the engine has its own tests.
    fn shift(
        &self,
        options: &ShiftOptions,
        progress: &dyn Progress,
    ) -> Result<ShiftReport, RunError>;
}

/// The host itself: each method is the call the conversion always made.
pub struct RealHost;

impl HostEffects for RealHost {
    fn run(&self, program: &str, args: &[&OsStr]) -> io::Result<Output> {
        Command::new(program).args(args).output()
    }

    fn write_file(&self, path: &Path, text: &str) -> Result<(), FileError> {
        fsutil::write_atomically(path, text)
    }

    fn write_shadow_file(
        &self,
        path: &Path,
        old: Option<&str>,
        text: &str,
    ) -> Result<(), FileError> {
        fsutil::write_with_backup(path, old, text)
    }

    fn remove_file(&self, path: &Path) -> Result<(), FileError> {
        std::fs::remove_file(path).map_err(failed("remove", path))
    }

    fn apply_perms(&self, changes: &[perms::PermChange]) -> Result<(), FileError> {
        perms::apply(changes)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), FileError> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(failed("chown", path))
    }

    fn mask_units(&self, rootfs: &Path, names: &[String], mask: bool) -> Result<(), FileError> {
        match mask {
            true => units::mask(rootfs, names),
            false => units::unmask(rootfs, names),
        }
    }

    fn reload_udev(&self, nodes: &[PathBuf]) -> io::Result<bool> {
        udev::reload_udev(nodes)
    }

    fn shift(
        &self,
        options: &ShiftOptions,
        progress: &dyn Progress,
    ) -> Result<ShiftReport, RunError> {
        run::shift(options, progress)
    }
}

#[cfg(any(test, feature = "testkit"))]
pub use recording::{HostCall, RecordingHost};

#[cfg(any(test, feature = "testkit"))]
mod recording {
    use super::*;
    use crate::engine::idmap::Direction;
    use crate::engine::report::Summary;
    use crate::engine::sys::KernelPaths;
    use std::collections::HashMap;
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;
    use std::process::ExitStatus;
    use std::sync::Mutex;

    /// One call made to a [`RecordingHost`], as it was made.
    #[derive(Debug, Clone, PartialEq)]
    pub enum HostCall {
        Run {
            program: String,
            args: Vec<String>,
        },
        Write {
            path: PathBuf,
            text: String,
        },
        WriteShadow {
            path: PathBuf,
            old: Option<String>,
            text: String,
        },
        Remove(PathBuf),
        Perms(Vec<perms::PermChange>),
        Chown {
            path: PathBuf,
            uid: u32,
            gid: u32,
        },
        /// Reload, and trigger these device nodes.
        ReloadUdev(Vec<PathBuf>),
        /// Mask (true) or unmask these units in the rootfs.
        Units {
            rootfs: PathBuf,
            names: Vec<String>,
            mask: bool,
        },
        Shift {
            root: PathBuf,
            map: String,
            direction: Direction,
        },
    }

    impl HostCall {
        /// Whether the call changes the host (everything but running a program).
        pub fn is_change(&self) -> bool {
            !matches!(self, HostCall::Run { .. })
        }
    }

    /// A host that records each call, answers a program with what
    /// [`RecordingHost::answer`] gave it, and fails the change chosen with
    /// [`RecordingHost::fail_change`]. Made with [`RecordingHost::new`] it changes
    /// nothing (an unanswered program is not installed); made with
    /// [`RecordingHost::over`] it makes every other call on a real host.
    #[derive(Default)]
    pub struct RecordingHost {
        calls: Mutex<Vec<HostCall>>,
        /// Each program's answers in turn; the last one stays.
        answers: Mutex<HashMap<String, std::collections::VecDeque<String>>>,
        /// The 1-based number of the change (any call but `run`) that fails.
        fail_at: Option<(usize, io::ErrorKind)>,
        /// How many inodes each shift (not made on a real host) could not shift.
        shift_errors: u64,
        inner: Option<RealHost>,
    }

    impl RecordingHost {
        pub fn new() -> RecordingHost {
            RecordingHost::default()
        }

        /// Records and answers as [`RecordingHost::new`] does, and makes the calls
        /// it does not answer or fail on `inner`: for tests of a fake container that
        /// LXC's own tools cannot load, on the real file system.
        pub fn over(inner: RealHost) -> RecordingHost {
            RecordingHost {
                inner: Some(inner),
                ..RecordingHost::default()
            }
        }

        /// `program` prints `stdout` and exits 0.
        pub fn answer(mut self, program: &str, stdout: &str) -> RecordingHost {
            let answers = self.answers.get_mut().unwrap();
            answers.insert(program.into(), [stdout.into()].into());
            self
        }

        /// Once `program`'s answers so far are given, it prints `stdout` instead.
        pub fn answer_next(mut self, program: &str, stdout: &str) -> RecordingHost {
            let answers = self.answers.get_mut().unwrap();
            answers
                .entry(program.into())
                .or_default()
                .push_back(stdout.into());
            self
        }

        /// The `nth` change (1-based; any call but `run`) fails with `kind`.
        pub fn fail_change(mut self, nth: usize, kind: io::ErrorKind) -> RecordingHost {
            self.fail_at = Some((nth, kind));
            self
        }

        /// Each shift reports `errors` inodes it could not shift (as an immutable
        /// file or a read-only mount would make it).
        pub fn shift_errors(mut self, errors: u64) -> RecordingHost {
            self.shift_errors = errors;
            self
        }

        /// Every call so far, in order.
        pub fn calls(&self) -> Vec<HostCall> {
            self.calls.lock().unwrap().clone()
        }

        /// `program`'s answer to this call: the next in turn, or the last one again.
        fn next_answer(&self, program: &str) -> Option<String> {
            let mut answers = self.answers.lock().unwrap();
            let queue = answers.get_mut(program)?;
            match queue.len() {
                0 | 1 => queue.front().cloned(),
                _ => queue.pop_front(),
            }
        }

        /// Records a call; the error chosen for it when it is the failing change.
        fn record(&self, call: HostCall) -> io::Result<()> {
            let is_change = call.is_change();
            let mut calls = self.calls.lock().unwrap();
            calls.push(call);
            let changes = calls.iter().filter(|c| c.is_change()).count();
            match self.fail_at {
                Some((nth, kind)) if is_change && nth == changes => Err(kind.into()),
                _ => Ok(()),
            }
        }

        /// Like the real changes, a failure names its operation and path.
        fn record_at(
            &self,
            call: HostCall,
            operation: &'static str,
            path: &Path,
        ) -> Result<(), FileError> {
            self.record(call).map_err(failed(operation, path))
        }
    }

    impl HostEffects for RecordingHost {
        fn run(&self, program: &str, args: &[&OsStr]) -> io::Result<Output> {
            self.record(HostCall::Run {
                program: program.into(),
                args: args.iter().map(|a| a.to_string_lossy().into()).collect(),
            })?;
            let answer = self.next_answer(program);
            let stdout = match (answer, &self.inner) {
                (Some(stdout), _) => stdout,
                (None, Some(inner)) => return inner.run(program, args),
                (None, None) => {
                    let missing = format!("{program}: not installed");
                    return Err(io::Error::new(io::ErrorKind::NotFound, missing));
                }
            };
            Ok(Output {
                status: ExitStatus::from_raw(0),
                stdout: stdout.as_bytes().to_vec(),
                stderr: Vec::new(),
            })
        }

        fn write_file(&self, path: &Path, text: &str) -> Result<(), FileError> {
            let call = HostCall::Write {
                path: path.into(),
                text: text.into(),
            };
            self.record_at(call, "write", path)?;
            self.inner
                .as_ref()
                .map_or(Ok(()), |h| h.write_file(path, text))
        }

        fn write_shadow_file(
            &self,
            path: &Path,
            old: Option<&str>,
            text: &str,
        ) -> Result<(), FileError> {
            let call = HostCall::WriteShadow {
                path: path.into(),
                old: old.map(Into::into),
                text: text.into(),
            };
            self.record_at(call, "write", path)?;
            let inner = self.inner.as_ref();
            inner.map_or(Ok(()), |h| h.write_shadow_file(path, old, text))
        }

        fn remove_file(&self, path: &Path) -> Result<(), FileError> {
            self.record_at(HostCall::Remove(path.into()), "remove", path)?;
            self.inner.as_ref().map_or(Ok(()), |h| h.remove_file(path))
        }

        fn apply_perms(&self, changes: &[perms::PermChange]) -> Result<(), FileError> {
            let first = changes.first().map(|c| c.path.clone()).unwrap_or_default();
            let call = HostCall::Perms(changes.to_vec());
            self.record_at(call, "change the owner and mode of", &first)?;
            self.inner
                .as_ref()
                .map_or(Ok(()), |h| h.apply_perms(changes))
        }

        fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), FileError> {
            let call = HostCall::Chown {
                path: path.into(),
                uid,
                gid,
            };
            self.record_at(call, "chown", path)?;
            self.inner
                .as_ref()
                .map_or(Ok(()), |h| h.chown(path, uid, gid))
        }

        fn mask_units(&self, rootfs: &Path, names: &[String], mask: bool) -> Result<(), FileError> {
            let call = HostCall::Units {
                rootfs: rootfs.into(),
                names: names.to_vec(),
                mask,
            };
            self.record_at(call, "mask units in", rootfs)?;
            self.inner
                .as_ref()
                .map_or(Ok(()), |h| h.mask_units(rootfs, names, mask))
        }

        fn reload_udev(&self, nodes: &[PathBuf]) -> io::Result<bool> {
            self.record(HostCall::ReloadUdev(nodes.to_vec()))?;
            self.inner
                .as_ref()
                .map_or(Ok(true), |h| h.reload_udev(nodes))
        }

        fn shift(
            &self,
            options: &ShiftOptions,
            progress: &dyn Progress,
        ) -> Result<ShiftReport, RunError> {
            let call = HostCall::Shift {
                root: options.root.clone(),
                map: options.map.to_string(),
                direction: options.direction,
            };
            self.record(call).map_err(failed("shift", &options.root))?;
            match &self.inner {
                Some(inner) => inner.shift(options, progress),
                None => Ok(report(options, self.shift_errors)),
            }
        }
    }

    /// What a shift that met `errors` errors reports.
    fn report(options: &ShiftOptions, errors: u64) -> ShiftReport {
        ShiftReport {
            root: options.root.clone(),
            direction: options.direction,
            map: options.map.clone(),
            dry_run: options.dry_run,
            resumed: false,
            journal: options.journal.clone(),
            journal_archived: false,
            summary: Summary {
                errors,
                ..Summary::default()
            },
            error_paths: Vec::new(),
            mount_points: Vec::new(),
            kernel: KernelPaths {
                fchmodat2: true,
                xattrat: true,
            },
            note: None,
        }
    }
}
