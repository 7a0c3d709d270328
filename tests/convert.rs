//! Converting fake containers (config + sample rootfs in a tempdir) through the
//! library: privileged <-> unprivileged, idempotence, refusals, `--to auto`, legacy
//! configs, moving ranges, dry-run plans, and the `lxc-idshift NAME --to` command.

mod common;

use common::container::*;
use common::*;
use lxc_idshift::engine::idmap::{Direction, MapEntry};
use lxc_idshift::engine::run::Quiet;
use lxc_idshift::lxc::convert::{
    describe, execute, plan, ConvertError, ConvertOptions, MountsChoice, Outcome, Plan, Target,
};
use lxc_idshift::lxc::effects::{HostCall, RealHost, RecordingHost};
use lxc_idshift::lxc::host::Host;
use lxc_idshift::lxc::hostmap::{parse_shared, HostMap};
use lxc_idshift::lxc::method::Method;
use lxc_idshift::manifest::Manifest;
use lxc_idshift::sample::paths;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const DISTRO_USERNS: &str = "/usr/share/lxc/config/debian.userns.conf";
const USERNS: &str = "/usr/share/lxc/config/userns.conf";

/// The real host, but `lxc-info` answers that the container is stopped: LXC cannot
/// load some of these fake containers (legacy keys, includes). The tests through
/// the command ask the real `lxc-info`.
fn stopped() -> RecordingHost {
    RecordingHost::over(RealHost).answer("lxc-info", "STOPPED\n")
}

/// `config` with the userns include and idmap lines (spelled `key`) right after the
/// distro's common include, every other line as it was.
fn unprivileged(config: &str, include: &str, key: &str, host: u32) -> String {
    assert_eq!(config.matches(COMMON).count(), 1, "{config}");
    let added =
        format!("lxc.include = {include}\n{key} = u 0 {host} 65536\n{key} = g 0 {host} 65536\n");
    config.replace(COMMON, &format!("{COMMON}{added}"))
}

/// A fake host root: `<tmp>/etc/sub{u,g}id`, `<tmp>/lxc/NAME/{config,rootfs}`.
struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        make_host_root(tmp.path());
        Fixture { tmp }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn lxc(&self) -> PathBuf {
        self.root().join("lxc")
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.lxc().join(name)
    }

    fn rootfs(&self, name: &str) -> PathBuf {
        self.dir(name).join("rootfs")
    }

    fn config_path(&self, name: &str) -> PathBuf {
        self.dir(name).join("config")
    }

    fn config(&self, name: &str) -> String {
        std::fs::read_to_string(self.config_path(name)).unwrap()
    }

    fn subuid(&self) -> String {
        std::fs::read_to_string(self.root().join("etc/subuid")).unwrap()
    }

    fn subgid(&self) -> String {
        std::fs::read_to_string(self.root().join("etc/subgid")).unwrap()
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.dir(name).join("lxc-idshift.state.json")
    }

    /// Makes `<tmp>/usr/share/lxc/config/debian.userns.conf` exist.
    fn with_distro_userns(&self) {
        let path = Host::under(self.root()).path(DISTRO_USERNS);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "lxc.include = /usr/share/lxc/config/userns.conf\n").unwrap();
    }

    /// A container directory (0755 root:root) holding only `config`.
    fn config_only(&self, name: &str, config: &str) {
        config_only(self.root(), name, config);
    }

    /// A privileged container with the sample rootfs and `config(rootfs)`.
    fn container_with(&self, name: &str, config: impl Fn(&Path) -> String) -> PathBuf {
        let rootfs = self.rootfs(name);
        self.config_only(name, &config(&rootfs));
        std::fs::create_dir(&rootfs).unwrap();
        lxc_idshift::sample::build_sample_rootfs(&rootfs).unwrap();
        rootfs
    }

    /// A privileged Debian container.
    fn container(&self, name: &str) -> PathBuf {
        self.container_with(name, |rootfs| debian_config(name, rootfs))
    }

    fn options(&self, name: &str, to: Target) -> ConvertOptions {
        ConvertOptions {
            name: name.into(),
            to,
            range: 65536,
            lxcpath: Some(self.lxc()),
            dry_run: false,
            devices: Vec::new(),
            release_range: false,
            threads: Some(2),
            host: Host::under(self.root()),
            mounts: MountsChoice::Auto,
            method: None,
            share_ids: Vec::new(),
            snapshot: None,
        }
    }

    fn plan(&self, name: &str, to: Target) -> Plan {
        plan(&self.options(name, to.clone()), &stopped())
            .unwrap_or_else(|e| panic!("plan {name} {to:?}: {e}"))
    }

    /// Plans and executes; the rootfs shift must finish without errors.
    fn convert(&self, name: &str, to: Target) -> Outcome {
        let outcome = execute(self.plan(name, to.clone()), &stopped(), Some(2), &Quiet)
            .unwrap_or_else(|e| panic!("execute {name} {to:?}: {e}"));
        if let Some(shift) = &outcome.shift {
            assert_eq!(shift.summary.errors, 0, "{:?}", shift.error_paths);
        }
        outcome
    }

    /// Plans and executes with `--method`; the rootfs shift must finish.
    fn convert_by(&self, name: &str, to: Target, method: Method) -> Outcome {
        let options = ConvertOptions {
            method: Some(method),
            ..self.options(name, to.clone())
        };
        let planned =
            plan(&options, &stopped()).unwrap_or_else(|e| panic!("plan {to:?} {method}: {e}"));
        let outcome = execute(planned, &stopped(), Some(2), &Quiet).unwrap();
        assert_eq!(outcome.shift.as_ref().map_or(0, |s| s.summary.errors), 0);
        outcome
    }

    /// `check NAME` in the fixture.
    fn check(&self, name: &str) -> lxc_idshift::lxc::check::CheckReport {
        lxc_idshift::lxc::check::check(&lxc_idshift::lxc::check::CheckOptions {
            name: name.into(),
            lxcpath: Some(self.lxc()),
            threads: Some(2),
            host: Host::under(self.root()),
        })
        .unwrap_or_else(|e| panic!("check {name}: {e}"))
    }

    /// A conversion that must be refused before anything is written.
    fn refused(&self, options: &ConvertOptions) -> ConvertError {
        match plan(options, &stopped()) {
            Ok(_) => panic!("{} {:?} was not refused", options.name, options.to),
            Err(e) => e,
        }
    }

    /// Everything a conversion of `name` may touch.
    fn snapshot(&self, name: &str) -> Snapshot {
        Snapshot::of(self.root(), name)
    }
}

fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    let differences = before.differences(after);
    assert!(
        differences.is_empty(),
        "{what}: expected (left) and actual (right) differ:\n{}",
        differences.join("\n")
    );
}

/// The sample rootfs shifted by the binary with each map in turn (own journals).
fn reference(maps: &[&str]) -> (tempfile::TempDir, Manifest) {
    let (tmp, root) = sample_tree();
    for (i, map) in maps.iter().enumerate() {
        let journal = tmp.path().join(format!("journal{i}"));
        let out = run(&[
            "shift".as_ref(),
            root.as_os_str(),
            "--map".as_ref(),
            map.as_ref(),
            "--journal".as_ref(),
            journal.as_os_str(),
        ]);
        assert_exit(&out, 0, &format!("reference shift {map}"));
    }
    let manifest = collect(&root);
    (tmp, manifest)
}

#[test]
fn privileged_to_unprivileged_and_back() {
    if !require_root("privileged_to_unprivileged_and_back") {
        return;
    }
    let f = Fixture::new();
    f.with_distro_userns();
    let rootfs = f.container("web");
    let (_ref_tmp, expected) = reference(&[MAP]);
    let original = f.snapshot("web");
    assert_same(
        &expected_forward(&original.manifest),
        &expected,
        "reference",
    );
    let rootfs_mode = owner(&rootfs).2;

    let outcome = f.convert("web", Target::HostId(HOST_FIRST));
    assert!(outcome.shift.is_some());
    assert_same(&expected, &collect(&rootfs), "rootfs after conversion");
    assert_eq!(
        f.config("web"),
        unprivileged(&original.config, DISTRO_USERNS, "lxc.idmap", HOST_FIRST)
    );
    let added = format!("{SUBIDS}root:1000000:65536\n");
    assert_eq!((f.subuid(), f.subgid()), (added.clone(), added.clone()));
    assert_eq!(owner(&f.dir("web")), (0, HOST_FIRST, 0o750));
    assert_eq!(owner(&f.config_path("web")), (0, 0, 0o640));
    assert_eq!(owner(&rootfs), (HOST_FIRST, HOST_FIRST, rootfs_mode));
    assert!(f.state_file("web").is_file());

    f.convert("web", Target::Privileged);
    let back = f.snapshot("web");
    assert_same(
        &original.manifest,
        &back.manifest,
        "rootfs after going back",
    );
    assert_eq!(back.config, original.config);
    assert_eq!(back.perms, original.perms);
    assert!(!f.state_file("web").exists());
    // Without --release-range the subordinate ids stay with root.
    assert_eq!((f.subuid(), f.subgid()), (added.clone(), added));

    let again = f.plan("web", Target::Privileged);
    assert!(again.shift.is_none());
    assert!(again.edits.is_empty() && again.perms.is_empty());
    assert!(again.udev_rules.is_none() && again.device_owners.is_empty());
    let outcome = execute(again, &stopped(), Some(2), &Quiet).unwrap();
    assert!(outcome.shift.is_none());
    assert_unchanged(&back, &f.snapshot("web"), "privileged again");
}

#[test]
fn converting_twice_changes_nothing_the_second_time() {
    if !require_root("converting_twice_changes_nothing_the_second_time") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    f.convert("web", Target::HostId(HOST_FIRST));
    let first = f.snapshot("web");

    let second = f.plan("web", Target::HostId(HOST_FIRST));
    assert_eq!(
        (second.before.root(), second.after.root()),
        (Some(HOST_FIRST), Some(HOST_FIRST))
    );
    let edited: Vec<&Path> = second.edits.iter().map(|e| e.path.as_path()).collect();
    assert!(edited.is_empty(), "second plan edits {edited:?}");
    assert!(second.perms.is_empty(), "{:?}", second.perms);
    let outcome = execute(second, &stopped(), Some(2), &Quiet).unwrap();
    let summary = &outcome.shift.expect("the shift is re-checked").summary;
    assert_eq!((summary.changed, summary.errors), (0, 0), "{summary:?}");
    assert_unchanged(&first, &f.snapshot("web"), "second conversion");
}

#[test]
fn refusals_change_nothing() {
    if !require_root("refusals_change_nothing") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    let lxc = f.lxc();
    f.config_only(
        "other",
        "lxc.rootfs.path = dir:/srv/other\nlxc.idmap = u 0 1000000 65536\nlxc.idmap = g 0 1000000 65536\n",
    );
    let overlay = "lxc.rootfs.path = overlay:/a:/b\nlxc.uts.name = ovl\n";
    f.config_only("ovl", overlay);
    let before = f.snapshot("web");

    let alice = f.refused(&f.options("web", Target::HostId(100_000)));
    let text = alice.to_string();
    assert!(
        text.contains("alice") && text.contains("100000-165535"),
        "{text}"
    );

    let taken = f.refused(&f.options("web", Target::HostId(1_050_000)));
    assert_eq!(
        taken.to_string(),
        "range 1050000..1115535 overlaps container other's map (1000000..1065535); choose another --to (or --to auto)"
    );

    let ovl = f.refused(&f.options("ovl", Target::HostId(2_000_000)));
    assert!(
        ovl.to_string()
            .starts_with("rootfs overlay:/a:/b uses the overlay backend"),
        "{ovl}"
    );
    assert_eq!(f.config("ovl"), overlay);

    // A relative rootfs path is LXC's working directory's: never guessed.
    f.config_only("rel", "lxc.rootfs.path = dir:rootfs\nlxc.uts.name = rel\n");
    let rel = f.refused(&f.options("rel", Target::HostId(2_000_000)));
    assert!(
        matches!(rel, ConvertError::RelativeRootfs { .. }) && rel.to_string().contains("absolute"),
        "{rel}"
    );

    let ghost = f.refused(&f.options("ghost", Target::HostId(2_000_000)));
    let missing = lxc.join("ghost/config");
    assert!(
        ghost.to_string().contains(&missing.display().to_string()),
        "{ghost}"
    );

    let mut zero = f.options("web", Target::HostId(2_000_000));
    zero.range = 0;
    assert_eq!(
        f.refused(&zero).to_string(),
        "--range must be at least 1; leave it out for the default, 65536"
    );

    assert_unchanged(&before, &f.snapshot("web"), "after the refusals");
}

#[test]
fn auto_takes_the_lowest_free_aligned_range() {
    if !require_root("auto_takes_the_lowest_free_aligned_range") {
        return;
    }
    let f = Fixture::new();
    std::fs::write(f.root().join("etc/subuid"), "alice:100000:65536\n").unwrap();
    std::fs::write(f.root().join("etc/subgid"), "alice:100000:65536\n").unwrap();
    f.config_only(
        "other",
        "lxc.rootfs.path = dir:/srv/other\nlxc.idmap = u 0 131072 65536\nlxc.idmap = g 0 131072 65536\n",
    );
    let original = debian_config("web", &f.container("web"));
    // From 100000 aligned up to 131072: alice (..165535) and other (..196607) are in
    // the way, so the next multiple of 65536 past them: 196608.
    const AUTO: u32 = 196_608;
    let outcome = f.convert("web", Target::Auto);
    assert_eq!(outcome.plan.after.root(), Some(AUTO));
    let expected = "alice:100000:65536\nroot:196608:65536\n";
    assert_eq!((f.subuid(), f.subgid()), (expected.into(), expected.into()));
    assert_eq!(
        f.config("web"),
        unprivileged(&original, USERNS, "lxc.idmap", AUTO)
    );
    assert_eq!(owner(&f.rootfs("web").join(paths::ROOT_FILE)).0, AUTO);
    // Its own range does not count as taken: auto again stays where it is.
    let again = f.plan("web", Target::Auto);
    assert_eq!(again.after.root(), Some(AUTO));
    assert!(again.edits.is_empty() && again.perms.is_empty());
}

#[test]
fn legacy_config_gets_legacy_idmap_keys() {
    if !require_root("legacy_config_gets_legacy_idmap_keys") {
        return;
    }
    let f = Fixture::new();
    let legacy = |rootfs: &Path| {
        format!(
            "# Template used to create this container: /usr/share/lxc/templates/lxc-debian\n\
             lxc.rootfs = {}\n\
             lxc.rootfs.backend = dir\n\
             {COMMON}\
             lxc.utsname = old\n\
             lxc.network.type = empty\n\
             lxc.tty = 4\n",
            rootfs.display()
        )
    };
    let rootfs = f.container_with("old", legacy);
    let original = legacy(&rootfs);
    f.convert("old", Target::HostId(HOST_FIRST));
    assert_eq!(
        f.config("old"),
        unprivileged(&original, USERNS, "lxc.id_map", HOST_FIRST)
    );
    assert_eq!(owner(&rootfs.join(paths::ROOT_FILE)).0, HOST_FIRST);
    let again = f.plan("old", Target::HostId(HOST_FIRST));
    assert!(again.edits.is_empty());
}

#[test]
fn moving_between_ranges_in_one_pass() {
    if !require_root("moving_between_ranges_in_one_pass") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("web");
    let original = f.config("web");
    let (_ref_tmp, expected) = reference(&[MAP, "b:1000000:2000000:65536"]);
    f.convert("web", Target::HostId(HOST_FIRST));

    let outcome = f.convert("web", Target::HostId(2_000_000));
    assert_eq!(
        (outcome.plan.before.root(), outcome.plan.after.root()),
        (Some(HOST_FIRST), Some(2_000_000))
    );
    let summary = &outcome.shift.as_ref().unwrap().summary;
    assert!(summary.changed > 0, "{summary:?}");
    assert_same(&expected, &collect(&rootfs), "rootfs after the move");
    assert_eq!(
        owner(&rootfs.join(paths::ROOT_FILE)),
        (2_000_000, 2_000_000, 0o644)
    );
    // Owned by 1000033 (container uid 33 at 1000000): it moves with the range.
    assert_eq!(owner(&rootfs.join(paths::HOST_RANGE)).0, 2_000_033);
    assert_eq!(owner(&rootfs.join(paths::UNMAPPED)).0, 70_000);
    assert_eq!(
        f.config("web"),
        unprivileged(&original, USERNS, "lxc.idmap", 2_000_000)
    );
    let subids = format!("{SUBIDS}root:1000000:65536\nroot:2000000:65536\n");
    assert_eq!((f.subuid(), f.subgid()), (subids.clone(), subids));
    assert_eq!(owner(&f.dir("web")), (0, 2_000_000, 0o750));
}

#[test]
fn dry_run_plan_describes_and_changes_nothing() {
    if !require_root("dry_run_plan_describes_and_changes_nothing") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    let before = f.snapshot("web");
    let mut options = f.options("web", Target::HostId(HOST_FIRST));
    options.dry_run = true;
    let planned = plan(&options, &stopped()).unwrap();
    let text = describe(&planned);
    let dir = f.dir("web");
    let subuid = f.root().join("etc/subuid");
    for wanted in [
        format!("+lxc.include = {USERNS}\n"),
        "+lxc.idmap = u 0 1000000 65536\n".to_string(),
        "+lxc.idmap = g 0 1000000 65536\n".to_string(),
        format!("--- {0}\n+++ {0}\n", subuid.display()),
        "+root:1000000:65536\n".to_string(),
        format!(
            "chown root:1000000, chmod 0750 {} (was root:root 0755)",
            dir.display()
        ),
        format!("chmod 0640 {} (was 0644)", dir.join("config").display()),
    ] {
        assert!(text.contains(&wanted), "missing {wanted:?} in:\n{text}");
    }
    assert_unchanged(&before, &f.snapshot("web"), "after planning");
}

#[test]
fn cli_shorthand_dry_run_and_bad_target() {
    if !require_root("cli_shorthand_dry_run_and_bad_target") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    let before = f.snapshot("web");
    let host_subuid = std::fs::read("/etc/subuid").ok();
    let lxc = f.lxc();
    let args = ["web", "--to", "1000000", "--lxcpath"];
    let mut dry: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    dry.extend([lxc.as_os_str(), "--dry-run".as_ref()]);
    let out = run(&dry);
    assert_exit(&out, 0, "dry run");
    let stdout = text(&out.stdout);
    for wanted in [
        "privileged -> unprivileged (root = host uid 1000000)",
        "+lxc.idmap = u 0 1000000 65536\n",
        "+lxc.idmap = g 0 1000000 65536\n",
        "chown root:1000000, chmod 0750",
    ] {
        assert!(stdout.contains(wanted), "missing {wanted:?} in:\n{stdout}");
    }
    assert_unchanged(&before, &f.snapshot("web"), "after --dry-run");
    assert_eq!(std::fs::read("/etc/subuid").ok(), host_subuid);

    let out = run(&[
        "web",
        "--to",
        "abc",
        "--lxcpath",
        "/nonexistent",
        "--dry-run",
    ]);
    assert_exit(&out, 2, "--to abc");
    assert!(
        text(&out.stderr).contains("--to \"abc\": expected 0 (privileged)"),
        "{}",
        text(&out.stderr)
    );
}

/// The lxc-* conventions: `-n NAME` and `-P DIR`; `--json` reports of the plan
/// (`--dry-run`) and of the conversion, with nothing on stderr off a terminal (no
/// progress); `list` shows the result and an unfinished conversion with the command
/// that finishes it.
#[test]
fn lxc_style_options_json_reports_and_list() {
    if !require_root("lxc_style_options_json_reports_and_list") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    f.container("db");
    let before = f.snapshot("web");
    let lxc = f.lxc().into_os_string();
    let host_root = f.root().as_os_str().to_owned();
    let convert = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec!["-n".into(), "web".into()];
        args.extend([
            "-P".into(),
            lxc.clone(),
            "--host-root".into(),
            host_root.clone(),
        ]);
        args.extend(extra.iter().map(Into::into));
        run(&args)
    };
    let json = |out: &std::process::Output, what: &str| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{what}: stdout is not one JSON object ({e}): {}",
                text(&out.stdout)
            )
        })
    };

    let out = convert(&["--to", "1000000", "--dry-run", "--json"]);
    assert_exit(&out, 0, "-n web --dry-run --json");
    let plan = json(&out, "--dry-run --json");
    assert_eq!(plan["result"], "planned", "{plan}");
    assert_eq!(plan["container"], "web");
    assert_eq!(plan["from"], serde_json::Value::Null);
    assert_eq!(plan["to"], 1_000_000);
    assert_eq!(plan["map"], "b:0:1000000:65536");
    let config = f.config_path("web");
    let edits = plan["edits"].as_array().expect("edits");
    let config_edit = edits
        .iter()
        .find(|e| e["path"] == config.to_str().unwrap())
        .unwrap_or_else(|| panic!("no edit of the config in {plan}"));
    let diff = config_edit["diff"].as_str().unwrap();
    assert!(diff.contains("+lxc.idmap = u 0 1000000 65536"), "{diff}");
    assert!(counter(&plan["shift"], "changed") > 0, "{plan}");
    assert_unchanged(&before, &f.snapshot("web"), "after --dry-run --json");

    let out = convert(&["--to", "1000000", "--json"]);
    assert_exit(&out, 0, "-n web --to 1000000 --json");
    let report = json(&out, "--json");
    assert_eq!(report["result"], "done", "{report}");
    assert_eq!(report["dry_run"], false);
    assert!(counter(&report["shift"], "changed") > 0, "{report}");
    assert_eq!(counter(&report["shift"], "errors"), 0, "{report}");
    assert!(
        out.stderr.is_empty(),
        "stderr is no terminal: no progress, nothing else: {}",
        text(&out.stderr)
    );
    assert!(f.config("web").contains("lxc.idmap = u 0 1000000 65536"));

    // db: a conversion to 2000000 recorded, its config never written.
    let state = r#"{"origin": null, "target": 2000000, "range": 65536, "perms": []}"#;
    std::fs::write(f.state_file("db"), state).unwrap();
    let out = run(&[
        std::ffi::OsStr::new("list"),
        "-P".as_ref(),
        &lxc,
        "--json".as_ref(),
    ]);
    assert_exit(&out, 0, "list --json");
    let listing = json(&out, "list --json");
    let containers = listing["containers"].as_array().expect("containers");
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "web"], "{listing}");
    let (db, web) = (&containers[0], &containers[1]);
    assert_eq!(web["unprivileged"], true, "{listing}");
    assert_eq!(web["range"]["host_first"], 1_000_000, "{listing}");
    assert_eq!(web["range"]["count"], 65536, "{listing}");
    assert_eq!(web["method"], "shift", "{listing}");
    assert_eq!(web["store"], "dir", "{listing}");
    assert_eq!(
        containers[0]["method"],
        serde_json::Value::Null,
        "{listing}"
    );
    assert_eq!(web["unfinished"], serde_json::Value::Null, "{listing}");
    assert_eq!(db["unprivileged"], false, "{listing}");
    assert_eq!(db["unfinished"]["to"], 2_000_000, "{listing}");
    let has_lxc_info = std::process::Command::new("which")
        .arg("lxc-info")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_lxc_info {
        assert_eq!(web["state"], "STOPPED", "{listing}");
    }

    let out = run(&[std::ffi::OsStr::new("list"), "-P".as_ref(), &lxc]);
    assert_exit(&out, 0, "list");
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    let heading: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        heading,
        [
            "NAME",
            "STATE",
            "UNPRIVILEGED",
            "RANGE",
            "METHOD",
            "UNFINISHED"
        ],
        "{table}"
    );
    let web_row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(web_row[0], "web", "{table}");
    assert_eq!(
        web_row[2..],
        ["true", "1000000:65536", "shift", "-"],
        "{table}"
    );
    assert!(
        lines[1].starts_with("db ") && lines[1].ends_with("0->2000000"),
        "{table}"
    );
    let next = format!("lxc-idshift -n db -P {} --to 2000000", f.lxc().display());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&next), "no {next:?} in: {stderr}");

    let out = run(&[
        std::ffi::OsStr::new("list"),
        "--names".as_ref(),
        "-P".as_ref(),
        &lxc,
    ]);
    assert_exit(&out, 0, "list --names");
    assert_eq!(text(&out.stdout), "db\nweb\n");
}

/// A USB serial adapter passed in with `lxc.mount.entry`: the udev rule matches its
/// vendor and product ids, owner is the container's root and the group is the
/// container's `dialout` shifted; the node is chowned now; `--to 0` removes the rule.
#[test]
fn passed_through_devices_get_a_udev_rule() {
    if !require_root("passed_through_devices_get_a_udev_rule") {
        return;
    }
    let f = Fixture::new();
    std::fs::create_dir(f.root().join("dev")).unwrap();
    let node = f.root().join("dev/ttyUSB0");
    let dev = rustix::fs::makedev(188, 0);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &node,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o660),
        dev,
    )
    .unwrap();
    std::os::unix::fs::chown(&node, Some(0), Some(20)).unwrap();
    // The host's sysfs and /etc/group, under the fixture root.
    let usb = f.root().join("sys/devices/pci0000:00/usb1/1-2");
    let tty = usb.join("1-2:1.0/ttyUSB0/tty/ttyUSB0");
    std::fs::create_dir_all(&tty).unwrap();
    std::fs::write(usb.join("idVendor"), "10c4\n").unwrap();
    std::fs::write(usb.join("idProduct"), "ea60\n").unwrap();
    std::fs::create_dir_all(f.root().join("sys/dev/char")).unwrap();
    std::os::unix::fs::symlink(&tty, f.root().join("sys/dev/char/188:0")).unwrap();
    std::fs::write(f.root().join("etc/group"), "root:x:0:\ndialout:x:20:\n").unwrap();
    let entry = "lxc.mount.entry = /dev/ttyUSB0 dev/ttyUSB0 none bind,optional,create=file\n\
                 lxc.mount.entry = /dev/ttyACM7 dev/ttyACM7 none bind,optional,create=file\n";
    let rootfs = f.container_with("usb", |rootfs| debian_config("usb", rootfs) + entry);
    // The container calls gid 27 dialout: the rule must say 1000027, not 1000020.
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\ndialout:x:27:\n").unwrap();
    // A udevd runs on this host.
    let control = f.root().join("run/udev/control");
    std::fs::create_dir_all(control.parent().unwrap()).unwrap();
    std::fs::write(&control, "").unwrap();

    let there = stopped();
    execute(
        f.plan("usb", Target::HostId(1_000_000)),
        &there,
        Some(2),
        &Quiet,
    )
    .unwrap();
    // udev is told about this device only, never every device of the host.
    let reloads: Vec<HostCall> = (there.calls().into_iter())
        .filter(|c| matches!(c, HostCall::ReloadUdev(_)))
        .collect();
    assert_eq!(reloads, [HostCall::ReloadUdev(vec![node.clone()])]);
    let rules = f.root().join("etc/udev/rules.d/99-lxc-idshift-usb.rules");
    let text = std::fs::read_to_string(&rules).unwrap();
    assert!(text.contains("ATTRS{idVendor}==\"10c4\""), "{text}");
    assert!(text.contains("ATTRS{idProduct}==\"ea60\""), "{text}");
    assert!(text.contains("OWNER=\"1000000\""), "{text}");
    assert!(text.contains("GROUP=\"1000027\""), "{text}");
    let meta = std::fs::metadata(&node).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1_000_000, 1_000_027));

    // Without a udevd, the plan says so before anything is written, and the
    // conversion ends well: no reload is tried, the owners are set all the same.
    std::fs::remove_file(&control).unwrap();
    let back = f.plan("usb", Target::Privileged);
    let text = describe(&back);
    assert!(text.contains("no udevd runs here"), "{text}");
    let here = stopped();
    let outcome = execute(back, &here, Some(2), &Quiet).unwrap();
    assert_eq!(outcome.udev_reloaded, Some(false));
    assert!(!(here.calls().iter()).any(|c| matches!(c, HostCall::ReloadUdev(_))));
    assert!(!rules.exists(), "the rule is removed when going back");
    let meta = std::fs::metadata(&node).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 20), "its owners come back");
}

/// Makes a character device node `path` (major:minor) owned by 0:group, with a
/// sysfs entry under the fixture root naming it `kernel`.
fn fake_char_device(f: &Fixture, path: &str, (major, minor): (u32, u32), group: u32) -> PathBuf {
    let node = f.root().join(path.trim_start_matches('/'));
    std::fs::create_dir_all(node.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &node,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o660),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
    std::os::unix::fs::chown(&node, Some(0), Some(group)).unwrap();
    let kernel = node.file_name().unwrap();
    let sys = f
        .root()
        .join("sys/devices/pci0000:00/0000:00:02.0/drm")
        .join(kernel);
    std::fs::create_dir_all(&sys).unwrap();
    let char_dir = f.root().join("sys/dev/char");
    std::fs::create_dir_all(&char_dir).unwrap();
    std::os::unix::fs::symlink(&sys, char_dir.join(format!("{major}:{minor}"))).unwrap();
    node
}

/// A GPU passed in as a `/dev/dri` directory, from an include of the container's
/// own: the nodes its cgroup lines allow get the container's root and its `render`
/// group (by name, as the container numbers it) and a udev rule each; a node they
/// do not allow is left alone; `--to 0` gives every owner back.
#[test]
fn devices_of_a_dev_directory_the_cgroup_allows_are_passed_through() {
    if !require_root("devices_of_a_dev_directory_the_cgroup_allows_are_passed_through") {
        return;
    }
    let f = Fixture::new();
    let card = fake_char_device(&f, "/dev/dri/card0", (226, 0), 44);
    let render = fake_char_device(&f, "/dev/dri/renderD128", (226, 128), 105);
    let other = fake_char_device(&f, "/dev/dri/card1", (226, 1), 44);
    std::fs::write(
        f.root().join("etc/group"),
        "root:x:0:\nvideo:x:44:\nrender:x:105:\n",
    )
    .unwrap();
    let include = "lxc.cgroup2.devices.allow = c 226:0 rwm\n\
                   lxc.cgroup2.devices.allow = c 226:128 rwm\n\
                   lxc.mount.entry = /dev/dri dev/dri none bind,optional,create=dir\n";
    let rootfs = f.container_with("gpu", |rootfs| {
        debian_config("gpu", rootfs) + "lxc.include = /lxc/gpu/gpu.conf\n"
    });
    std::fs::write(f.dir("gpu").join("gpu.conf"), include).unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nvideo:x:44:\nrender:x:107:\n",
    )
    .unwrap();

    f.convert("gpu", Target::HostId(1_000_000));
    let ids = |node: &Path| {
        let meta = std::fs::metadata(node).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(ids(&card), (1_000_000, 1_000_044));
    assert_eq!(
        ids(&render),
        (1_000_000, 1_000_107),
        "render as the container numbers it"
    );
    assert_eq!(
        ids(&other),
        (0, 44),
        "not allowed by the cgroup lines: not passed"
    );
    let rules = f.root().join("etc/udev/rules.d/99-lxc-idshift-gpu.rules");
    let text = std::fs::read_to_string(&rules).unwrap();
    assert!(
        text.contains("KERNEL==\"card0\"") && text.contains("KERNEL==\"renderD128\""),
        "{text}"
    );
    assert!(!text.contains("card1"), "{text}");

    f.convert("gpu", Target::Privileged);
    assert_eq!(
        (ids(&card), ids(&render), ids(&other)),
        ((0, 44), (0, 105), (0, 44))
    );
    assert!(!rules.exists());
}

/// The CLI conversion of `name` in the fixture, with the fixture as host root.
fn convert_args(f: &Fixture, name: &str, to: &str) -> Vec<std::ffi::OsString> {
    common::container::convert_args(f.root(), name, to)
}

/// A conversion that fails on a host file says the path once, on stderr and in
/// its `--json` error, which names the operation and the errno beside the message.
#[test]
fn a_failed_conversion_names_the_path_once_and_its_errno() {
    if !require_root("a_failed_conversion_names_the_path_once_and_its_errno") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    let before = f.snapshot("web");
    let subgid = f.root().join("etc/subgid");
    let subgid_text = f.subgid();
    std::fs::remove_file(&subgid).unwrap();
    std::fs::create_dir(&subgid).unwrap();
    let mut args = convert_args(&f, "web", "1000000");
    args.push("--json".into());
    let out = run(&args);
    assert_exit(&out, 2, "conversion with /etc/subgid a directory");
    let path = subgid.display().to_string();
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches(&path).count(), 1, "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(report["errno"], "EISDIR", "{report}");
    assert_eq!(report["path"], path.as_str(), "{report}");
    assert_eq!(report["operation"], "read", "{report}");
    let message = report["error"].as_str().unwrap_or_default();
    assert_eq!(message.matches(&path).count(), 1, "{report}");
    assert!(message.contains("run the same command again"), "{report}");
    assert_eq!(std::fs::read_dir(&subgid).unwrap().count(), 0);
    std::fs::remove_dir(&subgid).unwrap();
    std::fs::write(&subgid, subgid_text).unwrap();
    assert_unchanged(&before, &f.snapshot("web"), "a refused conversion");
}

/// What a conversion leaves, without the journals (whose history differs by design).
fn outcome_of(f: &Fixture, name: &str) -> Snapshot {
    Snapshot::outcome(f.root(), name)
}

/// SIGKILL a conversion at random moments: running the same command again ends
/// exactly as an uninterrupted conversion, and `--to 0 --release-range` returns
/// everything (rootfs, config, subordinate ids, permissions) to where it started.
#[test]
fn killed_conversions_finish_or_undo_exactly() {
    if !require_root("killed_conversions_finish_or_undo_exactly") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("big");
    std::fs::create_dir(rootfs.join("srv")).unwrap();
    lxc_idshift::sample::build_bulk_tree(&rootfs.join("srv"), 20_000).unwrap();
    // A unit the conversion masks: its mask is made and removed under kills too.
    std::fs::create_dir_all(rootfs.join("lib/systemd/system")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc/systemd/system")).unwrap();
    std::fs::write(rootfs.join("lib/systemd/system/sys-kernel-debug.mount"), "").unwrap();
    let original = outcome_of(&f, "big");
    let started = std::time::Instant::now();
    assert_exit(
        &run(&convert_args(&f, "big", "1000000")),
        0,
        "uninterrupted",
    );
    let run_time = started.elapsed();
    let converted = outcome_of(&f, "big");
    let mask = rootfs.join("etc/systemd/system/sys-kernel-debug.mount");
    assert!(
        std::fs::symlink_metadata(&mask).is_ok(),
        "the unit is masked"
    );
    assert_exit(&run(&convert_args(&f, "big", "0")), 0, "back");
    assert_unchanged(
        &original,
        &outcome_of(&f, "big"),
        "uninterrupted round trip",
    );

    let converted_to = || convert_args(&f, "big", "1000000");
    let back = || convert_args(&f, "big", "0");
    let ends = (&original, &converted);
    kill_and_end(&f, "big", (&converted_to, &back), ends, (run_time, 20));
}

/// Kills `forward` at `kills` spread-out moments over `run_time`; after each, every
/// other time the same command must end as `converted`, then `back` must give
/// `original` back exactly.
fn kill_and_end(
    f: &Fixture,
    name: &str,
    (forward, back): (
        &dyn Fn() -> Vec<std::ffi::OsString>,
        &dyn Fn() -> Vec<std::ffi::OsString>,
    ),
    (original, converted): (&Snapshot, &Snapshot),
    (run_time, kills): (std::time::Duration, usize),
) {
    let (mut killed, mut i, mut max_delay) = (0, 0u64, run_time);
    while killed < kills {
        assert!(
            i < 4 * kills as u64,
            "only {killed} of {i} conversions were killed mid-way"
        );
        // A deterministic spread of delays over the run.
        let delay = max_delay.mul_f64(((i * 37) % 101) as f64 / 100.0);
        if kill_after(&forward(), delay) {
            killed += 1;
        } else {
            max_delay = max_delay.mul_f64(0.8);
        }
        if i % 2 == 0 {
            assert_exit(&run(&forward()), 0, "finish");
            let what = format!("iteration {i}: finished after a kill at {delay:?}");
            assert_unchanged(converted, &outcome_of(f, name), &what);
        }
        assert_exit(&run(&back()), 0, "undo");
        let what = format!("iteration {i}: undone after a kill at {delay:?}");
        assert_unchanged(original, &outcome_of(f, name), &what);
        i += 1;
    }
}

/// The same between maps of other shapes: from privileged to a map with a hole
/// (`--map`), and from user and group ranges apart to a range sharing host user
/// and group 1000 (`--share-ids`) and back (`--map`).
#[test]
fn killed_conversions_between_map_shapes_finish_or_undo_exactly() {
    if !require_root("killed_conversions_between_map_shapes_finish_or_undo_exactly") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("big");
    std::fs::remove_file(rootfs.join(paths::HOST_RANGE)).unwrap();
    std::fs::create_dir(rootfs.join("srv")).unwrap();
    lxc_idshift::sample::build_bulk_tree(&rootfs.join("srv"), 20_000).unwrap();
    let with = |extra: &[String]| {
        let mut args = convert_args(&f, "big", "0");
        args.retain(|a| a != "--to" && a != "0" && a != "--release-range");
        args.extend(extra.iter().map(|a| a.into()));
        args
    };
    let maps = |map: &TestMap| -> Vec<String> {
        map.args()
            .into_iter()
            .flat_map(|a| ["--map".to_string(), a])
            .collect()
    };
    let privileged = || with(&["--to".into(), "0".into(), "--release-range".into()]);
    let hole = || with(&maps(&HOLE));
    let split = || with(&maps(&SPLIT));
    let shared = || {
        with(&[
            "--to".into(),
            "3000000".into(),
            "--share-ids".into(),
            "u:1000,g:1000".into(),
        ])
    };
    for (what, from, to) in [
        (
            "privileged -> hole",
            &privileged as &dyn Fn() -> _,
            &hole as &dyn Fn() -> _,
        ),
        ("split -> shared", &split, &shared),
    ] {
        // Once there and back first: a move between unprivileged maps leaves root
        // the ranges it held (only `--to 0 --release-range` gives them up).
        for step in [from, to, from] {
            assert_exit(&run(&step()), 0, what);
        }
        let original = outcome_of(&f, "big");
        let started = std::time::Instant::now();
        assert_exit(&run(&to()), 0, what);
        let run_time = started.elapsed();
        let converted = outcome_of(&f, "big");
        assert_exit(&run(&from()), 0, what);
        assert_unchanged(&original, &outcome_of(&f, "big"), what);
        kill_and_end(
            &f,
            "big",
            (&to, &from),
            (&original, &converted),
            (run_time, 10),
        );
    }
}

/// An unfinished conversion keeps every start through LXC from running the
/// container on its half-shifted rootfs: `lxc-start` refuses in the guard's
/// pre-start hook, `lxc-autostart` no longer lists it, `list` and `check` say why
/// and which command ends it. Finishing takes the guard away: the config is that of
/// an uninterrupted conversion, and autostart lists it again.
#[test]
fn an_unfinished_conversion_cannot_be_started() {
    if !require_root("an_unfinished_conversion_cannot_be_started") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container_with("web", |rootfs| {
        format!("{}lxc.start.auto = 1\n", debian_config("web", rootfs))
    });
    let lxcpath = f.lxc().display().to_string();
    let autostart = || lxc::ok("lxc-autostart", &["-L", "-P", &lxcpath]);
    assert!(autostart().contains("web"), "listed before");
    let Some(stuck) = ImmutableGuard::set(&rootfs.join(paths::ROOT_FILE)) else {
        return;
    };
    let out = run(&convert_args(&f, "web", "1000000"));
    assert_exit(&out, 1, "a conversion stopped by an immutable file");
    assert!(!autostart().contains("web"), "autostart skips it");
    let log = f.root().join("lxc-start.log");
    let log_arg = log.display().to_string();
    let start = [
        "60",
        "lxc-start",
        "-n",
        "web",
        "-P",
        &lxcpath,
        "-l",
        "DEBUG",
        "-o",
        &log_arg,
    ];
    let started = lxc::sh("timeout", &start);
    assert!(!started.status.success(), "lxc-start refused");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("lxc-idshift: this container cannot start"),
        "refused by the guard's hook: {logged}"
    );
    let listed = run(&[
        "list".as_ref(),
        "--json".as_ref(),
        "-P".as_ref(),
        f.lxc().as_os_str(),
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let web = &listed["containers"][0];
    assert_eq!(web["start_guard"], true, "{listed}");
    let next = web["unfinished"]["next"].as_str().unwrap_or_default();
    assert!(
        next.contains("--to 1000000") && next.contains("cannot start"),
        "{next}"
    );
    let check = run(&[
        "check".as_ref(),
        "web".as_ref(),
        "-P".as_ref(),
        f.lxc().as_os_str(),
    ]);
    assert!(text(&check.stdout).contains("cannot start until it is finished or undone"));
    drop(stuck);
    assert_exit(&run(&convert_args(&f, "web", "1000000")), 0, "finished");
    let config = f.config("web");
    assert!(
        !config.contains("lxc-idshift"),
        "the guard is gone: {config}"
    );
    assert!(autostart().contains("web"), "listed again");
}

/// The same with a bind mount source shifted along (`--mounts shift`): SIGKILL at
/// spread-out moments, then the same command finishes exactly, and `--to 0` returns
/// the source's full metadata too.
#[test]
fn killed_conversions_with_a_shifted_mount_finish_or_undo_exactly() {
    if !require_root("killed_conversions_with_a_shifted_mount_finish_or_undo_exactly") {
        return;
    }
    let f = Fixture::new();
    let data = www_with_bind_mount(&f);
    std::fs::create_dir(data.join("bulk")).unwrap();
    lxc_idshift::sample::build_bulk_tree(&data.join("bulk"), 10_000).unwrap();
    let state = |f: &Fixture| (outcome_of(f, "www"), collect(&data));
    let args = |to: &str| {
        let mut args = convert_args(&f, "www", to);
        args.extend(["--mounts".into(), "shift".into()]);
        args
    };
    let original = state(&f);
    let started = std::time::Instant::now();
    assert_exit(&run(&args("1000000")), 0, "uninterrupted");
    let run_time = started.elapsed();
    let converted = state(&f);
    assert_eq!(
        owner(&data.join("a")).0,
        1_000_033,
        "the source was shifted"
    );
    assert_exit(&run(&args("0")), 0, "back");
    let same = |a: &(Snapshot, lxc_idshift::manifest::Manifest), b: &_, what: &str| {
        let b: &(Snapshot, lxc_idshift::manifest::Manifest) = b;
        assert_unchanged(&a.0, &b.0, what);
        assert_same(&a.1, &b.1, what);
    };
    same(&original, &state(&f), "uninterrupted round trip");
    let (mut killed, mut i, mut max_delay) = (0, 0u64, run_time);
    while killed < 10 {
        assert!(
            i < 60,
            "only {killed} of {i} conversions were killed mid-way"
        );
        let delay = max_delay.mul_f64(((i * 37) % 101) as f64 / 100.0);
        if kill_after(&args("1000000"), delay) {
            killed += 1;
        } else {
            max_delay = max_delay.mul_f64(0.8);
        }
        if i % 2 == 0 {
            assert_exit(&run(&args("1000000")), 0, "finish");
            same(
                &converted,
                &state(&f),
                &format!("iteration {i}: finished after {delay:?}"),
            );
        }
        assert_exit(&run(&args("0")), 0, "undo");
        same(
            &original,
            &state(&f),
            &format!("iteration {i}: undone after {delay:?}"),
        );
        i += 1;
    }
}

/// An interrupted conversion (its state heads elsewhere than the config says) must
/// be finished or undone before the container goes anywhere else.
#[test]
fn an_interrupted_conversion_must_be_finished_or_undone_first() {
    if !require_root("an_interrupted_conversion_must_be_finished_or_undone_first") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    let state = r#"{"origin": null, "target": 1000000, "range": 65536, "perms": []}"#;
    std::fs::write(f.state_file("web"), state).unwrap();
    let e = f.refused(&f.options("web", Target::HostId(2_000_000)));
    let message = e.to_string();
    assert!(
        message.contains("--to 1000000") && message.contains("--to 0"),
        "{message}"
    );
    // Finishing it and undoing it are both planned with the interrupted run's map.
    let finish = f.plan("web", Target::Auto);
    assert_eq!(finish.after.root(), Some(1_000_000));
    let (map, direction) = finish.shift.expect("a shift");
    assert_eq!(
        (map.to_string(), direction),
        ("b:0:1000000:65536".into(), Direction::Forward)
    );
    let (map, direction) = f.plan("web", Target::Privileged).shift.expect("a shift");
    assert_eq!(
        (map.to_string(), direction),
        ("b:0:1000000:65536".into(), Direction::Reverse)
    );
}

/// `lxc.idmap = u 0 FIRST COUNT` of a converted container: its FIRST.
fn host_first(f: &Fixture, name: &str) -> u32 {
    let config = f.config(name);
    let line = config
        .lines()
        .find(|l| l.starts_with("lxc.idmap = u 0 "))
        .unwrap_or_else(|| panic!("{name} has no uid map:\n{config}"));
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// The lines of a file, sorted, for comparing what is there whatever the order.
fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.sort();
    lines
}

/// Starts the CLI conversions of `names` at once (processes) and waits for them all.
fn convert_at_once(f: &Fixture, names: &[String], to: &str) {
    let children: Vec<_> = names
        .iter()
        .map(|name| {
            std::process::Command::new(bin())
                .args(convert_args(f, name, to))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("cannot start lxc-idshift")
        })
        .collect();
    for (name, child) in names.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 0, &format!("{name} --to {to}"));
    }
}

/// Several `--to auto` started at the same moment: the host-wide lock makes them
/// choose one after the other, so the ranges are disjoint and subuid/subgid end up
/// with every line.
#[test]
fn simultaneous_auto_conversions_get_disjoint_ranges() {
    if !require_root("simultaneous_auto_conversions_get_disjoint_ranges") {
        return;
    }
    let f = Fixture::new();
    let names: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
    for name in &names {
        f.container(name);
    }
    convert_at_once(&f, &names, "auto");
    let mut firsts: Vec<u32> = names.iter().map(|n| host_first(&f, n)).collect();
    firsts.sort();
    // alice and bob hold 100000..231071: the free aligned ranges start at 262144.
    let expected: Vec<u32> = (0..4).map(|i| 262_144 + i * 65_536).collect();
    assert_eq!(firsts, expected, "one range each, disjoint");
    let mut lines = sorted_lines(SUBIDS);
    lines.extend(firsts.iter().map(|first| format!("root:{first}:65536")));
    lines.sort();
    assert_eq!(sorted_lines(&f.subuid()), lines);
    assert_eq!(sorted_lines(&f.subgid()), lines);
    for name in &names {
        let first = host_first(&f, name);
        assert_eq!(owner(&f.rootfs(name).join(paths::ROOT_FILE)).0, first);
    }
}

/// A conversion started while another holds the host lock says so, waits, and
/// finishes once the lock is released.
#[test]
fn a_conversion_waits_for_the_one_before_and_says_so() {
    if !require_root("a_conversion_waits_for_the_one_before_and_says_so") {
        return;
    }
    use std::io::BufRead;
    let f = Fixture::new();
    f.container("web");
    let lock_path = Host::under(f.root()).conversion_lock();
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let held = std::fs::File::create(&lock_path).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    std::fs::write(&lock_path, format!("{}\n", std::process::id())).unwrap();

    let mut child = std::process::Command::new(bin())
        .args(convert_args(&f, "web", "auto"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let wanted = format!(
        "waiting for another lxc-idshift conversion (pid {}) to finish...\n",
        std::process::id()
    );
    assert_eq!(line, wanted);
    assert_eq!(f.subuid(), SUBIDS, "nothing is written while it waits");
    assert!(!f.state_file("web").exists());
    drop(held);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert_eq!(host_first(&f, "web"), 262_144);
}

/// The prefix's account databases (as `usermod -P` wants them) with one user.
fn with_test_user(f: &Fixture, user: &str) {
    let etc = f.root().join("etc");
    let files = [
        ("passwd", format!("root:x:0:0:root:/root:/bin/bash\n{user}:x:1500:1500::/nonexistent:/usr/sbin/nologin\n")),
        ("shadow", format!("root:*:19000:0:99999:7:::\n{user}:*:19000:0:99999:7:::\n")),
        ("group", format!("root:x:0:\n{user}:x:1500:\n")),
        ("gshadow", format!("root:*::\n{user}:!::\n")),
    ];
    for (name, text) in files {
        std::fs::write(etc.join(name), text).unwrap();
    }
}

/// Conversions (there and back, several at once) while `usermod --add-subuids
/// --add-subgids` adds ranges to a user in a loop: shadow's locks keep the two from
/// overwriting each other, so every line usermod added is still there at the end.
#[test]
fn usermod_adding_ranges_meanwhile_loses_no_line() {
    if !require_root("usermod_adding_ranges_meanwhile_loses_no_line") {
        return;
    }
    if std::process::Command::new("usermod")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("\n!!!!!!!! SKIPPED: usermod not found (Debian package passwd) !!!!!!!!\n");
        return;
    }
    let f = Fixture::new();
    with_test_user(&f, "loopuser");
    let names: Vec<String> = (0..3).map(|i| format!("u{i}")).collect();
    for name in &names {
        f.container(name);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let root = f.root().to_path_buf();
    let looper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut added = Vec::new();
            // Far above the containers' ranges; 10 ids each.
            let mut first = 50_000_000u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || added.len() < 5 {
                let range = format!("{first}-{}", first + 9);
                let out = std::process::Command::new("usermod")
                    .arg("-P")
                    .arg(&root)
                    .args(["-v", &range, "-w", &range, "loopuser"])
                    .output()
                    .unwrap();
                assert_exit(&out, 0, &format!("usermod -v {range}"));
                added.push(format!("loopuser:{first}:10"));
                first += 10;
            }
            added
        })
    };
    convert_at_once(&f, &names, "auto");
    let firsts: Vec<u32> = names.iter().map(|n| host_first(&f, n)).collect();
    convert_at_once(&f, &names, "0"); // with --release-range
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let added = looper.join().unwrap();

    let mut lines = sorted_lines(SUBIDS);
    lines.extend(added.iter().cloned());
    lines.sort();
    assert_eq!(sorted_lines(&f.subuid()), lines, "subuid");
    assert_eq!(sorted_lines(&f.subgid()), lines, "subgid");
    let mut sorted = firsts.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "disjoint ranges: {firsts:?}");
    let etc = f.root().join("etc");
    for lock in ["subuid.lock", "subgid.lock", "passwd.lock", "shadow.lock"] {
        assert!(!etc.join(lock).exists(), "{lock} is left");
    }
}

/// A host account whose uid or gid lies in a range: `--to auto` skips the range,
/// an explicit `--to` is refused and names the account.
#[test]
fn ranges_holding_a_host_account_are_skipped_or_refused() {
    if !require_root("ranges_holding_a_host_account_are_skipped_or_refused") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    let etc = f.root().join("etc");
    // alice and bob end at 231071; svc sits in the next aligned range (262144..),
    // the group builders in the one after (327680..).
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/bash\nsvc:x:270000:100::/srv:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nbuilders:x:330000:\n").unwrap();
    let before = f.snapshot("web");

    let e = f.refused(&f.options("web", Target::HostId(262_144)));
    assert_eq!(
        e.to_string(),
        "range 262144..327679 holds the host's user svc (uid 270000): container ids would be that account on the host; choose another --to (--to auto skips host accounts)"
    );
    let e = f.refused(&f.options("web", Target::HostId(300_000)));
    assert!(e.to_string().contains("group builders (gid 330000)"), "{e}");
    assert_unchanged(&before, &f.snapshot("web"), "after the refusals");

    let outcome = f.convert("web", Target::Auto);
    assert_eq!(outcome.plan.after.root(), Some(393_216));
    // Where the container is, an account added later does not stop a re-run.
    std::fs::write(etc.join("group"), "root:x:0:\nlate:x:393300:\n").unwrap();
    let again = f.plan("web", Target::HostId(393_216));
    assert!(again.edits.is_empty());
}

/// `--to auto` stays within SUB_UID_MIN..SUB_UID_MAX and SUB_GID_MIN..SUB_GID_MAX
/// of the host's /etc/login.defs; an explicit `--to` is the user's choice.
#[test]
fn auto_respects_login_defs_bounds() {
    if !require_root("auto_respects_login_defs_bounds") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    let defs = f.root().join("etc/login.defs");
    std::fs::write(
        &defs,
        "# subordinate ids\nSUB_UID_MIN\t\t 1000000\nSUB_UID_MAX\t\t 3000000\nSUB_GID_MIN 2000000\nSUB_GID_MAX 600100000\n",
    )
    .unwrap();
    // The higher minimum (gids: 2000000) aligned up to 65536.
    assert_eq!(f.plan("web", Target::Auto).after.root(), Some(2_031_616));
    // 2031616..2097151 is the last range ending at or below SUB_UID_MAX 2100000.
    std::fs::write(
        &defs,
        "SUB_UID_MIN 2000000\nSUB_UID_MAX 2100000\nSUB_GID_MIN 2000000\nSUB_GID_MAX 2100000\n",
    )
    .unwrap();
    f.config_only(
        "other",
        "lxc.rootfs.path = dir:/srv/other\nlxc.idmap = u 0 2031616 65536\nlxc.idmap = g 0 2031616 65536\n",
    );
    let e = f.refused(&f.options("web", Target::Auto));
    assert_eq!(
        e.to_string(),
        format!(
            "no free range of 65536 ids between 2000000 and 2100000 (SUB_UID_MIN/SUB_GID_MIN and SUB_UID_MAX/SUB_GID_MAX in {}); raise those bounds or pass --to HOSTID explicitly",
            defs.display()
        )
    );
    assert_eq!(
        f.plan("web", Target::HostId(5_000_000)).after.root(),
        Some(5_000_000)
    );
}

/// Owners beyond the container range (a privileged rootfs may hold files of 100000
/// or 4294967294): the plan counts them per id, says they will show as nobody, and
/// offers the `--range` that maps them; with that range they are shifted.
#[test]
fn ids_beyond_the_range_are_counted_and_a_wider_range_offered() {
    if !require_root("ids_beyond_the_range_are_counted_and_a_wider_range_offered") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("web");
    let srv = rootfs.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    for (name, uid, gid) in [("a", 100_000, 100_000), ("b", 100_000, 4_294_967_294)] {
        std::fs::write(srv.join(name), "").unwrap();
        std::os::unix::fs::lchown(srv.join(name), Some(uid), Some(gid)).unwrap();
    }
    let planned = f.plan("web", Target::HostId(HOST_FIRST));
    // The sample's own strays: var/lib/stray 70000:70000, var/lib/mixed group 70000.
    let uids: Vec<(u32, u64)> = planned.unmapped.uids.clone().into_iter().collect();
    let gids: Vec<(u32, u64)> = planned.unmapped.gids.clone().into_iter().collect();
    assert_eq!(uids, [(70_000, 1), (100_000, 2)]);
    assert_eq!(gids, [(70_000, 2), (100_000, 1), (4_294_967_294, 1)]);
    let text = describe(&planned);
    for wanted in [
        "ids outside the container's range 0..65535, left as they are: inside the container they show as nobody (65534)\n",
        "  uid 100000: 2 inodes\n",
        "  gid 4294967294: 1 inode\n",
        "  --range 131072 would map them (container ids 0..131071), except 4294967294, which no range can reach\n",
    ] {
        assert!(text.contains(wanted), "missing {wanted:?} in:\n{text}");
    }

    let mut wider = f.options("web", Target::HostId(HOST_FIRST));
    wider.range = 131_072;
    let planned = plan(&wider, &stopped()).unwrap();
    assert!(planned.unmapped.uids.is_empty(), "{:?}", planned.unmapped);
    let gids: Vec<(u32, u64)> = planned.unmapped.gids.clone().into_iter().collect();
    assert_eq!(gids, [(4_294_967_294, 1)]);
    assert!(!describe(&planned).contains("--range"));
    execute(planned, &stopped(), Some(2), &Quiet).unwrap();
    assert_eq!(owner(&srv.join("a")).0, 1_100_000);
    assert_eq!(owner(&srv.join("b")).1, 4_294_967_294);
    // Already unprivileged: nothing left out, nothing offered.
    let again = f.plan("web", Target::HostId(HOST_FIRST));
    assert!(again.unmapped.uids.is_empty());
}

/// A container "www" with `/srv/data` bind-mounted: three files and their directory
/// of www-data (33) under the fixture root; returns the source.
fn www_with_bind_mount(f: &Fixture) -> PathBuf {
    let data = f.root().join("srv/data");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["a", "b", "c"] {
        std::fs::write(data.join(name), name).unwrap();
        std::os::unix::fs::chown(data.join(name), Some(33), Some(33)).unwrap();
    }
    std::os::unix::fs::chown(&data, Some(33), Some(33)).unwrap();
    let entry = "lxc.mount.entry = /srv/data srv/data none bind,create=dir 0 0\n\
                 lxc.mount.entry = /dev/null dev/null none bind,optional,create=file 0 0\n";
    f.container_with("www", |rootfs| debian_config("www", rootfs) + entry);
    data
}

const DATA_ENTRY: &str = "lxc.mount.entry = /srv/data srv/data none bind,create=dir 0 0\n";
const DATA_IDMAPPED: &str =
    "lxc.mount.entry = /srv/data srv/data none bind,create=dir,idmap=container 0 0\n";

fn convert_with(f: &Fixture, to: Target, mounts: MountsChoice) -> Plan {
    let options = ConvertOptions {
        mounts,
        ..f.options("www", to.clone())
    };
    let planned = plan(&options, &stopped()).unwrap_or_else(|e| panic!("plan {to:?}: {e}"));
    let text = describe(&planned);
    assert!(text.contains("bind mounts of host paths"), "{text}");
    let outcome = execute(planned, &stopped(), Some(2), &Quiet).unwrap();
    assert_eq!(outcome.shift.as_ref().map_or(0, |s| s.summary.errors), 0);
    outcome.plan
}

/// `--mounts shift` never re-owns a source that is not the container's alone: one
/// another container binds too, another container's directory (whose config LXC
/// runs hooks from as host root), the container's own directory (its config) or a
/// directory in its rootfs (shifted twice), the lxcpath, a host user's home, one
/// with a file system mounted inside, one whose entry sits in an include outside
/// the container's directory. Each is refused before anything is written, naming who else uses it
/// and the ways out.
#[test]
fn a_bind_source_used_by_others_is_never_shifted() {
    if !require_root("a_bind_source_used_by_others_is_never_shifted") {
        return;
    }
    let shared_with_other = |f: &Fixture| {
        f.container_with("other", |rootfs| {
            debian_config("other", rootfs) + DATA_ENTRY
        });
        "container other"
    };
    let other_containers_dir = |f: &Fixture| {
        f.container("other");
        retarget(f, "/lxc/other");
        "container other's directory"
    };
    let the_lxcpath = |f: &Fixture| {
        retarget(f, "/lxc");
        "holds the lxcpath"
    };
    let a_users_home = |f: &Fixture| {
        let passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        std::fs::write(f.root().join("etc/passwd"), passwd).unwrap();
        std::fs::create_dir_all(f.root().join("home/alice/media")).unwrap();
        retarget(f, "/home/alice/media");
        "host user alice's home"
    };
    let a_nested_mount = |f: &Fixture| {
        let inner = f.root().join("srv/data/inner");
        std::fs::create_dir(&inner).unwrap();
        let guard = MountGuard::tmpfs(&inner).expect("tmpfs");
        std::mem::forget(guard); // unmounted below, once the plan is refused
        "mounted inside it"
    };
    let its_own_directory = |f: &Fixture| {
        retarget(f, "/lxc/www");
        "the container's own directory"
    };
    let inside_its_own_rootfs = |f: &Fixture| {
        retarget(f, "/lxc/www/rootfs/etc");
        "the container's own rootfs"
    };
    let a_foreign_include = |f: &Fixture| {
        let shared = f.root().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join("mounts.conf"), DATA_ENTRY).unwrap();
        let config = f
            .config("www")
            .replace(DATA_ENTRY, "lxc.include = /shared/mounts.conf\n");
        std::fs::write(f.config_path("www"), config).unwrap();
        "outside the container's directory"
    };
    let cases: [(&str, &SharingCase); 8] = [
        ("shared with another container", &shared_with_other),
        ("its own directory", &its_own_directory),
        ("inside its own rootfs", &inside_its_own_rootfs),
        ("another container's directory", &other_containers_dir),
        ("the lxcpath", &the_lxcpath),
        ("a host user's home", &a_users_home),
        ("a nested mount", &a_nested_mount),
        ("an entry in a foreign include", &a_foreign_include),
    ];
    for (case, make) in cases {
        let f = Fixture::new();
        www_with_bind_mount(&f);
        let files_before = collect(&f.root().join("srv"));
        let said = make(&f);
        let before = f.snapshot("www");
        let options = ConvertOptions {
            mounts: MountsChoice::Shift,
            ..f.options("www", Target::HostId(1_000_000))
        };
        let err = f.refused(&options);
        let inner = f.root().join("srv/data/inner");
        if Command::new("umount")
            .arg(&inner)
            .status()
            .is_ok_and(|s| s.success())
        {
            std::fs::remove_dir(&inner).unwrap();
        }
        let message = err.to_string();
        assert!(
            matches!(err, ConvertError::SharedMountSource { .. }) && message.contains(said),
            "{case}: {message}"
        );
        assert!(
            message.contains("--mounts idmap"),
            "{case}: the way out: {message}"
        );
        assert_unchanged(&before, &f.snapshot("www"), case);
        assert_same(&files_before, &collect(&f.root().join("srv")), case);
    }
}

/// Ranges are the host's, not one lxcpath's: a range a container under another
/// lxcpath maps is refused (and skipped by `--to auto`), and `--to 0
/// --release-range` keeps root's range while a copy elsewhere still maps it.
#[test]
fn ranges_mapped_under_another_lxcpath_are_neither_taken_nor_released() {
    if !require_root("ranges_mapped_under_another_lxcpath_are_neither_taken_nor_released") {
        return;
    }
    let f = Fixture::new();
    let elsewhere = f.root().join("var/lib/lxc/copy");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let maps = |first: u32| {
        format!("lxc.rootfs.path = dir:/srv/copy\nlxc.idmap = u 0 {first} 65536\nlxc.idmap = g 0 {first} 65536\n")
    };
    std::fs::write(elsewhere.join("config"), maps(2_000_000)).unwrap();
    f.container("web");
    let err = f.refused(&f.options("web", Target::HostId(2_000_000)));
    assert!(
        matches!(err, ConvertError::RangeTaken { ref other, .. } if other == "copy"),
        "{err}"
    );
    assert_ne!(
        f.plan("web", Target::Auto).after.root(),
        Some(2_000_000),
        "auto skips it"
    );
    f.convert("web", Target::HostId(HOST_FIRST));
    let granted = f.subuid();
    assert!(granted.contains("root:1000000:65536"), "{granted}");
    // A copy of web elsewhere maps the same range: releasing it would stop the copy.
    std::fs::write(elsewhere.join("config"), maps(HOST_FIRST)).unwrap();
    let back = ConvertOptions {
        release_range: true,
        ..f.options("web", Target::Privileged)
    };
    let planned = plan(&back, &stopped()).unwrap();
    let text = describe(&planned);
    assert!(
        text.contains("root keeps 1000000..1065535") && text.contains("copy"),
        "{text}"
    );
    execute(planned, &stopped(), Some(2), &Quiet).unwrap();
    assert_eq!((f.subuid(), f.subgid()), (granted.clone(), granted), "kept");
}

/// The origin of an overlay clone (`lxc-copy -s -B overlay`) is the clone's lower
/// layer: converting it is refused before anything is written.
#[test]
fn the_lower_layer_of_a_clone_is_never_shifted() {
    if !require_root("the_lower_layer_of_a_clone_is_never_shifted") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("base");
    let clone = format!(
        "lxc.rootfs.path = overlay:{}:{}\nlxc.uts.name = clone\n",
        rootfs.display(),
        f.dir("clone").join("delta0").display()
    );
    f.config_only("clone", &clone);
    let before = f.snapshot("base");
    let err = f.refused(&f.options("base", Target::HostId(HOST_FIRST)));
    let message = err.to_string();
    assert!(
        matches!(err, ConvertError::LowerLayerOfClone { ref other, .. } if other == "clone"),
        "{message}"
    );
    assert!(message.contains("lxc-copy"), "{message}");
    assert_unchanged(&before, &f.snapshot("base"), "the origin of a clone");
}

/// A rootfs under a directory the container's root could not traverse is refused
/// before anything is written, with the command that opens it (the conversion used
/// to say "Done", then lxc-start aborted); opened, the conversion goes through.
#[test]
fn a_rootfs_the_container_root_cannot_reach_is_refused() {
    if !require_root("a_rootfs_the_container_root_cannot_reach_is_refused") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("web");
    // o+x is there (the conversion adds only that to the parents of the container's
    // directory), but an ACL entry of the container's root group shuts it out.
    let deny = format!("g:{HOST_FIRST}:-");
    lxc::ok("setfacl", &["-m", &deny, &f.lxc().display().to_string()]);
    let before = f.snapshot("web");
    let err = f.refused(&f.options("web", Target::HostId(HOST_FIRST)));
    let message = err.to_string();
    assert!(
        matches!(err, ConvertError::ParentNotTraversable { .. }),
        "{message}"
    );
    let fix = format!("setfacl -m u:{HOST_FIRST}:x {}", f.lxc().display());
    assert!(message.contains(&fix), "{message}");
    assert_unchanged(&before, &f.snapshot("web"), "a rootfs out of reach");
    assert_eq!(
        owner(&rootfs.join(paths::ROOT_FILE)).0,
        0,
        "nothing shifted"
    );
    lxc::ok("setfacl", &["-b", &f.lxc().display().to_string()]);
    f.convert("web", Target::HostId(HOST_FIRST));
    assert_eq!(owner(&rootfs.join(paths::ROOT_FILE)).0, HOST_FIRST);
}

/// Undoing an interrupted conversion gives /etc/subuid and /etc/subgid back byte
/// for byte, without `--release-range`: the range it granted goes again. A range
/// root held before stays.
#[test]
fn an_undone_interrupted_conversion_restores_the_subid_files() {
    if !require_root("an_undone_interrupted_conversion_restores_the_subid_files") {
        return;
    }
    for held_before in [false, true] {
        let f = Fixture::new();
        let rootfs = f.container("web");
        if held_before {
            let text = format!("{SUBIDS}root:1000000:65536\n");
            std::fs::write(f.root().join("etc/subuid"), &text).unwrap();
            std::fs::write(f.root().join("etc/subgid"), &text).unwrap();
        }
        let before = f.snapshot("web");
        let subids = (f.subuid(), f.subgid());
        let Some(stuck) = ImmutableGuard::set(&rootfs.join(paths::ROOT_FILE)) else {
            return;
        };
        let to = |target: &str| {
            let mut args = convert_args(&f, "web", target);
            args.retain(|a| a != "--release-range");
            run(&args)
        };
        assert_exit(&to("1000000"), 1, "stopped by an immutable file");
        assert!(
            f.subuid().contains("root:1000000:65536"),
            "granted on the way"
        );
        drop(stuck);
        assert_exit(&to("0"), 0, "undone without --release-range");
        assert_eq!(
            (f.subuid(), f.subgid()),
            subids,
            "held before: {held_before}"
        );
        assert_unchanged(&before, &outcome_of(&f, "web"), "undone");
    }
}

/// Found by the conversion power cuts (tests/powercut.rs, seed 0x5eed0022): a
/// `--to 0 --release-range` interrupted after its state file was written and
/// before /etc/subuid and /etc/subgid were (here: the first subid write fails),
/// then run again to its end, must release the range as an uninterrupted one
/// does: the original snapshot exactly, root's lines gone.
#[test]
fn a_resumed_way_back_with_release_range_releases_the_range() {
    if !require_root("a_resumed_way_back_with_release_range_releases_the_range") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    let original = outcome_of(&f, "web");
    f.convert("web", Target::HostId(1_000_000));
    let back = ConvertOptions {
        release_range: true,
        ..f.options("web", Target::Privileged)
    };
    // Changes in order: the config's start guard, the state file, /etc/subuid.
    let cut = stopped().fail_change(3, std::io::ErrorKind::Other);
    let planned = plan(&back, &stopped()).unwrap();
    assert!(execute(planned, &cut, Some(2), &Quiet).is_err());
    assert!(f.subuid().contains("root:1000000:65536"), "still granted");
    let planned = plan(&back, &stopped()).unwrap();
    execute(planned, &stopped(), Some(2), &Quiet).unwrap();
    assert_unchanged(
        &original,
        &outcome_of(&f, "web"),
        "resumed --to 0 --release-range",
    );
}

/// `list --json` on the fixture's host.
fn proxmox_list(f: &Fixture) -> serde_json::Value {
    let (lxc, root) = (f.lxc(), f.root().to_path_buf());
    let list = run(&[
        "list".as_ref(),
        "--json".as_ref(),
        "-P".as_ref(),
        lxc.as_os_str(),
        "--host-root".as_ref(),
        root.as_os_str(),
    ]);
    serde_json::from_slice(&list.stdout)
        .unwrap_or_else(|e| panic!("list: {e}: {}", text(&list.stderr)))
}

/// The map Proxmox gives every unprivileged container.
const PROXMOX_DEFAULT: TestMap = TestMap(&[('b', 0, 100_000, 65_536)]);

/// A Proxmox VE container: its `/etc/pve/lxc/VMID.conf`, a `dir` storage holding
/// its rootfs and a second volume as subvol directories, a bind mount point, and
/// the LXC config Proxmox writes at every start beside it.
struct ProxmoxContainer {
    conf_path: PathBuf,
    conf: String,
    rootfs: PathBuf,
    data: PathBuf,
}

fn proxmox_container(f: &Fixture) -> ProxmoxContainer {
    f.config_only("101", &debian_config("101", &f.rootfs("101")));
    std::fs::create_dir(f.rootfs("101")).unwrap();
    // What the lxc-pve package gives root.
    for file in ["etc/subuid", "etc/subgid"] {
        std::fs::write(f.root().join(file), "root:100000:65536\n").unwrap();
    }
    let images = f.root().join("vz/images/101");
    let (rootfs, data) = (
        images.join("subvol-101-disk-0.subvol"),
        images.join("subvol-101-disk-1.subvol"),
    );
    for dir in [&rootfs, &data] {
        std::fs::create_dir_all(dir).unwrap();
    }
    lxc_idshift::sample::build_sample_rootfs(&rootfs).unwrap();
    lxc_idshift::sample::build_bulk_tree(&data, 2_000).unwrap();
    // The directory mp1 is mounted on, which a walk through `pct mount`'s nested
    // tree would never see: the manifests compare it too.
    let hidden = rootfs.join("var/lib/data");
    std::fs::create_dir_all(&hidden).unwrap();
    std::os::unix::fs::chown(&hidden, Some(33), Some(33)).unwrap();
    let pve = f.root().join("etc/pve");
    std::fs::create_dir_all(pve.join("lxc")).unwrap();
    std::fs::write(
        pve.join("storage.cfg"),
        "dir: local\n\tpath /vz\n\tcontent rootdir,images\n",
    )
    .unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pve-reference/101.conf");
    let conf = std::fs::read_to_string(reference).unwrap().replace(
        "rootfs: local-zfs:subvol-101-disk-0,size=8G\n",
        "mp1: local:101/subvol-101-disk-1.subvol,mp=/var/lib/data,size=1G\nrootfs: local:101/subvol-101-disk-0.subvol,size=8G\n",
    );
    let conf_path = pve.join("lxc/101.conf");
    std::fs::write(&conf_path, &conf).unwrap();
    ProxmoxContainer {
        conf_path,
        conf,
        rootfs,
        data,
    }
}

/// `lxc-idshift 101 --to 100000` on Proxmox VE: both volumes shifted, each as its
/// own tree, the bind mount point and the raw device lines left as they are, the
/// `.conf` given `unprivileged: 1` where Proxmox writes it (Proxmox's default map
/// needs no raw lines) and no lock left; `--to 0` gives every volume, the `.conf`
/// and the subid files back exactly. A map of another shape (`--share-ids`) is
/// written as raw `lxc.idmap` lines, and back. A `lock:` of Proxmox's own is
/// refused before anything is written; `list` and `check` say who manages it.
#[test]
fn a_proxmox_container_converts_in_place_and_back() {
    if !require_root("a_proxmox_container_converts_in_place_and_back") {
        return;
    }
    const SHARED: TestMap = TestMap(&[
        ('b', 0, 200_000, 1000),
        ('b', 1000, 1000, 1),
        ('b', 1001, 201_001, 64_535),
    ]);
    let f = Fixture::new();
    let ct = proxmox_container(&f);
    // Another Proxmox container with Proxmox's default map, as its last start wrote it.
    f.config_only(
        "102",
        &unprivileged(
            &debian_config("102", &f.rootfs("102")),
            USERNS,
            "lxc.idmap",
            100_000,
        ),
    );
    let original = (collect(&ct.rootfs), collect(&ct.data));
    let subids = (f.subuid(), f.subgid());
    let share = ConvertOptions {
        share_ids: parse_shared("u:1000,g:1000").unwrap(),
        release_range: true,
        ..f.options("101", Target::HostId(200_000))
    };
    let default = f.options("101", Target::HostId(100_000));
    for (what, options, map) in [
        ("default", default, &PROXMOX_DEFAULT),
        ("shared", share, &SHARED),
    ] {
        let planned = plan(&options, &stopped()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let said = describe(&planned);
        // The bind mount point's source is not on this host.
        assert!(
            said.contains("mp0 (/srv/data at /data): ") && said.contains("left as it is"),
            "{said}"
        );
        // The raw device lines of 101.conf, and its features, as Proxmox would do them.
        assert!(
            said.contains("-devN /dev/ttyUSB0,gid=GID,mode=0660"),
            "{said}"
        );
        let shares = said.contains("which container 102 maps too");
        assert_eq!(shares, what == "default", "{said}");
        let volume = format!("volume {}: shift forward", ct.data.display());
        assert!(
            said.contains(&volume) && said.contains("+unprivileged: 1"),
            "{said}"
        );
        let outcome = execute(planned, &stopped(), Some(2), &Quiet).unwrap();
        assert_eq!(outcome.mount_shifts.len(), 1, "{what}: the data volume");
        let expected = (
            expected_forward_with(&original.0, map),
            expected_forward_with(&original.1, map),
        );
        assert_same(&expected.0, &collect(&ct.rootfs), what);
        assert_same(&expected.1, &collect(&ct.data), what);
        let conf = std::fs::read_to_string(&ct.conf_path).unwrap();
        let raw: Vec<&str> = conf
            .lines()
            .filter(|l| l.starts_with("lxc.idmap: "))
            .collect();
        let wanted: Vec<String> = match what {
            "default" => Vec::new(),
            _ => host_map(map)
                .lxc_lines()
                .iter()
                .map(|l| format!("lxc.idmap: {l}"))
                .collect(),
        };
        assert_eq!(raw, wanted, "{what}: {conf}");
        let without_raw: String = conf
            .lines()
            .filter(|l| !l.starts_with("lxc.idmap: "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            without_raw,
            ct.conf
                .replace("swap: 512\n", "swap: 512\nunprivileged: 1\n"),
            "{what}: the flag where Proxmox writes it, nothing else"
        );
        let back = ConvertOptions {
            release_range: what == "shared",
            ..f.options("101", Target::Privileged)
        };
        execute(
            plan(&back, &stopped()).unwrap(),
            &stopped(),
            Some(2),
            &Quiet,
        )
        .unwrap();
        assert_same(&original.0, &collect(&ct.rootfs), &format!("{what}, back"));
        assert_same(&original.1, &collect(&ct.data), &format!("{what}, back"));
        assert_eq!(
            std::fs::read_to_string(&ct.conf_path).unwrap(),
            ct.conf,
            "{what}"
        );
        assert_eq!((f.subuid(), f.subgid()), subids, "{what}: root's lines");
    }
    // A lock of Proxmox's own: refused, nothing written.
    let locked = ct
        .conf
        .replace("hostname: jeedom1\n", "hostname: jeedom1\nlock: backup\n");
    std::fs::write(&ct.conf_path, &locked).unwrap();
    let err = f.refused(&f.options("101", Target::HostId(100_000)));
    assert!(matches!(err, ConvertError::ProxmoxLocked { .. }), "{err}");
    assert!(err.to_string().contains("pct unlock 101"), "{err}");
    let mounted = ct
        .conf
        .replace("hostname: jeedom1\n", "hostname: jeedom1\nlock: mounted\n");
    std::fs::write(&ct.conf_path, &mounted).unwrap();
    let err = f
        .refused(&f.options("101", Target::HostId(100_000)))
        .to_string();
    assert!(
        err.contains("pct unmount 101"),
        "`pct mount` is undone so: {err}"
    );
    std::fs::write(&ct.conf_path, &locked).unwrap();
    assert_same(&original.0, &collect(&ct.rootfs), "refused");
    assert_eq!(std::fs::read_to_string(&ct.conf_path).unwrap(), locked);
    // `list` and `check` say so.
    let listed = proxmox_list(&f);
    let managed = listed["containers"][0]["managed_by"].as_str();
    assert!(
        managed.is_some_and(|m| m.starts_with("managed by Proxmox VE")),
        "{listed}"
    );
    // Where it stands is read from its .conf, not from the LXC config of its last start.
    let unprivileged = ct
        .conf
        .replace("swap: 512\n", "swap: 512\nunprivileged: 1\n");
    std::fs::write(&ct.conf_path, unprivileged).unwrap();
    let listed = proxmox_list(&f);
    let entry = &listed["containers"][0];
    assert_eq!(entry["unprivileged"], true, "{listed}");
    assert_eq!(entry["range"]["host_first"], 100_000, "{listed}");
}

/// Bind mount points of a Proxmox container follow `--mounts`: `shift` re-owns a
/// source that is the container's alone (refused for one another Proxmox
/// container binds), `idmap` gives the mount point `idmap=passthrough` where the
/// host's pve-container takes it (refused where it does not), and `--to 0` undoes
/// each exactly. The container was never started (no LXC config yet): found by
/// its `.conf`. `--snapshot` runs `pct snapshot` before the first change.
#[test]
fn proxmox_bind_mount_points_follow_the_mounts_choice() {
    if !require_root("proxmox_bind_mount_points_follow_the_mounts_choice") {
        return;
    }
    let f = Fixture::new();
    let ct = proxmox_container(&f);
    std::fs::remove_file(f.config_path("101")).unwrap();
    let source = f.root().join("srv/data");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("sub/file"), "alice's").unwrap();
    std::os::unix::fs::chown(source.join("sub/file"), Some(1000), Some(1000)).unwrap();
    let original = (collect(&ct.rootfs), collect(&ct.data), collect(&source));
    let with = |mounts| ConvertOptions {
        mounts,
        ..f.options("101", Target::HostId(100_000))
    };
    let convert = |options: &ConvertOptions, host: &RecordingHost| {
        let planned = plan(options, host).unwrap_or_else(|e| panic!("{e}"));
        execute(planned, host, Some(2), &Quiet).unwrap()
    };
    let back = f.options("101", Target::Privileged);
    let assert_back = |what: &str| {
        assert_same(&original.0, &collect(&ct.rootfs), what);
        assert_same(&original.1, &collect(&ct.data), what);
        assert_same(&original.2, &collect(&source), what);
        let conf = std::fs::read_to_string(&ct.conf_path).unwrap();
        assert_eq!(conf, ct.conf, "{what}");
    };
    // The plan as JSON: Proxmox's flavour, its volumes, what becomes of mp0.
    let mut args = convert_args(&f, "101", "100000");
    args.extend(["--dry-run".into(), "--json".into()]);
    let planned = run(&args);
    assert_exit(&planned, 0, "--dry-run --json");
    let report: serde_json::Value = serde_json::from_slice(&planned.stdout).unwrap();
    assert_eq!(report["flavour"], "proxmox", "{report}");
    assert_eq!(report["trees"], serde_json::json!([ct.data]), "{report}");
    let notes = report["notes"].to_string();
    assert!(notes.contains("mp0 (/srv/data at /data)"), "{report}");
    // shift: the source moves with the volumes, and back.
    let outcome = convert(&with(MountsChoice::Shift), &stopped());
    assert_eq!(
        outcome.mount_shifts.len(),
        2,
        "the data volume and the source"
    );
    assert_same(
        &expected_forward_with(&original.2, &PROXMOX_DEFAULT),
        &collect(&source),
        "shifted source",
    );
    convert(&back, &stopped());
    assert_back("--mounts shift, back");
    // Another Proxmox container binds a directory holding it: not the container's alone.
    let other = f.root().join("etc/pve/lxc/102.conf");
    std::fs::write(
        &other,
        "arch: amd64\nmp0: /srv,mp=/mnt/srv\nrootfs: local:102/subvol-102-disk-0.subvol,size=1G\n",
    )
    .unwrap();
    let err = f.refused(&with(MountsChoice::Shift));
    assert!(
        matches!(err, ConvertError::SharedMountSource { .. })
            && err.to_string().contains("Proxmox container 102"),
        "{err}"
    );
    std::fs::remove_file(&other).unwrap();
    assert_back("refused");
    // idmap: only with a pve-container that takes idmap= on mount points.
    let err = f.refused(&with(MountsChoice::Idmap));
    assert!(
        err.to_string().contains("pve-container is not installed"),
        "{err}"
    );
    let status = f.root().join("var/lib/dpkg/status");
    std::fs::create_dir_all(status.parent().unwrap()).unwrap();
    std::fs::write(
        &status,
        "Package: pve-container\nStatus: install ok installed\nVersion: 6.1.10\n",
    )
    .unwrap();
    if lxc_idshift::lxc::mounts::kernel_idmaps(&source, 100_000, 65_536).is_ok() {
        convert(&with(MountsChoice::Idmap), &stopped());
        let conf = std::fs::read_to_string(&ct.conf_path).unwrap();
        assert!(
            conf.contains("\nmp0: /srv/data,mp=/data,idmap=passthrough\n"),
            "{conf}"
        );
        assert_same(&original.2, &collect(&source), "idmapped: nothing on disk");
        convert(&back, &stopped());
        assert_back("--mounts idmap, back");
    } else {
        skip("idmapped mounts of the test's file system: the idmap=passthrough round trip");
    }
    // --snapshot: `pct snapshot` first, before any write; a name Proxmox refuses is refused.
    let snapshot = |name: &str| ConvertOptions {
        snapshot: Some(name.into()),
        ..with(MountsChoice::Keep)
    };
    let err = f.refused(&snapshot("1-not-a-name"));
    assert!(matches!(err, ConvertError::Snapshot { .. }), "{err}");
    let host = RecordingHost::over(RealHost)
        .answer("lxc-info", "STOPPED\n")
        .answer("pct", "status: stopped\n");
    let planned = plan(&snapshot("before-idshift"), &host).unwrap();
    let said = describe(&planned);
    assert!(said.contains("pct snapshot 101 before-idshift"), "{said}");
    execute(planned, &host, Some(2), &Quiet).unwrap();
    let calls = host.calls();
    let first_change = calls.iter().position(HostCall::is_change).unwrap();
    let snapshot_at = calls.iter().position(|c| {
        matches!(c, HostCall::Run { program, args }
            if program == "pct" && args.starts_with(&["snapshot".into(), "101".into(), "before-idshift".into()]))
    });
    assert!(snapshot_at.is_some_and(|at| at < first_change), "{calls:?}");
    // `check` reads the .conf as Proxmox would start it: the map, the rootfs at its
    // volume, the bind mount point, what works only privileged; the list too.
    let (lxc, root) = (f.lxc(), f.root().to_path_buf());
    let in_fixture = |command: &str| {
        let out = run(&[
            command.as_ref(),
            "101".as_ref(),
            "--json".as_ref(),
            "-P".as_ref(),
            lxc.as_os_str(),
            "--host-root".as_ref(),
            root.as_os_str(),
        ]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{command}: {e}: {}", text(&out.stderr)))
    };
    // The device of 101.conf's raw lines, on this host: its devN entry keeps its owners.
    let node = f.root().join("dev/ttyUSB0");
    std::fs::create_dir_all(node.parent().unwrap()).unwrap();
    let device = rustix::fs::FileType::CharacterDevice;
    let mode = rustix::fs::Mode::from_raw_mode(0o660);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &node,
        device,
        mode,
        rustix::fs::makedev(188, 0),
    )
    .unwrap();
    std::os::unix::fs::chown(&node, Some(0), Some(20)).unwrap();
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o660)).unwrap();
    let report = in_fixture("check");
    assert_eq!(report["mode"], "unprivileged", "{report}");
    assert_eq!(report["rootfs"], ct.rootfs.to_str().unwrap(), "{report}");
    let kinds: Vec<&str> = (report["problems"].as_array().unwrap().iter())
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"mount_shows_nobody"), "{report}");
    for problem in report["problems"].as_array().unwrap() {
        let fix = problem["fix"].as_str().unwrap();
        assert!(!fix.contains("lxc.mount.entry"), "a Proxmox fix: {fix}");
    }
    let said = report.to_string();
    assert!(
        said.contains("/srv/data") && said.contains("-devN /dev/ttyUSB0,uid=0,gid=20,mode=0660"),
        "{report}"
    );
    // Never started, it has no LXC config, and `list` finds it by its .conf.
    let listed = proxmox_list(&f);
    let entry = &listed["containers"][0];
    assert_eq!(
        (&entry["name"], &entry["state"], &entry["unprivileged"]),
        (&"101".into(), &"STOPPED".into(), &true.into()),
        "{listed}"
    );
    convert(&back, &stopped());
    assert_back("--snapshot, back");
    let report = in_fixture("check");
    assert_eq!(report["mode"], "privileged", "{report}");
    assert!(
        report["notes"]
            .to_string()
            .contains("-devN /dev/ttyUSB0,uid=0,gid=20"),
        "what going unprivileged needs: {report}"
    );
}

/// Gives container 101 a third volume, `mp2`, inside a raw ext4 image holding a
/// tree of `files`; returns the image and the `.conf` now.
fn raw_image_volume(f: &Fixture, ct: &ProxmoxContainer, files: usize) -> Option<(PathBuf, String)> {
    let fs = LoopFs::new("ext4", &[])?;
    let tree = fs.mount.join("srv");
    std::fs::create_dir(&tree).unwrap();
    lxc_idshift::sample::build_bulk_tree(&tree, files).unwrap();
    fs.unmount();
    let image = f.root().join("vz/images/101/vm-101-disk-2.raw");
    std::fs::rename(&fs.image, &image).unwrap();
    let conf = ct.conf.replace(
        "rootfs: ",
        "mp2: local:101/vm-101-disk-2.raw,mp=/srv/img,size=320M\nrootfs: ",
    );
    std::fs::write(&ct.conf_path, &conf).unwrap();
    Some((image, conf))
}

/// A volume inside a raw image (a `dir` storage's `vm-101-disk-2.raw`) is mounted at
/// a path of its own for the conversion, shifted whole (`lost+found` and the file
/// system's root included) and unmounted at the end, both ways.
#[test]
fn a_proxmox_volume_in_a_raw_image_is_mounted_shifted_and_unmounted() {
    if !require_root("a_proxmox_volume_in_a_raw_image_is_mounted_shifted_and_unmounted") {
        return;
    }
    let f = Fixture::new();
    let ct = proxmox_container(&f);
    let Some((image, conf)) = raw_image_volume(&f, &ct, 500) else {
        return;
    };
    let manifest = || image_manifest(&image);
    let original = manifest();
    let in_use = || text_of(&run_ok(Command::new("losetup").arg("-j").arg(&image)));
    for (to, expected) in [
        (
            Target::HostId(100_000),
            expected_forward_with(&original, &PROXMOX_DEFAULT),
        ),
        (Target::Privileged, original.clone()),
    ] {
        let outcome = f.convert("101", to.clone());
        assert_eq!(outcome.mount_shifts.len(), 2, "{to:?}: both volumes");
        drop(outcome);
        assert_eq!(in_use(), "", "{to:?}: unmounted at the end");
        assert!(!f.dir("101").join("lxc-idshift.volumes/mp2").exists());
        assert_same(&expected, &manifest(), &format!("{to:?}"));
    }
    assert_eq!(std::fs::read_to_string(&ct.conf_path).unwrap(), conf);
}

/// SIGKILLs spread over a Proxmox conversion and its way back: the same command
/// finishes exactly, `--to 0` undoes exactly, every volume, the bind mount point's
/// source shifted along (`--mounts shift`) and the `.conf` (its lock too) included.
#[test]
fn killed_proxmox_conversions_finish_or_undo_exactly() {
    if !require_root("killed_proxmox_conversions_finish_or_undo_exactly") {
        return;
    }
    let f = Fixture::new();
    let ct = proxmox_container(&f);
    let bulk = ct.rootfs.join("srv/bulk");
    std::fs::create_dir_all(&bulk).unwrap();
    lxc_idshift::sample::build_bulk_tree(&bulk, 12_000).unwrap();
    // A volume mounted for the conversion, left mounted by a kill.
    let Some((image, _)) = raw_image_volume(&f, &ct, 2_000) else {
        return;
    };
    // The bind mount point's source, shifted along (--mounts shift).
    let source = f.root().join("srv/data");
    std::fs::create_dir_all(&source).unwrap();
    lxc_idshift::sample::build_bulk_tree(&source, 2_000).unwrap();
    let snapshot = || {
        let conf = std::fs::read_to_string(&ct.conf_path).unwrap();
        let mut s = outcome_of(&f, "101");
        s.config = conf;
        s.manifest = collect(&ct.rootfs);
        let others = (collect(&ct.data), image_manifest(&image), collect(&source));
        (s, others)
    };
    let original = snapshot();
    let to = || {
        let mut args = convert_args(&f, "101", "100000");
        args.extend(["--mounts".into(), "shift".into()]);
        args
    };
    // Root keeps the range the lxc-pve package gave it.
    let back = || {
        let mut args = convert_args(&f, "101", "0");
        args.retain(|a| a != "--release-range");
        args
    };
    let started = std::time::Instant::now();
    assert_exit(&run(&to()), 0, "uninterrupted");
    let run_time = started.elapsed();
    let converted = snapshot();
    assert_same(
        &expected_forward_with(&original.1 .2, &PROXMOX_DEFAULT),
        &converted.1 .2,
        "the bind source, shifted",
    );
    assert!(
        !converted.0.config.contains("lock:"),
        "{}",
        converted.0.config
    );
    assert_exit(&run(&back()), 0, "back");
    assert_eq!(snapshot().1, original.1, "the data and image volumes");
    assert_unchanged(&original.0, &snapshot().0, "uninterrupted round trip");
    let (mut killed, mut i, mut max_delay) = (0, 0u64, run_time);
    let mut listed_unfinished = 0;
    while killed < 10 {
        assert!(
            i < 40,
            "only {killed} of {i} conversions were killed mid-way"
        );
        let delay = max_delay.mul_f64(((i * 37) % 101) as f64 / 100.0);
        if kill_after(&to(), delay) {
            killed += 1;
        } else {
            max_delay = max_delay.mul_f64(0.8);
        }
        // Held by our lock: `list` shows the unfinished conversion and both ways on.
        if std::fs::read_to_string(&ct.conf_path)
            .unwrap()
            .contains("lock: disk")
        {
            let listed = proxmox_list(&f);
            let next = listed["containers"][0]["unfinished"]["next"].to_string();
            assert!(
                next.contains("-n 101") && next.contains("--to 100000") && next.contains("--to 0"),
                "iteration {i}: {listed}"
            );
            listed_unfinished += 1;
        }
        if i % 2 == 0 {
            assert_exit(&run(&to()), 0, "finish");
            let now = snapshot();
            assert_unchanged(&converted.0, &now.0, &format!("iteration {i}: finished"));
            assert_eq!(
                now.1, converted.1,
                "iteration {i}: the data volume, finished"
            );
        }
        assert_exit(&run(&back()), 0, "undo");
        let now = snapshot();
        assert_unchanged(&original.0, &now.0, &format!("iteration {i}: undone"));
        assert_eq!(now.1, original.1, "iteration {i}: the data volume, undone");
        i += 1;
    }
    eprintln!(
        "{listed_unfinished} of {killed} kills left an unfinished conversion that list showed"
    );
}

/// Sets up one way of sharing www's bind source; returns what the refusal must say.
type SharingCase = dyn Fn(&Fixture) -> &'static str;

/// Points www's bind mount entry at `source` (a host path under the fixture's root).
fn retarget(f: &Fixture, source: &str) {
    let entry = DATA_ENTRY.replace("/srv/data", source);
    let config = f.config("www").replace(DATA_ENTRY, &entry);
    std::fs::write(f.config_path("www"), config).unwrap();
}

/// `--mounts keep`: the plan lists the bind mount with what the container will see
/// as nobody and a plain warning with the entry to write; the conversion leaves the
/// entry and the files alone both ways.
#[test]
fn bind_mounts_kept_are_listed_with_a_warning_and_left_alone() {
    if !require_root("bind_mounts_kept_are_listed_with_a_warning_and_left_alone") {
        return;
    }
    let f = Fixture::new();
    let data = www_with_bind_mount(&f);
    let before = collect(&data);
    let config_before = f.config("www");

    let options = ConvertOptions {
        mounts: MountsChoice::Keep,
        ..f.options("www", Target::HostId(1_000_000))
    };
    let planned = plan(&options, &stopped()).unwrap();
    assert_eq!(planned.mounts.len(), 1, "only /srv/data, not the device");
    let (mount, scan) = &planned.mounts[0];
    assert_eq!(mount.source, Path::new("/srv/data"));
    let scan = scan.as_ref().unwrap();
    assert_eq!((scan.inodes, scan.nobody), (4, 4));
    let text = describe(&planned);
    assert!(
        text.contains("4 inodes, 4 of them seen as nobody (65534) inside: uid 33 (4 inodes), gid 33 (4 inodes)"),
        "{text}"
    );
    assert!(
        text.contains("warning: the container cannot write these files"),
        "{text}"
    );
    assert!(text.contains(DATA_IDMAPPED.trim_end()), "{text}");
    assert!(
        text.contains("`lxc-idshift shift /srv/data --map b:0:1000000:65536`"),
        "{text}"
    );

    let mut args = convert_args(&f, "www", "1000000");
    args.extend(["--dry-run".into(), "--mounts".into(), "keep".into()]);
    let out = run(&args);
    assert_exit(&out, 0, "--dry-run --mounts keep");
    assert!(
        text_of(&out).contains("warning: the container cannot write these files"),
        "{}",
        text_of(&out)
    );

    convert_with(&f, Target::HostId(1_000_000), MountsChoice::Keep);
    assert!(f.config("www").contains(DATA_ENTRY), "{}", f.config("www"));
    assert_same(
        &before,
        &collect(&data),
        "the bind mount source after --to 1000000",
    );
    let back = f.plan("www", Target::Privileged);
    let scan = back.mounts[0].1.as_ref().unwrap();
    assert_eq!((scan.inodes, scan.nobody), (4, 0));
    assert!(!describe(&back).contains("warning"), "{}", describe(&back));
    f.convert("www", Target::Privileged);
    assert_same(
        &before,
        &collect(&data),
        "the bind mount source after --to 0",
    );
    assert_eq!(f.config("www"), config_before);
}

/// By default an idmapped mount is tried (in a scratch user namespace) and, as it
/// works on this file system, the entry gains `idmap=container`: the container sees
/// www-data's files as www-data's, nothing on disk changes, and `--to 0` gives back
/// the config byte for byte.
#[test]
fn bind_mounts_are_idmapped_by_default_and_back() {
    if !require_root("bind_mounts_are_idmapped_by_default_and_back") {
        return;
    }
    let f = Fixture::new();
    let data = www_with_bind_mount(&f);
    let before = collect(&data);
    let config_before = f.config("www");

    let planned = f.plan("www", Target::HostId(1_000_000));
    let (mount, scan) = &planned.mounts[0];
    assert!(mount.idmapped());
    assert_eq!(scan.as_ref().unwrap().nobody, 0);
    let text = describe(&planned);
    assert!(
        text.contains("/srv/data: idmap=container added to its entry"),
        "{text}"
    );
    assert!(text.contains(&format!("+{}", DATA_IDMAPPED)), "{text}");
    assert!(!text.contains("warning"), "{text}");

    f.convert("www", Target::HostId(1_000_000));
    let config = f.config("www");
    assert!(config.contains(DATA_IDMAPPED), "{config}");
    assert_eq!(config.matches("idmap=container").count(), 1, "{config}");
    assert_same(
        &before,
        &collect(&data),
        "the bind mount source after --to 1000000",
    );
    // Idempotent: converting again changes nothing.
    f.convert("www", Target::HostId(1_000_000));
    assert_eq!(f.config("www"), config);

    let back = f.plan("www", Target::Privileged);
    assert!(!back.mounts[0].0.idmapped());
    f.convert("www", Target::Privileged);
    assert_eq!(f.config("www"), config_before);
    assert_same(
        &before,
        &collect(&data),
        "the bind mount source after --to 0",
    );
}

/// A move between ranges cannot shift a source that holds the host's own ids:
/// refused before anything is written, with the way to do it.
#[test]
fn a_range_move_refuses_to_shift_a_source_never_shifted() {
    if !require_root("a_range_move_refuses_to_shift_a_source_never_shifted") {
        return;
    }
    let f = Fixture::new();
    let data = www_with_bind_mount(&f);
    let keep = ConvertOptions {
        mounts: MountsChoice::Keep,
        ..f.options("www", Target::HostId(1_000_000))
    };
    execute(
        plan(&keep, &stopped()).unwrap(),
        &stopped(),
        Some(2),
        &Quiet,
    )
    .unwrap();
    let (config, files) = (f.config("www"), collect(&data));
    let moving = ConvertOptions {
        mounts: MountsChoice::Shift,
        ..f.options("www", Target::HostId(2_000_000))
    };
    let err = plan(&moving, &stopped())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("was never shifted"), "{err}");
    assert!(err.contains("--to 0` first"), "{err}");
    assert_eq!(f.config("www"), config, "nothing written");
    assert_same(&files, &collect(&data), "the source is untouched");
}

/// `--mounts shift`: the source directory is shifted with the rootfs's map,
/// journaled in the container's directory; a second conversion keeps it shifted;
/// `--to 0` shifts it back exactly.
#[test]
fn bind_mounts_shifted_with_the_rootfs_and_back() {
    if !require_root("bind_mounts_shifted_with_the_rootfs_and_back") {
        return;
    }
    let f = Fixture::new();
    let data = www_with_bind_mount(&f);
    let before = collect(&data);
    let config_before = f.config("www");

    let options = ConvertOptions {
        mounts: MountsChoice::Shift,
        ..f.options("www", Target::HostId(1_000_000))
    };
    let planned = plan(&options, &stopped()).unwrap();
    assert_eq!(planned.mount_shifts, std::slice::from_ref(&data));
    assert_eq!(planned.mounts[0].1.as_ref().unwrap().nobody, 0);
    let text = describe(&planned);
    assert!(
        text.contains(&format!(
            "bind mount source {}: shift forward with b:0:1000000:65536",
            data.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("/srv/data: shifted with the rootfs's map"),
        "{text}"
    );
    assert!(!text.contains("warning"), "{text}");
    let outcome = execute(planned, &stopped(), Some(2), &Quiet).unwrap();
    assert_eq!(outcome.mount_shifts.len(), 1);
    assert_eq!(outcome.mount_shifts[0].summary.errors, 0);
    assert_eq!(owner(&data.join("a")), (1_000_033, 1_000_033, 0o644));
    assert_eq!(
        f.config("www"),
        unprivileged(&config_before, USERNS, "lxc.idmap", 1_000_000)
    );
    let state = std::fs::read_to_string(f.state_file("www")).unwrap();
    assert!(state.contains("shifted_mounts"), "{state}");

    // Again, even asking for idmap: the shifted source stays shifted, no idmap is
    // added (it would show the shifted owners as nobody).
    let again = execute(
        plan(
            &ConvertOptions {
                mounts: MountsChoice::Idmap,
                ..f.options("www", Target::HostId(1_000_000))
            },
            &stopped(),
        )
        .unwrap(),
        &stopped(),
        Some(2),
        &Quiet,
    )
    .unwrap();
    assert_eq!(again.plan.mount_shifts, std::slice::from_ref(&data));
    assert!(!f.config("www").contains("idmap=container"));
    assert_eq!(owner(&data.join("a")).0, 1_000_033);

    // A move to another range takes the shifted source along.
    let moved = execute(
        plan(
            &ConvertOptions {
                mounts: MountsChoice::Shift,
                ..f.options("www", Target::HostId(2_000_000))
            },
            &stopped(),
        )
        .unwrap(),
        &stopped(),
        Some(2),
        &Quiet,
    )
    .unwrap();
    assert_eq!(moved.mount_shifts.len(), 1);
    assert_eq!(owner(&data.join("a")), (2_000_033, 2_000_033, 0o644));

    let back = f.convert("www", Target::Privileged);
    assert_eq!(back.mount_shifts.len(), 1);
    assert_same(
        &before,
        &collect(&data),
        "the bind mount source after --to 0",
    );
    assert_eq!(f.config("www"), config_before);
    assert!(!f.state_file("www").exists());
}

/// A shifted bind source moved (and its entry updated) before `--to 0`: refused
/// before anything is written, naming where the config binds now; moved back, the
/// way back is exact. Gone for good, an empty directory in its place lets it end.
#[test]
fn a_shifted_source_moved_before_going_back_is_refused_until_it_is_back() {
    if !require_root("a_shifted_source_moved_before_going_back_is_refused_until_it_is_back") {
        return;
    }
    let f = Fixture::new();
    let data = www_with_bind_mount(&f);
    let (before, config_before) = (collect(&data), f.config("www"));
    convert_with(&f, Target::HostId(1_000_000), MountsChoice::Shift);
    let moved = f.root().join("srv/moved");
    std::fs::rename(&data, &moved).unwrap();
    retarget(&f, "/srv/moved");
    let snapshot = f.snapshot("www");
    let err = f.refused(&f.options("www", Target::Privileged));
    let message = err.to_string();
    assert!(
        matches!(err, ConvertError::ShiftedSourceMissing { .. }),
        "{message}"
    );
    assert!(message.contains(&data.display().to_string()), "{message}");
    assert!(
        message.contains("the config now binds") && message.contains("srv/moved"),
        "{message}"
    );
    assert_unchanged(&snapshot, &f.snapshot("www"), "refused --to 0");

    std::fs::rename(&moved, &data).unwrap();
    let entry = DATA_ENTRY.replace("/srv/data", "/srv/moved");
    let config = f.config("www").replace(&entry, DATA_ENTRY);
    std::fs::write(f.config_path("www"), config).unwrap();
    f.convert("www", Target::Privileged);
    assert_same(
        &before,
        &collect(&data),
        "the source moved back, after --to 0",
    );
    assert_eq!(f.config("www"), config_before);

    // Gone for good: an empty directory in its place lets the conversion end.
    convert_with(&f, Target::HostId(1_000_000), MountsChoice::Shift);
    std::fs::remove_dir_all(&data).unwrap();
    assert!(matches!(
        f.refused(&f.options("www", Target::Privileged)),
        ConvertError::ShiftedSourceMissing { .. }
    ));
    std::fs::create_dir(&data).unwrap();
    f.convert("www", Target::Privileged);
    assert_eq!(f.config("www"), config_before);
    assert!(!f.state_file("www").exists());
}

/// A rootfs sharing inodes with another container (`cp -al`) is refused before the
/// first write, both ways, naming the other container and the way out; once it has
/// files of its own (the command the refusal gives), it converts and comes back
/// exactly, and the other container's files never change.
#[test]
fn a_rootfs_sharing_inodes_with_another_container_is_refused() {
    if !require_root("a_rootfs_sharing_inodes_with_another_container_is_refused") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("www");
    let hardlink_copy = |name: &str| {
        f.config_only(name, &debian_config(name, &f.rootfs(name)));
        let status = Command::new("cp")
            .arg("-al")
            .args([&rootfs, &f.rootfs(name)])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hardlink_copy("copy");
    for to in [Target::HostId(1_000_000), Target::Privileged] {
        let (before, copy_before) = (f.snapshot("www"), collect(&f.rootfs("copy")));
        let err = f.refused(&f.options("www", to.clone()));
        let message = err.to_string();
        assert!(
            matches!(err, ConvertError::RootfsSharesInodes { .. }),
            "{to:?}: {message}"
        );
        assert!(
            message.contains("container copy's rootfs") && message.contains("cp -a "),
            "{to:?}: {message}"
        );
        assert_unchanged(&before, &f.snapshot("www"), "refused");
        assert_same(&copy_before, &collect(&f.rootfs("copy")), "the copy");
        if to == Target::Privileged {
            break;
        }
        // Made unprivileged while it had files of its own, then copied with cp -al.
        std::fs::remove_dir_all(f.dir("copy")).unwrap();
        f.convert("www", Target::HostId(1_000_000));
        hardlink_copy("copy");
    }
    // The way out the refusal gives: a copy with files of its own.
    let own = rootfs.with_extension("own");
    let copied = Command::new("cp")
        .arg("-a")
        .args([&rootfs, &own])
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::rename(&rootfs, rootfs.with_extension("shared")).unwrap();
    std::fs::rename(&own, &rootfs).unwrap();
    let shifted = collect(&rootfs);
    f.convert("www", Target::Privileged);
    f.convert("www", Target::HostId(1_000_000));
    assert_same(&shifted, &collect(&rootfs), "there and back after the copy");
    assert_same(
        &shifted,
        &collect(&f.rootfs("copy")),
        "the cp -al copy, never touched",
    );
}

/// Units that fail only because the container became unprivileged are masked in
/// its rootfs (a link to /dev/null, owned by the container's root), said in the
/// plan, and unmasked by `--to 0`, which gives back the exact tree. A unit the
/// admin configured already, and a masks directory that leads out of the rootfs,
/// are left alone.
#[test]
fn units_that_cannot_work_unprivileged_are_masked_and_unmasked() {
    if !require_root("units_that_cannot_work_unprivileged_are_masked_and_unmasked") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("web");
    let units = rootfs.join("lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for unit in [
        "sys-kernel-debug.mount",
        "systemd-modules-load.service",
        "cron.service",
    ] {
        std::fs::write(units.join(unit), "[Unit]\n").unwrap();
    }
    let masks = rootfs.join("etc/systemd/system");
    std::fs::create_dir_all(&masks).unwrap();
    // The admin's own override of one of them stays as it is.
    std::fs::write(masks.join("systemd-modules-load.service"), "[Unit]\n").unwrap();
    let before = collect(&rootfs);

    let there = f.plan("web", Target::HostId(1_000_000));
    let text = describe(&there);
    assert!(
        text.contains("mask sys-kernel-debug.mount in the rootfs"),
        "{text}"
    );
    assert!(!text.contains("mask systemd-modules-load"), "{text}");
    execute(there, &stopped(), Some(2), &Quiet).unwrap();
    let mask = masks.join("sys-kernel-debug.mount");
    assert_eq!(std::fs::read_link(&mask).unwrap(), Path::new("/dev/null"));
    let meta = std::fs::symlink_metadata(&mask).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1_000_000, 1_000_000));
    let state = std::fs::read_to_string(f.state_file("web")).unwrap();
    assert!(state.contains("sys-kernel-debug.mount"), "{state}");

    // Unmasked by hand, `check` finds it, and its fix masks it again.
    std::fs::remove_file(&mask).unwrap();
    let check = || f.check("web");
    let unit_problems = || {
        (check().problems.into_iter())
            .filter(|p| p.kind.name() == "unit_fails_unprivileged")
            .collect::<Vec<_>>()
    };
    let found = unit_problems();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].fix.contains("--to 1000000"), "{}", found[0].fix);
    f.convert("web", Target::HostId(1_000_000));
    assert!(unit_problems().is_empty());

    let back = f.plan("web", Target::Privileged);
    assert!(describe(&back).contains("unmask sys-kernel-debug.mount"));
    execute(back, &stopped(), Some(2), &Quiet).unwrap();
    assert_same(&before, &collect(&rootfs), "the rootfs after --to 0");

    // etc/systemd leading to the host's files: resolved inside the rootfs, nothing
    // is masked and the host's directory stays empty.
    let host_dir = f.root().join("host-systemd");
    std::fs::create_dir_all(host_dir.join("system")).unwrap();
    std::fs::remove_dir_all(rootfs.join("etc/systemd")).unwrap();
    std::os::unix::fs::symlink(&host_dir, rootfs.join("etc/systemd")).unwrap();
    f.convert("web", Target::HostId(1_000_000));
    assert_eq!(
        std::fs::read_dir(host_dir.join("system")).unwrap().count(),
        0
    );
}

/// A container moves through maps of every shape LXC accepts (user and group
/// ranges apart, a hole sharing host user 1000, one range, `--share-ids`) and back
/// to privileged: at each step every inode holds exactly what the map gives its
/// container ids, the config has the map's lines, root holds its host ids (a
/// shared id's line only while it is shared), and at the end the rootfs, the
/// config and the permissions are what they were.
#[test]
fn maps_of_every_shape_convert_and_come_back_exactly() {
    if !require_root("maps_of_every_shape_convert_and_come_back_exactly") {
        return;
    }
    const AT_3M: TestMap = TestMap(&[('b', 0, 3_000_000, 65_536)]);
    const SHARED_4M: TestMap = TestMap(&[
        ('b', 0, 4_000_000, 1000),
        ('b', 1000, 1000, 1),
        ('b', 1001, 4_001_001, 64_535),
    ]);
    let f = Fixture::new();
    let rootfs = f.container("web");
    // A file a privileged rootfs holds with a host id of the first range comes back
    // only from that range (the journal keeps it); once the container runs, it is
    // the container's uid 33, as on any range move (`moving_between_ranges_in_one_pass`).
    std::fs::remove_file(rootfs.join(paths::HOST_RANGE)).unwrap();
    let original = f.snapshot("web");
    let share = ConvertOptions {
        share_ids: parse_shared("u:1000,g:1000").unwrap(),
        ..f.options("web", Target::HostId(4_000_000))
    };
    let steps: [(&str, ConvertOptions, &TestMap); 4] = [
        (
            "split",
            f.options("web", Target::Map(host_map(&SPLIT))),
            &SPLIT,
        ),
        (
            "hole",
            f.options("web", Target::Map(host_map(&HOLE))),
            &HOLE,
        ),
        (
            "one range",
            f.options("web", Target::HostId(3_000_000)),
            &AT_3M,
        ),
        ("shared", share, &SHARED_4M),
    ];
    for (what, options, map) in steps {
        let planned = plan(&options, &stopped()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let outcome = execute(planned, &stopped(), Some(2), &Quiet).unwrap();
        assert_eq!(outcome.shift.map_or(0, |s| s.summary.errors), 0, "{what}");
        let expected = expected_forward_with(&original.manifest, map);
        assert_same(&expected, &collect(&f.rootfs("web")), what);
        let lines: Vec<String> = (f.config("web").lines())
            .filter_map(|l| l.strip_prefix("lxc.idmap = "))
            .map(String::from)
            .collect();
        assert_eq!(lines, host_map(map).lxc_lines(), "{what}: config");
        let (subuid, subgid) = (f.subuid(), f.subgid());
        let shares = |kind: char| {
            map.0
                .iter()
                .any(|e| e.2 == 1000 && (e.0 == kind || e.0 == 'b'))
        };
        assert_eq!(
            subuid.contains("root:1000:1\n"),
            shares('u'),
            "{what}: {subuid}"
        );
        assert_eq!(
            subgid.contains("root:1000:1\n"),
            shares('g'),
            "{what}: {subgid}"
        );
        let notes = f.check("web").notes;
        assert!(
            !notes.iter().any(|n| n.contains("cannot be converted")),
            "{what}: {notes:?}"
        );
    }
    // The whole range of the shared map is one line, as LXC's examples write it.
    assert!(
        f.subuid().contains("root:4000000:65536\n"),
        "{}",
        f.subuid()
    );
    let back = ConvertOptions {
        release_range: true,
        ..f.options("web", Target::Privileged)
    };
    execute(
        plan(&back, &stopped()).unwrap(),
        &stopped(),
        Some(2),
        &Quiet,
    )
    .unwrap();
    let now = f.snapshot("web");
    assert_same(&original.manifest, &now.manifest, "back to privileged");
    assert_eq!(original.config, now.config);
    assert_eq!(original.perms, now.perms);
    for text in [&now.subuid, &now.subgid] {
        assert!(
            !text.contains("root:1000:1") && !text.contains("root:4000000"),
            "{text}"
        );
    }
}

/// The container's map as `--map` gives it.
fn host_map(map: &TestMap) -> HostMap {
    let pieces = map
        .args()
        .iter()
        .map(|a| MapEntry::parse(a).unwrap())
        .collect();
    HostMap::new(pieces).unwrap()
}

/// A rootfs and a bind source at paths as long as LXC takes (near PATH_MAX, 4096)
/// convert and come back exactly: every name written for them (journals, records)
/// stays within NAME_MAX.
#[test]
fn paths_as_long_as_lxc_accepts_convert_and_come_back() {
    if !require_root("paths_as_long_as_lxc_accepts_convert_and_come_back") {
        return;
    }
    let f = Fixture::new();
    let long = |root: &Path| root.join(vec!["d".repeat(200); 16].join("/"));
    let source = long(&f.root().join("srv"));
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a"), "a").unwrap();
    let host_source = source.strip_prefix(f.root()).unwrap();
    let entry = format!(
        "lxc.mount.entry = /{} srv/data none bind,create=dir 0 0\n",
        host_source.display()
    );
    let rootfs = long(&f.dir("www"));
    assert!(rootfs.as_os_str().len() > 3200, "{}", rootfs.display());
    f.config_only("www", &(debian_config("www", &rootfs) + &entry));
    // Built at a short path (a socket's path must fit in sun_path), then moved there.
    let short = f.root().join("s");
    std::fs::create_dir(&short).unwrap();
    lxc_idshift::sample::build_sample_rootfs(&short).unwrap();
    std::fs::create_dir_all(rootfs.parent().unwrap()).unwrap();
    std::fs::rename(&short, &rootfs).unwrap();
    let (before, source_before, config) = (collect(&rootfs), collect(&source), f.config("www"));
    let there = plan(
        &ConvertOptions {
            mounts: MountsChoice::Shift,
            ..f.options("www", Target::HostId(1_000_000))
        },
        &stopped(),
    )
    .unwrap();
    let outcome = execute(there, &stopped(), Some(2), &Quiet).unwrap();
    assert_eq!(outcome.shift.unwrap().summary.errors, 0);
    assert_eq!(outcome.mount_shifts[0].summary.errors, 0);
    assert_eq!(owner(&source.join("a")).0, 1_000_000);
    f.convert("www", Target::Privileged);
    assert_same(&before, &collect(&rootfs), "the rootfs after --to 0");
    assert_same(&source_before, &collect(&source), "the source after --to 0");
    assert_eq!(f.config("www"), config);
}

/// A bind source to shift with a file linked from outside it (a backup made with
/// hard links) is refused before anything is written, the rootfs included.
#[test]
fn a_bind_source_with_files_linked_from_outside_is_never_shifted() {
    if !require_root("a_bind_source_with_files_linked_from_outside_is_never_shifted") {
        return;
    }
    let f = Fixture::new();
    let data = www_with_bind_mount(&f);
    std::fs::create_dir(f.root().join("backup")).unwrap();
    std::fs::hard_link(data.join("a"), f.root().join("backup/a")).unwrap();
    let (before, files_before) = (f.snapshot("www"), collect(&f.root().join("srv")));
    let options = ConvertOptions {
        mounts: MountsChoice::Shift,
        ..f.options("www", Target::HostId(1_000_000))
    };
    let err = f.refused(&options);
    let message = err.to_string();
    assert!(
        matches!(err, ConvertError::RootfsSharesInodes { .. }),
        "{message}"
    );
    assert!(message.contains("srv/data/a"), "{message}");
    assert_unchanged(&before, &f.snapshot("www"), "refused");
    assert_same(&files_before, &collect(&f.root().join("srv")), "the source");
}

/// A source shifted with one container's rootfs and bound by another made since:
/// `check` on the other names the container that shifted it and the way back.
#[test]
fn check_says_when_another_container_shifted_a_bind_source() {
    if !require_root("check_says_when_another_container_shifted_a_bind_source") {
        return;
    }
    let f = Fixture::new();
    www_with_bind_mount(&f);
    let check_db = || f.check("db");
    convert_with(&f, Target::HostId(1_000_000), MountsChoice::Shift);
    f.container_with("db", |rootfs| debian_config("db", rootfs) + DATA_ENTRY);
    let report = check_db();
    let problem = (report.problems.iter())
        .find(|p| p.kind == lxc_idshift::lxc::check::ProblemKind::MountShiftedByOther)
        .unwrap_or_else(|| panic!("{:?}", report.problems));
    assert!(
        problem.message.contains("container www's rootfs"),
        "{}",
        problem.message
    );
    assert!(
        problem.fix.starts_with("lxc-idshift www "),
        "{}",
        problem.fix
    );
    f.convert("www", Target::Privileged);
    assert!(check_db().ok(), "{:?}", check_db().problems);
}

/// Where an idmapped mount does not work (ramfs cannot be idmapped), the default
/// keeps the entry and says why; `--mounts idmap` refuses before any write.
#[test]
fn bind_mounts_that_cannot_be_idmapped_are_kept_or_refused() {
    if !require_root("bind_mounts_that_cannot_be_idmapped_are_kept_or_refused") {
        return;
    }
    let f = Fixture::new();
    let data = www_with_bind_mount(&f);
    let mounted = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t ramfs");
    let _unmount = MountGuard(data.clone());
    std::fs::write(data.join("f"), "x").unwrap();
    std::os::unix::fs::chown(data.join("f"), Some(33), Some(33)).unwrap();
    let snapshot = f.snapshot("www");

    let planned = f.plan("www", Target::HostId(1_000_000));
    assert!(!planned.mounts[0].0.idmapped());
    let text = describe(&planned);
    assert!(
        text.contains(
            "/srv/data: kept as it is: an idmapped mount does not work here (the file system of"
        ),
        "{text}"
    );
    assert!(
        text.contains("warning: the container cannot write these files"),
        "{text}"
    );
    assert!(!text.contains(&format!("+{}", DATA_IDMAPPED)), "{text}");

    let err = f.refused(&ConvertOptions {
        mounts: MountsChoice::Idmap,
        ..f.options("www", Target::HostId(1_000_000))
    });
    let message = err.to_string();
    assert!(
        message.contains("bind mount /srv/data cannot be idmapped"),
        "{message}"
    );
    assert!(message.contains("--mounts keep"), "{message}");
    assert_unchanged(&snapshot, &f.snapshot("www"), "a refused --mounts idmap");
}

/// Idmapped mounts only where the kernel has them (5.12+). Before, as on Debian
/// 11's 5.10 (run there by tests/kernels.rs): `--method idmap` and `--mounts
/// idmap` are refused before any write, saying why and what works instead, and the
/// default keeps the bind mount with its reason and converts, there and back. On a
/// newer kernel the same commands plan idmapped mounts.
#[test]
fn idmapped_mounts_are_used_only_where_the_kernel_has_them() {
    if !require_root("idmapped_mounts_are_used_only_where_the_kernel_has_them") {
        return;
    }
    let f = Fixture::new();
    www_with_bind_mount(&f);
    let config_before = f.config("www");
    let before = f.snapshot("www");
    let convert = |to: &str, extra: &[&str]| {
        let mut args = convert_args(&f, "www", to);
        args.extend(extra.iter().map(Into::into));
        run(&args)
    };
    if kernel_has_idmapped_mounts() {
        let out = convert(
            "1000000",
            &["--method", "idmap", "--mounts", "idmap", "--dry-run"],
        );
        assert_exit(&out, 0, "--method idmap --mounts idmap --dry-run");
        assert!(text_of(&out).contains(DATA_IDMAPPED), "{}", text_of(&out));
        return;
    }
    let no_idmap = "this kernel has no idmapped mounts (Linux 5.12 and later have them)";
    let out = convert("1000000", &["--method", "idmap"]);
    assert_exit(&out, 2, "--method idmap before 5.12");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot be mounted idmapped here: {no_idmap}"))
            && stderr.contains("--to 1000000 --method shift"),
        "{stderr}"
    );
    let out = convert("1000000", &["--mounts", "idmap"]);
    assert_exit(&out, 2, "--mounts idmap before 5.12");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "bind mount /srv/data cannot be idmapped: {no_idmap}"
        )) && stderr.contains("--mounts keep"),
        "{stderr}"
    );
    assert_unchanged(&before, &f.snapshot("www"), "refused idmapped mounts");

    let out = convert("1000000", &["--dry-run"]);
    assert_exit(&out, 0, "the default's plan before 5.12");
    let kept =
        format!("/srv/data: kept as it is: an idmapped mount does not work here ({no_idmap})");
    assert!(text_of(&out).contains(&kept), "{}", text_of(&out));
    assert_exit(&convert("1000000", &[]), 0, "the default before 5.12");
    let config = f.config("www");
    assert!(
        config.contains(DATA_ENTRY) && !config.contains("idmap="),
        "{config}"
    );
    assert_exit(&convert("0", &[]), 0, "--to 0 before 5.12");
    assert_eq!(f.config("www"), config_before);
    assert_same(
        &before.manifest,
        &collect(&f.rootfs("www")),
        "--to 0 before 5.12",
    );
}

fn text_of(out: &std::process::Output) -> String {
    text(&out.stdout)
}

/// `config` with `lxc.rootfs.options = idmap=container` right after its rootfs line.
fn idmapped(config: &str, rootfs: &Path) -> String {
    let line = format!("lxc.rootfs.path = dir:{}\n", rootfs.display());
    assert_eq!(config.matches(&line).count(), 1, "{config}");
    config.replace(
        &line,
        &format!("{line}lxc.rootfs.options = idmap=container\n"),
    )
}

/// The rootfs method recorded in the state file (absent: shift).
fn recorded_method(f: &Fixture, name: &str) -> String {
    let text = std::fs::read_to_string(f.state_file(name)).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["target_method"]
        .as_str()
        .unwrap_or("shift")
        .to_string()
}

/// `--method idmap`: the rootfs stays as it is (no inode touched, no journal), the
/// config gains the maps, the userns include and `lxc.rootfs.options =
/// idmap=container`; moving ranges keeps idmap and changes only the config and
/// the subordinate ids; `--to 0` gives back every byte of the config.
#[test]
fn the_idmap_method_touches_no_inode_either_way() {
    if !require_root("the_idmap_method_touches_no_inode_either_way") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("web");
    let original = f.snapshot("web");

    let outcome = f.convert_by("web", Target::HostId(HOST_FIRST), Method::Idmap);
    assert!(outcome.shift.is_none(), "nothing shifts");
    assert_eq!(outcome.plan.after.method, Method::Idmap);
    assert_eq!(outcome.plan.idmap_probe, Some(Ok(())));
    let after = f.snapshot("web");
    assert_same(&original.manifest, &after.manifest, "rootfs, idmapped");
    let config = unprivileged(&original.config, USERNS, "lxc.idmap", HOST_FIRST);
    assert_eq!(f.config("web"), idmapped(&config, &rootfs));
    let added = format!("{SUBIDS}root:1000000:65536\n");
    assert_eq!((f.subuid(), f.subgid()), (added.clone(), added));
    assert_eq!(owner(&f.dir("web")), (0, HOST_FIRST, 0o750));
    assert!(
        !after.files.iter().any(|n| n.ends_with(".journal")),
        "no journal: {:?}",
        after.files
    );
    assert_eq!(recorded_method(&f, "web"), "idmap");

    // Another range, no --method: still idmap, still no inode touched.
    let outcome = f.convert("web", Target::HostId(2_000_000));
    assert!(outcome.shift.is_none());
    assert_eq!(outcome.plan.after.method, Method::Idmap);
    assert_same(&original.manifest, &collect(&rootfs), "rootfs, moved");
    let config = unprivileged(&original.config, USERNS, "lxc.idmap", 2_000_000);
    assert_eq!(f.config("web"), idmapped(&config, &rootfs));
    assert_eq!(owner(&f.dir("web")), (0, 2_000_000, 0o750));

    // --method with --to 0, and --mounts shift with idmap, are refused.
    let moved = f.snapshot("web");
    let options = ConvertOptions {
        method: Some(Method::Idmap),
        ..f.options("web", Target::Privileged)
    };
    assert!(matches!(
        f.refused(&options),
        ConvertError::MethodWithoutTarget
    ));
    let options = ConvertOptions {
        mounts: MountsChoice::Shift,
        ..f.options("web", Target::HostId(2_000_000))
    };
    let message = f.refused(&options).to_string();
    assert!(message.contains("--mounts idmap"), "{message}");
    assert_unchanged(&moved, &f.snapshot("web"), "refusals");

    let outcome = f.convert("web", Target::Privileged);
    assert!(outcome.shift.is_none());
    let back = f.snapshot("web");
    assert_same(&original.manifest, &back.manifest, "rootfs, privileged");
    assert_eq!(back.config, original.config);
    assert_eq!(back.perms, original.perms);
    assert!(!f.state_file("web").exists());
}

/// Switching method shifts the rootfs between container ids (idmap) and host ids
/// (shift) with the engine, exactly: shift -> idmap at the same range gives back
/// the original rootfs, idmap -> shift at another range the reference shift.
#[test]
fn switching_methods_shifts_the_rootfs_exactly() {
    if !require_root("switching_methods_shifts_the_rootfs_exactly") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("web");
    let original = f.snapshot("web");
    let (_tmp1, at_first) = reference(&[MAP]);
    let (_tmp2, at_second) = reference(&["b:0:2000000:65536"]);
    f.convert("web", Target::HostId(HOST_FIRST));
    assert_same(&at_first, &collect(&rootfs), "shifted");

    let outcome = f.convert_by("web", Target::HostId(HOST_FIRST), Method::Idmap);
    let (map, direction) = outcome.plan.shift.clone().expect("shifted back");
    assert_eq!(
        (map.to_string(), direction),
        ("b:0:1000000:65536".to_string(), Direction::Reverse)
    );
    assert_same(&original.manifest, &collect(&rootfs), "shift -> idmap");
    let config = unprivileged(&original.config, USERNS, "lxc.idmap", HOST_FIRST);
    assert_eq!(f.config("web"), idmapped(&config, &rootfs));

    let outcome = f.convert_by("web", Target::HostId(2_000_000), Method::Shift);
    let (map, direction) = outcome.plan.shift.clone().expect("shifted");
    assert_eq!(
        (map.to_string(), direction),
        ("b:0:2000000:65536".to_string(), Direction::Forward)
    );
    assert_same(&at_second, &collect(&rootfs), "idmap -> shift");
    let config = unprivileged(&original.config, USERNS, "lxc.idmap", 2_000_000);
    assert_eq!(f.config("web"), config);
    assert_eq!(recorded_method(&f, "web"), "shift");

    f.convert_by("web", Target::HostId(2_000_000), Method::Idmap);
    assert_same(
        &original.manifest,
        &collect(&rootfs),
        "shift -> idmap again",
    );
    f.convert("web", Target::Privileged);
    let back = f.snapshot("web");
    assert_same(&original.manifest, &back.manifest, "privileged");
    assert_eq!(back.config, original.config);
    assert_eq!(back.perms, original.perms);
}

/// SIGKILL method switches (shift -> idmap and idmap -> shift, the rootfs shifted
/// each time) at spread-out moments: the same command finishes exactly, and the
/// command back to the other method undoes exactly.
#[test]
fn killed_method_switches_finish_or_undo_exactly() {
    if !require_root("killed_method_switches_finish_or_undo_exactly") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("big");
    std::fs::create_dir(rootfs.join("srv")).unwrap();
    lxc_idshift::sample::build_bulk_tree(&rootfs.join("srv"), 10_000).unwrap();
    let original = collect(&rootfs);
    let methods = ["shift", "idmap"];
    let args = |method: &str| {
        let mut args = convert_args(&f, "big", "1000000");
        args.extend(["--method".into(), method.into()]);
        args
    };
    assert_exit(&run(&args("shift")), 0, "shift");
    let shifted = outcome_of(&f, "big");
    let started = std::time::Instant::now();
    assert_exit(&run(&args("idmap")), 0, "shift -> idmap");
    let run_time = started.elapsed();
    let idmapped = outcome_of(&f, "big");
    assert_same(&original, &idmapped.manifest, "idmapped rootfs");
    let ends = [shifted, idmapped];
    let (mut at, mut killed, mut i, mut max_delay) = (1, 0, 0u64, run_time);
    while killed < 12 {
        assert!(i < 60, "only {killed} of {i} switches were killed mid-way");
        let towards = 1 - at;
        let delay = max_delay.mul_f64(((i * 37) % 101) as f64 / 100.0);
        if kill_after(&args(methods[towards]), delay) {
            killed += 1;
        } else {
            max_delay = max_delay.mul_f64(0.8);
        }
        // Mostly finished, every third undone.
        let end = if i % 3 == 2 { at } else { towards };
        let what = format!(
            "iteration {i}: {} -> {} killed at {delay:?}, then --method {}",
            methods[at], methods[towards], methods[end]
        );
        assert_exit(&run(&args(methods[end])), 0, &what);
        assert_unchanged(&ends[end], &outcome_of(&f, "big"), &what);
        at = end;
        i += 1;
    }
}

/// Where an idmapped mount of the rootfs cannot work (ramfs cannot be idmapped),
/// `--method idmap` is refused before any write, naming `--method shift`; the
/// `--dry-run` plan says which methods work and what each would do.
#[test]
fn an_idmapped_rootfs_that_cannot_work_is_refused_and_the_plan_says_why() {
    if !require_root("an_idmapped_rootfs_that_cannot_work_is_refused_and_the_plan_says_why") {
        return;
    }
    let f = Fixture::new();
    let rootfs = f.container("web");
    let mut options = f.options("web", Target::HostId(HOST_FIRST));
    options.dry_run = true;
    let text = describe(&plan(&options, &stopped()).unwrap());
    for wanted in [
        "rootfs methods on this host (--method):\n",
        "  * shift: works on any kernel; would shift every inode of the rootfs forward with b:0:1000000:65536 (journaled)\n",
        "    idmap: works here; would leave every inode of the rootfs as it is, with idmap=container in lxc.rootfs.options\n",
    ] {
        assert!(text.contains(wanted), "missing {wanted:?} in:\n{text}");
    }

    let mounted = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t ramfs");
    let _unmount = MountGuard(rootfs.clone());
    // ramfs has no xattrs: a plain tree.
    std::fs::create_dir(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
    let before = f.snapshot("web");
    let options = ConvertOptions {
        method: Some(Method::Idmap),
        ..f.options("web", Target::HostId(HOST_FIRST))
    };
    let message = f.refused(&options).to_string();
    assert!(
        message.contains("cannot be mounted idmapped here")
            && message.contains("--to 1000000 --method shift"),
        "{message}"
    );
    assert_unchanged(&before, &f.snapshot("web"), "a refused --method idmap");
    let mut options = f.options("web", Target::HostId(HOST_FIRST));
    options.dry_run = true;
    let planned = plan(&options, &stopped()).unwrap();
    assert!(matches!(&planned.idmap_probe, Some(Err(why)) if why.contains("cannot be idmapped")));
    let text = describe(&planned);
    assert!(
        text.contains("    idmap: does not work here: the file system of"),
        "{text}"
    );
}

/// `--dry-run --json` of the CLI carries the method and the probe's answer.
#[test]
fn the_json_plan_names_the_method_and_whether_idmap_works() {
    if !require_root("the_json_plan_names_the_method_and_whether_idmap_works") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    let mut args = convert_args(&f, "web", "1000000");
    args.extend([
        "--method".into(),
        "idmap".into(),
        "--dry-run".into(),
        "--json".into(),
    ]);
    let out = run(&args);
    assert_exit(&out, 0, "--method idmap --dry-run --json");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["method"], "idmap", "{report:#}");
    assert_eq!(report["idmap_works"], true, "{report:#}");
    assert_eq!(report["map"], serde_json::Value::Null, "nothing shifts");
    // Seen through the idmapped mount, ids beyond 0..65535 show as nobody, ids of
    // the host range included.
    let uids = &report["unmapped"]["uids"];
    assert_eq!(
        (&uids["70000"], &uids["1000033"]),
        (&1.into(), &1.into()),
        "{report:#}"
    );
    let diff = report["edits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["diff"].as_str().unwrap())
        .collect::<String>();
    assert!(
        diff.contains("+lxc.rootfs.options = idmap=container\n"),
        "{diff}"
    );
    let mut args = convert_args(&f, "web", "0");
    args.extend(["--method".into(), "shift".into(), "--dry-run".into()]);
    let out = run(&args);
    assert_exit(&out, 2, "--to 0 --method shift");
    assert!(
        text(&out.stderr).contains("leave it out with --to 0"),
        "{}",
        text(&out.stderr)
    );
}

/// An interrupted method switch (shift -> idmap at the same range) is finished by
/// `--to` alone or with its `--method`, undone with the other method, and blocks any
/// other target, naming both commands.
#[test]
fn an_interrupted_method_switch_is_finished_or_undone_by_its_method() {
    if !require_root("an_interrupted_method_switch_is_finished_or_undone_by_its_method") {
        return;
    }
    let f = Fixture::new();
    f.container("web");
    f.convert("web", Target::HostId(HOST_FIRST));
    let state = r#"{"origin": 1000000, "target": 1000000, "range": 65536, "perms": [],
                    "target_method": "idmap"}"#;
    std::fs::write(f.state_file("web"), state).unwrap();
    let with = |method: Option<Method>| ConvertOptions {
        method,
        ..f.options("web", Target::HostId(HOST_FIRST))
    };
    let map_of = |planned: Plan| {
        let (map, direction) = planned.shift.expect("a shift");
        (map.to_string(), direction, planned.after.method)
    };
    let finish = (
        "b:0:1000000:65536".to_string(),
        Direction::Reverse,
        Method::Idmap,
    );
    assert_eq!(map_of(plan(&with(None), &stopped()).unwrap()), finish);
    assert_eq!(
        map_of(plan(&with(Some(Method::Idmap)), &stopped()).unwrap()),
        finish
    );
    let undo = (
        "b:0:1000000:65536".to_string(),
        Direction::Forward,
        Method::Shift,
    );
    assert_eq!(
        map_of(plan(&with(Some(Method::Shift)), &stopped()).unwrap()),
        undo
    );
    let message = f
        .refused(&f.options("web", Target::HostId(2_000_000)))
        .to_string();
    assert!(
        message.contains("finish it (--to 1000000 --method idmap) or undo it (--to 1000000)"),
        "{message}"
    );
}

/// Bind mounts in the container's own included config and fstab file (in its
/// directory) gain `idmap=container` there and lose it with `--to 0`, each file byte
/// for byte as it was; one in an include outside the directory (maybe shared with
/// other containers) is left alone, and the plan says where to add it.
#[test]
fn bind_mounts_in_own_includes_and_fstab_are_idmapped_and_back() {
    if !require_root("bind_mounts_in_own_includes_and_fstab_are_idmapped_and_back") {
        return;
    }
    let f = Fixture::new();
    for name in ["inc", "tab", "shared"] {
        let data = f.root().join("srv").join(name);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("f"), name).unwrap();
        std::os::unix::fs::chown(data.join("f"), Some(33), Some(33)).unwrap();
    }
    let dir = f.dir("www");
    let shared = f.root().join("shared.conf");
    // As the host sees them: the fixture's root is the host's /.
    let includes =
        "lxc.include = /lxc/www/extra.conf\nlxc.include = /shared.conf\nlxc.mount.fstab = fstab\n";
    f.container_with("www", |rootfs| debian_config("www", rootfs) + includes);
    let extra = "# mine\nlxc.mount.entry = /srv/inc srv/inc none bind,create=dir 0 0\n";
    let fstab = "# fstab\r\n/srv/tab\tsrv/tab none bind,create=dir 0 0\r\n";
    let shared_text = "lxc.mount.entry = /srv/shared srv/shared none bind 0 0\n";
    std::fs::write(dir.join("extra.conf"), extra).unwrap();
    std::fs::write(dir.join("fstab"), fstab).unwrap();
    std::fs::write(&shared, shared_text).unwrap();
    let config = f.config("www");

    let planned = convert_with(&f, Target::HostId(HOST_FIRST), MountsChoice::Auto);
    let notes = planned.mount_notes.join("\n");
    assert!(
        notes.contains("/srv/shared: kept as it is")
            && notes.contains("outside the container's directory"),
        "{notes}"
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(
        read("extra.conf"),
        extra.replace("create=dir 0", "create=dir,idmap=container 0")
    );
    assert_eq!(
        read("fstab"),
        fstab.replace("create=dir 0", "create=dir,idmap=container 0")
    );
    assert_eq!(std::fs::read_to_string(&shared).unwrap(), shared_text);
    assert!(!f.config("www").contains("idmap=container"));

    f.convert("www", Target::Privileged);
    assert_eq!(read("extra.conf"), extra);
    assert_eq!(read("fstab"), fstab);
    assert_eq!(std::fs::read_to_string(&shared).unwrap(), shared_text);
    assert_eq!(f.config("www"), config);
}
