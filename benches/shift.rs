//! Criterion benchmark of a forward + reverse round trip of a 20,000-inode bulk tree,
//! through the release binary (benches get no CARGO_BIN_EXE_*): build it first with
//! `cargo build --release`. Needs root; skips with a message otherwise.

use criterion::{criterion_group, criterion_main, Criterion};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const MAP: &str = "b:0:1000000:65536";
const INODES: usize = 20_000;

/// target/release/lxc-idshift, honouring CARGO_TARGET_DIR.
fn release_binary() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let bin = target.join("release").join("lxc-idshift");
    bin.is_file().then_some(bin)
}

fn shift(bin: &Path, dir: &Path, journal: &Path, reverse: bool) {
    let mut cmd = Command::new(bin);
    cmd.arg("shift")
        .arg(dir)
        .args(["--map", MAP, "--journal"])
        .arg(journal);
    if reverse {
        cmd.arg("--reverse");
    }
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .expect("cannot run lxc-idshift");
    assert!(status.success(), "lxc-idshift failed: {status}");
}

fn round_trip(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: the shift benchmark needs root");
        return;
    }
    let Some(bin) = release_binary() else {
        eprintln!("SKIPPED: no target/release/lxc-idshift; run `cargo build --release` first");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (tree, journal) = (tmp.path().join("tree"), tmp.path().join("journal"));
    std::fs::create_dir(&tree).unwrap();
    lxc_idshift::sample::build_bulk_tree(&tree, INODES).expect("bulk tree");
    let mut group = c.benchmark_group("shift");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("round_trip_20k_inodes", |b| {
        b.iter(|| {
            shift(&bin, &tree, &journal, false);
            shift(&bin, &tree, &journal, true);
        })
    });
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
