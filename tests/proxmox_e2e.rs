//! End to end on an emulated Proxmox VE host: a real Debian 12 rootfs laid out as
//! Proxmox lays out a container on `dir` storage (`images/VMID/subvol-VMID-disk-0.subvol`),
//! with a second volume in a raw ext4 image (`mp0`), a bind mount point of a host
//! directory (`mp1`) and a passed-through device (`dev0`), its `.conf` under a
//! temporary host prefix (`--host-root`). Each start is Proxmox's, emulated by
//! tests/common/pve.rs: `/var/lib/lxc/VMID/config` written from the `.conf` as
//! `update_lxc_config` writes it, the volumes mounted into the rootfs and the
//! device node made as the prestart hook does, then `lxc-start`.
//!
//! Privileged start (the health, setuid, file capabilities, the volume's owners
//! recorded) -> `--dry-run` -> `lxc-idshift 9101 --to 100000` (every volume
//! shifted exactly, the bind source and the device untouched, `unprivileged: 1`
//! the only change of the `.conf`) -> `--to 0` (every volume and the `.conf`
//! byte for byte) -> `--to 100000` -> unprivileged start (processes on host uids
//! 100000+, setuid, capabilities, the `mp0` data read and written by its owner,
//! as healthy as privileged) -> `--to 0` (the exact inverse of what is on disk,
//! the `.conf` byte for byte) -> privileged start as healthy as the first. Then
//! the same with a pve-container that takes `idmap=` on mount points: the bind
//! mount point becomes `idmap=passthrough` (mounted idmapped at start, its files
//! seen and written inside with their own owners, nothing on the host changed),
//! and `--to 0` takes it away, the `.conf` byte for byte.
//! Creates `/var/lib/lxc/9101` and `/dev/lxc-idshift-e2e-9101` and removes both;
//! gives root Proxmox's 100000:65536 in /etc/subuid and /etc/subgid for LXC's
//! newuidmap, as the lxc-pve package does, and restores both files.
//! CI runs it against the installed package.

mod common;

use common::lxc::{ok, sh};
use common::pve::{pve_env, PveContainer, PveGuard};
use common::{
    assert_exit, assert_same, bin, collect, expected_forward_with, image_manifest, require_root,
    run_ok, skip, text, TestMap,
};
use lxc_idshift::manifest::Manifest;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VMID: &str = "9101";
/// Proxmox's map for every unprivileged container.
const PROXMOX: TestMap = TestMap(&[('b', 0, 100_000, 65_536)]);
/// A setuid-root copy of `whoami`: prints root when setuid works.
const SUID: &str = "/usr/local/bin/suid-whoami";
/// A copy of `cat` with cap_net_raw+ep.
const CAPCAT: &str = "/usr/local/bin/capcat";
const CAP_NET_RAW: u64 = 1 << 13;
/// The passed-through device: a node of /dev/full's numbers under a name of its own.
const DEVICE: &str = "/dev/lxc-idshift-e2e-9101";

/// The `.conf` as Proxmox writes it (keys sorted), before any conversion.
const CONF: &str = "#Debian 12 for the lxc-idshift end-to-end test\n\
arch: amd64\n\
cores: 1\n\
dev0: /dev/lxc-idshift-e2e-9101,gid=20,mode=0660\n\
features: nesting=1\n\
hostname: pve-e2e\n\
memory: 1024\n\
mp0: local:9101/vm-9101-disk-1.raw,mp=/srv/img,size=256M\n\
mp1: /srv/shared,mp=/srv/bind\n\
ostype: debian\n\
rootfs: local:9101/subvol-9101-disk-0.subvol,size=8G\n\
swap: 0\n";

struct Layout {
    root: PathBuf,
    rootfs: PathBuf,
    image: PathBuf,
    shared: PathBuf,
}

fn layout(root: &Path) -> Layout {
    let images = root.join("var/lib/vz/images").join(VMID);
    Layout {
        root: root.to_path_buf(),
        rootfs: images.join("subvol-9101-disk-0.subvol"),
        image: images.join("vm-9101-disk-1.raw"),
        shared: root.join("srv/shared"),
    }
}

/// The host files a Proxmox host has under the prefix: storage.cfg with the
/// default `local` dir storage, root's 100000:65536 from the lxc-pve package, and
/// the real host's accounts (the tool reads them there under --host-root).
fn make_host(root: &Path) {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in ["etc/pve/lxc", "var/lib/vz/images/9101", "srv/shared"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(
        root.join("etc/pve/storage.cfg"),
        "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup,rootdir,images\n",
    )
    .unwrap();
    for file in ["etc/subuid", "etc/subgid"] {
        std::fs::write(root.join(file), "root:100000:65536\n").unwrap();
    }
    for file in ["etc/passwd", "etc/group", "etc/login.defs"] {
        if Path::new("/").join(file).is_file() {
            std::fs::copy(Path::new("/").join(file), root.join(file)).unwrap();
        }
    }
}

/// A Debian bookworm rootfs from lxc-create's debian template (its cache makes it
/// quick), made in a scratch lxcpath and moved to the subvol directory; a user
/// alice (1000), the setuid binary, the capability and getcap planted.
fn make_rootfs(l: &Layout) -> bool {
    if sh("which", &["lxc-create", "debootstrap"]).status.code() != Some(0) {
        skip("proxmox_e2e needs lxc and debootstrap (.ci/run installs them)");
        return false;
    }
    let scratch = l.root.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let lxcpath = scratch.to_str().unwrap();
    ok(
        "lxc-create",
        &[
            "-P", lxcpath, "-n", VMID, "-t", "debian", "--", "-r", "bookworm",
        ],
    );
    std::fs::rename(scratch.join(VMID).join("rootfs"), &l.rootfs).unwrap();
    std::fs::remove_dir_all(&scratch).unwrap();
    let at = |p: &str| l.rootfs.join(p.trim_start_matches('/'));
    ok(
        "chroot",
        &[
            l.rootfs.to_str().unwrap(),
            "useradd",
            "-m",
            "-u",
            "1000",
            "-U",
            "alice",
        ],
    );
    std::fs::copy(at("/usr/bin/whoami"), at(SUID)).unwrap();
    std::fs::set_permissions(at(SUID), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::copy(at("/usr/bin/cat"), at(CAPCAT)).unwrap();
    ok("setcap", &["cap_net_raw+ep", at(CAPCAT).to_str().unwrap()]);
    std::fs::copy("/usr/sbin/getcap", at("/usr/local/bin/getcap")).unwrap();
    true
}

/// The `mp0` volume: ext4 in a raw image as Proxmox makes it, holding alice's
/// directory (a file, an ACL, a hardlink), a setgid directory and a bulk tree.
fn make_image(l: &Layout) {
    std::fs::File::create(&l.image)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-E", "root_owner=0:0"])
            .arg(&l.image),
    );
    let point = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&l.image)
            .arg(point.path()),
    );
    let fill = || -> std::io::Result<()> {
        let alice = point.path().join("alice");
        std::fs::create_dir(&alice)?;
        std::fs::write(alice.join("notes"), "alice's notes\n")?;
        std::fs::hard_link(alice.join("notes"), alice.join("notes.link"))?;
        for path in [&alice, &alice.join("notes")] {
            std::os::unix::fs::lchown(path, Some(1000), Some(1000))?;
        }
        std::fs::set_permissions(alice.join("notes"), std::fs::Permissions::from_mode(0o640))?;
        let team = point.path().join("team");
        std::fs::create_dir(&team)?;
        std::os::unix::fs::lchown(&team, Some(0), Some(1000))?;
        std::fs::set_permissions(&team, std::fs::Permissions::from_mode(0o2775))?;
        let bulk = point.path().join("bulk");
        std::fs::create_dir(&bulk)?;
        lxc_idshift::sample::build_bulk_tree(&bulk, 500)?;
        Ok(())
    };
    let filled = fill();
    if filled.is_ok() {
        run_ok(
            Command::new("setfacl")
                .args(["-m", "u:1000:rwx"])
                .arg(point.path().join("team")),
        );
    }
    run_ok(Command::new("umount").arg(point.path()));
    filled.unwrap();
}

/// The bind mount point's source: host files, root's and alice's.
fn make_shared(l: &Layout) {
    std::fs::write(l.shared.join("root-file"), "host root's\n").unwrap();
    std::fs::write(l.shared.join("alice-file"), "host 1000's\n").unwrap();
    std::os::unix::fs::lchown(l.shared.join("alice-file"), Some(1000), Some(1000)).unwrap();
}

/// The rootfs's manifest without the masks of units that cannot work
/// unprivileged, which a conversion to unprivileged adds and `--to 0` removes.
fn rootfs_manifest(l: &Layout) -> Manifest {
    let mut manifest = collect(&l.rootfs);
    for unit in lxc_idshift::lxc::units::FAILING_UNPRIVILEGED {
        let name = format!("etc/systemd/system/{}", unit.name);
        manifest.entries.remove(name.as_bytes());
    }
    manifest
}

/// Everything a conversion may change: the rootfs, the image's file system,
/// the bind source, and the `.conf`.
#[derive(Debug, PartialEq)]
struct State {
    rootfs: Manifest,
    image: Manifest,
    shared: Manifest,
    conf: String,
}

fn state(l: &Layout, c: &PveContainer) -> State {
    State {
        rootfs: rootfs_manifest(l),
        image: image_manifest(&l.image),
        shared: collect(&l.shared),
        conf: std::fs::read_to_string(c.conf_path()).unwrap(),
    }
}

/// `lxc-idshift ARGS --host-root PREFIX`, with the stand-in `pct` on PATH.
fn idshift(l: &Layout, c: &PveContainer, args: &[&str]) -> Output {
    let mut command = Command::new(bin());
    pve_env(&mut command, &l.root, &c.lxcpath);
    command
        .args(args)
        .arg("--host-root")
        .arg(&l.root)
        .output()
        .expect("running lxc-idshift")
}

fn convert(l: &Layout, c: &PveContainer, to: &str) -> String {
    let out = idshift(l, c, &[VMID, "--to", to]);
    assert_exit(&out, 0, &format!("lxc-idshift {VMID} --to {to}"));
    assert!(
        !c.dir().join("lxc-idshift.volumes/mp0").exists(),
        "--to {to}: the image volume unmounted at the end"
    );
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// What `lxc-idshift list --json` says of the container.
fn listed(l: &Layout, c: &PveContainer) -> serde_json::Value {
    let out = idshift(l, c, &["list", "--json"]);
    assert_exit(&out, 0, "lxc-idshift list --json");
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let containers = listing["containers"].as_array().expect("containers");
    (containers.iter())
        .find(|c| c["name"] == VMID)
        .unwrap_or_else(|| panic!("{VMID} not listed: {listing}"))
        .clone()
}

fn inside_as(user: &str, script: &str) -> String {
    common::lxc::attach_ok(VMID, user, script)
}

/// What a boot looks like: init's host uid, every container process's host uid,
/// systemd's state and failed units.
#[derive(Debug)]
struct Boot {
    init_uid: u32,
    uids: Vec<u32>,
    health: (String, Vec<String>),
}

/// The host uids of every process of the container: those in its init's pid
/// namespace.
fn container_uids(init: &str) -> Vec<u32> {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let init_ns = ns(init).expect("the init's pid namespace");
    let mut uids: Vec<u32> = (std::fs::read_dir("/proc").unwrap().flatten())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| ns(pid).as_ref() == Some(&init_ns))
        .filter_map(|pid| std::fs::metadata(format!("/proc/{pid}")).ok())
        .map(|meta| meta.uid())
        .collect();
    uids.sort();
    uids.dedup();
    uids
}

/// How the container sees the bind mount point's files (`stat -c %U:%G` of
/// root-file and alice-file): as on the host (privileged, or idmapped), or as
/// nobody (unprivileged, kept as it is).
const AS_ON_THE_HOST: &str = "root:root\nalice:alice";
const AS_NOBODY: &str = "nobody:nogroup\nnobody:nogroup";

/// Boots (emulated Proxmox start) and looks: setuid works for nobody, the file
/// capability is granted, alice reads and writes her files on the `mp0` volume,
/// the bind mount point's files are seen as `bind_view` says (and alice writes to
/// hers when she sees it as hers), the device is there with the group the `.conf`
/// gives; stops.
fn boot_and_look(c: &PveContainer, bind_view: &str) -> Boot {
    c.start();
    let pid = ok("lxc-info", &["-n", VMID, "-p", "-H"]);
    let init_uid = std::fs::metadata(format!("/proc/{}", pid.trim()))
        .unwrap()
        .uid();
    // A process of alice's beside root's.
    inside_as("alice", "setsid sleep 600 >/dev/null 2>&1 < /dev/null &");
    let uids = container_uids(pid.trim());
    let attach = |args: &[&str]| {
        let mut full = vec!["-n", VMID, "--"];
        full.extend_from_slice(args);
        text(&sh("lxc-attach", &full).stdout)
    };
    let state = attach(&["timeout", "120", "systemctl", "is-system-running", "--wait"]);
    let failed = attach(&["systemctl", "--failed", "--plain", "--no-legend"]);
    let mut units: Vec<String> = (failed.lines())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    units.sort();

    assert_eq!(
        inside_as("root", &format!("stat -c '%u %a' {SUID}")).trim(),
        "0 4755"
    );
    assert_eq!(inside_as("nobody", SUID).trim(), "root", "setuid works");
    let caps = inside_as("root", &format!("/usr/local/bin/getcap {CAPCAT}"));
    assert!(caps.contains("cap_net_raw"), "capability inside: {caps:?}");
    let status = inside_as("nobody", &format!("{CAPCAT} /proc/self/status"));
    let effective = (status.lines())
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .expect("CapEff");
    assert_eq!(effective, CAP_NET_RAW, "nobody running capcat: {status}");
    // The mp0 volume: alice's own files, read and written by her; root writes too.
    assert_eq!(
        inside_as(
            "root",
            "stat -c '%U:%G %a' /srv/img/alice/notes /srv/img/team"
        )
        .trim(),
        "alice:alice 640\nroot:alice 2775"
    );
    assert_eq!(
        inside_as("alice", "cat /srv/img/alice/notes"),
        "alice's notes\n"
    );
    inside_as(
        "alice",
        "echo written > /srv/img/alice/new.$$ && touch /srv/img/team/alice.$$ && ls /srv/img/alice/ >/dev/null",
    );
    inside_as(
        "root",
        "echo root > /srv/img/root.$$ && rm /srv/img/root.$$",
    );
    let seen = inside_as(
        "root",
        "stat -c %U:%G /srv/bind/root-file /srv/bind/alice-file",
    );
    assert_eq!(
        seen.trim(),
        bind_view,
        "the bind mount point's files inside"
    );
    if bind_view == AS_ON_THE_HOST {
        inside_as("alice", "echo inside >> /srv/bind/alice-file");
    }
    // The device, as the prestart hook makes it: the container's group 20.
    assert_eq!(
        inside_as("root", &format!("stat -c '%F %t:%T %g %a' {DEVICE}")).trim(),
        "character special file 1:7 20 660"
    );
    c.stop();
    Boot {
        init_uid,
        uids,
        health: (state.trim().to_string(), units),
    }
}

/// The files alice created on mp0 during a boot, removed (a boot's traces, like
/// the journal's, are not the conversion's) on the image directly.
fn remove_boot_files(l: &Layout) {
    let point = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&l.image)
            .arg(point.path()),
    );
    for dir in ["alice", "team"] {
        for entry in std::fs::read_dir(point.path().join(dir)).unwrap().flatten() {
            let name = entry.file_name().into_string().unwrap();
            if name.starts_with("new.") || name.starts_with("alice.") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
    run_ok(Command::new("umount").arg(point.path()));
}

/// The owners on disk of the files alice wrote inside during the last boot.
fn boot_file_owners(l: &Layout) -> Vec<(u32, u32)> {
    let point = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(&l.image)
            .arg(point.path()),
    );
    let mut owners = Vec::new();
    for dir in ["alice", "team"] {
        for entry in std::fs::read_dir(point.path().join(dir)).unwrap().flatten() {
            let name = entry.file_name().into_string().unwrap();
            if name.starts_with("new.") || name.starts_with("alice.") {
                let meta = entry.metadata().unwrap();
                owners.push((meta.uid(), meta.gid()));
            }
        }
    }
    run_ok(Command::new("umount").arg(point.path()));
    owners
}

#[test]
fn a_proxmox_container_converts_in_place_starts_and_comes_back() {
    let test = "a_proxmox_container_converts_in_place_starts_and_comes_back";
    if !require_root(test) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if std::env::var("CI").as_deref() == Ok("true") {
        assert_eq!(
            bin(),
            Path::new("/usr/bin/lxc-idshift"),
            "CI runs the end-to-end test against the installed package"
        );
    }
    let lxcpath = PathBuf::from("/var/lib/lxc");
    if lxcpath.join(VMID).exists() || Path::new(DEVICE).exists() {
        skip(&format!(
            "{}/{VMID} or {DEVICE} exists already; not touching it",
            lxcpath.display()
        ));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let l = layout(tmp.path());
    let container = PveContainer {
        vmid: VMID,
        root: l.root.clone(),
        lxcpath,
    };
    let guard = PveGuard::new(container, vec![PathBuf::from(DEVICE)]);
    guard.grant_proxmox_range();
    let c = &guard.container;
    make_host(&l.root);
    ok("mknod", &["-m", "0666", DEVICE, "c", "1", "7"]);
    if !make_rootfs(&l) {
        return;
    }
    make_image(&l);
    make_shared(&l);
    std::fs::write(c.conf_path(), CONF).unwrap();
    let status = common::pve::pct(&l.root, &c.lxcpath, &["status", VMID]);
    assert_eq!(text(&status.stdout), "status: stopped\n", "{status:?}");

    // Privileged, as Proxmox starts it: the reference for every later boot. The
    // first start also writes /var/lib/lxc/9101/config, by which the tool finds it.
    let privileged = boot_and_look(c, AS_ON_THE_HOST);
    eprintln!("privileged: {privileged:?}");
    assert_eq!(privileged.init_uid, 0);
    assert_eq!(privileged.uids, [0, 1000], "root's and alice's processes");
    remove_boot_files(&l);
    let original = state(&l, c);
    assert_eq!(original.conf, CONF);

    let before = listed(&l, c);
    assert_eq!(before["state"], "STOPPED", "{before}");
    assert_eq!(before["unprivileged"], false, "{before}");
    let managed = before["managed_by"].as_str().unwrap_or_default();
    assert!(managed.contains("Proxmox VE"), "{before}");

    // The plan: each volume, the bind mount point, the .conf's diff; nothing changed.
    let planned = idshift(&l, c, &[VMID, "--to", "100000", "--dry-run"]);
    assert_exit(&planned, 0, "--dry-run");
    let said = format!("{}{}", text(&planned.stdout), text(&planned.stderr));
    eprintln!("--dry-run:\n{said}");
    assert!(
        said.contains(l.rootfs.to_str().unwrap()),
        "the rootfs volume: {said}"
    );
    assert!(
        said.contains("mp0 (local:9101/vm-9101-disk-1.raw at /srv/img)"),
        "the image volume: {said}"
    );
    assert_eq!(
        said.matches("mp1 (/srv/shared at /srv/bind): a bind mount")
            .count(),
        1,
        "the bind mount point, said once: {said}"
    );
    assert!(
        said.contains("dev0 (/dev/lxc-idshift-e2e-9101,gid=20,mode=0660): a device"),
        "the device: {said}"
    );
    assert!(
        said.contains("+unprivileged: 1"),
        "the .conf's diff: {said}"
    );
    assert_eq!(state(&l, c), original, "--dry-run changes nothing");

    // To unprivileged: every volume shifted exactly, the bind source untouched,
    // the flag the .conf's only change, where Proxmox writes it.
    convert(&l, c, "100000");
    let shifted = state(&l, c);
    assert_same(
        &expected_forward_with(&original.rootfs, &PROXMOX),
        &shifted.rootfs,
        "rootfs",
    );
    assert_same(
        &expected_forward_with(&original.image, &PROXMOX),
        &shifted.image,
        "mp0",
    );
    assert_same(
        &original.shared,
        &shifted.shared,
        "mp1's source is left as it is",
    );
    let unprivileged_conf = CONF.replace("swap: 0\n", "swap: 0\nunprivileged: 1\n");
    assert_eq!(shifted.conf, unprivileged_conf);
    let after = listed(&l, c);
    assert_eq!(after["unprivileged"], true, "{after}");
    assert_eq!(after["range"]["host_first"], 100_000, "{after}");
    assert_eq!(after["range"]["count"], 65_536, "{after}");
    assert_eq!(after["unfinished"], serde_json::Value::Null, "{after}");
    let masked = l.rootfs.join("etc/systemd/system/sys-kernel-debug.mount");
    assert_eq!(std::fs::read_link(&masked).unwrap(), Path::new("/dev/null"));

    // And back, before any boot: every volume and the .conf byte for byte.
    convert(&l, c, "0");
    assert_eq!(state(&l, c), original, "an exact round trip");
    assert!(!masked.exists() && std::fs::symlink_metadata(&masked).is_err());

    // Unprivileged again, started as Proxmox starts it from the new .conf.
    convert(&l, c, "100000");
    let config = c.write_lxc_config();
    assert!(
        config.contains("lxc.idmap = u 0 100000 65536\n"),
        "{config}"
    );
    assert!(config.contains("debian.userns.conf\n"), "{config}");
    let unprivileged = boot_and_look(c, AS_NOBODY);
    eprintln!("unprivileged: {unprivileged:?}");
    assert_eq!(unprivileged.init_uid, 100_000);
    assert_eq!(
        unprivileged.uids,
        [100_000, 101_000],
        "every process of the container on a host uid of its range"
    );
    assert_eq!(
        unprivileged.health, privileged.health,
        "unprivileged, as healthy as privileged"
    );
    assert_eq!(
        boot_file_owners(&l),
        vec![(101_000, 101_000); 2],
        "what alice wrote is hers on disk, in the container's range"
    );
    remove_boot_files(&l);
    let booted = state(&l, c);

    convert(&l, c, "0");
    let back = state(&l, c);
    assert_eq!(back.conf, CONF, "the .conf byte for byte");
    assert_same(
        &booted.rootfs,
        &expected_forward_with(&back.rootfs, &PROXMOX),
        "rootfs back",
    );
    assert_same(
        &booted.image,
        &expected_forward_with(&back.image, &PROXMOX),
        "mp0 back",
    );
    assert_same(&original.image, &back.image, "mp0 as it was");
    assert_same(&original.shared, &back.shared, "mp1's source");

    let again = boot_and_look(c, AS_ON_THE_HOST);
    eprintln!("privileged again: {again:?}");
    assert_eq!(again.init_uid, 0);
    assert_eq!(again.uids, [0, 1000]);
    assert_eq!(
        again.health, privileged.health,
        "privileged again, as healthy"
    );
    assert_eq!(boot_file_owners(&l), vec![(1000, 1000); 2]);
    remove_boot_files(&l);

    // A host whose pve-container takes idmap= on mount points (6.1.10, as dpkg's
    // status says): the bind mount point becomes idmap=passthrough, which Proxmox
    // mounts idmapped: nothing on its source changes, and the container sees its
    // files with their owners and alice writes hers. --to 0 takes it away again.
    std::fs::create_dir_all(l.root.join("var/lib/dpkg")).unwrap();
    std::fs::write(
        l.root.join("var/lib/dpkg/status"),
        "Package: pve-container\nStatus: install ok installed\nVersion: 6.1.10\n\n",
    )
    .unwrap();
    let before = state(&l, c);
    assert_eq!(before.conf, CONF);
    let said = convert(&l, c, "100000");
    assert!(said.contains("idmap=passthrough added"), "{said}");
    let idmapped = state(&l, c);
    let passthrough = unprivileged_conf.replace(
        "mp1: /srv/shared,mp=/srv/bind\n",
        "mp1: /srv/shared,mp=/srv/bind,idmap=passthrough\n",
    );
    assert_eq!(idmapped.conf, passthrough);
    assert_same(
        &before.shared,
        &idmapped.shared,
        "mp1's source: nothing on disk changes",
    );
    assert_same(
        &expected_forward_with(&before.image, &PROXMOX),
        &idmapped.image,
        "mp0",
    );
    let config = c.write_lxc_config();
    let inside = boot_and_look(c, AS_ON_THE_HOST);
    eprintln!("unprivileged, mp1 idmapped: {inside:?} ({config})");
    assert_eq!(inside.uids, [100_000, 101_000]);
    assert_eq!(inside.health, privileged.health);
    let alice_file = std::fs::symlink_metadata(l.shared.join("alice-file")).unwrap();
    assert_eq!(
        (alice_file.uid(), alice_file.gid()),
        (1000, 1000),
        "written through the idmapped mount"
    );
    remove_boot_files(&l);
    convert(&l, c, "0");
    let back = state(&l, c);
    assert_eq!(
        back.conf, CONF,
        "idmap=passthrough taken away, the .conf byte for byte"
    );
    assert_same(&before.image, &back.image, "mp0 as it was");
    drop(guard);
    assert!(!Path::new("/var/lib/lxc").join(VMID).exists());
    assert!(!Path::new(DEVICE).exists());
}

/// The two tests touch /etc/subuid, /etc/subgid and LXC: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The host uid of container `vmid`'s init.
fn init_uid_of(vmid: &str) -> u32 {
    let pid = ok("lxc-info", &["-n", vmid, "-p", "-H"]);
    std::fs::metadata(format!("/proc/{}", pid.trim()))
        .unwrap()
        .uid()
}

/// `--snapshot`, the safety net, end to end on `btrfs` storage (a loop-mounted
/// btrfs under the prefix): `lxc-idshift 9103 --to 100000 --snapshot
/// before-idshift` has the stand-in `pct` take a read-only snapshot of the rootfs
/// subvolume (as Proxmox's BTRFSPlugin names it) and the `[before-idshift]` section
/// before it changes anything, then converts; the container starts unprivileged;
/// `pct rollback 9103 before-idshift` gives back the privileged container exactly
/// (the rootfs's manifest, the `.conf` as the snapshot recorded it), and it starts
/// privileged.
#[test]
fn a_snapshot_taken_before_the_conversion_rolls_it_back() {
    let test = "a_snapshot_taken_before_the_conversion_rolls_it_back";
    if !require_root(test) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const ID: &str = "9103";
    let lxcpath = PathBuf::from("/var/lib/lxc");
    if lxcpath.join(ID).exists() {
        skip(&format!(
            "{}/{ID} exists already; not touching it",
            lxcpath.display()
        ));
        return;
    }
    if sh("which", &["lxc-create", "mkfs.btrfs"]).status.code() != Some(0) {
        skip(&format!(
            "{test} needs lxc and btrfs-progs (.ci/run installs them)"
        ));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_host(root);
    // The btrfs storage: a sparse image mounted at the storage's path.
    let image = root.join("btrfs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    run_ok(Command::new("mkfs.btrfs").arg("-q").arg(&image));
    let store = root.join("bt");
    std::fs::create_dir(&store).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&store),
    );
    let _store = common::MountGuard(store.clone());
    std::fs::write(
        root.join("etc/pve/storage.cfg"),
        "btrfs: bt\n\tpath /bt\n\tcontent rootdir,images\n",
    )
    .unwrap();
    let container = PveContainer {
        vmid: ID,
        root: root.to_path_buf(),
        lxcpath,
    };
    let guard = PveGuard::new(container, Vec::new());
    guard.grant_proxmox_range();
    let c = &guard.container;
    std::fs::create_dir_all(store.join("images").join(ID)).unwrap();
    let rootfs = store
        .join("images")
        .join(ID)
        .join("subvol-9103-disk-0.subvol");
    run_ok(
        Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(&rootfs),
    );
    let scratch = root.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let scratch_path = scratch.to_str().unwrap();
    ok(
        "lxc-create",
        &[
            "-P",
            scratch_path,
            "-n",
            ID,
            "-t",
            "debian",
            "--",
            "-r",
            "bookworm",
        ],
    );
    let made = scratch.join(ID).join("rootfs");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", made.display()))
            .arg(&rootfs),
    );
    std::fs::remove_dir_all(&scratch).unwrap();
    let conf = "arch: amd64\nhostname: snap\nmemory: 512\nostype: debian\nrootfs: bt:9103/subvol-9103-disk-0.subvol,size=2G\nswap: 0\n";
    std::fs::write(c.conf_path(), conf).unwrap();

    c.start();
    assert_eq!(init_uid_of(ID), 0);
    c.stop();
    let original = collect(&rootfs);

    let mut command = Command::new(bin());
    pve_env(&mut command, root, &c.lxcpath);
    let out = command
        .args([
            ID,
            "--to",
            "100000",
            "--snapshot",
            "before-idshift",
            "--host-root",
        ])
        .arg(root)
        .output()
        .unwrap();
    assert_exit(&out, 0, "--to 100000 --snapshot before-idshift");
    let snapshot = rootfs.with_file_name("subvol-9103-disk-0.subvol@before-idshift");
    let ro = run_ok(
        Command::new("btrfs")
            .args(["property", "get"])
            .arg(&snapshot)
            .arg("ro"),
    );
    assert_eq!(text(&ro.stdout).trim(), "ro=true");
    assert_same(
        &original,
        &collect(&snapshot),
        "the snapshot: the tree before",
    );
    let mut shifted = collect(&rootfs);
    for unit in lxc_idshift::lxc::units::FAILING_UNPRIVILEGED {
        let name = format!("etc/systemd/system/{}", unit.name);
        shifted.entries.remove(name.as_bytes());
    }
    assert_same(
        &expected_forward_with(&original, &PROXMOX),
        &shifted,
        "rootfs",
    );
    let converted = std::fs::read_to_string(c.conf_path()).unwrap();
    let (main, section) = converted
        .split_once("\n[before-idshift]\n")
        .expect("the section");
    assert_eq!(
        main,
        conf.replace(
            "ostype: debian\n",
            "ostype: debian\nparent: before-idshift\n"
        )
        .replace("swap: 0\n", "swap: 0\nunprivileged: 1\n")
    );
    let settings: String = (section.lines())
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let snaptime = (settings.lines())
        .find_map(|l| l.strip_prefix("snaptime: "))
        .expect("snaptime");
    assert_eq!(
        settings,
        conf.replace("swap: 0\n", &format!("snaptime: {snaptime}\nswap: 0\n")),
        "the snapshot: a copy of the privileged container's settings"
    );
    assert!(
        !section.contains("unprivileged"),
        "the snapshot is of the privileged container: {section}"
    );

    c.write_lxc_config();
    c.start();
    assert_eq!(init_uid_of(ID), 100_000, "started unprivileged");
    c.stop();

    let back = common::pve::pct(root, &c.lxcpath, &["rollback", ID, "before-idshift"]);
    assert!(back.status.success(), "{back:?}");
    assert_same(&original, &collect(&rootfs), "rolled back: the tree before");
    let rolled = std::fs::read_to_string(c.conf_path()).unwrap();
    let (main, _) = rolled
        .split_once("\n[before-idshift]\n")
        .expect("the section stays");
    assert_eq!(
        main,
        conf.replace(
            "ostype: debian\n",
            "ostype: debian\nparent: before-idshift\n"
        ),
        "the .conf as the snapshot recorded it: privileged"
    );
    c.start();
    assert_eq!(init_uid_of(ID), 0, "started privileged again");
    c.stop();
    drop(guard);
    assert!(!Path::new("/var/lib/lxc").join(ID).exists());
}
