//! Container conversion: the thin orchestration around the engine. `container`
//! finds a container, `config` and `subid` edit its config and the host's
//! subordinate id files (keeping every untouched line byte-identical), `perms` and
//! `udev` handle the directory permissions and passed-through devices, `host`
//! makes every host path redirectable for tests, `effects` is what a conversion
//! does to the host (a recording double stands in for it in tests), `accounts` knows the host's users,
//! groups and login.defs bounds, `lock` serializes conversions and takes shadow's
//! locks on /etc/subuid and /etc/subgid, `unmapped` counts the rootfs ids a map
//! leaves out, `convert` plans and runs it all, and `list` shows every container
//! of an lxcpath (`manager` recognises containers another manager, Proxmox VE, owns). `method` says which rootfs method (shift or idmap) a container
//! uses and what each keeps on disk. `mounts` finds the bind mounts of host paths a config sets up and
//! scans what they hold, and `shared` finds who else uses a bind mount source; `check`
//! says whether a container will start and work, and how to fix what would not;
//! `units` masks the systemd units that cannot work unprivileged.

pub(crate) mod accounts;
pub mod check;
pub mod config;
pub mod container;
pub mod convert;
pub mod effects;
pub mod host;
pub mod hostmap;
pub mod list;
pub mod lock;
pub mod manager;
pub mod method;
pub mod mounts;
pub mod perms;
pub mod shared;
pub mod subid;
pub mod udev;
pub mod units;
pub mod unmapped;
