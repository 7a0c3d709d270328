//! The engine against a hostile tree: each test reproduces a way an attacker (or an
//! unusual file system) could make a shift change something outside the tree, or
//! lose or grant a capability or a setuid bit. Run by CI twice: as on this kernel,
//! and with `LXC_IDSHIFT_TEST_KERNEL=old` as on kernels before 6.6.

mod common;

use common::*;
use lxc_idshift::engine::idmap::{Direction, IdMap};
use lxc_idshift::engine::run::{self, Progress, ShiftOptions};
use lxc_idshift::sample::ACL_USER_OBJ;
use lxc_idshift::sample::{acl_xattr, caps_v2, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

const CAPS: &str = "security.capability";
const ACL: &str = "system.posix_acl_access";
const NET_RAW: u64 = 1 << 13;

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let len = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(len);
    Some(buf)
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("set {name} on {}: {e}", path.display()));
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A file with the given owner, mode and (optional) v2 capability.
fn file(path: &Path, uid: u32, mode: u32, caps: bool) {
    fs::write(path, b"#!/bin/sh\n").unwrap();
    chown(path, uid, uid);
    chmod(path, mode);
    if caps {
        set_xattr(path, CAPS, &caps_v2(NET_RAW, true));
    }
}

/// An access ACL: rwx for the owner, r-x for user `user`, the group and others.
fn acl_naming(user: u32) -> Vec<u8> {
    acl_xattr(&[
        (ACL_USER_OBJ, 7, 0),
        (ACL_USER, 5, user),
        (ACL_GROUP_OBJ, 5, 0),
        (ACL_MASK, 5, 0),
        (ACL_OTHER, 5, 0),
    ])
}

/// v3 capability bytes: `caps_v2` with the v3 magic and a rootid.
fn caps_v3(rootid: u32) -> Vec<u8> {
    let mut bytes = caps_v2(NET_RAW, true);
    bytes[3] = 3;
    bytes.extend_from_slice(&rootid.to_le_bytes());
    bytes
}

fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

/// A journal as a run killed after its apply walk leaves it: every line but the
/// `applied` ones and the final `done`.
fn interrupt_after_apply(journal: &Path) {
    let text = fs::read_to_string(journal).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("\"t\":\"applied\"") && !l.contains("\"t\":\"done\""))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept.len(), text.len(), "the journal had a finished run");
    fs::write(journal, kept).unwrap();
}

/// Makes `name` in `dir` a new inode with inode number `wanted` (freed just before):
/// file systems hand a freed number out again, but not always first.
fn reuse_inode_number(dir: &Path, name: &str, wanted: u64, make: impl Fn(&Path)) {
    let mut spare = Vec::new();
    for attempt in 0..2000 {
        let path = dir.join(format!("{name}.try{attempt}"));
        make(&path);
        if ino(&path) == wanted {
            fs::rename(&path, dir.join(name)).unwrap();
            spare
                .iter()
                .for_each(|p: &PathBuf| fs::remove_file(p).unwrap());
            return;
        }
        spare.push(path);
    }
    panic!("inode number {wanted} was not handed out again");
}

// ---------------------------------------------------------------------------
// Races: nothing outside the tree changes, whatever is swapped in during runs.
// ---------------------------------------------------------------------------

/// The outside files a racing tree points at; their full metadata must never change.
struct Canaries {
    dir: PathBuf,
    before: lxc_idshift::manifest::Manifest,
}

impl Canaries {
    fn new(dir: PathBuf) -> Canaries {
        fs::create_dir(&dir).unwrap();
        file(&dir.join("secret"), 1234, 0o644, false);
        set_xattr(&dir.join("secret"), "user.canary", b"keep");
        fs::create_dir(dir.join("cdir")).unwrap();
        chown(&dir.join("cdir"), 1234, 1234);
        file(&dir.join("cdir/inner"), 1234, 0o600, false);
        let before = collect(&dir);
        Canaries { dir, before }
    }

    fn assert_untouched(&self, what: &str) {
        assert_same(&self.before, &collect(&self.dir), what);
    }
}

fn renameat2_exchange(dir: &Path, a: &str, b: &str) {
    let dir = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let (a, b) = (CString::new(a).unwrap(), CString::new(b).unwrap());
    // SAFETY: NUL-terminated paths; the call only renames.
    unsafe {
        let fd = libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        libc::syscall(
            libc::SYS_renameat2,
            fd,
            a.as_ptr(),
            fd,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        );
        libc::close(fd);
    }
}

/// Setuid files (with capabilities) and setgid directories (with ACLs) are swapped
/// with symlinks to outside canaries in a loop during forward and reverse runs.
#[test]
fn racing_symlink_swaps_never_reach_outside() {
    if !require_root("racing_symlink_swaps_never_reach_outside") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let canaries = Canaries::new(tmp.path().join("outside"));
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let pairs: Vec<PathBuf> = (0..32).map(|i| tree.join(format!("d{i}"))).collect();
    let acl = acl_naming(33);
    for dir in &pairs {
        fs::create_dir(dir).unwrap();
        file(&dir.join("s"), 0, 0o4755, true);
        fs::create_dir(dir.join("sd")).unwrap();
        chmod(&dir.join("sd"), 0o2775);
        set_xattr(&dir.join("sd"), ACL, &acl);
        file(&dir.join("sd/f"), 0, 0o2755, false);
        symlink(canaries.dir.join("secret"), dir.join("l")).unwrap();
        symlink(canaries.dir.join("cdir"), dir.join("ld")).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, pairs) = (stop.clone(), pairs.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for dir in &pairs {
                    renameat2_exchange(dir, "s", "l");
                    renameat2_exchange(dir, "sd", "ld");
                    swaps += 2;
                }
            }
            swaps
        })
    };
    let tool = Tool::new();
    for round in 0..25 {
        for extra in [&[][..], &["--reverse"][..]] {
            let out = tool.shift(&tree, extra);
            let code = out.status.code();
            assert!(
                matches!(code, Some(0 | 1)),
                "round {round} {extra:?}: {:?}\n{}",
                out.status,
                text(&out.stderr)
            );
        }
        canaries.assert_untouched(&format!("canaries after round {round}"));
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    assert!(swaps > 1000, "the racer made only {swaps} swaps");
    canaries.assert_untouched("canaries after the race");
}

/// The tree's root is swapped for a symlink to an outside directory between the
/// scan and the apply walk: the run goes on in the directory it opened.
#[test]
fn swapping_the_root_between_phases_changes_nothing_outside() {
    if !require_root("swapping_the_root_between_phases_changes_nothing_outside") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let canaries = Canaries::new(tmp.path().join("outside"));
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    file(&tree.join("f"), 0, 0o644, false);
    let aside = tmp.path().join("tree.aside");
    struct SwapRoot<'a> {
        tree: &'a Path,
        aside: &'a Path,
        target: &'a Path,
    }
    impl Progress for SwapRoot<'_> {
        fn phase(&self, name: &str, _total: Option<u64>) {
            if name == "shifting" {
                fs::rename(self.tree, self.aside).unwrap();
                symlink(self.target, self.tree).unwrap();
            }
        }
    }
    let swap = SwapRoot {
        tree: &tree,
        aside: &aside,
        target: &canaries.dir,
    };
    let tool = Tool::new();
    let report = run::shift(&options(&tree, &tool, Direction::Forward), &swap).unwrap();
    assert_eq!(report.summary.errors, 0, "{report:?}");
    canaries.assert_untouched("canaries after a root swap");
    assert_eq!(
        owner(&aside.join("f")).0,
        HOST_FIRST,
        "the tree was shifted"
    );
}

fn options(root: &Path, tool: &Tool, direction: Direction) -> ShiftOptions {
    ShiftOptions {
        root: root.to_path_buf(),
        map: IdMap::parse(&[MAP]).unwrap(),
        direction,
        dry_run: false,
        threads: Some(2),
        journal: Some(tool.journal()),
    }
}

/// A second run on the same tree is refused whatever its journal, while the
/// first one works.
#[test]
fn a_second_run_on_the_same_tree_is_refused_whatever_its_journal() {
    if !require_root("a_second_run_on_the_same_tree_is_refused_whatever_its_journal") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let original = collect(&root);
    struct Pause(Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>);
    impl Progress for Pause {
        fn phase(&self, name: &str, _total: Option<u64>) {
            if name == "shifting" {
                if let Some((started, resume)) = self.0.lock().unwrap().take() {
                    started.send(()).unwrap();
                    resume.recv().unwrap();
                }
            }
        }
    }
    let (started_tx, started_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let pause = Pause(Mutex::new(Some((started_tx, resume_rx))));
    let first = Tool::new();
    std::thread::scope(|scope| {
        let running =
            scope.spawn(|| run::shift(&options(&root, &first, Direction::Forward), &pause));
        started_rx.recv().unwrap();
        let second = Tool::new().shift(&root, &[]);
        resume_tx.send(()).unwrap();
        assert_exit(&second, 2, "a second run with another journal");
        let stderr = text(&second.stderr);
        assert!(stderr.contains("another lxc-idshift run"), "{stderr}");
        let report = running.join().unwrap().unwrap();
        assert_eq!(report.summary.errors, 0);
    });
    assert_same(
        &expected_forward(&original),
        &collect(&root),
        "after the first run",
    );
}

// ---------------------------------------------------------------------------
// Mounts and journals: what is not the tree's is never touched.
// ---------------------------------------------------------------------------

/// A host file bind-mounted over a file of the tree is reported, not shifted.
#[test]
fn a_bind_mounted_file_is_left_alone() {
    if !require_root("a_bind_mounted_file_is_left_alone") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let host_file = tmp.path().join("host-file");
    file(&host_file, 0, 0o4755, true);
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    file(&tree.join("f"), 0, 0o644, false);
    let before = (owner(&host_file), get_xattr(&host_file, CAPS));
    let Some(_mount) = MountGuard::bind(&host_file, &tree.join("f")) else {
        return;
    };
    let tool = Tool::new();
    let (out, report) = tool.shift_json(&tree, &[]);
    assert_exit(&out, 0, "forward");
    assert_eq!(counter(&report, "mount_points_skipped"), 1, "{report}");
    assert_eq!((owner(&host_file), get_xattr(&host_file, CAPS)), before);
    tool.shift_ok(&tree, &["--reverse"]);
    assert_eq!((owner(&host_file), get_xattr(&host_file, CAPS)), before);
}

/// Where the kernel has no `listxattrat` (before 6.13), a name's xattrs are listed
/// relative to the walker thread's own working directory, which must follow the
/// directory the name is in. 200 directories hold the same two names; in every other
/// one "f" has a capability and an ACL and "g" has none, and the other way round. A
/// listing made in the wrong directory would miss a capability (which the chown then
/// removes) or an ACL (left with unshifted ids). Two threads switch directories often.
#[test]
fn xattrs_are_listed_in_each_names_own_directory() {
    if !require_root("xattrs_are_listed_in_each_names_own_directory") {
        return;
    }
    let tool = Tool::new();
    same_names_round_trip_is_exact(|root, extra| {
        tool.shift_ok(root, extra);
    });
}

/// Shifts `same_names_in_200_directories` forward and back with two threads
/// (`shift(root, extra_args)`), checking the whole tree after each.
fn same_names_round_trip_is_exact(shift: impl Fn(&Path, &[&str])) {
    let (_tmp, root) = same_names_in_200_directories();
    let original = collect(&root);
    shift(&root, &["--threads", "2"]);
    assert_same(
        &expected_forward(&original),
        &collect(&root),
        "after forward",
    );
    shift(&root, &["--threads", "2", "--reverse"]);
    assert_same(&original, &collect(&root), "after reverse");
}

/// 200 directories with the same two names: in every other one "f" has a
/// capability and an ACL and "g" has neither, and the other way round.
fn same_names_in_200_directories() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    let acl = acl_naming(1000);
    for i in 0..200 {
        let dir = root.join(format!("d{i}"));
        fs::create_dir_all(&dir).unwrap();
        let (with, without) = if i % 2 == 0 { ("f", "g") } else { ("g", "f") };
        file(&dir.join(with), 0, 0o755, true);
        set_xattr(&dir.join(with), ACL, &acl);
        file(&dir.join(without), 0, 0o755, false);
    }
    (tmp, root)
}

/// Where a walker thread cannot have a working directory of its own (`unshare`
/// refused, as under a confining seccomp profile) on a kernel without
/// `listxattrat`, every name's xattrs are listed through its handle: the shift is
/// still exact, both ways.
#[test]
fn without_a_working_directory_of_its_own_a_thread_lists_through_the_handle() {
    if !require_root("without_a_working_directory_of_its_own_a_thread_lists_through_the_handle") {
        return;
    }
    let tool = Tool::new();
    same_names_round_trip_is_exact(|root, extra| {
        let args = tool.shift_args(root, &[extra, &["--json"]].concat());
        let out = run_ok(old_kernel_command_refusing_unshare(bin()).args(args));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["kernel"]["xattrat"], false, "{report}");
    });
}

/// A file hard-linked from outside the tree (a link made on the host, as a
/// deduplication across containers does) is the same inode as the outside file:
/// it is reported and left alone, never shifted; links inside the tree still are.
#[test]
fn an_inode_linked_from_outside_the_tree_is_left_alone() {
    if !require_root("an_inode_linked_from_outside_the_tree_is_left_alone") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("other-container-file");
    file(&outside, 0, 0o4755, true);
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::hard_link(&outside, tree.join("shared")).unwrap();
    file(&tree.join("inside"), 0, 0o644, false);
    fs::hard_link(tree.join("inside"), tree.join("inside2")).unwrap();
    let before = (owner(&outside), get_xattr(&outside, CAPS));
    let tool = Tool::new();
    let (out, report) = tool.shift_json(&tree, &[]);
    assert_exit(&out, 1, "forward with a link from outside");
    let errors = report["error_paths"].to_string();
    assert!(
        errors.contains("shared") && errors.contains("hard links"),
        "{errors}"
    );
    assert_eq!((owner(&outside), get_xattr(&outside, CAPS)), before);
    assert_eq!(
        owner(&tree.join("inside2")).0,
        HOST_FIRST,
        "links inside shift"
    );
}

/// `--journal` inside the tree through a symlink, or relative from inside it, is
/// refused before anything is written.
#[test]
fn journals_inside_the_tree_are_refused_by_identity() {
    if !require_root("journals_inside_the_tree_are_refused_by_identity") {
        return;
    }
    let (tmp, root) = sample_tree();
    let original = collect(&root);
    let link = tmp.path().join("link-to-tree");
    symlink(&root, &link).unwrap();
    let through_link = link.join("etc/j");
    let args = [
        "shift".as_ref(),
        root.as_os_str(),
        "--map".as_ref(),
        MAP.as_ref(),
    ];
    let out = run(&[&args[..], &["--journal".as_ref(), through_link.as_os_str()]].concat());
    assert_exit(&out, 2, "journal through a symlink into the tree");
    assert!(
        text(&out.stderr).contains("inside the tree"),
        "{}",
        text(&out.stderr)
    );
    let relative = command(bin())
        .args(args)
        .args(["--journal", "j"])
        .current_dir(root.join("etc"))
        .output()
        .unwrap();
    assert_exit(&relative, 2, "relative journal from inside the tree");
    assert_same(&original, &collect(&root), "nothing changed");
}

// ---------------------------------------------------------------------------
// Identity: a record is applied only to the inode it was taken from.
// ---------------------------------------------------------------------------

/// A journal of an earlier version holds no fingerprints: a symlink without birth
/// time or generation, replaced by another at the same inode number, cannot be
/// told from the recorded one. Its record is not applied, and that is reported.
#[test]
fn a_record_without_fingerprint_is_never_applied_to_an_unproven_inode() {
    if !require_root("a_record_without_fingerprint_is_never_applied_to_an_unproven_inode") {
        return;
    }
    let Some(fs) = LoopFs::new("ext4", &["-I", "128"]) else {
        return;
    };
    let root = fs.mount.join("rootfs");
    fs::create_dir(&root).unwrap();
    symlink("su", root.join("ln")).unwrap();
    set_xattr(&root.join("ln"), CAPS, &caps_v2(NET_RAW, true));
    let tool = Tool::new();
    tool.shift_ok(&root, &[]);
    interrupt_after_apply(&tool.journal());
    let text = fs::read_to_string(tool.journal()).unwrap();
    let stripped = without_number_field(&text, ",\"fingerprint\":");
    assert_ne!(stripped, text, "the record had a fingerprint");
    fs::write(tool.journal(), stripped).unwrap();
    let ln_ino = ino(&root.join("ln"));
    fs::remove_file(root.join("ln")).unwrap();
    reuse_inode_number(&root, "ln", ln_ino, |p| {
        symlink("su", p).unwrap();
        chown(p, 1_001_000, 1_001_000);
    });
    let (out, report) = tool.shift_json(&root, &["--reverse"]);
    assert_eq!(owner(&root.join("ln")).0, 1000, "shifted plainly");
    assert_eq!(get_xattr(&root.join("ln"), CAPS), None);
    assert_exit(&out, 1, "reverse with an unprovable record");
    let errors = report["error_paths"].to_string();
    assert!(
        errors.contains("ln") && errors.contains("cannot be proven"),
        "{errors}"
    );
}

/// `text` without every `key` and the number after it (a JSON field of digits).
fn without_number_field(text: &str, key: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        out.push_str(&rest[..at]);
        let after = &rest[at + key.len()..];
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// ext4 with 128-byte inodes keeps no birth time. A setuid file recorded by an
/// interrupted run is deleted and its inode number reused by a user's script: the
/// undo must shift the script plainly, never make it setuid root.
#[test]
fn a_reused_inode_number_never_receives_a_record_without_birth_times() {
    if !require_root("a_reused_inode_number_never_receives_a_record_without_birth_times") {
        return;
    }
    let Some(fs) = LoopFs::new("ext4", &["-I", "128"]) else {
        return;
    };
    let root = fs.mount.join("rootfs");
    fs::create_dir(&root).unwrap();
    let btime = rustix::fs::statx(
        rustix::fs::CWD,
        &root,
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::BTIME,
    )
    .unwrap();
    assert_eq!(
        btime.stx_mask & rustix::fs::StatxFlags::BTIME.bits(),
        0,
        "no birth time"
    );
    file(&root.join("su"), 0, 0o4755, true);
    symlink("su", root.join("ln")).unwrap();
    set_xattr(&root.join("ln"), CAPS, &caps_v2(NET_RAW, true));
    let tool = Tool::new();
    tool.shift_ok(&root, &[]);
    interrupt_after_apply(&tool.journal());
    // The user replaces both while the conversion is stopped.
    let (su_ino, ln_ino) = (ino(&root.join("su")), ino(&root.join("ln")));
    fs::remove_file(root.join("su")).unwrap();
    reuse_inode_number(&root, "script", su_ino, |p| {
        file(p, 1_001_000, 0o755, false)
    });
    fs::remove_file(root.join("ln")).unwrap();
    reuse_inode_number(&root, "ln2", ln_ino, |p| {
        symlink("script", p).unwrap();
        chown(p, 1_001_000, 1_001_000);
    });
    let (out, report) = tool.shift_json(&root, &["--reverse"]);
    assert_eq!(
        owner(&root.join("script")),
        (1000, 1000, 0o755),
        "plain shift"
    );
    assert_eq!(get_xattr(&root.join("script"), CAPS), None);
    assert_eq!(
        owner(&root.join("ln2")).0,
        1000,
        "the symlink shifted plainly"
    );
    assert_eq!(get_xattr(&root.join("ln2"), CAPS), None);
    // The symlink has no birth time and no generation, but another target: its
    // fingerprint tells it from the recorded one, so nothing is left to doubt.
    assert_exit(&out, 0, "reverse with records of replaced inodes");
    assert_eq!(report["error_paths"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------
// Xattrs: never lost, never granted.
// ---------------------------------------------------------------------------

/// An unreadable ACL and a malformed capability (planted with debugfs) fail the
/// read: those inodes are reported and left exactly as they are; the rest shifts.
#[test]
fn unreadable_xattrs_leave_the_inode_untouched_and_fail_the_run() {
    if !require_root("unreadable_xattrs_leave_the_inode_untouched_and_fail_the_run") {
        return;
    }
    let Some(fs) = LoopFs::new("ext4", &[]) else {
        return;
    };
    let root = fs.mount.join("rootfs");
    fs::create_dir(&root).unwrap();
    for name in ["bad-acl", "bad-caps", "good"] {
        file(&root.join(name), 0, 0o4755, false);
    }
    fs.unmount();
    let values = tempfile::tempdir().unwrap();
    let plant = |name: &str, attr: &str, raw: &[u8], flags: &str| {
        let value = values.path().join(name);
        fs::write(&value, raw).unwrap();
        let request = format!(
            "ea_set {flags} -f {} /rootfs/{name} {attr}",
            value.display()
        );
        let mut debugfs = std::process::Command::new("debugfs");
        run_ok(debugfs.args(["-w", "-R", &request]).arg(&fs.image));
    };
    plant(
        "bad-acl",
        ACL,
        &[2, 0, 0, 0, 0x77, 0x77, 1, 0, 0xff, 0xff],
        "-r",
    );
    plant("bad-caps", CAPS, &[9; 7], "");
    fs.mount();
    let tool = Tool::new();
    let (out, report) = tool.shift_json(&root, &[]);
    assert_exit(&out, 1, "forward over unreadable xattrs");
    let errors = report["error_paths"].to_string();
    assert!(
        errors.contains("bad-acl") && errors.contains("bad-caps"),
        "{errors}"
    );
    assert_eq!(owner(&root.join("bad-acl")), (0, 0, 0o4755));
    assert_eq!(owner(&root.join("bad-caps")), (0, 0, 0o4755));
    assert_eq!(owner(&root.join("good")), (HOST_FIRST, HOST_FIRST, 0o4755));
    fs.unmount();
    let out = std::process::Command::new("debugfs")
        .args(["-R", "ea_list /rootfs/bad-caps"])
        .arg(&fs.image)
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("09 09 09 09 09 09 09"),
        "{}",
        text(&out.stdout)
    );
    fs.mount();
}

/// After an interrupted run, a capability and an ACL entry are added to new
/// inodes; the resumed run shifts them like a first run, and the undo restores them.
#[test]
fn changes_between_an_interrupted_run_and_its_resume_are_shifted() {
    if !require_root("changes_between_an_interrupted_run_and_its_resume_are_shifted") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let tool = Tool::new();
    tool.shift_ok(&root, &[]);
    interrupt_after_apply(&tool.journal());
    let (new_cap, new_acl) = (root.join("usr/bin/new-ping"), root.join("etc/new-acl"));
    file(&new_cap, 0, 0o755, true);
    file(&new_acl, HOST_FIRST, 0o640, false);
    let acl = |id| {
        acl_xattr(&[
            (ACL_USER_OBJ, 6, 0),
            (ACL_USER, 4, id),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_MASK, 4, 0),
            (ACL_OTHER, 0, 0),
        ])
    };
    set_xattr(&new_acl, ACL, &acl(5));
    let out = tool.shift_ok(&root, &[]);
    assert!(
        text(&out.stdout).contains("continued an interrupted run"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(owner(&new_cap), (HOST_FIRST, HOST_FIRST, 0o755));
    assert_eq!(get_xattr(&new_cap, CAPS), Some(caps_v3(HOST_FIRST)));
    assert_eq!(get_xattr(&new_acl, ACL), Some(acl(HOST_FIRST + 5)));
    tool.shift_ok(&root, &["--reverse"]);
    assert_eq!(owner(&new_cap), (0, 0, 0o755));
    assert_eq!(get_xattr(&new_cap, CAPS), Some(caps_v2(NET_RAW, true)));
    assert_eq!(get_xattr(&new_acl, ACL), Some(acl(5)));
}

/// A capability on a symlink (`setfattr -h`) survives the chown, both ways.
#[test]
fn a_symlinks_capability_is_kept() {
    if !require_root("a_symlinks_capability_is_kept") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("link");
    symlink("/etc/passwd", &link).unwrap();
    set_xattr(&link, CAPS, &caps_v2(NET_RAW, true));
    let original = collect(tmp.path());
    let tool = Tool::new();
    tool.shift_ok(tmp.path(), &[]);
    assert_eq!(owner(&link).0, HOST_FIRST);
    assert_eq!(get_xattr(&link, CAPS), Some(caps_v3(HOST_FIRST)));
    tool.shift_ok(tmp.path(), &["--reverse"]);
    assert_same(
        &original,
        &collect(tmp.path()),
        "round trip with a symlink capability",
    );
}

/// A shift reads directories without touching their atime (ctime is the only
/// timestamp it may change).
#[test]
fn directory_atimes_are_kept() {
    if !require_root("directory_atimes_are_kept") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let dirs = ["", "etc", "usr/bin", "home/alice"].map(|d| root.join(d));
    for dir in &dirs {
        let touched = std::process::Command::new("touch")
            .args(["-a", "-h", "-d", "2001-02-03 04:05:06"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(touched.success());
    }
    let atimes = || {
        dirs.iter()
            .map(|d| fs::metadata(d).unwrap().atime())
            .collect::<Vec<_>>()
    };
    let before = atimes();
    let tool = Tool::new();
    tool.shift_ok(&root, &[]);
    tool.shift_ok(&root, &["--reverse"]);
    assert_eq!(atimes(), before);
}

/// On the emulated old kernel, the run really took the fallbacks.
#[test]
fn the_report_names_the_kernel_paths_taken() {
    if !require_root("the_report_names_the_kernel_paths_taken") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let tool = Tool::new();
    let (out, report) = tool.shift_json(&root, &[]);
    assert_exit(&out, 0, "forward");
    let kernel = &report["kernel"];
    if old_kernel() {
        assert_eq!(kernel["fchmodat2"], false, "{report}");
        assert_eq!(kernel["xattrat"], false, "{report}");
    } else {
        assert!(
            kernel["fchmodat2"].is_boolean() && kernel["xattrat"].is_boolean(),
            "{report}"
        );
    }
}

/// An inode's xattrs are never taken from another inode's listing, even while a
/// racer swaps names: in 8 directories, "f" (a capability and an ACL) and "g"
/// (neither) are exchanged by `renameat2(RENAME_EXCHANGE)` in a loop during forward
/// and reverse runs. Names are listed by name, so a listing made just before a swap
/// lists the other inode; one trusted then would lose a capability (the chown
/// removes it) or leave an ACL unshifted. The tree is aged first, so that its
/// ctimes would not make every listing look doubtful before the race starts; "g"
/// carries 40 padding xattrs (a longer listing, a wider window) and the runs use
/// one thread (the racer keeps a core): trusting every listing fails it within a
/// few rounds, on both kernel paths.
#[test]
fn a_name_swapped_during_a_run_never_takes_another_inodes_xattrs() {
    if !require_root("a_name_swapped_during_a_run_never_takes_another_inodes_xattrs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    swap_names_during_runs(&tmp.path().join("tree"));
}

/// The same on ext4 with 128-byte inodes, whose ctimes keep whole seconds: a swap
/// in the second of a listing is stamped with that second's start, before the
/// listing's reading, which only the rule for ctimes without nanoseconds catches.
#[test]
fn a_name_swapped_where_ctimes_keep_whole_seconds_never_takes_another_inodes_xattrs() {
    let test = "a_name_swapped_where_ctimes_keep_whole_seconds_never_takes_another_inodes_xattrs";
    if !require_root(test) {
        return;
    }
    let Some(image) = LoopFs::new("ext4", &["-I", "128", "-b", "4096"]) else {
        return;
    };
    swap_names_during_runs(&image.mount.join("tree"));
}

/// Builds the 8 directories under `root`, ages them, and runs 20 forward and
/// reverse shifts while a racer swaps "f" and "g" in each, checking every inode
/// after every run.
fn swap_names_during_runs(root: &Path) {
    let dirs: Vec<PathBuf> = (0..8).map(|i| root.join(format!("d{i}"))).collect();
    let mut marked = Vec::new();
    for dir in &dirs {
        fs::create_dir_all(dir).unwrap();
        file(&dir.join("f"), 0, 0o755, true);
        set_xattr(&dir.join("f"), ACL, &acl_naming(1000));
        file(&dir.join("g"), 0, 0o755, false);
        for i in 0..40 {
            set_xattr(&dir.join("g"), &format!("user.padding{i}"), b"x");
        }
        marked.push(ino(&dir.join("f")));
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let stop = Arc::new(AtomicBool::new(false));
    // Held by the checks: the racer pauses while the tree is looked at.
    let pause = Arc::new(Mutex::new(()));
    let racer = {
        let (stop, pause, dirs) = (stop.clone(), pause.clone(), dirs.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _running = pause.lock().unwrap();
                for dir in &dirs {
                    renameat2_exchange(dir, "f", "g");
                    swaps += 1;
                }
            }
            swaps
        })
    };
    // Each marked inode keeps its capability and ACL, shifted exactly when its
    // owner is (a swap may make a run visit an inode twice or not at all).
    let check = |what: &str| {
        let _paused = pause.lock().unwrap();
        for dir in &dirs {
            for name in ["f", "g"] {
                let path = dir.join(name);
                let uid = owner(&path).0;
                let (caps, acl_now) = (get_xattr(&path, CAPS), get_xattr(&path, ACL));
                if !marked.contains(&ino(&path)) {
                    assert_eq!(
                        (&caps, &acl_now),
                        (&None, &None),
                        "{what}: {}",
                        path.display()
                    );
                    continue;
                }
                let expected = match uid {
                    HOST_FIRST => (
                        Some(caps_v3(HOST_FIRST)),
                        Some(acl_naming(HOST_FIRST + 1000)),
                    ),
                    0 => (Some(caps_v2(NET_RAW, true)), Some(acl_naming(1000))),
                    other => panic!("{what}: {} owned by {other}", path.display()),
                };
                assert_eq!((caps, acl_now), expected, "{what}: {}", path.display());
            }
        }
    };
    let tool = Tool::new();
    for round in 0..20 {
        for extra in [&[][..], &["--reverse"][..]] {
            let out = tool.shift(root, &[extra, &["--threads", "1"]].concat());
            let code = out.status.code();
            assert!(
                matches!(code, Some(0 | 1)),
                "round {round} {extra:?}: {:?}\n{}",
                out.status,
                text(&out.stderr)
            );
            check(&format!("round {round} {extra:?}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    assert!(swaps > 1000, "the racer made only {swaps} swaps");
}
