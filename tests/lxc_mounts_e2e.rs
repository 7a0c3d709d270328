//! End to end with real LXC: a Debian container with a bind mount holding files of
//! several owners (root, www-data, a user), converted with `--mounts idmap`, `keep`
//! and `shift`, started, written into as root and as www-data, checked from the
//! host and with `lxc-idshift check`, converted back and started again; the mount's
//! full metadata ends as it began. Touches /etc/subuid and /etc/subgid (restored)
//! and creates and destroys its own container.

mod common;

use common::lxc::{attach_as, attach_ok, create_debian, ok, start_and_wait};
use common::{assert_exit, assert_same, collect, owner, require_root, run, text};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const NAME: &str = "idshift-mounts";

/// Runs a shell command inside as `user`; returns the output.
fn inside_as(user: &str, script: &str) -> Output {
    attach_as(NAME, user, script)
}

fn inside_ok(user: &str, script: &str) -> String {
    attach_ok(NAME, user, script)
}

/// The bind mount source: files of root, www-data (33) and user 1000, a setgid
/// directory of www-data, modes that let each owner write only its own.
fn data_dir(base: &Path) -> PathBuf {
    let data = base.join("data");
    std::fs::create_dir(&data).unwrap();
    let items: [(&str, u32, u32); 4] = [
        ("root-file", 0, 0o644),
        ("www-file", 33, 0o644),
        ("user-file", 1000, 0o600),
        ("www", 33, 0o2775),
    ];
    for (name, id, mode) in items {
        let path = data.join(name);
        match name {
            "www" => std::fs::create_dir(&path).unwrap(),
            _ => std::fs::write(&path, format!("{name}\n")).unwrap(),
        }
        std::os::unix::fs::chown(&path, Some(id), Some(id)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    data
}

/// Rewrites `file` with its own content (size kept) as `user`: a write that leaves
/// the manifest as it was.
fn rewrite(file: &str) -> String {
    format!("c=$(cat {file}) && printf '%s\\n' \"$c\" > {file}")
}

fn check_json() -> (i32, serde_json::Value) {
    let out = run(&["check", NAME, "--json"]);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json ({e}): {}", text(&out.stdout)));
    (out.status.code().unwrap_or(-1), report)
}

#[test]
fn bind_mounts_idmapped_kept_and_shifted_in_a_real_container() {
    if !require_root("bind_mounts_idmapped_kept_and_shifted_in_a_real_container") {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_guard) = create_debian(
        "bind_mounts_idmapped_kept_and_shifted_in_a_real_container",
        NAME,
    ) else {
        return;
    };
    let dir = Path::new("/var/lib/lxc").join(NAME);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = data_dir(tmp.path());
    let original = collect(&data);
    // No network (CI has no bridge), and the bind mount.
    let config_path = dir.join("config");
    let config: String = std::fs::read_to_string(&config_path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("lxc.net.0."))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = format!(
        "{config}lxc.net.0.type = empty\nlxc.mount.entry = {} srv/data none bind,create=dir 0 0\n",
        data.display()
    );
    std::fs::write(&config_path, &config).unwrap();
    let original_config = std::fs::read_to_string(&config_path).unwrap();

    // --mounts idmap: the container sees each owner as itself and writes as it.
    let out = run(&[NAME, "--to", "1000000", "--mounts", "idmap"]);
    assert_exit(&out, 0, "--to 1000000 --mounts idmap");
    assert!(
        std::fs::read_to_string(&config_path)
            .unwrap()
            .contains("srv/data none bind,create=dir,idmap=container 0 0"),
        "the entry is idmapped"
    );
    start_and_wait(NAME);
    let seen = inside_ok("root", "stat -c '%n %u:%g' /srv/data/*");
    for line in [
        "/srv/data/root-file 0:0",
        "/srv/data/www-file 33:33",
        "/srv/data/user-file 1000:1000",
        "/srv/data/www 33:33",
    ] {
        assert!(seen.contains(line), "{line} in {seen}");
    }
    inside_ok("root", &rewrite("/srv/data/root-file"));
    inside_ok("www-data", &rewrite("/srv/data/www-file"));
    inside_ok("root", "echo new > /srv/data/new-root");
    inside_ok("www-data", "echo new > /srv/data/www/new-www");
    // www-data may not write root's file, as on the host.
    assert!(!inside_as("www-data", "echo x >> /srv/data/root-file")
        .status
        .success());
    assert_eq!(
        owner(&data.join("new-root")).0,
        0,
        "root's file is host uid 0"
    );
    let (uid, gid, _) = owner(&data.join("www/new-www"));
    assert_eq!((uid, gid), (33, 33), "www-data's file is host 33:33");
    let (code, report) = check_json();
    assert_eq!(code, 0, "check of the idmapped container: {report:#}");
    assert_eq!(report["mounts"][0]["idmapped"], true);
    ok("lxc-stop", &["-n", NAME]);
    std::fs::remove_file(data.join("new-root")).unwrap();
    std::fs::remove_file(data.join("www/new-www")).unwrap();

    let out = run(&[NAME, "--to", "0"]);
    assert_exit(&out, 0, "--to 0 after idmap");
    assert_eq!(
        std::fs::read_to_string(&config_path).unwrap(),
        original_config
    );
    start_and_wait(NAME);
    inside_ok("root", &rewrite("/srv/data/root-file"));
    ok("lxc-stop", &["-n", NAME]);
    assert_same(&original, &collect(&data), "the mount after idmap and back");

    // --mounts keep: the plan warns; inside, the files are nobody's and read-only.
    let out = run(&[NAME, "--to", "1000000", "--mounts", "keep"]);
    assert_exit(&out, 0, "--to 1000000 --mounts keep");
    let said = text(&out.stdout);
    assert!(
        said.contains("warning: the container cannot write these files"),
        "{said}"
    );
    assert!(!std::fs::read_to_string(&config_path)
        .unwrap()
        .contains("idmap=container"));
    start_and_wait(NAME);
    let seen = inside_ok(
        "root",
        "stat -c '%n %u:%g' /srv/data/root-file /srv/data/www-file",
    );
    assert!(seen.contains("/srv/data/root-file 65534:65534"), "{seen}");
    assert!(seen.contains("/srv/data/www-file 65534:65534"), "{seen}");
    let denied = inside_as("root", "echo x >> /srv/data/root-file");
    assert!(!denied.status.success(), "root wrote a nobody's file");
    assert!(
        text(&denied.stderr).contains("Permission denied"),
        "{}",
        text(&denied.stderr)
    );
    assert!(!inside_as("www-data", "echo x >> /srv/data/www-file")
        .status
        .success());
    let (code, report) = check_json();
    assert_eq!(code, 1, "check of the kept mount: {report:#}");
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["mount_shows_nobody"], "{report:#}");
    ok("lxc-stop", &["-n", NAME]);

    let out = run(&[NAME, "--to", "0"]);
    assert_exit(&out, 0, "--to 0 after keep");
    assert_eq!(
        std::fs::read_to_string(&config_path).unwrap(),
        original_config
    );
    start_and_wait(NAME);
    inside_ok("root", &rewrite("/srv/data/root-file"));
    ok("lxc-stop", &["-n", NAME]);
    assert_same(&original, &collect(&data), "the mount after keep and back");

    // --mounts shift: the directory is shifted with the rootfs and back.
    let out = run(&[NAME, "--to", "1000000", "--mounts", "shift"]);
    assert_exit(&out, 0, "--to 1000000 --mounts shift");
    assert_eq!(owner(&data.join("root-file")).0, 1_000_000);
    assert_eq!(owner(&data.join("www-file")).0, 1_000_033);
    assert_eq!(owner(&data.join("user-file")).0, 1_001_000);
    assert_eq!(owner(&data.join("www")), (1_000_033, 1_000_033, 0o2775));
    start_and_wait(NAME);
    let seen = inside_ok("root", "stat -c '%n %u:%g' /srv/data/*");
    assert!(seen.contains("/srv/data/www-file 33:33"), "{seen}");
    assert!(seen.contains("/srv/data/user-file 1000:1000"), "{seen}");
    inside_ok("root", &rewrite("/srv/data/root-file"));
    inside_ok("www-data", &rewrite("/srv/data/www-file"));
    inside_ok("root", "echo new > /srv/data/new-root");
    inside_ok("www-data", "echo new > /srv/data/www/new-www");
    assert_eq!(owner(&data.join("new-root")).0, 1_000_000);
    let (uid, gid, _) = owner(&data.join("www/new-www"));
    assert_eq!((uid, gid), (1_000_033, 1_000_033));
    let (code, report) = check_json();
    assert_eq!(code, 0, "check of the shifted mount: {report:#}");
    ok("lxc-stop", &["-n", NAME]);
    std::fs::remove_file(data.join("new-root")).unwrap();
    std::fs::remove_file(data.join("www/new-www")).unwrap();

    let out = run(&[NAME, "--to", "0"]);
    assert_exit(&out, 0, "--to 0 after shift");
    assert_eq!(
        std::fs::read_to_string(&config_path).unwrap(),
        original_config
    );
    start_and_wait(NAME);
    inside_ok("root", &rewrite("/srv/data/root-file"));
    ok("lxc-stop", &["-n", NAME]);
    assert_same(&original, &collect(&data), "the mount after shift and back");
}

const SHARING: &str = "idshift-share";

/// The two tests convert containers and restore the subid files each: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `--share-ids u:1000,g:1000`: a host user's directory bind-mounted where no
/// idmapped mount is used (`--mounts keep`, as on NFS, CIFS or an older kernel).
/// Container user 1000 and host user 1000 read and write the same files, each
/// seeing the other's writes with the same owner; root holds `root:1000:1` only
/// while the ids are shared, and `--to 0` gives the config and subid files back.
#[test]
fn a_host_user_shared_with_share_ids_reads_and_writes_the_same_files() {
    let test = "a_host_user_shared_with_share_ids_reads_and_writes_the_same_files";
    if !require_root(test) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_guard) = create_debian(test, SHARING) else {
        return;
    };
    let dir = Path::new("/var/lib/lxc").join(SHARING);
    let rootfs = dir.join("rootfs");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = tmp.path().join("alice");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("notes"), "from the host\n").unwrap();
    for path in [&shared, &shared.join("notes")] {
        std::os::unix::fs::chown(path, Some(1000), Some(1000)).unwrap();
    }
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config_path = dir.join("config");
    let config: String = std::fs::read_to_string(&config_path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("lxc.net.0."))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config_path, format!("{config}lxc.net.0.type = empty\n")).unwrap();
    // Alice, uid and gid 1000, inside the privileged container (before her home
    // holds a mount point, so that useradd makes it hers).
    start_and_wait(SHARING);
    attach_ok(SHARING, "root", "useradd -m -u 1000 -U -s /bin/sh alice");
    ok("lxc-stop", &["-n", SHARING]);
    let config = format!(
        "{config}lxc.net.0.type = empty\nlxc.mount.entry = {} home/alice/shared none bind,create=dir 0 0\n",
        shared.display()
    );
    std::fs::write(&config_path, &config).unwrap();
    let subids =
        || ["/etc/subuid", "/etc/subgid"].map(|p| std::fs::read_to_string(p).unwrap_or_default());
    let subids_before = subids();

    let to = [
        SHARING,
        "--to",
        "2000000",
        "--share-ids",
        "u:1000,g:1000",
        "--mounts",
        "keep",
    ];
    let out = run(&to);
    assert_exit(&out, 0, "--to 2000000 --share-ids u:1000,g:1000");
    let said = text(&out.stdout);
    assert!(said.contains("full power over"), "the plan warns: {said}");
    let converted = std::fs::read_to_string(&config_path).unwrap();
    for line in [
        "u 0 2000000 1000",
        "u 1000 1000 1",
        "u 1001 2001001 64535",
        "g 1000 1000 1",
    ] {
        assert!(
            converted.contains(&format!("lxc.idmap = {line}\n")),
            "{line}: {converted}"
        );
    }
    for text in subids() {
        assert!(
            text.contains("root:1000:1\n") && text.contains("root:2000000:65536\n"),
            "{text}"
        );
    }
    assert_eq!(
        owner(&rootfs.join("home/alice")).0,
        1000,
        "alice's home is host uid 1000"
    );
    assert_eq!(
        owner(&rootfs.join("root")).0,
        2_000_000,
        "root's home moved"
    );

    start_and_wait(SHARING);
    let seen = attach_ok(
        SHARING,
        "alice",
        "stat -c '%u:%g' /home/alice/shared/notes && cat /home/alice/shared/notes",
    );
    assert!(seen.starts_with("1000:1000\nfrom the host\n"), "{seen}");
    attach_ok(
        SHARING,
        "alice",
        "echo from the container >> /home/alice/shared/notes && echo new > /home/alice/shared/new",
    );
    assert_eq!(
        owner(&shared.join("new")),
        (1000, 1000, 0o644),
        "alice's new file is host 1000's"
    );
    let host = ok(
        "setpriv",
        &[
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            "sh",
            "-c",
            &format!(
                "echo from the host again >> {0}/new && cat {0}/notes",
                shared.display()
            ),
        ],
    );
    assert_eq!(host, "from the host\nfrom the container\n");
    let inside = attach_ok(SHARING, "alice", "cat /home/alice/shared/new");
    assert_eq!(inside, "new\nfrom the host again\n");
    // What the plan warns of: root inside holds every capability over the ids its
    // namespace maps, so alice's 0700 directory is open to it.
    let root_reads = attach_ok(SHARING, "root", "cat /home/alice/shared/notes");
    assert_eq!(root_reads, "from the host\nfrom the container\n");
    ok("lxc-stop", &["-n", SHARING]);

    assert_exit(
        &run(&[SHARING, "--to", "0", "--release-range"]),
        0,
        "--to 0",
    );
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), config);
    assert_eq!(subids(), subids_before, "root's lines are gone");
    assert_eq!(owner(&rootfs.join("home/alice")).0, 1000);
    assert_eq!(owner(&rootfs.join("root")).0, 0);
    start_and_wait(SHARING);
    let seen = attach_ok(SHARING, "alice", "cat /home/alice/shared/new");
    assert_eq!(seen, "new\nfrom the host again\n");
    ok("lxc-stop", &["-n", SHARING]);
}
