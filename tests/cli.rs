//! Refusals: bad input exits 2 and changes nothing.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

/// Runs `shift` and checks exit 2 and an unchanged tree.
fn refused(root: &Path, dir: &Path, map: &str, extra: &[&str], what: &str) {
    let before = collect(root);
    let tool = Tool::new();
    let mut args: Vec<std::ffi::OsString> =
        vec!["shift".into(), dir.into(), "--map".into(), map.into()];
    args.extend(["--journal".into(), tool.journal().into()]);
    args.extend(extra.iter().map(Into::into));
    let out = run_with_timeout(&args, Duration::from_secs(60));
    assert_exit(&out, 2, what);
    assert!(
        !out.stderr.is_empty(),
        "{what}: a refusal must say why on stderr"
    );
    assert_same(
        &before,
        &collect(root),
        &format!("{what}: tree after the refusal"),
    );
}

#[test]
fn refuses_overlapping_maps() {
    if !require_root("refuses_overlapping_maps") {
        return;
    }
    let (_tmp, root) = sample_tree();
    refused(
        &root,
        &root,
        "b:0:60000:65536",
        &[],
        "container range overlapping host range",
    );
}

#[test]
fn refuses_a_map_reaching_the_invalid_id() {
    if !require_root("refuses_a_map_reaching_the_invalid_id") {
        return;
    }
    let (_tmp, root) = sample_tree();
    refused(
        &root,
        &root,
        "b:0:4294901760:65536",
        &[],
        "host range reaching 4294967295",
    );
    refused(
        &root,
        &root,
        "u:4294967295:1000000:1",
        &[],
        "container id 4294967295",
    );
    refused(&root, &root, "b:0:1000000", &[], "malformed map");
}

#[test]
fn refuses_a_dir_that_is_not_a_directory() {
    if !require_root("refuses_a_dir_that_is_not_a_directory") {
        return;
    }
    let (tmp, root) = sample_tree();
    let file = root.join("etc/hostname");
    refused(&root, &file, MAP, &[], "DIR is a regular file");
    refused(
        &root,
        &tmp.path().join("missing"),
        MAP,
        &[],
        "DIR does not exist",
    );
}

/// The host's own root, however it is spelled. `--dry-run` is passed too so that a
/// broken refusal cannot shift the host (and a timeout stops a dry walk of it).
#[test]
fn refuses_the_host_root() {
    if !require_root("refuses_the_host_root") {
        return;
    }
    let (tmp, root) = sample_tree();
    let link = tmp.path().join("to-root");
    std::os::unix::fs::symlink("/", &link).unwrap();
    for dir in [Path::new("/"), Path::new("//"), Path::new("/usr/.."), &link] {
        let what = format!("DIR = {}", dir.display());
        refused(&root, dir, MAP, &["--dry-run"], &what);
    }
    assert_eq!(owner(Path::new("/etc/passwd")).0, 0);
}

/// A directory holding the host's /etc and /usr (a bind mount of /) is the host too.
#[test]
fn refuses_a_bind_mount_of_the_host_root() {
    if !require_root("refuses_a_bind_mount_of_the_host_root") {
        return;
    }
    let (tmp, root) = sample_tree();
    let host = tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let Some(_guard) = MountGuard::bind(Path::new("/"), &host) else {
        return;
    };
    refused(&root, &host, MAP, &["--dry-run"], "DIR = a bind mount of /");
}

/// The README's first command: the demo round trip reports nothing lost.
#[test]
fn demo_round_trip_loses_nothing() {
    if !require_root("demo_round_trip_loses_nothing") {
        return;
    }
    let out = common::run(&["demo"]);
    common::assert_exit(&out, 0, "demo");
    let stdout = common::text(&out.stdout);
    assert!(stdout.contains("Nothing lost"), "{stdout}");
    assert!(stdout.contains("caps v3 rootid 1000000"), "{stdout}");
}

/// An error says each thing once, and names the next step: no `...: ENOENT; ...:
/// ENOENT` from a cause repeated after the message that already holds it.
#[test]
fn errors_say_each_thing_once() {
    if !require_root("errors_say_each_thing_once") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nonexist");
    let tool = Tool::new();
    let out = tool.shift(&missing, &[]);
    assert_exit(&out, 2, "shift of a missing directory");
    let stderr = common::text(&out.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("ls -ld"), "no next command in: {stderr}");
    let out = common::run(&["list", "-P", missing.to_str().unwrap()]);
    assert_exit(&out, 2, "list of a missing lxcpath");
    let stderr = common::text(&out.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("-P DIR"), "no next command in: {stderr}");
}

/// `-n` names a container as in every lxc-* tool; `--dry-run` has no short form.
#[test]
fn dash_n_names_the_container() {
    let tmp = tempfile::tempdir().unwrap();
    let lxcpath = tmp.path().to_str().unwrap();
    for args in [
        vec![
            "-n",
            "jeedom1",
            "-P",
            lxcpath,
            "--to",
            "1000000",
            "--dry-run",
        ],
        vec![
            "-P",
            lxcpath,
            "-n",
            "jeedom1",
            "--to",
            "1000000",
            "--dry-run",
        ],
        vec![
            "convert",
            "-n",
            "jeedom1",
            "-P",
            lxcpath,
            "--to",
            "0",
            "--dry-run",
        ],
        vec!["-q", "jeedom1", "-P", lxcpath, "--to", "0", "--dry-run"],
    ] {
        let out = common::run(&args);
        assert_exit(&out, 2, &format!("{args:?}"));
        let stderr = common::text(&out.stderr);
        let wanted = format!("no container jeedom1 under {lxcpath}");
        assert!(stderr.contains(&wanted), "{args:?}: {stderr}");
    }
    let out = common::run(&["shift", lxcpath, "--map", MAP, "-n"]);
    assert_exit(&out, 2, "shift -n");
    assert!(common::text(&out.stderr).contains("unexpected argument '-n'"));
}

#[test]
fn a_journal_that_cannot_be_created_is_named_once_with_its_errno() {
    if !require_root("a_journal_that_cannot_be_created_is_named_once_with_its_errno") {
        return;
    }
    let (tmp, root) = sample_tree();
    let not_a_dir = tmp.path().join("plain-file");
    std::fs::write(&not_a_dir, "").unwrap();
    let journal = not_a_dir.join("journal");
    let before = collect(&root);
    let args: Vec<std::ffi::OsString> = vec![
        "shift".into(),
        root.clone().into(),
        "--map".into(),
        "b:0:1000000:65536".into(),
        "--journal".into(),
        journal.clone().into(),
        "--json".into(),
    ];
    let out = run_with_timeout(&args, Duration::from_secs(60));
    assert_exit(&out, 2, "journal under a plain file");
    let stderr = text(&out.stderr);
    // What failed is the journal's directory: a plain file stands where it should be.
    let shown = not_a_dir.display().to_string();
    assert_eq!(stderr.matches(&shown).count(), 1, "path once: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON error report");
    assert_eq!(report["errno"], "EEXIST", "{report}");
    assert_eq!(report["path"], shown.as_str(), "{report}");
    assert_eq!(report["operation"], "create the journal's directory");
    assert_same(&before, &collect(&root), "tree after the refusal");
}

#[test]
fn a_reader_that_goes_away_ends_nothing_in_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let mut child = command(bin())
        .args(["shift", "--dry-run", "--map", "b:0:1000000:65536"])
        .arg(&tree)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot start lxc-idshift");
    // Like `| head -0`: the reader is gone before the report is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// The old-kernel emulation that CI's second pass of the engine suites relies on
/// (`LXC_IDSHIFT_TEST_KERNEL=old`) really takes `fchmodat2` and the `*xattrat`
/// calls away: a run under it reports that the fallbacks did the work. Without
/// this, a broken filter would let that pass test the new paths twice.
#[test]
fn the_old_kernel_emulation_leaves_only_the_fallbacks() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("f"), b"").unwrap();
    let tool = Tool::new();
    let args = tool.shift_args(tmp.path(), &["--dry-run", "--json"]);
    let out = old_kernel_command(bin()).args(args).output().unwrap();
    assert_exit(&out, 0, "a dry run as on an old kernel");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kernel = &report["kernel"];
    assert_eq!(kernel["fchmodat2"], false, "{report}");
    assert_eq!(kernel["xattrat"], false, "{report}");
}
