//! The host's accounts and the bounds of subordinate ids, so that a container's range
//! never holds the uid or gid of a host account (container root would *be* that
//! account) and `--to auto` stays where /etc/login.defs says subordinate ids go.
//!
//! On the real host, accounts are what NSS sees (`getent passwd`, `getent group`:
//! files, LDAP, sssd, systemd's dynamic users...); under a test prefix, the prefix's
//! `etc/passwd` and `etc/group` are read, as `getent` cannot be redirected.

use super::host::Host;
use crate::engine::idrange::IdRange;
use crate::fsutil::FileError;
use std::path::Path;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot list the host's accounts with `getent {database}`: {reason}; make sure getent (package libc-bin) works, then retry")]
    Getent {
        database: &'static str,
        reason: String,
    },
    #[error("{0}; make sure it is readable, then retry")]
    Io(#[source] FileError),
}

/// An account: a user (its uid) or a group (its gid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub kind: AccountKind,
    pub name: String,
    pub id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Group,
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            AccountKind::User => write!(f, "user {} (uid {})", self.name, self.id),
            AccountKind::Group => write!(f, "group {} (gid {})", self.name, self.id),
        }
    }
}

/// Every user and group of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAccounts {
    pub accounts: Vec<Account>,
}

impl HostAccounts {
    /// Through NSS on the real host, from the prefix's files otherwise.
    pub fn load(host: &Host) -> Result<HostAccounts, AccountError> {
        let (passwd, group) = if host.is_system() {
            (getent("passwd")?, getent("group")?)
        } else {
            (
                read_optional(&host.passwd())?,
                read_optional(&host.group())?,
            )
        };
        Ok(HostAccounts::parse(&passwd, &group))
    }

    /// From the text of passwd and group databases (`name:x:id:...` lines).
    pub fn parse(passwd: &str, group: &str) -> HostAccounts {
        let entries = |text: &str, kind| {
            text.lines()
                .filter_map(move |line| {
                    let mut fields = line.split(':');
                    let name = fields
                        .next()
                        .filter(|n| !n.is_empty() && !n.starts_with(['#', '+', '-']))?;
                    let id = fields.nth(1)?.trim().parse().ok()?;
                    Some(Account {
                        kind,
                        name: name.to_string(),
                        id,
                    })
                })
                .collect::<Vec<_>>()
        };
        let mut accounts = entries(passwd, AccountKind::User);
        accounts.extend(entries(group, AccountKind::Group));
        HostAccounts { accounts }
    }

    /// The first account (lowest id, users first) whose id lies in first..first+count.
    pub fn first_in(&self, first: u32, count: u32) -> Option<&Account> {
        let range = IdRange::new(first, count);
        self.accounts
            .iter()
            .filter(|a| range.contains(a.id))
            .min_by_key(|a| (a.id, a.kind == AccountKind::Group))
    }

    /// Every account id as a range of one, for `subid::lowest_free`.
    pub fn taken(&self) -> Vec<IdRange> {
        self.accounts
            .iter()
            .map(|a| IdRange::new(a.id, 1))
            .collect()
    }
}

/// The passwd database: through NSS on the real host, the prefix's file otherwise.
pub fn passwd_text(host: &Host) -> Result<String, AccountError> {
    match host.is_system() {
        true => getent("passwd"),
        false => read_optional(&host.passwd()),
    }
}

fn getent(database: &'static str) -> Result<String, AccountError> {
    let failed = |reason: String| AccountError::Getent { database, reason };
    let out = Command::new("getent")
        .arg(database)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(failed(format!("{} {stderr}", out.status)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_optional(path: &Path) -> Result<String, AccountError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(AccountError::Io(FileError::new("read", path, source))),
    }
}

/// The ids a range may use, both bounds inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdBounds {
    pub min: u32,
    pub max: u32,
}

/// `SUB_UID_MIN`.. `SUB_UID_MAX` and `SUB_GID_MIN`..`SUB_GID_MAX` of /etc/login.defs
/// (shadow's defaults 100000 and 600100000 when unset): where `useradd` and
/// `--to auto` place subordinate ids. Both bounds are inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIdBounds {
    pub uid_min: u32,
    pub uid_max: u32,
    pub gid_min: u32,
    pub gid_max: u32,
}

impl Default for SubIdBounds {
    fn default() -> Self {
        SubIdBounds {
            uid_min: 100_000,
            uid_max: 600_100_000,
            gid_min: 100_000,
            gid_max: 600_100_000,
        }
    }
}

impl SubIdBounds {
    /// From the host's /etc/login.defs; a missing file gives the defaults.
    pub fn load(host: &Host) -> Result<SubIdBounds, AccountError> {
        Ok(SubIdBounds::parse(&read_optional(&host.login_defs())?))
    }

    /// `KEY VALUE` lines, `#` comments; values decimal, `0x` hex or `0` octal as
    /// shadow's `getdef_ulong` reads them. An unreadable value keeps the default.
    pub fn parse(text: &str) -> SubIdBounds {
        let mut bounds = SubIdBounds::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let Some(value) = parse_number(value.trim_matches('"')) else {
                continue;
            };
            match key {
                "SUB_UID_MIN" => bounds.uid_min = value,
                "SUB_UID_MAX" => bounds.uid_max = value,
                "SUB_GID_MIN" => bounds.gid_min = value,
                "SUB_GID_MAX" => bounds.gid_max = value,
                _ => {}
            }
        }
        bounds
    }

    /// The ids both uid and gid ranges may use (one map serves both): the lowest
    /// first id and the highest last id.
    pub fn both(&self) -> IdBounds {
        IdBounds {
            min: self.uid_min.max(self.gid_min),
            max: self.uid_max.min(self.gid_max),
        }
    }
}

fn parse_number(text: &str) -> Option<u32> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if text.len() > 1 && text.starts_with('0') {
        u32::from_str_radix(&text[1..], 8).ok()
    } else {
        text.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_in_a_range() {
        let accounts = HostAccounts::parse(
            "root:x:0:0:root:/root:/bin/bash\n# comment\nsvc:x:140000:140000::/:/bin/false\nbroken\n+nis\n",
            "root:x:0:\nlate:x:150000:\nsvc:x:140000:\n",
        );
        assert_eq!(accounts.accounts.len(), 5);
        let svc = accounts.first_in(131072, 65536).unwrap();
        assert_eq!(svc.to_string(), "user svc (uid 140000)");
        let late = accounts.first_in(140001, 65536).unwrap();
        assert_eq!(late.to_string(), "group late (gid 150000)");
        assert_eq!(accounts.first_in(150001, 65536), None);
        assert_eq!(accounts.first_in(139999, 1), None, "the end is exclusive");
        assert!(accounts.taken().contains(&IdRange::new(150000, 1)));
    }

    #[test]
    fn login_defs_bounds() {
        assert_eq!(SubIdBounds::parse(""), SubIdBounds::default());
        let defs = "# SUB_UID_MIN 5\nSUB_UID_MIN\t\t  200000\nSUB_UID_MAX 0x10000000\nSUB_GID_MIN 0400000\nSUB_GID_MAX bogus\nUID_MIN 1000\n";
        let bounds = SubIdBounds::parse(defs);
        assert_eq!(
            bounds,
            SubIdBounds {
                uid_min: 200_000,
                uid_max: 0x1000_0000,
                gid_min: 0o400000,
                gid_max: 600_100_000,
            }
        );
        assert_eq!(
            bounds.both(),
            IdBounds {
                min: 200_000,
                max: 0x1000_0000
            }
        );
    }

    #[test]
    fn the_real_host_is_read_through_nss() {
        // getent sees at least root on any host.
        let accounts = HostAccounts::load(&Host::system()).unwrap();
        assert!(accounts
            .accounts
            .iter()
            .any(|a| a.name == "root" && a.id == 0 && a.kind == AccountKind::User));
    }
}
