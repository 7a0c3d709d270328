//! A Proxmox VE host emulated under a prefix, for the tests that need one without
//! Proxmox: the stand-in `pct` (tests/data/pve-host/pct) and its environment, the
//! LXC config Proxmox writes at every start (`update_lxc_config` of pve-container's
//! src/PVE/LXC.pm, checked against tests/data/pve-reference/expected/*.lxcconf),
//! and Proxmox's start and stop: the volumes mounted into
//! `/var/lib/lxc/VMID/rootfs` as its prestart hook mounts them, device nodes made
//! for `devN`, `lxc-start`, and everything unmounted after `lxc-stop` as its
//! poststop hook does.

use super::lxc::{ok, sh};
use super::text;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The directory holding the stand-in `pct`: put first on PATH.
pub fn pct_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pve-host")
}

/// PATH with the stand-in `pct` first.
pub fn path_with_pct() -> OsString {
    let mut path = pct_dir().into_os_string();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    path
}

/// The environment of a Proxmox host under `root` whose containers' LXC
/// directories are in `lxcpath`: PATH (the stand-in `pct` first), PVE_HOST_ROOT
/// and PVE_LXC_PATH.
pub fn pve_env(command: &mut Command, root: &Path, lxcpath: &Path) {
    command
        .env("PATH", path_with_pct())
        .env("PVE_HOST_ROOT", root)
        .env("PVE_LXC_PATH", lxcpath);
}

/// Runs the stand-in `pct` with `args` on the host under `root`.
pub fn pct(root: &Path, lxcpath: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("pct");
    pve_env(&mut command, root, lxcpath);
    command
        .args(args)
        .output()
        .expect("running the stand-in pct")
}

/// The main section of a `.conf` as Proxmox parses it: `key: value` lines up to
/// the first `[section]`, `#` description lines skipped; raw `lxc.*` keys in
/// their order under `lxc`, every other key once (the last one wins).
#[derive(Debug, Default)]
pub struct Conf {
    pub keys: BTreeMap<String, String>,
    pub lxc: Vec<(String, String)>,
}

impl Conf {
    pub fn parse(text: &str) -> Conf {
        let mut conf = Conf::default();
        for line in text.lines() {
            let line = line.trim_end();
            if line.starts_with('[') {
                break;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim().to_string();
            match key.starts_with("lxc.") {
                true => conf.lxc.push((key.to_string(), value)),
                false => drop(conf.keys.insert(key.to_string(), value)),
            }
        }
        conf
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    fn features(&self) -> BTreeMap<String, String> {
        (self.get("features").unwrap_or_default().split(','))
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn custom_idmap(&self) -> bool {
        self.lxc.iter().any(|(k, _)| k == "lxc.idmap")
    }

    /// `unprivileged: 1`, or any raw `lxc.idmap` (Proxmox treats both alike).
    pub fn unprivileged(&self) -> bool {
        let flag = self.get("unprivileged").is_some_and(|v| v != "0");
        flag || self.custom_idmap()
    }

    /// The host uid and gid of the container's root (`parse_id_maps`).
    pub fn root_ids(&self) -> (u32, u32) {
        let (mut uid, mut gid) = (0, 0);
        for (_, value) in self.lxc.iter().filter(|(k, _)| k == "lxc.idmap") {
            let parts: Vec<&str> = value.split_whitespace().collect();
            if let [kind, "0", host, _] = parts[..] {
                let host = host.parse().unwrap();
                match kind {
                    "u" => uid = host,
                    _ => gid = host,
                }
            }
        }
        if !self.custom_idmap() && self.get("unprivileged").is_some_and(|v| v != "0") {
            return (100_000, 100_000);
        }
        (uid, gid)
    }

    /// A container id mapped to the host (`map_ct_uid_to_host` / `_gid_`).
    fn to_host(&self, user: bool, id: u32) -> u32 {
        let kind = if user { "u" } else { "g" };
        let mut maps: Vec<(u32, u32, u32)> = (self.lxc.iter())
            .filter(|(k, _)| k == "lxc.idmap")
            .filter_map(|(_, v)| {
                let p: Vec<&str> = v.split_whitespace().collect();
                (p.len() == 4 && p[0] == kind)
                    .then(|| (p[1].parse().ok(), p[2].parse().ok(), p[3].parse().ok()))
                    .and_then(|t| Some((t.0?, t.1?, t.2?)))
            })
            .collect();
        if maps.is_empty() && self.unprivileged() {
            maps.push((0, 100_000, 65_536));
        }
        (maps.iter())
            .find(|(ct, _, n)| (*ct..ct + n).contains(&id))
            .map_or(id, |(ct, host, _)| id - ct + host)
    }

    /// Each `devN: /dev/X,uid=..,gid=..,mode=..` as (key, path, options).
    pub fn devices(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        (0..256)
            .filter_map(|i| {
                let key = format!("dev{i}");
                let value = self.get(&key)?;
                let mut parts = value.split(',');
                let first = parts.next()?;
                let mut options: BTreeMap<String, String> = (parts)
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let path = match first.split_once('=') {
                    Some(("path", path)) => path.to_string(),
                    Some((k, v)) => {
                        options.insert(k.to_string(), v.to_string());
                        options.remove("path")?
                    }
                    None => first.to_string(),
                };
                Some((key, path, options))
            })
            .collect()
    }

    /// rootfs then mp0..mp255: (key, volume, mount point inside).
    pub fn volumes(&self) -> Vec<(String, String, String)> {
        let keys = std::iter::once("rootfs".to_string()).chain((0..256).map(|i| format!("mp{i}")));
        keys.filter_map(|key| {
            let value = self.get(&key)?;
            let mut parts = value.split(',');
            let volume = parts.next()?.to_string();
            let mp = match key.as_str() {
                "rootfs" => "/".to_string(),
                _ => parts.find_map(|p| p.strip_prefix("mp="))?.to_string(),
            };
            Some((key, volume, mp))
        })
        .collect()
    }
}

/// The LXC config Proxmox writes to `/var/lib/lxc/VMID/config` at start
/// (`update_lxc_config`), and the seccomp rules it writes beside it for an
/// unprivileged container (`make_seccomp_config`). `device` gives a passed-through
/// device's (type, major, minor) (`get_device_mode_and_rdev`). Left out: cpusets
/// (`cores` picks random CPUs), hookscripts, and the bridge MTU (1500, as the
/// reference host had).
pub fn lxc_config(
    vmid: &str,
    conf: &Conf,
    lxcpath: &Path,
    device: &dyn Fn(&str) -> (char, u32, u32),
) -> (String, Option<String>) {
    let dir = lxcpath.join(vmid);
    let unprivileged = conf.unprivileged();
    let features = conf.features();
    let mut raw = format!(
        "lxc.cgroup.relative = 0\n\
         lxc.cgroup.dir.monitor = lxc.monitor/{vmid}\n\
         lxc.cgroup.dir.container = lxc/{vmid}\n\
         lxc.cgroup.dir.container.inner = ns\n\
         lxc.arch = {}\n",
        conf.get("arch").expect("arch")
    );
    let ostype = conf.get("ostype").expect("ostype");
    let config_dir = Path::new("/usr/share/lxc/config");
    let include = |suffix: &str, fallback: &str| {
        let file = config_dir.join(format!("{ostype}.{suffix}"));
        match file.is_file() {
            true => file,
            false => config_dir.join(fallback),
        }
    };
    raw += &format!(
        "lxc.include = {}\n",
        include("common.conf", "common.conf").display()
    );
    if unprivileged {
        raw += &format!(
            "lxc.include = {}\n",
            include("userns.conf", "userns.conf").display()
        );
    }
    let mut seccomp = None;
    let has = |key: &str| conf.lxc.iter().any(|(k, _)| k == key);
    if unprivileged && !has("lxc.seccomp.profile") {
        let mut rules = vec!["ioctl errno 1 [1,0x9400,SCMP_CMP_MASKED_EQ,0xff00]"];
        if features.get("keyctl").map(String::as_str) != Some("1") {
            rules.push("keyctl errno 38");
        }
        rules.push("socket errno 97 [0,38,SCMP_CMP_EQ]");
        let common = std::fs::read_to_string(config_dir.join("common.seccomp")).unwrap_or_default();
        seccomp = Some(format!("{common}{}\n", rules.join("\n")));
        raw += &format!(
            "lxc.seccomp.profile = {}\n",
            dir.join("rules.seccomp").display()
        );
    }
    raw += "lxc.apparmor.profile = generated\nlxc.apparmor.raw = allow mqueue,\n";
    match features.get("nesting").map(String::as_str) == Some("1") {
        true => raw += "lxc.apparmor.allow_nesting = 1\nlxc.apparmor.raw = allow userns,\n",
        false => raw +=
            "lxc.apparmor.raw = deny mount -> /proc/,\nlxc.apparmor.raw = deny mount -> /sys/,\n",
    }
    if unprivileged && features.get("force_rw_sys").map(String::as_str) != Some("1") {
        raw += "lxc.mount.auto = sys:mixed\n";
    }
    for (_, path, options) in conf.devices() {
        let (kind, major, minor) = device(&path);
        let deny_write = options.get("deny-write").map(String::as_str) == Some("1");
        let perms = if deny_write { "r" } else { "rw" };
        raw += &format!("lxc.cgroup2.devices.allow = {kind} {major}:{minor} {perms}\n");
        if deny_write {
            raw += &format!("lxc.cgroup2.devices.deny = {kind} {major}:{minor} w\n");
        }
    }
    raw += "lxc.monitor.unshare = 1\n";
    if unprivileged && !conf.custom_idmap() {
        raw += "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n";
    }
    if conf.get("console") == Some("0") {
        raw += "lxc.console.path = none\nlxc.cgroup2.devices.deny = c 5:1 rwm\n";
    }
    raw += &format!("lxc.tty.max = {}\n", conf.get("tty").unwrap_or("2"));
    raw += "lxc.environment = TERM=linux\n";
    let hostname = (conf.get("hostname").map(str::to_string)).unwrap_or(format!("CT{vmid}"));
    raw += &format!("lxc.uts.name = {hostname}\n");
    let memory: u64 = conf.get("memory").map_or(512, |m| m.parse().unwrap());
    let swap: u64 = conf.get("swap").map_or(0, |m| m.parse().unwrap());
    let high = match memory >= 16 * 1024 {
        true => (memory - 128) * 1024 * 1024,
        false => memory * 1024 * 1016,
    };
    raw += &format!(
        "lxc.cgroup2.memory.max = {}\nlxc.cgroup2.memory.high = {high}\nlxc.cgroup2.memory.swap.max = {}\n",
        memory * 1024 * 1024,
        swap * 1024 * 1024
    );
    raw += &format!("lxc.rootfs.path = {}\n", dir.join("rootfs").display());
    for (key, value) in conf.keys.iter().filter(|(k, _)| k.starts_with("net")) {
        let Some(index) = key.strip_prefix("net").filter(|i| i.parse::<u32>().is_ok()) else {
            continue;
        };
        let options: BTreeMap<&str, &str> =
            value.split(',').filter_map(|p| p.split_once('=')).collect();
        raw += &format!(
            "lxc.net.{index}.type = veth\nlxc.net.{index}.veth.pair = veth{vmid}i{index}\n"
        );
        if let Some(hwaddr) = options.get("hwaddr") {
            raw += &format!("lxc.net.{index}.hwaddr = {hwaddr}\n");
        }
        if let Some(name) = options.get("name") {
            raw += &format!("lxc.net.{index}.name = {name}\n");
        }
        let mtu = options.get("mtu").copied().unwrap_or("1500");
        raw += &format!(
            "lxc.net.{index}.mtu = {mtu}\nlxc.net.{index}.script.up = /usr/share/lxc/lxcnetaddbr\n"
        );
    }
    for (key, value) in &conf.lxc {
        raw += &format!("{key} = {value}\n");
    }
    (raw, seccomp)
}

/// The (type, major, minor) of a device node on this host.
pub fn host_device(path: &str) -> (char, u32, u32) {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let kind = if meta.file_type().is_block_device() {
        'b'
    } else {
        'c'
    };
    let rdev = meta.rdev();
    (kind, libc::major(rdev), libc::minor(rdev))
}

/// One storage of `storage.cfg`: its type and path (or pool mount point).
fn storage_path(root: &Path, storage: &str) -> (String, PathBuf) {
    let cfg = std::fs::read_to_string(root.join("etc/pve/storage.cfg")).unwrap();
    let mut current: Option<(String, String)> = None;
    for line in cfg.lines() {
        if let Some((kind, name)) = line
            .split_once(": ")
            .filter(|_| !line.starts_with(char::is_whitespace))
        {
            current = Some((kind.to_string(), name.trim().to_string()));
            continue;
        }
        let Some((kind, name)) = &current else {
            continue;
        };
        let mut words = line.split_whitespace();
        if name == storage && words.next() == Some("path") {
            let path = words.collect::<Vec<_>>().join(" ");
            return (kind.clone(), under(root, &path));
        }
    }
    panic!("storage {storage} has no path in storage.cfg");
}

/// `absolute` under the host prefix `root`.
pub fn under(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

/// Where a volume's data is on the host: a directory (subvol) or an image file.
pub fn volume_path(root: &Path, volume: &str) -> PathBuf {
    if volume.starts_with('/') {
        return under(root, volume);
    }
    let (storage, volname) = volume.split_once(':').unwrap();
    let (kind, path) = storage_path(root, storage);
    let (vmid, name) = volname.split_once('/').unwrap();
    let images = path.join("images").join(vmid);
    match (kind.as_str(), name.strip_suffix(".raw")) {
        ("btrfs", Some(dir)) => images.join(dir).join("disk.raw"),
        _ => images.join(name),
    }
}

/// A container Proxmox would start: its `.conf` under `root`, LXC's directory
/// `lxcpath/VMID`.
pub struct PveContainer {
    pub vmid: &'static str,
    pub root: PathBuf,
    pub lxcpath: PathBuf,
}

impl PveContainer {
    pub fn conf_path(&self) -> PathBuf {
        self.root
            .join("etc/pve/lxc")
            .join(format!("{}.conf", self.vmid))
    }

    pub fn conf(&self) -> Conf {
        Conf::parse(&std::fs::read_to_string(self.conf_path()).unwrap())
    }

    pub fn dir(&self) -> PathBuf {
        self.lxcpath.join(self.vmid)
    }

    pub fn rootfs_mount(&self) -> PathBuf {
        self.dir().join("rootfs")
    }

    /// `update_lxc_config`: writes the LXC config (and rules.seccomp) from the .conf.
    pub fn write_lxc_config(&self) -> String {
        let conf = self.conf();
        let (config, seccomp) = lxc_config(self.vmid, &conf, &self.lxcpath, &host_device);
        std::fs::create_dir_all(self.rootfs_mount()).unwrap();
        std::fs::write(self.dir().join("config"), &config).unwrap();
        if let Some(rules) = seccomp {
            std::fs::write(self.dir().join("rules.seccomp"), rules).unwrap();
        }
        config
    }

    /// Proxmox's start: the LXC config written from the .conf, then what the
    /// prestart hook does (a `lock:` other than `mounted` refused, with Proxmox's
    /// message; every volume mounted in order, each missing mount point made 0755
    /// and given to the container's root; a node made for each `devN`, owned by
    /// the mapped ids), then `lxc-start` and a wait until it runs.
    pub fn start(&self) {
        let conf = self.conf();
        if let Some(lock) = conf.get("lock").filter(|l| *l != "mounted") {
            panic!("CT is locked ({lock}): Proxmox would not start it");
        }
        let mut config = self.write_lxc_config();
        config += &self.mount_volumes(&conf);
        let passthrough = self.dir().join("passthrough");
        for (_, path, options) in conf.devices() {
            let node = passthrough.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(node.parent().unwrap()).unwrap();
            let (kind, major, minor) = host_device(&path);
            let _ = std::fs::remove_file(&node);
            let kind = if kind == 'b' { "b" } else { "c" };
            ok(
                "mknod",
                &[
                    node.to_str().unwrap(),
                    kind,
                    &major.to_string(),
                    &minor.to_string(),
                ],
            );
            let mode = options
                .get("mode")
                .map_or(0o660, |m| u32::from_str_radix(m, 8).unwrap());
            std::fs::set_permissions(&node, std::fs::Permissions::from_mode(mode)).unwrap();
            let uid = conf.to_host(true, options.get("uid").map_or(0, |u| u.parse().unwrap()));
            let gid = conf.to_host(false, options.get("gid").map_or(0, |g| g.parse().unwrap()));
            std::os::unix::fs::lchown(&node, Some(uid), Some(gid)).unwrap();
            // Proxmox's autodev hook puts the node at its path under /dev.
            config += &format!(
                "lxc.mount.entry = {} {} none bind,create=file 0 0\n",
                node.display(),
                path.trim_start_matches('/')
            );
        }
        std::fs::write(self.dir().join("config"), config).unwrap();
        let lxcpath = self.lxcpath.to_str().unwrap();
        let out = sh("lxc-start", &["-P", lxcpath, "-n", self.vmid]);
        if !out.status.success() {
            let log = sh(
                "lxc-start",
                &[
                    "-P",
                    lxcpath,
                    "-n",
                    self.vmid,
                    "-F",
                    "-l",
                    "DEBUG",
                    "-o",
                    "/dev/stderr",
                ],
            );
            self.unmount_volumes();
            panic!(
                "lxc-start {}: {}\n{}\n{}",
                self.vmid,
                text(&out.stderr),
                std::fs::read_to_string(self.dir().join("config")).unwrap_or_default(),
                text(&log.stderr)
            );
        }
        let started = Instant::now();
        while ok("lxc-info", &["-P", lxcpath, "-n", self.vmid, "-s", "-H"]).trim() != "RUNNING" {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} did not start",
                self.vmid
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(2));
    }

    /// `lxc-stop`, then what the poststop hook does: every volume unmounted.
    pub fn stop(&self) {
        ok(
            "lxc-stop",
            &["-P", self.lxcpath.to_str().unwrap(), "-n", self.vmid],
        );
        self.unmount_volumes();
    }

    /// Mounts each volume; returns the LXC config lines of those LXC mounts
    /// itself: a mount point with `idmap=` in an unprivileged container, which
    /// Proxmox mounts idmapped (mount_setattr with the container's user namespace
    /// for `passthrough`: host ids seen as the same ids inside), as LXC's
    /// `idmap=container` mount option does.
    fn mount_volumes(&self, conf: &Conf) -> String {
        let (uid, gid) = conf.root_ids();
        let mut lines = String::new();
        for (key, volume, mp) in conf.volumes() {
            let options = conf.get(&key).unwrap_or_default();
            if let Some(idmap) = options.split(',').find_map(|o| o.strip_prefix("idmap=")) {
                assert_eq!(
                    idmap, "passthrough",
                    "{key}: only idmap=passthrough is emulated"
                );
                if conf.unprivileged() {
                    let source = volume_path(&self.root, &volume);
                    lines += &format!(
                        "lxc.mount.entry = {} {} none bind,create=dir,idmap=container 0 0\n",
                        source.display(),
                        mp.trim_start_matches('/')
                    );
                    continue;
                }
            }
            let target = self.rootfs_mount().join(mp.trim_start_matches('/'));
            if mp != "/" {
                let mut dir = self.rootfs_mount();
                for part in Path::new(&mp).components().skip(1) {
                    dir.push(part);
                    let meta = std::fs::symlink_metadata(&dir);
                    assert!(
                        !meta.as_ref().is_ok_and(|m| m.file_type().is_symlink()),
                        "symlink encountered at: {}",
                        dir.display()
                    );
                    if meta.is_err() {
                        std::fs::create_dir(&dir).unwrap();
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                            .unwrap();
                        std::os::unix::fs::lchown(&dir, Some(uid), Some(gid)).unwrap();
                    }
                }
            }
            let source = volume_path(&self.root, &volume);
            let args: Vec<&str> = match source.is_file() {
                true => vec!["-o", "loop"],
                false => vec!["--bind"],
            };
            let mut command = Command::new("mount");
            command.args(args).arg(&source).arg(&target);
            let out = command.output().unwrap();
            if !out.status.success() {
                self.unmount_volumes();
                panic!(
                    "mounting {key} ({}): {}",
                    source.display(),
                    text(&out.stderr)
                );
            }
        }
        lines
    }

    /// Unmounts everything under the rootfs mount point, innermost first (loop
    /// devices go with their mounts).
    pub fn unmount_volumes(&self) {
        let rootfs = self.rootfs_mount();
        for _ in 0..5 {
            let mut points = mounts_under(&rootfs);
            if points.is_empty() {
                return;
            }
            points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for point in points {
                let _ = Command::new("umount").arg("-d").arg(&point).output();
            }
        }
        for point in mounts_under(&rootfs) {
            let _ = Command::new("umount").arg("-l").arg(&point).output();
        }
    }
}

/// Mount points at or under `dir` (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    (info.lines())
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Puts the host back whatever happens: the container stopped, its volumes
/// unmounted, `lxcpath/VMID` removed (only once nothing is mounted under it), the
/// device nodes it made removed, /etc/subuid and /etc/subgid as they were.
pub struct PveGuard {
    pub container: PveContainer,
    pub host_nodes: Vec<PathBuf>,
    saved: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl PveGuard {
    pub fn new(container: PveContainer, host_nodes: Vec<PathBuf>) -> PveGuard {
        let saved = ["/etc/subuid", "/etc/subgid"]
            .iter()
            .map(|p| (PathBuf::from(p), std::fs::read(p).ok()))
            .collect();
        PveGuard {
            container,
            host_nodes,
            saved,
        }
    }

    /// What the lxc-pve package gives root on a Proxmox host, which LXC's
    /// newuidmap needs to start an unprivileged container: `root:100000:65536`
    /// in the real /etc/subuid and /etc/subgid (restored on drop).
    pub fn grant_proxmox_range(&self) {
        for (path, content) in &self.saved {
            let text = String::from_utf8_lossy(content.as_deref().unwrap_or_default()).into_owned();
            if !text.lines().any(|l| l == "root:100000:65536") {
                let sep = if text.is_empty() || text.ends_with('\n') {
                    ""
                } else {
                    "\n"
                };
                std::fs::write(path, format!("{text}{sep}root:100000:65536\n")).unwrap();
            }
        }
    }
}

impl Drop for PveGuard {
    fn drop(&mut self) {
        for (path, content) in &self.saved {
            match content {
                Some(bytes) => drop(std::fs::write(path, bytes)),
                None => drop(std::fs::remove_file(path)),
            }
        }
        let c = &self.container;
        let lxcpath = c.lxcpath.to_str().unwrap();
        let _ = sh("lxc-stop", &["-P", lxcpath, "-n", c.vmid, "-k"]);
        c.unmount_volumes();
        let dir = c.dir();
        for point in mounts_under(&dir) {
            let _ = Command::new("umount").arg("-l").arg(&point).output();
        }
        match mounts_under(&dir).is_empty() {
            true => drop(std::fs::remove_dir_all(&dir)),
            false => eprintln!(
                "!!!!!!!! {} still has mounts under it: not removed !!!!!!!!",
                dir.display()
            ),
        }
        for node in &self.host_nodes {
            let _ = std::fs::remove_file(node);
        }
    }
}
