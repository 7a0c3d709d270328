//! End to end on Debian 11, 12 and 13 containers with real services (PostgreSQL,
//! Apache, OpenSSH, cron): each is booted privileged, converted with each method
//! (shift, then idmap) and back, and booted after every conversion. Each boot must
//! be as healthy as the privileged one (`systemctl is-system-running`, the failed
//! units), every service must answer, and the view from inside (every path's
//! owner, group and mode, every ACL and capability) must be the same.
//! `LXC_IDSHIFT_DISTROS` picks releases (default bullseye,bookworm,trixie).
//! Touches /etc/subuid and /etc/subgid (restored); creates and destroys its own
//! containers. CI runs it against the installed package.

mod common;

use common::lxc::{create_release, ok, sh, start_and_wait};
use common::{assert_exit, require_root, run, text};

const PACKAGES: &[&str] = &[
    "postgresql",
    "apache2",
    "openssh-server",
    "cron",
    "acl",
    "libcap2-bin",
];
const SERVICES: &[&str] = &["postgresql", "apache2", "ssh", "cron"];

fn attach(name: &str, script: &str) -> String {
    let out = sh("lxc-attach", &["-n", name, "--", "sh", "-c", script]);
    text(&out.stdout)
}

/// What a boot looks like from inside: systemd's state and failed units, each
/// service's answer, and the view of every path (owner, group, mode), ACL and
/// capability of the root file system.
#[derive(Debug)]
struct Inside {
    state: String,
    failed: Vec<String>,
    services: Vec<String>,
    /// Path -> "owner group mode", as the container names them.
    owners: std::collections::BTreeMap<String, String>,
    /// getfacl (non-trivial ACLs) and getcap of the system's directories.
    acls_and_caps: String,
}

impl Inside {
    /// Compares with `reference`: the same state, failed units and services; every
    /// path both have with the same owner, group and mode (a boot adds a few files
    /// of its own: timer stamps, a random seed); the same ACLs and capabilities.
    fn assert_as(&self, reference: &Inside, what: &str) {
        assert_eq!(
            (&self.state, &self.failed, &self.services),
            (&reference.state, &reference.failed, &reference.services),
            "{what}"
        );
        let mut common = 0;
        for (path, seen) in &self.owners {
            if let Some(before) = reference.owners.get(path) {
                assert_eq!(seen, before, "{what}: {path}");
                common += 1;
            }
        }
        assert!(common > 10_000, "{what}: only {common} paths in common");
        assert_eq!(self.acls_and_caps, reference.acls_and_caps, "{what}");
    }
}

fn boot_and_look(name: &str) -> Inside {
    start_and_wait(name);
    let state = attach(name, "systemctl is-system-running --wait")
        .trim()
        .to_string();
    let mut failed: Vec<String> = (attach(name, "systemctl --failed --plain --no-legend").lines())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    failed.sort();
    let services = (SERVICES.iter())
        .map(|s| {
            format!(
                "{s}: {}",
                attach(name, &format!("systemctl is-active {s}")).trim()
            )
        })
        .collect();
    // Only the root file system's own paths: the mount points under it show the
    // file systems mounted there (proc, sysfs, devpts), not the rootfs.
    let listing = attach(name, "find / -xdev -printf '%D %p %u %g %m\\n'");
    let root_dev = listing.split(' ').next().unwrap_or_default().to_string();
    let owners = (listing.lines())
        .filter_map(|l| l.split_once(' '))
        .filter(|(dev, _)| *dev == root_dev)
        .filter_map(|(_, rest)| rest.split_once(' '))
        .map(|(path, rest)| (path.to_string(), rest.to_string()))
        .collect();
    let acls_and_caps = attach(
        name,
        "getfacl -R -s -p /etc /usr /var/lib /var/spool /home /root /srv /opt 2>/dev/null; getcap -r /usr 2>/dev/null | sort",
    );
    ok("lxc-stop", &["-n", name]);
    Inside {
        state,
        failed,
        services,
        owners,
        acls_and_caps,
    }
}

fn convert(name: &str, args: &[&str]) {
    let mut full = vec![name];
    full.extend_from_slice(args);
    let out = run(&full);
    assert_exit(&out, 0, &format!("lxc-idshift {}", full.join(" ")));
}

#[test]
fn debian_containers_boot_as_healthy_after_each_conversion() {
    if !require_root("debian_containers_boot_as_healthy_after_each_conversion") {
        return;
    }
    let distros =
        std::env::var("LXC_IDSHIFT_DISTROS").unwrap_or_else(|_| "bullseye,bookworm,trixie".into());
    for release in distros.split(',') {
        let name: &'static str = Box::leak(format!("idshift-{release}").into_boxed_str());
        let Some(_guard) =
            create_release("debian_containers_boot_as_healthy", name, release, PACKAGES)
        else {
            return;
        };
        let config = std::path::Path::new("/var/lib/lxc")
            .join(name)
            .join("config");
        let text = std::fs::read_to_string(&config).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("lxc.net.0."))
            .collect();
        std::fs::write(
            &config,
            format!("{}\nlxc.net.0.type = empty\n", kept.join("\n")),
        )
        .unwrap();
        let privileged = boot_and_look(name);
        eprintln!(
            "{release}: privileged: {} {:?} {:?}",
            privileged.state, privileged.failed, privileged.services
        );
        assert!(
            privileged.services.iter().all(|s| s.ends_with(": active")),
            "{release}: {:?}",
            privileged.services
        );
        for method in ["shift", "idmap"] {
            convert(name, &["--to", "1000000", "--method", method]);
            let unprivileged = boot_and_look(name);
            unprivileged.assert_as(&privileged, &format!("{release}, unprivileged by {method}"));
            convert(name, &["--to", "0"]);
            let back = boot_and_look(name);
            back.assert_as(
                &privileged,
                &format!("{release}, privileged again after {method}"),
            );
        }
        eprintln!("{release}: as healthy after each conversion, both methods");
    }
}
