//! The start guard: lines a conversion appends to the container's config before its
//! first write, and that go with its last (the config is written last, from the
//! text without them). While they are there, every start that goes through LXC
//! (`lxc-start`, `lxc-autostart`, the lxc@ systemd unit, anything using liblxc)
//! reads them: `lxc.start.auto = 0` takes the container out of autostart, and a
//! pre-start hook that fails aborts any start before the container's init runs.
//! Nothing that starts a container through LXC can skip its config's hooks.
//!
//! No name or path goes into the lines: nothing a container or user chose is
//! written into a file LXC runs commands from.

/// First line of the guard; the variant records that the config's last line had no
/// line ending, so that taking the guard away gives back the exact bytes.
const BEGIN: &str = "# lxc-idshift: start guard: a conversion of this container is unfinished";
const BEGIN_AFTER_UNENDED: &str =
    "# lxc-idshift: start guard (after an unended line): a conversion of this container is unfinished";

/// The rest of the guard.
const BODY: &str = "\
# (`lxc-idshift list` shows the command that finishes or undoes it; these lines go with it)
lxc.start.auto = 0
lxc.hook.pre-start = /bin/sh -c 'echo \"lxc-idshift: this container cannot start: a conversion of it is unfinished; lxc-idshift list shows the command that finishes or undoes it\" >&2; exit 1'
";

/// Whether `text` ends with the guard.
pub fn is_guarded(text: &str) -> bool {
    without_guard(text).is_some()
}

/// `text` with the guard at its end (unchanged when it has one already).
pub fn with_guard(text: &str) -> String {
    if is_guarded(text) {
        return text.to_string();
    }
    let begin = match text.is_empty() || text.ends_with('\n') {
        true => format!("{BEGIN}\n"),
        false => format!("\n{BEGIN_AFTER_UNENDED}\n"),
    };
    format!("{text}{begin}{BODY}")
}

/// `text` without the guard at its end, byte for byte as before it was added; None
/// when it has none.
pub fn without_guard(text: &str) -> Option<String> {
    let head = text.strip_suffix(BODY)?;
    if let Some(before) = head.strip_suffix(&format!("\n{BEGIN_AFTER_UNENDED}\n")) {
        return Some(before.to_string());
    }
    let before = head.strip_suffix(&format!("{BEGIN}\n"))?;
    (before.is_empty() || before.ends_with('\n')).then(|| before.to_string())
}

/// The config `text` as it is without a guard.
pub fn unguarded(text: &str) -> String {
    without_guard(text).unwrap_or_else(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxc::config::ContainerConfig;

    #[test]
    fn the_guard_goes_away_leaving_the_exact_bytes() {
        for text in ["", "lxc.uts.name = a\n", "lxc.uts.name = a", "a\n\n", "# x"] {
            let guarded = with_guard(text);
            assert!(is_guarded(&guarded), "{text:?}");
            assert_eq!(without_guard(&guarded).as_deref(), Some(text), "{text:?}");
            assert_eq!(with_guard(&guarded), guarded, "added once");
            assert!(!is_guarded(text));
        }
    }

    /// LXC reads the guard's keys: autostart off (the last assignment wins) and a
    /// pre-start hook.
    #[test]
    fn lxc_reads_autostart_off_and_a_hook() {
        let config = ContainerConfig::parse(&with_guard("lxc.start.auto = 1\n"));
        assert_eq!(config.value("lxc.start.auto"), Some("0"));
        let hook = config
            .value("lxc.hook.pre-start")
            .expect("a pre-start hook");
        assert!(hook.starts_with("/bin/sh -c '") && hook.ends_with("exit 1'"));
    }

    /// Lines that only look like a guard (edited by hand) are no guard: nothing of
    /// them is taken away.
    #[test]
    fn a_changed_guard_is_not_taken_away() {
        let guarded = with_guard("a = 1\n");
        let edited = guarded.replace("lxc.start.auto = 0", "lxc.start.auto = 1");
        assert_eq!(without_guard(&edited), None);
        assert_eq!(without_guard(&format!("{guarded}b = 2\n")), None);
    }
}
