//! Device pass-through for an unprivileged container.
//!
//! A device node bind-mounted into a privileged container keeps its host owner and
//! group (e.g. root:dialout), which the shifted container sees as nobody:nogroup. A
//! chown of the node would not survive a replug or a reboot, so the tool writes a udev
//! rule instead: udev sets the owner and group each time the device appears.

use crate::fsutil::FileError;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::host::Host;

/// A device node passed into the container, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The host path given (e.g. /dev/ttyUSB0 or a /dev/serial/by-id/* link).
    pub node: PathBuf,
    /// The kernel's name of the device (udev's KERNEL), e.g. ttyUSB0.
    pub kernel_name: String,
    /// (idVendor, idProduct) of the USB device it belongs to, if any.
    pub usb: Option<(String, String)>,
    /// The device's subsystem from sysfs (udev's SUBSYSTEM), e.g. "tty".
    pub subsystem: Option<String>,
    pub major: u32,
    pub minor: u32,
    pub is_char: bool,
    /// The current group of the node on the host.
    pub gid: u32,
}

/// A device and the host ids its node must get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub device: Device,
    pub owner: u32,
    pub group: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}: check the lxc.mount.entry / --device path")]
    Stat(#[source] FileError),
    #[error("not a device node: {path}: check the lxc.mount.entry / --device")]
    NotADevice { path: PathBuf },
    #[error(
        "device {path} ({major}:{minor}) has no sysfs entry {sysfs}: {source}: \
         is the device plugged in and /sys mounted?"
    )]
    NoSysfs {
        path: PathBuf,
        major: u32,
        minor: u32,
        sysfs: PathBuf,
        source: std::io::Error,
    },
    #[error("device {path}: its {what} {value:?} (from sysfs) has characters a udev rule cannot hold safely; nothing was changed: pass the device another way, or write its rule by hand")]
    UnsafeValue {
        path: PathBuf,
        what: &'static str,
        value: String,
    },
}

/// Reads the device behind `node` (a host path, not re-rooted under `host`): its
/// numbers and group from stat (following symlinks such as /dev/serial/by-id/*), and
/// its kernel name, subsystem and USB ids from `host`'s sysfs.
pub fn probe(host: &Host, node: &Path) -> Result<Device, DeviceError> {
    let meta = std::fs::metadata(node)
        .map_err(|source| DeviceError::Stat(FileError::new("read device", node, source)))?;
    let kind = meta.file_type();
    if !kind.is_char_device() && !kind.is_block_device() {
        return Err(DeviceError::NotADevice {
            path: node.to_path_buf(),
        });
    }
    let (major, minor) = (
        rustix::fs::major(meta.rdev()),
        rustix::fs::minor(meta.rdev()),
    );
    let is_char = kind.is_char_device();
    let entry = host
        .sys()
        .join("dev")
        .join(if is_char { "char" } else { "block" })
        .join(format!("{major}:{minor}"));
    let dir = std::fs::canonicalize(&entry).map_err(|source| DeviceError::NoSysfs {
        path: node.to_path_buf(),
        major,
        minor,
        sysfs: entry.clone(),
        source,
    })?;
    // The sysfs directory's name is the kernel's name of the device, which is what
    // udev's KERNEL matches; it equals the node's name (after its symlinks) unless the
    // node was made by hand under another name.
    let kernel_name = match dir.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => node_name(node),
    };
    let device = Device {
        node: node.to_path_buf(),
        kernel_name,
        usb: usb_ids(&sys_root(host), &dir),
        subsystem: subsystem(&dir),
        major,
        minor,
        is_char,
        gid: meta.gid(),
    };
    device.refuse_unsafe_values()?;
    Ok(device)
}

impl Device {
    /// What goes into the rule between quotes comes from sysfs: only characters
    /// kernel names and attributes use, so that no value can end the quotes or the
    /// line (a rule runs as root).
    fn refuse_unsafe_values(&self) -> Result<(), DeviceError> {
        let (vendor, product) = match &self.usb {
            Some((vendor, product)) => (Some(vendor), Some(product)),
            None => (None, None),
        };
        let values = [
            ("kernel name", Some(&self.kernel_name)),
            ("subsystem", self.subsystem.as_ref()),
            ("idVendor", vendor),
            ("idProduct", product),
        ];
        let safe = |c: char| c.is_ascii_alphanumeric() || "_.:+@!-".contains(c);
        for (what, value) in values {
            if let Some(value) = value.filter(|v| !v.chars().all(safe)) {
                return Err(DeviceError::UnsafeValue {
                    path: self.node.clone(),
                    what,
                    value: value.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The final component of `node` after its symlinks (a fallback kernel name).
fn node_name(node: &Path) -> String {
    let real = std::fs::canonicalize(node).unwrap_or_else(|_| node.to_path_buf());
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The canonical sysfs root, so that the walk up from a device stops at it even when
/// the host root itself lies behind a symlink (e.g. a tempdir).
fn sys_root(host: &Host) -> PathBuf {
    std::fs::canonicalize(host.sys()).unwrap_or_else(|_| host.sys())
}

/// The (idVendor, idProduct) of the first ancestor of `dir` (itself included) that
/// has both: a tty's USB interface has neither, the USB device above it has both.
fn usb_ids(sys: &Path, dir: &Path) -> Option<(String, String)> {
    dir.ancestors()
        .take_while(|d| d.starts_with(sys) && *d != sys)
        .find_map(|d| {
            Some((
                read_attr(&d.join("idVendor"))?,
                read_attr(&d.join("idProduct"))?,
            ))
        })
}

/// A sysfs attribute's value without its trailing newline; None when absent or empty.
fn read_attr(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = text.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// The name the device's `subsystem` link points to (e.g. .../class/tty -> "tty").
fn subsystem(dir: &Path) -> Option<String> {
    let target = std::fs::read_link(dir.join("subsystem")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The group name of `gid` in the container's /etc/group (e.g. 20 -> "dialout").
pub fn container_group_name(rootfs: &Path, gid: u32) -> Option<String> {
    groups(rootfs)?
        .into_iter()
        .find(|(_, g)| *g == gid)
        .map(|(name, _)| name)
}

/// The container's gid of the group `name` (e.g. "dialout" -> 20).
pub fn container_gid(rootfs: &Path, name: &str) -> Option<u32> {
    groups(rootfs)?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, gid)| gid)
}

/// The (name, gid) pairs of the container's /etc/group; None when it cannot be read.
fn groups(rootfs: &Path) -> Option<Vec<(String, u32)>> {
    Some(parse_groups(&read_in_root(rootfs, "etc/group")?))
}

/// Parses `name:x:gid:members` lines, skipping comments, NIS entries and bad lines.
fn parse_groups(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with('+') && !line.starts_with('-'))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let gid = fields.nth(1)?.trim().parse().ok()?;
            (!name.is_empty()).then(|| (name.to_string(), gid))
        })
        .collect()
}

/// Cap on a container file read from the host: /etc/group is small; a huge one is
/// not worth reading.
const MAX_CONTAINER_FILE: u64 = 16 << 20;

/// Reads `rootfs/relative` with symlinks resolved inside the rootfs: the container
/// owns its files, and a link such as etc -> /etc must not lead to the host's.
fn read_in_root(rootfs: &Path, relative: &str) -> Option<String> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // NONBLOCK: a FIFO planted in the container must not hang the tool.
    let fd = rustix::fs::openat2(
        &root,
        relative,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_CONTAINER_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The rules file for a container: a header saying who wrote it and how to remove
/// it, then one rule per device (duplicates, e.g. a by-id link and its node, once).
pub fn rules_text(container: &str, rules: &[DeviceRule]) -> String {
    let mut text = format!(
        "# Written by lxc-idshift for container {container}: gives the devices passed\n\
         # into it to the container's (shifted) ids. To remove: delete this file, then run\n\
         # `udevadm control --reload && udevadm trigger` (converting the container back\n\
         # to privileged with lxc-idshift removes it too).\n"
    );
    let mut seen = Vec::new();
    for rule in rules {
        let line = rule_line(rule);
        if !seen.contains(&line) {
            text.push_str(&line);
            text.push('\n');
            seen.push(line);
        }
    }
    text
}

/// One rule. A USB device is matched by its ids, which survive replugging into
/// another port (where the kernel name may change); anything else by kernel name.
/// MODE is left alone: the node keeps the permissions udev already gives it.
fn rule_line(rule: &DeviceRule) -> String {
    format!(
        "{}, OWNER=\"{}\", GROUP=\"{}\"",
        rule_matcher(&rule.device),
        rule.owner,
        rule.group
    )
}

/// What a rule for `device` matches on (its USB ids, else its kernel name).
fn rule_matcher(device: &Device) -> String {
    match &device.usb {
        Some((vendor, product)) => format!(
            "SUBSYSTEM==\"{}\", ATTRS{{idVendor}}==\"{vendor}\", ATTRS{{idProduct}}==\"{product}\"",
            rule_subsystem(device)
        ),
        None => format!("KERNEL==\"{}\"", device.kernel_name),
    }
}

/// The line of a rules file (as lxc-idshift writes them) that gives `device` its
/// owner, if there is one.
pub fn find_rule<'a>(rules_text: &'a str, device: &Device) -> Option<&'a str> {
    let matcher = rule_matcher(device);
    rules_text
        .lines()
        .find(|line| line.starts_with(&matcher) && line.contains("OWNER="))
}

/// The subsystem to match: without it, the USB ids would also match the raw USB
/// device and its interfaces. Unknown (no sysfs link): the usual tty / block.
fn rule_subsystem(device: &Device) -> &str {
    match &device.subsystem {
        Some(subsystem) => subsystem,
        None if device.is_char => "tty",
        None => "block",
    }
}

/// Where the container's rules go: <root>/etc/udev/rules.d/99-lxc-idshift-NAME.rules
/// (99: after the distribution's rules, so ours win).
pub fn rules_path(host: &Host, container: &str) -> PathBuf {
    host.udev_rules_dir().join(rules_file_name(container))
}

/// `99-lxc-idshift-NAME.rules`, or, for a name too long to fit in NAME_MAX, its
/// start and a hash of all of it.
fn rules_file_name(container: &str) -> String {
    let name = format!("99-lxc-idshift-{container}.rules");
    if name.len() <= 255 {
        return name;
    }
    let start: String = container
        .chars()
        .take_while(char::is_ascii)
        .take(100)
        .collect();
    let hash = crate::engine::journal::fnv1a(container.as_bytes());
    format!("99-lxc-idshift-{start}-{hash:016x}.rules")
}

/// Reloads udev's rules and re-triggers `nodes`, and only them, so that the new
/// owners apply now. Ok(false) when `udevadm` is not on PATH or no udevd runs (the
/// caller warns: the rule applies when udevd starts, at the next replug or boot).
pub fn reload_udev(nodes: &[PathBuf]) -> std::io::Result<bool> {
    let Some(udevadm) = find_on_path("udevadm") else {
        return Ok(false);
    };
    // udevd listens there while it runs; without it `control` fails, and the rule
    // takes effect when udevd starts (the nodes were chowned already).
    if !Path::new(UDEVD_CONTROL).exists() {
        return Ok(false);
    }
    run(&udevadm, &["control", "--reload"])?;
    for node in nodes {
        // Only these devices: a trigger of every device replays the host's rules.
        let name = format!("--name-match={}", node.display());
        run(&udevadm, &["trigger", &name])?;
    }
    Ok(true)
}

/// The control socket of a running udevd.
const UDEVD_CONTROL: &str = "/run/udev/control";

/// Whether a udevd runs on `host` to be told about new rules. Asked while planning,
/// so that a host without one is known before anything is written.
pub fn udevd_runs(host: &Host) -> bool {
    host.path(UDEVD_CONTROL).exists()
}

/// The first executable file named `name` in $PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Runs `program args`, turning a failure exit into an error that names the command.
fn run(program: &Path, args: &[&str]) -> std::io::Result<()> {
    let status = Command::new(program).args(args).status()?;
    if status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{} {} failed ({status})",
        program.display(),
        args.join(" ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const USB_DIR: &str = "devices/pci0000:00/0000:00:14.0/usb1/1-2";

    /// A fake sysfs under `root`: ttyUSB0 (188:0) on a CP210x (10c4:ea60) and the
    /// on-board ttyS0 (4:64), each linked from /sys/dev/char like the real one.
    fn fake_sysfs(root: &Path) {
        let sys = root.join("sys");
        let usb = sys.join(USB_DIR);
        let tty_usb = usb.join("1-2:1.0/ttyUSB0/tty/ttyUSB0");
        let tty_s = sys.join("devices/pnp0/00:01/tty/ttyS0");
        std::fs::create_dir_all(&tty_usb).unwrap();
        std::fs::create_dir_all(&tty_s).unwrap();
        std::fs::create_dir_all(sys.join("class/tty")).unwrap();
        std::fs::create_dir_all(sys.join("dev/char")).unwrap();
        std::fs::write(usb.join("idVendor"), "10c4\n").unwrap();
        std::fs::write(usb.join("idProduct"), "ea60\n").unwrap();
        // The root hub above has ids too: the walk must stop at the first.
        std::fs::write(usb.join("../idVendor"), "1d6b\n").unwrap();
        std::fs::write(usb.join("../idProduct"), "0002\n").unwrap();
        symlink(
            "../../../../../../../../../class/tty",
            tty_usb.join("subsystem"),
        )
        .unwrap();
        symlink(
            format!("../../{USB_DIR}/1-2:1.0/ttyUSB0/tty/ttyUSB0"),
            sys.join("dev/char/188:0"),
        )
        .unwrap();
        symlink(
            "../../devices/pnp0/00:01/tty/ttyS0",
            sys.join("dev/char/4:64"),
        )
        .unwrap();
    }

    fn mknod(path: &Path, major: u32, minor: u32, gid: u32) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o660),
            rustix::fs::makedev(major, minor),
        )
        .unwrap();
        std::os::unix::fs::lchown(path, Some(0), Some(gid)).unwrap();
    }

    #[test]
    fn probes_a_usb_serial_adapter_through_its_by_id_link() {
        let tmp = tempfile::tempdir().unwrap();
        fake_sysfs(tmp.path());
        let dev = tmp.path().join("dev");
        std::fs::create_dir_all(dev.join("serial/by-id")).unwrap();
        mknod(&dev.join("ttyUSB0"), 188, 0, 20);
        let by_id = dev.join("serial/by-id/usb-Silicon_Labs_CP2102-if00-port0");
        symlink("../../ttyUSB0", &by_id).unwrap();

        let device = probe(&Host::under(tmp.path()), &by_id).unwrap();
        assert_eq!(
            device,
            Device {
                node: by_id.clone(),
                kernel_name: "ttyUSB0".into(),
                usb: Some(("10c4".into(), "ea60".into())),
                subsystem: Some("tty".into()),
                major: 188,
                minor: 0,
                is_char: true,
                gid: 20,
            }
        );
    }

    /// A sysfs value that could end the rule's quotes or line is refused, naming it.
    #[test]
    fn a_value_a_rule_cannot_hold_safely_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fake_sysfs(tmp.path());
        let usb = tmp.path().join("sys").join(USB_DIR);
        std::fs::write(usb.join("idProduct"), "ea60\", RUN+=\"/bin/x\n").unwrap();
        let node = tmp.path().join("ttyUSB0");
        mknod(&node, 188, 0, 20);
        let err = probe(&Host::under(tmp.path()), &node).unwrap_err();
        assert!(
            matches!(
                err,
                DeviceError::UnsafeValue {
                    what: "idProduct",
                    ..
                }
            ),
            "{err}"
        );
    }

    /// A container name as long as LXC allows still gives a rules file name that fits.
    #[test]
    fn a_long_container_name_gives_a_rules_file_name_that_fits() {
        let (long, other) = ("c".repeat(250), format!("{}d", "c".repeat(249)));
        let name = rules_file_name(&long);
        assert!(name.len() <= 255 && name.ends_with(".rules"), "{name}");
        assert_ne!(name, rules_file_name(&other));
        assert_eq!(rules_file_name("web"), "99-lxc-idshift-web.rules");
    }

    #[test]
    fn probes_an_onboard_serial_port_without_usb_ids() {
        let tmp = tempfile::tempdir().unwrap();
        fake_sysfs(tmp.path());
        let node = tmp.path().join("ttyS0");
        mknod(&node, 4, 64, 20);

        let device = probe(&Host::under(tmp.path()), &node).unwrap();
        assert_eq!(device.kernel_name, "ttyS0");
        assert_eq!(device.usb, None);
        assert_eq!(device.subsystem, None);
        assert_eq!((device.major, device.minor, device.is_char), (4, 64, true));
        let rule = DeviceRule {
            device,
            owner: 1_000_000,
            group: 1_000_020,
        };
        assert_eq!(
            rule_line(&rule),
            r#"KERNEL=="ttyS0", OWNER="1000000", GROUP="1000020""#
        );
    }

    #[test]
    fn a_regular_file_or_missing_path_is_refused_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        fake_sysfs(tmp.path());
        let host = Host::under(tmp.path());
        let file = tmp.path().join("not-a-device");
        std::fs::write(&file, "x").unwrap();
        let err = probe(&host, &file).unwrap_err();
        assert!(matches!(err, DeviceError::NotADevice { .. }));
        let text = err.to_string();
        assert!(text.contains("not a device node") && text.contains("not-a-device"));
        assert!(text.contains("lxc.mount.entry"));

        let missing = tmp.path().join("ttyUSB9");
        let err = probe(&host, &missing).unwrap_err();
        assert!(matches!(err, DeviceError::Stat(_)));
        assert!(err.to_string().contains("ttyUSB9"));
    }

    #[test]
    fn a_device_unknown_to_sysfs_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fake_sysfs(tmp.path());
        let node = tmp.path().join("ttyACM0");
        mknod(&node, 166, 0, 20);
        let err = probe(&Host::under(tmp.path()), &node).unwrap_err();
        assert!(matches!(err, DeviceError::NoSysfs { .. }));
        assert!(err.to_string().contains("166:0"));
    }

    #[test]
    fn group_lookup_reads_the_containers_etc_group() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(
            rootfs.join("etc/group"),
            "# comment\nroot:x:0:\ndialout:x:20:alice,bob\nbroken line\n+nis\nplugdev:x:46:\n",
        )
        .unwrap();
        assert_eq!(
            container_group_name(&rootfs, 20).as_deref(),
            Some("dialout")
        );
        assert_eq!(
            container_group_name(&rootfs, 46).as_deref(),
            Some("plugdev")
        );
        assert_eq!(container_group_name(&rootfs, 99), None);
        assert_eq!(container_gid(&rootfs, "dialout"), Some(20));
        assert_eq!(container_gid(&rootfs, "root"), Some(0));
        assert_eq!(container_gid(&rootfs, "video"), None);
        assert_eq!(container_gid(&tmp.path().join("no-rootfs"), "root"), None);
    }

    #[test]
    fn group_lookup_stays_inside_the_rootfs() {
        // etc -> /etc inside the container means the container's own /etc, never the host's.
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("real-etc")).unwrap();
        std::fs::write(rootfs.join("real-etc/group"), "dialout:x:20:\n").unwrap();
        symlink("/real-etc", rootfs.join("etc")).unwrap();
        assert_eq!(container_gid(&rootfs, "dialout"), Some(20));

        let escape = tmp.path().join("escape");
        std::fs::create_dir_all(&escape).unwrap();
        symlink("/etc", escape.join("etc")).unwrap();
        assert_eq!(container_gid(&escape, "root"), None);
    }

    fn usb_rule() -> DeviceRule {
        DeviceRule {
            device: Device {
                node: "/dev/serial/by-id/usb-Silicon_Labs_CP2102-if00-port0".into(),
                kernel_name: "ttyUSB0".into(),
                usb: Some(("10c4".into(), "ea60".into())),
                subsystem: None,
                major: 188,
                minor: 0,
                is_char: true,
                gid: 20,
            },
            owner: 1_000_000,
            group: 1_000_020,
        }
    }

    #[test]
    fn rules_text_is_exact() {
        let serial = DeviceRule {
            device: Device {
                node: "/dev/ttyS0".into(),
                kernel_name: "ttyS0".into(),
                usb: None,
                subsystem: Some("tty".into()),
                major: 4,
                minor: 64,
                is_char: true,
                gid: 20,
            },
            owner: 1_000_000,
            group: 1_000_020,
        };
        // The same adapter twice (by-id link and node) yields one rule.
        let text = rules_text("web", &[usb_rule(), serial, usb_rule()]);
        assert_eq!(
            text,
            "# Written by lxc-idshift for container web: gives the devices passed\n\
             # into it to the container's (shifted) ids. To remove: delete this file, then run\n\
             # `udevadm control --reload && udevadm trigger` (converting the container back\n\
             # to privileged with lxc-idshift removes it too).\n\
             SUBSYSTEM==\"tty\", ATTRS{idVendor}==\"10c4\", ATTRS{idProduct}==\"ea60\", OWNER=\"1000000\", GROUP=\"1000020\"\n\
             KERNEL==\"ttyS0\", OWNER=\"1000000\", GROUP=\"1000020\"\n"
        );
    }

    #[test]
    fn a_devices_rule_is_found_in_the_rules_text() {
        let text = rules_text("web", &[usb_rule()]);
        let line = find_rule(&text, &usb_rule().device).unwrap();
        assert!(line.contains("OWNER=\"1000000\""), "{line}");
        let mut other = usb_rule().device;
        other.usb = Some(("10c4".into(), "ea61".into()));
        assert_eq!(find_rule(&text, &other), None);
        other.usb = None;
        assert_eq!(find_rule(&text, &other), None);
        assert_eq!(find_rule("", &usb_rule().device), None);
    }

    #[test]
    fn usb_rule_uses_the_sysfs_subsystem() {
        let mut rule = usb_rule();
        rule.device.subsystem = Some("usbmisc".into());
        assert!(rule_line(&rule).starts_with(r#"SUBSYSTEM=="usbmisc", "#));
    }

    #[test]
    fn rules_path_is_under_the_hosts_rules_dir() {
        assert_eq!(
            rules_path(&Host::under("/tmp/h"), "web"),
            Path::new("/tmp/h/etc/udev/rules.d/99-lxc-idshift-web.rules")
        );
        assert_eq!(
            rules_path(&Host::system(), "web"),
            Path::new("/etc/udev/rules.d/99-lxc-idshift-web.rules")
        );
    }

    #[test]
    fn udevadm_is_found_only_as_an_executable_on_path() {
        assert!(find_on_path("surely-not-a-command-lxc-idshift").is_none());
        assert!(find_on_path("sh").is_some());
    }
}
