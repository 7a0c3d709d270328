//! End to end with real LXC: a Debian container converted with `--method idmap`
//! (the rootfs stays as it is, LXC mounts it idmapped), started and looked at from
//! inside (processes on host uids, a setuid binary, a file capability), converted
//! back, then switched shift -> idmap -> shift with starts in between. Every
//! conversion is compared with the rootfs's full manifest taken just before it.
//! Touches /etc/subuid and /etc/subgid (restored) and creates and destroys its own
//! container. CI runs it against the installed package.

mod common;

use common::lxc::{attach_ok, create_debian, ok, start_and_wait};
use common::{assert_exit, assert_same, collect, expected_forward, owner, require_root, run, text};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const NAME: &str = "idshift-idmap";
/// A setuid-root copy of `whoami`: prints root when setuid works.
const SUID: &str = "/usr/local/bin/suid-whoami";
/// A copy of `cat` with cap_net_raw+ep: `capcat /proc/self/status` shows its own
/// effective capabilities.
const CAPCAT: &str = "/usr/local/bin/capcat";
/// CAP_NET_RAW is capability 13.
const CAP_NET_RAW: u64 = 1 << 13;

/// The rootfs's manifest without the masks of units that cannot work unprivileged
/// (`units.rs`): a conversion to unprivileged adds them, by either method, and
/// `--to 0` removes them; `masked` checks them where they must be.
fn rootfs_manifest() -> lxc_idshift::manifest::Manifest {
    let mut manifest = collect(&rootfs());
    for unit in lxc_idshift::lxc::units::FAILING_UNPRIVILEGED {
        let name = format!("etc/systemd/system/{}", unit.name);
        manifest.entries.remove(name.as_bytes());
    }
    manifest
}

/// Whether the rootfs holds the mask of sys-kernel-debug.mount (a link to /dev/null).
fn masked() -> bool {
    std::fs::read_link(in_rootfs("/etc/systemd/system/sys-kernel-debug.mount"))
        .is_ok_and(|target| target == Path::new("/dev/null"))
}

fn rootfs() -> PathBuf {
    Path::new("/var/lib/lxc").join(NAME).join("rootfs")
}

fn config_path() -> PathBuf {
    Path::new("/var/lib/lxc").join(NAME).join("config")
}

fn in_rootfs(path: &str) -> PathBuf {
    rootfs().join(path.trim_start_matches('/'))
}

/// Runs a shell command inside as `user`; it must succeed. Returns its stdout.
fn inside_as(user: &str, script: &str) -> String {
    attach_ok(NAME, user, script)
}

/// The host uid of the container's init.
fn init_uid() -> u32 {
    let pid = ok("lxc-info", &["-n", NAME, "-p", "-H"]);
    let uid = ok("ps", &["-o", "uid=", "-p", pid.trim()]);
    uid.trim().parse().unwrap()
}

/// The container without network (CI has no bridge).
fn without_network() {
    let config: String = std::fs::read_to_string(config_path())
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("lxc.net.0."))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(config_path(), format!("{config}lxc.net.0.type = empty\n")).unwrap();
}

/// The setuid binary, the capability and getcap to read it from inside.
fn plant_setuid_and_caps() {
    std::fs::copy(in_rootfs("/usr/bin/whoami"), in_rootfs(SUID)).unwrap();
    std::fs::set_permissions(in_rootfs(SUID), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::copy(in_rootfs("/usr/bin/cat"), in_rootfs(CAPCAT)).unwrap();
    ok(
        "setcap",
        &["cap_net_raw+ep", in_rootfs(CAPCAT).to_str().unwrap()],
    );
    std::fs::copy("/usr/sbin/getcap", in_rootfs("/usr/local/bin/getcap")).unwrap();
}

/// Converts with `args` (after the name); the conversion must succeed.
fn convert(args: &[&str]) -> String {
    let mut full = vec![NAME];
    full.extend_from_slice(args);
    let out = run(&full);
    assert_exit(&out, 0, &format!("lxc-idshift {NAME} {args:?}"));
    text(&out.stdout)
}

/// Starts the container and checks, from inside and from the host, that it runs
/// as `init_host_uid`, that setuid works for a plain user and that the file
/// capability is seen and granted; stops it.
fn start_and_look_inside(init_host_uid: u32) {
    start_and_wait(NAME);
    assert_eq!(init_uid(), init_host_uid, "the container's init host uid");
    let seen = inside_as("root", &format!("stat -c '%u %a' {SUID}"));
    assert_eq!(seen.trim(), "0 4755", "the setuid binary inside");
    assert_eq!(inside_as("nobody", SUID).trim(), "root", "setuid works");
    let caps = inside_as("root", &format!("/usr/local/bin/getcap {CAPCAT}"));
    assert!(caps.contains("cap_net_raw"), "capability inside: {caps:?}");
    let status = inside_as("nobody", &format!("{CAPCAT} /proc/self/status"));
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .expect("CapEff");
    assert_eq!(effective, CAP_NET_RAW, "nobody running capcat: {status}");
    ok("lxc-stop", &["-n", NAME]);
}

fn check_passes(method: &str) {
    let out = run(&["check", NAME, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json ({e}): {}", text(&out.stdout)));
    assert_exit(&out, 0, &format!("check: {report:#}"));
    assert_eq!(report["method"], method, "{report:#}");
    assert_eq!(report["rootfs_scan"]["nobody"], 0, "{report:#}");
}

#[test]
fn idmapped_rootfs_and_method_switches_in_a_real_container() {
    let test = "idmapped_rootfs_and_method_switches_in_a_real_container";
    if !require_root(test) {
        return;
    }
    let Some(_guard) = create_debian(test, NAME) else {
        return;
    };
    without_network();
    plant_setuid_and_caps();
    let original_config = std::fs::read_to_string(config_path()).unwrap();

    // The plan says which methods work here and what each would do.
    let said = convert(&["--to", "1000000", "--method", "idmap", "--dry-run"]);
    for wanted in [
        "    shift: works on any kernel; would shift every inode of the rootfs forward",
        "  * idmap: works here; would leave every inode of the rootfs as it is",
    ] {
        assert!(said.contains(wanted), "missing {wanted:?} in:\n{said}");
    }

    // Privileged -> idmap: not an inode changes.
    let before = rootfs_manifest();
    let said = convert(&["--to", "1000000", "--method", "idmap"]);
    assert!(said.contains("stays as it is on disk"), "{said}");
    assert_same(&before, &rootfs_manifest(), "privileged -> idmap");
    assert!(
        masked(),
        "privileged -> idmap masks the units that cannot work"
    );
    let config = std::fs::read_to_string(config_path()).unwrap();
    assert!(
        config.contains("lxc.rootfs.options = idmap=container\n")
            && config.contains("lxc.idmap = u 0 1000000 65536\n"),
        "{config}"
    );
    assert!(std::fs::read_to_string("/etc/subuid")
        .unwrap()
        .contains("root:1000000:65536"));
    check_passes("idmap");
    start_and_look_inside(1_000_000);
    // What the container writes lands on disk with container ids.
    start_and_wait(NAME);
    inside_as("root", "echo x > /root/written-inside");
    ok("lxc-stop", &["-n", NAME]);
    assert_eq!(owner(&in_rootfs("/root/written-inside")).0, 0);
    std::fs::remove_file(in_rootfs("/root/written-inside")).unwrap();

    // Idmap -> privileged: the config as it was, not an inode changed.
    let before = rootfs_manifest();
    convert(&["--to", "0"]);
    assert_same(&before, &rootfs_manifest(), "idmap -> privileged");
    assert!(!masked(), "--to 0 unmasks them");
    assert_eq!(
        std::fs::read_to_string(config_path()).unwrap(),
        original_config
    );
    start_and_look_inside(0);

    // Privileged -> shift -> idmap -> shift -> privileged, each compared with the
    // manifest just before it: a shift forward is the independent expected result,
    // a shift back its inverse.
    let before = rootfs_manifest();
    convert(&["--to", "1000000"]);
    assert_same(&expected_forward(&before), &rootfs_manifest(), "-> shift");
    start_and_look_inside(1_000_000);

    let before = rootfs_manifest();
    convert(&["--to", "1000000", "--method", "idmap"]);
    let after = rootfs_manifest();
    assert_same(&before, &expected_forward(&after), "shift -> idmap");
    assert_eq!(owner(&in_rootfs(SUID)), (0, 0, 0o4755));
    check_passes("idmap");
    start_and_look_inside(1_000_000);

    let before = rootfs_manifest();
    convert(&["--to", "1000000", "--method", "shift"]);
    assert_same(
        &expected_forward(&before),
        &rootfs_manifest(),
        "idmap -> shift",
    );
    assert!(!std::fs::read_to_string(config_path())
        .unwrap()
        .contains("idmap=container"));
    check_passes("shift");
    start_and_look_inside(1_000_000);

    let before = rootfs_manifest();
    convert(&["--to", "0"]);
    assert_same(
        &before,
        &expected_forward(&rootfs_manifest()),
        "shift -> privileged",
    );
    assert_eq!(
        std::fs::read_to_string(config_path()).unwrap(),
        original_config
    );
    start_and_look_inside(0);
}
