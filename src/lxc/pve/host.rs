//! What a Proxmox VE host says of its containers: which names are its containers
//! (a `.conf` under /etc/pve/lxc, even one never started, which has no LXC config
//! yet), the map each runs with, and whether one runs (`pct status`).

use super::conf::PveConf;
use super::volume::Storage;
use crate::fsutil::FileError;
use crate::lxc::container::{Container, ContainerError};
use crate::lxc::effects::HostEffects;
use crate::lxc::host::Host;
use crate::lxc::hostmap::HostMap;
use std::ffi::OsStr;
use std::path::PathBuf;

/// Where Proxmox keeps container configs (pmxcfs, this node's directory).
pub const CONF_DIR: &str = "/etc/pve/lxc";

/// The `.conf` of Proxmox container `name`: Proxmox names containers by VMID, so
/// only a numeric name can be one.
pub fn conf_path(host: &Host, name: &str) -> Option<PathBuf> {
    let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
    let conf = host.path(format!("{CONF_DIR}/{name}.conf"));
    (numeric && conf.is_file()).then_some(conf)
}

/// Every Proxmox container of the host, by VMID, in order.
pub fn vmids(host: &Host) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(host.path(CONF_DIR)) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = (dir.flatten())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".conf")
                .map(String::from)
        })
        .filter(|id| conf_path(host, id).is_some())
        .collect();
    ids.sort_by_key(|id| (id.len(), id.clone()));
    ids
}

/// The `.conf` of container `vmid` and where it is; an error names the file.
pub fn conf_of(host: &Host, vmid: &str) -> Result<(PathBuf, PveConf), String> {
    let path = conf_path(host, vmid).ok_or_else(|| format!("no {CONF_DIR}/{vmid}.conf"))?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, PveConf::parse(&text)))
}

/// The map container `vmid` runs with, as Proxmox derives it at start: None when
/// privileged; an error when its `.conf` cannot be read or its map is malformed.
pub fn map_of(host: &Host, vmid: &str) -> Result<Option<HostMap>, String> {
    let (path, conf) = conf_of(host, vmid)?;
    conf.map().map_err(|e| format!("{}: {e}", path.display()))
}

/// Where the host's storages are configured.
pub fn storage_cfg(host: &Host) -> PathBuf {
    host.path("/etc/pve/storage.cfg")
}

/// The host's storages; none without a `storage.cfg`.
pub fn storages(host: &Host) -> Result<Vec<Storage>, FileError> {
    let cfg = storage_cfg(host);
    match std::fs::read_to_string(&cfg) {
        Ok(text) => Ok(super::volume::parse_storage_cfg(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(FileError::new("read", &cfg, e)),
    }
}

/// The first pve-container that takes `idmap=` on a mount point.
const MOUNT_POINT_IDMAP_SINCE: [u32; 3] = [6, 1, 6];

/// Whether this host's pve-container takes `idmap=` on mount points (6.1.6 and
/// later, as dpkg says); Err says why not.
pub fn mount_point_idmap(host: &Host) -> Result<(), String> {
    let status = host.path("/var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status).unwrap_or_default();
    let version = (text.split("\n\n"))
        .find(|stanza| stanza.lines().any(|l| l == "Package: pve-container"))
        .and_then(|stanza| stanza.lines().find_map(|l| l.strip_prefix("Version: ")));
    let Some(version) = version else {
        return Err(format!(
            "pve-container is not installed ({})",
            status.display()
        ));
    };
    let numbers: Vec<u32> = (version.split(['.', '-', '~', '+']))
        .map_while(|part| part.parse().ok())
        .collect();
    match numbers.as_slice() >= MOUNT_POINT_IDMAP_SINCE.as_slice() {
        true => Ok(()),
        false => Err(format!(
            "pve-container {version} takes no idmap= on mount points (6.1.6 and later do: upgrade Proxmox VE)"
        )),
    }
}

/// Whether the container runs, as `pct status` says (it knows a container never
/// started, which `lxc-info` does not); without `pct` (a copy of a Proxmox host's
/// disks elsewhere), `lxc-info`, and a container that has no LXC config was never
/// started.
pub fn ensure_stopped(
    container: &Container,
    effects: &dyn HostEffects,
) -> Result<(), ContainerError> {
    let vmid = OsStr::new(&container.name);
    let out = match effects.run("pct", &[OsStr::new("status"), vmid]) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match container.config().is_file() {
                true => container.ensure_stopped(effects),
                false => Ok(()),
            }
        }
        Err(e) => {
            return Err(ContainerError::UnknownState {
                name: container.name.clone(),
                reason: format!("pct status: {e}"),
            })
        }
        Ok(out) => out,
    };
    let said = String::from_utf8_lossy(&out.stdout);
    match said.trim().strip_prefix("status:").map(str::trim) {
        Some("stopped") => Ok(()),
        Some(state) if out.status.success() => Err(ContainerError::NotStopped {
            name: container.name.clone(),
            state: state.to_string(),
        }),
        _ => Err(ContainerError::UnknownState {
            name: container.name.clone(),
            reason: format!(
                "pct status said {:?} {:?}",
                said.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

/// `RUNNING`, `STOPPED` (as `lxc-info -s` writes them, for `list`), or None when
/// neither `pct` nor `lxc-info` can tell.
pub fn state(container: &Container, effects: &dyn HostEffects) -> Option<String> {
    match ensure_stopped(container, effects) {
        Ok(()) => Some("STOPPED".into()),
        Err(ContainerError::NotStopped { state, .. }) => Some(state.to_uppercase()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxc::effects::RecordingHost;

    fn proxmox_host(confs: &[(&str, &str)]) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::under(dir.path());
        std::fs::create_dir_all(host.path(CONF_DIR)).unwrap();
        for (name, text) in confs {
            std::fs::write(host.path(format!("{CONF_DIR}/{name}")), text).unwrap();
        }
        (dir, host)
    }

    #[test]
    fn only_numeric_confs_are_containers_in_vmid_order() {
        let (_dir, host) = proxmox_host(&[
            ("1000.conf", "arch: amd64\n"),
            ("101.conf", "unprivileged: 1\n"),
            ("web.conf", "arch: amd64\n"),
            ("102.conf.tmp", ""),
        ]);
        assert_eq!(vmids(&host), ["101", "1000"]);
        assert_eq!(conf_path(&host, "web"), None);
        assert_eq!(map_of(&host, "1000"), Ok(None));
        let default = map_of(&host, "101").unwrap().unwrap();
        assert_eq!(default, crate::lxc::pve::conf::default_map());
        assert!(map_of(&host, "102").is_err());
    }

    #[test]
    fn mount_point_idmap_comes_with_pve_container_6_1_6() {
        let (_dir, host) = proxmox_host(&[]);
        assert!(mount_point_idmap(&host).is_err());
        let status = host.path("/var/lib/dpkg/status");
        std::fs::create_dir_all(status.parent().unwrap()).unwrap();
        for (version, works) in [
            ("6.1.5", false),
            ("6.1.6", true),
            ("6.1.10", true),
            ("5.3.3", false),
            ("7.0.1~bpo", true),
        ] {
            let text = format!("Package: lxc-pve\nVersion: 9.0.0\n\nPackage: pve-container\nStatus: install ok installed\nVersion: {version}\n");
            std::fs::write(&status, text).unwrap();
            assert_eq!(mount_point_idmap(&host).is_ok(), works, "{version}");
        }
    }

    #[test]
    fn pct_status_says_whether_it_runs() {
        let container = Container {
            name: "101".into(),
            lxcpath: PathBuf::from("/nonexistent/lxc"),
        };
        let said = |answer: &str| {
            let host = RecordingHost::default().answer("pct", answer);
            ensure_stopped(&container, &host)
        };
        assert!(said("status: stopped\n").is_ok());
        assert!(matches!(
            said("status: running\n"),
            Err(ContainerError::NotStopped { state, .. }) if state == "running"
        ));
        assert!(matches!(
            said("garbage\n"),
            Err(ContainerError::UnknownState { .. })
        ));
        // No pct, and no LXC config: never started.
        assert!(ensure_stopped(&container, &RecordingHost::default()).is_ok());
    }
}
