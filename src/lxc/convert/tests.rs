//! The conversion's order and refusals, without root: a fake container and host
//! files in a tempdir, every change to them made by a [`RecordingHost`] that only
//! records it. (The end-to-end tests run the same code on the real host.)

use super::*;
use crate::engine::run::Quiet;
use crate::lxc::effects::{HostCall, RecordingHost};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;

const HOST_FIRST: u32 = 1_000_000;
const OTHERS: &str = "alice:100000:65536\n";

/// A privileged container `c1` under `<tmp>/lxc`, the host's files under `<tmp>/host`.
struct Fixture {
    tmp: tempfile::TempDir,
    lxcpath: PathBuf,
    host: Host,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::under(tmp.path().join("host"));
        std::fs::create_dir_all(host.path("/etc")).unwrap();
        for file in [host.subuid(), host.subgid()] {
            std::fs::write(file, OTHERS).unwrap();
        }
        std::fs::write(host.passwd(), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let lxcpath = tmp.path().join("lxc");
        let rootfs = lxcpath.join("c1/rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let config = format!(
            "lxc.rootfs.path = dir:{}\nlxc.uts.name = c1\n",
            rootfs.display()
        );
        std::fs::write(lxcpath.join("c1/config"), config).unwrap();
        // Modes the conversion changes, whatever the umask.
        set_mode(&lxcpath.join("c1"), 0o755);
        set_mode(&lxcpath.join("c1/config"), 0o644);
        Fixture { tmp, lxcpath, host }
    }

    fn options(&self, to: Target) -> ConvertOptions {
        ConvertOptions {
            name: "c1".into(),
            to,
            range: 65536,
            lxcpath: Some(self.lxcpath.clone()),
            dry_run: false,
            devices: Vec::new(),
            release_range: true,
            threads: Some(1),
            host: self.host.clone(),
            mounts: MountsChoice::Keep,
            method: None,
            share_ids: Vec::new(),
            snapshot: None,
        }
    }

    /// The tempdir holding it all.
    fn base(&self) -> PathBuf {
        self.tmp.path().to_path_buf()
    }

    fn dir(&self) -> PathBuf {
        self.lxcpath.join("c1")
    }

    /// Plans and executes the conversion with `effects`.
    fn convert(&self, to: Target, effects: &RecordingHost) -> Result<Outcome, ConvertError> {
        let planned = plan(&self.options(to), effects)?;
        execute(planned, effects, Some(1), &Quiet)
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stopped() -> RecordingHost {
    RecordingHost::new().answer("lxc-info", "STOPPED\n")
}

/// Each change, as a short line: "write PATH", "shadow PATH", "remove PATH",
/// "perms PATH...", "shift ROOT MAP DIRECTION", paths relative to `base` (the
/// permission changes of `base` and its parents, which vary by host, left out).
fn changes(calls: &[HostCall], base: &Path) -> Vec<String> {
    let rel = |p: &Path| p.strip_prefix(base).unwrap_or(p).display().to_string();
    let inside = |p: &&Path| p.starts_with(base) && *p != base;
    calls
        .iter()
        .filter(|c| c.is_change())
        .map(|call| match call {
            HostCall::Write { path, .. } => format!("write {}", rel(path)),
            HostCall::WriteShadow { path, .. } => format!("shadow {}", rel(path)),
            HostCall::Remove(path) => format!("remove {}", rel(path)),
            HostCall::Perms(changes) => {
                let paths: Vec<String> = changes
                    .iter()
                    .map(|c| c.path.as_path())
                    .filter(inside)
                    .map(rel)
                    .collect();
                format!("perms {}", paths.join(" "))
            }
            HostCall::Shift {
                root,
                map,
                direction,
            } => format!("shift {} {map} {direction:?}", rel(root)),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The text last written to `path`.
fn written(calls: &[HostCall], path: &Path) -> String {
    calls
        .iter()
        .rev()
        .find_map(|call| match call {
            HostCall::Write { path: p, text } | HostCall::WriteShadow { path: p, text, .. }
                if p == path =>
            {
                Some(text.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("nothing written to {}", path.display()))
}

/// Makes the recorded writes and removals on the files, as the host would have.
fn replay(calls: &[HostCall]) {
    for call in calls {
        match call {
            HostCall::Write { path, text } | HostCall::WriteShadow { path, text, .. } => {
                std::fs::write(path, text).unwrap()
            }
            HostCall::Remove(path) => std::fs::remove_file(path).unwrap(),
            _ => {}
        }
    }
}

/// The permission changes made (in one call).
fn perm_changes(calls: &[HostCall]) -> Vec<PermChange> {
    let mut all = calls.iter().filter_map(|call| match call {
        HostCall::Perms(changes) => Some(changes.clone()),
        _ => None,
    });
    let changes = all.next().expect("permission changes");
    assert!(all.next().is_none(), "one call: {calls:#?}");
    changes
}

fn lxc_info_calls(calls: &[HostCall]) -> usize {
    let lxc_info =
        |c: &&HostCall| matches!(c, HostCall::Run { program, .. } if program == "lxc-info");
    calls.iter().filter(lxc_info).count()
}

#[test]
fn to_unprivileged_writes_subids_then_shifts_then_config_then_perms() {
    let f = Fixture::new();
    let base = f.base();
    let effects = stopped();
    f.convert(Target::HostId(HOST_FIRST), &effects).unwrap();
    let calls = effects.calls();
    // Once when planning, once more with the start guard in place.
    assert_eq!(lxc_info_calls(&calls), 2, "{calls:#?}");
    assert_eq!(
        changes(&calls, &base),
        [
            "write lxc/c1/config",
            "write lxc/c1/lxc-idshift.state.json",
            "shadow host/etc/subuid",
            "shadow host/etc/subgid",
            "shift lxc/c1/rootfs b:0:1000000:65536 Forward",
            "write lxc/c1/config",
            "perms lxc/c1 lxc/c1/config",
            "write lxc/c1/lxc-idshift.state.json",
        ]
    );
    for file in [f.host.subuid(), f.host.subgid()] {
        assert_eq!(
            written(&calls, &file),
            format!("{OTHERS}root:1000000:65536\n")
        );
    }
    let config = written(&calls, &f.dir().join("config"));
    for line in [
        "lxc.idmap = u 0 1000000 65536",
        "lxc.idmap = g 0 1000000 65536",
    ] {
        assert!(config.lines().any(|l| l == line), "{config}");
    }
    let perms = perm_changes(&calls);
    let dir = perms.iter().find(|c| c.path == f.dir()).expect("the dir");
    assert_eq!(
        (dir.after.uid, dir.after.gid, dir.after.mode),
        (0, HOST_FIRST, 0o750)
    );
    let state: ConversionState =
        serde_json::from_str(&written(&calls, &f.dir().join("lxc-idshift.state.json"))).unwrap();
    assert_eq!(
        (state.origin, state.target),
        (Some(HOST_FIRST), Some(HOST_FIRST))
    );
    let befores: Vec<Ownership> = perms.iter().map(|c| c.before.clone()).collect();
    assert_eq!(
        state.perms, befores,
        "the ownerships before, for the way back"
    );
}

#[test]
fn a_running_container_is_refused_before_any_change() {
    let f = Fixture::new();
    let effects = RecordingHost::new().answer("lxc-info", "RUNNING\n");
    let err = f
        .convert(Target::HostId(HOST_FIRST), &effects)
        .err()
        .expect("refused");
    assert!(
        matches!(err, ConvertError::Container(ContainerError::NotStopped { ref state, .. }) if state == "RUNNING"),
        "{err}"
    );
    let calls = effects.calls();
    assert_eq!(calls.len(), 1, "only lxc-info ran: {calls:#?}");
    let HostCall::Run { program, args } = &calls[0] else {
        unreachable!("one call, not a change: {calls:?}")
    };
    assert_eq!(program, "lxc-info");
    let lxcpath = f.lxcpath.display().to_string();
    assert_eq!(args, &["-P", lxcpath.as_str(), "-n", "c1", "-s", "-H"]);
}

#[test]
fn to_privileged_writes_the_reverse() {
    let f = Fixture::new();
    let base = f.base();
    let privileged = std::fs::read_to_string(f.dir().join("config")).unwrap();
    let there = stopped();
    f.convert(Target::HostId(HOST_FIRST), &there).unwrap();
    replay(&there.calls());
    // The permissions the way there changed, as far as an unprivileged owner can.
    let before = Ownership::of(&f.dir()).unwrap();
    set_mode(&f.dir(), 0o750);

    let back = stopped();
    f.convert(Target::Privileged, &back).unwrap();
    let calls = back.calls();
    assert_eq!(
        changes(&calls, &base),
        [
            "write lxc/c1/config",
            "write lxc/c1/lxc-idshift.state.json",
            "shadow host/etc/subuid",
            "shadow host/etc/subgid",
            "shift lxc/c1/rootfs b:0:1000000:65536 Reverse",
            "write lxc/c1/config",
            "perms lxc/c1",
            "remove lxc/c1/lxc-idshift.state.json",
        ]
    );
    for file in [f.host.subuid(), f.host.subgid()] {
        assert_eq!(
            written(&calls, &file),
            OTHERS,
            "--release-range gives it up"
        );
    }
    assert_eq!(written(&calls, &f.dir().join("config")), privileged);
    let perms = perm_changes(&calls);
    let dir = perms.iter().find(|c| c.path == f.dir()).expect("the dir");
    assert_eq!(dir.after, before, "the recorded ownership comes back");
}

#[test]
fn a_failed_host_write_is_reported_with_its_path_and_nothing_follows() {
    let f = Fixture::new();
    let base = f.base();
    // The start guard, the state, then /etc/subuid.
    let effects = stopped().fail_change(3, ErrorKind::PermissionDenied);
    let err = f
        .convert(Target::HostId(HOST_FIRST), &effects)
        .err()
        .expect("failed");
    let message = err.to_string();
    let subuid = f.host.subuid().display().to_string();
    assert_eq!(message.matches(&subuid).count(), 1, "path once: {message}");
    assert!(message.starts_with("cannot write "), "{message}");
    assert!(message.ends_with("run the same command again"), "{message}");
    assert_eq!(
        changes(&effects.calls(), &base),
        [
            "write lxc/c1/config",
            "write lxc/c1/lxc-idshift.state.json",
            "shadow host/etc/subuid"
        ],
        "nothing after the failed write"
    );
}

/// An unfinished shift leaves the config as it was, but for the start guard.
#[test]
fn an_unfinished_shift_leaves_the_config_guarded() {
    let f = Fixture::new();
    let base = f.base();
    let original = std::fs::read_to_string(f.dir().join("config")).unwrap();
    let effects = stopped().shift_errors(3);
    let outcome = f.convert(Target::HostId(HOST_FIRST), &effects).unwrap();
    assert_eq!(outcome.shift.map(|s| s.summary.errors), Some(3));
    let calls = effects.calls();
    assert_eq!(
        changes(&calls, &base),
        [
            "write lxc/c1/config",
            "write lxc/c1/lxc-idshift.state.json",
            "shadow host/etc/subuid",
            "shadow host/etc/subgid",
            "shift lxc/c1/rootfs b:0:1000000:65536 Forward",
        ],
        "the config, permissions and final state wait for a finished shift"
    );
    let config = written(&calls, &f.dir().join("config"));
    assert_eq!(config, crate::lxc::config::guard::with_guard(&original));
}

/// A container that starts while the conversion waits for its locks (after the
/// plan's check) is refused once the guard is in place, and the guard goes again.
#[test]
fn a_container_started_meanwhile_is_refused_and_the_guard_removed() {
    let f = Fixture::new();
    let base = f.base();
    let original = std::fs::read_to_string(f.dir().join("config")).unwrap();
    let effects = stopped().answer_next("lxc-info", "RUNNING\n");
    let err = f
        .convert(Target::HostId(HOST_FIRST), &effects)
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            ConvertError::Container(ContainerError::NotStopped { .. })
        ),
        "{err}"
    );
    let calls = effects.calls();
    assert_eq!(
        changes(&calls, &base),
        ["write lxc/c1/config", "write lxc/c1/config"],
        "the guard, then the config as it was; nothing else"
    );
    assert_eq!(written(&calls, &f.dir().join("config")), original);
}
