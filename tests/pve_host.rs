//! The emulated Proxmox VE host the Proxmox tests stand on, checked against
//! Proxmox itself: the LXC config `tests/common/pve.rs` writes at start against
//! what Proxmox VE 9 wrote for the reference configs (tests/data/pve-reference),
//! and the stand-in `pct` (tests/data/pve-host/pct): status, mount and unmount
//! with the `mounted` lock, Proxmox's lock refusals, and snapshots (refused where
//! the storage cannot, read-only btrfs snapshots and the config section where it
//! can, rollback).

mod common;

use common::pve::{lxc_config, pct, Conf};
use common::{require_root, run_ok, skip, text, LoopFs};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

fn reference(file: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pve-reference");
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// The LXC config written at start is Proxmox's, line for line, for every
/// reference container (privileged, unprivileged, a custom map with a device).
#[test]
fn the_emulated_start_writes_the_lxc_config_proxmox_writes() {
    if !Path::new("/usr/share/lxc/config/debian.userns.conf").is_file() {
        skip("the emulated start needs LXC's config files (.ci/run installs lxc)");
        return;
    }
    // /dev/ttyUSB0 on the machine the reference was recorded on.
    let device = |path: &str| {
        assert_eq!(path, "/dev/ttyUSB0");
        ('c', 188, 0)
    };
    for vmid in ["101", "102", "103"] {
        let conf = Conf::parse(&reference(&format!("{vmid}.conf")));
        let (config, seccomp) = lxc_config(vmid, &conf, Path::new("/var/lib/lxc"), &device);
        let expected = reference(&format!("expected/{vmid}.lxcconf"));
        assert_eq!(config, expected, "{vmid}");
        assert_eq!(seccomp.is_some(), vmid != "101", "{vmid}: rules.seccomp");
        if let Some(rules) = seccomp {
            assert!(rules.ends_with("ioctl errno 1 [1,0x9400,SCMP_CMP_MASKED_EQ,0xff00]\nkeyctl errno 38\nsocket errno 97 [0,38,SCMP_CMP_EQ]\n"), "{rules}");
        }
    }
}

/// A host under a temporary prefix with a `dir` storage `local` and container
/// 9150: a subvol rootfs, a raw ext4 image `mp0` and a bind `mp1`.
struct Host {
    tmp: tempfile::TempDir,
}

const CONF: &str = "#a description%3A kept\n\
arch: amd64\n\
hostname: standin\n\
memory: 512\n\
mp0: local:9150/vm-9150-disk-1.raw,mp=/srv/img,size=64M\n\
mp1: /srv/shared,mp=/srv/bind\n\
ostype: debian\n\
rootfs: local:9150/subvol-9150-disk-0.subvol,size=1G\n\
unprivileged: 1\n";

impl Host {
    fn new() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in [
            "etc/pve/lxc",
            "vz/images/9150/subvol-9150-disk-0.subvol",
            "srv/shared",
            "lxc",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(
            root.join("etc/pve/storage.cfg"),
            "dir: local\n\tpath /vz\n\tcontent rootdir,images\n",
        )
        .unwrap();
        let image = root.join("vz/images/9150/vm-9150-disk-1.raw");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        run_ok(Command::new("mkfs.ext4").arg("-q").arg(&image));
        std::fs::write(root.join("srv/shared/file"), "shared").unwrap();
        std::fs::write(root.join("etc/pve/lxc/9150.conf"), CONF).unwrap();
        Host { tmp }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn pct(&self, args: &[&str]) -> Output {
        pct(self.root(), &self.root().join("lxc"), args)
    }

    fn conf_path(&self) -> std::path::PathBuf {
        self.root().join("etc/pve/lxc/9150.conf")
    }

    fn conf(&self) -> String {
        std::fs::read_to_string(self.conf_path()).unwrap()
    }

    fn mounts(&self) -> Vec<String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let prefix = self.root().to_str().unwrap().to_string();
        let mut points: Vec<String> = (info.lines())
            .filter_map(|l| l.split(' ').nth(4))
            .filter_map(|p| p.strip_prefix(&prefix).map(str::to_string))
            .collect();
        points.sort();
        points
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let rootfs = self.root().join("lxc/9150/rootfs");
        for point in ["srv/bind", "srv/img", ""] {
            let _ = Command::new("umount")
                .arg("-d")
                .arg(rootfs.join(point))
                .output();
        }
    }
}

fn assert_fails(out: &Output, code: i32, message: &str, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}: {out:?}");
    assert!(
        text(&out.stderr).contains(message),
        "{what}: stderr lacks {message:?}: {}",
        text(&out.stderr)
    );
}

/// `pct status`, `mount` and `unmount` as Proxmox's: the `mounted` lock set, the
/// rootfs, the image volume (through a loop device) and the bind mount point
/// mounted under PVE_LXC_PATH/VMID/rootfs, mount points made for the container's
/// root; every lock refused with Proxmox's message; unmount leaves no mount, no
/// loop device and the .conf as it was. Snapshots on `dir` storage are refused
/// as Proxmox refuses them; unknown commands say they are not emulated.
#[test]
fn the_stand_in_pct_mounts_locks_and_refuses_as_proxmox() {
    if !require_root("the_stand_in_pct_mounts_locks_and_refuses_as_proxmox") {
        return;
    }
    let host = Host::new();
    let status = host.pct(&["status", "9150"]);
    assert_eq!(text(&status.stdout), "status: stopped\n", "{status:?}");
    assert!(status.status.success());
    let missing = host.pct(&["status", "9151"]);
    assert_fails(
        &missing,
        255,
        "Configuration file 'nodes/",
        "status of a missing CT",
    );
    assert!(text(&missing.stderr).contains("/lxc/9151.conf' does not exist"));

    let mounted = host.pct(&["mount", "9150"]);
    assert!(mounted.status.success(), "{mounted:?}");
    assert_eq!(
        text(&mounted.stdout),
        "mounted CT 9150 in '/var/lib/lxc/9150/rootfs'\n"
    );
    assert_eq!(
        host.conf(),
        CONF.replace("hostname: standin\n", "hostname: standin\nlock: mounted\n"),
        "the lock, where Proxmox's writer puts it"
    );
    assert_eq!(
        host.mounts(),
        [
            "/lxc/9150/rootfs",
            "/lxc/9150/rootfs/srv/bind",
            "/lxc/9150/rootfs/srv/img"
        ]
    );
    let rootfs = host.root().join("lxc/9150/rootfs");
    let srv = std::fs::metadata(rootfs.join("srv")).unwrap();
    assert_eq!(
        (srv.uid(), srv.gid(), srv.mode() & 0o7777),
        (100_000, 100_000, 0o755)
    );
    assert!(
        rootfs.join("srv/img/lost+found").is_dir(),
        "the image's file system"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/bind/file")).unwrap(),
        "shared"
    );
    let image = host.root().join("vz/images/9150/vm-9150-disk-1.raw");
    let loops = || text(&run_ok(Command::new("losetup").arg("-j").arg(&image)).stdout);
    assert!(loops().contains("/dev/loop"), "a loop device backs mp0");

    let locked = host.conf();
    for args in [&["mount", "9150"][..], &["snapshot", "9150", "before"]] {
        let refused = host.pct(args);
        assert_fails(
            &refused,
            255,
            "CT is locked (mounted)",
            &format!("{args:?}"),
        );
        assert_eq!(host.conf(), locked, "{args:?} refused: nothing written");
    }

    let unmounted = host.pct(&["unmount", "9150"]);
    assert!(unmounted.status.success(), "{unmounted:?}");
    assert_eq!(host.mounts(), Vec::<String>::new());
    assert_eq!(loops(), "", "the loop device went with the mount");
    assert_eq!(host.conf(), CONF, "unmount gives the .conf back");
    let again = host.pct(&["unmount", "9150"]);
    assert_fails(
        &again,
        255,
        "no lock found trying to remove 'mounted' lock",
        "unmount twice",
    );

    // Another lock: mount and snapshot refused, nothing written.
    let disk = CONF.replace("memory: 512\n", "lock: disk\nmemory: 512\n");
    std::fs::write(host.conf_path(), &disk).unwrap();
    for args in [&["mount", "9150"][..], &["snapshot", "9150", "before"]] {
        let refused = host.pct(args);
        assert_fails(&refused, 255, "CT is locked (disk)", &format!("{args:?}"));
        assert_eq!(host.conf(), disk);
    }
    assert_eq!(host.mounts(), Vec::<String>::new());
    let wrong = host.pct(&["unmount", "9150"]);
    assert_fails(
        &wrong,
        255,
        "found lock 'disk' trying to remove 'mounted' lock",
        "unmount",
    );

    // dir storage (raw images, subvol directories) and bind mounts cannot snapshot.
    std::fs::write(host.conf_path(), CONF).unwrap();
    let refused = host.pct(&["snapshot", "9150", "before"]);
    assert_fails(
        &refused,
        255,
        "snapshot feature is not available",
        "dir storage",
    );
    assert_eq!(host.conf(), CONF);

    let other = host.pct(&["start", "9150"]);
    assert_fails(
        &other,
        1,
        "stand-in pct: start is not emulated",
        "pct start",
    );
}

/// On `btrfs` storage `pct snapshot` takes a read-only snapshot of each volume
/// beside it (`subvol-VMID-disk-N.subvol@NAME`, as BTRFSPlugin names it) and
/// writes the `[NAME]` section (a copy of the config with `snaptime`) and
/// `parent: NAME`, as Proxmox writes the config (keys sorted, raw keys last);
/// a taken name is refused; `listsnapshot` shows the tree; `rollback` gives the
/// volume and the config back as they were at the snapshot.
#[test]
fn the_stand_in_pct_snapshots_btrfs_volumes_and_rolls_back() {
    if !require_root("the_stand_in_pct_snapshots_btrfs_volumes_and_rolls_back") {
        return;
    }
    let Some(btrfs) = LoopFs::new("btrfs", &[]) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/pve/lxc")).unwrap();
    let store = btrfs.mount.to_str().unwrap();
    // The storage's path is taken under the prefix: point it at the btrfs mount.
    std::fs::write(
        root.path().join("etc/pve/storage.cfg"),
        format!("btrfs: bt\n\tpath {store}\n\tcontent rootdir,images\n"),
    )
    .unwrap();
    let host_store = root.path().join(store.trim_start_matches('/'));
    std::fs::create_dir_all(host_store.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&btrfs.mount, &host_store).unwrap();
    let images = btrfs.mount.join("images/9160");
    std::fs::create_dir_all(&images).unwrap();
    let volume = images.join("subvol-9160-disk-0.subvol");
    run_ok(
        Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(&volume),
    );
    std::fs::write(volume.join("file"), "before").unwrap();
    let conf = "arch: amd64\nhostname: bt\nostype: debian\nrootfs: bt:9160/subvol-9160-disk-0.subvol,size=1G\nunprivileged: 1\nlxc.apparmor.profile: unconfined\n";
    let conf_path = root.path().join("etc/pve/lxc/9160.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let pct = |args: &[&str]| pct(root.path(), &root.path().join("lxc"), args);

    let taken = pct(&["snapshot", "9160", "before", "--description", "first: one"]);
    assert!(taken.status.success(), "{taken:?}");
    let snap = images.join("subvol-9160-disk-0.subvol@before");
    let ro = run_ok(
        Command::new("btrfs")
            .args(["property", "get"])
            .arg(&snap)
            .arg("ro"),
    );
    assert_eq!(text(&ro.stdout).trim(), "ro=true");
    assert_eq!(
        std::fs::read_to_string(snap.join("file")).unwrap(),
        "before"
    );
    let written = std::fs::read_to_string(&conf_path).unwrap();
    let snaptime = (written.lines())
        .find_map(|l| l.strip_prefix("snaptime: "))
        .expect("snaptime");
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - snaptime.parse::<u64>().unwrap();
    assert!(age < 60, "snaptime is now: {snaptime}");
    let main = conf.replace("ostype: debian\n", "ostype: debian\nparent: before\n");
    let section = format!(
        "[before]\n#first%3A one\narch: amd64\nhostname: bt\nostype: debian\nrootfs: bt:9160/subvol-9160-disk-0.subvol,size=1G\nsnaptime: {snaptime}\nunprivileged: 1\nlxc.apparmor.profile: unconfined\n"
    );
    assert_eq!(written, format!("{main}\n{section}"));

    let twice = pct(&["snapshot", "9160", "before"]);
    assert_fails(
        &twice,
        255,
        "snapshot name 'before' already used",
        "the same name",
    );
    assert_eq!(std::fs::read_to_string(&conf_path).unwrap(), written);
    let list = text(&pct(&["listsnapshot", "9160"]).stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].starts_with("`-> before ") && lines[0].ends_with("first: one"),
        "{list}"
    );
    assert!(
        lines[1].starts_with(" `-> current ") && lines[1].ends_with("You are here!"),
        "{list}"
    );

    // Changed after the snapshot, then rolled back.
    std::fs::write(volume.join("file"), "after").unwrap();
    let changed = written.replacen("hostname: bt\n", "hostname: changed\n", 1);
    std::fs::write(&conf_path, &changed).unwrap();
    let back = pct(&["rollback", "9160", "before"]);
    assert!(back.status.success(), "{back:?}");
    assert_eq!(
        std::fs::read_to_string(volume.join("file")).unwrap(),
        "before"
    );
    assert_eq!(std::fs::read_to_string(&conf_path).unwrap(), written);
    let subvols = run_ok(
        Command::new("btrfs")
            .args(["subvolume", "list"])
            .arg(&btrfs.mount),
    );
    let names: Vec<String> = (text(&subvols.stdout).lines())
        .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the volume and its snapshot, no leftover: {names:?}"
    );
}
