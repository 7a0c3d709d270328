//! Random sequences of SIGKILLed runs, in both directions and in any order (resumes
//! killed again, undos killed, forward runs after killed undos), on a tree with
//! inodes that held host-range ids before the first run; then one run to its end.
//! The tree must be exactly that direction's tree (root only). The first run of all
//! is a forward one: the tree starts unshifted.
//!
//! Sizes: LXC_IDSHIFT_KILL_SEQUENCES (sequences per test), LXC_IDSHIFT_KILL_SEED
//! (replays a run: the seed is printed; by default a new one each run).

mod common;

use common::*;
use lxc_idshift::manifest::Manifest;
use lxc_idshift::sample::{build_bulk_tree, build_host_range_inodes};
use std::path::Path;
use std::time::{Duration, Instant};

/// The two trees a run can end in, and how long an uninterrupted forward takes.
struct Expected {
    orig: Manifest,
    shifted: Manifest,
    run_time: Duration,
}

fn build(root: &Path, inodes: usize, host_inodes: usize) {
    build_bulk_tree(root, inodes).unwrap();
    build_host_range_inodes(root, host_inodes).unwrap();
}

/// Builds the victim and a reference tree, shifts the reference without
/// interruption and checks it against the independent expectation.
fn expected(victim: &Path, reference: &Path, inodes: usize, map: &TestMap) -> Expected {
    build(victim, inodes, 400);
    build(reference, inodes, 400);
    let orig = collect(victim);
    assert_same(&orig, &collect(reference), "two trees from the same seed");
    let started = Instant::now();
    Tool::with_map(map).shift_ok(reference, &[]);
    let run_time = started.elapsed();
    let shifted = collect(reference);
    assert_same(
        &expected_forward_with(&orig, map),
        &shifted,
        "uninterrupted forward",
    );
    Expected {
        orig,
        shifted,
        run_time,
    }
}

/// Runs `sequences` random sequences of 1 to 4 killed runs, each followed by one
/// run to its end in a random direction, on `victim`.
fn kill_sequences(
    (victim, reference): (&Path, &Path),
    inodes: usize,
    sequences: usize,
    map: &TestMap,
) {
    let seed = env_seed("LXC_IDSHIFT_KILL_SEED");
    eprintln!("kill sequences on {}: seed={seed:#x}", victim.display());
    let want = expected(victim, reference, inodes, map);
    let (tool, mut rng) = (Tool::with_map(map), Lcg(seed));
    let (mut killed, mut runs) = (0, 0);
    // Resumes and undos are shorter than a whole run: the kills aim at the lengths
    // seen, shorter after a run ended before its kill, longer after a kill.
    let mut reach = 1.2;
    let started = Instant::now();
    // A reverse before any forward made its journal would shift a tree that was never
    // shifted: a forward killed before that is no run at all (later, the archived
    // journal makes such a reverse a no-op).
    let journal = tool.journal();
    let began =
        || journal.exists() || lxc_idshift::engine::journal::archive_path(&journal).exists();
    for sequence in 0..sequences {
        let mut story = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let reverse = rng.below(2) == 1 && began();
            let delay = want.run_time.mul_f64(reach * rng.fraction());
            let args: &[&str] = if reverse { &["--reverse"] } else { &[] };
            let was_killed = kill_after(&tool.shift_args(victim, args), delay);
            killed += usize::from(was_killed);
            runs += 1;
            reach = match was_killed {
                true => (reach * 1.1_f64).min(1.2),
                false => (reach * 0.8_f64).max(0.05),
            };
            let end = if was_killed { "killed" } else { "ended" };
            let direction = if reverse { "reverse" } else { "forward" };
            story.push(format!("{direction} {end} at {delay:?}"));
        }
        let reverse = rng.below(2) == 1 && began();
        let (args, wanted, name): (&[&str], _, _) = match reverse {
            true => (&["--reverse"], &want.orig, "reverse"),
            false => (&[], &want.shifted, "forward"),
        };
        tool.shift_ok(victim, args);
        let what = format!(
            "seed {seed:#x}, sequence {sequence}: {}, then a {name} run to its end",
            story.join(", ")
        );
        assert_same(wanted, &collect(victim), &what);
    }
    assert!(
        killed * 3 >= runs,
        "only {killed} of {runs} runs were killed while running: the kills prove little"
    );
    eprintln!(
        "kill sequences: seed={seed:#x}, {sequences} sequences, {killed} of {runs} runs \
         killed, {:?}",
        started.elapsed()
    );
}

#[test]
fn kill_sequences_end_exactly() {
    if !require_root("kill_sequences_end_exactly") {
        return;
    }
    let (victim, reference) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sequences = env_usize("LXC_IDSHIFT_KILL_SEQUENCES", 40);
    kill_sequences(
        (victim.path(), reference.path()),
        20_000,
        sequences,
        &SIMPLE,
    );
}

/// A map with a hole where the bulk tree has owners (its owners are 0..1000): uid
/// and gid 500 shared with the host, as LXC maps a shared user.
const HOLE_AT_500: TestMap = TestMap(&[
    ('u', 0, 1_000_000, 500),
    ('u', 500, 500, 1),
    ('u', 501, 1_000_501, 65_035),
    ('g', 0, 1_000_000, 500),
    ('g', 500, 500, 1),
    ('g', 501, 1_000_501, 65_035),
]);

/// The same with a map that has a hole: its identity piece never moves and is
/// never taken for an id moved already.
#[test]
fn kill_sequences_with_a_map_with_a_hole_end_exactly() {
    if !require_root("kill_sequences_with_a_map_with_a_hole_end_exactly") {
        return;
    }
    let (victim, reference) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sequences = env_usize("LXC_IDSHIFT_KILL_SEQUENCES", 40) / 4;
    kill_sequences(
        (victim.path(), reference.path()),
        12_000,
        sequences.max(4),
        &HOLE_AT_500,
    );
}

/// The same where ctimes keep whole seconds (ext4 with 128-byte inodes): the symlinks
/// among the inodes already in the host range have no birth time and no generation,
/// so only their ctime tells whether a run reached them.
#[test]
fn kill_sequences_where_ctimes_keep_whole_seconds() {
    if !require_root("kill_sequences_where_ctimes_keep_whole_seconds") {
        return;
    }
    let Some((_images, victim, reference)) = whole_second_trees() else {
        return;
    };
    let sequences = env_usize("LXC_IDSHIFT_KILL_SEQUENCES", 40) / 4;
    kill_sequences((&victim, &reference), 12_000, sequences.max(4), &SIMPLE);
}
