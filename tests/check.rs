//! `lxc-idshift check NAME`: purpose-built containers in a temporary lxcpath, with
//! the host's /etc, /dev and /sys under a temporary root (`--host-root`). A correct
//! unprivileged container (a bind mount idmapped, one shifted, a USB serial adapter
//! with its udev rule) has no problem; each broken one has exactly its problem, with
//! the command that fixes it; running that fix makes it pass where the fix is a
//! plain command.

mod common;

use common::*;
use lxc_idshift::lxc::host::Host;
use lxc_idshift::lxc::udev;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const NAME: &str = "web";
const H: u32 = 1_000_000;
const SUBIDS: &str = "alice:100000:65536\nroot:1000000:65536\n";

fn set(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A host root in a tempdir: etc/subuid, etc/subgid, a fake sysfs with a CP210x USB
/// serial adapter (ttyUSB0, 188:0), its node in dev/, srv/ holding the bind mount
/// sources, and lxc/ the lxcpath.
struct Machine {
    tmp: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        set(root, 0, 0, 0o755);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/subuid"), SUBIDS).unwrap();
        std::fs::write(root.join("etc/subgid"), SUBIDS).unwrap();
        std::fs::create_dir(root.join("lxc")).unwrap();
        set(&root.join("lxc"), 0, 0, 0o755);
        std::fs::create_dir(root.join("dev")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("dev/ttyUSB0"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o660),
            rustix::fs::makedev(188, 0),
        )
        .unwrap();
        set(&root.join("dev/ttyUSB0"), H, H + 20, 0o660);
        let usb = root.join("sys/devices/pci0000:00/usb1/1-2");
        let tty = usb.join("1-2:1.0/ttyUSB0/tty/ttyUSB0");
        std::fs::create_dir_all(&tty).unwrap();
        std::fs::write(usb.join("idVendor"), "10c4\n").unwrap();
        std::fs::write(usb.join("idProduct"), "ea60\n").unwrap();
        std::fs::create_dir_all(root.join("sys/dev/char")).unwrap();
        std::os::unix::fs::symlink(&tty, root.join("sys/dev/char/188:0")).unwrap();
        Machine { tmp }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn lxc(&self) -> PathBuf {
        self.root().join("lxc")
    }

    fn dir(&self) -> PathBuf {
        self.lxc().join(NAME)
    }

    fn rootfs(&self) -> PathBuf {
        self.dir().join("rootfs")
    }

    fn config_path(&self) -> PathBuf {
        self.dir().join("config")
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.config_path()).unwrap()
    }

    fn set_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn rules(&self) -> PathBuf {
        udev::rules_path(&Host::under(self.root()), NAME)
    }

    /// A small rootfs whose every inode belongs to `owner` (+ the container's www-data
    /// for /var/www), in a container directory as a conversion leaves it.
    fn container(&self, config: &str, owner: u32) {
        let dir = self.dir();
        std::fs::create_dir(&dir).unwrap();
        set(&dir, 0, H, 0o750);
        self.set_config(config);
        set(&self.config_path(), 0, 0, 0o640);
        let rootfs = self.rootfs();
        for d in ["", "etc", "bin", "var", "var/www", "root"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\ndialout:x:20:\n").unwrap();
        std::fs::write(rootfs.join("bin/sh"), "#!").unwrap();
        std::fs::write(rootfs.join("var/www/index.html"), "hi").unwrap();
        for p in ["", "etc", "etc/group", "bin", "bin/sh", "var", "root"] {
            std::os::unix::fs::lchown(rootfs.join(p), Some(owner), Some(owner)).unwrap();
        }
        for p in ["var/www", "var/www/index.html"] {
            std::os::unix::fs::lchown(rootfs.join(p), Some(owner + 33), Some(owner + 33)).unwrap();
        }
        set(&rootfs, owner, owner, 0o755);
    }

    /// A bind mount source `srv/NAME` with files of container root, www-data (33)
    /// and a user (1000), their ids plus `base` on disk.
    fn source(&self, name: &str, base: u32) -> PathBuf {
        let dir = self.root().join("srv").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        set(&self.root().join("srv"), 0, 0, 0o755);
        set(&dir, base + 33, base + 33, 0o755);
        for (file, id) in [("index.html", 33), ("notes", 1000), ("root-only", 0)] {
            std::fs::write(dir.join(file), "x").unwrap();
            set(&dir.join(file), base + id, base + id, 0o644);
        }
        dir
    }

    /// The udev rule lxc-idshift writes for the adapter.
    fn write_rule(&self) {
        let host = Host::under(self.root());
        let device = udev::probe(&host, &self.root().join("dev/ttyUSB0")).unwrap();
        let text = udev::rules_text(
            NAME,
            &[udev::DeviceRule {
                device,
                owner: H,
                group: H + 20,
            }],
        );
        std::fs::create_dir_all(self.rules().parent().unwrap()).unwrap();
        std::fs::write(self.rules(), text).unwrap();
    }

    /// The correct unprivileged container: shifted rootfs, `srv/data` (container
    /// ids) idmapped, `srv/shifted` (host ids) plain, the adapter with its rule.
    fn correct(&self) {
        self.source("data", 0);
        self.source("shifted", H);
        let config = format!(
            "lxc.rootfs.path = dir:{}\n\
             lxc.uts.name = {NAME}\n\
             lxc.idmap = u 0 {H} 65536\n\
             lxc.idmap = g 0 {H} 65536\n\
             lxc.mount.entry = proc proc proc nodev,noexec,nosuid 0 0\n\
             lxc.mount.entry = /srv/data srv/data none bind,create=dir,idmap=container 0 0\n\
             lxc.mount.entry = /srv/shifted srv/shifted none bind,create=dir 0 0\n\
             lxc.mount.entry = /dev/ttyUSB0 dev/ttyUSB0 none bind,optional,create=file\n",
            self.rootfs().display()
        );
        self.container(&config, H);
        self.write_rule();
    }

    fn check(&self, extra: &[&str]) -> Output {
        let mut args: Vec<std::ffi::OsString> = vec!["check".into(), NAME.into()];
        args.extend(["--lxcpath".into(), self.lxc().into_os_string()]);
        args.extend(["--host-root".into(), self.root().as_os_str().to_owned()]);
        args.extend(extra.iter().map(Into::into));
        run(&args)
    }

    /// `check --json`: the exit code must be `code`; returns the report.
    fn report(&self, code: i32) -> Value {
        let out = self.check(&["--json"]);
        assert_exit(&out, code, "check --json");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
    }
}

/// Runs the fix a problem came with; it must succeed.
fn run_fix(fix: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", fix])
        .status()
        .unwrap();
    assert!(status.success(), "{fix}");
}

/// The problems of a report, as (kind, path, message, fix).
fn problems(report: &Value) -> Vec<(String, String, String, String)> {
    let field = |p: &Value, name: &str| p[name].as_str().unwrap_or_default().to_string();
    report["problems"]
        .as_array()
        .expect("problems array")
        .iter()
        .map(|p| {
            (
                field(p, "kind"),
                field(p, "path"),
                field(p, "message"),
                field(p, "fix"),
            )
        })
        .collect()
}

/// Exactly one problem, of `kind`: returns it.
fn only_problem(report: &Value, kind: &str) -> (String, String, String, String) {
    let found = problems(report);
    let kinds: Vec<&str> = found.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(kinds, [kind], "{report:#}");
    found.into_iter().next().unwrap()
}

#[test]
fn a_correct_container_has_no_problem() {
    if !require_root("a_correct_container_has_no_problem") {
        return;
    }
    let host = Machine::new();
    host.correct();
    let report = host.report(0);
    assert_eq!(problems(&report), vec![], "{report:#}");
    assert_eq!(report["mode"], "unprivileged");
    assert_eq!(report["method"], "shift");
    let range = &report["range"];
    assert_eq!(
        (&range["uid_first"], &range["count"]),
        (&Value::from(H), &Value::from(65536))
    );
    assert_eq!(range["subuid_owned"], true);
    assert_eq!(range["subgid_owned"], true);
    assert_eq!(report["rootfs_scan"]["inodes"], 9);
    assert_eq!(report["rootfs_scan"]["nobody"], 0);
    // Both bind mounts listed, proc and the device not among them.
    let mounts = report["mounts"].as_array().unwrap();
    let sources: Vec<&str> = mounts
        .iter()
        .map(|m| m["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["/srv/data", "/srv/shifted"]);
    assert_eq!(mounts[0]["idmapped"], true);
    assert_eq!(mounts[0]["line"], 6);
    for mount in mounts {
        assert_eq!(mount["scan"]["inodes"], 4, "{mount:#}");
        assert_eq!(mount["scan"]["nobody"], 0, "{mount:#}");
    }
    let devices = report["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["seen"], true);
    let rule = devices[0]["udev_rule"].as_str().unwrap();
    assert!(rule.contains("ATTRS{idVendor}==\"10c4\""), "{rule}");

    let out = host.check(&[]);
    assert_exit(&out, 0, "check");
    let said = text(&out.stdout);
    assert!(said.contains("OK: no problem found"), "{said}");
    assert!(said.contains("/srv/data -> srv/data (idmapped)"), "{said}");
}

/// A method switch killed half-way (the state heads for the idmapped rootfs, the
/// config still says shift) is reported with the commands that finish or undo it.
#[test]
fn an_interrupted_method_switch_is_found() {
    if !require_root("an_interrupted_method_switch_is_found") {
        return;
    }
    let host = Machine::new();
    host.correct();
    let state = r#"{"origin": 1000000, "target": 1000000, "range": 65536, "perms": [],
                    "target_method": "idmap"}"#;
    std::fs::write(host.dir().join("lxc-idshift.state.json"), state).unwrap();
    let report = host.report(1);
    let (kind, _, message, fix) = problems(&report).remove(0);
    assert_eq!(kind, "interrupted_conversion", "{report:#}");
    assert!(
        message.contains("rootfs idmapped) was interrupted"),
        "{message}"
    );
    assert!(
        fix.contains("--to 1000000 --method idmap   (to finish it; or lxc-idshift")
            && fix.ends_with("--to 1000000 to undo it)"),
        "{fix}"
    );
}

#[test]
fn a_privileged_container_is_checked_too() {
    if !require_root("a_privileged_container_is_checked_too") {
        return;
    }
    let host = Machine::new();
    host.source("data", 0);
    let config = format!(
        "lxc.rootfs.path = dir:{}\nlxc.mount.entry = /srv/data srv/data none bind 0 0\n",
        host.rootfs().display()
    );
    host.container(&config, 0);
    let report = host.report(0);
    assert_eq!(report["mode"], "privileged");
    assert_eq!(report["range"], Value::Null);
    assert_eq!(report["mounts"][0]["scan"]["inodes"], 4);
    assert_eq!(report["mounts"][0]["scan"]["nobody"], 0);

    // idmap=container left in a privileged config: lxc-start aborts.
    host.set_config(&config.replace("none bind 0 0", "none bind,idmap=container 0 0"));
    let report = host.report(1);
    let (_, path, message, fix) = only_problem(&report, "idmap_unsupported");
    assert_eq!(path, "/srv/data");
    assert!(message.contains("makes lxc-start abort"), "{message}");
    assert!(
        fix.ends_with("line 2, remove idmap=container from the options"),
        "{fix}"
    );
}

#[test]
fn a_range_root_does_not_own_is_found() {
    if !require_root("a_range_root_does_not_own_is_found") {
        return;
    }
    let host = Machine::new();
    host.correct();
    std::fs::write(host.root().join("etc/subuid"), "alice:100000:65536\n").unwrap();
    let report = host.report(1);
    let (_, path, message, fix) = only_problem(&report, "range_not_owned");
    assert_eq!(path, host.root().join("etc/subuid").to_str().unwrap());
    assert!(
        message.contains("1000000-1065535 in /etc/subuid"),
        "{message}"
    );
    assert!(!message.contains("/etc/subgid"), "{message}");
    assert_eq!(fix, "usermod --add-subuids 1000000-1065535 root");
    assert_eq!(report["range"]["subuid_owned"], false);
    assert_eq!(report["range"]["subgid_owned"], true);

    // The fix, as usermod would apply it.
    std::fs::write(
        host.root().join("etc/subuid"),
        "alice:100000:65536\nroot:1000000:65536\n",
    )
    .unwrap();
    host.report(0);

    // Another user's ids: moving the container is the fix, not sharing them.
    std::fs::write(host.root().join("etc/subgid"), "bob:1000000:65536\n").unwrap();
    let report = host.report(1);
    let (_, _, message, fix) = only_problem(&report, "range_not_owned");
    assert!(message.contains("to bob"), "{message}");
    assert!(fix.contains("--to auto"), "{fix}");
}

#[test]
fn rootfs_ids_outside_the_map_are_found() {
    if !require_root("rootfs_ids_outside_the_map_are_found") {
        return;
    }
    let host = Machine::new();
    host.correct();
    // One file never shifted, one of an id beyond the range.
    set(&host.rootfs().join("bin/sh"), 0, 0, 0o755);
    set(&host.rootfs().join("etc/group"), 100_000, H, 0o644);
    let report = host.report(1);
    let (_, path, message, fix) = only_problem(&report, "rootfs_ids_outside_map");
    assert_eq!(path, host.rootfs().to_str().unwrap());
    assert!(message.starts_with("2 of 9 inodes"), "{message}");
    assert!(message.contains("uid 0 (1 inode)"), "{message}");
    assert!(message.contains("uid 100000 (1 inode)"), "{message}");
    assert!(message.contains("gid 0 (1 inode)"), "{message}");
    assert!(
        fix.contains(&format!(
            "lxc-idshift {NAME} --lxcpath {} --to 1000000",
            host.lxc().display()
        )),
        "{fix}"
    );
    assert!(fix.contains("-uid 100000"), "{fix}");
    assert_eq!(report["rootfs_scan"]["hidden_uids"]["100000"], 1);

    // With `idmap=container` for the rootfs, on-disk ids are container ids: the
    // shifted rootfs is wrong, an unshifted one right.
    let config = host.config().replace(
        "lxc.uts.name",
        "lxc.rootfs.options = idmap=container\nlxc.uts.name",
    );
    host.set_config(&config);
    let report = host.report(1);
    assert_eq!(report["method"], "idmap");
    let (_, _, message, _) = only_problem(&report, "rootfs_ids_outside_map");
    assert!(message.starts_with("8 of 9 inodes"), "{message}");
    for entry in ["", "etc", "etc/group", "bin", "var", "root"] {
        std::os::unix::fs::lchown(host.rootfs().join(entry), Some(0), Some(0)).unwrap();
    }
    for entry in ["var/www", "var/www/index.html"] {
        std::os::unix::fs::lchown(host.rootfs().join(entry), Some(33), Some(33)).unwrap();
    }
    host.report(0);
}

#[test]
fn a_parent_the_container_root_cannot_traverse_is_found() {
    if !require_root("a_parent_the_container_root_cannot_traverse_is_found") {
        return;
    }
    let host = Machine::new();
    host.correct();
    set(&host.lxc(), 0, 0, 0o700);
    let report = host.report(1);
    let (_, path, message, fix) = only_problem(&report, "parent_not_traversable");
    assert_eq!(path, host.lxc().to_str().unwrap());
    assert!(message.contains("0:0 0700"), "{message}");
    assert!(message.contains("cannot start"), "{message}");
    assert_eq!(fix, format!("chmod o+x {}", host.lxc().display()));

    // Running the fix is enough.
    run_fix(&fix);
    host.report(0);

    // A parent of a bind mount source too.
    set(&host.root().join("srv"), 0, 0, 0o750);
    let report = host.report(1);
    let (_, path, message, _) = only_problem(&report, "parent_not_traversable");
    assert_eq!(path, host.root().join("srv").to_str().unwrap());
    assert!(message.contains("with this bind mount"), "{message}");
}

/// POSIX ACLs count: a parent closed by its mode but open to the container's root
/// by an ACL entry passes; one whose ACL names the container's root without x is
/// found even with o+x, and the `setfacl` fix it prints is enough.
#[test]
fn a_parent_open_or_closed_by_its_acl_is_judged_by_it() {
    if !require_root("a_parent_open_or_closed_by_its_acl_is_judged_by_it") {
        return;
    }
    let host = Machine::new();
    host.correct();
    let lxc = host.lxc();
    set(&lxc, 0, 0, 0o700);
    let setfacl = |spec: &str| {
        let out = std::process::Command::new("setfacl")
            .args(["-m", spec])
            .arg(&lxc)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "setfacl {spec}: {}",
            text(&out.stderr)
        );
    };
    setfacl("u:1000000:x");
    host.report(0);

    setfacl("u:1000000:r,o::x");
    let report = host.report(1);
    let (_, path, _, fix) = only_problem(&report, "parent_not_traversable");
    assert_eq!(path, lxc.to_str().unwrap());
    assert_eq!(fix, format!("setfacl -m u:1000000:x {}", lxc.display()));
    run_fix(&fix);
    host.report(0);
}

#[test]
fn a_bind_mount_whose_owners_show_as_nobody_is_found() {
    if !require_root("a_bind_mount_whose_owners_show_as_nobody_is_found") {
        return;
    }
    let host = Machine::new();
    host.correct();
    // The same entry without idmap=container: www-data's files show as nobody.
    let idmapped = "/srv/data srv/data none bind,create=dir,idmap=container 0 0";
    let plain = "/srv/data srv/data none bind,create=dir 0 0";
    host.set_config(&host.config().replace(idmapped, plain));
    let report = host.report(1);
    let (_, path, message, fix) = only_problem(&report, "mount_shows_nobody");
    assert_eq!(path, "/srv/data");
    assert!(message.contains("4 of 4 inodes"), "{message}");
    assert!(message.contains("uid 33 (2 inodes)"), "{message}");
    assert!(message.contains(":6)"), "{message}");
    assert!(
        fix.starts_with(&format!(
            "lxc-idshift {NAME} --lxcpath {} --to 1000000 --mounts idmap",
            host.lxc().display()
        )),
        "{fix}"
    );
    assert!(
        fix.contains(&format!("lxc.mount.entry = {idmapped}")),
        "{fix}"
    );
    assert!(
        fix.contains(&host.config_path().display().to_string()),
        "{fix}"
    );
    assert_eq!(report["mounts"][0]["scan"]["nobody"], 4);

    // An idmapped mount of host-range ids is wrong the other way round.
    let shifted = "/srv/shifted srv/shifted none bind,create=dir 0 0";
    let config = host.config().replace(plain, idmapped).replace(
        shifted,
        &shifted.replace("create=dir", "create=dir,idmap=container"),
    );
    host.set_config(&config);
    let report = host.report(1);
    let (_, path, _, fix) = only_problem(&report, "mount_shows_nobody");
    assert_eq!(path, "/srv/shifted");
    assert!(fix.starts_with("find /srv/shifted -xdev"), "{fix}");

    // A missing source that is not optional keeps the container from starting.
    host.set_config(&config.replace("/srv/shifted srv", "/srv/gone srv"));
    let report = host.report(1);
    let (_, _, _, fix) = only_problem(&report, "mount_source_missing");
    assert!(fix.starts_with("mkdir -p /srv/gone"), "{fix}");
}

#[test]
fn an_idmapped_mount_that_cannot_work_is_found() {
    if !require_root("an_idmapped_mount_that_cannot_work_is_found") {
        return;
    }
    let host = Machine::new();
    host.correct();
    // ramfs cannot be idmapped: LXC would fail to mount /srv/data.
    let data = host.root().join("srv/data");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t ramfs");
    let _unmount = MountGuard(data.clone());
    set(&data, 33, 33, 0o755);
    let report = host.report(1);
    let (_, path, message, fix) = only_problem(&report, "idmap_unsupported");
    assert_eq!(path, data.to_str().unwrap());
    assert!(message.contains("cannot be idmapped"), "{message}");
    assert!(
        fix.contains("remove idmap=container")
            && fix.contains("lxc-idshift shift /srv/data --map b:0:1000000:65536"),
        "{fix}"
    );
}

/// An idmapped rootfs on a file system that cannot be idmapped (ramfs): the fix is
/// the conversion to the shift method at the same range.
#[test]
fn an_idmapped_rootfs_that_cannot_work_is_found() {
    if !require_root("an_idmapped_rootfs_that_cannot_work_is_found") {
        return;
    }
    let host = Machine::new();
    let rootfs = host.rootfs();
    let config = format!(
        "lxc.rootfs.path = dir:{}\nlxc.rootfs.options = idmap=container\nlxc.idmap = u 0 {H} 65536\nlxc.idmap = g 0 {H} 65536\n",
        rootfs.display()
    );
    host.container(&config, 0);
    host.report(0);
    let mounted = std::process::Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t ramfs");
    let _unmount = MountGuard(rootfs.clone());
    set(&rootfs, 0, 0, 0o755);
    let report = host.report(1);
    assert_eq!(report["method"], "idmap");
    let (_, path, message, fix) = only_problem(&report, "idmap_unsupported");
    assert_eq!(path, rootfs.to_str().unwrap());
    assert!(message.contains("cannot be idmapped"), "{message}");
    assert!(
        fix.starts_with(&format!(
            "lxc-idshift {NAME} --lxcpath {} --to 1000000 --method shift   (shifts the rootfs",
            host.lxc().display()
        )),
        "{fix}"
    );
}

#[test]
fn a_device_without_udev_rule_is_found() {
    if !require_root("a_device_without_udev_rule_is_found") {
        return;
    }
    let host = Machine::new();
    host.correct();
    std::fs::remove_file(host.rules()).unwrap();
    let report = host.report(1);
    let (_, path, message, fix) = only_problem(&report, "device_without_udev_rule");
    let node = host.root().join("dev/ttyUSB0");
    assert_eq!(path, node.to_str().unwrap());
    assert!(message.contains("no udev rule"), "{message}");
    assert!(fix.contains(&format!("lxc-idshift {NAME} ")), "{fix}");
    assert!(fix.contains("--to 1000000"), "{fix}");

    // With its rule back but the node still the host's: it shows as nobody.
    host.write_rule();
    set(&node, 0, 20, 0o660);
    let report = host.report(1);
    let (_, _, message, fix) = only_problem(&report, "device_shows_nobody");
    assert!(message.contains("owned by 0:20"), "{message}");
    assert!(
        fix.starts_with("udevadm control --reload && udevadm trigger"),
        "{fix}"
    );
}

#[test]
fn a_container_that_cannot_be_checked_exits_2() {
    let host = Machine::new_unprivileged_ok();
    let out = host.check(&[]);
    assert_exit(&out, 2, "check of a missing container");
    let said = text(&out.stderr);
    assert!(said.contains("no container web under"), "{said}");
    assert!(said.contains(&host.lxc().display().to_string()), "{said}");
}

impl Machine {
    /// A bare host root (no device node: mknod needs root) for tests any user runs.
    fn new_unprivileged_ok() -> Machine {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("lxc")).unwrap();
        Machine { tmp }
    }
}
