//! Reading an inode's id-bearing metadata and writing a shifted version back, with
//! as few system calls as possible and in the one order that loses nothing:
//! chown, then chmod (the chown cleared setuid/setgid), then ACLs, then the
//! capability (the chown removed it).

use super::meta::Meta;
use super::sys::{self, Inode, Stat};
use super::xattr_names::{ACL_ACCESS, ACL_DEFAULT, CAPS};
use rustix::fd::BorrowedFd;
use std::cell::RefCell;
use std::ffi::CStr;
use std::io;

/// A failed system call on one inode: what was attempted and why it failed.
#[derive(Debug)]
pub struct InodeError {
    pub operation: &'static str,
    pub error: io::Error,
}

impl std::fmt::Display for InodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.operation, self.error)
    }
}

fn at(operation: &'static str) -> impl FnOnce(io::Error) -> InodeError {
    move |error| InodeError { operation, error }
}

/// The inode's metadata from its stat alone (no xattrs read).
pub fn meta_from_stat(stat: &Stat) -> Meta {
    Meta {
        uid: stat.uid,
        gid: stat.gid,
        perm: stat.perm(),
        acl_access: None,
        acl_default: None,
        caps: None,
    }
}

thread_local! {
    /// Each worker's listxattr buffer, reused from inode to inode.
    static XATTR_LIST: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The directory an entry is read from: its fd, and its stat for its identity.
#[derive(Clone, Copy)]
pub struct EntryDir<'a> {
    pub fd: BorrowedFd<'a>,
    pub stat: &'a Stat,
}

/// An entry's xattr names listed by name (one lookup, where listing through an
/// `O_PATH` handle costs a walk through `/proc/self/fd`), and the coarse time just
/// before. The name may lead to another inode by the time the handle is opened;
/// [`Listing::of`] keeps the names only when they provably are the opened inode's.
struct Listing {
    taken: (i64, u32),
    names: Option<Vec<u8>>,
}

impl Listing {
    fn take(dir: EntryDir<'_>, name: &CStr) -> Listing {
        let taken = sys::coarse_now();
        let names = XATTR_LIST.with(|buf| {
            let buf = &mut *buf.borrow_mut();
            let listed = sys::list_xattrs_hint(dir.fd, dir.stat.id(), name, buf);
            matches!(listed, Some(Ok(()))).then(|| buf.clone())
        });
        Listing { taken, names }
    }

    /// The names, if they are those of the inode `stat` describes, opened at the
    /// same name after this listing. For the listing to have shown another inode, a
    /// rename or link must have brought this one to the name in between, and that
    /// stamps its ctime with the coarse clock of that moment: `taken` or later (so
    /// does any xattr change). A ctime before `taken` rules both out, on file
    /// systems that stamp renames (`ctime_marks_renames`) and while the clock is
    /// not set back during the run. A ctime without nanoseconds may be truncated to
    /// the second (ext4 with 128-byte inodes): it must be before `taken`'s second.
    /// Otherwise the caller lists through the handle.
    fn of(self, stat: &Stat, ctime_marks_renames: bool) -> Option<Vec<u8>> {
        let bound = match stat.ctime.1 {
            0 => (self.taken.0, 0),
            _ => self.taken,
        };
        self.names
            .filter(|_| ctime_marks_renames && stat.ctime < bound)
    }
}

/// Opens entry `name` of `dir` for a change, its xattr names listed by name just
/// before and kept when they provably are its own (see [`Listing::of`]).
pub fn open_entry(dir: EntryDir<'_>, name: &CStr, ctime_marks_renames: bool) -> io::Result<Inode> {
    let listing = Listing::take(dir, name);
    let mut inode = Inode::open_at(dir.fd, name)?;
    inode.listed_xattrs = listing.of(&inode.stat, ctime_marks_renames);
    Ok(inode)
}

/// Stats entry `name` of `dir` for a walk that only reads: such an inode is read
/// by name throughout (its xattrs only if asked for), and nothing is changed.
pub fn stat_entry(dir: EntryDir<'_>, name: &CStr) -> io::Result<Inode> {
    Inode::stat_at(dir.fd, dir.stat, name)
}

/// The inode's metadata including its id-bearing xattrs, symlinks' included: the
/// names listed when it was opened if they are provably its own, else listed now
/// (through the handle; by name for a walk that only reads); the values are read
/// the same way, so a handle's are always this inode's. An inode whose listing or values cannot be read is an error: it
/// must not be chowned (a chown would remove its capability).
pub fn read_meta(inode: &Inode) -> Result<Meta, InodeError> {
    XATTR_LIST.with(|list| read_meta_with(inode, &mut list.borrow_mut()))
}

fn read_meta_with(inode: &Inode, list: &mut Vec<u8>) -> Result<Meta, InodeError> {
    let mut meta = meta_from_stat(&inode.stat);
    let names: &[u8] = match &inode.listed_xattrs {
        Some(names) => names,
        None => {
            inode.list_xattrs(list).map_err(at("list xattrs"))?;
            list
        }
    };
    let present = |attr: &CStr| names.split(|b| *b == 0).any(|n| n == attr.to_bytes());
    let get = |attr: &CStr| -> Result<Option<Vec<u8>>, InodeError> {
        match present(attr) {
            true => inode.get_xattr(attr).map_err(at("read xattr")),
            false => Ok(None),
        }
    };
    meta.acl_access = get(ACL_ACCESS)?;
    meta.acl_default = get(ACL_DEFAULT)?;
    meta.caps = get(CAPS)?;
    Ok(meta)
}

/// What `apply` changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub changed: bool,
    pub acls: bool,
    pub caps: bool,
    pub setid_restored: bool,
}

/// Makes the inode's metadata `target`, given that it is `current` now. With
/// `stamp_first`, the inode's ctime is stamped before anything changes, so that no
/// change can reach the disk without a new ctime (see `journal`'s crash argument).
pub fn apply(
    inode: &Inode,
    current: &Meta,
    target: &Meta,
    stamp_first: bool,
) -> Result<Applied, InodeError> {
    let stat = &inode.stat;
    let mut applied = Applied::default();
    let chowned = current.uid != target.uid || current.gid != target.gid;
    let stamped = stamp_first && current != target;
    if stamped {
        // A chown to -1:-1: failing, it fails as the chown itself would (EPERM...).
        inode.stamp_ctime().map_err(at("chown"))?;
    }
    if chowned {
        inode.chown(target.uid, target.gid).map_err(at("chown"))?;
    }
    // A chown of a non-directory (the stamp is one) clears setuid/setgid (setgid
    // only with g+x): restore the intended bits whenever they may have been touched.
    let owner_reset = chowned || stamped;
    let setid_at_risk = owner_reset && !stat.is_dir() && target.perm & 0o6000 != 0;
    if !stat.is_symlink() && (setid_at_risk || current.perm != target.perm) {
        inode.chmod(target.perm).map_err(at("chmod"))?;
        applied.setid_restored = setid_at_risk;
    }
    let acls = [
        (ACL_ACCESS, &current.acl_access, &target.acl_access),
        (ACL_DEFAULT, &current.acl_default, &target.acl_default),
    ];
    for (attr, now, wanted) in acls {
        applied.acls |= write_xattr(inode, attr, now, wanted, false)?;
    }
    // The kernel removes security.capability on the chown of anything but a
    // directory, symlinks included.
    let caps_removed = owner_reset && !stat.is_dir();
    applied.caps = write_xattr(inode, CAPS, &current.caps, &target.caps, caps_removed)?;
    applied.changed = chowned || current != target;
    Ok(applied)
}

/// Writes (or removes) one xattr when it differs, or unconditionally when the
/// kernel removed it behind our back (`gone`). Returns whether it wrote.
fn write_xattr(
    inode: &Inode,
    attr: &CStr,
    current: &Option<Vec<u8>>,
    target: &Option<Vec<u8>>,
    gone: bool,
) -> Result<bool, InodeError> {
    if current == target && !(gone && target.is_some()) {
        return Ok(false);
    }
    match target {
        Some(value) => inode.set_xattr(attr, value).map_err(at("write xattr"))?,
        None if gone => {}
        None => inode.remove_xattr(attr).map_err(at("remove xattr"))?,
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{acl_xattr, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ};
    use rustix::fd::AsFd;

    fn acl() -> Vec<u8> {
        acl_xattr(&[
            (ACL_USER_OBJ, 6, 0),
            (ACL_USER, 4, 1000),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_MASK, 4, 0),
            (ACL_OTHER, 4, 0),
        ])
    }

    fn with_acl(path: &std::path::Path) {
        std::fs::write(path, b"").unwrap();
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::lsetxattr(path, ACL_ACCESS, &acl(), flags).unwrap();
    }

    fn listed(names: &Option<Vec<u8>>, attr: &CStr) -> bool {
        let names = names.as_deref().expect("a listing");
        names.split(|b| *b == 0).any(|n| n == attr.to_bytes())
    }

    /// A change stamped first (the journal's rule for an untouched inode on ext4)
    /// gets a new ctime before anything else, and loses nothing the stamp's chown
    /// clears: a setuid file with a capability whose only change is an ACL entry
    /// keeps both. Root only (setting a capability).
    #[test]
    fn a_stamped_change_keeps_setuid_and_capability() {
        if !crate::is_root() {
            eprintln!("SKIPPED a_stamped_change_keeps_setuid_and_capability: needs root");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root"
            );
            return;
        }
        // An ACL that agrees with mode 4755, naming `user`.
        let acl_for = |user| {
            acl_xattr(&[
                (ACL_USER_OBJ, 7, 0),
                (ACL_USER, 4, user),
                (ACL_GROUP_OBJ, 5, 0),
                (ACL_MASK, 5, 0),
                (ACL_OTHER, 5, 0),
            ])
        };
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let caps = crate::sample::caps_v2(1 << 13, true);
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::lsetxattr(&path, ACL_ACCESS, &acl_for(1000), flags).unwrap();
        rustix::fs::lsetxattr(&path, CAPS, &caps, flags).unwrap();
        rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(0o4755)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let dir = sys::open_dir_path(tmp.path()).unwrap();
        let inode = Inode::open_at(dir.as_fd(), c"f").unwrap();
        let current = read_meta(&inode).unwrap();
        assert_eq!((current.perm, current.caps.as_ref()), (0o4755, Some(&caps)));
        let mut target = current.clone();
        target.acl_access = Some(acl_for(1_001_000));
        let applied = apply(&inode, &current, &target, true).unwrap();
        assert!(applied.changed && applied.setid_restored && applied.caps);
        let after = Inode::open_at(dir.as_fd(), c"f").unwrap();
        assert!(after.stat.ctime > inode.stat.ctime, "the ctime moved");
        assert_eq!(read_meta(&after).unwrap(), target);
        let unchanged = apply(&after, &target, &target, true).unwrap();
        assert_eq!(unchanged, Applied::default(), "no change, no stamp");
        assert_eq!(Inode::open_at(dir.as_fd(), c"f").unwrap().stat, after.stat);
    }

    /// A listing is kept only for an inode whose ctime is before the listing's
    /// clock reading (before its second when the ctime has no nanoseconds), and
    /// only on a file system that stamps renames.
    #[test]
    fn a_listing_is_kept_only_for_an_inode_settled_before_it() {
        // Before 6.13 a thread lists by name from a working directory of its own.
        sys::own_working_directory();
        let tmp = tempfile::tempdir().unwrap();
        with_acl(&tmp.path().join("f"));
        let dir = sys::open_dir_path(tmp.path()).unwrap();
        let dir_stat = sys::stat_fd(dir.as_fd()).unwrap();
        let entry_dir = EntryDir {
            fd: dir.as_fd(),
            stat: &dir_stat,
        };
        let listed_at = |taken: (i64, u32)| Listing {
            taken,
            ..Listing::take(entry_dir, c"f")
        };
        let mut stat = Inode::open_at(dir.as_fd(), c"f").unwrap().stat;
        for ctime in [(1_700_000_000, 250), (1_700_000_000, 0)] {
            stat.ctime = ctime;
            let later = (ctime.0 + 1, 0);
            assert!(listed(&listed_at(later).of(&stat, true), ACL_ACCESS));
            assert_eq!(listed_at(later).of(&stat, false), None, "not a marking fs");
            assert_eq!(listed_at(ctime).of(&stat, true), None, "the same tick");
        }
        stat.ctime = (1_700_000_000, 250);
        let next_tick = (1_700_000_000, 4_000_250);
        assert!(listed(&listed_at(next_tick).of(&stat, true), ACL_ACCESS));
        stat.ctime = (1_700_000_000, 0);
        assert_eq!(
            listed_at(next_tick).of(&stat, true),
            None,
            "maybe truncated"
        );
        sys::leave_working_directory();
    }

    /// The race itself, on the real clock: "f" (no xattrs) is listed, then "g" (an
    /// ACL), settled long before, is renamed over it before it is opened. The rename stamps g's ctime, so the listing is not taken for g's
    /// and its ACL is read; a settled, untouched "h" keeps its listing.
    #[test]
    fn a_listing_of_another_inode_is_never_taken_for_the_opened_ones() {
        // Before 6.13 a thread lists by name from a working directory of its own.
        sys::own_working_directory();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        with_acl(&tmp.path().join("g"));
        with_acl(&tmp.path().join("h"));
        let dir = sys::open_dir_path(tmp.path()).unwrap();
        // Whatever the temporary directory's file system: the replay shows that its
        // renames stamp the ctime (`ctime_marks_renames` says which ones are trusted).
        let marks = true;
        // Settles h's ctime, even on a file system that keeps whole seconds.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let dir_stat = sys::stat_fd(dir.as_fd()).unwrap();
        let entry_dir = EntryDir {
            fd: dir.as_fd(),
            stat: &dir_stat,
        };
        let listing = Listing::take(entry_dir, c"f");
        assert_eq!(listing.names.as_deref(), Some(&b""[..]));
        std::fs::rename(tmp.path().join("g"), tmp.path().join("f")).unwrap();
        let mut inode = Inode::open_at(dir.as_fd(), c"f").unwrap();
        inode.listed_xattrs = listing.of(&inode.stat, marks);
        assert_eq!(inode.listed_xattrs, None);
        assert_eq!(read_meta(&inode).unwrap().acl_access, Some(acl()));
        let settled = open_entry(entry_dir, c"h", marks).unwrap();
        assert!(listed(&settled.listed_xattrs, ACL_ACCESS));
        assert_eq!(read_meta(&settled).unwrap().acl_access, Some(acl()));
        sys::leave_working_directory();
    }

    /// A listing that fails (the name did not exist yet when it was listed) gives
    /// way to the listing through the handle: the ACL is read, never taken for
    /// absent, and no error is reported.
    #[test]
    fn a_failed_listing_gives_way_to_the_handle() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = sys::open_dir_path(tmp.path()).unwrap();
        let dir_stat = sys::stat_fd(dir.as_fd()).unwrap();
        let entry_dir = EntryDir {
            fd: dir.as_fd(),
            stat: &dir_stat,
        };
        let listing = Listing {
            taken: (i64::MAX, 0),
            ..Listing::take(entry_dir, c"f")
        };
        assert_eq!(listing.names, None);
        with_acl(&tmp.path().join("f"));
        let mut inode = Inode::open_at(dir.as_fd(), c"f").unwrap();
        inode.listed_xattrs = listing.of(&inode.stat, true);
        assert_eq!(read_meta(&inode).unwrap().acl_access, Some(acl()));
    }
}
