//! The round trip on loop-mounted ext4, xfs and btrfs images: each file system
//! stores ACLs, capabilities and birth times its own way.

mod common;

use common::{assert_same, collect, expected_forward, require_root, LoopFs, Tool};
use std::path::Path;

/// XFS shows its on-disk ACLs again as trusted.SGI_ACL_*: the same ACLs, compared
/// through system.posix_acl_*; the round trip still compares them byte for byte.
fn without_acl_aliases(
    mut manifest: lxc_idshift::manifest::Manifest,
) -> lxc_idshift::manifest::Manifest {
    for entry in manifest.entries.values_mut() {
        entry
            .xattrs
            .retain(|name, _| !name.starts_with(b"trusted.SGI_ACL_"));
    }
    manifest
}

fn round_trip_on(fstype: &str) {
    let Some(fs) = LoopFs::new(fstype, &[]) else {
        return;
    };
    let root: &Path = &fs.mount.join("rootfs");
    std::fs::create_dir(root).unwrap();
    lxc_idshift::sample::build_sample_rootfs(root).unwrap();
    let original = collect(root);
    let tool = Tool::new();
    tool.shift_ok(root, &[]);
    let (expected, actual) = (expected_forward(&original), collect(root));
    let what = format!("{fstype}: forward");
    assert_same(
        &without_acl_aliases(expected),
        &without_acl_aliases(actual),
        &what,
    );
    tool.shift_ok(root, &["--reverse"]);
    assert_same(&original, &collect(root), &format!("{fstype}: round trip"));
}

#[test]
fn round_trip_on_ext4() {
    if require_root("round_trip_on_ext4") {
        round_trip_on("ext4");
    }
}

#[test]
fn round_trip_on_xfs() {
    if require_root("round_trip_on_xfs") {
        round_trip_on("xfs");
    }
}

#[test]
fn round_trip_on_btrfs() {
    if require_root("round_trip_on_btrfs") {
        round_trip_on("btrfs");
    }
}
