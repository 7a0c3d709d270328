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

/// The inode's metadata including its id-bearing xattrs, symlinks' included. The
/// names are listed by name in `dir` where the kernel allows (cheap, but only a hint:
/// the name may meanwhile lead elsewhere); whatever is read is read through the
/// handle, so it is always this inode's. A hint that fails (the name was renamed
/// away) gives way to the listing through the handle. An inode whose listing or
/// values cannot be read is an error: it must not be chowned (a chown would remove
/// its capability).
pub fn read_meta(dir: EntryDir<'_>, name: &CStr, inode: &Inode) -> Result<Meta, InodeError> {
    XATTR_LIST.with(|list| read_meta_with(dir, name, inode, &mut list.borrow_mut()))
}

fn read_meta_with(
    dir: EntryDir<'_>,
    name: &CStr,
    inode: &Inode,
    list: &mut Vec<u8>,
) -> Result<Meta, InodeError> {
    let mut meta = meta_from_stat(&inode.stat);
    let hinted = sys::list_xattrs_hint(dir.fd, dir.stat, name, list);
    if !matches!(hinted, Some(Ok(()))) {
        inode.list_xattrs(list).map_err(at("list xattrs"))?;
    }
    let present = |attr: &CStr| list.split(|b| *b == 0).any(|n| n == attr.to_bytes());
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

/// Makes the inode's metadata `target`, given that it is `current` now.
pub fn apply(inode: &Inode, current: &Meta, target: &Meta) -> Result<Applied, InodeError> {
    let stat = &inode.stat;
    let mut applied = Applied::default();
    let chowned = current.uid != target.uid || current.gid != target.gid;
    if chowned {
        inode.chown(target.uid, target.gid).map_err(at("chown"))?;
    }
    // A chown of a non-directory clears setuid/setgid (and setgid only with g+x):
    // restore the intended bits whenever they may have been touched.
    let setid_at_risk = chowned && !stat.is_dir() && target.perm & 0o6000 != 0;
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
    let caps_removed = chowned && !stat.is_dir();
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

    /// A by-name hint that fails (its name was renamed away after the handle was
    /// opened) gives way to the listing through the handle: the inode's ACL is
    /// still read, never taken for absent, and no error is reported.
    #[test]
    fn a_failed_hint_falls_back_to_the_handle() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let dir = sys::open_dir_path(tmp.path()).unwrap();
        let inode = Inode::open_at(dir.as_fd(), c"f").unwrap();
        let acl = acl_xattr(&[
            (ACL_USER_OBJ, 6, 0),
            (ACL_USER, 4, 1000),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_MASK, 4, 0),
            (ACL_OTHER, 4, 0),
        ]);
        inode.set_xattr(ACL_ACCESS, &acl).unwrap();
        std::fs::rename(tmp.path().join("f"), tmp.path().join("g")).unwrap();
        let dir_stat = sys::stat_fd(dir.as_fd()).unwrap();
        let entry_dir = EntryDir {
            fd: dir.as_fd(),
            stat: &dir_stat,
        };
        let meta = read_meta(entry_dir, c"f", &inode).unwrap();
        assert_eq!(meta.acl_access, Some(acl));
    }
}
