//! A directory of its own per test under the system's temp directory, named after the test
//! binary's process so parallel runs never share one, emptied when created and removed on drop.

use std::path::{Path, PathBuf};

pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `albwatch-{kind}-{pid}-{name}`, empty.
    pub fn new(kind: &str, name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("albwatch-{kind}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creates the temp dir");
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
