//! POSIX ACL xattr codec (`system.posix_acl_access`, `system.posix_acl_default`).
//!
//! Layout, little-endian: u32 version = 2, then entries of (u16 tag, u16 perm, u32 id).
//! Only USER and GROUP entries carry ids; every other entry, including tags this
//! codec does not know, is kept byte for byte so that a rewrite loses nothing.

use super::idmap::IdKind;
use super::le::{u16_at, u32_at};

/// The only version the kernel reads and writes (POSIX_ACL_XATTR_VERSION).
pub const ACL_VERSION: u32 = 2;
pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;

const HEADER_LEN: usize = 4;
const ENTRY_LEN: usize = 8;

/// One ACL entry as stored; `id` is meaningful only for USER and GROUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

impl AclEntry {
    /// Which id space the entry's id lives in, if the entry carries an id at all.
    pub fn id_kind(&self) -> Option<IdKind> {
        match self.tag {
            ACL_USER => Some(IdKind::User),
            ACL_GROUP => Some(IdKind::Group),
            _ => None,
        }
    }
}

/// A decoded ACL xattr value, entries in stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub entries: Vec<AclEntry>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    #[error("ACL xattr of {len} bytes is too short: it needs at least the 4-byte version header")]
    TooShort { len: usize },
    #[error("ACL xattr has version {version}, expected {ACL_VERSION}")]
    WrongVersion { version: u32 },
    #[error("ACL xattr of {len} bytes is not a 4-byte header plus 8-byte entries ({extra} bytes left over)")]
    BadLength { len: usize, extra: usize },
}

impl Acl {
    /// Decodes an xattr value; unknown tags are kept, not rejected.
    pub fn parse(bytes: &[u8]) -> Result<Acl, AclError> {
        let len = bytes.len();
        if len < HEADER_LEN {
            return Err(AclError::TooShort { len });
        }
        let version = u32_at(bytes, 0);
        if version != ACL_VERSION {
            return Err(AclError::WrongVersion { version });
        }
        let extra = (len - HEADER_LEN) % ENTRY_LEN;
        if extra != 0 {
            return Err(AclError::BadLength { len, extra });
        }
        let entries = bytes[HEADER_LEN..]
            .chunks_exact(ENTRY_LEN)
            .map(|e| AclEntry {
                tag: u16_at(e, 0),
                perm: u16_at(e, 2),
                id: u32_at(e, 4),
            })
            .collect();
        Ok(Acl { entries })
    }

    /// Encodes the value; the exact inverse of [`Acl::parse`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.entries.len());
        out.extend_from_slice(&ACL_VERSION.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    /// The ids of USER (as User) and GROUP (as Group) entries, in stored order.
    pub fn ids(&self) -> impl Iterator<Item = (IdKind, u32)> + '_ {
        self.entries
            .iter()
            .filter_map(|e| e.id_kind().map(|kind| (kind, e.id)))
    }

    /// Applies `f` to the id of every USER/GROUP entry; returns true if any id changed.
    /// Unknown tags are kept untouched.
    pub fn map_ids(&mut self, mut f: impl FnMut(IdKind, u32) -> u32) -> bool {
        let mut changed = false;
        for e in &mut self.entries {
            let Some(kind) = e.id_kind() else { continue };
            let new = f(kind, e.id);
            changed |= new != e.id;
            e.id = new;
        }
        changed
    }
}

/// The properties the `acl` fuzz target checks; panics on the first one violated.
/// Lives here so that the seed corpus can be replayed as an ordinary test.
#[doc(hidden)]
#[cfg(feature = "testkit")]
pub fn fuzz_roundtrip(data: &[u8]) {
    let Ok(acl) = Acl::parse(data) else { return };
    let bytes = acl.to_bytes();
    assert_eq!(bytes, data, "to_bytes is not the canonical input");
    assert_eq!(Acl::parse(&bytes).as_ref(), Ok(&acl), "reparse differs");
    let carrying = acl.entries.iter().filter(|e| e.id_kind().is_some()).count();
    assert_eq!(acl.ids().count(), carrying, "ids() misses or adds entries");

    let mut same = acl.clone();
    assert!(!same.map_ids(|_, id| id), "identity map reported a change");
    assert_eq!(same, acl, "identity map changed the ACL");

    // A map that changes every id must touch exactly the USER/GROUP entries.
    let mut moved = acl.clone();
    assert_eq!(moved.map_ids(|_, id| id ^ 1), carrying > 0);
    for (old, new) in acl.entries.iter().zip(&moved.entries) {
        let expect = if old.id_kind().is_some() {
            old.id ^ 1
        } else {
            old.id
        };
        assert_eq!((new.tag, new.perm, new.id), (old.tag, old.perm, expect));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::hex::unhex;

    // `setfacl -m u:1000:rw-,g:27:r--,u:65534:r-x f; getfattr -e hex -n system.posix_acl_access f`
    const FILE_ACCESS: &str = "0200000001000600ffffffff02000600e803000002000500feff000004000400ffffffff080004001b00000010000700ffffffff20000400ffffffff";
    // `setfacl -d -m u:1000:rwx,g:100:r-x,o::--- d; getfattr -e hex -n system.posix_acl_default d`
    const DIR_DEFAULT: &str = "0200000001000700ffffffff02000700e803000004000500ffffffff080005006400000010000700ffffffff20000000ffffffff";

    #[test]
    fn round_trips_real_access_acl() {
        let bytes = unhex(FILE_ACCESS);
        let acl = Acl::parse(&bytes).unwrap();
        assert_eq!(acl.entries.len(), 7);
        assert_eq!(
            acl.entries[1],
            AclEntry {
                tag: ACL_USER,
                perm: 6,
                id: 1000
            }
        );
        assert_eq!(acl.to_bytes(), bytes);
        let ids: Vec<_> = acl.ids().collect();
        assert_eq!(
            ids,
            [
                (IdKind::User, 1000),
                (IdKind::User, 65534),
                (IdKind::Group, 27)
            ]
        );
    }

    #[test]
    fn round_trips_real_default_acl() {
        let bytes = unhex(DIR_DEFAULT);
        let acl = Acl::parse(&bytes).unwrap();
        assert_eq!(acl.to_bytes(), bytes);
        let ids: Vec<_> = acl.ids().collect();
        assert_eq!(ids, [(IdKind::User, 1000), (IdKind::Group, 100)]);
        fuzz_roundtrip(&bytes);
    }

    #[test]
    fn map_ids_touches_only_user_and_group() {
        let mut acl = Acl::parse(&unhex(FILE_ACCESS)).unwrap();
        let before = acl.clone();
        let changed = acl.map_ids(|kind, id| match kind {
            IdKind::User => id + 1_000_000,
            IdKind::Group => id + 2_000_000,
        });
        assert!(changed);
        for (old, new) in before.entries.iter().zip(&acl.entries) {
            let expect = match old.tag {
                ACL_USER => old.id + 1_000_000,
                ACL_GROUP => old.id + 2_000_000,
                _ => old.id,
            };
            assert_eq!(new.id, expect, "tag {:#x}", old.tag);
        }
        // The *_OBJ, MASK and OTHER entries keep their 0xFFFFFFFF.
        assert_eq!(acl.entries[0].id, u32::MAX);
        assert!(!acl.clone().map_ids(|_, id| id));
    }

    #[test]
    fn keeps_unknown_tags_byte_identical() {
        let mut bytes = unhex(DIR_DEFAULT);
        // An entry with an unknown tag and an arbitrary id, appended after OTHER.
        bytes.extend_from_slice(&[0x40, 0x00, 0x07, 0x00, 0x39, 0x05, 0x00, 0x00]);
        let mut acl = Acl::parse(&bytes).unwrap();
        assert_eq!(acl.entries.last().unwrap().tag, 0x40);
        assert_eq!(acl.ids().count(), 2);
        acl.map_ids(|_, id| id + 5);
        let last = acl.entries.last().unwrap();
        assert_eq!((last.tag, last.perm, last.id), (0x40, 7, 1337));
        assert_eq!(acl.to_bytes()[bytes.len() - 8..], bytes[bytes.len() - 8..]);
    }

    #[test]
    fn rejects_malformed_values() {
        assert_eq!(Acl::parse(&[2, 0]), Err(AclError::TooShort { len: 2 }));
        assert_eq!(
            Acl::parse(&[1, 0, 0, 0]),
            Err(AclError::WrongVersion { version: 1 })
        );
        let bytes = unhex(FILE_ACCESS);
        let err = Acl::parse(&bytes[..bytes.len() - 3]).unwrap_err();
        assert_eq!(err, AclError::BadLength { len: 57, extra: 5 });
        assert!(err.to_string().contains("57 bytes"), "{err}");
        // A header with no entries is well formed (an empty ACL).
        assert_eq!(Acl::parse(&[2, 0, 0, 0]).unwrap().entries, []);
    }
}
