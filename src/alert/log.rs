//! `--alerts-out`: every alert transition as one JSON line — the Alertmanager v2 alert plus
//! `"status"` — the same from `run` and `replay`, so a day's live alerts can be compared with a
//! replay of the same logs. Each line goes out whole in one write, so a reader following the
//! file never sees half a transition.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use super::Transition;

/// An open `--alerts-out` file.
pub struct TransitionLog(Mutex<File>);

impl TransitionLog {
    /// A new file, emptied first (`replay`: one run's transitions).
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(TransitionLog(Mutex::new(File::create(path)?)))
    }

    /// Appended to (`run`: an audit trail across restarts).
    pub fn append(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(TransitionLog(Mutex::new(file)))
    }

    pub fn write(&self, t: &Transition) -> io::Result<()> {
        let line = format!("{}\n", t.alert.to_alertmanager(t.status));
        // A poisoned lock only means another writer panicked between whole lines.
        let mut file = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(line.as_bytes())
    }
}
