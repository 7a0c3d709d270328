//! Helpers of the end-to-end tests on real LXC containers: running the lxc-* tools,
//! starting a container, and a guard that puts the host back whatever happens.

use super::{skip, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `program` and returns its output, whatever its exit status.
pub fn sh(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Runs `program`, which must succeed; returns its stdout.
pub fn ok(program: &str, args: &[&str]) -> String {
    let out = sh(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a shell command inside container `name` as `user`; returns the output.
pub fn attach_as(name: &str, user: &str, script: &str) -> Output {
    let args = ["-n", name, "--", "su", user, "-s", "/bin/sh", "-c", script];
    sh("lxc-attach", &args)
}

/// Like `attach_as`, but the command must succeed; returns its stdout.
pub fn attach_ok(name: &str, user: &str, script: &str) -> String {
    let out = attach_as(name, user, script);
    assert!(
        out.status.success(),
        "as {user} inside: {script}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Restores /etc/subuid and /etc/subgid and removes the container, whatever happens.
pub struct HostGuard {
    name: &'static str,
    saved: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl HostGuard {
    pub fn new(name: &'static str) -> HostGuard {
        let saved = ["/etc/subuid", "/etc/subgid"]
            .iter()
            .map(|p| (PathBuf::from(p), std::fs::read(p).ok()))
            .collect();
        HostGuard { name, saved }
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let _ = sh("lxc-stop", &["-n", self.name, "-k"]);
        let _ = sh("lxc-destroy", &["-n", self.name]);
        for (path, content) in &self.saved {
            match content {
                Some(bytes) => drop(std::fs::write(path, bytes)),
                None => drop(std::fs::remove_file(path)),
            }
        }
    }
}

/// Starts the container and waits until it runs, then gives init a moment to settle
/// before lxc-attach.
pub fn start_and_wait(name: &str) {
    ok("lxc-start", &["-n", name]);
    let started = Instant::now();
    while !ok("lxc-info", &["-n", name, "-s", "-H"]).contains("RUNNING") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "container did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
}

/// Creates a Debian bookworm container `name` for `test`, with a guard that removes
/// it and restores the host files; None (a loud skip) without lxc and debootstrap,
/// or when a container of that name exists already (it is never touched).
pub fn create_debian(test: &str, name: &'static str) -> Option<HostGuard> {
    create_release(test, name, "bookworm", &[])
}

/// Creates a Debian `release` container `name` with `packages` installed, like
/// `create_debian`.
pub fn create_release(
    test: &str,
    name: &'static str,
    release: &str,
    packages: &[&str],
) -> Option<HostGuard> {
    if sh("which", &["lxc-create", "debootstrap"]).status.code() != Some(0) {
        skip(&format!(
            "{test} needs lxc and debootstrap (.ci/run installs them)"
        ));
        return None;
    }
    if Path::new("/var/lib/lxc").join(name).exists() {
        skip(&format!(
            "a container {name} already exists; not touching it"
        ));
        return None;
    }
    let guard = HostGuard::new(name);
    let packages = format!("--packages={}", packages.join(","));
    let mut args = vec!["-n", name, "-t", "debian", "--", "-r", release];
    if packages != "--packages=" {
        args.push(&packages);
    }
    ok("lxc-create", &args);
    Some(guard)
}
