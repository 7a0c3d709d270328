//! The volumes of a Proxmox VE container: `rootfs:` and `mpN:` entries, and where
//! each one's files are on the host, from `/etc/pve/storage.cfg`. A storage-backed
//! volume is a file system of its own (shifted as its own tree); an `mpN` naming a
//! host directory is a bind mount (never shifted as the container's own); one under
//! `/dev` is a device.
//!
//! Facts (pve-storage's plugins, `parse_volname` and `path`): `dir`, `nfs`, `cifs`
//! and `btrfs` storages keep `VMID/subvol-VMID-disk-N.subvol` as a directory and
//! `VMID/vm-VMID-disk-N.raw` as an image under `PATH/images/`; a `zfspool`'s
//! `subvol-VMID-disk-N` is a dataset mounted at `/POOL/NAME` (or the storage's
//! `mountpoint`); `lvm` and `lvmthin` volumes are `/dev/VG/NAME`, holding ext4.

use std::path::{Path, PathBuf};

/// The `idmap=` of a mount point whose files keep their container ids on disk:
/// each container id is the same id on the disk.
pub const PASSTHROUGH: &str = "passthrough";

/// One `rootfs:` or `mpN:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `rootfs`, `mp0`...
    pub key: String,
    /// Where the container sees it: `/` for the rootfs, `mp=` for the others.
    pub mount_point: String,
    pub source: Source,
    /// `idmap=` (pve-container 6.1.6 and later): `passthrough`, or pieces
    /// `u:C:D:N;g:...` mapping container ids to ids on the volume.
    pub idmap: Option<String>,
}

/// What a volume entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `STORAGE:VOLNAME`: a volume of a configured storage.
    Storage { storage: String, volname: String },
    /// A host directory bind-mounted into the container.
    Bind(PathBuf),
    /// A host block device (`/dev/...`) mounted into the container.
    Device(PathBuf),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VolumeError {
    #[error("{key}: {value:?}: {why}; fix it with `pct set`, then run the same command again")]
    Malformed {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error(
        "{volume}: storage {storage} is not in {cfg}; is this the node the container lives on?"
    )]
    UnknownStorage {
        volume: String,
        storage: String,
        cfg: PathBuf,
    },
    #[error("{volume}: storage {storage} is of type {kind}, whose volumes lxc-idshift cannot reach in place ({why}); move the volume to a dir, zfspool, lvm(thin) or btrfs storage first (`pct move-volume`)")]
    UnsupportedStorage {
        volume: String,
        storage: String,
        kind: String,
        why: &'static str,
    },
}

/// Where a volume's files are on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory holding the tree (a zfs dataset, a subvol directory).
    Directory(PathBuf),
    /// A raw image file holding a file system (mounted through a loop device).
    Image(PathBuf),
    /// A block device holding a file system.
    Block(PathBuf),
}

/// The volumes of a main section's `rootfs:` and `mpN:` values, rootfs first.
pub fn volumes<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Volume>, VolumeError> {
    let mut found = Vec::new();
    for (key, value) in entries {
        let is_mp = key
            .strip_prefix("mp")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if key == "rootfs" || is_mp {
            found.push(parse(key, value)?);
        }
    }
    found.sort_by_key(|v| v.key != "rootfs");
    Ok(found)
}

/// Parses `VOLUME[,opt=value...]` (or `volume=VOLUME,...`).
pub fn parse(key: &str, value: &str) -> Result<Volume, VolumeError> {
    let bad = |why| VolumeError::Malformed {
        key: key.to_string(),
        value: value.to_string(),
        why,
    };
    let mut volume = None;
    let mut mount_point = (key == "rootfs").then(|| "/".to_string());
    let mut idmap = None;
    for (i, item) in value.split(',').enumerate() {
        match item.split_once('=') {
            Some(("volume", v)) => volume = Some(v),
            Some(("mp", v)) => mount_point = Some(v.to_string()),
            Some(("idmap", v)) => idmap = Some(v.to_string()),
            Some(_) => {}
            None if i == 0 => volume = Some(item),
            None => return Err(bad("an option without a value")),
        }
    }
    let volume = volume
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad("no volume"))?;
    let mount_point = mount_point.ok_or_else(|| bad("no mp= (where the container sees it)"))?;
    if !mount_point.starts_with('/') || mount_point.split('/').any(|c| c == "..") {
        return Err(bad("mp= must be an absolute path without .."));
    }
    let source = if let Some(path) = volume.strip_prefix('/') {
        if path.split('/').any(|c| c == "..") {
            return Err(bad("a host path with .."));
        }
        match volume.starts_with("/dev/") {
            true => Source::Device(PathBuf::from(volume)),
            false => Source::Bind(PathBuf::from(volume)),
        }
    } else {
        let (storage, volname) = volume.split_once(':').ok_or_else(|| bad("no STORAGE:"))?;
        let safe = |s: &str| !s.is_empty() && !s.split('/').any(|c| c.is_empty() || c == "..");
        if !safe(storage) || !safe(volname) {
            return Err(bad(
                "a volume id must be STORAGE:NAME without .. or empty parts",
            ));
        }
        Source::Storage {
            storage: storage.to_string(),
            volname: volname.to_string(),
        }
    };
    Ok(Volume {
        key: key.to_string(),
        mount_point,
        source,
        idmap,
    })
}

/// One storage of `/etc/pve/storage.cfg`: its type, id and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub kind: String,
    pub id: String,
    pub options: Vec<(String, String)>,
}

impl Storage {
    /// The host directory holding the storage's volumes, for the kinds that
    /// have one (`path`, a zfspool's `mountpoint` or `/POOL`).
    pub fn path(&self) -> Option<PathBuf> {
        match self.kind.as_str() {
            "zfspool" => (self.option("mountpoint").map(PathBuf::from))
                .or_else(|| self.option("pool").map(|pool| Path::new("/").join(pool))),
            _ => self.option("path").map(PathBuf::from),
        }
    }

    fn option(&self, key: &str) -> Option<&str> {
        (self.options.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses storage.cfg: `TYPE: ID` headers, each followed by indented `key value`
/// lines; `#` comments and blank lines skipped.
pub fn parse_storage_cfg(text: &str) -> Vec<Storage> {
    let mut storages: Vec<Storage> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        match (indented, storages.last_mut()) {
            (true, Some(storage)) => {
                let (key, value) = trimmed
                    .split_once(char::is_whitespace)
                    .unwrap_or((trimmed, ""));
                storage
                    .options
                    .push((key.to_string(), value.trim().to_string()));
            }
            (true, None) => {}
            (false, _) => {
                if let Some((kind, id)) = trimmed.split_once(':') {
                    storages.push(Storage {
                        kind: kind.trim().to_string(),
                        id: id.trim().to_string(),
                        options: Vec::new(),
                    });
                }
            }
        }
    }
    storages
}

/// The ZFS dataset of a `zfspool` storage's volume (`POOL/NAME`); None for
/// other storages.
pub fn zfs_dataset(storages: &[Storage], (storage, volname): (&str, &str)) -> Option<String> {
    let found = (storages.iter()).find(|s| s.id == storage && s.kind == "zfspool")?;
    Some(format!("{}/{volname}", found.option("pool")?))
}

/// Where a storage volume's files are, as the storage's plugin puts them.
pub fn locate(
    storages: &[Storage],
    cfg: &Path,
    (storage, volname): (&str, &str),
) -> Result<Location, VolumeError> {
    let volume = format!("{storage}:{volname}");
    let found = (storages.iter()).find(|s| s.id == storage);
    let found = found.ok_or_else(|| VolumeError::UnknownStorage {
        volume: volume.clone(),
        storage: storage.to_string(),
        cfg: cfg.to_path_buf(),
    })?;
    let unsupported = |why| VolumeError::UnsupportedStorage {
        volume: volume.clone(),
        storage: storage.to_string(),
        kind: found.kind.clone(),
        why,
    };
    match found.kind.as_str() {
        "dir" | "nfs" | "cifs" | "btrfs" => {
            let default = format!("/mnt/pve/{storage}");
            let base = found.option("path").unwrap_or(&default);
            let path = Path::new(base).join("images").join(volname);
            let name = volname.rsplit('/').next().unwrap_or(volname);
            if found.kind == "btrfs" && name.starts_with("vm-") {
                // btrfs keeps a raw volume as VMID/vm-VMID-disk-N/disk.raw.
                let dir = Path::new(base)
                    .join("images")
                    .join(volname.trim_end_matches(".raw"));
                return Ok(Location::Image(dir.join("disk.raw")));
            }
            match name.ends_with(".raw") {
                true => Ok(Location::Image(path)),
                false if name.starts_with("subvol-") => Ok(Location::Directory(path)),
                false => Err(unsupported(
                    "only raw images and subvol directories hold a container's files",
                )),
            }
        }
        "zfspool" => {
            let pool = found
                .option("pool")
                .ok_or_else(|| unsupported("the storage names no pool"))?;
            let base = match found.option("mountpoint") {
                Some(mountpoint) => PathBuf::from(mountpoint),
                None => Path::new("/").join(pool),
            };
            Ok(Location::Directory(base.join(volname)))
        }
        "lvm" | "lvmthin" => {
            let vg = found
                .option("vgname")
                .ok_or_else(|| unsupported("the storage names no volume group"))?;
            Ok(Location::Block(Path::new("/dev").join(vg).join(volname)))
        }
        _ => Err(unsupported(
            "a network block device or an image format the host does not mount as it is",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORAGE_CFG: &str = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\nzfspool: local-zfs\n\tpool rpool/data\n\tsparse 1\n\tcontent images,rootdir\n\nlvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\nnfs: nas\n\texport /export\n\tpath /mnt/pve/nas\n\tserver 10.0.0.2\n\nzfspool: tank\n\tpool tank/ct\n\tmountpoint /srv/tank-ct\n\nrbd: ceph\n\tpool vms\n";

    fn located(volume: &str) -> Result<Location, VolumeError> {
        let storages = parse_storage_cfg(STORAGE_CFG);
        let (storage, volname) = volume.split_once(':').unwrap();
        locate(
            &storages,
            Path::new("/etc/pve/storage.cfg"),
            (storage, volname),
        )
    }

    #[test]
    fn volumes_of_every_kind_are_found_where_their_plugin_keeps_them() {
        let dir = |p: &str| Ok(Location::Directory(PathBuf::from(p)));
        assert_eq!(
            located("local-zfs:subvol-101-disk-0"),
            dir("/rpool/data/subvol-101-disk-0")
        );
        assert_eq!(
            located("tank:subvol-101-disk-1"),
            dir("/srv/tank-ct/subvol-101-disk-1")
        );
        assert_eq!(
            located("local:101/subvol-101-disk-0.subvol"),
            dir("/var/lib/vz/images/101/subvol-101-disk-0.subvol")
        );
        assert_eq!(
            located("nas:101/vm-101-disk-0.raw"),
            Ok(Location::Image(PathBuf::from(
                "/mnt/pve/nas/images/101/vm-101-disk-0.raw"
            )))
        );
        assert_eq!(
            located("local-lvm:vm-101-disk-0"),
            Ok(Location::Block(PathBuf::from("/dev/pve/vm-101-disk-0")))
        );
        assert!(matches!(
            located("ceph:vm-101-disk-0"),
            Err(VolumeError::UnsupportedStorage { .. })
        ));
        assert!(matches!(
            located("gone:vm-101-disk-0"),
            Err(VolumeError::UnknownStorage { .. })
        ));
        assert!(matches!(
            located("local:101/vm-101-disk-0.qcow2"),
            Err(VolumeError::UnsupportedStorage { .. })
        ));
    }

    #[test]
    fn entries_say_what_they_mount_and_where() {
        let entries = [
            ("mp1", "/dev/sdb1,mp=/mnt/disk"),
            ("rootfs", "local-zfs:subvol-101-disk-0,size=8G"),
            ("mp0", "/srv/data,mp=/data,backup=0"),
            (
                "mp2",
                "volume=local-lvm:vm-101-disk-1,mp=/var/lib/db,size=4G",
            ),
            ("net0", "name=eth0,bridge=vmbr0"),
        ];
        let found = volumes(entries).unwrap();
        assert_eq!(found[0].key, "rootfs");
        assert_eq!(found[0].mount_point, "/");
        let source = |key: &str| found.iter().find(|v| v.key == key).unwrap().source.clone();
        assert_eq!(source("mp0"), Source::Bind(PathBuf::from("/srv/data")));
        assert_eq!(source("mp1"), Source::Device(PathBuf::from("/dev/sdb1")));
        assert_eq!(
            source("mp2"),
            Source::Storage {
                storage: "local-lvm".into(),
                volname: "vm-101-disk-1".into()
            }
        );
        assert_eq!(found.len(), 4);
    }

    #[test]
    fn malformed_entries_are_refused_with_the_key() {
        for (key, value) in [
            ("mp0", "/srv/data"),
            ("mp0", "/srv/data,mp=../x"),
            ("mp0", "/srv/../etc,mp=/x"),
            ("rootfs", "local:../../etc"),
            ("rootfs", ",size=8G"),
            ("rootfs", "local-zfs:subvol-1,bogus"),
            ("rootfs", "nostorage"),
        ] {
            assert!(
                matches!(parse(key, value), Err(VolumeError::Malformed { .. })),
                "{key}: {value}"
            );
        }
    }
}
