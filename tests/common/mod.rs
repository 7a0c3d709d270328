//! Shared helpers for the integration tests: root check, running the binary with a
//! private journal, and an independent computation of the expected forward result.
#![allow(dead_code)]

pub mod container;
pub mod lxc;
pub mod pve;
pub mod vm;

use lxc_idshift::manifest::{self, Manifest};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The map every test uses, and its pieces for the independent computation.
pub const MAP: &str = "b:0:1000000:65536";
pub const CONTAINER_FIRST: u32 = 0;
pub const HOST_FIRST: u32 = 1_000_000;
pub const COUNT: u32 = 65_536;

/// Says LOUDLY that a test (or part of one) could not run. Under `CI=true` a skip
/// is a failure: CI must run every test.
pub fn skip(what: &str) {
    let message = format!("SKIPPED: {what}");
    let ci = std::env::var("CI").as_deref() == Ok("true");
    assert!(!ci, "{message} (CI=true: every test must run)");
    eprintln!("\n!!!!!!!! {message} !!!!!!!!\n");
}

/// True when running as root; otherwise says so LOUDLY, so a skip is never silent.
pub fn require_root(test: &str) -> bool {
    if lxc_idshift::is_root() {
        return true;
    }
    skip(&format!("{test} needs root (run the tests as root)"));
    false
}

/// The binary under test; `LXC_IDSHIFT_BIN` may point at another build of it.
pub fn bin() -> PathBuf {
    std::env::var_os("LXC_IDSHIFT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lxc-idshift")))
}

/// `LXC_IDSHIFT_TEST_KERNEL=old`: every process the tests start runs as on a kernel
/// before 6.6 (Debian 12's 6.1, Ubuntu 22.04's 5.15, RHEL 9's 5.14): `fchmodat2`
/// and the `*xattrat` calls fail with ENOSYS, so the fallbacks do the work.
pub fn old_kernel() -> bool {
    std::env::var("LXC_IDSHIFT_TEST_KERNEL").as_deref() == Ok("old")
}

/// A command for `program` (the binary, or a wrapper that execs it), with the old
/// kernel emulated when asked for.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    match old_kernel() {
        true => old_kernel_command(program),
        false => Command::new(program),
    }
}

/// A command for `program` that runs as on a kernel before 6.6, whatever the
/// environment says.
pub fn old_kernel_command(program: impl AsRef<OsStr>) -> Command {
    with_seccomp(program, lxc_idshift::engine::emulate_old_kernel)
}

/// [`old_kernel_command`], and `unshare` fails with EPERM too: no walker thread
/// gets a working directory of its own.
pub fn old_kernel_command_refusing_unshare(program: impl AsRef<OsStr>) -> Command {
    with_seccomp(
        program,
        lxc_idshift::engine::emulate_old_kernel_refusing_unshare,
    )
}

fn with_seccomp(program: impl AsRef<OsStr>, install: fn() -> std::io::Result<()>) -> Command {
    let mut command = Command::new(program);
    // SAFETY: prctl only, async-signal-safe, on static filters.
    unsafe { command.pre_exec(install) };
    command
}

/// Runs the binary with `args` and returns its output.
pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    command(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start lxc-idshift")
}

/// Like `run`, but kills the process and fails after `limit` (for cases where a
/// broken refusal could otherwise walk the whole host).
pub fn run_with_timeout<S: AsRef<OsStr>>(args: &[S], limit: Duration) -> Output {
    let mut child = command(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start lxc-idshift");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lxc-idshift still running after {limit:?}: it did not refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A journal in its own temporary directory, so nothing lands under /var/lib.
pub struct Tool {
    journal_dir: tempfile::TempDir,
    maps: Vec<String>,
}

impl Default for Tool {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool {
    pub fn new() -> Tool {
        Tool::with_map(&SIMPLE)
    }

    /// A tool that shifts with `map` (one `--map` per piece).
    pub fn with_map(map: &TestMap) -> Tool {
        Tool {
            journal_dir: tempfile::tempdir().unwrap(),
            maps: map.args(),
        }
    }

    pub fn journal(&self) -> PathBuf {
        self.journal_dir.path().join("j")
    }

    /// `shift DIR --map MAP --journal J [extra...]`.
    pub fn shift_args(&self, dir: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["shift".into(), dir.into()];
        for map in &self.maps {
            args.extend(["--map".into(), map.into()]);
        }
        args.push("--journal".into());
        args.push(self.journal().into());
        args.extend(extra.iter().map(Into::into));
        args
    }

    pub fn shift(&self, dir: &Path, extra: &[&str]) -> Output {
        run(&self.shift_args(dir, extra))
    }

    /// A shift that must succeed with exit code 0.
    pub fn shift_ok(&self, dir: &Path, extra: &[&str]) -> Output {
        let out = self.shift(dir, extra);
        assert_exit(&out, 0, &format!("shift {extra:?}"));
        out
    }

    /// A shift with `--json`; returns the output and the parsed report.
    pub fn shift_json(&self, dir: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
        let mut args = extra.to_vec();
        args.push("--json");
        let out = self.shift(dir, &args);
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "--json stdout is not one JSON object ({e}): {}",
                text(&out.stdout)
            )
        });
        (out, report)
    }
}

/// Runs the binary with `args` and SIGKILLs it after `delay`; true when it was
/// still running then (really killed mid-way).
pub fn kill_after<S: AsRef<OsStr>>(args: &[S], delay: Duration) -> bool {
    let mut child = command(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start lxc-idshift");
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    if running {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    running
}

/// Deterministic pseudo-random numbers for kill delays and sequences.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn fraction(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.fraction() * n as f64) as usize).min(n - 1)
    }
}

/// A number from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A seed from the environment (decimal or 0x-hex), else a new one from the clock:
/// each run tries new points, and prints the seed that replays it.
pub fn env_seed(name: &str) -> u64 {
    let given = std::env::var(name)
        .ok()
        .and_then(|v| match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        });
    given.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map(|d| d.as_nanos() as u64).unwrap_or(1)
    })
}

/// The running kernel's (major, minor), from /proc/sys/kernel/osrelease.
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(['.', '-'])
        .map(|part| part.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// Idmapped mounts came with Linux 5.12 (ext4, xfs; btrfs 5.15, tmpfs 6.3).
pub fn kernel_has_idmapped_mounts() -> bool {
    kernel_version() >= (5, 12)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails with the command's output when the exit code is not `code`.
pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit {code}, got {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A counter of a `--json` report.
pub fn counter(report: &serde_json::Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("--json report lacks counter {name}: {report}"))
}

pub fn collect(root: &Path) -> Manifest {
    manifest::collect(root).unwrap_or_else(|e| panic!("manifest of {}: {e}", root.display()))
}

/// Fails with the first differences when the manifests differ.
pub fn assert_same(expected: &Manifest, actual: &Manifest, what: &str) {
    let diff = expected.diff(actual, 30);
    assert!(
        diff.is_empty(),
        "{what}: expected (left) and actual (right) differ:\n{}",
        diff.join("\n")
    );
}

/// A temporary directory holding the sample rootfs at `<tmp>/rootfs`; the tempdir is
/// made 0755 so that the container's root can reach the rootfs from a user namespace.
pub fn sample_tree() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    lxc_idshift::sample::build_sample_rootfs(&root).unwrap();
    (tmp, root)
}

/// (uid, gid, mode & 0o7777) of a path, not following symlinks.
pub fn owner(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

// ---------------------------------------------------------------------------
// The independent expected result: written from the kernel's byte layouts, without
// the library's codecs, so a shared misunderstanding cannot hide a bug.
// ---------------------------------------------------------------------------

/// Forward map of one id: container range to host range, anything else unchanged.
/// A map as the tests expect it to work, written apart from the engine's: pieces
/// of (kind 'u', 'g' or 'b', container first, host first, count).
pub struct TestMap(pub &'static [(char, u32, u32, u32)]);

/// MAP.
pub const SIMPLE: TestMap = TestMap(&[('b', CONTAINER_FIRST, HOST_FIRST, COUNT)]);

/// A map with a hole (host user 1000 shared with the container, as LXC maps it).
pub const HOLE: TestMap = TestMap(&[
    ('u', 0, 1_000_000, 1000),
    ('u', 1000, 1000, 1),
    ('u', 1001, 1_001_001, 64_535),
    ('g', 0, 1_000_000, 65_536),
]);

/// Users and groups on different host ranges.
pub const SPLIT: TestMap = TestMap(&[('u', 0, 1_000_000, 65_536), ('g', 0, 2_000_000, 65_536)]);

impl TestMap {
    /// The forward image of a uid (`user`) or gid.
    pub fn id(&self, user: bool, id: u32) -> u32 {
        let kind = if user { 'u' } else { 'g' };
        (self.0.iter())
            .filter(|(k, ..)| *k == kind || *k == 'b')
            .find(|(_, container, _, count)| (*container..container + count).contains(&id))
            .map_or(id, |(_, container, host, _)| id - container + host)
    }

    pub fn args(&self) -> Vec<String> {
        (self.0.iter())
            .map(|(k, c, h, n)| format!("{k}:{c}:{h}:{n}"))
            .collect()
    }
}

/// The forward image of an id under MAP (users and groups alike).
pub fn map_id(id: u32) -> u32 {
    SIMPLE.id(true, id)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// system.posix_acl_*: u32 version, then (u16 tag, u16 perm, u32 id) entries; only
/// ACL_USER (0x02) and ACL_GROUP (0x08) carry ids.
pub fn expected_acl(value: &[u8]) -> Vec<u8> {
    expected_acl_with(value, &SIMPLE)
}

/// `expected_acl` under `map`: ACL_USER entries map as uids, ACL_GROUP as gids.
pub fn expected_acl_with(value: &[u8], map: &TestMap) -> Vec<u8> {
    assert!(
        value.len() >= 4 && (value.len() - 4).is_multiple_of(8),
        "odd ACL size {}",
        value.len()
    );
    assert_eq!(le32(value, 0), 2, "ACL version");
    let mut out = value.to_vec();
    for at in (4..value.len()).step_by(8) {
        let tag = u16::from_le_bytes([value[at], value[at + 1]]);
        if tag == 0x02 || tag == 0x08 {
            let id = map.id(tag == 0x02, le32(value, at + 4));
            out[at + 4..at + 8].copy_from_slice(&id.to_le_bytes());
        }
    }
    out
}

/// security.capability: v2 (20 bytes) becomes v3 (24 bytes) with rootid = host uid of
/// container root; a v3 rootid is mapped like a uid.
pub fn expected_caps(value: &[u8]) -> Vec<u8> {
    expected_caps_with(value, &SIMPLE)
}

/// `expected_caps` under `map`: the rootid is a uid.
pub fn expected_caps_with(value: &[u8], map: &TestMap) -> Vec<u8> {
    let magic = le32(value, 0);
    let flags = magic & 0x00ff_ffff;
    let (body, rootid) = match (magic >> 24, value.len()) {
        (2, 20) => (&value[4..20], map.id(true, 0)),
        (3, 24) => (&value[4..20], map.id(true, le32(value, 20))),
        other => panic!("unexpected security.capability layout {other:?}"),
    };
    let mut out = (0x0300_0000 | flags).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&rootid.to_le_bytes());
    out
}

/// The manifest a correct forward shift of `orig` with MAP must produce.
pub fn expected_forward(orig: &Manifest) -> Manifest {
    expected_forward_with(orig, &SIMPLE)
}

/// The manifest a correct forward shift of `orig` with `map` must produce.
pub fn expected_forward_with(orig: &Manifest, map: &TestMap) -> Manifest {
    let mut out = orig.clone();
    for entry in out.entries.values_mut() {
        entry.uid = map.id(true, entry.uid);
        entry.gid = map.id(false, entry.gid);
        for (name, value) in entry.xattrs.iter_mut() {
            match name.as_slice() {
                b"system.posix_acl_access" | b"system.posix_acl_default" => {
                    *value = expected_acl_with(value, map)
                }
                b"security.capability" => *value = expected_caps_with(value, map),
                _ => {}
            }
        }
    }
    out
}

pub fn rel(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

pub fn rel_bytes(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

// ---------------------------------------------------------------------------
// Guards that undo system changes even when a test fails.
// ---------------------------------------------------------------------------

/// Unmounts on drop.
pub struct MountGuard(pub PathBuf);

impl MountGuard {
    /// `mount -t tmpfs` at `at`; None (with a loud message) when mounting fails.
    pub fn tmpfs(at: &Path) -> Option<MountGuard> {
        let source = ["-t", "tmpfs", "-o", "size=1m", "tmpfs"].map(std::ffi::OsStr::new);
        Self::mount(&source, at)
    }

    /// `mount --bind from at`.
    pub fn bind(from: &Path, at: &Path) -> Option<MountGuard> {
        Self::mount(&["--bind".as_ref(), from.as_os_str()], at)
    }

    fn mount(source: &[&std::ffi::OsStr], at: &Path) -> Option<MountGuard> {
        let ok = Command::new("mount")
            .args(source)
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            skip(&format!("cannot mount {source:?} at {}", at.display()));
        }
        ok.then(|| MountGuard(at.to_path_buf()))
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Two ext4 images with 128-byte inodes (ctimes keep whole seconds there), each with
/// an empty directory `tree`: a victim and a reference; None (said loudly) without
/// mkfs.ext4. The images stay mounted while the first element lives.
pub fn whole_second_trees() -> Option<([LoopFs; 2], PathBuf, PathBuf)> {
    let mkfs = ["-I", "128", "-N", "40000"];
    let images = [LoopFs::new("ext4", &mkfs)?, LoopFs::new("ext4", &mkfs)?];
    let [victim, reference] = [0, 1].map(|i| images[i].mount.join("tree"));
    std::fs::create_dir(&victim).unwrap();
    std::fs::create_dir(&reference).unwrap();
    Some((images, victim, reference))
}

/// A loop-mounted image of a fresh file system, unmounted on drop.
pub struct LoopFs {
    pub mount: PathBuf,
    pub image: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    /// `mkfs.<fstype> -q <mkfs_args>` on a 320 MiB image, mounted; None (with a loud
    /// message) when the mkfs tool is missing.
    pub fn new(fstype: &str, mkfs_args: &[&str]) -> Option<LoopFs> {
        let mkfs = format!("mkfs.{fstype}");
        let found = Command::new("which").arg(&mkfs).output();
        if !found.map(|o| o.status.success()).unwrap_or(false) {
            skip(&format!("{fstype} tests need {mkfs} (.ci/run installs it)"));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(320 << 20)
            .unwrap();
        run_ok(Command::new(&mkfs).arg("-q").args(mkfs_args).arg(&image));
        let fs = LoopFs {
            mount,
            image,
            _dir: dir,
        };
        fs.mount();
        Some(fs)
    }

    pub fn mount(&self) {
        let mut mount = Command::new("mount");
        run_ok(mount.args(["-o", "loop"]).arg(&self.image).arg(&self.mount));
    }

    pub fn unmount(&self) {
        run_ok(Command::new("umount").arg(&self.mount));
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

/// The manifest of the file system inside `image`, mounted read-only for it.
pub fn image_manifest(image: &Path) -> Manifest {
    let point = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(image)
            .arg(point.path()),
    );
    let manifest = collect(point.path());
    run_ok(Command::new("umount").arg(point.path()));
    manifest
}

/// Runs a command that must succeed.
pub fn run_ok(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Clears the immutable flag on drop, so the temporary tree can be removed.
pub struct ImmutableGuard(pub PathBuf);

impl ImmutableGuard {
    /// `chattr +i`; None (with a loud message) when the filesystem refuses.
    pub fn set(path: &Path) -> Option<ImmutableGuard> {
        let ok = chattr("+i", path);
        if !ok {
            skip(&format!("chattr +i fails on {}", path.display()));
        }
        ok.then(|| ImmutableGuard(path.to_path_buf()))
    }
}

pub fn chattr(flag: &str, path: &Path) -> bool {
    Command::new("chattr")
        .arg(flag)
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Drop for ImmutableGuard {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

// ---------------------------------------------------------------------------
// Running a command as the container's root in a user namespace.
// ---------------------------------------------------------------------------

/// Runs `cmd` as uid/gid 0 of a new user namespace mapping 0..65536 to the host range,
/// i.e. as the container's root. `unshare --map-users` would need newuidmap and an
/// /etc/subuid entry for root, so the mapping is written here: the child unshares,
/// a helper thread writes its uid_map/gid_map, then the child becomes 0:0 and execs.
pub fn run_as_container_root(cmd: &[&str]) -> Output {
    let (mut ready_r, ready_w) = std::io::pipe().unwrap();
    let (go_r, mut go_w) = std::io::pipe().unwrap();
    let (ready_fd, go_fd) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    let mut command = Command::new(cmd[0]);
    command.args(&cmd[1..]).stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (unshare, getpid, read, write, set*id).
    unsafe {
        command.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = libc::getpid().to_le_bytes();
            libc::write(ready_fd, pid.as_ptr().cast(), pid.len());
            let mut go = [0u8; 1];
            if libc::read(go_fd, go.as_mut_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::other("uid map not written"));
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(0, 0, 0) != 0
                || libc::setresuid(0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mapper = std::thread::spawn(move || {
        let mut pid = [0u8; 4];
        ready_r.read_exact(&mut pid)?;
        let pid = i32::from_le_bytes(pid);
        let line = format!("0 {HOST_FIRST} {COUNT}\n");
        std::fs::write(format!("/proc/{pid}/uid_map"), &line)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &line)?;
        go_w.write_all(b"g")
    });
    let out = command.output();
    drop((ready_w, go_r));
    mapper
        .join()
        .unwrap()
        .expect("writing the namespace's id maps");
    out.expect("running a command in a user namespace")
}
