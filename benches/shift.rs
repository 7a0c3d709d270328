//! Criterion benchmarks: the per-inode shift (pure), and a journaled forward + reverse
//! round trip and a dry-run scan of a 20,000-inode rootfs-like tree through the
//! library. The tree benchmarks need root; they say so and skip otherwise.
//! Side-by-side comparison with other tools: scripts/bench-compare.sh.

use criterion::{criterion_group, criterion_main, Criterion};
use lxc_idshift::engine::acl::{Acl, AclEntry};
use lxc_idshift::engine::idmap::{Direction, IdMap};
use lxc_idshift::engine::meta::Meta;
use lxc_idshift::engine::run::{self, Quiet, ShiftOptions};
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
    let acl = Acl {
        entries: vec![
            AclEntry {
                tag: 0x01,
                perm: 7,
                id: u32::MAX,
            },
            AclEntry {
                tag: 0x02,
                perm: 5,
                id: 1000,
            },
            AclEntry {
                tag: 0x04,
                perm: 5,
                id: u32::MAX,
            },
            AclEntry {
                tag: 0x08,
                perm: 5,
                id: 100,
            },
            AclEntry {
                tag: 0x10,
                perm: 7,
                id: u32::MAX,
            },
            AclEntry {
                tag: 0x20,
                perm: 0,
                id: u32::MAX,
            },
        ],
    };
    let with_acl = Meta {
        acl_access: Some(acl.to_bytes()),
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
    if !lxc_idshift::engine::sys::is_root() {
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
    group.bench_function("dry_run_scan", |b| {
        b.iter(|| {
            run::shift(&options(&tree, &journal, Direction::Forward, true), &Quiet).expect("scan")
        })
    });
    group.finish();
}

criterion_group!(benches, per_inode, tree_walks);
criterion_main!(benches);
