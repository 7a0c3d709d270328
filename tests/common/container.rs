//! A fake host root for container conversions, shared by `convert.rs` and the
//! conversion power cuts of `powercut.rs`: `ROOT/etc/sub{u,g}id` and
//! `ROOT/lxc/NAME/{config,rootfs}` (the binary reads them with `--host-root ROOT
//! --lxcpath ROOT/lxc`), and the [`Snapshot`] of everything a conversion may touch.

use super::{collect, owner};
use lxc_idshift::manifest::Manifest;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The other users' lines of the fake /etc/subuid and /etc/subgid.
pub const SUBIDS: &str = "# other users of this host\nalice:100000:65536\nbob:165536:65536\n";
pub const COMMON: &str = "lxc.include = /usr/share/lxc/config/debian.common.conf\n";

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes `root` a host root with no container yet: `root` and `root/lxc` 0755,
/// `etc/subuid` and `etc/subgid` holding [`SUBIDS`].
pub fn make_host_root(root: &Path) {
    set_mode(root, 0o755);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir(root.join("lxc")).unwrap();
    set_mode(&root.join("lxc"), 0o755);
    std::fs::write(root.join("etc/subuid"), SUBIDS).unwrap();
    std::fs::write(root.join("etc/subgid"), SUBIDS).unwrap();
}

/// What `lxc-create -t debian` writes, for a rootfs at `rootfs`.
pub fn debian_config(name: &str, rootfs: &Path) -> String {
    format!(
        "# Template used to create this container: /usr/share/lxc/templates/lxc-debian\n\
         # Parameters passed to the template: -r bookworm\n\
         # For additional config options, please look at lxc.container.conf(5)\n\
         \n\
         # Uncomment the following line to support nesting containers:\n\
         #lxc.include = /usr/share/lxc/config/nesting.conf\n\
         # (Be aware this has security implications)\n\
         \n\
         lxc.net.0.type = empty\n\
         lxc.apparmor.profile = generated\n\
         lxc.apparmor.allow_nesting = 1\n\
         lxc.rootfs.path = dir:{}\n\
         \n\
         # Common configuration\n\
         {COMMON}\
         \n\
         # Container specific configuration\n\
         lxc.tty.max = 4\n\
         lxc.uts.name = {name}\n\
         lxc.arch = amd64\n\
         lxc.pty.max = 1024\n",
        rootfs.display()
    )
}

/// A container directory (0755 root:root) under `root/lxc` holding only `config`.
pub fn config_only(root: &Path, name: &str, config: &str) {
    let dir = root.join("lxc").join(name);
    std::fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o755);
    std::fs::write(dir.join("config"), config).unwrap();
    set_mode(&dir.join("config"), 0o644);
}

/// Everything a conversion of one container may touch.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub config: String,
    pub subuid: String,
    pub subgid: String,
    pub perms: Vec<(u32, u32, u32)>,
    pub files: Vec<String>,
    pub manifest: Manifest,
}

impl Snapshot {
    /// Container `name` under the host root `root`.
    pub fn of(root: &Path, name: &str) -> Snapshot {
        let (lxc, dir) = (root.join("lxc"), root.join("lxc").join(name));
        let read = |path: &Path| std::fs::read_to_string(path).unwrap();
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        Snapshot {
            config: read(&dir.join("config")),
            subuid: read(&root.join("etc/subuid")),
            subgid: read(&root.join("etc/subgid")),
            perms: [root, &lxc, &dir, &dir.join("config")]
                .map(owner)
                .into_iter()
                .collect(),
            files,
            manifest: collect(&dir.join("rootfs")),
        }
    }

    /// What a conversion leaves, without the journals (whose history differs by
    /// design).
    pub fn outcome(root: &Path, name: &str) -> Snapshot {
        let mut snapshot = Snapshot::of(root, name);
        snapshot
            .files
            .retain(|n| !n.starts_with("lxc-idshift.") || n.ends_with(".json"));
        snapshot
    }

    /// What differs from `actual`, expected first; empty when nothing does.
    pub fn differences(&self, actual: &Snapshot) -> Vec<String> {
        let mut found = self.manifest.diff(&actual.manifest, 30);
        let mut field = |what: &str, expected: String, actual: String| {
            if expected != actual {
                found.push(format!("{what}: expected {expected:?}, actual {actual:?}"));
            }
        };
        field("config", self.config.clone(), actual.config.clone());
        field("subuid", self.subuid.clone(), actual.subuid.clone());
        field("subgid", self.subgid.clone(), actual.subgid.clone());
        let perms = |s: &Snapshot| format!("{:?}", s.perms);
        field("permissions", perms(self), perms(actual));
        let files = |s: &Snapshot| format!("{:?}", s.files);
        field("container dir", files(self), files(actual));
        found
    }
}

/// The command line converting container `name` under the host root `root` to
/// `to` (`--release-range` with `--to 0`).
pub fn convert_args(root: &Path, name: &str, to: &str) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![name.into(), "--to".into(), to.into()];
    args.extend(["--lxcpath".into(), root.join("lxc").into_os_string()]);
    args.extend(["--host-root".into(), root.as_os_str().to_owned()]);
    if to == "0" {
        args.push("--release-range".into());
    }
    args
}
