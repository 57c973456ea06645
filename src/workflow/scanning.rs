//! The scanning pipeline: after seal, every file of a transfer goes through every scanner its
//! policy requires, archives are opened and their members scanned too, and the verdicts decide
//! what happens next:
//! - all clean: review begins (`in_review`);
//! - anything infected (a signature, a denied file type, a zip bomb): `blocked`, with an incident;
//! - a file no scanner could scan (over clamd's StreamMaxLength, encrypted, a container the
//!   archive scanner recognises but cannot open): the policy says `block`, or `acknowledge`:
//!   review goes on and a Referee must acknowledge it when approving;
//! - a scanner that did not answer: `scan_error`, retried with backoff. Never a pass.
//!
//! A background worker does it, several files at once. A transfer left `scanning` by a crash is
//! simply scanned again. When clamd's signature database changes, transfers in review or
//! approved are scanned again and blocked if something is found now; meanwhile the release
//! worker holds them ([`verdicts_current`]), and a find that ends after a release flags it.

use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::*;
use crate::policy::{Policy, Unscannable};
use crate::scan::{archive, Outcome, Scanner, Target, VerdictKind, Versions};
use crate::store::{FileRow, Transfer, VerdictRow};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs until `shutdown` changes: scans sealed transfers, retries failed scans, and scans
/// transfers in review again when the signature database changes.
pub async fn worker(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut reloaded: Option<String> = None;
    loop {
        tokio::select! {
            r = run_once(&app, &mut reloaded) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "scan sweep failed");
                }
            }
            // A scan cut short leaves the transfer `scanning`: the next start scans it again.
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = app.scan_jobs.notified() => {}
            _ = tokio::time::sleep(app.settings.server.sweep_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn run_once(app: &App, reloaded: &mut Option<String>) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    for id in app.store.due_scan_retries(now).await? {
        let mut tx = app.store.begin().await?;
        let attempt = tx.scan_attempts(id).await? + 1;
        if tx
            .set_state(
                id,
                TransferState::ScanError,
                TransferState::Scanning,
                &format!("scanning (attempt {attempt})"),
            )
            .await?
        {
            tx.audit(
                AuditEvent::new("system", "transfer.scanning")
                    .transfer(id)
                    .detail(serde_json::json!({ "attempt": attempt })),
            )
            .await?;
        }
        tx.commit().await?;
    }
    for t in app
        .store
        .transfers_in_state(TransferState::Scanning)
        .await?
    {
        // One replica scans it: the lease's holder, and only while it is still scanning.
        let job = format!("scan:{}", t.id);
        let leased = super::lease::run(app, &job, async {
            match app.store.transfer(t.id).await? {
                Some(now) if now.state == TransferState::Scanning => {
                    scan_and_record(app, &now, false).await
                }
                _ => Ok(()),
            }
        })
        .await;
        if let Some(r) = leased {
            r?;
        }
    }
    watch_signatures(app, reloaded).await
}

/// Scans again, with the new signatures, every transfer in review whose ClamAV verdicts were
/// given by another database. When airlock can read clamd's database folder and sees it
/// change, it asks clamd to reload first and gives it `reload_settle` to do so.
async fn watch_signatures(app: &App, reloaded: &mut Option<String>) -> Result<()> {
    let Some(clam) = app.scanners.clamav.clone() else {
        return Ok(());
    };
    let Ok(mut v) = clam.versions().await else {
        return Ok(()); // clamd down: scans in progress will say so.
    };
    if app
        .store
        .stale_reviews(clam.name(), &v.database)
        .await?
        .is_empty()
    {
        return Ok(());
    }
    if clam.database_dir.is_some() && reloaded.as_deref() != Some(v.database.as_str()) {
        tracing::info!(database = %v.database, "signature database changed; asking clamd to reload");
        if let Err(e) = clam.reload().await {
            tracing::warn!(error = %e, "clamd reload failed");
            return Ok(());
        }
        tokio::time::sleep(clam.reload_settle).await;
        *reloaded = Some(v.database.clone());
        match clam.versions().await {
            Ok(now) => v = now,
            Err(_) => return Ok(()),
        }
    }
    for id in app.store.stale_reviews(clam.name(), &v.database).await? {
        let job = format!("scan:{id}");
        let leased = super::lease::run(app, &job, async {
            if let Some(t) = app.store.transfer(id).await? {
                tracing::info!(transfer = %id, "signatures changed; scanning again");
                scan_and_record(app, &t, true).await?;
            }
            Ok::<(), super::Error>(())
        })
        .await;
        if let Some(r) = leased {
            r?;
        }
    }
    Ok(())
}

/// A scan that could not run at all: (scanner, why). Becomes one `error` verdict.
type Failed = (String, String);

/// Everything one scan needs.
struct Ctx<'a> {
    scanners: Vec<(Arc<dyn Scanner>, Versions)>,
    archive: Option<(String, archive::Limits)>,
    kind: TransferKind,
    policy: &'a Policy,
    scratch: PathBuf,
    /// Every scanner reads a file from memory: small files are read once, not copied out.
    in_memory: bool,
}

/// Files up to this size are read into memory once and handed to every scanner from there
/// (when all of them can take it), instead of being copied to scratch space: a packed archive
/// member has no file of its own, and 100,000 scratch copies cost more than the scans.
/// Bounds the memory a scan holds to `concurrency` times this.
const IN_MEMORY: u64 = 256 << 10;
/// In-memory files up to this size are inspected for archives on the async thread.
const INLINE_DETECT: usize = 64 << 10;

/// Where a scan's verdicts go as they are given: a bounded channel to the writer, which
/// stores them a batch at a time. Scanning waits when the writer falls behind, so memory holds
/// at most a channel's and a batch's worth of rows, whatever the file count.
type Out = tokio::sync::mpsc::Sender<VerdictRow>;

/// Verdict rows written per transaction: short enough that uploads and decisions of other
/// transfers never wait long for the write lock, long enough that a 100,000-file scan does
/// not commit (and fsync) per file.
const VERDICT_BATCH: usize = 500;

/// At most this many verdicts of each kind are named (in state reasons and the audit event);
/// the rest are counted.
const EXAMPLES: usize = 5;

/// What a scan found, in constant memory: counts, the first few findings of each kind, the
/// scanners' versions and a digest over every verdict in the order written.
struct Found {
    tally: crate::store::ScanTally,
    examples: std::collections::BTreeMap<String, Vec<VerdictRow>>,
    scanners: std::collections::BTreeSet<(String, String, String)>,
    digest: sha2::Sha256,
    rows: u64,
}

impl Found {
    fn new() -> Self {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        digest.update(b"[");
        Self {
            tally: Default::default(),
            examples: Default::default(),
            scanners: Default::default(),
            digest,
            rows: 0,
        }
    }

    /// Counts one written row.
    fn add(&mut self, v: VerdictRow, span: Option<(i64, i64)>) {
        use sha2::Digest;
        // The digest is SHA-256 of the JSON array of every verdict, built a row at a time.
        if self.rows > 0 {
            self.digest.update(b",");
        }
        self.digest
            .update(serde_json::to_vec(&v).unwrap_or_default());
        self.rows += 1;
        self.tally.add(&v, span);
        self.scanners.insert((
            v.scanner.clone(),
            v.scanner_version.clone(),
            v.db_version.clone(),
        ));
        if v.verdict != VerdictKind::Clean.as_str() {
            let list = self.examples.entry(v.verdict.clone()).or_default();
            if list.len() < EXAMPLES {
                list.push(v);
            }
        }
    }

    fn count(&self, k: VerdictKind) -> u64 {
        self.tally.count(k.as_str())
    }

    fn examples(&self, k: VerdictKind) -> &[VerdictRow] {
        self.examples
            .get(k.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// A short list of the findings of one kind, for a state reason.
    fn summary(&self, k: VerdictKind) -> String {
        summary(self.examples(k), self.count(k))
    }

    fn digest(&self) -> String {
        use sha2::Digest;
        let mut d = self.digest.clone();
        d.update(b"]");
        hex::encode(d.finalize())
    }
}

/// Stores verdicts as they arrive, `VERDICT_BATCH` rows per transaction, and tallies them.
async fn write_verdicts(
    app: &App,
    id: TransferId,
    mut rx: tokio::sync::mpsc::Receiver<VerdictRow>,
) -> crate::store::Result<Found> {
    let mut found = Found::new();
    let mut batch = Vec::with_capacity(VERDICT_BATCH);
    loop {
        let room = VERDICT_BATCH - batch.len();
        let more = rx.recv_many(&mut batch, room).await > 0;
        if batch.len() >= VERDICT_BATCH || (!more && !batch.is_empty()) {
            let span = app.store.insert_verdicts(id, &batch).await?;
            for v in batch.drain(..) {
                found.add(v, span);
            }
        }
        if !more {
            return Ok(found);
        }
    }
}

/// Scans a transfer and records what was found. `rescan`: the transfer is in review already
/// (the signature database changed); otherwise it is `scanning`.
pub async fn scan_and_record(app: &App, t: &Transfer, rescan: bool) -> Result<()> {
    let ws = app
        .store
        .workspace(t.workspace_id)
        .await?
        .ok_or_else(|| Error::Internal("transfer without workspace".into()))?;
    let policy = app.policy(&ws)?;
    let scratch = app.volumes.scratch_dir(t.id);
    // Rows a scan cut short by a crash left behind.
    app.store.prune_verdicts(t.id).await?;
    let (out, rx) = tokio::sync::mpsc::channel(VERDICT_BATCH);
    let (outcome, written) = tokio::join!(
        scan_transfer(app, t, &policy, &scratch, out),
        write_verdicts(app, t.id, rx)
    );
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    let mut found = match (outcome, written) {
        (Ok(()), Ok(found)) => found,
        (outcome, written) => {
            let e = match (outcome, written) {
                (Err(e), _) => e,
                (_, Err(e)) => ("airlock".to_owned(), format!("storing verdicts: {e}")),
                _ => unreachable!("one of the two failed"),
            };
            // What the failed scan wrote is not its verdict: one error row is.
            app.store.prune_verdicts(t.id).await?;
            let mut found = Found::new();
            add_error(app, t, &mut found, e.0, String::new(), e.1).await?;
            found
        }
    };
    // An egress request's disclosure checks run once its files are scanned clean; a rescan
    // (new signatures) keeps the findings of its round.
    let disclosure_block = if t.kind.is_egress()
        && !rescan
        && found.count(VerdictKind::Infected) == 0
        && found.count(VerdictKind::Error) == 0
    {
        match super::egress::disclose(app, t, &ws).await {
            Ok(block) => block,
            Err(e) => {
                // Never a pass: an error verdict, and the scan is retried like any other.
                tracing::warn!(transfer = %t.id, error = %e, "disclosure checks failed; will retry");
                let version = crate::scan::disclosure::VERSION.to_owned();
                add_error(
                    app,
                    t,
                    &mut found,
                    "disclosure".into(),
                    version,
                    e.to_string(),
                )
                .await?;
                None
            }
        }
    } else {
        None
    };
    let r = record(app, t, &ws, &policy, &found, rescan, disclosure_block).await;
    // The superseded scan's rows (or this one's, if it did not count), a batch at a time.
    app.store.prune_verdicts(t.id).await?;
    r
}

/// Records one error verdict of the whole transfer (a scanner that could not answer, our own
/// storage failing): never a pass, and the scan is retried.
async fn add_error(
    app: &App,
    t: &Transfer,
    found: &mut Found,
    scanner: String,
    scanner_version: String,
    detail: String,
) -> Result<()> {
    let row = VerdictRow {
        seq: 0,
        file_id: FileId::new(),
        path: String::new(),
        member: String::new(),
        scanner,
        verdict: VerdictKind::Error.as_str().into(),
        detail,
        sha256: String::new(),
        scanner_version,
        db_version: String::new(),
        scanned_at: crate::store::now(),
    };
    let span = app
        .store
        .insert_verdicts(t.id, std::slice::from_ref(&row))
        .await?;
    found.add(row, span);
    Ok(())
}

/// Runs every required scanner over every file, walking the files in pages and scanning
/// `concurrency` at once; verdicts go to `out` as they are given. `Err((scanner, why))` when
/// a scanner cannot even say its version (it is down) or our own storage fails.
async fn scan_transfer(
    app: &App,
    t: &Transfer,
    policy: &Policy,
    scratch: &Path,
    out: Out,
) -> std::result::Result<(), Failed> {
    let _ = tokio::fs::remove_dir_all(scratch).await;
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(|e| ("airlock".to_owned(), format!("scratch space: {e}")))?;
    let mut scanners = Vec::new();
    let mut archive = None;
    for name in &policy.rules.scanning.required {
        if app.scanners.is_archive(name) {
            archive = app.scanners.archive.clone();
        } else if let Some(s) = app.scanners.get(name) {
            let v = s.versions().await.map_err(|e| (name.clone(), e))?;
            scanners.push((s, v));
        } else {
            return Err((name.clone(), "not configured in scanners/".into()));
        }
    }
    let in_memory = scanners.iter().all(|(s, _)| s.reads_memory());
    let ctx = Ctx {
        scanners,
        archive,
        kind: t.kind,
        policy,
        scratch: scratch.to_owned(),
        in_memory,
    };
    let ctx = &ctx;
    let out = &out;
    app.store
        .file_stream(t.id)
        .map_err(|e| ("airlock".to_owned(), e.to_string()))
        .map_ok(|f| async move { scan_file(app, ctx, &f, out).await })
        .try_buffer_unordered(app.scanners.concurrency.max(1))
        .try_collect::<()>()
        .await
}

/// Scans one uploaded file, and whatever archives it holds.
async fn scan_file(
    app: &App,
    ctx: &Ctx<'_>,
    f: &FileRow,
    out: &Out,
) -> std::result::Result<(), Failed> {
    let failed = |e: std::io::Error| ("airlock".to_owned(), format!("{}: {e}", f.path));
    let (path, mut data) = if ctx.in_memory && f.received <= IN_MEMORY {
        // Its scratch name is used only if it turns out to be an archive to expand.
        let data = read_whole(app, f).await.map_err(failed)?;
        (ctx.scratch.join(format!("f{}", f.id)), Some(data))
    } else {
        (file_path(app, f, &ctx.scratch).await.map_err(failed)?, None)
    };
    let in_memory = data.is_some();
    let mut budget = archive::Budget::new(f.received);
    let sha = f.sha256.clone().unwrap_or_default();
    let sent = scan_tree(
        ctx,
        f,
        String::new(),
        path.clone(),
        &mut data,
        f.received,
        sha,
        0,
        &mut budget,
        out,
    )
    .await;
    // A joined copy goes as soon as its file is scanned: scratch space holds at most one
    // copy per file being scanned at once, never the whole transfer. (A file read into memory
    // has a copy only if it was an archive to open.)
    let copied = !in_memory || data.is_none();
    if copied && path.starts_with(&ctx.scratch) {
        let _ = tokio::fs::remove_file(&path).await;
    }
    sent.map_err(|_| {
        (
            "airlock".to_owned(),
            "the verdict writer stopped".to_owned(),
        )
    })
}

/// A path holding the file's bytes: its one segment where it has one on local disk, else
/// the segments (or, on S3, the object) copied into the scratch space.
async fn file_path(app: &App, f: &FileRow, scratch: &Path) -> std::io::Result<PathBuf> {
    if f.pack.is_none() && app.volumes.quarantine_is_local() {
        let n = app
            .store
            .segments(f.id)
            .await
            .map_err(std::io::Error::other)?
            .len();
        if n == 1 {
            return Ok(app.volumes.segment_path(f.transfer_id, f.id, 0));
        }
    }
    let joined = scratch.join(format!("f{}", f.id));
    let mut out = tokio::fs::File::create(&joined).await?;
    let mut stream = crate::workflow::upload::stored_bytes(app, f)
        .await
        .map_err(std::io::Error::other)?;
    use tokio::io::AsyncWriteExt;
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk.map_err(std::io::Error::other)?)
            .await?;
    }
    out.flush().await?;
    Ok(joined)
}

/// A small file's stored bytes, whole.
async fn read_whole(app: &App, f: &FileRow) -> std::io::Result<bytes::Bytes> {
    let mut stream = crate::workflow::upload::stored_bytes(app, f)
        .await
        .map_err(std::io::Error::other)?;
    let mut buf = bytes::BytesMut::with_capacity(f.received as usize);
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.map_err(std::io::Error::other)?);
    }
    Ok(buf.freeze())
}

/// The writer is gone (it failed): the scan stops.
struct Stopped;

#[allow(clippy::too_many_arguments)]
fn scan_tree<'a>(
    ctx: &'a Ctx<'a>,
    file: &'a FileRow,
    member: String,
    path: PathBuf,
    // Taken (`None`) once written to `path` to be opened as an archive.
    data: &'a mut Option<bytes::Bytes>,
    size: u64,
    sha256: String,
    depth: u32,
    budget: &'a mut archive::Budget,
    out: &'a Out,
) -> BoxFuture<'a, std::result::Result<(), Stopped>> {
    async move {
        let mut rows = Vec::new();
        let row = |scanner: &str, v: &Versions, r: std::result::Result<Outcome, String>| {
            let (verdict, detail) = match r {
                Ok(Outcome::Clean) => (VerdictKind::Clean, String::new()),
                Ok(Outcome::Infected(n)) => (VerdictKind::Infected, n),
                Ok(Outcome::Unscannable(w)) => (VerdictKind::Unscannable, w),
                Err(e) => (VerdictKind::Error, e),
            };
            VerdictRow {
                seq: 0,
                file_id: file.id,
                path: file.path.clone(),
                member: member.clone(),
                scanner: scanner.to_owned(),
                verdict: verdict.as_str().to_owned(),
                detail,
                sha256: sha256.clone(),
                scanner_version: v.scanner.clone(),
                db_version: v.database.clone(),
                scanned_at: crate::store::now(),
            }
        };
        for (s, v) in &ctx.scanners {
            let target = Target {
                path: &path,
                data: data.as_ref(),
                size,
                kind: ctx.kind,
                rules: &ctx.policy.rules.scanning,
            };
            let r = s.scan(&target).await;
            rows.push(row(s.name(), v, r));
        }
        let Some((aname, limits)) = &ctx.archive else {
            return send(out, rows).await;
        };
        let v = Versions {
            scanner: ARCHIVE_VERSION.into(),
            database: String::new(),
        };
        let (p, l) = (path.clone(), *limits);
        let detected = match &data {
            Some(d) if d.len() <= INLINE_DETECT => Ok(archive::detect_bytes(d, &l)),
            Some(d) => {
                let d = d.clone();
                tokio::task::spawn_blocking(move || archive::detect_bytes(&d, &l)).await
            }
            None => tokio::task::spawn_blocking(move || archive::detect(&p, &l)).await,
        };
        let found = match detected {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                rows.push(row(aname, &v, Err(format!("cannot read: {e}"))));
                return send(out, rows).await;
            }
            Err(e) => {
                rows.push(row(aname, &v, Err(e.to_string())));
                return send(out, rows).await;
            }
        };
        if found.is_empty() {
            rows.push(row(aname, &v, Ok(Outcome::Clean)));
            return send(out, rows).await;
        }
        // An archive read into memory is opened from its scratch copy (removed with the file).
        if let Some(d) = data.take() {
            if let Err(e) = tokio::fs::write(&path, d).await {
                rows.push(row(aname, &v, Err(format!("scratch space: {e}"))));
                return send(out, rows).await;
            }
        }
        // A file may be several things at once (a tar with a zip appended): each is opened.
        for f in found {
            let format = match f {
                archive::Found::Open(format) => format,
                archive::Found::Unsupported(what) => {
                    rows.push(row(
                        aname,
                        &v,
                        Ok(Outcome::Unscannable(format!(
                            "unsupported: {what}, which the archive scanner cannot open"
                        ))),
                    ));
                    continue;
                }
            };
            if depth + 1 > limits.max_depth {
                rows.push(row(
                    aname,
                    &v,
                    Ok(Outcome::Infected(format!(
                        "Airlock.Archive.Bomb: archives nested deeper than {} (archive.max_depth)",
                        limits.max_depth
                    ))),
                ));
                continue;
            }
            let dir = ctx
                .scratch
                .join(format!("x{}", uuid::Uuid::new_v4().simple()));
            if let Err(e) = tokio::fs::create_dir_all(&dir).await {
                rows.push(row(aname, &v, Err(format!("scratch space: {e}"))));
                continue;
            }
            let (p, d, l, mut b) = (path.clone(), dir.clone(), *limits, *budget);
            let expanded = tokio::task::spawn_blocking(move || {
                let r = archive::expand(&p, format, &d, &mut b, &l);
                (r, b)
            })
            .await;
            let members = match expanded {
                Err(e) => Err(archive::Expand::Io(std::io::Error::other(e))),
                Ok((r, b)) => {
                    *budget = b;
                    r
                }
            };
            let what = format.as_str();
            match members {
                Ok(members) => {
                    rows.push(row(aname, &v, Ok(Outcome::Clean)));
                    // Members' verdicts go out as they are given, not gathered per file.
                    send(out, std::mem::take(&mut rows)).await?;
                    for m in members {
                        let name = if member.is_empty() {
                            m.name.clone()
                        } else {
                            format!("{member}!{}", m.name)
                        };
                        scan_tree(
                            ctx,
                            file,
                            name,
                            m.path,
                            &mut None,
                            m.size,
                            m.sha256,
                            depth + 1,
                            budget,
                            out,
                        )
                        .await?;
                    }
                }
                Err(archive::Expand::Bomb(w)) => rows.push(row(
                    aname,
                    &v,
                    Ok(Outcome::Infected(format!(
                        "Airlock.Archive.Bomb: {what} {w}"
                    ))),
                )),
                Err(archive::Expand::Encrypted(w)) => rows.push(row(
                    aname,
                    &v,
                    Ok(Outcome::Unscannable(format!("encrypted: {w}"))),
                )),
                Err(archive::Expand::Corrupt(w)) => rows.push(row(
                    aname,
                    &v,
                    Ok(Outcome::Unscannable(format!("corrupt: {what}: {w}"))),
                )),
                Err(archive::Expand::Unsupported(w)) => rows.push(row(
                    aname,
                    &v,
                    Ok(Outcome::Unscannable(format!("unsupported: {what}: {w}"))),
                )),
                Err(archive::Expand::Io(e)) => rows.push(row(aname, &v, Err(e.to_string()))),
            }
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        send(out, rows).await
    }
    .boxed()
}

/// Hands rows to the writer, waiting while it is behind.
async fn send(out: &Out, rows: Vec<VerdictRow>) -> std::result::Result<(), Stopped> {
    for r in rows {
        out.send(r).await.map_err(|_| Stopped)?;
    }
    Ok(())
}

/// The archive scanner's version, as recorded with its verdicts.
const ARCHIVE_VERSION: &str =
    "airlock-archive 2 (zip 9, tar 0.4, flate2 1, bzip2 0.6, lzma-rust2 0.25, ruzstd 0.9)";

fn label(v: &VerdictRow) -> String {
    if v.path.is_empty() {
        // The scanner failed before any file (it could not even say its version).
        "every file".to_owned()
    } else if v.member.is_empty() {
        v.path.clone()
    } else {
        format!("{}!{}", v.path, v.member)
    }
}

/// A short list of findings for a state reason: the first three named, of `total`.
fn summary(rows: &[VerdictRow], total: u64) -> String {
    let mut parts: Vec<String> = rows
        .iter()
        .take(3)
        .map(|v| format!("{}: {} ({})", label(v), v.detail, v.scanner))
        .collect();
    let named = parts.len() as u64;
    if total > named {
        parts.push(format!("and {} more", total - named));
    }
    parts.join("; ")
}

/// Records a scan's verdicts and moves the transfer on.
async fn record(
    app: &App,
    t: &Transfer,
    ws: &crate::store::Workspace,
    policy: &Policy,
    found: &Found,
    rescan: bool,
    disclosure_block: Option<String>,
) -> Result<()> {
    let id = t.id;
    let (infected, unscannable, errors) = (
        found.count(VerdictKind::Infected),
        found.count(VerdictKind::Unscannable),
        found.count(VerdictKind::Error),
    );
    if rescan && infected == 0 && errors > 0 {
        // The old verdicts stand until a scan with the new signatures completes (and the
        // release waits for that: `verdicts_current`).
        tracing::warn!(transfer = %id, error = %found.summary(VerdictKind::Error), "rescan failed; will retry");
        return Ok(());
    }
    let mut tx = app.store.begin().await?;
    // A rescan begins in review, and review may move on while it runs: its findings still
    // stop a release that has not happened (approved) and flag one that has (released).
    let from = match (rescan, tx.transfer_state(id).await?) {
        (false, Some(TransferState::Scanning)) => TransferState::Scanning,
        (
            true,
            Some(s @ (TransferState::InReview | TransferState::Approved | TransferState::Released)),
        ) => s,
        // Cancelled, rejected, returned, blocked or revoked meanwhile: nothing left to stop.
        _ => return Ok(()),
    };
    // The batches already written become the transfer's verdicts, in this one transaction
    // with the state change: a reader sees the old scan or the new one, never a mix.
    tx.switch_verdicts(id, &found.tally).await?;
    let scanners: Vec<serde_json::Value> = found
        .scanners
        .iter()
        .map(|(name, version, database)| {
            serde_json::json!({"name": name, "version": version, "database": database})
        })
        .collect();
    // A few examples of each kind; the counts say how many there are.
    let findings: Vec<serde_json::Value> = [
        VerdictKind::Infected,
        VerdictKind::Unscannable,
        VerdictKind::Error,
    ]
    .into_iter()
    .flat_map(|k| found.examples(k))
    .map(|v| {
        serde_json::json!({
            "path": v.path, "member": v.member, "scanner": v.scanner,
            "verdict": v.verdict, "detail": v.detail, "sha256": v.sha256,
        })
    })
    .collect();
    tx.audit(
        AuditEvent::new("system", "transfer.scanned")
            .transfer(id)
            .detail(serde_json::json!({
                "rescan": rescan,
                "verdicts": {
                    "clean": found.count(VerdictKind::Clean), "infected": infected,
                    "unscannable": unscannable, "error": errors,
                },
                "findings": findings,
                "scanners": scanners,
                "verdicts_sha256": found.digest(),
            })),
    )
    .await?;
    let mut approved = false;
    let blocks_unscannable = policy.rules.scanning.unscannable == Unscannable::Block;
    if from == TransferState::Released {
        let what = if infected > 0 {
            found.summary(VerdictKind::Infected)
        } else if unscannable > 0 && blocks_unscannable {
            format!(
                "could not be scanned, and the policy blocks what cannot be scanned: {}",
                found.summary(VerdictKind::Unscannable)
            )
        } else {
            String::new()
        };
        if !what.is_empty() {
            flag_released(&mut tx, id, &what, &findings).await?;
        }
        tx.scan_done(id).await?;
    } else if infected > 0 {
        super::transfers::block_in(
            &mut tx,
            id,
            from,
            "scan",
            &found.summary(VerdictKind::Infected),
        )
        .await?;
        tx.scan_done(id).await?;
    } else if errors > 0 {
        let attempts = tx.scan_attempts(id).await? + 1;
        let s = &app.settings.scanning;
        let delay = s
            .retry_initial
            .saturating_mul(1u32 << (attempts - 1).clamp(0, 20) as u32)
            .min(s.retry_max);
        let retry_at = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
        let why = found.summary(VerdictKind::Error);
        tx.scan_failed(id, retry_at, &why).await?;
        let reason = format!(
            "scan_error: {why}; attempt {attempts}, next try in {}",
            humantime::format_duration(std::time::Duration::from_secs(delay.as_secs().max(1)))
        );
        tx.set_state(id, from, TransferState::ScanError, &reason)
            .await?;
        tx.audit(
            AuditEvent::new("system", "transfer.scan_error")
                .transfer(id)
                .detail(serde_json::json!({
                    "error": why, "attempt": attempts, "retry_in_ms": delay.as_millis() as u64,
                })),
        )
        .await?;
        tracing::warn!(transfer = %id, "{reason}");
    } else if let Some(why) = disclosure_block {
        super::transfers::block_in(&mut tx, id, from, "disclosure", &why).await?;
        tx.scan_done(id).await?;
    } else if unscannable > 0 && blocks_unscannable {
        let why = format!(
            "could not be scanned, and the policy blocks what cannot be scanned: {}",
            found.summary(VerdictKind::Unscannable)
        );
        super::transfers::block_in(&mut tx, id, from, "scan", &why).await?;
        tx.scan_done(id).await?;
    } else {
        tx.scan_done(id).await?;
        let mut t = t.clone();
        if unscannable > 0 && !t.ack_required {
            tx.set_ack_required(id, true).await?;
            t.ack_required = true;
        }
        if !rescan {
            approved = super::governance::enter_review(app, &mut tx, &t, ws, from).await?;
        } else {
            // Clean with the new signatures: an approved release waiting for this may go.
            approved = from == TransferState::Approved;
        }
    }
    tx.commit().await?;
    if approved {
        app.jobs.notify_one();
    }
    Ok(())
}

/// A rescan found something in a transfer already released: the release is flagged (its
/// state reason says so, on every view), an incident is opened, and the audit event
/// `incident.scan` carries the findings to the webhooks. The files stay where they are: taking
/// them back is `revoke`, a person's decision.
async fn flag_released(
    tx: &mut crate::store::Tx<'_>,
    id: TransferId,
    why: &str,
    findings: &[serde_json::Value],
) -> Result<()> {
    tx.insert_incident(Some(id), "scan", why).await?;
    tx.set_state(
        id,
        TransferState::Released,
        TransferState::Released,
        &format!("released; SCAN FINDING after release: {why}"),
    )
    .await?;
    tx.audit(
        AuditEvent::new("system", "incident.scan")
            .transfer(id)
            .detail(serde_json::json!({ "reason": why, "findings": findings })),
    )
    .await?;
    tracing::warn!(transfer = %id, "scan finding after release: {why}");
    Ok(())
}

/// Whether a transfer's ClamAV verdicts were given by the signature database in use now.
/// The release worker asks just before releasing: while they are not (new signatures came
/// and the rescan has not finished, or clamd cannot say which database it has), the release
/// waits, so a rescan's finding is never beaten by the release it should stop. A transfer
/// without ClamAV verdicts (its policy does not require it) is not held.
pub async fn verdicts_current(app: &App, t: &Transfer) -> Result<bool> {
    let Some(clam) = app.scanners.clamav.clone() else {
        return Ok(true);
    };
    if !app.store.has_verdicts_by(t.id, clam.name()).await? {
        return Ok(true);
    }
    let waiting = match clam.versions().await {
        Ok(v) => {
            if !app
                .store
                .has_stale_verdicts(t.id, clam.name(), &v.database)
                .await?
            {
                return Ok(true);
            }
            app.scan_jobs.notify_one();
            "approved; the release waits for a rescan with the new signatures"
        }
        Err(e) => {
            tracing::warn!(transfer = %t.id, error = %e, "cannot tell whether the signatures changed");
            "approved; the release waits until ClamAV can say which signatures it has"
        }
    };
    if t.state_reason != waiting {
        let mut tx = app.store.begin().await?;
        tx.set_state(
            t.id,
            TransferState::Approved,
            TransferState::Approved,
            waiting,
        )
        .await?;
        tx.commit().await?;
    }
    Ok(false)
}
