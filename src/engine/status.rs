//! `status`: what the journal of a tree says, without taking its lock or writing.

use super::journal::{self, JournalError, RunState, State};
use super::run::RunError;
use super::safety;
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub root: PathBuf,
    pub journal: PathBuf,
    /// "none", "unfinished", "finished" or "archived" (back where it started).
    pub state: &'static str,
    /// Another lxc-idshift holds the journal's lock right now.
    pub running: bool,
    pub maps: Option<String>,
    pub runs: Vec<RunState>,
    pub records: usize,
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
            "finished"
        } else {
            "unfinished"
        };
        (state, path.clone(), label)
    } else if archived.exists() {
        (State::read(&archived)?, archived, "archived")
    } else {
        (State::default(), path.clone(), "none")
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
    let free = super::sys::try_lock_exclusive(&file).map_err(|source| JournalError::Io {
        path: path.into(),
        source,
    })?;
    Ok(!free)
}
