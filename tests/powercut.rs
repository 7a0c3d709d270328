//! Power cuts in a virtual machine running a Debian kernel: the journal's promise
//! ("SIGKILL or power cut at any moment: run the same command to finish, or go
//! the other way to get back exactly the tree you had") tested where a process
//! kill cannot reach, the file system's own journal. The guest shifts a tree on a
//! virtio disk, forward then back; QEMU is SIGKILLed at a seeded random moment; the
//! host replays the file system's log, checks it, and recovers with the binary.
//!
//! LXC_IDSHIFT_POWERCUTS (cuts per file system, default 6), LXC_IDSHIFT_POWERCUT_SEED
//! (base seed, default from the clock; cut i uses base+i), LXC_IDSHIFT_VM_KERNEL
//! (6.1 by default; scripts/vm/setup.sh fetches it), LXC_IDSHIFT_POWERCUT_FOCUS=undo
//! (every cut in the forward run, recovered by going back at once).

mod common;

use common::vm::{self, Guest, Vm};
use common::*;
use lxc_idshift::manifest::Manifest;
use lxc_idshift::sample::{build_bulk_tree, build_host_range_inodes};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Inodes of the bulk tree: a forward run lasts several seconds under TCG, so the
/// tool's group commits and ext4's 5 s commit timer fall inside it.
const BULK_INODES: usize = 12_000;
/// Inodes holding host-range ids before any shift: those a broken undo loses.
const HOST_RANGE_INODES: usize = 300;
/// Cuts fall uniformly over this much of an uninterrupted forward plus reverse:
/// the tail past 1.0 lands after the reverse's end.
const SPREAD: f64 = 1.1;
const GUEST_LIMIT: Duration = Duration::from_secs(600);

/// QEMU under TCG takes both cores: one guest at a time, whatever the test threads.
static ONE_GUEST_AT_A_TIME: Mutex<()> = Mutex::new(());

struct FsKind {
    name: &'static str,
    fstype: &'static str,
    mkfs: &'static [&'static str],
}

#[test]
fn powercut_ext4_256_byte_inodes() {
    powercut(&FsKind {
        name: "ext4-256",
        fstype: "ext4",
        mkfs: &["-I", "256", "-N", "60000"],
    });
}

/// ctimes keep whole seconds here: the journal tells touched from untouched
/// inodes to the second.
#[test]
fn powercut_ext4_128_byte_inodes() {
    powercut(&FsKind {
        name: "ext4-128",
        fstype: "ext4",
        mkfs: &["-I", "128", "-N", "60000"],
    });
}

#[test]
fn powercut_xfs() {
    powercut(&FsKind {
        name: "xfs",
        fstype: "xfs",
        mkfs: &[],
    });
}

#[test]
fn powercut_btrfs() {
    powercut(&FsKind {
        name: "btrfs",
        fstype: "btrfs",
        mkfs: &[],
    });
}

fn powercut(kind: &FsKind) {
    if !require_root(&format!("powercut {}", kind.name)) {
        return;
    }
    let _turn = ONE_GUEST_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(vm) = vm::vm(&bin()) else { return };
    let Some(lab) = Lab::new(kind, &vm) else {
        return;
    };
    let mut calibration = calibrate(&lab);
    let (cuts, base) = (cuts_per_fs(), base_seed());
    eprintln!(
        "powercut {}: {cuts} cuts, base seed {base:#x}, kernel {} ({:?})",
        kind.name, vm.kernel.version, vm.accel
    );
    let started = Instant::now();
    let failures: Vec<String> = (0..cuts as u64)
        .filter_map(|i| lab.cut(&mut calibration, base.wrapping_add(i)).err())
        .collect();
    let each = started.elapsed() / cuts.max(1) as u32;
    eprintln!(
        "powercut {}: {cuts} cuts in {:.1?} ({each:.1?} per cut), {} failed",
        kind.name,
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "powercut {}: {} of {cuts} cuts broke the promise:\n\n{}",
        kind.name,
        failures.len(),
        failures.join("\n\n")
    );
}

fn cuts_per_fs() -> usize {
    std::env::var("LXC_IDSHIFT_POWERCUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// From the environment (hex with 0x, or decimal), else from the clock so that
/// every CI run cuts at new points; always printed.
fn base_seed() -> u64 {
    let given = std::env::var("LXC_IDSHIFT_POWERCUT_SEED").ok();
    let parsed = given.as_deref().map(|text| match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    });
    match parsed {
        Some(Ok(seed)) => seed,
        Some(Err(e)) => panic!("LXC_IDSHIFT_POWERCUT_SEED={given:?}: {e}"),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// splitmix64: one seed gives the cut's moment and its recovery path.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Times of an uninterrupted run in the guest, host clock, marker to marker.
/// Under TCG they follow the host's load: every cut that saw a run end updates
/// them, so the cuts keep landing inside the runs.
struct Calibration {
    forward: Duration,
    reverse: Duration,
}

impl Calibration {
    /// The span the cuts fall in, from the forward run's start marker: the
    /// forward run alone when only undos are tested (LXC_IDSHIFT_POWERCUT_FOCUS=undo).
    fn window(&self) -> Duration {
        let whole = match focus_on_undo() {
            true => self.forward,
            false => self.forward + self.reverse,
        };
        whole.mul_f64(SPREAD)
    }

    fn learn(&mut self, guest: &Guest) {
        let at = |marker| guest.marker(marker).map(|line| line.at);
        let (fwd_start, fwd_end) = (at("PC-FWD-START"), at("PC-FWD-END"));
        let (rev_start, rev_end) = (at("PC-REV-START"), at("PC-REV-END"));
        if let (Some(start), Some(end)) = (fwd_start, fwd_end) {
            self.forward = end - start;
        }
        if let (Some(start), Some(end)) = (rev_start, rev_end) {
            self.reverse = end - start;
        }
    }
}

/// LXC_IDSHIFT_POWERCUT_FOCUS=undo: every cut falls in the forward run and is
/// recovered by going back at once, the path where a lost ctime shows.
fn focus_on_undo() -> bool {
    std::env::var("LXC_IDSHIFT_POWERCUT_FOCUS").as_deref() == Ok("undo")
}

/// One file system: its image (mounted at the path the guest uses too, because
/// the journal records the tree's path), a pristine copy every cut starts from,
/// and the manifests a correct run gives.
struct Lab<'vm> {
    kind: &'vm FsKind,
    vm: &'vm Vm,
    fs: LoopFs,
    pristine: PathBuf,
    _pristine_dir: tempfile::TempDir,
    original: Manifest,
    shifted: Manifest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Forward,
    Reverse,
}

impl Dir {
    fn flag(self) -> &'static [&'static str] {
        match self {
            Dir::Forward => &[],
            Dir::Reverse => &["--reverse"],
        }
    }

    fn other(self) -> Dir {
        match self {
            Dir::Forward => Dir::Reverse,
            Dir::Reverse => Dir::Forward,
        }
    }
}

impl<'vm> Lab<'vm> {
    fn new(kind: &'vm FsKind, vm: &'vm Vm) -> Option<Lab<'vm>> {
        let fs = LoopFs::new(kind.fstype, kind.mkfs)?;
        let lab_tree = fs.mount.join("tree");
        std::fs::create_dir(&lab_tree).unwrap();
        std::fs::create_dir(fs.mount.join("journal")).unwrap();
        build_bulk_tree(&lab_tree, BULK_INODES).unwrap();
        build_host_range_inodes(&lab_tree, HOST_RANGE_INODES).unwrap();
        let original = collect(&lab_tree);
        let shifted = without_acl_aliases(expected_forward(&original));
        fs.unmount();
        let pristine_dir = tempfile::tempdir().unwrap();
        let pristine = pristine_dir.path().join("pristine");
        sparse_copy(&fs.image, &pristine);
        Some(Lab {
            kind,
            vm,
            fs,
            pristine,
            _pristine_dir: pristine_dir,
            original,
            shifted,
        })
    }

    fn tree(&self) -> PathBuf {
        self.fs.mount.join("tree")
    }

    fn journal(&self) -> PathBuf {
        self.fs.mount.join("journal/j")
    }

    /// The tree's manifest, to compare with the one a correct run in `dir` gives.
    /// XFS shows its on-disk ACLs again as trusted.SGI_ACL_*, which the expected
    /// forward result cannot know: compared through system.posix_acl_* there, and
    /// byte for byte against the original.
    fn actual(&self, dir: Dir) -> Manifest {
        let manifest = collect(&self.tree());
        match dir {
            Dir::Forward => without_acl_aliases(manifest),
            Dir::Reverse => manifest,
        }
    }

    fn want(&self, dir: Dir) -> &Manifest {
        match dir {
            Dir::Forward => &self.shifted,
            Dir::Reverse => &self.original,
        }
    }

    /// A guest running `steps` (fwd,rev) on a fresh copy of the pristine image.
    fn boot_fresh(&self, steps: &str) -> Guest {
        sparse_copy(&self.pristine, &self.fs.image);
        self.boot_as_is(steps)
    }

    /// A guest running `steps` on the image as the last guest or host left it.
    fn boot_as_is(&self, steps: &str) -> Guest {
        let params = format!(
            "pc_fs={} pc_mnt={} pc_tree={} pc_journal={} pc_map={MAP} pc_steps={steps}",
            self.kind.fstype,
            self.fs.mount.display(),
            self.tree().display(),
            self.journal().display()
        );
        let vm = self.vm;
        Guest::boot(
            &vm.kernel,
            &vm.initramfs,
            vm.accel,
            Some(&self.fs.image),
            &params,
        )
    }
}

fn without_acl_aliases(mut manifest: Manifest) -> Manifest {
    for entry in manifest.entries.values_mut() {
        let alias = |name: &Vec<u8>| name.starts_with(b"trusted.SGI_ACL_");
        entry.xattrs.retain(|name, _| !alias(name));
    }
    manifest
}

fn sparse_copy(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("--sparse=always").arg(from).arg(to));
}

/// Two uninterrupted boots: forward alone, its result checked; then forward and
/// reverse as a cut boot runs them (the reverse finds warm caches there), timed,
/// and the round trip checked.
fn calibrate(lab: &Lab) -> Calibration {
    let mut guest = lab.boot_fresh("fwd");
    let ready = wait_marker(&mut guest, "PC-READY");
    let boot = ready.at - guest.started;
    timed_step(&mut guest, "FWD");
    assert!(guest.wait_exit(GUEST_LIMIT), "the guest did not power off");
    lab.fs.mount();
    let shifted = lab.actual(Dir::Forward);
    assert_same(&lab.shifted, &shifted, "forward in the guest");
    lab.fs.unmount();
    let mut guest = lab.boot_fresh("fwd,rev");
    let forward = timed_step(&mut guest, "FWD");
    let reverse = timed_step(&mut guest, "REV");
    assert!(guest.wait_exit(GUEST_LIMIT), "the guest did not power off");
    lab.fs.mount();
    let original = lab.actual(Dir::Reverse);
    assert_same(
        &lab.original,
        &original,
        "forward then reverse in the guest",
    );
    lab.fs.unmount();
    eprintln!(
        "powercut {}: boot {boot:.1?}, forward {forward:.1?}, reverse {reverse:.1?} \
         in the guest ({} inodes)",
        lab.kind.name,
        lab.original.entries.len()
    );
    Calibration { forward, reverse }
}

fn wait_marker(guest: &mut Guest, marker: &str) -> vm::Line {
    guest.wait_for(marker, GUEST_LIMIT).unwrap_or_else(|| {
        panic!(
            "the guest never said {marker}; its console:\n{}",
            guest.tail(40)
        )
    })
}

/// Host time from PC-STEP-START to PC-STEP-END, which must say rc=0.
fn timed_step(guest: &mut Guest, step: &str) -> Duration {
    let start = wait_marker(guest, &format!("PC-{step}-START"));
    let end = wait_marker(guest, &format!("PC-{step}-END"));
    assert!(
        end.text.contains("rc=0"),
        "{step} in the guest failed:\n{}",
        guest.tail(40)
    );
    end.at - start.at
}

/// How the host recovers after a cut: `Same` runs the command that was cut, then
/// the other direction; `Undo` (a cut forward run only) goes back at once, then
/// forward again.
#[derive(Clone, Copy, Debug)]
enum Plan {
    Same,
    Undo,
}

impl Plan {
    fn runs(self, cut: Dir) -> [Dir; 2] {
        match (self, cut) {
            (Plan::Undo, Dir::Forward) => [Dir::Reverse, Dir::Forward],
            _ => [cut, cut.other()],
        }
    }
}

/// Where KEEP_DIR keeps the image of a failed cut for inspection.
const KEEP_DIR: &str = "/var/tmp/lxc-idshift-powercut";

impl Lab<'_> {
    /// One power cut and its recovery; Err says what broke, with everything needed
    /// to look again (seed, class, kept image).
    fn cut(&self, calibration: &mut Calibration, seed: u64) -> Result<(), String> {
        let name = self.kind.name;
        eprintln!("powercut {name} seed={seed:#x}");
        let started = Instant::now();
        let mut rng = Rng(seed);
        let whole = calibration.window();
        let delay = whole.mul_f64(rng.fraction());
        let plan = match rng.next() & 1 == 1 || focus_on_undo() {
            true => Plan::Undo,
            false => Plan::Same,
        };
        let guest = self.cut_guest(delay);
        calibration.learn(&guest);
        let cut = match guest.marker("PC-REV-START") {
            Some(_) => Dir::Reverse,
            None => Dir::Forward,
        };
        let (class, runs, checked) = self.recover(&guest, cut, plan);
        let what = format!(
            "powercut {name} seed={seed:#x} class={class} cut {delay:.2?} after PC-FWD-START \
             (window {whole:.1?}), recovery {runs:?}"
        );
        match checked {
            Ok(()) => {
                eprintln!("{what}: ok in {:.1?}", started.elapsed());
                Ok(())
            }
            Err(why) => Err(self.failed(&what, &why, seed)),
        }
    }

    /// Boots forward then reverse and cuts the power `delay` after the forward
    /// run's start marker.
    fn cut_guest(&self, delay: Duration) -> Guest {
        let mut guest = self.boot_fresh("fwd,rev");
        let start = wait_marker(&mut guest, "PC-FWD-START");
        guest.read_until(start.at + delay);
        guest.power_cut();
        guest
    }

    /// After the cut: the file system's log replayed by a mount, a clean check, a
    /// copy of the image as the cut left it, the cut classified, and the recovery
    /// runs checked against the manifests. Returns the class and the runs.
    fn recover(
        &self,
        guest: &Guest,
        cut: Dir,
        plan: Plan,
    ) -> (String, [Dir; 2], Result<(), String>) {
        drop(self.mounted());
        if let Err(why) = self.fsck() {
            return ("unknown".into(), plan.runs(cut), Err(why));
        }
        sparse_copy(&self.fs.image, &self.after_cut());
        let mounted = self.mounted();
        let class = classify(guest, &self.journal_text());
        let runs = self.runs_for(cut, plan);
        let checked = runs.iter().try_for_each(|&dir| self.recovery_run(dir));
        drop(mounted);
        (class, runs, checked)
    }

    /// A forward run cut before its journal reached the disk never began: going
    /// back from there is a plain reverse of an unshifted tree, which no journal
    /// can turn into an undo. Such a cut is recovered the same way instead.
    fn runs_for(&self, cut: Dir, plan: Plan) -> [Dir; 2] {
        let journal = self.journal();
        let on_disk = std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0)
            || journal.with_extension("done").exists();
        match on_disk {
            true => plan.runs(cut),
            false => Plan::Same.runs(cut),
        }
    }

    /// The image as the cut left it (log replayed), kept when its recovery fails.
    fn after_cut(&self) -> PathBuf {
        self._pristine_dir.path().join("after-cut")
    }

    fn recovery_run(&self, dir: Dir) -> Result<(), String> {
        let mut args: Vec<std::ffi::OsString> = vec!["shift".into(), self.tree().into()];
        args.extend(["--map".into(), MAP.into(), "--journal".into()]);
        args.push(self.journal().into());
        args.extend(dir.flag().iter().map(Into::into));
        let out = run(&args);
        if !out.status.success() {
            return Err(format!(
                "recovery {dir:?} exited {:?}\nstdout: {}\nstderr: {}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
        let diff = self.want(dir).diff(&self.actual(dir), 30);
        if diff.is_empty() {
            return Ok(());
        }
        Err(format!(
            "after recovery {dir:?}, expected (left) and actual (right) differ:\n{}",
            diff.join("\n")
        ))
    }

    /// The journal, or the `.done` copy a run that returned the tree to its start
    /// renames it to.
    fn journal_text(&self) -> String {
        let journal = self.journal();
        let retired = journal.with_extension("done");
        std::fs::read_to_string(&journal)
            .or_else(|_| std::fs::read_to_string(retired))
            .unwrap_or_default()
    }

    fn mounted(&self) -> Mounted<'_> {
        self.fs.mount();
        Mounted(&self.fs)
    }

    /// The file system's own checker, read-only, on the unmounted image.
    fn fsck(&self) -> Result<(), String> {
        let image = &self.fs.image;
        let mut check = match self.kind.fstype {
            "ext4" => Command::new("e2fsck"),
            "xfs" => Command::new("xfs_repair"),
            _ => Command::new("btrfs"),
        };
        match self.kind.fstype {
            "ext4" => check.arg("-fn"),
            "xfs" => check.arg("-n"),
            _ => check.args(["check", "--readonly"]),
        };
        let out = check.arg(image).output().expect("running the fsck");
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{check:?} after the log replay: {:?}\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        ))
    }

    /// Keeps the image, and says everything about the failed cut.
    fn failed(&self, what: &str, why: &str, seed: u64) -> String {
        std::fs::create_dir_all(KEEP_DIR).unwrap();
        let kept = |what: &str| {
            Path::new(KEEP_DIR).join(format!("{}-{seed:#x}-{what}.img", self.kind.name))
        };
        let (cut, recovered) = (kept("cut"), kept("recovered"));
        if self.after_cut().exists() {
            sparse_copy(&self.after_cut(), &cut);
        }
        sparse_copy(&self.fs.image, &recovered);
        let message = format!(
            "{what}: FAILED\n{why}\nimages kept: {} (as the cut left it), {} (after the \
             recovery); the journal records the tree at {}",
            cut.display(),
            recovered.display(),
            self.tree().display()
        );
        eprintln!("{message}");
        message
    }
}

/// Unmounts on drop, also when a check panics.
struct Mounted<'a>(&'a LoopFs);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        self.0.unmount();
    }
}

/// What the journal's lines say about one run.
#[derive(Default)]
struct RunLines {
    reverse: bool,
    writing: bool,
    progress: Option<u64>,
    done: bool,
}

fn journal_runs(journal: &str) -> Vec<RunLines> {
    let mut runs: Vec<RunLines> = Vec::new();
    for line in journal.lines() {
        // The last line may be torn by the cut: it does not count.
        let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let tag = line["t"].as_str().unwrap_or("");
        match (tag, runs.last_mut()) {
            ("run", _) => runs.push(RunLines {
                reverse: line["direction"] == "Reverse",
                ..RunLines::default()
            }),
            ("writing", Some(run)) => run.writing = true,
            ("progress", Some(run)) => run.progress = line["inodes"].as_u64(),
            ("done", Some(run)) => run.done = true,
            _ => {}
        }
    }
    runs
}

/// Where the cut fell, from the serial markers and the journal's lines: before
/// the first write, mid-walk (with the progress the journal had committed), after
/// the journal said done, between the runs, or the same in the reverse.
fn classify(guest: &Guest, journal: &str) -> String {
    let reverse = guest.marker("PC-REV-START").is_some();
    let (step, end) = match reverse {
        true => ("rev", "PC-REV-END"),
        false => ("fwd", "PC-FWD-END"),
    };
    let runs = journal_runs(journal);
    let Some(run) = runs.last().filter(|run| run.reverse == reverse) else {
        // A journal without this run's line: its direction never reached the disk.
        let class = match journal.trim().is_empty() {
            true => "before-journal",
            false => "journal-without-run",
        };
        return format!("{step}:{class}");
    };
    let class = match (run.writing, run.done) {
        (false, _) => "before-first-write",
        (true, false) => "mid-walk",
        (true, true) if guest.marker(end).is_none() => "after-done",
        (true, true) if !reverse => "between-runs",
        (true, true) => "after-end",
    };
    match (class, run.progress) {
        ("mid-walk", Some(inodes)) => format!("{step}:{class}(progress {inodes})"),
        _ => format!("{step}:{class}"),
    }
}
