//! Where the host's files live. Every host path goes through [`Host`] so tests can
//! point the conversion at a tempdir instead of the real `/etc` and `/sys`.

use std::path::{Path, PathBuf};

/// Paths of the host's files, under a root prefix ("/" in production, a tempdir in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub root: PathBuf,
}

impl Host {
    /// The real host.
    pub fn system() -> Host {
        Host::under("/")
    }

    /// A host whose files live under `root` (a tempdir in tests).
    pub fn under(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    /// `absolute` re-rooted under `root`: "/etc/subuid" -> root/etc/subuid.
    /// A relative path is taken as relative to the root too, so nothing escapes it by accident.
    pub fn path(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let absolute = absolute.as_ref();
        // `join` with an absolute path would replace the root: strip the leading "/".
        let relative = absolute.strip_prefix("/").unwrap_or(absolute);
        self.root.join(relative)
    }

    pub fn subuid(&self) -> PathBuf {
        self.path("/etc/subuid")
    }

    pub fn subgid(&self) -> PathBuf {
        self.path("/etc/subgid")
    }

    pub fn udev_rules_dir(&self) -> PathBuf {
        self.path("/etc/udev/rules.d")
    }

    pub fn sys(&self) -> PathBuf {
        self.path("/sys")
    }

    /// Whether this is the real host: its accounts are then looked up through NSS
    /// (`getent`), not read from `etc/passwd` under the prefix.
    pub fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn passwd(&self) -> PathBuf {
        self.path("/etc/passwd")
    }

    pub fn group(&self) -> PathBuf {
        self.path("/etc/group")
    }

    pub fn login_defs(&self) -> PathBuf {
        self.path("/etc/login.defs")
    }

    /// The lock `lckpwdf()` takes (an fcntl lock) before shadow's tools edit
    /// /etc/passwd, /etc/subuid and the like.
    pub fn pwd_lock(&self) -> PathBuf {
        self.path("/etc/.pwd.lock")
    }

    /// The host-wide lock that serializes conversions (a flock).
    pub fn conversion_lock(&self) -> PathBuf {
        self.path("/run/lock/lxc-idshift.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_paths_are_the_real_ones() {
        let h = Host::system();
        assert_eq!(h.subuid(), Path::new("/etc/subuid"));
        assert_eq!(h.subgid(), Path::new("/etc/subgid"));
        assert_eq!(h.udev_rules_dir(), Path::new("/etc/udev/rules.d"));
        assert_eq!(h.sys(), Path::new("/sys"));
        assert_eq!(h.pwd_lock(), Path::new("/etc/.pwd.lock"));
        assert_eq!(h.conversion_lock(), Path::new("/run/lock/lxc-idshift.lock"));
        assert!(h.is_system());
        assert!(!Host::under("/tmp/fake").is_system());
    }

    #[test]
    fn paths_are_rerooted_under_the_prefix() {
        let h = Host::under("/tmp/fake");
        assert_eq!(h.path("/etc/subuid"), Path::new("/tmp/fake/etc/subuid"));
        assert_eq!(h.path("etc/group"), Path::new("/tmp/fake/etc/group"));
        assert_eq!(h.sys(), Path::new("/tmp/fake/sys"));
        assert_eq!(h.udev_rules_dir(), Path::new("/tmp/fake/etc/udev/rules.d"));
    }
}
