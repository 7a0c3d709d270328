//! Virtual machines for the power-cut test and the kernel matrix: a Debian kernel
//! unpacked by scripts/vm/setup.sh, an initramfs built here around an /init script,
//! and a QEMU process whose serial console the host reads line by line. SIGKILL of
//! that process is the power cut: what the guest had not written to its disk is lost.

use super::skip;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The power-cut guest's /init, also readable as a shell script on its own.
pub const POWERCUT_INIT: &str = include_str!("../../scripts/vm/init.sh");
/// The kernel matrix guest's /init (tests/kernels.rs).
pub const MATRIX_INIT: &str = include_str!("../../scripts/vm/matrix-init.sh");

/// Modules the guest needs (with their dependencies), by group: the guest loads
/// "base" and the group of the file system it mounts, nothing more (every module
/// costs boot time under TCG). crc32c_generic: the checksums ask for "crc32c" by
/// name, and nothing in the guest could load it on demand. "share": the host's
/// root over virtio-9p and loop devices, for the kernel matrix's guest.
const MODULE_GROUPS: &[(&str, &[&str])] = &[
    ("base", &["virtio_pci", "virtio_blk", "crc32c_generic"]),
    ("ext4", &["ext4"]),
    ("xfs", &["xfs"]),
    ("btrfs", &["btrfs"]),
    ("share", &["9pnet_virtio", "9p", "loop"]),
];

const HOST_TOOLS: &[&str] = &["qemu-system-x86_64", "busybox", "cpio", "ldd", "xz", "zstd"];

/// A kernel unpacked by setup.sh into its cache: `vmlinux` (the ELF QEMU starts
/// through its PVH entry), `version`, `modules.dep` and `lib/modules/VERSION`.
pub struct Kernel {
    pub series: String,
    pub version: String,
    dir: PathBuf,
}

impl Kernel {
    /// The kernel `LXC_IDSHIFT_VM_KERNEL` names (default 6.1), or why it cannot run.
    pub fn from_env() -> Result<Kernel, String> {
        let series = std::env::var("LXC_IDSHIFT_VM_KERNEL").unwrap_or_else(|_| "6.1".into());
        Kernel::of_series(&series)
    }

    /// The kernel of `series` (6.1, 6.12, 5.10) in the cache, or why it cannot run.
    pub fn of_series(series: &str) -> Result<Kernel, String> {
        let series = series.to_string();
        let cache = std::env::var("LXC_IDSHIFT_VM_CACHE")
            .unwrap_or_else(|_| "/var/cache/lxc-idshift-vm".into());
        let dir = Path::new(&cache).join(&series);
        let setup = format!("run `bash scripts/vm/setup.sh {series}` as root");
        for tool in HOST_TOOLS {
            if !on_path(tool) {
                return Err(format!("{tool} is missing: {setup}"));
            }
        }
        for file in ["vmlinux", "version", "modules.dep"] {
            if !dir.join(file).exists() {
                return Err(format!(
                    "kernel {series}: no {file} in {}: {setup}",
                    dir.display()
                ));
            }
        }
        let version = std::fs::read_to_string(dir.join("version")).unwrap();
        let version = version.trim().to_string();
        Ok(Kernel {
            series,
            version,
            dir,
        })
    }

    fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    fn modules_dir(&self) -> PathBuf {
        self.dir.join("lib/modules").join(&self.version)
    }

    /// The module files of each group to insmod, dependencies first, from
    /// modules.dep. Modules not listed there are built into this kernel.
    fn module_load_order(&self) -> Vec<(&'static str, String)> {
        let dep = std::fs::read_to_string(self.dir.join("modules.dep")).unwrap();
        let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
        for line in dep.lines() {
            let Some((file, rest)) = line.split_once(':') else {
                continue;
            };
            let needs = rest.split_whitespace().map(module_name).collect();
            deps.insert(module_name(file), (file.to_string(), needs));
        }
        let mut order = Vec::new();
        // The base group is loaded first: later groups need not repeat it.
        let mut base_seen = HashSet::new();
        for (group, names) in MODULE_GROUPS {
            let mut seen = base_seen.clone();
            let mut files = Vec::new();
            for name in names.iter() {
                visit_module(&module_name(name), &deps, &mut seen, &mut files);
            }
            if *group == "base" {
                base_seen = seen;
            }
            order.extend(files.into_iter().map(|file| (*group, file)));
        }
        order
    }
}

/// "kernel/fs/ext4/ext4.ko.xz" -> "ext4"; '-' and '_' are the same to the kernel.
fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

fn visit_module(
    name: &str,
    deps: &HashMap<String, (String, Vec<String>)>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
) {
    let Some((file, needs)) = deps.get(name) else {
        return;
    };
    if !seen.insert(name.to_string()) {
        return;
    }
    for need in needs {
        visit_module(need, deps, seen, order);
    }
    order.push(file.clone());
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Everything a guest needs, prepared once per test process.
pub struct Vm {
    pub kernel: Kernel,
    pub initramfs: Initramfs,
    pub accel: Accel,
}

/// A VM for one test (its initramfs is removed with it: a static would never be
/// dropped), or a loud skip (a failure under CI=true) when the VM tooling is
/// missing. The accelerator is chosen once per process.
pub fn vm(binary: &Path) -> Option<Vm> {
    static ACCEL: OnceLock<Accel> = OnceLock::new();
    let kernel = match Kernel::from_env() {
        Ok(kernel) => kernel,
        Err(why) => {
            skip(&format!("power-cut test: {why}"));
            return None;
        }
    };
    let initramfs = Initramfs::build(&kernel, POWERCUT_INIT, Some(binary));
    let accel = *ACCEL.get_or_init(|| Accel::choose(&kernel, &initramfs));
    Some(Vm {
        kernel,
        initramfs,
        accel,
    })
}

/// A cpio archive (uncompressed: unpacking costs nothing under TCG) holding
/// busybox, the binary under test (if any) with its libraries, the modules and
/// `init` as /init.
pub struct Initramfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Initramfs {
    pub fn build(kernel: &Kernel, init: &str, binary: Option<&Path>) -> Initramfs {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for sub in ["bin", "modules", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let busybox = which("busybox");
        std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        copy_libraries(&busybox, &root);
        if let Some(binary) = binary {
            copy_stripped(binary, &root.join("bin/lxc-idshift"));
            copy_libraries(binary, &root);
        }
        copy_modules(kernel, &root);
        write_executable(&root.join("init"), init);
        let path = dir.path().join("initramfs.cpio");
        pack_cpio(&root, &path);
        Initramfs { path, _dir: dir }
    }
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Without debug info the binary is a third of its size: less to load per boot.
fn copy_stripped(binary: &Path, to: &Path) {
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(to)
        .arg(binary)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !stripped {
        std::fs::copy(binary, to).unwrap();
    }
}

/// The shared libraries `ldd` lists, at the same paths in the guest.
fn copy_libraries(program: &Path, root: &Path) {
    let out = Command::new("ldd").arg(program).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(library) = line.split_whitespace().find(|word| word.starts_with('/')) else {
            continue;
        };
        let inside = root.join(library.trim_start_matches('/'));
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::copy(library, &inside).unwrap_or_else(|e| panic!("{library}: {e}"));
    }
}

/// Decompressed here (busybox insmod reads plain .ko), listed in load order as
/// "GROUP FILE" lines.
fn copy_modules(kernel: &Kernel, root: &Path) {
    let mut load = String::new();
    for (group, file) in kernel.module_load_order() {
        let source = kernel.modules_dir().join(&file);
        let name = format!("{}.ko", module_name(&file));
        let target = std::fs::File::create(root.join("modules").join(&name)).unwrap();
        let mut unpack = match file.rsplit('.').next() {
            Some("xz") => Command::new("xz"),
            Some("zst") => Command::new("zstd"),
            _ => Command::new("cat"),
        };
        if file.ends_with(".xz") || file.ends_with(".zst") {
            unpack.arg("-dc");
        }
        let ok = unpack.arg(&source).stdout(target).status().unwrap();
        assert!(ok.success(), "unpacking {}", source.display());
        writeln!(load, "{group} {name}").unwrap();
    }
    std::fs::write(root.join("modules.load"), load).unwrap();
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn pack_cpio(root: &Path, archive: &Path) {
    let script = "find . -print0 | cpio --null -o -H newc --quiet > \"$1\"";
    let status = Command::new("sh")
        .args(["-c", script, "pack"])
        .arg(archive)
        .current_dir(root)
        .status()
        .unwrap();
    assert!(status.success(), "cpio of the initramfs failed");
}

/// KVM when it works, else TCG. KVM hangs after the BIOS on some hosts: it gets
/// one boot with a time limit, once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

const KVM_PROBE_LIMIT: Duration = Duration::from_secs(15);

impl Accel {
    pub fn choose(kernel: &Kernel, initramfs: &Initramfs) -> Accel {
        match std::env::var("LXC_IDSHIFT_VM_ACCEL").as_deref() {
            Ok("tcg") => return Accel::Tcg,
            Ok("kvm") => return Accel::Kvm,
            _ => {}
        }
        if !Path::new("/dev/kvm").exists() {
            return Accel::Tcg;
        }
        let started = Instant::now();
        let mut probe = Guest::boot(kernel, initramfs, Accel::Kvm, None, "");
        let ready = probe.wait_for("PC-READY", KVM_PROBE_LIMIT).is_some();
        probe.power_cut();
        let accel = if ready { Accel::Kvm } else { Accel::Tcg };
        eprintln!(
            "vm: KVM {} ({:.1?}): using {accel:?}",
            if ready { "boots" } else { "hangs or fails" },
            started.elapsed()
        );
        accel
    }

    fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// One line of the guest's serial console, stamped with the host's clock.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// A running QEMU. Dropping it kills the process: no guest outlives a test.
pub struct Guest {
    child: Child,
    lines: Receiver<Line>,
    pub log: Vec<Line>,
    pub started: Instant,
}

impl Guest {
    /// Boots `kernel` with the initramfs; `disk` becomes /dev/vda; `params` (the
    /// pc_* words of init.sh) go on the kernel command line.
    pub fn boot(
        kernel: &Kernel,
        initramfs: &Initramfs,
        accel: Accel,
        disk: Option<&Path>,
        params: &str,
    ) -> Guest {
        Guest::boot_sharing(kernel, initramfs, accel, disk, params, false)
    }

    /// [`Guest::boot`], and with `share_root` the host's / read-only as the 9p
    /// tag "hostroot" (its own files, owners and modes, as QEMU runs as root).
    pub fn boot_sharing(
        kernel: &Kernel,
        initramfs: &Initramfs,
        accel: Accel,
        disk: Option<&Path>,
        params: &str,
        share_root: bool,
    ) -> Guest {
        let append = format!("console=ttyS0 quiet panic=-1 {params}");
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(accel.qemu_args())
            .args(["-m", "1024", "-smp", "2", "-nodefaults", "-no-user-config"])
            .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
            .arg("-kernel")
            .arg(kernel.vmlinux())
            .arg("-initrd")
            .arg(&initramfs.path)
            .arg("-append")
            .arg(append);
        if let Some(disk) = disk {
            let drive = format!("file={},format=raw,if=virtio", disk.display());
            qemu.arg("-drive").arg(drive);
        }
        if share_root {
            // multidevs=remap: the host's / spans several file systems, whose inode
            // numbers would otherwise collide in the guest.
            let fsdev = "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap";
            qemu.args(["-fsdev", fsdev]);
            qemu.args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"]);
        }
        // SAFETY: prctl only, async-signal-safe. A test killed by a signal never
        // runs its destructors: QEMU then dies with the thread that started it.
        unsafe {
            qemu.pre_exec(
                || match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                },
            );
        }
        let started = Instant::now();
        let mut child = qemu
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start qemu-system-x86_64");
        let lines = read_lines(child.stdout.take().unwrap());
        Guest {
            child,
            lines,
            log: Vec::new(),
            started,
        }
    }

    /// Reads lines until one contains `marker`; None when `limit` passes first or
    /// the guest is gone.
    pub fn wait_for(&mut self, marker: &str, limit: Duration) -> Option<Line> {
        let deadline = Instant::now() + limit;
        loop {
            let line = self.next_line(deadline)?;
            if line.text.contains(marker) {
                return Some(line);
            }
        }
    }

    /// Reads lines until `deadline` or until the guest is gone.
    pub fn read_until(&mut self, deadline: Instant) {
        while self.next_line(deadline).is_some() {}
    }

    fn next_line(&mut self, deadline: Instant) -> Option<Line> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => {
                self.log.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The power cut: SIGKILL, then whatever the console had said before it.
    pub fn power_cut(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.log.push(line);
        }
    }

    /// Waits for the guest to power itself off; false (and killed) after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        self.read_until(deadline);
        // The console closes a moment before the process can be reaped.
        let exited = loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break true,
                _ if Instant::now() >= deadline => break false,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.power_cut();
        exited
    }

    /// The first console line holding `marker`.
    pub fn marker(&self, marker: &str) -> Option<&Line> {
        self.log.iter().find(|line| line.text.contains(marker))
    }

    /// The console's last lines, for failure messages.
    pub fn tail(&self, count: usize) -> String {
        let from = self.log.len().saturating_sub(count);
        let lines = self.log[from..].iter().map(|line| line.text.as_str());
        lines.collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stamps each console line with the time it arrived, on a thread of its own so
/// the test can wait for markers with time limits.
fn read_lines(stdout: std::process::ChildStdout) -> Receiver<Line> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(bytes) = line else { break };
            let text = String::from_utf8_lossy(&bytes).trim_end().to_string();
            if send
                .send(Line {
                    at: Instant::now(),
                    text,
                })
                .is_err()
            {
                break;
            }
        }
    });
    receive
}
