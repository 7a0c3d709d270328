//! Finding a container: its lxcpath, directory, config and whether it runs.

use super::effects::HostEffects;
use crate::engine::idmap::IdMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

pub const DEFAULT_LXCPATH: &str = "/var/lib/lxc";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no container {name} under {lxcpath}: {config} does not exist (`lxc-idshift list -P {lxcpath}` lists the containers there; -P DIR names another lxcpath)")]
    NotFound {
        name: String,
        lxcpath: PathBuf,
        config: PathBuf,
    },
    #[error("container name {0:?} is not a plain directory name (one path component, at most 255 bytes, no control characters such as a line break); nothing was changed; `lxc-idshift list` shows the containers' names")]
    BadName(String),
    #[error("container {name} is {state}: stop it first (lxc-stop -n {name}); shifting a running container races its writes")]
    NotStopped { name: String, state: String },
    #[error(
        "cannot tell whether container {name} runs: {reason}; make sure lxc-info works, then retry"
    )]
    UnknownState { name: String, reason: String },
}

/// A name LXC can give a container directory, and that no file lxc-idshift writes
/// (a config line, a udev rule) can be broken by: one path component (NAME_MAX),
/// no control character such as a line break.
fn is_plain_name(name: &str) -> bool {
    let component = !name.is_empty() && name.len() <= 255 && !name.contains('/');
    component && name != "." && name != ".." && !name.chars().any(char::is_control)
}

/// A container as LXC lays it out: `<lxcpath>/<name>/config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub lxcpath: PathBuf,
}

impl Container {
    /// Finds `name` under `lxcpath` (default: what `lxc-config lxc.lxcpath` says).
    pub fn find(
        name: &str,
        lxcpath: Option<&Path>,
        host: &dyn HostEffects,
    ) -> Result<Container, ContainerError> {
        if !is_plain_name(name) {
            return Err(ContainerError::BadName(name.into()));
        }
        let lxcpath = lxcpath
            .map(Path::to_path_buf)
            .unwrap_or_else(|| default_lxcpath(host));
        let container = Container {
            name: name.into(),
            lxcpath,
        };
        if !container.config().is_file() {
            return Err(ContainerError::NotFound {
                name: name.into(),
                config: container.config(),
                lxcpath: container.lxcpath,
            });
        }
        Ok(container)
    }

    /// Like [`Container::find`], but a container another manager keeps (Proxmox
    /// VE's `.conf`) is found before its first start has written its LXC config.
    pub fn find_on(
        name: &str,
        lxcpath: Option<&Path>,
        effects: &dyn HostEffects,
        host: &super::host::Host,
    ) -> Result<Container, ContainerError> {
        match crate::lxc::pve::host::conf_path(host, name) {
            Some(_) if is_plain_name(name) => Ok(Container {
                name: name.into(),
                lxcpath: lxcpath
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| default_lxcpath(effects)),
            }),
            _ => Container::find(name, lxcpath, effects),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.lxcpath.join(&self.name)
    }

    pub fn config(&self) -> PathBuf {
        self.dir().join("config")
    }

    /// The engine's journal for one map: in the container's directory, never inside
    /// the rootfs. Going back with the same map finds the journal of the way there.
    pub fn journal_for(&self, map: &IdMap) -> PathBuf {
        self.dir()
            .join(format!("lxc-idshift.{}.journal", map_tag(map)))
    }

    /// What the conversion records about the container (permissions before it).
    pub fn state_file(&self) -> PathBuf {
        self.dir().join("lxc-idshift.state.json")
    }

    /// Refuses unless `lxc-info` says the container is stopped.
    pub fn ensure_stopped(&self, host: &dyn HostEffects) -> Result<(), ContainerError> {
        let unknown = |reason: String| ContainerError::UnknownState {
            name: self.name.clone(),
            reason,
        };
        let (lxcpath, name): (&OsStr, &OsStr) = (self.lxcpath.as_ref(), self.name.as_ref());
        let args = [
            "-P".as_ref(),
            lxcpath,
            "-n".as_ref(),
            name,
            "-s".as_ref(),
            "-H".as_ref(),
        ];
        let out = host
            .run("lxc-info", &args)
            .map_err(|e| unknown(format!("lxc-info: {e}")))?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match state.as_str() {
            "STOPPED" => Ok(()),
            "" => Err(unknown(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )),
            _ => Err(ContainerError::NotStopped {
                name: self.name.clone(),
                state,
            }),
        }
    }
}

/// `lxc-config lxc.lxcpath`, else /var/lib/lxc.
pub fn default_lxcpath(host: &dyn HostEffects) -> PathBuf {
    host.run("lxc-config", &[OsStr::new("lxc.lxcpath")])
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LXCPATH))
}

/// A journal name's part for `map`: its pieces spelled out (`b-0-1000000-65536`),
/// or, for a map of many pieces, the first of them and a hash of all, so that a
/// name stays within NAME_MAX.
pub fn map_tag(map: &IdMap) -> String {
    const SPELLED_OUT: usize = 120;
    let tag = map.to_string().replace([':', ' '], "-");
    if tag.len() <= SPELLED_OUT {
        return tag;
    }
    let hash = crate::engine::journal::fnv1a(tag.as_bytes());
    let head: String = tag.chars().take(SPELLED_OUT / 2).collect();
    format!("{head}-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_names_of_maps_of_many_pieces_stay_short_and_distinct() {
        let pieces = |host: u32| -> Vec<String> {
            (0..12u32)
                .map(|i| format!("u:{}:{}:1000", i * 1000, host + i * 1000))
                .chain(["g:0:3000000:65536".to_string()])
                .collect()
        };
        let a = map_tag(&IdMap::parse(&pieces(1_000_000)).unwrap());
        let b = map_tag(&IdMap::parse(&pieces(2_000_000)).unwrap());
        assert!(a.len() < 100 && b.len() < 100 && a != b, "{a} {b}");
        let simple = map_tag(&IdMap::parse(&["b:0:1000000:65536"]).unwrap());
        assert_eq!(simple, "b-0-1000000-65536");
    }
    use crate::lxc::effects::RealHost;

    #[test]
    fn finds_containers_and_names_their_journals() {
        let tmp = tempfile::tempdir().unwrap();
        // "c" is a directory without a config: no container.
        for name in ["a", "c"] {
            std::fs::create_dir(tmp.path().join(name)).unwrap();
        }
        std::fs::write(tmp.path().join("a/config"), "").unwrap();
        let a = Container::find("a", Some(tmp.path()), &RealHost).unwrap();
        let map = IdMap::parse(&["b:0:1000000:65536"]).unwrap();
        let journal = tmp.path().join("a/lxc-idshift.b-0-1000000-65536.journal");
        assert_eq!(a.journal_for(&map), journal);
        assert!(matches!(
            Container::find("c", Some(tmp.path()), &RealHost),
            Err(ContainerError::NotFound { .. })
        ));
        for bad in [
            "../etc",
            "",
            "..",
            "a\nlxc.hook.pre-start = /x",
            &"n".repeat(256),
        ] {
            assert!(
                matches!(
                    Container::find(bad, Some(tmp.path()), &RealHost),
                    Err(ContainerError::BadName(_))
                ),
                "{bad:?}"
            );
        }
    }
}
