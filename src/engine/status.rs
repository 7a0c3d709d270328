//! `status`: what the journal of a tree says, without taking its lock or writing.

use super::journal::{self, JournalError, RunState, State};
use super::run::RunError;
use super::safety;
use crate::fsutil::FileError;
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub root: PathBuf,
    pub journal: PathBuf,
    /// Where its shifts stand: "none", "unfinished", "finished" or "archived".
    pub state: JournalState,
    /// Another lxc-idshift holds the journal's lock right now.
    pub running: bool,
    pub maps: Option<String>,
    pub runs: Vec<RunState>,
    pub records: usize,
}

/// Where the tree's shifts stand, as its journal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalState {
    /// No journal: never shifted here (or its journal was removed).
    #[serde(rename = "none")]
    NoJournal,
    /// The last run stopped before its end: run the same shift again.
    Unfinished,
    Finished,
    /// Back where it started: the journal was put aside.
    Archived,
}

impl JournalState {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalState::NoJournal => "none",
            JournalState::Unfinished => "unfinished",
            JournalState::Finished => "finished",
            JournalState::Archived => "archived",
        }
    }
}

impl std::fmt::Display for JournalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads the journal (or the archived one) of the tree at `root`.
pub fn status(root: &Path, journal_path: Option<&Path>) -> Result<StatusReport, RunError> {
    let root = safety::open_tree(root)?.path;
    let path = journal_path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| journal::default_path(&root));
    let archived = journal::archive_path(&path);
    let (state, read_from, label) = if path.exists() {
        let state = State::read(&path)?;
        let label = if state.last_run_finished() {
            JournalState::Finished
        } else {
            JournalState::Unfinished
        };
        (state, path.clone(), label)
    } else if archived.exists() {
        (State::read(&archived)?, archived, JournalState::Archived)
    } else {
        (State::default(), path.clone(), JournalState::NoJournal)
    };
    Ok(StatusReport {
        root,
        running: is_locked(&path)?,
        journal: read_from,
        state: label,
        maps: state.maps.as_ref().map(|m| m.to_string()),
        records: state.records.len(),
        runs: state.runs,
    })
}

fn is_locked(path: &Path) -> Result<bool, RunError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(_) => return Ok(false),
    };
    let free = super::sys::try_lock_exclusive(&file)
        .map_err(|source| JournalError::from(FileError::new("lock the journal", path, source)))?;
    Ok(!free)
}

#[cfg(test)]
mod tests {
    use super::JournalState;

    #[test]
    fn a_state_reads_the_same_in_json_and_in_text() {
        for (state, word) in [
            (JournalState::NoJournal, "none"),
            (JournalState::Unfinished, "unfinished"),
            (JournalState::Finished, "finished"),
            (JournalState::Archived, "archived"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), word);
            assert_eq!(state.to_string(), word);
        }
    }
}
