//! The large deterministic rootfs-like tree the benchmarks and the scale tests shift,
//! drawn from a seeded pseudo-random generator (test kit only).

use super::{acl_xattr, caps_v2, require_empty_dir, require_root, Builder, CAP_NET_RAW};
use super::{ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ};
use crate::engine::xattr_names::{ACL_ACCESS, ACL_DEFAULT, CAPS};
use std::collections::VecDeque;
use std::io;
use std::path::Path;

/// Deterministic pseudo-random numbers (PCG-style LCG), so every tree is the same.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

/// Names of regular files that may receive hardlinks, bounded to keep memory flat.
struct LinkPool {
    names: Vec<Vec<u8>>,
}

impl LinkPool {
    const MAX: usize = 4096;

    fn offer(&mut self, rng: &mut Lcg, name: &[u8]) {
        if self.names.len() < Self::MAX {
            self.names.push(name.to_vec());
        } else {
            let slot = rng.below(Self::MAX as u32) as usize;
            self.names[slot] = name.to_vec();
        }
    }

    fn pick(&self, rng: &mut Lcg) -> Option<&[u8]> {
        if self.names.is_empty() {
            return None;
        }
        Some(&self.names[rng.below(self.names.len() as u32) as usize])
    }
}

/// State of a bulk tree build.
struct Bulk {
    b: Builder,
    rng: Lcg,
    pool: LinkPool,
    dirs: VecDeque<Vec<u8>>,
    files: usize,
    dir_count: usize,
}

impl Bulk {
    /// Owners in 0..1000, a third of them root as in a real rootfs.
    fn owner(&mut self) -> (u32, u32) {
        if self.rng.below(3) == 0 {
            return (0, 0);
        }
        let uid = self.rng.below(1000);
        let gid = if self.rng.below(2) == 0 {
            uid
        } else {
            self.rng.below(1000)
        };
        (uid, gid)
    }

    fn join(dir: &[u8], name: &str) -> Vec<u8> {
        let mut rel = dir.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        rel
    }

    fn subdir(&mut self, rel: Vec<u8>) -> io::Result<()> {
        let (uid, gid) = self.owner();
        let mode = match self.rng.below(20) {
            0 => 0o1777,
            1 => 0o700,
            2 => 0o2775,
            _ => 0o755,
        };
        self.b.dir(&rel, mode, uid, gid)?;
        self.dir_count += 1;
        if self.dir_count % 50 == 1 {
            let acl = dir_acl(uid, gid);
            self.b.xattr(&rel, ACL_ACCESS, &acl)?;
            self.b.xattr(&rel, ACL_DEFAULT, &acl)?;
            // Left empty: files created in it would inherit the default ACL, and a
            // rootfs has few ACLs (ACL-heavy trees are measured separately).
            return Ok(());
        }
        self.dirs.push_back(rel);
        Ok(())
    }

    fn symlink(&mut self, rel: &[u8]) -> io::Result<()> {
        let (uid, gid) = self.owner();
        let target = match self.rng.below(3) {
            0 => format!("/usr/lib/target-{}", self.rng.below(1000)),
            1 => format!("../f{}", self.rng.below(200)),
            _ => format!("missing-{}", self.rng.below(1000)),
        };
        Ok(self.b.symlink(rel, target.as_bytes(), uid, gid)?)
    }

    /// Counters, not chance, place the rare cases so that even small trees have them.
    fn file(&mut self, rel: &[u8]) -> io::Result<()> {
        self.files += 1;
        let (mut uid, gid) = self.owner();
        let mut mode = if self.rng.below(4) == 0 { 0o755 } else { 0o644 };
        if self.files % 1000 == 3 {
            (uid, mode) = (0, 0o4755);
        } else if self.files % 1000 == 503 {
            mode = 0o2755;
        } else if self.files % 1000 == 777 {
            // Already in the host range before any shift: must survive a round trip.
            uid += 1_000_000;
        }
        let content: &[u8] = if self.rng.below(8) == 0 {
            b"data\n"
        } else {
            b""
        };
        self.b.file(rel, content, mode, uid, gid)?;
        if self.files % 5000 == 1 {
            let caps = caps_v2(1 << CAP_NET_RAW, true);
            self.b.xattr(rel, CAPS, &caps)?;
        }
        if self.files % 2000 == 2 {
            self.b.xattr(rel, ACL_ACCESS, &file_acl(uid, gid))?;
        }
        self.pool.offer(&mut self.rng, rel);
        Ok(())
    }

    fn hardlink(&mut self, rel: &[u8]) -> io::Result<bool> {
        let Some(existing) = self.pool.pick(&mut self.rng).map(<[u8]>::to_vec) else {
            return Ok(false);
        };
        self.b.hardlink(&existing, rel)?;
        Ok(true)
    }

    /// Fills one directory with 10-200 entries: ~5% dirs, ~1% symlinks, ~1% hardlinks.
    fn fill(&mut self, dir: &[u8], budget: usize) -> io::Result<()> {
        let entries = 10 + self.rng.below(191) as usize;
        for k in 0..entries {
            if self.b.inodes >= budget {
                break;
            }
            match self.rng.below(1000) {
                0..=49 => self.subdir(Self::join(dir, &format!("d{k}")))?,
                50..=59 => self.symlink(&Self::join(dir, &format!("s{k}")))?,
                60..=69 if self.hardlink(&Self::join(dir, &format!("h{k}")))? => {}
                _ => self.file(&Self::join(dir, &format!("f{k}")))?,
            }
        }
        Ok(())
    }
}

fn dir_acl(uid: u32, gid: u32) -> Vec<u8> {
    acl_xattr(&[
        (ACL_USER_OBJ, 7, 0),
        (ACL_USER, 5, (uid + 1) % 1000),
        (ACL_GROUP_OBJ, 5, 0),
        (ACL_GROUP, 7, (gid + 7) % 1000),
        (ACL_MASK, 7, 0),
        (ACL_OTHER, 5, 0),
    ])
}

fn file_acl(uid: u32, gid: u32) -> Vec<u8> {
    acl_xattr(&[
        (ACL_USER_OBJ, 6, 0),
        (ACL_USER, 4, (uid + 3) % 1000),
        (ACL_GROUP_OBJ, 4, 0),
        (ACL_GROUP, 6, (gid + 11) % 1000),
        (ACL_MASK, 6, 0),
        (ACL_OTHER, 4, 0),
    ])
}

/// Builds a deterministic rootfs-like tree of about `inodes` inodes under `root`,
/// an existing empty directory. Returns the number of inodes created (root included,
/// hardlinks counted once).
pub fn build_bulk_tree(root: &Path, inodes: usize) -> io::Result<usize> {
    require_root("build_bulk_tree")?;
    require_empty_dir(root)?;
    let mut bulk = Bulk {
        b: Builder::new(root),
        rng: Lcg(0x1dc5_5eed),
        pool: LinkPool { names: Vec::new() },
        dirs: VecDeque::from([Vec::new()]),
        files: 0,
        dir_count: 0,
    };
    bulk.b.root_dir(0o755, 0, 0)?;
    let mut spare = 0;
    while bulk.b.inodes < inodes {
        let dir = match bulk.dirs.pop_front() {
            Some(dir) => dir,
            None => {
                // Every directory is full: open a new top-level one.
                spare += 1;
                let rel = format!("spare{spare}").into_bytes();
                bulk.b.dir(&rel, 0o755, 0, 0)?;
                rel
            }
        };
        bulk.fill(&dir, inodes)?;
    }
    Ok(bulk.b.inodes)
}

/// Adds `count` inodes under `root/rec` (created, with ten subdirectories) that
/// already hold host-range ids before any shift, as a tree someone shifted in part
/// by hand does: owners and groups at 1000000+x (some with a container-range group
/// beside them), ACL entries naming host ids, symlinks, a setuid file and second
/// names. A round trip must give every one of them back exactly.
pub fn build_host_range_inodes(root: &Path, count: usize) -> io::Result<usize> {
    require_root("build_host_range_inodes")?;
    let mut b = Builder::new(root);
    let mut rng = Lcg(0x0057_ed1d);
    b.dir(b"rec", 0o755, 1_000_000, 1_000_000)?;
    let host = |rng: &mut Lcg| 1_000_000 + rng.below(65_536);
    for d in 0..10 {
        let dir = format!("rec/d{d:02}");
        b.dir(dir.as_bytes(), 0o755, host(&mut rng), 1_000_000)?;
    }
    let mut made = 0;
    while b.inodes < count {
        let rel = format!(
            "rec/d{:02}/{}{made:04}",
            made % 10,
            ["f", "l", "s"][made % 3]
        );
        let rel = rel.as_bytes();
        let (uid, gid) = match rng.below(3) {
            0 => (host(&mut rng), rng.below(1000)),
            _ => (host(&mut rng), host(&mut rng)),
        };
        match made % 3 {
            1 => b.symlink(rel, b"../../etc/passwd", uid, gid)?,
            _ if made % 97 == 5 => b.file(rel, b"", 0o4755, 1_000_000, 1_000_000)?,
            _ => b.file(rel, b"x\n", 0o644, uid, gid)?,
        }
        if made % 3 != 1 && made % 7 == 0 {
            let acl = acl_xattr(&[
                (ACL_USER_OBJ, 6, 0),
                (ACL_USER, 4, host(&mut rng)),
                (ACL_GROUP_OBJ, 4, 0),
                (ACL_GROUP, 4, rng.below(1000)),
                (ACL_MASK, 6, 0),
                (ACL_OTHER, 4, 0),
            ]);
            b.xattr(rel, ACL_ACCESS, &acl)?;
        }
        if made % 3 == 0 && made % 11 == 0 && made > 0 {
            let link = format!("rec/d{:02}/h{made:04}", (made + 5) % 10);
            b.hardlink(rel, link.as_bytes())?;
        }
        made += 1;
    }
    Ok(b.inodes)
}
