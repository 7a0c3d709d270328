//! End to end with real LXC, as a sysadmin would do it: create a Debian container,
//! convert it to unprivileged, start it and look inside, convert it back, start it
//! again, with `lxc-idshift list` looking on. The only test that touches host files
//! (/etc/subuid, /etc/subgid, /var/lib/lxc); it restores them and destroys its
//! container. CI runs it against the installed package: LXC_IDSHIFT_BIN=/usr/bin/lxc-idshift.

mod common;

use common::lxc::{create_debian, ok, sh, start_and_wait};
use common::{assert_exit, bin, require_root, run, text};
use std::path::Path;

const NAME: &str = "jeedom1";

/// The host uid of the container's init.
fn init_uid() -> u32 {
    let pid = ok("lxc-info", &["-n", NAME, "-p", "-H"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn inside(args: &[&str]) -> String {
    let mut full = vec!["-n", NAME, "--"];
    full.extend_from_slice(args);
    ok("lxc-attach", &full)
}

/// The test container has no bridge to attach to on a CI machine: no network.
/// How healthy systemd says the container is once booted: its state and the
/// failed units, sorted.
fn health() -> (String, Vec<String>) {
    let attach = |args: &[&str]| {
        let mut full = vec!["-n", NAME, "--"];
        full.extend_from_slice(args);
        text(&sh("lxc-attach", &full).stdout)
    };
    let state = attach(&["systemctl", "is-system-running", "--wait"]);
    let failed = attach(&["systemctl", "--failed", "--plain", "--no-legend"]);
    let mut units: Vec<String> = (failed.lines())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    units.sort();
    (state.trim().to_string(), units)
}

fn without_network(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("lxc.net.0."))
        .collect();
    std::fs::write(
        config,
        format!("{}\nlxc.net.0.type = empty\n", lines.join("\n")),
    )
    .unwrap();
}

/// What `lxc-idshift list --json` says of the test container.
fn listed() -> serde_json::Value {
    let out = run(&["list", "--json"]);
    assert_exit(&out, 0, "lxc-idshift list --json");
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let containers = listing["containers"].as_array().expect("containers");
    containers
        .iter()
        .find(|c| c["name"] == NAME)
        .unwrap_or_else(|| panic!("{NAME} not listed: {listing}"))
        .clone()
}

#[test]
fn convert_a_real_container_and_back() {
    if !require_root("convert_a_real_container_and_back") {
        return;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        assert_eq!(
            bin(),
            Path::new("/usr/bin/lxc-idshift"),
            "CI runs the end-to-end test against the installed package"
        );
    }
    let Some(_guard) = create_debian("convert_a_real_container_and_back", NAME) else {
        return;
    };
    let dir = Path::new("/var/lib/lxc").join(NAME);
    without_network(&dir.join("config"));
    let rootfs = dir.join("rootfs");
    // A binary with a file capability, and getcap to see it from inside.
    std::fs::copy(
        rootfs.join("usr/bin/true"),
        rootfs.join("usr/local/bin/captest"),
    )
    .unwrap();
    ok(
        "setcap",
        &[
            "cap_net_raw+ep",
            rootfs.join("usr/local/bin/captest").to_str().unwrap(),
        ],
    );
    std::fs::copy("/usr/sbin/getcap", rootfs.join("usr/local/bin/getcap")).unwrap();

    // Booted privileged first: the conversion must leave it as healthy as that.
    start_and_wait(NAME);
    let healthy = health();
    ok("lxc-stop", &["-n", NAME]);

    let before = listed();
    assert_eq!(before["state"], "STOPPED", "{before}");
    assert_eq!(before["unprivileged"], false, "{before}");
    assert_eq!(before["method"], serde_json::Value::Null, "{before}");
    assert_eq!(before["store"], "dir", "{before}");
    let out = run(&["-n", NAME, "--to", "1000000"]);
    assert_exit(&out, 0, "lxc-idshift -n jeedom1 --to 1000000");
    assert!(std::fs::read_to_string("/etc/subuid")
        .unwrap()
        .contains("root:1000000:65536"));
    let config = std::fs::read_to_string(dir.join("config")).unwrap();
    assert!(config.contains("lxc.idmap = u 0 1000000 65536"), "{config}");
    assert!(config.contains("userns.conf"), "{config}");

    start_and_wait(NAME);
    assert_eq!(
        health(),
        healthy,
        "unprivileged, it boots as healthy as privileged (sys-kernel-debug.mount is masked)"
    );
    let masked = inside(&["readlink", "/etc/systemd/system/sys-kernel-debug.mount"]);
    assert_eq!(masked.trim(), "/dev/null");
    let running = listed();
    assert_eq!(running["state"], "RUNNING", "{running}");
    assert_eq!(running["unprivileged"], true, "{running}");
    assert_eq!(running["range"]["host_first"], 1_000_000, "{running}");
    assert_eq!(running["range"]["count"], 65536, "{running}");
    assert_eq!(running["unfinished"], serde_json::Value::Null, "{running}");
    assert_eq!(running["method"], "shift", "{running}");
    assert_eq!(
        init_uid(),
        1_000_000,
        "the container's init runs as host uid 1000000"
    );
    assert!(inside(&["su", "nobody", "-s", "/bin/sh", "-c", "id"]).contains("uid=65534(nobody)"));
    assert_eq!(
        inside(&["stat", "-c", "%a %U", "/usr/bin/passwd"]).trim(),
        "4755 root"
    );
    let caps = inside(&["/usr/local/bin/getcap", "/usr/local/bin/captest"]);
    assert!(caps.contains("cap_net_raw"), "capability lost: {caps:?}");
    // A running container is refused: its writes would race the shift.
    let config_before = std::fs::read_to_string(dir.join("config")).unwrap();
    let refused = run(&[NAME, "--to", "0"]);
    assert_exit(&refused, 2, "--to 0 while running");
    assert!(
        text(&refused.stderr).contains("stop it first"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("config")).unwrap(),
        config_before
    );
    ok("lxc-stop", &["-n", NAME]);

    let out = run(&[NAME, "--to", "0"]);
    assert_exit(&out, 0, "lxc-idshift jeedom1 --to 0");
    let config = std::fs::read_to_string(dir.join("config")).unwrap();
    assert!(!config.contains("lxc.idmap"), "{config}");
    start_and_wait(NAME);
    assert_eq!(
        init_uid(),
        0,
        "the container's init runs as host root again"
    );
    assert!(inside(&["/usr/local/bin/getcap", "/usr/local/bin/captest"]).contains("cap_net_raw"));
    assert_eq!(health(), healthy, "privileged again, as healthy as before");
    let unmasked = sh(
        "lxc-attach",
        &[
            "-n",
            NAME,
            "--",
            "test",
            "-L",
            "/etc/systemd/system/sys-kernel-debug.mount",
        ],
    );
    assert!(!unmasked.status.success(), "--to 0 unmasks the unit");
    ok("lxc-stop", &["-n", NAME]);

    let again = run(&[NAME, "--to", "0"]);
    assert_exit(&again, 0, "second --to 0 (idempotent)");
    let after = listed();
    assert_eq!(after["state"], "STOPPED", "{after}");
    assert_eq!(after["unprivileged"], false, "{after}");
    assert_eq!(after["range"], serde_json::Value::Null, "{after}");
}
