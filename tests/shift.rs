//! End-to-end shifts of real trees through the binary (root only).

mod common;

use common::*;
use lxc_idshift::sample::{build_bulk_tree, paths};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// A reverse after a forward restores every bit of metadata of the sample rootfs.
#[test]
fn round_trip_restores_everything() {
    if !require_root("round_trip_restores_everything") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let tool = Tool::new();
    let orig = collect(&root);
    tool.shift_ok(&root, &[]);
    tool.shift_ok(&root, &["--reverse"]);
    assert_same(&orig, &collect(&root), "after forward + reverse");
}

/// Maps of other shapes, as LXC configs carry them: users and groups on different
/// host ranges, and a hole sharing host user 1000 with the container (its files,
/// ACL entries and a capability's rootid around it). The forward tree equals the
/// independent expectation, the reverse gives back every bit.
#[test]
fn maps_with_holes_and_split_ranges_round_trip_exactly() {
    if !require_root("maps_with_holes_and_split_ranges_round_trip_exactly") {
        return;
    }
    for (name, map) in [("hole", &HOLE), ("split", &SPLIT)] {
        let (_tmp, root) = sample_tree();
        let shared = root.join("home-of-1000");
        fs::write(&shared, "shared with the host").unwrap();
        std::os::unix::fs::chown(&shared, Some(1000), Some(1000)).unwrap();
        let acl = "u:1000:rw,u:999:r,u:1001:r,g:1000:r";
        let set = std::process::Command::new("setfacl")
            .args(["-m", acl])
            .arg(&shared)
            .status()
            .unwrap();
        assert!(set.success(), "setfacl");
        let orig = collect(&root);
        let tool = Tool::with_map(map);
        tool.shift_ok(&root, &[]);
        let shifted = collect(&root);
        assert_same(&expected_forward_with(&orig, map), &shifted, name);
        let meta = fs::metadata(&shared).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (map.id(true, 1000), map.id(false, 1000))
        );
        tool.shift_ok(&root, &["--reverse"]);
        assert_same(
            &orig,
            &collect(&root),
            &format!("{name}: after the reverse"),
        );
    }
}

/// The forward result equals the independently computed expectation.
#[test]
fn forward_matches_independent_expectation() {
    if !require_root("forward_matches_independent_expectation") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let tool = Tool::new();
    let expected = expected_forward(&collect(&root));
    let (out, report) = tool.shift_json(&root, &[]);
    assert_exit(&out, 0, "forward --json");
    assert_same(&expected, &collect(&root), "after forward");
    assert!(counter(&report, "setid_restored") >= 4, "{report}");
    assert!(counter(&report, "capabilities") >= 2, "{report}");
    // Four inodes carry ACLs; odd-acl.txt names only the unmapped id 70000 and stays.
    assert_eq!(counter(&report, "acls"), 3, "{report}");
    assert!(counter(&report, "unmapped") >= 1, "{report}");
    assert_eq!(counter(&report, "errors"), 0, "{report}");
}

/// Inside a user namespace mapped like the container, root's files are 0:0, the
/// setuid bit survived and the capability is visible.
#[test]
fn container_root_sees_its_files() {
    if !require_root("container_root_sees_its_files") {
        return;
    }
    let (_tmp, root) = sample_tree();
    Tool::new().shift_ok(&root, &[]);
    let path = |rel: &str| root.join(rel).to_str().unwrap().to_string();
    let files = [
        paths::ROOT_FILE,
        paths::SETUID_ROOT,
        paths::SETGID,
        paths::UNMAPPED,
        paths::HOST_RANGE,
    ];
    let mut stat = vec!["stat", "-c", "%u %g %a"];
    let full: Vec<String> = files.iter().map(|f| path(f)).collect();
    stat.extend(full.iter().map(String::as_str));
    let out = run_as_container_root(&stat);
    assert_exit(&out, 0, "stat in the user namespace");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "0 0 644",
            "0 0 4755",
            "0 5 2755",
            "65534 65534 644",
            "33 33 644"
        ],
        "stat of {files:?} as container root"
    );
    let cap = path(paths::CAP_NET_RAW);
    let out = run_as_container_root(&["getcap", &cap]);
    assert_exit(&out, 0, "getcap in the user namespace");
    assert!(
        text(&out.stdout).contains("cap_net_raw=ep"),
        "getcap inside: {}",
        text(&out.stdout)
    );
}

/// A symlink to a file outside the tree is not followed: the target keeps its owner.
#[test]
fn symlinks_out_of_the_tree_are_not_followed() {
    if !require_root("symlinks_out_of_the_tree_are_not_followed") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("secret");
    fs::write(&target, b"host file").unwrap();
    std::os::unix::fs::lchown(&target, Some(0), Some(0)).unwrap();
    symlink(&target, root.join("escape-file")).unwrap();
    symlink(outside.path(), root.join("escape-dir")).unwrap();
    Tool::new().shift_ok(&root, &[]);
    assert_eq!(owner(&target).0, 0, "file behind a symlink was shifted");
    assert_eq!(owner(&target).1, 0);
    assert_eq!(
        owner(outside.path()).0,
        0,
        "directory behind a symlink was shifted"
    );
    assert_eq!(
        owner(&root.join("escape-file")).0,
        1_000_000,
        "the symlink itself is shifted"
    );
}

/// A filesystem mounted inside the tree is skipped, and the report says so.
#[test]
fn mount_points_are_not_crossed() {
    if !require_root("mount_points_are_not_crossed") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let Some(_guard) = MountGuard::tmpfs(&mnt) else {
        return;
    };
    fs::write(mnt.join("inside"), b"other fs").unwrap();
    let (out, report) = Tool::new().shift_json(&root, &[]);
    assert_exit(&out, 0, "forward with a mount inside");
    assert_eq!(
        owner(&mnt.join("inside")).0,
        0,
        "file on the mounted fs was shifted"
    );
    assert_eq!(owner(&mnt).0, 0, "root of the mounted fs was shifted");
    assert!(counter(&report, "mount_points_skipped") >= 1, "{report}");
    assert_eq!(owner(&root.join(paths::ROOT_FILE)).0, 1_000_000);
}

/// Names of one inode in different directories are shifted once, keep their mode
/// and caps, and come back exactly on reverse (a second visit must not be taken for
/// an inode that already had host ids).
#[test]
fn hardlinks_are_shifted_once() {
    if !require_root("hardlinks_are_shifted_once") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for dir in ["a", "b", "c"] {
        fs::create_dir(root.join(dir)).unwrap();
    }
    fs::write(root.join("a/plain"), b"x").unwrap();
    std::os::unix::fs::lchown(root.join("a/plain"), Some(5), Some(6)).unwrap();
    fs::hard_link(root.join("a/plain"), root.join("b/plain")).unwrap();
    fs::hard_link(root.join("a/plain"), root.join("c/plain")).unwrap();
    fs::write(root.join("a/suid"), b"x").unwrap();
    fs::set_permissions(
        root.join("a/suid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("a/suid"), root.join("b/suid")).unwrap();
    let orig = collect(root);
    let tool = Tool::new();
    let (out, report) = tool.shift_json(root, &[]);
    assert_exit(&out, 0, "forward");
    let after = collect(root);
    assert_same(&expected_forward(&orig), &after, "after forward");
    for name in ["a/plain", "b/plain", "c/plain"] {
        assert_eq!(
            owner(&root.join(name)),
            (1_000_005, 1_000_006, 0o644),
            "{name}"
        );
    }
    assert_eq!(owner(&root.join("b/suid")), (1_000_000, 1_000_000, 0o4755));
    let ino = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().ino();
    assert_eq!(ino("a/plain"), ino("c/plain"));
    // root dir, a, b, c, plain, suid: six inodes, each changed once.
    assert_eq!(counter(&report, "changed"), 6, "{report}");
    assert!(counter(&report, "hardlinks") >= 1, "{report}");
    tool.shift_ok(root, &["--reverse"]);
    assert_same(&orig, &collect(root), "after reverse");
}

/// Ids in no range stay; ids already in the host range stay through forward and reverse.
#[test]
fn unmapped_and_host_range_ids_stay() {
    if !require_root("unmapped_and_host_range_ids_stay") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let tool = Tool::new();
    let (host, stray) = (root.join(paths::HOST_RANGE), root.join(paths::UNMAPPED));
    tool.shift_ok(&root, &[]);
    assert_eq!(
        owner(&host),
        (1_000_033, 1_000_033, 0o644),
        "host-range file after forward"
    );
    assert_eq!(
        owner(&stray),
        (70_000, 70_000, 0o644),
        "unmapped file after forward"
    );
    assert_eq!(
        owner(&root.join("var/lib/mixed")),
        (1_000_100, 70_000, 0o640)
    );
    tool.shift_ok(&root, &["--reverse"]);
    assert_eq!(
        owner(&host),
        (1_000_033, 1_000_033, 0o644),
        "host-range file after reverse"
    );
    assert_eq!(
        owner(&stray),
        (70_000, 70_000, 0o644),
        "unmapped file after reverse"
    );
    assert_eq!(owner(&root.join("var/lib/mixed")), (100, 70_000, 0o640));
}

/// One inode that cannot be changed: exit 1 naming it, the rest shifted; once fixed,
/// the same command finishes the job.
#[test]
fn per_inode_error_then_rerun() {
    if !require_root("per_inode_error_then_rerun") {
        return;
    }
    let (_tmp, root) = sample_tree();
    let locked = root.join("var/www/locked-page.html");
    fs::write(&locked, b"locked").unwrap();
    std::os::unix::fs::lchown(&locked, Some(33), Some(33)).unwrap();
    let expected = expected_forward(&collect(&root));
    let Some(guard) = ImmutableGuard::set(&locked) else {
        return;
    };
    let tool = Tool::new();
    let out = tool.shift(&root, &[]);
    assert_exit(&out, 1, "forward with an immutable file");
    assert!(
        text(&out.stderr).contains("locked-page.html"),
        "stderr does not name the failing path: {}",
        text(&out.stderr)
    );
    assert_eq!(
        owner(&locked).0,
        33,
        "the immutable file cannot have changed"
    );
    // The JSON report names the path once, with what failed and the errno's name.
    let again = tool.shift(&root, &["--json"]);
    assert_exit(&again, 1, "again, with --json");
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let failed = &report["error_paths"][0];
    assert_eq!(failed["path"], locked.to_str().unwrap(), "{report}");
    assert_eq!(failed["errno"], "EPERM", "{report}");
    assert!(failed["message"]
        .as_str()
        .unwrap()
        .starts_with("chown failed"));
    assert_eq!(
        owner(&root.join(paths::ROOT_FILE)).0,
        1_000_000,
        "the others are shifted"
    );
    assert_eq!(
        owner(&root.join(paths::SETUID_ROOT)),
        (1_000_000, 1_000_000, 0o4755)
    );
    drop(guard);
    tool.shift_ok(&root, &[]);
    assert_same(&expected, &collect(&root), "after the re-run");
}

/// Starts a shift and SIGKILLs it after `delay`; true when it was really killed.
fn interrupted(tool: &Tool, root: &Path, extra: &[&str], delay: Duration) -> bool {
    kill_after(&tool.shift_args(root, extra), delay)
}

/// SIGKILL at random moments, then finish (or undo) the job: the tree must always end
/// exactly as after an uninterrupted run. Sizes: LXC_IDSHIFT_KILL_INODES (60000),
/// LXC_IDSHIFT_KILLS (50 runs really killed mid-way).
///
/// Cycle of four: 0 resume a killed forward; 1 resume a killed reverse; 2 undo a killed
/// forward with reverse, then forward again; 3 kill a redundant forward on the shifted
/// tree, then reverse. Even iterations end forward-shifted, odd ones original.
#[test]
fn killed_runs_resume_or_undo_exactly() {
    if !require_root("killed_runs_resume_or_undo_exactly") {
        return;
    }
    let inodes = env_usize("LXC_IDSHIFT_KILL_INODES", 60_000);
    let (victim, reference) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let kills = env_usize("LXC_IDSHIFT_KILLS", 50);
    kill_cycle(victim.path(), reference.path(), inodes, kills, false);
}

/// The same where ctimes keep whole seconds only (ext4 with 128-byte inodes): after
/// a killed first run, the inodes it never reached (those already holding host ids
/// among them) are told from those it changed by their ctime, to the second.
#[test]
fn killed_runs_where_ctimes_keep_whole_seconds() {
    if !require_root("killed_runs_where_ctimes_keep_whole_seconds") {
        return;
    }
    let Some((_images, victim, reference)) = whole_second_trees() else {
        return;
    };
    kill_cycle(&victim, &reference, 15_000, 12, false);
}

/// The same on a tree where every inode carries ACLs (inherited from a default ACL
/// on the root): ACL entries must never be shifted twice or lost.
#[test]
fn killed_runs_on_an_acl_heavy_tree() {
    if !require_root("killed_runs_on_an_acl_heavy_tree") {
        return;
    }
    let (victim, reference) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    kill_cycle(victim.path(), reference.path(), 20_000, 15, true);
}

/// A default ACL on `root`, naming container ids: every inode below inherits it.
fn inherit_acls(root: &Path) {
    use lxc_idshift::sample::{
        acl_xattr, ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ,
    };
    let acl = acl_xattr(&[
        (ACL_USER_OBJ, 7, 0),
        (ACL_USER, 5, 33),
        (ACL_GROUP_OBJ, 5, 0),
        (ACL_GROUP, 7, 100),
        (ACL_MASK, 7, 0),
        (ACL_OTHER, 5, 0),
    ]);
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::lsetxattr(root, "system.posix_acl_default", &acl, flags).unwrap();
}

fn kill_cycle(victim: &Path, reference: &Path, inodes: usize, kills: usize, acl_heavy: bool) {
    let started = Instant::now();
    if acl_heavy {
        inherit_acls(victim);
        inherit_acls(reference);
    }
    build_bulk_tree(victim, inodes).unwrap();
    build_bulk_tree(reference, inodes).unwrap();
    let orig = collect(victim);
    assert_same(
        &orig,
        &collect(reference),
        "two bulk trees from the same seed",
    );
    let t0 = Instant::now();
    Tool::new().shift_ok(reference, &[]);
    let run_time = t0.elapsed();
    let shifted = collect(reference);
    assert_same(
        &expected_forward(&orig),
        &shifted,
        "uninterrupted forward of the bulk tree",
    );
    eprintln!("kill test: {inodes} inodes, one forward takes {run_time:?}");

    let (tool, root, mut rng, mut killed) = (Tool::new(), victim, Lcg(42), 0);
    // A run that ends before its kill proves nothing: go on until `kills` real ones,
    // aiming earlier whenever a run was faster than the kill (the machine's load varies).
    let (mut i, mut max_delay) = (0, run_time);
    while killed < kills {
        assert!(
            i < kills * 4,
            "only {killed} of {i} runs were killed while running"
        );
        let delay = max_delay.mul_f64(rng.fraction());
        let (kill_args, finish): (&[&str], &[&[&str]]) = match i % 4 {
            0 => (&[], &[&[]]),
            1 => (&["--reverse"], &[&["--reverse"]]),
            2 => (&[], &[&["--reverse"], &[]]),
            _ => (&[], &[&["--reverse"]]),
        };
        let was_killed = interrupted(&tool, root, kill_args, delay);
        killed += usize::from(was_killed);
        if !was_killed {
            max_delay = max_delay.mul_f64(0.8);
        }
        for args in finish {
            tool.shift_ok(root, args);
            let (want, what) = if args.is_empty() {
                (&shifted, "forward")
            } else {
                (&orig, "reverse")
            };
            let what = format!("iteration {i}: {what} after a kill at {delay:?}");
            assert_same(want, &collect(root), &what);
        }
        i += 1;
    }
    eprintln!(
        "kill test: {killed} kills in {i} iterations, {:?} in all",
        started.elapsed()
    );
}
