//! `security.capability` codec: file capabilities in their v1, v2 and v3 forms.
//!
//! All fields are little-endian u32: magic_etc (revision in the top byte, flags in
//! the rest), then permitted/inheritable words, then (v3 only) the rootid, the host
//! uid whose namespace the capabilities belong to. Shifting in writes v3 with the
//! container root's host uid; shifting out writes v2 (see REFERENCE.md).

use super::le::u32_at;

pub const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
/// The "effective" bit of magic_etc; all flag bits are preserved, known or not.
pub const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;
const REVISION_SHIFT: u32 = 24;

/// Decoded file capabilities, fields as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCaps {
    /// 1, 2 or 3: the top byte of magic_etc.
    pub revision: u32,
    /// The low 24 bits of magic_etc (VFS_CAP_FLAGS_EFFECTIVE and any others).
    pub flags: u32,
    /// permitted[0], inheritable[0], permitted[1], inheritable[1] (v1: the first two).
    pub words: Vec<u32>,
    /// Some only for v3.
    pub rootid: Option<u32>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CapsError {
    #[error("security.capability of {len} bytes is too short: it needs at least the 4-byte magic")]
    TooShort { len: usize },
    #[error("security.capability has unknown revision {revision} (magic {magic:#010x}); known are 1, 2 and 3")]
    UnknownRevision { revision: u32, magic: u32 },
    #[error("security.capability revision {revision} must be {expected} bytes, found {len}")]
    WrongLength {
        revision: u32,
        expected: usize,
        len: usize,
    },
}

/// Number of permitted/inheritable words stored by a revision.
fn word_count(revision: u32) -> usize {
    if revision == 1 {
        2
    } else {
        4
    }
}

/// Total xattr size of a revision, or None for a revision the kernel does not know.
fn size_of_revision(revision: u32) -> Option<usize> {
    match revision {
        1 => Some(12),
        2 => Some(20),
        3 => Some(24),
        _ => None,
    }
}

impl FileCaps {
    /// Decodes an xattr value; the length must be exactly that of its revision.
    pub fn parse(bytes: &[u8]) -> Result<FileCaps, CapsError> {
        let len = bytes.len();
        if len < 4 {
            return Err(CapsError::TooShort { len });
        }
        let magic = u32_at(bytes, 0);
        let revision = (magic & VFS_CAP_REVISION_MASK) >> REVISION_SHIFT;
        let expected =
            size_of_revision(revision).ok_or(CapsError::UnknownRevision { revision, magic })?;
        if len != expected {
            return Err(CapsError::WrongLength {
                revision,
                expected,
                len,
            });
        }
        let words = (0..word_count(revision))
            .map(|i| u32_at(bytes, 4 + 4 * i))
            .collect();
        let rootid = (revision == 3).then(|| u32_at(bytes, 20));
        Ok(FileCaps {
            revision,
            flags: magic & !VFS_CAP_REVISION_MASK,
            words,
            rootid,
        })
    }

    /// Encodes the value; the exact inverse of [`FileCaps::parse`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let magic = (self.revision << REVISION_SHIFT) | (self.flags & !VFS_CAP_REVISION_MASK);
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&magic.to_le_bytes());
        for w in self.words.iter().chain(&self.rootid) {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Whether the capabilities are raised into the effective set at exec.
    pub fn effective(&self) -> bool {
        self.flags & VFS_CAP_FLAGS_EFFECTIVE != 0
    }

    /// The four v2/v3 words; v1's missing upper words are zero.
    fn wide_words(&self) -> Vec<u32> {
        let mut words = self.words.clone();
        words.resize(word_count(2), 0);
        words
    }

    /// Same capabilities as v3 with this rootid (from v2 or v3; v1 is widened to v2
    /// words with zero upper words first).
    pub fn with_rootid(&self, rootid: u32) -> FileCaps {
        FileCaps {
            revision: 3,
            flags: self.flags,
            words: self.wide_words(),
            rootid: Some(rootid),
        }
    }

    /// Same capabilities as v2 (drops rootid).
    pub fn as_v2(&self) -> FileCaps {
        FileCaps {
            revision: 2,
            flags: self.flags,
            words: self.wide_words(),
            rootid: None,
        }
    }
}

/// Checks that `converted` encodes, reparses, and carries the capabilities of `orig`.
#[cfg(feature = "testkit")]
fn check_conversion(orig: &FileCaps, converted: &FileCaps, revision: u32, rootid: Option<u32>) {
    let bytes = converted.to_bytes();
    assert_eq!(bytes.len(), size_of_revision(revision).unwrap());
    assert_eq!(
        FileCaps::parse(&bytes).as_ref(),
        Ok(converted),
        "reparse differs"
    );
    assert_eq!(converted.revision, revision);
    assert_eq!(converted.rootid, rootid);
    assert_eq!(converted.flags, orig.flags, "flags lost");
    let (kept, added) = converted.words.split_at(orig.words.len());
    assert_eq!(kept, orig.words, "capability words changed");
    assert!(
        added.iter().all(|&w| w == 0),
        "widening invented capabilities"
    );
}

/// The properties the `caps` fuzz target checks; panics on the first one violated.
/// Lives here so that the seed corpus can be replayed as an ordinary test.
#[doc(hidden)]
#[cfg(feature = "testkit")]
pub fn fuzz_roundtrip(data: &[u8]) {
    let Ok(caps) = FileCaps::parse(data) else {
        return;
    };
    let bytes = caps.to_bytes();
    assert_eq!(bytes, data, "to_bytes is not the canonical input");
    assert_eq!(
        FileCaps::parse(&bytes).as_ref(),
        Ok(&caps),
        "reparse differs"
    );
    assert_eq!(caps.rootid.is_some(), caps.revision == 3);

    let rootid = caps.words[0] ^ 1_000_000;
    let v3 = caps.with_rootid(rootid);
    check_conversion(&caps, &v3, 3, Some(rootid));
    let v2 = caps.as_v2();
    check_conversion(&caps, &v2, 2, None);
    // v2 -> v3 -> v2 loses nothing, whatever the starting revision.
    assert_eq!(v3.as_v2(), v2);
    assert_eq!(v2.with_rootid(rootid), v3);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::hex::unhex;

    // `setcap cap_net_bind_service,cap_net_raw+ep f` (host root writes v2).
    const V2_EP: &str = "0100000200240000000000000000000000000000";
    // `setcap cap_sys_admin,cap_chown+ei f`: inheritable only, effective flag set.
    const V2_EI: &str = "0100000200000000010020000000000000000000";
    // `setcap -n 1000000 cap_net_raw+ep f`: v3 with rootid 1000000.
    const V3_EP: &str = "010000030020000000000000000000000000000040420f00";
    // `setcap -n 1000000 cap_net_bind_service,cap_net_raw+ep f`: V2_EP as v3.
    const V3_EP_BOTH: &str = "010000030024000000000000000000000000000040420f00";
    // `setcap all=ep f`: upper words in use (caps 32..40).
    const V2_ALL: &str = "01000002ffffffff00000000ff01000000000000";
    // `setcap -n 1000000 cap_setuid+p f`: v3, not effective.
    const V3_P: &str = "000000038000000000000000000000000000000040420f00";

    #[test]
    fn round_trips_real_values() {
        for hex in [V2_EP, V2_EI, V2_ALL, V3_EP, V3_EP_BOTH, V3_P] {
            let bytes = unhex(hex);
            let caps = FileCaps::parse(&bytes).unwrap();
            assert_eq!(caps.to_bytes(), bytes, "{hex}");
            fuzz_roundtrip(&bytes);
        }
        let v2 = FileCaps::parse(&unhex(V2_EP)).unwrap();
        assert_eq!((v2.revision, v2.flags, v2.rootid), (2, 1, None));
        // cap_net_bind_service (10) and cap_net_raw (13) permitted.
        assert_eq!(v2.words, [(1 << 10) | (1 << 13), 0, 0, 0]);
        let v3 = FileCaps::parse(&unhex(V3_P)).unwrap();
        assert_eq!((v3.revision, v3.rootid), (3, Some(1_000_000)));
        assert!(!v3.effective());
        assert_eq!(v3.words, [1 << 7, 0, 0, 0]);
    }

    #[test]
    fn converts_v2_to_v3_and_back() {
        let v2_bytes = unhex(V2_EP);
        let v2 = FileCaps::parse(&v2_bytes).unwrap();
        let v3 = v2.with_rootid(1_000_000);
        // What setcap stores for the same capabilities with `-n 1000000`.
        assert_eq!(v3.to_bytes(), unhex(V3_EP_BOTH));
        assert_eq!(v3.as_v2().to_bytes(), v2_bytes);
        // Re-tagging a v3 replaces the rootid only.
        let moved = FileCaps::parse(&unhex(V3_EP)).unwrap().with_rootid(0);
        assert_eq!(moved.to_bytes()[..20], unhex(V3_EP)[..20]);
        assert_eq!(moved.rootid, Some(0));
        // The upper words (caps 32 and up) survive the round trip.
        let all = FileCaps::parse(&unhex(V2_ALL)).unwrap();
        assert_eq!(all.with_rootid(1_000_000).as_v2(), all);
    }

    #[test]
    fn preserves_unknown_flag_bits() {
        let mut bytes = unhex(V2_EI);
        bytes[0] = 0x81; // effective plus an undefined flag bit
        bytes[2] = 0x10;
        let caps = FileCaps::parse(&bytes).unwrap();
        assert_eq!(caps.flags, 0x0010_0081);
        assert_eq!(caps.to_bytes(), bytes);
        assert_eq!(caps.with_rootid(7).as_v2().to_bytes(), bytes);
    }

    #[test]
    fn widens_v1() {
        let bytes = [0, 0, 0, 1, 0x00, 0x20, 0, 0, 0, 0, 0, 0];
        let v1 = FileCaps::parse(&bytes).unwrap();
        assert_eq!((v1.revision, v1.flags), (1, 0));
        assert_eq!(v1.words, [0x2000, 0]);
        assert_eq!(v1.to_bytes(), bytes);
        let v3 = v1.with_rootid(1_000_000);
        assert_eq!(v3.words, [0x2000, 0, 0, 0]);
        assert_eq!(v3.to_bytes()[4..], unhex(V3_EP)[4..]);
        assert_eq!(v1.as_v2().to_bytes().len(), 20);
    }

    #[test]
    fn rejects_malformed_values() {
        assert_eq!(FileCaps::parse(&[]), Err(CapsError::TooShort { len: 0 }));
        let v3 = unhex(V3_EP);
        assert_eq!(
            FileCaps::parse(&v3[..20]),
            Err(CapsError::WrongLength {
                revision: 3,
                expected: 24,
                len: 20
            })
        );
        let err = FileCaps::parse(&unhex(V2_EP)[..16]).unwrap_err();
        assert!(err.to_string().contains("20 bytes, found 16"), "{err}");
        let mut bad = unhex(V2_EP);
        bad[3] = 0x04;
        assert!(matches!(
            FileCaps::parse(&bad),
            Err(CapsError::UnknownRevision { revision: 4, .. })
        ));
    }
}
