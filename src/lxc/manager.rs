//! Containers another manager owns: one that writes the LXC config anew at every
//! start would undo a conversion's config while the rootfs stayed shifted. Found
//! here once, for `convert` (which converts it through the manager's own config),
//! `list` and `check` (said).

use super::container::Container;
use super::host::Host;
use std::path::PathBuf;

/// A manager that regenerates the container's LXC config, and the file it
/// regenerates it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherManager {
    pub name: &'static str,
    pub conf: PathBuf,
}

impl OtherManager {
    /// Proxmox VE writes `/var/lib/lxc/VMID/config` from `/etc/pve/lxc/VMID.conf`
    /// (numeric names only) at every start.
    pub fn of(container: &Container, host: &Host) -> Option<OtherManager> {
        let conf = crate::lxc::pve::host::conf_path(host, &container.name)?;
        Some(OtherManager {
            name: "Proxmox VE",
            conf,
        })
    }

    /// What it means for lxc-idshift, in a sentence (for `list` and `check`).
    pub fn said(&self, container: &Container) -> String {
        format!(
            "managed by {} ({}), which writes {} anew at every start: lxc-idshift converts it through that file and its volumes",
            self.name,
            self.conf.display(),
            container.config().display()
        )
    }
}
