//! What `check` reads of a Proxmox VE container: the LXC config Proxmox would
//! write for it at start (its map, its raw `lxc.*` lines), with the rootfs at its
//! volume's directory and the bind mount points as the bind mounts Proxmox's
//! start hook makes, so that the checks of a plain LXC container apply as they are.

use super::conf::PveConf;
use super::volume::{self, Location, Source, PASSTHROUGH};
use crate::lxc::host::Host;

/// The config text, and what could not be put in it (said by `check`).
pub fn lxc_config(conf: &PveConf, host: &Host) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut notes = Vec::new();
    if let Ok(Some(map)) = conf.map() {
        for line in map.lxc_lines() {
            text += &format!("lxc.idmap = {line}\n");
        }
    }
    let cfg = super::host::storage_cfg(host);
    let storages = super::host::storages(host).unwrap_or_default();
    let volumes = match volume::volumes(conf.entries()) {
        Ok(volumes) => volumes,
        Err(e) => {
            notes.push(e.to_string());
            Vec::new()
        }
    };
    for v in volumes {
        let target = v.mount_point.trim_start_matches('/');
        match (&v.source, v.key.as_str()) {
            (Source::Storage { storage, volname }, "rootfs") => {
                match volume::locate(&storages, &cfg, (storage, volname)) {
                    Ok(Location::Directory(dir)) => {
                        text += &format!("lxc.rootfs.path = dir:{}\n", host.path(dir).display())
                    }
                    Ok(_) => {
                        text += &format!("lxc.rootfs.path = {storage}:{volname}\n");
                        notes.push(format!("rootfs {storage}:{volname} is an image or a logical volume: mounted only while the container runs or converts, so its owners were not checked"));
                    }
                    Err(e) => notes.push(e.to_string()),
                }
            }
            (Source::Bind(path), _) => {
                let idmapped = match v.idmap.as_deref() {
                    Some(PASSTHROUGH) => ",idmap=container",
                    _ => "",
                };
                text += &format!(
                    "lxc.mount.entry = {} {target} none bind,create=dir{idmapped} 0 0\n",
                    path.display()
                );
                if v.idmap.as_deref().is_some_and(|m| m != PASSTHROUGH) {
                    notes.push(format!("{}: its own idmap= is not checked", v.key));
                }
            }
            _ => {}
        }
    }
    for (key, value) in conf.entries() {
        if key.starts_with("lxc.") && key != "lxc.idmap" {
            text += &format!("{key} = {value}\n");
        }
    }
    (text, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxmox_start_is_seen_as_an_lxc_config() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::under(dir.path());
        std::fs::create_dir_all(host.path("/etc/pve")).unwrap();
        std::fs::write(
            host.path("/etc/pve/storage.cfg"),
            "dir: local\n\tpath /vz\n\tcontent rootdir\n",
        )
        .unwrap();
        let conf = PveConf::parse("mp0: /srv/data,mp=/data,idmap=passthrough\nmp1: local:101/vm-101-disk-1.raw,mp=/big\nrootfs: local:101/subvol-101-disk-0.subvol,size=8G\nunprivileged: 1\nlxc.mount.entry: /dev/ttyUSB0 dev/ttyUSB0 none bind,optional,create=file\n");
        let (text, notes) = lxc_config(&conf, &host);
        let rootfs = host.path("/vz/images/101/subvol-101-disk-0.subvol");
        assert_eq!(
            text,
            format!("lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\nlxc.rootfs.path = dir:{}\nlxc.mount.entry = /srv/data data none bind,create=dir,idmap=container 0 0\nlxc.mount.entry = /dev/ttyUSB0 dev/ttyUSB0 none bind,optional,create=file\n", rootfs.display())
        );
        assert!(notes.is_empty(), "{notes:?}");
    }
}
