//! Scanners: every file of a sealed transfer is scanned before anyone is asked to approve it.
//!
//! A [`Scanner`] looks at one file and says what it found: [`Outcome::Clean`],
//! [`Outcome::Infected`] (with the signature or finding name) or [`Outcome::Unscannable`] (with
//! the reason); an `Err` means the scanner could not answer (clamd down, a timeout), which is
//! never a pass. Archives are opened by [`archive`], and each member goes through the same
//! scanners. The pipeline that runs them over a transfer is `workflow::scanning`.
//!
//! Scanners are configured by files in `scanners/` (compiled in; `[scanning] dir` points to an
//! operator's folder instead): `clamav.toml`, `filetype.toml`, `archive.toml`, and any number of
//! command scanners. A policy names the ones every file must pass.

pub mod archive;
pub mod clamav;
pub mod command;
pub mod disclosure;
pub mod filetype;

use crate::domain::TransferKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a scanner found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    /// The signature or finding name.
    Infected(String),
    /// Why the file could not be scanned (`size: …`, `encrypted: …`).
    Unscannable(String),
}

/// The verdict kinds recorded per file and scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Clean,
    Infected,
    Unscannable,
    Error,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Infected => "infected",
            Self::Unscannable => "unscannable",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Clean, Self::Infected, Self::Unscannable, Self::Error]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The versions a verdict is pinned to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions {
    /// The scanner's own version (`ClamAV 1.4.3`).
    pub scanner: String,
    /// Its signature database's version; empty for scanners without one.
    pub database: String,
}

/// One file to scan: where its bytes are and what the policy says about it.
pub struct Target<'a> {
    /// Where the bytes are. With `data`, a scanner that [`Scanner::reads_memory`] must not
    /// open it (nothing may be written there).
    pub path: &'a Path,
    /// The whole file, when it is small enough to be read once for every scanner.
    pub data: Option<&'a bytes::Bytes>,
    pub size: u64,
    pub kind: TransferKind,
    pub rules: &'a crate::policy::Scanning,
}

#[async_trait::async_trait]
pub trait Scanner: Send + Sync {
    /// The name policies use (the configuration file's name).
    fn name(&self) -> &str;
    /// The scanner's and its database's versions now. `Err` if it cannot be reached.
    async fn versions(&self) -> Result<Versions, String>;
    /// Scans one file. `Err` means no verdict (the scanner failed): never a pass.
    async fn scan(&self, target: &Target<'_>) -> Result<Outcome, String>;
    /// Whether it scans `Target::data` when given it, without the file at `path`. A scanner
    /// that needs the path (an external command) makes every file be written there.
    fn reads_memory(&self) -> bool {
        false
    }
}

/// A problem in a scanner's configuration file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("scanner {file}{}: {message}", if key.is_empty() { String::new() } else { format!(", key `{key}`") })]
pub struct ScannerConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum ScannerFile {
    Clamav(clamav::Config),
    Filetype(filetype::Config),
    Archive(archive::Config),
    Command(command::Config),
    /// The egress disclosure checks; read again from the text by [`disclosure::Rules`].
    Disclosure(serde::de::IgnoredAny),
}

impl std::fmt::Debug for Scanners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanners")
            .field("names", &self.names())
            .finish()
    }
}

/// Every configured scanner, by name.
pub struct Scanners {
    scanners: BTreeMap<String, Arc<dyn Scanner>>,
    /// The archive inspector's limits, when an `archive` scanner is configured.
    pub archive: Option<(String, archive::Limits)>,
    /// The ClamAV scanner, for signature-database watching.
    pub clamav: Option<Arc<clamav::ClamAv>>,
    /// Groups of MIME types policies may name in their file-type lists.
    pub type_groups: BTreeMap<String, Vec<String>>,
    /// Files scanned at once.
    pub concurrency: usize,
    /// The disclosure checks' rules (`disclosure.toml`; the defaults without one), run on
    /// every egress request's output and code files.
    pub disclosure: disclosure::Rules,
}

const DEFAULTS: [(&str, &str); 5] = [
    (
        "scanners/disclosure.toml",
        include_str!("../../scanners/disclosure.toml"),
    ),
    (
        "scanners/clamav.toml",
        include_str!("../../scanners/clamav.toml"),
    ),
    (
        "scanners/filetype.toml",
        include_str!("../../scanners/filetype.toml"),
    ),
    (
        "scanners/archive.toml",
        include_str!("../../scanners/archive.toml"),
    ),
    (
        "scanners/secrets.toml",
        include_str!("../../scanners/secrets.toml"),
    ),
];

impl Scanners {
    /// The compiled-in scanners, or every `*.toml` in `dir`. `clamd` overrides clamav's address.
    pub fn load(dir: Option<&Path>, clamd: Option<&str>) -> Result<Self, ScannerConfigError> {
        let mut files: Vec<(String, String)> = Vec::new();
        match dir {
            None => {
                for (f, t) in DEFAULTS {
                    files.push((f.to_owned(), t.to_owned()));
                }
            }
            Some(d) => {
                let err = |message: String| ScannerConfigError {
                    file: d.display().to_string(),
                    key: String::new(),
                    message,
                };
                let mut paths: Vec<PathBuf> = std::fs::read_dir(d)
                    .map_err(|e| err(format!("cannot read the folder: {e}")))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                paths.sort();
                for p in paths {
                    let text = std::fs::read_to_string(&p).map_err(|e| ScannerConfigError {
                        file: p.display().to_string(),
                        key: String::new(),
                        message: format!("cannot read: {e}"),
                    })?;
                    files.push((p.display().to_string(), text));
                }
            }
        }
        let mut out = Scanners {
            scanners: BTreeMap::new(),
            archive: None,
            clamav: None,
            type_groups: BTreeMap::new(),
            concurrency: 4,
            disclosure: disclosure::Rules::default(),
        };
        for (file, text) in files {
            let name = Path::new(&file)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let err = |key: &str, message: String| ScannerConfigError {
                file: file.clone(),
                key: key.to_owned(),
                message,
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(err(
                    "",
                    "a scanner's file name is its name: lowercase letters, digits and '-'".into(),
                ));
            }
            let parsed: ScannerFile =
                crate::policy::parse_toml(&text).map_err(|(key, msg)| err(&key, msg))?;
            match parsed {
                ScannerFile::Clamav(mut c) => {
                    if let Some(a) = clamd {
                        c.address = a.to_owned();
                    }
                    let s = Arc::new(clamav::ClamAv::new(&name, c).map_err(|(k, m)| err(k, m))?);
                    out.concurrency = s.concurrency;
                    out.clamav = Some(s.clone());
                    out.scanners.insert(name, s);
                }
                ScannerFile::Filetype(c) => {
                    out.type_groups = c.groups.clone();
                    out.scanners
                        .insert(name.clone(), Arc::new(filetype::FileType::new(&name, c)));
                }
                ScannerFile::Archive(c) => {
                    let limits = archive::Limits::try_from(c).map_err(|(k, m)| err(k, m))?;
                    out.archive = Some((name, limits));
                }
                ScannerFile::Disclosure(_) => {
                    out.disclosure = disclosure::Rules::from_toml(&text).map_err(|m| err("", m))?;
                }
                ScannerFile::Command(c) => {
                    let s = command::CommandScanner::new(&name, c).map_err(|(k, m)| err(k, m))?;
                    out.scanners.insert(name, Arc::new(s));
                }
            }
        }
        Ok(out)
    }

    /// Every scanner name a policy may require.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.scanners.keys().cloned().collect();
        if let Some((n, _)) = &self.archive {
            v.push(n.clone());
        }
        v.sort();
        v
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Scanner>> {
        self.scanners.get(name).cloned()
    }

    /// Whether `name` is the archive inspector.
    pub fn is_archive(&self, name: &str) -> bool {
        self.archive.as_ref().is_some_and(|(n, _)| n == name)
    }

    /// Checks a policy's scanning rules against what is configured.
    pub fn check_policy(
        &self,
        p: &crate::policy::Policy,
    ) -> Result<(), crate::policy::PolicyError> {
        let err = |key: &str, message: String| crate::policy::PolicyError {
            file: p.file.clone(),
            key: key.to_owned(),
            message,
        };
        // The policy's overrides of the disclosure checks are checked now, not at the first
        // egress request.
        self.disclosure
            .with_overrides(&p.rules.egress.disclosure)
            .map_err(|m| err("egress.disclosure", m))?;
        let names = self.names();
        for s in &p.rules.scanning.required {
            if !names.contains(s) {
                return Err(err(
                    "scanning.required",
                    format!(
                        "no scanner `{s}` is configured (scanners/): expected one of {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        for (kind, lists) in &p.rules.scanning.filetype {
            for (which, list) in [("deny", &lists.deny), ("allow", &lists.allow)] {
                for entry in list {
                    if !entry.contains('/') && !self.type_groups.contains_key(entry) {
                        return Err(err(
                            &format!("scanning.filetype.{kind}.{which}"),
                            format!(
                                "`{entry}` is neither a MIME type nor a group of scanners/filetype.toml ({})",
                                self.type_groups.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

pub(crate) use crate::policy::{duration, size};
