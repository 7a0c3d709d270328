//! Sample configs the unit tests of every part of the config read and edit.

use super::ContainerConfig;

/// What `lxc-create -t debian` writes (LXC 3+ keys), plus an admin's additions.
pub(super) const DEBIAN: &str = "\
lxc.net.0.type = veth
lxc.net.0.hwaddr = 00:16:3e:5a:1c:22
lxc.net.0.link = lxcbr0
lxc.net.0.flags = up
lxc.apparmor.profile = generated
lxc.apparmor.allow_nesting = 1
lxc.rootfs.path = dir:/var/lib/lxc/jeedom1/rootfs

# Common configuration
lxc.include = /usr/share/lxc/config/debian.common.conf

# Container specific configuration
lxc.tty.max = 4
lxc.uts.name = jeedom1
lxc.arch = amd64
lxc.pty.max = 1024

# Zigbee stick for jeedom
  lxc.cgroup2.devices.allow = c 188:* rwm
lxc.mount.entry = /dev/ttyUSB0 dev/ttyUSB0 none bind,optional,create=file
lxc.mount.entry=/srv/backup   var/backup none bind,create=dir 0 0
";

/// What the LXC 2.0 `lxc-debian` template wrote.
pub(super) const LEGACY: &str = "\
lxc.network.type = veth
lxc.network.hwaddr = 00:16:3e:11:22:33
lxc.network.link = lxcbr0
lxc.network.flags = up
lxc.rootfs = /var/lib/lxc/old1/rootfs
lxc.rootfs.backend = dir

# Common configuration
lxc.include = /usr/share/lxc/config/debian.common.conf

# Container specific configuration
lxc.tty = 4
lxc.utsname = old1
lxc.arch = amd64
";

pub(super) fn parse(text: &str) -> ContainerConfig {
    ContainerConfig::parse(text)
}
