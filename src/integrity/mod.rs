//! Fixity: every file at rest, in quarantine and in the released volumes, is re-hashed against
//! the sealed manifest (paper 4.3.2: "regularly automatically re-verify the integrity of the
//! dataset, and alert Programme and Project Managers").
//!
//! Hashing is the one engine of `crate::hashing`'s digests, run here on the blocking pool:
//! files are hashed in parallel across cores (rayon), and within a large file SHA-256 (one
//! thread, the CPU's SHA extensions through `sha2`) runs beside BLAKE3 (all cores, memory-mapped,
//! `update_mmap_rayon`). A changed, missing or unexpected file is an incident: audited (and so
//! sent to the webhooks), counted in `/metrics`, a pending transfer is blocked and a released
//! one flagged.

pub mod bag;
pub mod scheduler;

use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::*;
use crate::store::{FixityRow, Transfer};
use futures::StreamExt;
use object_store::path::Path as ObjPath;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a copy lies.
pub const QUARANTINE: &str = "quarantine";
pub const RELEASED: &str = "released";

/// One file's check.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Check {
    pub location: &'static str,
    pub path: String,
    /// `ok`, `changed`, `missing` or `unexpected`.
    pub result: &'static str,
    pub detail: String,
    pub bytes: u64,
}

/// At most this many problems are named in a report (and become incidents of their own); the
/// rest are counted, so 100,000 missing files make a short report and a few incidents.
pub const NAMED: usize = 20;

/// What a verification found: counts of every check, and the first [`NAMED`] problems.
/// Constant in size whatever the file count; each check's result is in the `fixity` table.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Report {
    pub transfer: TransferId,
    pub state: TransferState,
    /// Copies re-hashed and found as the manifest says.
    pub ok: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// location → result (`ok`, `changed`, `missing`, `unexpected`) → how many.
    pub counts: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// The first problems found, in walk order.
    pub problems: Vec<Check>,
    /// Problems found beyond those named.
    pub more_problems: u64,
}

impl Report {
    fn new(t: &Transfer) -> Self {
        Self {
            transfer: t.id,
            state: t.state,
            ok: 0,
            bytes: 0,
            counts: BTreeMap::new(),
            problems: Vec::new(),
            more_problems: 0,
        }
    }

    pub fn problems(&self) -> impl Iterator<Item = &Check> {
        self.problems.iter()
    }

    /// Every problem found, named or not.
    pub fn problem_count(&self) -> u64 {
        self.problems.len() as u64 + self.more_problems
    }

    /// Copies re-hashed (as the manifest says or changed).
    pub fn hashed(&self) -> u64 {
        self.counts
            .values()
            .map(|m| m.get("ok").unwrap_or(&0) + m.get("changed").unwrap_or(&0))
            .sum()
    }

    fn add(&mut self, c: Check) {
        *self
            .counts
            .entry(c.location)
            .or_default()
            .entry(c.result)
            .or_default() += 1;
        if c.result == "ok" {
            self.ok += 1;
        }
        if c.result == "ok" || c.result == "changed" {
            self.bytes += c.bytes;
        }
        if c.result != "ok" {
            if self.problems.len() < NAMED {
                self.problems.push(c);
            } else {
                self.more_problems += 1;
            }
        }
    }

    /// Problems of each (location, result) not named in `problems`.
    fn unnamed(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (loc, m) in &self.counts {
            for (res, n) in m {
                if *res == "ok" {
                    continue;
                }
                let named = self
                    .problems
                    .iter()
                    .filter(|c| c.location == *loc && c.result == *res)
                    .count() as u64;
                if *n > named {
                    out.push((*loc, *res, n - named));
                }
            }
        }
        out
    }
}

/// One file to check: where its bytes are and what the manifest says.
struct Job {
    location: &'static str,
    path: String,
    parts: Vec<PathBuf>,
    /// A packed archive member: (offset, length) in its pack, the one part.
    range: Option<(u64, u64)>,
    /// On S3 (no `parts`): the object(s) to stream from the store.
    object: Option<ObjectSource>,
    want: ManifestEntry,
}

/// Where a file's bytes are on an S3 volume.
#[derive(Clone)]
enum ObjectSource {
    /// A quarantine file: its segments.
    Segments { file: crate::domain::FileId, n: u64 },
    /// A packed archive member: its range of the pack.
    Packed {
        pack: crate::domain::FileId,
        offset: u64,
        len: u64,
    },
    /// A released file under a published tree.
    Published { dest: ObjPath, path: String },
}

/// Checks a job whose bytes are on S3: streamed from the store and hashed as they come. A
/// store that does not answer is `Err`: the pass stops, and nothing is taken for missing.
async fn check_object(
    app: &App,
    t: &Transfer,
    job: &Job,
    src: ObjectSource,
) -> Result<Check, String> {
    let stream = match src {
        ObjectSource::Segments { file, n } => Ok(app.volumes.read_file(t.id, file, n as usize)),
        ObjectSource::Packed { pack, offset, len } => {
            Ok(app.volumes.read_packed(t.id, pack, offset, len))
        }
        ObjectSource::Published { dest, path } => match RelPath::parse(&path) {
            // `verify` asked once whether the tree is published (and reports it if not).
            Ok(rel) => app.volumes.read_published_in_pass(&dest, &rel).await,
            Err(e) => Err(crate::volumes::VolumeError::Io(std::io::Error::other(
                e.to_string(),
            ))),
        },
    };
    let hashed = match stream {
        Ok(s) => crate::workflow::release::digest_stream(s, None).await,
        Err(e) => Err(e.into()),
    };
    Ok(match hashed {
        Err(crate::workflow::Error::Unavailable(e)) => return Err(e),
        Err(e) => {
            let text = e.to_string();
            if text.contains("not found") || text.contains("NotFound") {
                job.check(
                    "missing",
                    format!("{} {} is missing ({e})", job.location, job.path),
                    0,
                )
            } else {
                job.judge(Err(text))
            }
        }
        Ok(d) => job.judge(Ok(d)),
    })
}

impl Job {
    fn check(&self, result: &'static str, detail: String, bytes: u64) -> Check {
        Check {
            location: self.location,
            path: self.path.clone(),
            result,
            detail,
            bytes,
        }
    }

    /// The check of what hashing the copy gave: unreadable, as the manifest says, or changed.
    fn judge(&self, hashed: Result<crate::hashing::Digests, String>) -> Check {
        let want = &self.want;
        match hashed {
            Err(e) => self.check(
                "missing",
                format!("{} {} cannot be read: {e}", self.location, self.path),
                0,
            ),
            Ok(d) if d.size == want.size && d.sha256 == want.sha256 && d.blake3 == want.blake3 => {
                self.check("ok", String::new(), d.size)
            }
            Ok(d) => self.check(
                "changed",
                format!(
                    "{} {} changed: sha256 {} ({} bytes), the manifest says {} ({} bytes)",
                    self.location, self.path, d.sha256, d.size, want.sha256, want.size
                ),
                d.size,
            ),
        }
    }
}

fn check(job: &Job) -> Check {
    if let Some(p) = job.parts.iter().find(|p| !p.exists()) {
        return job.check(
            "missing",
            format!("{} {} is missing ({})", job.location, job.path, p.display()),
            0,
        );
    }
    let hashed = match (job.range, job.parts.as_slice()) {
        (Some((offset, len)), [pack]) => crate::hashing::hash_range(pack, offset, len),
        _ => crate::hashing::hash_paths(&job.parts),
    };
    job.judge(hashed.map_err(|e| e.to_string()))
}

/// Which files a verification re-hashes.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Every file, at once (`airlock verify`).
    All,
    /// Every released copy, at once, and nothing in quarantine (`airlock verify
    /// --released-only`): what a workspace reads, for the price of reading it once.
    Released,
    /// Files whose last check (or, never checked, the seal or release) is `interval_ms` old
    /// at `now_ms`, throttled to `bytes_per_second` (0: unthrottled). The scheduler's pass.
    Due {
        interval_ms: i64,
        now_ms: i64,
        bytes_per_second: u64,
    },
}

impl Scope {
    fn due(&self, last: Option<i64>, base: i64) -> bool {
        match self {
            Scope::All | Scope::Released => true,
            Scope::Due {
                interval_ms,
                now_ms,
                ..
            } => last.unwrap_or(base) + interval_ms <= *now_ms,
        }
    }
}

/// The regular files (and anything else that is not a folder) below `root`, as relative paths
/// in byte order of the whole path, sent down `tx` as they are found. One folder is read (and
/// sorted) at a time: memory holds the folders on the way down, never the tree. A folder sorts
/// as its name followed by `/`, so "a.txt" comes before "a/b", as the store sorts paths.
fn sorted_walk(root: &Path, tx: &tokio::sync::mpsc::Sender<Vec<u8>>) {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    /// One folder's entries: (name, with `/` after a folder's; whether it is a folder).
    type Level = std::vec::IntoIter<(Vec<u8>, bool)>;
    fn read_sorted(dir: &Path) -> Level {
        let mut v: Vec<(Vec<u8>, bool)> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| {
                    let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                    let mut key = e.file_name().into_vec();
                    if is_dir {
                        key.push(b'/');
                    }
                    (key, is_dir)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort_unstable();
        v.into_iter()
    }
    let mut stack: Vec<(Vec<u8>, Level)> = vec![(Vec::new(), read_sorted(root))];
    while let Some((prefix, entries)) = stack.last_mut() {
        let Some((name, is_dir)) = entries.next() else {
            stack.pop();
            continue;
        };
        let mut rel = prefix.clone();
        rel.extend_from_slice(&name);
        if is_dir {
            // `rel` ends with the `/` its key carries.
            let dir = root.join(std::ffi::OsStr::from_bytes(&rel[..rel.len() - 1]));
            let entries = read_sorted(&dir);
            stack.push((rel, entries));
        } else if tx.blocking_send(rel).is_err() {
            return;
        }
    }
}

/// Walks a directory tree in a blocking thread, handing its sorted paths over a bounded
/// channel.
fn spawn_walk(root: PathBuf) -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::task::spawn_blocking(move || sorted_walk(&root, &tx));
    rx
}

/// The objects of a published tree on S3, as [`spawn_walk`] gives a folder's files: relative
/// paths in byte order (S3 lists keys in that order), a page of the listing at a time.
fn spawn_list(
    app: &App,
    dest: ObjPath,
    failed: Arc<Mutex<Option<String>>>,
) -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let mut listing = app.volumes.list_published(&dest);
    tokio::spawn(async move {
        while let Some(item) = listing.next().await {
            match item {
                Ok((rel, _)) => {
                    if tx.send(rel.into_bytes()).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(%dest, error = %e, "listing a released tree failed");
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    return;
                }
            }
        }
    });
    rx
}

fn unexpected_released(rel: &[u8]) -> Check {
    let rel = String::from_utf8_lossy(rel).into_owned();
    Check {
        location: RELEASED,
        detail: format!("released {rel} is not in the manifest"),
        path: rel,
        result: "unexpected",
        bytes: 0,
    }
}

/// Hashes a batch of jobs across cores off the async threads, records their checks in one
/// transaction, and counts them into the report.
async fn run_jobs(
    app: &App,
    t: &Transfer,
    jobs: Vec<Job>,
    now: i64,
    report: &mut Report,
) -> crate::workflow::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let (remote, local): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.object.is_some());
    // Hashing is CPU work: rayon's threads, not the async runtime's.
    let mut checks: Vec<Check> =
        tokio::task::spawn_blocking(move || local.par_iter().map(check).collect())
            .await
            .map_err(|e| crate::workflow::Error::Internal(e.to_string()))?;
    // Objects on S3 stream from the store, a few at once.
    let remote: Vec<Result<Check, String>> = futures::stream::iter(remote)
        .map(|job| async move {
            let src = job.object.clone().expect("partitioned on object");
            check_object(app, t, &job, src).await
        })
        .buffered(OBJECTS_AT_ONCE)
        .collect()
        .await;
    for r in remote {
        checks.push(r.map_err(store_down)?);
    }
    record_checks(app, t, checks, now, report).await
}

/// A pass that met a store not answering ends there, recording nothing of its batch: a
/// store down is not a file missing (the next pass checks again).
fn store_down(why: String) -> crate::workflow::Error {
    crate::workflow::Error::Unavailable(format!("verification stopped: {why}"))
}

/// Objects on S3 hashed at once by a verification pass.
const OBJECTS_AT_ONCE: usize = 4;

/// Records checks (one transaction) and counts them.
async fn record_checks(
    app: &App,
    t: &Transfer,
    checks: Vec<Check>,
    now: i64,
    report: &mut Report,
) -> crate::workflow::Result<()> {
    let rows: Vec<FixityRow> = checks
        .iter()
        .filter(|c| c.result != "unexpected")
        .map(|c| FixityRow {
            location: c.location.to_owned(),
            path: c.path.clone(),
            verified_at: now,
            result: c.result.to_owned(),
            detail: c.detail.clone(),
        })
        .collect();
    app.store.record_fixity_batch(t.id, &rows).await?;
    for c in checks {
        report.add(c);
    }
    Ok(())
}

/// Jobs waiting to be hashed, run a batch at a time: at most a page of files, and, when
/// throttled, about one second's worth of bytes, after which it sleeps out the second.
struct Batcher {
    jobs: Vec<Job>,
    bytes: u64,
    rate: u64,
}

impl Batcher {
    async fn push(
        &mut self,
        app: &App,
        t: &Transfer,
        job: Job,
        report: &mut Report,
    ) -> crate::workflow::Result<()> {
        self.bytes += job.want.size;
        self.jobs.push(job);
        let full = self.jobs.len() >= crate::store::FILE_BATCH as usize
            || (self.rate > 0 && self.bytes >= self.rate);
        if full {
            self.flush(app, t, report).await?;
        }
        Ok(())
    }

    async fn flush(
        &mut self,
        app: &App,
        t: &Transfer,
        report: &mut Report,
    ) -> crate::workflow::Result<()> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let bytes = std::mem::take(&mut self.bytes);
        let now = chrono::Utc::now().timestamp_millis();
        run_jobs(app, t, std::mem::take(&mut self.jobs), now, report).await?;
        if self.rate > 0 {
            let want = std::time::Duration::from_secs_f64(bytes as f64 / self.rate as f64);
            if let Some(rest) = want.checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
        Ok(())
    }
}

/// Re-hashes a transfer's files at rest, those `scope` says, and looks for unexpected files in
/// its quarantine folder and its released folder. The manifest is walked in path order a page
/// at a time; in the released folder it is merge-joined with a sorted walk of the tree, which
/// finds missing and unexpected files without holding either list. Each batch of checks is
/// recorded in the `fixity` table as it is done (so a restart resumes a pass); incidents are
/// raised from the report by [`record`].
pub async fn verify(app: &App, t: &Transfer, scope: Scope) -> crate::workflow::Result<Report> {
    let rate = match scope {
        Scope::Due {
            bytes_per_second, ..
        } => bytes_per_second,
        Scope::All | Scope::Released => 0,
    };
    let mut report = Report::new(t);
    let mut batch = Batcher {
        jobs: Vec::new(),
        bytes: 0,
        rate,
    };
    let released = match (&t.state, &t.release_location) {
        (TransferState::Released, Some(loc)) => Some(match app.volumes.s3_dest_of(loc) {
            Some(dest) => Tree::S3(dest, loc.clone()),
            None => Tree::Dir(PathBuf::from(loc)),
        }),
        _ => None,
    };
    let on_s3 = !app.volumes.quarantine_is_local();
    // Set when a listing of a released tree on S3 broke off: what it did not list is not
    // missing, and the pass stops instead of saying so.
    let listing_failed: Arc<Mutex<Option<String>>> = Arc::default();
    let listing_broke = |f: &Arc<Mutex<Option<String>>>| {
        f.lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(store_down)
    };
    let mut locations = vec![(
        QUARANTINE,
        crate::integrity::scheduler::ms(t.sealed_at.as_deref()),
    )];
    if released.is_some() {
        locations.push((
            RELEASED,
            crate::integrity::scheduler::ms(t.released_at.as_deref()),
        ));
    }
    let released_only = matches!(scope, Scope::Released);
    if released_only {
        locations.retain(|(l, _)| *l == RELEASED);
    }
    // An egress package holds its output files only, with the output-checking record beside
    // them: the supporting and code files stay in quarantine.
    let (not_released, record): (std::collections::HashSet<String>, &[&str]) =
        if t.kind.is_egress() && released.is_some() {
            let held = app
                .store
                .egress_files(t.id)
                .await?
                .into_iter()
                .filter(|p| p.role != crate::workflow::egress::FileRole::Output.as_str())
                .map(|p| p.path)
                .collect();
            (held, &crate::workflow::egress::RECORD_FILES)
        } else {
            (Default::default(), &[])
        };
    let expected_extra = |p: &[u8]| record.iter().any(|r| r.as_bytes() == p);
    for (location, base) in locations {
        let mut tree = match (location, &released) {
            (RELEASED, Some(root)) => {
                let rx = match root {
                    Tree::Dir(dir) => spawn_walk(dir.clone()),
                    Tree::S3(dest, _) => {
                        if !app.volumes.published(dest).await? {
                            report.add(Check {
                                location: RELEASED,
                                detail: format!(
                                    "released: the manifest object of {} is missing: nothing \
                                     of the release is published",
                                    root.shown()
                                ),
                                path: String::new(),
                                result: "unexpected",
                                bytes: 0,
                            });
                        }
                        spawn_list(app, dest.clone(), listing_failed.clone())
                    }
                };
                Some((root.clone(), rx))
            }
            _ => None,
        };
        // The next path of the sorted tree walk, not yet matched.
        let mut next_on_disk: Option<Vec<u8>> = match tree.as_mut() {
            Some((_, rx)) => rx.recv().await,
            None => None,
        };
        let mut after: Option<String> = None;
        loop {
            let page = app
                .store
                .fixity_page(t.id, location, after.as_deref(), crate::store::FILE_BATCH)
                .await?;
            let last_page = (page.len() as u32) < crate::store::FILE_BATCH;
            after = page.last().map(|r| r.file.path.clone());
            let mut missing = Vec::new();
            for row in page {
                let want = crate::workflow::transfers::manifest_entry(&row.file)?;
                if location == RELEASED && not_released.contains(&want.path) {
                    continue;
                }
                let range = match (&tree, row.file.pack) {
                    (None, Some(p)) => Some((p.offset, want.size)),
                    _ => None,
                };
                let mut object = None;
                let parts = match &mut tree {
                    None if on_s3 => {
                        object = Some(match (range, row.file.pack) {
                            (Some((offset, len)), Some(p)) => ObjectSource::Packed {
                                pack: p.id,
                                offset,
                                len,
                            },
                            _ => ObjectSource::Segments {
                                file: row.file.id,
                                n: row.segments,
                            },
                        });
                        Vec::new()
                    }
                    None if range.is_some() => {
                        let pack = row.file.pack.map(|p| p.id).unwrap_or_default();
                        vec![app.volumes.segment_path(t.id, pack, 0)]
                    }
                    None => (0..row.segments)
                        .map(|s| app.volumes.segment_path(t.id, row.file.id, s))
                        .collect(),
                    Some((root, rx)) => {
                        // Whatever the walk finds before this path is not in the manifest.
                        let mut present = false;
                        while let Some(p) = next_on_disk.as_deref() {
                            match p.cmp(want.path.as_bytes()) {
                                std::cmp::Ordering::Less => {
                                    if !expected_extra(p) {
                                        report.add(unexpected_released(p));
                                    }
                                    next_on_disk = rx.recv().await;
                                }
                                std::cmp::Ordering::Equal => {
                                    present = true;
                                    next_on_disk = rx.recv().await;
                                    break;
                                }
                                std::cmp::Ordering::Greater => break,
                            }
                        }
                        if !present {
                            if let Some(e) = listing_broke(&listing_failed) {
                                return Err(e);
                            }
                            missing.push(Check {
                                location,
                                detail: format!(
                                    "{location} {} is missing ({})",
                                    want.path,
                                    root.join(&want.path)
                                ),
                                path: want.path.clone(),
                                result: "missing",
                                bytes: 0,
                            });
                            continue;
                        }
                        match root {
                            Tree::Dir(dir) => vec![dir.join(&want.path)],
                            Tree::S3(dest, _) => {
                                object = Some(ObjectSource::Published {
                                    dest: dest.clone(),
                                    path: want.path.clone(),
                                });
                                Vec::new()
                            }
                        }
                    }
                };
                if !scope.due(row.verified_at, base) {
                    continue;
                }
                let job = Job {
                    location,
                    path: want.path.clone(),
                    parts,
                    range,
                    object,
                    want,
                };
                batch.push(app, t, job, &mut report).await?;
            }
            if !missing.is_empty() {
                let now = chrono::Utc::now().timestamp_millis();
                record_checks(app, t, missing, now, &mut report).await?;
            }
            if last_page {
                break;
            }
        }
        batch.flush(app, t, &mut report).await?;
        if let Some(e) = listing_broke(&listing_failed) {
            return Err(e);
        }
        if let Some((_, rx)) = tree.as_mut() {
            while let Some(p) = next_on_disk.take() {
                if !expected_extra(&p) {
                    report.add(unexpected_released(&p));
                }
                next_on_disk = rx.recv().await;
            }
        }
        app.store.forget_unexpected(t.id, location).await?;
    }
    if !released_only {
        quarantine_strays(app, t, &mut report).await?;
    }
    Ok(report)
}

/// A released tree: a folder on local disk, or a published prefix on S3 (with its location).
#[derive(Clone)]
enum Tree {
    Dir(PathBuf),
    S3(ObjPath, String),
}

impl Tree {
    fn shown(&self) -> String {
        match self {
            Tree::Dir(d) => d.display().to_string(),
            Tree::S3(_, loc) => loc.clone(),
        }
    }

    /// Where one released file is, as shown in an incident.
    fn join(&self, rel: &str) -> String {
        match self {
            Tree::Dir(d) => d.join(rel).display().to_string(),
            Tree::S3(_, loc) => format!("{loc}{rel}"),
        }
    }
}

/// Names found in the quarantine folder are looked up this many at a time.
const STRAY_BATCH: usize = 500;

/// Anything in the transfer's quarantine folder that is not one of its files' segments. The
/// folder holds one folder per file, named by the file's id: it is read as it comes (no
/// sorting, nothing held but a batch of names), and each batch of names is looked up in the
/// store in one query.
async fn quarantine_strays(
    app: &App,
    t: &Transfer,
    report: &mut Report,
) -> crate::workflow::Result<()> {
    let qdir = app.volumes.transfer_dir(t.id);
    // (top-level name, the files below it relative to the transfer folder)
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<String>)>(STRAY_BATCH);
    if !app.volumes.quarantine_is_local() {
        // S3 lists keys in order: a file's segments come together.
        let mut keys = app.volumes.list_quarantine(t.id);
        tokio::spawn(async move {
            let mut cur: Option<(String, Vec<String>)> = None;
            while let Some(Ok(rel)) = keys.next().await {
                let name = rel.split('/').next().unwrap_or("").to_owned();
                match &mut cur {
                    Some((n, files)) if *n == name => files.push(rel),
                    _ => {
                        if let Some(done) = cur.replace((name, vec![rel])) {
                            if tx.send(done).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            if let Some(done) = cur {
                let _ = tx.send(done).await;
            }
        });
    } else {
        tokio::task::spawn_blocking(move || {
            let Ok(rd) = std::fs::read_dir(&qdir) else {
                return;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let mut files = Vec::new();
                let mut stack = vec![e.path()];
                while let Some(p) = stack.pop() {
                    match std::fs::symlink_metadata(&p) {
                        Ok(m) if m.is_dir() => {
                            if let Ok(rd) = std::fs::read_dir(&p) {
                                stack.extend(rd.flatten().map(|e| e.path()));
                            }
                        }
                        Ok(_) => {
                            if let Ok(rel) = p.strip_prefix(&qdir) {
                                files.push(rel.to_string_lossy().into_owned());
                            }
                        }
                        Err(_) => {}
                    }
                }
                if tx.blocking_send((name, files)).is_err() {
                    return;
                }
            }
        });
    }
    let mut pending: Vec<(String, Vec<String>)> = Vec::new();
    loop {
        let more = rx.recv_many(&mut pending, STRAY_BATCH).await > 0;
        if !pending.is_empty() {
            let ids: Vec<String> = pending.iter().map(|(n, _)| n.clone()).collect();
            let known = app.store.segment_counts(t.id, &ids).await?;
            for (name, files) in pending.drain(..) {
                let segments = known.get(&name).copied();
                for rel in files {
                    let seg = rel.split_once('/').map(|(_, s)| s).unwrap_or("");
                    let expected =
                        segments.is_some_and(|n| seg.parse::<u64>().is_ok_and(|s| s < n));
                    if !expected {
                        report.add(Check {
                            location: QUARANTINE,
                            detail: format!("quarantine holds an unexpected file {rel}"),
                            path: rel,
                            result: "unexpected",
                            bytes: 0,
                        });
                    }
                }
            }
        }
        if !more {
            return Ok(());
        }
    }
}

/// Raises what a verification found (each check is already in the `fixity` table): an
/// incident for each named problem not already open (audited as `incident.integrity`, which
/// the webhooks send, naming the project's Programme and Project Managers), and one more that
/// counts the problems beyond the named ones, so a transfer with 100,000 missing files gets a
/// few incidents and events, not 100,000. A pending transfer with a problem in quarantine is
/// blocked; a released one with a problem is flagged in its state reason.
pub async fn record(app: &App, t: &Transfer, report: &Report) -> crate::workflow::Result<()> {
    app.metrics.verified(report.hashed(), report.bytes);
    let mut fresh: Vec<Check> = Vec::new();
    for c in report.problems() {
        if !app.store.open_incident(t.id, &c.detail).await? {
            fresh.push(c.clone());
        }
    }
    let unnamed = report.unnamed();
    let mut counted: Option<Check> = None;
    if report.more_problems > 0 {
        let parts: Vec<String> = unnamed
            .iter()
            .map(|(loc, res, n)| format!("{n} {res} in {loc}"))
            .collect();
        let detail = format!(
            "{} more problem(s) beyond the {} named: {}; `airlock verify {}` counts them, the \
             fixity records list each",
            report.more_problems,
            report.problems.len(),
            parts.join(", "),
            t.id
        );
        if !app.store.open_incident(t.id, &detail).await? {
            counted = Some(Check {
                location: unnamed.first().map_or(QUARANTINE, |u| u.0),
                path: String::new(),
                result: "more",
                detail,
                bytes: 0,
            });
        }
    }
    let raised: Vec<&Check> = fresh.iter().chain(counted.iter()).collect();
    let notify = if raised.is_empty() {
        Vec::new()
    } else {
        alert_list(app, t).await?
    };
    let mut tx = app.store.begin().await?;
    for c in &raised {
        tx.insert_incident(Some(t.id), "integrity", &c.detail)
            .await?;
        tx.audit(
            AuditEvent::new("system", "incident.integrity")
                .transfer(t.id)
                .detail(serde_json::json!({
                    "location": c.location, "path": c.path, "problem": c.result,
                    "detail": c.detail, "notify": notify,
                })),
        )
        .await?;
    }
    for c in &fresh {
        app.metrics.incident(c.result, c.location);
    }
    if counted.is_some() {
        for (loc, res, n) in &unnamed {
            app.metrics.incidents_n(res, loc, *n);
        }
    }
    if !raised.is_empty() {
        let why = raised
            .iter()
            .map(|c| c.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let state = tx.transfer_state(t.id).await?;
        match state {
            Some(
                s @ (TransferState::Sealed
                | TransferState::Scanning
                | TransferState::ScanError
                | TransferState::InReview
                | TransferState::Approved),
            ) => {
                crate::workflow::transfers::mark_blocked(&mut tx, t.id, s, "integrity", &why)
                    .await?;
            }
            Some(TransferState::Released) => {
                let reason = format!("released; INTEGRITY INCIDENT: {why}");
                tx.set_state(
                    t.id,
                    TransferState::Released,
                    TransferState::Released,
                    &reason,
                )
                .await?;
            }
            _ => {}
        }
        tracing::warn!(transfer = %t.id, "integrity incident: {why}");
    }
    tx.commit().await?;
    if !raised.is_empty() {
        mail(app, t, &raised, &notify).await;
    }
    Ok(())
}

/// Emails an alert through `[mail]` (or the older `[integrity] smtp`; see
/// [`crate::notify::mail::alert_mailer`]) to `[integrity] mail_to` and the project's managers
/// at the mail domain. A failure is logged; the incident stands (and went to the webhooks)
/// either way.
async fn mail(app: &App, t: &Transfer, fresh: &[&Check], notify: &[String]) {
    let s = &app.settings;
    let mailer = match crate::notify::mail::alert_mailer(s) {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(transfer = %t.id, error = %e, "integrity alert email not sent");
            return;
        }
    };
    let mut to = s.integrity.mail_to.clone();
    if let Some(domain) = crate::notify::mail::alert_domain(s) {
        to.extend(notify.iter().map(|u| format!("{u}@{domain}")));
    }
    let ws = app
        .store
        .workspace(t.workspace_id)
        .await
        .ok()
        .flatten()
        .map(|w| format!("{}/{}", w.project_name, w.name))
        .unwrap_or_default();
    let mut body = format!(
        "airlock found {} integrity problem(s) in transfer {} (workspace {ws}).\n\n",
        fresh.len(),
        t.id
    );
    for c in fresh {
        body.push_str(&format!("- {}\n", c.detail));
    }
    body.push_str(&format!(
        "\nFor: {}\nCheck now with `airlock verify {}`; list with `airlock incidents`.\n",
        notify.join(", "),
        t.id
    ));
    let subject = format!("[airlock] integrity incident in {ws}, transfer {}", t.id);
    if let Err(e) = mailer.send(&to, &subject, &body).await {
        tracing::warn!(transfer = %t.id, relay = mailer.relay(), error = %e, "integrity alert email failed");
    }
}

/// The project's Programme and Project Managers, whom an integrity alert is for.
async fn alert_list(app: &App, t: &Transfer) -> crate::workflow::Result<Vec<String>> {
    let mut out: Vec<String> = app
        .store
        .users_with_role(Role::ProgrammeManager)
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    if let Some(ws) = app.store.workspace(t.workspace_id).await? {
        for m in app.store.members(ws.project_id).await? {
            if m.role == Role::ProjectManager && m.state == "active" && !out.contains(&m.user) {
                out.push(m.user);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree walk yields every file once, in byte order of the whole path (the store's
    /// order), even where a folder's name is a prefix of a sibling's ("a/…" after "a.txt" and
    /// "a-b", before "a0"), so the merge join with the manifest is exact.
    #[test]
    fn the_sorted_walk_is_in_whole_path_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            "a.txt", "a-b", "a/b.c/d", "a/b/c", "a/bz", "a0", "ab/c", "b", "Z", "é/x",
        ];
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("empty/dir")).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        sorted_walk(dir.path(), &tx);
        drop(tx);
        let mut got = Vec::new();
        while let Ok(p) = rx.try_recv() {
            got.push(String::from_utf8(p).unwrap());
        }
        let mut want: Vec<String> = files.iter().map(|s| s.to_string()).collect();
        want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(got, want);
    }
}
