//! The rootfs method of an unprivileged container. `shift`: the rootfs holds host
//! ids (every inode shifted once; it works on any kernel and can be copied
//! anywhere). `idmap`: the rootfs holds container ids as a privileged one does, and
//! LXC mounts it idmapped (`lxc.rootfs.options = idmap=container`; kernel 5.12+,
//! LXC 5.0+), so converting touches no inode.
//!
//! A [`Layout`] says where a container stands; what a conversion does to the rootfs
//! follows from the ids each layout keeps on disk.

use super::config::ContainerConfig;
use super::hostmap::HostMap;
use std::fmt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Shift,
    Idmap,
}

impl Method {
    pub fn is_shift(&self) -> bool {
        *self == Method::Shift
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Shift => "shift",
            Method::Idmap => "idmap",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(text: &str) -> Result<Method, String> {
        match text {
            "shift" => Ok(Method::Shift),
            "idmap" => Ok(Method::Idmap),
            other => Err(format!("--method {other:?}: expected shift or idmap")),
        }
    }
}

/// Where a container stands: privileged (`map` None), or unprivileged with its map
/// and a rootfs method. A privileged layout's method is always `Shift`: its rootfs
/// holds container ids, which are host ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub map: Option<HostMap>,
    pub method: Method,
}

impl Layout {
    pub fn new(map: Option<HostMap>, method: Method) -> Layout {
        let method = map.as_ref().map_or(Method::Shift, |_| method);
        Layout { map, method }
    }

    /// The layout a config describes, given its map.
    pub fn of_config(map: Option<HostMap>, config: &ContainerConfig) -> Layout {
        let method = match config.rootfs_idmapped() {
            true => Method::Idmap,
            false => Method::Shift,
        };
        Layout::new(map, method)
    }

    /// The host uid of container root (None: privileged).
    pub fn root(&self) -> Option<u32> {
        self.map.as_ref().map(HostMap::root_uid)
    }

    /// The map the rootfs holds on disk: None when it holds container ids 0..
    /// (privileged, or idmapped).
    pub fn on_disk(&self) -> Option<&HostMap> {
        match self.method {
            Method::Shift => self.map.as_ref(),
            Method::Idmap => None,
        }
    }

    /// The arguments of the conversion that leads here: `--to 0`, `--to H`,
    /// `--to H --method idmap`, `--map ... --map ...` for other shapes.
    pub fn args(&self) -> String {
        match (&self.map, self.method) {
            (None, _) => "--to 0".to_string(),
            (Some(map), Method::Shift) => map.args(),
            (Some(map), Method::Idmap) => format!("{} --method idmap", map.args()),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(map) = &self.map else {
            return f.write_str("privileged");
        };
        let idmapped = match self.method {
            Method::Shift => "",
            Method::Idmap => ", rootfs idmapped",
        };
        match map.one_range() {
            Some((host, _)) => write!(f, "unprivileged (root = host uid {host}{idmapped})"),
            None => write!(f, "unprivileged (map {map}{idmapped})"),
        }
    }
}

/// The method a conversion to `to` uses: the one asked for; else the container's
/// own when it is unprivileged already (an idmapped container moving ranges stays
/// idmapped); else `shift`. Going privileged there is no method.
pub fn target_method(asked: Option<Method>, from: &Layout, to: Option<&HostMap>) -> Method {
    match (to, asked) {
        (None, _) => Method::Shift,
        (Some(_), Some(method)) => method,
        (Some(_), None) => from.method,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::idmap::MapEntry;

    const PRIVILEGED: Layout = Layout {
        map: None,
        method: Method::Shift,
    };

    fn range(host: u32) -> Option<HostMap> {
        Some(HostMap::simple(host, 65536).unwrap())
    }

    fn idmapped(host: u32) -> Layout {
        Layout::new(range(host), Method::Idmap)
    }

    fn shifted(host: u32) -> Layout {
        Layout::new(range(host), Method::Shift)
    }

    #[test]
    fn the_method_asked_for_else_the_containers_own_else_shift() {
        let to = range(2_000_000);
        let to = to.as_ref();
        assert_eq!(target_method(None, &PRIVILEGED, to), Method::Shift);
        assert_eq!(target_method(None, &shifted(1_000_000), to), Method::Shift);
        assert_eq!(target_method(None, &idmapped(1_000_000), to), Method::Idmap);
        let asked = Some(Method::Idmap);
        assert_eq!(target_method(asked, &PRIVILEGED, to), Method::Idmap);
        assert_eq!(target_method(asked, &shifted(1_000_000), to), Method::Idmap);
        let asked = Some(Method::Shift);
        assert_eq!(
            target_method(asked, &idmapped(1_000_000), to),
            Method::Shift
        );
        // Going privileged there is no method.
        assert_eq!(
            target_method(None, &idmapped(1_000_000), None),
            Method::Shift
        );
    }

    #[test]
    fn the_ids_on_disk_follow_the_method() {
        assert_eq!(PRIVILEGED.on_disk(), None);
        assert_eq!(shifted(1_000_000).on_disk(), range(1_000_000).as_ref());
        assert_eq!(idmapped(1_000_000).on_disk(), None);
        // A privileged layout has no idmapped rootfs.
        assert_eq!(Layout::new(None, Method::Idmap), PRIVILEGED);
    }

    #[test]
    fn a_layout_is_read_from_the_config_and_named_by_its_arguments() {
        let plain = ContainerConfig::parse("lxc.rootfs.path = dir:/r\n");
        let options = "lxc.rootfs.path = dir:/r\nlxc.rootfs.options = noatime, idmap=container\n";
        let idmap = ContainerConfig::parse(options);
        assert_eq!(Layout::of_config(range(700000), &plain), shifted(700000));
        assert_eq!(Layout::of_config(range(700000), &idmap), idmapped(700000));
        assert_eq!(Layout::of_config(None, &idmap), PRIVILEGED);
        assert_eq!(PRIVILEGED.args(), "--to 0");
        assert_eq!(shifted(700000).args(), "--to 700000");
        assert_eq!(idmapped(700000).args(), "--to 700000 --method idmap");
        assert_eq!(
            idmapped(700000).to_string(),
            "unprivileged (root = host uid 700000, rootfs idmapped)"
        );
        let split = HostMap::new(vec![
            MapEntry::parse("u 0 700000 65536").unwrap(),
            MapEntry::parse("g 0 100000 65536").unwrap(),
        ])
        .unwrap();
        let split = Layout::new(Some(split), Method::Shift);
        assert_eq!(
            split.args(),
            "--map u:0:700000:65536 --map g:0:100000:65536"
        );
        assert_eq!(
            split.to_string(),
            "unprivileged (map u:0:700000:65536 g:0:100000:65536)"
        );
        assert_eq!("idmap".parse(), Ok(Method::Idmap));
        assert!("both".parse::<Method>().is_err());
    }
}
