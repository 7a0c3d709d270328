//! Criterion benchmarks: the per-inode shift (pure), and a journaled forward + reverse
//! round trip, the same round trip by the floor of a safe shift (`engine::floor`:
//! only the system calls the guarantees need) and a dry-run scan of a 20,000-inode
//! rootfs-like tree through the library. The tree benchmarks need root; they say so
//! and skip otherwise.
//! Side-by-side comparison with other tools: scripts/bench-compare.sh.

use criterion::{criterion_group, criterion_main, Criterion};
use lxc_idshift::engine::floor;
use lxc_idshift::engine::idmap::{Direction, IdMap};
use lxc_idshift::engine::meta::Meta;
use lxc_idshift::engine::run::{self, Quiet, ShiftOptions};
use lxc_idshift::sample::{
    acl_xattr, ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ,
};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const MAP: &str = "b:0:1000000:65536";
const INODES: usize = 20_000;

fn map() -> IdMap {
    IdMap::parse(&[MAP]).expect("valid map")
}

fn per_inode(c: &mut Criterion) {
    let map = map();
    let plain = Meta {
        uid: 33,
        gid: 33,
        perm: 0o644,
        acl_access: None,
        acl_default: None,
        caps: None,
    };
    let acl = acl_xattr(&[
        (ACL_USER_OBJ, 7, 0),
        (ACL_USER, 5, 1000),
        (ACL_GROUP_OBJ, 5, 0),
        (ACL_GROUP, 5, 100),
        (ACL_MASK, 7, 0),
        (ACL_OTHER, 0, 0),
    ]);
    let with_acl = Meta {
        acl_access: Some(acl),
        ..plain.clone()
    };
    c.bench_function("shift_meta_plain", |b| {
        b.iter(|| black_box(&plain).shifted(&map, Direction::Forward))
    });
    c.bench_function("shift_meta_acl", |b| {
        b.iter(|| black_box(&with_acl).shifted(&map, Direction::Forward))
    });
}

fn options(tree: &Path, journal: &Path, direction: Direction, dry_run: bool) -> ShiftOptions {
    ShiftOptions {
        root: tree.to_path_buf(),
        map: map(),
        direction,
        dry_run,
        threads: None,
        journal: Some(journal.to_path_buf()),
    }
}

fn tree_walks(c: &mut Criterion) {
    if !lxc_idshift::is_root() {
        eprintln!("SKIPPED: the tree benchmarks need root (they change owners)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (tree, journal) = (tmp.path().join("tree"), tmp.path().join("journal"));
    std::fs::create_dir(&tree).expect("tree dir");
    lxc_idshift::sample::build_bulk_tree(&tree, INODES).expect("bulk tree");
    let mut group = c.benchmark_group("tree_20k_inodes");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    group.bench_function("round_trip", |b| {
        b.iter(|| {
            for direction in [Direction::Forward, Direction::Reverse] {
                let report =
                    run::shift(&options(&tree, &journal, direction, false), &Quiet).expect("shift");
                assert_eq!(report.summary.errors, 0);
            }
        })
    });
    group.bench_function("safe_floor_round_trip", |b| {
        b.iter(|| {
            for reverse in [false, true] {
                let chowned = floor::shift_floor(&tree, reverse, None).expect("floor");
                assert!(chowned > 0);
            }
        })
    });
    group.bench_function("dry_run_scan", |b| {
        b.iter(|| {
            run::shift(&options(&tree, &journal, Direction::Forward, true), &Quiet).expect("scan")
        })
    });
    group.finish();
}

criterion_group!(benches, per_inode, tree_walks);
criterion_main!(benches);
