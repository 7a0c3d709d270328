//! Proxmox VE, the second host flavour beside plain LXC (issue: Proxmox VE
//! containers converted in place). Built so far: the container config
//! (`/etc/pve/lxc/VMID.conf`), read and edited as Proxmox accepts it, and its
//! volumes. `convert` still refuses Proxmox containers (see `manager`) until the
//! flavour's conversion is wired in.

pub mod conf;
pub mod volume;
