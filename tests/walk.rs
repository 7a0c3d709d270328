//! The walker's limits: trees far deeper than the open-file limit allows fds for,
//! directories far larger than one read batch, and idempotent repeated runs.

mod common;

use common::{assert_exit, counter, require_root, Tool, MAP};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Builds a chain of `depth` directories "d", each holding a file "f", relative to
/// fds: the paths are far longer than PATH_MAX.
fn deep_chain(root: &Path, depth: usize) {
    let open = |dir: &OwnedFd| {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        rustix::fs::openat(dir, "d", flags, Mode::empty()).unwrap()
    };
    let mut dir: OwnedFd =
        rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
        let file_flags = OFlags::CREATE | OFlags::WRONLY;
        drop(rustix::fs::openat(&dir, "f", file_flags, Mode::from_raw_mode(0o644)).unwrap());
        dir = open(&dir);
    }
}

/// Counts the inodes of the chain owned by `uid`, walking it by fds as well.
fn chain_owned_by(root: &Path, uid: u32) -> (usize, usize) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
    let mut dir: OwnedFd = rustix::fs::open(root, flags, Mode::empty()).unwrap();
    let (mut owned, mut total) = (0, 0);
    loop {
        for name in ["d", "f"] {
            let Ok(st) = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            else {
                return (owned, total);
            };
            total += 1;
            owned += usize::from(st.st_uid == uid);
        }
        dir = rustix::fs::openat(&dir, "d", flags, Mode::empty()).unwrap();
    }
}

/// 10,000 levels with only 64 file descriptors allowed: every inode is shifted and
/// shifted back.
#[test]
fn ten_thousand_levels_with_64_fds() {
    if !require_root("ten_thousand_levels_with_64_fds") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    deep_chain(&root, 10_000);
    let tool = Tool::new();
    for (extra, uid) in [(&[][..], 1_000_000), (&["--reverse"][..], 0)] {
        let mut args = vec![
            "--nofile=64".into(),
            "--".into(),
            common::bin().into_os_string(),
        ];
        args.extend(tool.shift_args(&root, extra));
        let out = common::command("prlimit")
            .args(&args)
            .output()
            .expect("prlimit (util-linux)");
        assert_exit(
            &out,
            0,
            &format!("shift {extra:?} under prlimit --nofile=64"),
        );
        assert_eq!(
            chain_owned_by(&root, uid),
            (20_000, 20_000),
            "after {extra:?}"
        );
        assert_eq!(std::fs::metadata(&root).unwrap().uid(), uid);
    }
}

/// A directory of 20,000 entries is read in several batches, shifted in parallel,
/// each entry once.
#[test]
fn huge_directory_in_batches() {
    if !require_root("huge_directory_in_batches") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    for i in 0..20_000 {
        std::fs::write(root.join(format!("f{i}")), b"").unwrap();
        std::os::unix::fs::lchown(root.join(format!("f{i}")), Some(i % 1000), None).unwrap();
    }
    let tool = Tool::new();
    let (out, report) = tool.shift_json(&root, &[]);
    assert_exit(&out, 0, "forward");
    assert_eq!(counter(&report, "inodes_seen"), 20_001);
    assert_eq!(counter(&report, "changed"), 20_001);
    for i in (0..20_000).step_by(997) {
        let meta = std::fs::symlink_metadata(root.join(format!("f{i}"))).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1_000_000 + i % 1000, 1_000_000));
    }
}

/// Running the same command twice changes nothing the second time, in both
/// directions, and `status` tells what the journal holds.
#[test]
fn repeated_runs_change_nothing_and_status_reports() {
    if !require_root("repeated_runs_change_nothing_and_status_reports") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    lxc_idshift::sample::build_sample_rootfs(&root).unwrap();
    let original = common::collect(&root);
    let tool = Tool::new();
    tool.shift_ok(&root, &[]);
    let shifted = common::collect(&root);
    let (out, again) = tool.shift_json(&root, &[]);
    assert_exit(&out, 0, "second forward");
    assert_eq!(counter(&again, "changed"), 0, "{again}");
    common::assert_same(&shifted, &common::collect(&root), "second forward");

    let status = common::run(&[
        "status".into(),
        root.clone().into_os_string(),
        "--journal".into(),
        tool.journal().into_os_string(),
        "--json".into(),
    ]);
    assert_exit(&status, 0, "status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(status["maps"], MAP, "{status}");
    assert_eq!(status["runs"].as_array().unwrap().len(), 2, "{status}");

    tool.shift_ok(&root, &["--reverse"]);
    common::assert_same(&original, &common::collect(&root), "reverse");
    let (out, again) = tool.shift_json(&root, &["--reverse"]);
    assert_exit(&out, 0, "second reverse");
    assert_eq!(counter(&again, "changed"), 0, "{again}");
    common::assert_same(&original, &common::collect(&root), "second reverse");
}
