//! One config line, verbatim: its text and ending, how LXC reads a `key = value`
//! assignment from it, and how a value is written so that it reads back as itself.

use super::{IDMAP_KEYS, INCLUDE_KEY};
use std::path::Path;

/// One line: its text without the line ending, and the ending ("\n", "\r\n", or ""
/// for a last line without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) text: String,
    pub(super) eol: String,
}

impl Line {
    /// A new line; its ending is set by `ContainerConfig::edited`.
    pub(super) fn new(text: String) -> Line {
        Line {
            text,
            eol: String::new(),
        }
    }

    /// `(key, value)` of an assignment; None for blank lines, comments and other text.
    pub(super) fn entry(&self) -> Option<(&str, &str)> {
        let text = self.text.trim_start();
        if text.starts_with('#') {
            return None;
        }
        let (key, value) = text.split_once('=')?;
        Some((key.trim(), unquote(value.trim())))
    }

    pub(super) fn value_of(&self, key: &str) -> Option<&str> {
        self.entry().filter(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub(super) fn is_idmap(&self) -> bool {
        self.entry().is_some_and(|(k, _)| IDMAP_KEYS.contains(&k))
    }

    pub(super) fn include(&self) -> Option<&Path> {
        self.value_of(INCLUDE_KEY)
            .filter(|v| !v.is_empty())
            .map(Path::new)
    }

    /// The same line with another value: indentation, key and spacing (trailing
    /// spaces too) are kept so that the diff shows only the value changing, and
    /// changing it back gives the same bytes.
    pub(super) fn with_value(&self, value: &str) -> Line {
        let eq = self.text.find('=').map_or(self.text.len(), |i| i + 1);
        let after = &self.text[eq..];
        let gap = after.len() - after.trim_start().len();
        let trail = &after[after.trim_end().len().max(gap)..];
        Line {
            text: format!("{}{value}{trail}", &self.text[..eq + gap]),
            eol: self.eol.clone(),
        }
    }
}

/// Drops one pair of matching quotes around a value, as LXC does.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// Splits one `split_inclusive` piece into text and line ending.
pub(super) fn split_line(raw: &str) -> Line {
    let (text, eol) = if let Some(t) = raw.strip_suffix("\r\n") {
        (t, "\r\n")
    } else if let Some(t) = raw.strip_suffix('\n') {
        (t, "\n")
    } else {
        (raw, "")
    };
    Line {
        text: text.to_string(),
        eol: eol.to_string(),
    }
}

/// `value` as written after `key = `, so that it reads back as itself: quoted when
/// LXC would otherwise trim its outer spaces or drop quotes around it.
pub(super) fn written_value(value: &str) -> String {
    if value.trim() != value || unquote(value) != value {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}
