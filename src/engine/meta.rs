//! The id-bearing metadata of one inode and the pure function that shifts it.
//! Everything the walk decides per inode is decided here, without touching disk.

use super::acl::{Acl, AclError};
use super::caps::{CapsError, FileCaps};
use super::idmap::{Direction, IdKind, IdMap, Shift};
use serde::{Deserialize, Serialize};

/// Owner, group, permission bits and the xattrs that hold ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// st_mode & 0o7777.
    pub perm: u32,
    #[serde(with = "hex_bytes", default, skip_serializing_if = "Option::is_none")]
    pub acl_access: Option<Vec<u8>>,
    #[serde(with = "hex_bytes", default, skip_serializing_if = "Option::is_none")]
    pub acl_default: Option<Vec<u8>>,
    #[serde(with = "hex_bytes", default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<u8>>,
}

/// The result of shifting one inode's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shifted {
    pub meta: Meta,
    /// Some id lies in no range of the map (it shows as nobody in the container).
    pub unmapped: bool,
    /// An xattr could not be parsed and was left as it is.
    pub problems: Vec<XattrProblem>,
}

/// An xattr that does not parse: it is kept as it is, and its inode reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XattrProblem {
    #[error("ACL: {0}; left unchanged")]
    Acl(AclError),
    #[error("default ACL: {0}; left unchanged")]
    DefaultAcl(AclError),
    #[error("file capability: {0}; left unchanged")]
    Caps(CapsError),
}

impl Meta {
    /// Whether a chown of this inode destroys something we must restore: the kernel
    /// clears setuid/setgid and removes security.capability on non-directories.
    pub fn chown_destroys(&self, is_dir: bool) -> bool {
        !is_dir && (self.perm & 0o6000 != 0 || self.caps.is_some())
    }

    pub fn has_id_xattrs(&self) -> bool {
        self.acl_access.is_some() || self.acl_default.is_some() || self.caps.is_some()
    }

    /// Every id this inode holds, with its kind (owner, group, ACL entries, cap rootid).
    pub fn ids(&self) -> impl Iterator<Item = (IdKind, u32)> + '_ {
        let owners = [(IdKind::User, self.uid), (IdKind::Group, self.gid)];
        let acls = [&self.acl_access, &self.acl_default]
            .into_iter()
            .flatten()
            .filter_map(|bytes| Acl::parse(bytes).ok())
            .flat_map(|acl| acl.ids().collect::<Vec<_>>());
        let rootid = self
            .caps
            .as_deref()
            .and_then(|bytes| FileCaps::parse(bytes).ok())
            .and_then(|caps| caps.rootid)
            .map(|root| (IdKind::User, root));
        owners.into_iter().chain(acls).chain(rootid)
    }

    /// Whether some id already lies where `direction` moves ids to.
    pub fn has_target_ids(&self, map: &IdMap, direction: Direction) -> bool {
        self.ids()
            .any(|(kind, id)| map.in_target(kind, id, direction))
    }

    /// This metadata shifted in `direction`: ids in a source range move, others stay;
    /// the permission bits stay; capabilities get the rootid of their new home.
    pub fn shifted(&self, map: &IdMap, direction: Direction) -> Shifted {
        let mut unmapped = false;
        let mut problems = Vec::new();
        let mut shift = |kind, id| match map.shift(kind, id, direction) {
            Shift::Mapped(new) => new,
            Shift::AlreadyTarget => id,
            Shift::Unmapped => {
                unmapped = true;
                id
            }
        };
        let uid = shift(IdKind::User, self.uid);
        let gid = shift(IdKind::Group, self.gid);
        let mut shift_acl = |bytes: &Option<Vec<u8>>, problem: fn(AclError) -> XattrProblem| {
            let bytes = bytes.as_ref()?;
            match Acl::parse(bytes) {
                Ok(mut acl) => {
                    acl.map_ids(&mut shift);
                    Some(acl.to_bytes())
                }
                Err(e) => {
                    problems.push(problem(e));
                    Some(bytes.clone())
                }
            }
        };
        let acl_access = shift_acl(&self.acl_access, XattrProblem::Acl);
        let acl_default = shift_acl(&self.acl_default, XattrProblem::DefaultAcl);
        let caps = self.caps.as_ref().map(|bytes| {
            match shift_caps(bytes, map, direction, &mut unmapped) {
                Ok(shifted) => shifted,
                Err(e) => {
                    problems.push(XattrProblem::Caps(e));
                    bytes.clone()
                }
            }
        });
        Shifted {
            meta: Meta {
                uid,
                gid,
                perm: self.perm,
                acl_access,
                acl_default,
                caps,
            },
            unmapped,
            problems,
        }
    }
}

/// Shifting in writes v3 with the rootid of the container's root (what the kernel
/// stores when that root runs setcap); shifting out writes v2 when the rootid
/// becomes 0, so host root and the container see the same capabilities.
fn shift_caps(
    bytes: &[u8],
    map: &IdMap,
    direction: Direction,
    unmapped: &mut bool,
) -> Result<Vec<u8>, super::caps::CapsError> {
    let caps = FileCaps::parse(bytes)?;
    let rootid = match (caps.rootid, direction) {
        (Some(root), _) => Some(root),
        (None, Direction::Forward) => Some(0),
        (None, Direction::Reverse) => None,
    };
    let Some(root) = rootid else {
        return Ok(caps.to_bytes());
    };
    let new_root = match map.shift(IdKind::User, root, direction) {
        Shift::Mapped(new) => new,
        Shift::AlreadyTarget => root,
        Shift::Unmapped => {
            *unmapped = true;
            root
        }
    };
    let shifted = if new_root == 0 && direction == Direction::Reverse {
        caps.as_v2()
    } else if caps.rootid.is_none() && new_root == 0 {
        // v2 with container root unmapped: nothing sensible to pin it to.
        caps
    } else {
        caps.with_rootid(new_root)
    };
    Ok(shifted.to_bytes())
}

/// Optional byte strings as lowercase hex in the journal.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&super::super::hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            super::super::hex::decode(&t).ok_or_else(|| serde::de::Error::custom("bad hex"))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> IdMap {
        IdMap::parse(&["b:0:1000000:65536"]).unwrap()
    }

    fn plain(uid: u32, gid: u32, perm: u32) -> Meta {
        Meta {
            uid,
            gid,
            perm,
            acl_access: None,
            acl_default: None,
            caps: None,
        }
    }

    fn caps_v2() -> Vec<u8> {
        // cap_net_raw+ep: magic v2 | effective, permitted[0] = 1 << 13.
        let words: [u32; 5] = [0x0200_0001, 1 << 13, 0, 0, 0];
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn owner_group_and_mode() {
        let m = map();
        let s = plain(0, 33, 0o4755).shifted(&m, Direction::Forward);
        assert_eq!(s.meta, plain(1000000, 1000033, 0o4755));
        assert!(!s.unmapped);
        let back = s.meta.shifted(&m, Direction::Reverse);
        assert_eq!(back.meta, plain(0, 33, 0o4755));
        let odd = plain(70000, 1000005, 0o644).shifted(&m, Direction::Forward);
        assert_eq!(odd.meta, plain(70000, 1000005, 0o644));
        assert!(odd.unmapped);
    }

    #[test]
    fn acl_entries_follow_the_map() {
        use crate::sample::ACL_USER_OBJ;
        use crate::sample::{acl_xattr, ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER};
        let acl = acl_xattr(&[
            (ACL_USER_OBJ, 7, 0),
            (ACL_USER, 5, 1000),
            (ACL_GROUP_OBJ, 5, 0),
            (ACL_GROUP, 5, 70000),
            (ACL_MASK, 7, 0),
            (ACL_OTHER, 0, 0),
        ]);
        let mut meta = plain(0, 0, 0o750);
        meta.acl_default = Some(acl);
        let s = meta.shifted(&map(), Direction::Forward);
        let shifted = Acl::parse(s.meta.acl_default.as_ref().unwrap()).unwrap();
        let ids: Vec<u32> = shifted.entries.iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            vec![u32::MAX, 1001000, u32::MAX, 70000, u32::MAX, u32::MAX]
        );
        assert!(s.unmapped, "70000 is outside the map");
        assert!(meta.has_target_ids(&map(), Direction::Reverse));
    }

    #[test]
    fn caps_v2_becomes_v3_with_root_and_back() {
        let m = map();
        let mut meta = plain(0, 0, 0o755);
        meta.caps = Some(caps_v2());
        let fwd = meta.shifted(&m, Direction::Forward).meta;
        let caps = FileCaps::parse(fwd.caps.as_ref().unwrap()).unwrap();
        assert_eq!(caps.rootid, Some(1000000));
        let back = fwd.shifted(&m, Direction::Reverse).meta;
        assert_eq!(back.caps, Some(caps_v2()));
    }

    #[test]
    fn unparseable_xattrs_are_kept_and_reported() {
        let mut meta = plain(0, 0, 0o755);
        meta.acl_access = Some(vec![1, 2, 3]);
        meta.caps = Some(vec![9; 7]);
        let s = meta.shifted(&map(), Direction::Forward);
        assert_eq!(s.meta.acl_access, Some(vec![1, 2, 3]));
        assert_eq!(s.meta.caps, Some(vec![9; 7]));
        assert!(matches!(
            s.problems[..],
            [XattrProblem::Acl(_), XattrProblem::Caps(_)]
        ));
        assert!(s.problems[1].to_string().starts_with("file capability: "));
    }

    #[test]
    fn journal_encoding_round_trips() {
        let mut meta = plain(1, 2, 0o2755);
        meta.caps = Some(caps_v2());
        let text = serde_json::to_string(&meta).unwrap();
        assert!(text.contains("\"caps\":\"01000002"));
        assert_eq!(serde_json::from_str::<Meta>(&text).unwrap(), meta);
    }

    #[test]
    fn destructive_chown_detection() {
        assert!(plain(0, 0, 0o4755).chown_destroys(false));
        assert!(plain(0, 0, 0o2755).chown_destroys(false));
        assert!(!plain(0, 0, 0o2775).chown_destroys(true));
        assert!(!plain(0, 0, 0o755).chown_destroys(false));
    }
}
