//! `lxc-idshift list`: every container under an lxcpath, in the manner of `lxc-ls -f`,
//! with what a conversion needs to know: privileged or not, the id range, the rootfs
//! method (shift or idmap), its backing store, and whether a conversion was left unfinished.

use super::config::{guard, Backend, ContainerConfig};
use super::container::{default_lxcpath, Container};
use super::convert;
use super::effects::RealHost;
use super::host::Host;
use super::hostmap::HostMap;
use super::manager::OtherManager;
use super::method::{Layout, Method};
use super::pve;
use super::pve::conf::PveConf;
use crate::engine::idmap::MapEntry;
use crate::engine::journal;
use crate::fsutil::FileError;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{0}; name the right lxcpath with -P DIR (`lxc-config lxc.lxcpath` says where LXC keeps them)")]
    Lxcpath(#[source] FileError),
}

/// The host id of container root and how many ids follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RootRange {
    pub host_first: u32,
    pub count: u32,
}

/// A conversion that was started and neither finished nor undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unfinished {
    /// Host id of container root before it (None: privileged).
    pub from: Option<u32>,
    /// Host id of container root it heads for (None: privileged).
    pub to: Option<u32>,
    /// The journal of an unfinished rootfs shift, if one is.
    pub journal: Option<PathBuf>,
    /// The command that finishes it.
    pub next: String,
}

/// One container, as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub name: String,
    /// As `lxc-info -s` says: RUNNING, STOPPED, FROZEN...; UNKNOWN without lxc-info.
    pub state: String,
    /// None when the config cannot be read or understood (`problem` says why).
    pub unprivileged: Option<bool>,
    /// The range its config maps container root to (None: privileged).
    pub range: Option<RootRange>,
    /// The whole map as lxc.idmap values, when it is not one range for users and
    /// groups alike (split ranges, holes, shared ids).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<Vec<String>>,
    /// How an unprivileged container's rootfs fits its range: `shift` (its ids
    /// shifted on disk) or `idmap` (an idmapped mount of an unshifted rootfs);
    /// None for a privileged one.
    pub method: Option<String>,
    /// The rootfs backing store: dir, btrfs, zfs (converted in place), overlay, lvm,
    /// loop... (refused by `convert`, with the way out).
    pub store: Option<String>,
    pub unfinished: Option<Unfinished>,
    /// Whether its config holds the start guard of an unfinished conversion, which
    /// makes every start through LXC refuse.
    pub start_guard: bool,
    /// The manager that regenerates its config (Proxmox VE), which lxc-idshift
    /// does not convert yet, and what to do instead.
    pub managed_by: Option<String>,
    /// What is wrong, and the command to run next.
    pub problem: Option<String>,
}

/// The names of the containers under `lxcpath` (those with a `config`), sorted.
pub fn names(lxcpath: &Path) -> Result<Vec<String>, ListError> {
    let entries = std::fs::read_dir(lxcpath).map_err(|source| {
        ListError::Lxcpath(FileError::new("list the containers under", lxcpath, source))
    })?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.') && lxcpath.join(name).join("config").is_file())
        .collect();
    names.sort();
    Ok(names)
}

/// Every container under `lxcpath` (default: `lxc-config lxc.lxcpath`). The commands
/// that entries name carry `-P` when an lxcpath was given.
pub fn list(lxcpath: Option<&Path>, host: &Host) -> Result<(PathBuf, Vec<Entry>), ListError> {
    let path = lxcpath
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_lxcpath(&RealHost));
    // Proxmox containers are found by their `.conf`, even those never started
    // (which have no LXC config yet).
    let mut all = names(&path)?;
    let unstarted: Vec<String> = (pve::host::vmids(host).into_iter())
        .filter(|vmid| !all.contains(vmid))
        .collect();
    all.extend(unstarted);
    let entries = all
        .into_iter()
        .map(|name| {
            let container = Container {
                name,
                lxcpath: path.clone(),
            };
            entry(&container, lxcpath.is_some(), host)
        })
        .collect();
    Ok((path, entries))
}

fn entry(container: &Container, explicit_lxcpath: bool, host: &Host) -> Entry {
    let command = |rest: &str| {
        let lxcpath = match explicit_lxcpath {
            true => format!(" -P {}", container.lxcpath.display()),
            false => String::new(),
        };
        format!("lxc-idshift -n {}{lxcpath} {rest}", container.name)
    };
    let manager = OtherManager::of(container, host);
    let mut entry = Entry {
        name: container.name.clone(),
        state: match &manager {
            Some(_) => pve::host::state(container, &RealHost).unwrap_or_else(|| "UNKNOWN".into()),
            None => state(container),
        },
        unprivileged: None,
        range: None,
        map: None,
        method: None,
        store: None,
        unfinished: None,
        start_guard: false,
        managed_by: manager.as_ref().map(|m| m.said(container)),
        problem: None,
    };
    let standing = match &manager {
        Some(manager) => proxmox_standing(&manager.conf),
        None => lxc_standing(container),
    };
    let Standing {
        maps,
        idmapped,
        store,
        start_guard,
    } = match standing {
        Ok(standing) => standing,
        Err(Unreadable::File(why)) => {
            entry.problem = Some(format!("{why}; run lxc-idshift list as root"));
            return entry;
        }
        Err(Unreadable::Map(why)) => {
            entry.problem = Some(format!(
                "{why}; fix the line, then run {}",
                command("--to 0 --dry-run")
            ));
            return entry;
        }
    };
    entry.store = store;
    entry.start_guard = start_guard;
    let root = maps.iter().find(|m| m.users && m.container_first == 0);
    entry.unprivileged = Some(!maps.is_empty());
    let method = match idmapped {
        true => Method::Idmap,
        false => Method::Shift,
    };
    entry.method = (!maps.is_empty()).then(|| method.to_string());
    entry.range = root.map(|m| RootRange {
        host_first: m.host_first,
        count: m.count,
    });
    let current = entry.range.map(|r| r.host_first);
    let map = HostMap::new(maps).ok();
    entry.map = (map.as_ref())
        .filter(|m| m.one_range().is_none())
        .map(HostMap::lxc_lines);
    let now = Layout::new(map, method);
    match convert::read_state(container) {
        Ok(Some(state)) if state.interrupted_at(&now) => {
            entry.unfinished = Some(Unfinished {
                from: state.origin,
                to: state.target,
                journal: unfinished_journal(container),
                next: format!(
                    "{} to finish it, or {} to undo it",
                    command(&state.target_layout().args()),
                    state.origin_layout().args()
                ),
            });
        }
        Ok(_) => {
            if let Some(journal) = unfinished_journal(container) {
                entry.unfinished = Some(Unfinished {
                    from: current,
                    to: current,
                    next: format!("{} to finish it", command(&now.args())),
                    journal: Some(journal),
                });
            }
        }
        Err(e) => {
            entry.problem = Some(format!(
                "{e}; remove or repair it, then run {}",
                command("--to 0 --dry-run")
            ))
        }
    }
    if entry.start_guard {
        let why = "it cannot start until then (lxc-idshift's start guard in its config)";
        match &mut entry.unfinished {
            Some(unfinished) => unfinished.next = format!("{}; {why}", unfinished.next),
            None => {
                entry.problem = Some(format!(
                    "its config holds lxc-idshift's start guard, so it cannot start, but no \
                     conversion of it is unfinished: run {} to take the guard away",
                    command(&now.args())
                ))
            }
        }
    }
    entry
}

/// Where a container stands, as its config says.
struct Standing {
    maps: Vec<MapEntry>,
    /// Whether its rootfs is mounted idmapped (`lxc.rootfs.options`).
    idmapped: bool,
    store: Option<String>,
    start_guard: bool,
}

enum Unreadable {
    File(String),
    Map(String),
}

/// From its LXC config.
fn lxc_standing(container: &Container) -> Result<Standing, Unreadable> {
    let path = container.config();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Unreadable::File(format!("{}: {e}", path.display())))?;
    let config = ContainerConfig::parse(&guard::unguarded(&text));
    Ok(Standing {
        maps: config
            .idmaps()
            .map_err(|e| Unreadable::Map(e.to_string()))?,
        idmapped: config.rootfs_idmapped(),
        store: config.rootfs().map(|r| backend_name(&r.backend)),
        start_guard: guard::is_guarded(&text),
    })
}

/// From its Proxmox `.conf`, not from the LXC config of its last start: Proxmox
/// writes that anew at every start, and a container never started has none.
fn proxmox_standing(conf: &Path) -> Result<Standing, Unreadable> {
    let text = std::fs::read_to_string(conf)
        .map_err(|e| Unreadable::File(format!("{}: {e}", conf.display())))?;
    let conf = PveConf::parse(&text);
    let map = conf.map().map_err(|e| Unreadable::Map(e.to_string()))?;
    let storage = (conf.value("rootfs").unwrap_or_default().split(',').next())
        .and_then(|volume| volume.split_once(':'))
        .map(|(storage, _)| storage.to_string());
    Ok(Standing {
        maps: map.map_or(Vec::new(), |m| m.entries().to_vec()),
        idmapped: false,
        store: storage,
        start_guard: false,
    })
}

/// The journal of an unfinished rootfs shift in the container's directory.
fn unfinished_journal(container: &Container) -> Option<PathBuf> {
    let mut journals: Vec<PathBuf> = std::fs::read_dir(container.dir())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("lxc-idshift.") && n.ends_with(".journal"))
        })
        .collect();
    journals.sort();
    journals
        .into_iter()
        .find(|path| journal::State::read(path).map_or(true, |state| !state.last_run_finished()))
}

fn backend_name(backend: &Backend) -> String {
    match backend {
        Backend::Other(name) => name.clone(),
        known => format!("{known:?}").to_lowercase(),
    }
}

/// `lxc-info -s`: RUNNING, STOPPED...; UNKNOWN when lxc-info cannot tell.
fn state(container: &Container) -> String {
    Command::new("lxc-info")
        .arg("-P")
        .arg(&container.lxcpath)
        .args(["-n", &container.name, "-s", "-H"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|state| !state.is_empty())
        .unwrap_or_else(|| "UNKNOWN".into())
}

/// The table, in the columns and style of `lxc-ls -f`: upper-case headings, columns
/// padded to their widest cell, `-` for nothing.
pub fn table(entries: &[Entry]) -> String {
    let header = [
        "NAME",
        "STATE",
        "UNPRIVILEGED",
        "RANGE",
        "METHOD",
        "UNFINISHED",
    ];
    let id = |id: Option<u32>| id.map_or("0".to_string(), |id| id.to_string());
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                e.state.clone(),
                e.unprivileged.map_or("-".into(), |u| u.to_string()),
                e.range.map_or("-".into(), |r| {
                    // `+`: more pieces follow (`--json` lists them).
                    let more = if e.map.is_some() { "+" } else { "" };
                    format!("{}:{}{more}", r.host_first, r.count)
                }),
                e.method.clone().unwrap_or_else(|| "-".into()),
                e.unfinished
                    .as_ref()
                    .map_or("-".into(), |u| format!("{}->{}", id(u.from), id(u.to))),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join(" ").trim_end())
    };
    let mut text = line(header.to_vec());
    for row in &rows {
        text += &line(row.iter().map(String::as_str).collect());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(lxcpath: &Path, name: &str, config: &str) {
        std::fs::create_dir(lxcpath.join(name)).unwrap();
        std::fs::write(lxcpath.join(name).join("config"), config).unwrap();
    }

    #[test]
    fn lists_privileged_unprivileged_and_unfinished_containers() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        container(p, "priv", "lxc.rootfs.path = dir:/x/rootfs\n");
        container(
            p,
            "unpriv",
            "lxc.rootfs.path = btrfs:/x/rootfs\nlxc.idmap = u 0 1000000 65536\nlxc.idmap = g 0 1000000 65536\n",
        );
        container(p, "half", "lxc.rootfs.path = /x/rootfs\n");
        std::fs::write(
            p.join("half/lxc-idshift.state.json"),
            r#"{"origin":null,"target":1065536,"range":65536,"perms":[]}"#,
        )
        .unwrap();
        std::fs::create_dir(p.join("not-a-container")).unwrap();
        assert_eq!(names(p).unwrap(), ["half", "priv", "unpriv"]);
        let (path, entries) = list(Some(p), &Host::system()).unwrap();
        assert_eq!(path, p);
        let by_name = |n: &str| entries.iter().find(|e| e.name == n).unwrap().clone();
        let privileged = by_name("priv");
        assert_eq!(privileged.unprivileged, Some(false));
        assert_eq!(privileged.range, None);
        assert_eq!(privileged.method, None);
        assert_eq!(privileged.store.as_deref(), Some("dir"));
        assert_eq!(privileged.unfinished, None);
        let unprivileged = by_name("unpriv");
        assert_eq!(unprivileged.unprivileged, Some(true));
        let range = RootRange {
            host_first: 1_000_000,
            count: 65536,
        };
        assert_eq!(unprivileged.range, Some(range));
        assert_eq!(unprivileged.method.as_deref(), Some("shift"));
        assert_eq!(unprivileged.store.as_deref(), Some("btrfs"));
        let half = by_name("half").unfinished.expect("half is unfinished");
        assert_eq!((half.from, half.to), (None, Some(1_065_536)));
        let finish = format!("lxc-idshift -n half -P {} --to 1065536", p.display());
        assert!(half.next.contains(&finish), "{}", half.next);
        assert!(half.next.contains("--to 0 to undo it"), "{}", half.next);

        let table = table(&entries);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME "), "{table}");
        assert!(lines[0].ends_with("UNFINISHED"), "{table}");
        assert!(
            lines[1].starts_with("half ") && lines[1].ends_with("0->1065536"),
            "{table}"
        );
        assert!(
            lines[3].contains("true") && lines[3].contains("1000000:65536"),
            "{table}"
        );
        // Columns line up: every cell of a column starts where its heading does.
        let at = lines[0].find("RANGE").unwrap();
        assert_eq!(lines[3].find("1000000:65536"), Some(at), "{table}");
    }

    #[test]
    fn a_missing_lxcpath_names_the_way_out() {
        let err = list(Some(Path::new("/nonexistent/lxc")), &Host::system()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/lxc") && text.contains("-P DIR"),
            "{text}"
        );
    }
}
