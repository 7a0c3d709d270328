//! The round trip on loop-mounted ext4, xfs and btrfs images: each file system
//! stores ACLs, capabilities and birth times its own way.

mod common;

use common::{
    assert_same, collect, expected_forward, kernel_version, require_root, LoopFs, MountGuard, Tool,
};
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

/// Whether each file system takes an idmapped mount on the running kernel, probed
/// as a conversion probes it, against the kernel versions that brought them: ext4
/// and xfs 5.12, btrfs 5.15, tmpfs 6.3. The kernel matrix (tests/kernels.rs) runs it
/// on 5.10, 6.1 and 6.12; the answers printed are the README's kernel table.
#[test]
fn idmapped_mounts_exist_where_the_kernel_brought_them() {
    if !require_root("idmapped_mounts_exist_where_the_kernel_brought_them") {
        return;
    }
    let (major, minor) = kernel_version();
    let mut answers = Vec::new();
    for (fstype, since) in [("ext4", (5, 12)), ("xfs", (5, 12)), ("btrfs", (5, 15))] {
        let Some(fs) = LoopFs::new(fstype, &[]) else {
            return;
        };
        answers.push((fstype, since, probe(&fs.mount)));
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = MountGuard::tmpfs(tmp.path()) else {
        return;
    };
    answers.push(("tmpfs", (6, 3), probe(tmp.path())));
    for (fstype, since, answer) in answers {
        eprintln!(
            "idmapped mounts on {fstype}, Linux {major}.{minor}: {}",
            answer
                .as_ref()
                .map_or_else(|why| format!("no ({why})"), |_| "yes".into())
        );
        assert_eq!(
            answer.is_ok(),
            (major, minor) >= since,
            "{fstype} on {major}.{minor} (since {since:?}): {answer:?}"
        );
    }
}

fn probe(source: &Path) -> Result<(), String> {
    let host = lxc_idshift::lxc::effects::RealHost;
    lxc_idshift::lxc::mounts::idmap_works(&host, source, 1_000_000, 65536)
}
