//! Proxmox VE, the second host flavour beside plain LXC: the container config
//! (`/etc/pve/lxc/VMID.conf`), read and edited as Proxmox accepts it, its volumes,
//! and what the host says of its containers (which exist, their maps, whether
//! they run). The conversion of this flavour is `convert::proxmox`.

pub mod conf;
pub mod host;
pub mod view;
pub mod volume;
