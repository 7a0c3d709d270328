//! The devices a container's cgroup lets it open: `lxc.cgroup2.devices.allow` and
//! `.deny` lines (and their cgroup v1 spelling), in order. A node of a `/dev`
//! directory bind-mounted into the container (`/dev/dri`, `/dev/bus/usb`) is passed
//! through when these lines allow it.

/// One rule: `a`, or `TYPE MAJOR:MINOR ACCESS` with `*` for any number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// 'a' (every device), 'c' or 'b'.
    kind: char,
    major: Option<u32>,
    minor: Option<u32>,
}

impl Rule {
    fn parse(value: &str) -> Option<Rule> {
        let mut words = value.split_whitespace();
        let kind = words.next()?.chars().next()?;
        if kind == 'a' {
            return Some(Rule {
                kind,
                major: None,
                minor: None,
            });
        }
        let (major, minor) = words.next()?.split_once(':')?;
        let number = |text: &str| match text {
            "*" => Some(None),
            _ => text.parse().ok().map(Some),
        };
        matches!(kind, 'c' | 'b').then_some(Rule {
            kind,
            major: number(major)?,
            minor: number(minor)?,
        })
    }

    fn matches(&self, is_char: bool, major: u32, minor: u32) -> bool {
        let kind = self.kind == 'a' || self.kind == if is_char { 'c' } else { 'b' };
        kind && self.major.is_none_or(|m| m == major) && self.minor.is_none_or(|m| m == minor)
    }
}

/// The allow and deny lines of a config and its includes, in the order LXC reads
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceAccess {
    rules: Vec<(bool, Rule)>,
}

impl DeviceAccess {
    /// Takes one assignment: a devices key adds its rule, any other key is ignored.
    pub fn take(&mut self, key: &str, value: &str) {
        let allow = match key {
            "lxc.cgroup2.devices.allow" | "lxc.cgroup.devices.allow" => true,
            "lxc.cgroup2.devices.deny" | "lxc.cgroup.devices.deny" => false,
            _ => return,
        };
        if let Some(rule) = Rule::parse(value) {
            self.rules.push((allow, rule));
        }
    }

    /// Whether the last rule matching the device allows it (nothing matching: denied,
    /// as LXC's default list is).
    pub fn allows(&self, is_char: bool, major: u32, minor: u32) -> bool {
        (self.rules.iter().rev())
            .find(|(_, rule)| rule.matches(is_char, major, minor))
            .is_some_and(|(allow, _)| *allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(lines: &[(&str, &str)]) -> DeviceAccess {
        let mut access = DeviceAccess::default();
        for (key, value) in lines {
            access.take(key, value);
        }
        access
    }

    #[test]
    fn the_last_matching_line_decides() {
        let gpu = access(&[
            ("lxc.cgroup2.devices.deny", "a"),
            ("lxc.cgroup2.devices.allow", "c 226:* rwm"),
            ("lxc.cgroup2.devices.deny", "c 226:129 rwm"),
        ]);
        assert!(gpu.allows(true, 226, 128));
        assert!(!gpu.allows(true, 226, 129), "denied after the allow");
        assert!(!gpu.allows(false, 226, 0), "a block device is another kind");
        assert!(!gpu.allows(true, 189, 1), "nothing matches: denied");
        let usb = access(&[("lxc.cgroup.devices.allow", "c 189:* rwm")]);
        assert!(
            usb.allows(true, 189, 3),
            "the cgroup v1 spelling counts too"
        );
        assert!(access(&[("lxc.cgroup2.devices.allow", "a")]).allows(false, 8, 0));
    }

    #[test]
    fn lines_that_do_not_parse_are_no_rule() {
        let odd = access(&[
            ("lxc.cgroup2.devices.allow", "c 226 rwm"),
            ("lxc.cgroup2.devices.allow", "x 1:2 rwm"),
            ("lxc.cgroup2.devices.allow", ""),
            ("lxc.cgroup2.memory.max", "1G"),
        ]);
        assert_eq!(odd, DeviceAccess::default());
    }
}
