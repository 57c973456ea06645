//! What a resumable upload remembers between runs: for each tus upload in progress, its URL
//! and the digests of the file it was started for, keyed by transfer, path, size and mtime.
//!
//! One small file per upload (named by the SHA-256 of its path) under
//! `$AIRLOCK_CACHE_DIR`, else `$XDG_CACHE_HOME/airlock`, else `~/.cache/airlock`, then
//! `transfers/<transfer id>/`. One file per upload, not one file for all, keeps each write
//! the same size however many files the transfer holds. Each is written to a temporary file,
//! synced, and renamed over the old one, so a SIGKILL leaves the old entry or the new one,
//! never half of either. The offset is not kept: the server's HEAD is the truth.

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A tus upload started by an earlier run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The path in the transfer.
    pub path: String,
    pub size: u64,
    pub mtime: (i64, i64),
    /// The tus upload URL as the server's Location gave it (usually a path, resolved
    /// against the server address of each run).
    pub url: String,
    /// Digests of the local file, once hashed: empty until then (the hashing runs while the
    /// first chunks are sent), and hashed again by a run that resumes before it finished.
    pub sha256: String,
    pub blake3: String,
}

impl Entry {
    /// Whether this entry was made for the file as it is now.
    pub fn matches(&self, size: u64, mtime: (i64, i64)) -> bool {
        self.size == size && self.mtime == mtime
    }
}

/// The cache folder of one transfer.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// Whether the folder may hold an entry (it held one when opened, or one was saved since):
    /// a first run of 100,000 files then costs no failed open per file.
    had_entries: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// `$AIRLOCK_CACHE_DIR`, `$XDG_CACHE_HOME/airlock` or `~/.cache/airlock`.
pub fn cache_root() -> anyhow::Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("AIRLOCK_CACHE_DIR") {
        return Ok(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Ok(d.join("airlock"));
    }
    var("HOME")
        .map(|h| h.join(".cache").join("airlock"))
        .ok_or_else(|| anyhow!("set AIRLOCK_CACHE_DIR (or HOME) for the upload state"))
}

impl StateDir {
    /// Opens (creating, private to the user) the folder of `transfer` under `root`.
    pub fn open(root: &Path, transfer: &str) -> anyhow::Result<Self> {
        let dir = root.join("transfers").join(transfer);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the upload state folder {}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        // The entries name upload URLs and paths: nobody else's business.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).ok();
        let had_entries = std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true);
        Ok(Self {
            dir,
            had_entries: std::sync::Arc::new(had_entries.into()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_for(&self, path: &str) -> PathBuf {
        let key = hex::encode(sha2::Sha256::digest(path.as_bytes()));
        self.dir.join(format!("{key}.json"))
    }

    /// The entry for `path`, if one was saved and reads back whole. An unreadable entry is as
    /// good as none: the file is sent again from the start.
    pub fn load(&self, path: &str) -> Option<Entry> {
        if !self.had_entries.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let raw = std::fs::read(self.file_for(path)).ok()?;
        serde_json::from_slice::<Entry>(&raw)
            .ok()
            .filter(|e| e.path == path)
    }

    /// Saves `entry` atomically: temporary file, fsync, rename, fsync of the folder.
    pub fn save(&self, entry: &Entry) -> anyhow::Result<()> {
        self.had_entries
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let target = self.file_for(&entry.path);
        let tmp = target.with_extension(format!("tmp{}", std::process::id()));
        let body = serde_json::to_vec(entry)?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("cannot save upload state in {}", self.dir.display()))
    }

    /// Forgets `path` (its upload finished, or is being started over).
    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.file_for(path)).ok();
    }

    /// Removes the folder if nothing is left in it.
    pub fn tidy(&self) {
        std::fs::remove_dir(&self.dir).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            path: path.into(),
            size: 10,
            mtime: (1, 2),
            url: "http://x/tus/1".into(),
            sha256: "a".repeat(64),
            blake3: "b".repeat(64),
        }
    }

    #[test]
    fn entries_round_trip_and_are_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path(), "t1").unwrap();
        assert!(s.load("a/b").is_none());
        s.save(&entry("a/b")).unwrap();
        assert_eq!(s.load("a/b"), Some(entry("a/b")));
        assert!(s.load("a/c").is_none());
        let mut e = entry("a/b");
        e.size = 11;
        s.save(&e).unwrap();
        assert_eq!(s.load("a/b").unwrap().size, 11);
        s.remove("a/b");
        assert!(s.load("a/b").is_none());
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(s.dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_torn_entry_reads_as_none() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path(), "t1").unwrap();
        s.save(&entry("x")).unwrap();
        let f = s.file_for("x");
        let raw = std::fs::read(&f).unwrap();
        std::fs::write(&f, &raw[..raw.len() / 2]).unwrap();
        assert!(s.load("x").is_none());
    }

    #[test]
    fn matches_needs_size_and_mtime() {
        let e = entry("x");
        assert!(e.matches(10, (1, 2)));
        assert!(!e.matches(10, (1, 3)));
        assert!(!e.matches(11, (1, 2)));
    }
}
