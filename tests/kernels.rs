//! The kernel matrix: the suites that touch kernel interfaces, run inside VMs on
//! Debian's own kernels (5.10: Debian 11, 6.1: Debian 12, 6.12: Debian 13) beside
//! the host's kernel, which runs them anyway. The guest sees the host's / read-only
//! over virtio-9p and runs the test binaries cargo built beside this one, with a
//! fresh ext4 disk as /tmp; its serial console carries the results back. Each
//! kernel's report says what ran, what passed, which kernel paths a shift took, and
//! what did not run there and why.
//!
//! Needs root, QEMU and the kernels (`bash scripts/vm/setup.sh 5.10 6.1 6.12`), and
//! the other suites built (the README's test command builds them all first;
//! alone: `cargo test --release --no-run`, then `cargo test --release --test kernels`).

mod common;

use common::vm::{Accel, Guest, Initramfs, Kernel, MATRIX_INIT};
use common::{require_root, run_ok, skip};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The whole plan of one kernel must end within this (TCG on 2 cores: about 4 min).
const GUEST_LIMIT: Duration = Duration::from_secs(900);

/// QEMU under TCG takes both cores: one guest at a time.
static ONE_GUEST_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn kernel_5_10() {
    matrix("5.10");
}

#[test]
fn kernel_6_1() {
    matrix("6.1");
}

#[test]
fn kernel_6_12() {
    matrix("6.12");
}

/// One suite of the plan: a test binary and the tests of it that run in the guest.
struct Suite {
    name: &'static str,
    /// The cargo test target; "lib" is the library's unit tests.
    target: &'static str,
    /// Test-name filters (any matches); none: the whole suite.
    filters: &'static [&'static str],
    /// Tests of the suite that run only on some kernels.
    only: &'static [(&'static str, Only)],
}

#[derive(Clone, Copy)]
enum Only {
    /// Needs idmapped mounts (5.12+); before, their refusal is tested instead.
    WithIdmappedMounts,
    /// The walker's own limits over the same syscalls on every kernel: the oldest
    /// kernel runs them, the others spend their minutes elsewhere.
    OnTheOldest,
    /// The listing races: 5.10 takes the same path as 6.1 (no fchmodat2, no
    /// *xattrat), where they run, at a third of the speed under TCG.
    NotOnTheOldest,
}

impl Only {
    fn holds(self, kernel: &Kernel) -> bool {
        match self {
            Only::WithIdmappedMounts => idmapped_mounts_on(kernel),
            Only::OnTheOldest => kernel.series == OLDEST,
            Only::NotOnTheOldest => kernel.series != OLDEST,
        }
    }

    fn why(self) -> &'static str {
        match self {
            Only::WithIdmappedMounts => {
                "no idmapped mounts before 5.12: their refusal runs instead \
                 (idmapped_mounts_are_used_only_where_the_kernel_has_them)"
            }
            Only::OnTheOldest => {
                "the walker's limits, over the same syscalls on every kernel: run on 5.10 only"
            }
            Only::NotOnTheOldest => {
                "the listing races take 6.1's path here, and run on 6.1 (3x slower on 5.10 under TCG)"
            }
        }
    }
}

/// The oldest kernel of the matrix.
const OLDEST: &str = "5.10";

/// What every guest runs, chosen for coverage per minute of TCG (measured in
/// BENCHMARKS.md): the suites whose every test reaches a kernel interface run
/// whole; of the conversions, those that take the kernel's paths (user namespaces,
/// idmapped mounts, subordinate ids written and read back).
const PLAN: &[Suite] = &[
    Suite {
        name: "engine",
        target: "lib",
        // The kernel-path checks (every syscall wrapper, the walker, the inode
        // handle) and the bind-mount scans; the rest of the unit tests are pure.
        filters: &["engine::", "lxc::mounts::"],
        only: &[],
    },
    Suite {
        name: "hostile",
        target: "hostile",
        filters: &[],
        only: &[
            (
                "a_name_swapped_during_a_run_never_takes_another_inodes_xattrs",
                Only::NotOnTheOldest,
            ),
            (
                "a_name_swapped_where_ctimes_keep_whole_seconds_never_takes_another_inodes_xattrs",
                Only::NotOnTheOldest,
            ),
        ],
    },
    Suite {
        name: "filesystems",
        target: "filesystems",
        filters: &[],
        only: &[],
    },
    Suite {
        name: "walk",
        target: "walk",
        filters: &[],
        only: &[
            ("ten_thousand_levels_with_64_fds", Only::OnTheOldest),
            ("huge_directory_in_batches", Only::OnTheOldest),
        ],
    },
    Suite {
        name: "convert",
        target: "convert",
        filters: &[
            "privileged_to_unprivileged_and_back",
            "idmapped_mounts_are_used_only_where_the_kernel_has_them",
            "bind_mounts_shifted_with_the_rootfs_and_back",
            "the_idmap_method_touches_no_inode_either_way",
            "bind_mounts_are_idmapped_by_default_and_back",
        ],
        only: &[
            (
                "the_idmap_method_touches_no_inode_either_way",
                Only::WithIdmappedMounts,
            ),
            (
                "bind_mounts_are_idmapped_by_default_and_back",
                Only::WithIdmappedMounts,
            ),
        ],
    },
];

/// The suites not in the plan, and why: said in every report.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "shift, cli",
        "the per-inode logic and the front end over the calls hostile and walk make \
         here; CI runs them on the host as on a kernel before 6.6 too (seccomp)",
    ),
    (
        "check",
        "reads configs and stats the tree: no kernel path of its own",
    ),
    (
        "convert (the rest), kill_sequences",
        "the journal's and the conversion's logic over the same calls; SIGKILL loops \
         cost minutes under TCG",
    ),
    (
        "powercut",
        "boots its own VMs (6.1 in CI; LXC_IDSHIFT_VM_KERNEL picks another)",
    ),
    (
        "lxc_e2e, lxc_mounts_e2e, lxc_idmap_e2e, lxc_distros_e2e, proxmox_e2e, package",
        "need the installed package, a real LXC and a network: host only",
    ),
    ("fuzz_corpus", "pure decoding: no kernel involved"),
    (
        "pve_host",
        "the emulated Proxmox host (stand-in pct, Proxmox's LXC config): no path of the tool",
    ),
];

fn matrix(series: &str) {
    if !require_root(&format!("kernel matrix {series}")) {
        return;
    }
    let _turn = ONE_GUEST_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let kernel = match Kernel::of_series(series) {
        Ok(kernel) => kernel,
        Err(why) => return skip(&format!("kernel matrix: {why}")),
    };
    let binaries: Vec<PathBuf> = match PLAN.iter().map(|suite| built(suite.target)).collect() {
        Ok(binaries) => binaries,
        Err(why) => return skip(&format!("kernel matrix {series}: {why}")),
    };
    let (guest, accel) = run_plan(&kernel, &binaries);
    let report = Report::read(&guest, accel);
    // Straight to stderr, past the test harness's capture: every run shows what
    // ran on which kernel, not only a failing one.
    let _ = std::io::stderr().write_all(report.render(&kernel).as_bytes());
    report.check(&kernel, &guest);
}

/// The newest executable of cargo test target `target` beside this one
/// (target/<profile>/deps/NAME-HASH), refused when older than the library it was
/// built from: a suite built before the last change would test old code.
fn built(target: &str) -> Result<PathBuf, String> {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let prefix = match target {
        "lib" => "lxc_idshift-".to_string(),
        name => format!("{name}-"),
    };
    let library = newest(&deps, "liblxc_idshift-", |path| {
        path.extension().is_some_and(|e| e == "rlib")
    });
    let found = newest(&deps, &prefix, |path| {
        path.extension().is_none() && is_executable(path) && is_target(path, target)
    });
    let build = "build every suite first: `cargo test --release --no-run`";
    let Some((path, built_at)) = found else {
        return Err(format!(
            "no {target} test binary in {}: {build}",
            deps.display()
        ));
    };
    if library.is_some_and(|(_, library_at)| built_at < library_at) {
        return Err(format!(
            "{} is older than the library: {build}",
            path.display()
        ));
    }
    Ok(path)
}

fn newest(
    dir: &Path,
    prefix: &str,
    wanted: impl Fn(&Path) -> bool,
) -> Option<(PathBuf, std::time::SystemTime)> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.strip_prefix(prefix)
                .is_some_and(|hash| hash.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .filter(|path| wanted(path))
        .filter_map(|path| Some((path.clone(), path.metadata().ok()?.modified().ok()?)))
        .max_by_key(|(_, at)| *at)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The library's and the binary's unit tests share a name: the library's are the
/// ones that list the engine's.
fn is_target(path: &Path, target: &str) -> bool {
    if target != "lib" {
        return true;
    }
    let listed = Command::new(path)
        .args(["--list", "engine::sys::"])
        .output();
    listed.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("engine::sys::tests::"))
}

/// The guest's script: every suite of the plan, then one shift with `--json` whose
/// `kernel` field names the paths taken, each between markers the host reads.
fn plan_script(kernel: &Kernel, binaries: &[PathBuf]) -> String {
    let mut script = String::from(
        "cd /tmp\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n\
         uptime() { cut -d' ' -f1 /proc/uptime; }\n\
         step() {\n\
         \x20   name=$1; shift\n\
         \x20   echo \"KM-STEP-START $name\"; start=$(uptime)\n\
         \x20   \"$@\" 2>&1; rc=$?\n\
         \x20   echo \"KM-STEP-END $name rc=$rc start=$start end=$(uptime)\"\n\
         }\n",
    );
    // CI=true makes a skip inside the guest fail its suite, as on the host.
    for name in ["CI", "LXC_IDSHIFT_BIN", "RUST_BACKTRACE"] {
        if let Ok(value) = std::env::var(name) {
            script += &format!("export {name}={}\n", quote(&value));
        }
    }
    for (suite, binary) in PLAN.iter().zip(binaries) {
        let mut words = vec![quote(&binary.to_string_lossy()), "--color never".into()];
        words.extend(suite.filters.iter().map(|test| quote(test)));
        for (test, only) in suite.only {
            if !only.holds(kernel) {
                words.extend(["--skip".into(), quote(test)]);
            }
        }
        script += &format!("step {} {}\n", suite.name, words.join(" "));
    }
    let bin = common::bin();
    script += &format!(
        "mkdir -p /tmp/km-paths/tree/d\n\
         touch /tmp/km-paths/tree/d/f\n\
         chmod 4755 /tmp/km-paths/tree/d/f\n\
         setfacl -m u:7:r /tmp/km-paths/tree/d/f\n\
         echo KM-JSON-START\n\
         {} shift /tmp/km-paths/tree --map {} --journal /tmp/km-paths/j --json\n\
         echo KM-JSON-END\n\
         echo KM-DONE\n\
         busybox reboot -f\n",
        quote(&bin.to_string_lossy()),
        common::MAP
    );
    script
}

fn distribution(series: &str) -> &'static str {
    match series {
        "5.10" => "Debian 11",
        "6.1" => "Debian 12",
        "6.12" => "Debian 13, Debian 12 backports",
        _ => "not a Debian release's",
    }
}

fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

fn idmapped_mounts_on(kernel: &Kernel) -> bool {
    version_of(&kernel.version) >= (5, 12)
}

/// "6.12.95+deb12-amd64" -> (6, 12).
fn version_of(release: &str) -> (u32, u32) {
    let mut numbers = release
        .split(['.', '-', '+'])
        .map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// Boots the guest with a fresh scratch disk holding the plan; returns it once it
/// powered off (or was killed at the time limit). KVM is tried once per process.
fn run_plan(kernel: &Kernel, binaries: &[PathBuf]) -> (Guest, Accel) {
    static ACCEL: OnceLock<Accel> = OnceLock::new();
    let work = tempfile::tempdir().unwrap();
    let content = work.path().join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("plan.sh"), plan_script(kernel, binaries)).unwrap();
    let disk = work.path().join("scratch");
    // Sparse: the suites' loop images and trees fit, the host stores what they write.
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    run_ok(
        Command::new("mkfs.ext4")
            .arg("-q")
            .arg("-d")
            .arg(&content)
            .arg(&disk),
    );
    let initramfs = Initramfs::build(kernel, MATRIX_INIT, None);
    let accel = *ACCEL.get_or_init(|| Accel::choose(kernel, &initramfs));
    let keep = kept_checkout(&binaries[0]);
    let mut guest = Guest::boot_sharing(kernel, &initramfs, accel, Some(&disk), &keep, true);
    let exited = guest.wait_exit(GUEST_LIMIT);
    assert!(
        exited || guest.marker("KM-DONE").is_some(),
        "kernel {}: the guest did not finish within {GUEST_LIMIT:?}:\n{}",
        kernel.version,
        guest.tail(40)
    );
    (guest, accel)
}

/// The guest covers these host directories with its own (its scratch disk, tmpfs).
const COVERED: [&str; 4] = ["/tmp", "/var/tmp", "/run", "/var/lib/lxc"];

/// `km_keep=DIR` when the test binaries lie under a directory the guest covers (a
/// checkout in /tmp): DIR, the first directory below it, is brought back at its
/// own path (scripts/vm/matrix-init.sh).
fn kept_checkout(binary: &Path) -> String {
    for covered in COVERED {
        if let Ok(rest) = binary.strip_prefix(covered) {
            if let Some(first) = rest.components().next() {
                return format!("km_keep={}", Path::new(covered).join(first).display());
            }
        }
    }
    String::new()
}

/// One suite's outcome, read off the console.
struct Outcome {
    name: String,
    rc: Option<i32>,
    passed: u64,
    failed: u64,
    filtered: u64,
    skipped: Vec<String>,
    seconds: f64,
    failures: Vec<String>,
    /// Lines of a panic's message still to keep.
    message_lines: usize,
}

struct Report {
    accel: String,
    boot: Duration,
    total: Duration,
    outcomes: Vec<Outcome>,
    kernel_paths: Option<serde_json::Value>,
}

impl Report {
    fn read(guest: &Guest, accel: Accel) -> Report {
        let ready = guest.marker("PC-READY").map(|line| line.at - guest.started);
        let last = guest.log.last().map(|line| line.at - guest.started);
        let mut outcomes = Vec::new();
        let mut current: Option<Outcome> = None;
        let mut json: Option<String> = None;
        for line in &guest.log {
            let text = line.text.trim();
            if let Some(name) = text.strip_prefix("KM-STEP-START ") {
                current = Some(Outcome::new(name));
            } else if let Some(end) = text.strip_prefix("KM-STEP-END ") {
                if let Some(mut outcome) = current.take() {
                    outcome.end(end);
                    outcomes.push(outcome);
                }
            } else if text == "KM-JSON-START" {
                json = Some(String::new());
            } else if text == "KM-JSON-END" {
                break;
            } else if let Some(json) = json.as_mut() {
                json.push_str(text);
            } else if let Some(outcome) = current.as_mut() {
                outcome.read(text);
            }
        }
        Report {
            accel: format!("{accel:?}"),
            boot: ready.unwrap_or_default(),
            total: last.unwrap_or_default(),
            outcomes,
            kernel_paths: json.and_then(|json| serde_json::from_str(&json).ok()),
        }
    }

    fn render(&self, kernel: &Kernel) -> String {
        let mut out = format!(
            "\nkernel matrix: Linux {} ({}), {}, booted in {:.1} s, all done in {:.1} s\n",
            kernel.version,
            distribution(&kernel.series),
            self.accel,
            self.boot.as_secs_f64(),
            self.total.as_secs_f64()
        );
        for outcome in &self.outcomes {
            out += &format!(
                "  ran {:<12} {:>3} passed, {} failed, {} skipped ({} not picked) in {:.1} s{}\n",
                outcome.name,
                outcome.passed,
                outcome.failed,
                outcome.skipped.len(),
                outcome.filtered,
                outcome.seconds,
                match outcome.rc {
                    Some(0) => String::new(),
                    rc => format!("  EXIT {rc:?}"),
                }
            );
            for why in &outcome.skipped {
                out += &format!("      skipped: {why}\n");
            }
        }
        for suite in PLAN {
            for (test, only) in suite.only.iter().filter(|(_, only)| !only.holds(kernel)) {
                out += &format!("  not run: {} {test}: {}\n", suite.name, only.why());
            }
        }
        match &self.kernel_paths {
            Some(paths) => {
                let paths = &paths["kernel"];
                out += &format!("  kernel paths of a shift (--json \"kernel\"): {paths}\n");
            }
            None => out += "  kernel paths of a shift: no --json report\n",
        }
        for (suites, why) in NOT_RUN {
            out += &format!("  not run: {suites}: {why}\n");
        }
        out
    }

    /// Every suite ran to its end with every picked test passed and none skipped,
    /// and the shift took the paths this kernel has.
    fn check(&self, kernel: &Kernel, guest: &Guest) {
        let context = || {
            format!(
                "kernel {}; console tail:\n{}",
                kernel.version,
                guest.tail(60)
            )
        };
        assert_eq!(
            self.outcomes
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            PLAN.iter().map(|suite| suite.name).collect::<Vec<_>>(),
            "not every suite reported: {}",
            context()
        );
        for outcome in &self.outcomes {
            assert!(
                outcome.rc == Some(0) && outcome.failed == 0 && outcome.passed > 0,
                "kernel {}: {} failed (exit {:?}, {} passed):\n{}",
                kernel.version,
                outcome.name,
                outcome.rc,
                outcome.passed,
                outcome.failures.join("\n")
            );
            assert!(
                outcome.skipped.is_empty(),
                "kernel {}: {} skipped {:?}",
                kernel.version,
                outcome.name,
                outcome.skipped
            );
        }
        let paths = self
            .kernel_paths
            .as_ref()
            .unwrap_or_else(|| panic!("{}", context()));
        let paths = &paths["kernel"];
        let version = version_of(&kernel.version);
        assert_eq!(
            paths["fchmodat2"],
            version >= (6, 6),
            "{paths}: {}",
            context()
        );
        assert_eq!(
            paths["xattrat"],
            version >= (6, 13),
            "{paths}: {}",
            context()
        );
    }
}

impl Outcome {
    fn new(name: &str) -> Outcome {
        Outcome {
            name: name.to_string(),
            rc: None,
            passed: 0,
            failed: 0,
            filtered: 0,
            skipped: Vec::new(),
            seconds: 0.0,
            failures: Vec::new(),
            message_lines: 0,
        }
    }

    /// "test result: ok. 17 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out; ..."
    fn read(&mut self, text: &str) {
        if let Some(result) = text.strip_prefix("test result: ") {
            for part in result.split(';') {
                let mut words = part.split_whitespace().rev();
                let count = |words: &mut std::iter::Rev<std::str::SplitWhitespace>| {
                    words.find_map(|word| word.parse::<u64>().ok()).unwrap_or(0)
                };
                match part.split_whitespace().last() {
                    Some("passed") => self.passed += count(&mut words),
                    Some("failed") => self.failed += count(&mut words),
                    Some("out") => self.filtered += count(&mut words),
                    _ => {}
                }
            }
        } else if let Some(at) = text.find("SKIPPED: ") {
            self.skipped
                .push(text[at + 9..].trim_end_matches(" !").to_string());
        } else if text.contains("panicked at") || text.ends_with("... FAILED") {
            self.failures.push(text.to_string());
            self.message_lines = 3;
        } else if self.message_lines > 0 {
            // The panic's message follows its location.
            self.message_lines -= 1;
            self.failures.push(format!("    {text}"));
        }
    }

    /// "rc=0 start=12.3 end=45.6"
    fn end(&mut self, text: &str) {
        let field = |key: &str| {
            text.split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .map(str::to_string)
        };
        self.rc = field("rc=").and_then(|rc| rc.parse().ok());
        let at = |key| {
            field(key)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        self.seconds = at("end=") - at("start=");
    }
}
