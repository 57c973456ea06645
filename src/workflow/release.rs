//! Release: copy an approved transfer's files from quarantine into the workspace's read-only
//! volume, verify every copy against the sealed manifest, and publish all files at once.
//!
//! A background worker does it, so a 100 GB release never holds an HTTP request open and a
//! restart simply picks the approved transfer up again (staging is cleared first).
//!
//! The files are walked in path order a page of rows at a time, a few copied at once, each
//! re-hashed as it is written and read back, and the manifest's root digest is recomputed over
//! the same walk: memory does not grow with the file count, and nothing is published unless
//! every copy and the root match.

use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::*;
use crate::hashing::{HashState, StreamHasher};
use crate::store::Transfer;
use crate::volumes::Volumes;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// Runs until `shutdown` resolves: releases approved transfers and expires stale ones.
pub async fn worker(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Some(Err(e)) =
            super::lease::run(&app, "expiry", super::transfers::expire_due(&app)).await
        {
            tracing::error!(error = %e, "expiry sweep failed");
        }
        // S3 multipart uploads a dead replica left: aborted, so no orphaned parts stay billed.
        let stale = crate::volumes::tracked::STALE_AFTER_MS;
        if !app.volumes.any_on_s3() {
            // Nothing to sweep: no lease taken.
        } else if let Some(Err(e)) = super::lease::run(
            &app,
            "s3-uploads",
            app.volumes.sweep_uploads(&app.store, stale),
        )
        .await
        {
            tracing::warn!(error = %e, "sweep of stale S3 uploads failed");
        }
        match app.store.transfers_in_state(TransferState::Approved).await {
            Ok(ts) => {
                for t in ts {
                    match super::governance::recheck_before_release(&app, &t).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::error!(transfer = %t.id, error = %e, "cannot check approvals");
                            continue;
                        }
                    }
                    // Invariant 3 with signatures that changed since the scan: wait for the
                    // rescan, whose finding would otherwise lose the race to this release.
                    match super::scanning::verdicts_current(&app, &t).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::error!(transfer = %t.id, error = %e, "cannot check scans");
                            continue;
                        }
                    }
                    // One replica releases it: the lease's holder, and only while the transfer
                    // is still approved when it has the lease (another may have just finished).
                    let job = format!("release:{}", t.id);
                    let leased = super::lease::run(&app, &job, async {
                        match app.store.transfer(t.id).await {
                            Ok(Some(now)) if now.state == TransferState::Approved => {
                                release(&app, &now).await
                            }
                            Ok(_) => Ok(()),
                            Err(e) => Err(e.into()),
                        }
                    })
                    .await;
                    if let Some(Err(e)) = leased {
                        tracing::error!(transfer = %t.id, error = %e, "release failed; will retry");
                        note_failure(&app, &t, &e).await;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list approved transfers"),
        }
        tokio::select! {
            _ = app.jobs.notified() => {}
            _ = tokio::time::sleep(app.settings.server.sweep_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Blocks an approved transfer whose copies do not match its manifest.
async fn integrity_failure(app: &App, t: &Transfer, why: &str) -> Result<()> {
    super::transfers::block(app, t.id, TransferState::Approved, "integrity", why)
        .await
        .map(|_| ())
}

/// Keeps a failing release visible: the state stays `approved`, the reason says why it waits.
async fn note_failure(app: &App, t: &Transfer, e: &Error) {
    // The cause (with paths) is in the log; the reason is shown to members and the uploader.
    let _ = e;
    let reason = "release failed; retrying (the operator's log has the cause)".to_string();
    if let Ok(mut tx) = app.store.begin().await {
        let ok = tx
            .set_state(
                t.id,
                TransferState::Approved,
                TransferState::Approved,
                &reason,
            )
            .await;
        if ok.is_ok() {
            let _ = tx.commit().await;
        }
    }
}

/// Streams `stream` through both digests, optionally writing it too.
pub(crate) async fn digest_stream(
    mut stream: futures::stream::BoxStream<'static, crate::volumes::Result<bytes::Bytes>>,
    mut writer: Option<&mut crate::volumes::SegmentWriter>,
) -> Result<crate::hashing::Digests> {
    let mut h = StreamHasher::resume(HashState::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if let Some(w) = writer.as_deref_mut() {
            w.write(chunk.clone()).await?;
        }
        h.update(chunk).await;
    }
    Ok(h.finish().await?.finish())
}

/// Files copied (or re-read) at once: enough to overlap one file's fsync with the next's
/// copy, few enough that memory holds a handful of files' buffers whatever the file count.
const COPIES_AT_ONCE: usize = 4;

/// What walking the sealed manifest found: its root digest over the walk, and the first
/// copy that did not match (the release stops there).
struct Walked {
    root: RootHasher,
    mismatch: Option<String>,
}

/// Walks the transfer's files in path order (a page of rows at a time), runs `each` on up to
/// `COPIES_AT_ONCE` files at once, and hashes the manifest entries into the root digest in
/// path order. Stops at the first file `each` finds wrong (`Ok(Some(why))`).
async fn walk_manifest<'a, F, Fut>(app: &'a App, t: &Transfer, each: F) -> Result<Walked>
where
    F: Fn(crate::store::FileRow, ManifestEntry) -> Fut + 'a,
    Fut: std::future::Future<Output = Result<Option<String>>> + 'a,
{
    let each = &each;
    let mut walked = Walked {
        root: RootHasher::default(),
        mismatch: None,
    };
    let mut results = app
        .store
        .file_stream(t.id)
        .map_err(Error::from)
        .map_ok(|f| async move {
            let want = super::transfers::manifest_entry(&f)?;
            let found = each(f, want.clone()).await?;
            Ok::<_, Error>((want, found))
        })
        .try_buffered(COPIES_AT_ONCE);
    while let Some((want, found)) = results.try_next().await? {
        walked.root.push_sorted(&want);
        if found.is_some() {
            walked.mismatch = found;
            break;
        }
    }
    Ok(walked)
}

/// Whether the walk matches the sealed root digest: the file list the copies came from is
/// exactly the one that was reviewed.
fn root_matches(walked: Walked, sealed_root: &str) -> std::result::Result<(u64, u64), String> {
    let (n, bytes) = (walked.root.entries(), walked.root.bytes());
    if walked.root.finish().as_str() == sealed_root {
        Ok((n, bytes))
    } else {
        Err("the file list no longer matches the sealed root digest".into())
    }
}

pub async fn release(app: &App, t: &Transfer) -> Result<()> {
    let started = std::time::Instant::now();
    let ws = app
        .store
        .workspace(t.workspace_id)
        .await?
        .ok_or_else(|| Error::Internal("transfer without workspace".into()))?;
    let egress = match t.kind.is_egress() {
        true => Some(super::egress::package_plan(app, t, &ws).await?),
        false => None,
    };
    let dest = match &egress {
        Some(plan) => plan.dest.clone(),
        None => Volumes::release_prefix(&ws.project_name, &ws.name, t.kind.volume(), t.id),
    };
    app.volumes.clear_staging(t.id, &dest).await?;
    // Only an egress request's output files are released; its supporting and code files
    // stay in quarantine (they are still walked: the root digest covers them).
    let released = |path: &str| egress.as_ref().is_none_or(|p| p.outputs.contains(path));
    let released = &released;
    let sealed_root = t.root_digest.clone().unwrap_or_default();
    if app.volumes.published(&dest).await? {
        // Published before a crash stopped us from recording it: accept it only if every
        // file is there and matches the manifest.
        let dest = &dest;
        let mut walked = walk_manifest(app, t, |f, want| async move {
            if !released(&f.path) {
                return Ok(None);
            }
            let path = RelPath::parse(&f.path)?;
            let got = match app.volumes.read_published(dest, &path).await {
                Ok(s) => digest_stream(s, None).await?,
                Err(e) => {
                    return Ok(Some(format!(
                        "{}: already-published copy unreadable: {e}",
                        f.path
                    )))
                }
            };
            if got.sha256 != want.sha256 || got.blake3 != want.blake3 || got.size != want.size {
                return Ok(Some(format!(
                    "{}: an earlier published copy does not match the manifest",
                    f.path
                )));
            }
            Ok(None)
        })
        .await?;
        if let Some(why) = walked.mismatch.take() {
            return integrity_failure(app, t, &why).await;
        }
        return match root_matches(walked, &sealed_root) {
            Ok((files, bytes)) => {
                // The crash may have fallen between writing the manifest and setting its
                // retention: set it (again).
                app.volumes.retain_published(dest).await?;
                let done = Released {
                    files,
                    bytes,
                    started,
                };
                record_release(app, t, dest, done, &sealed_root).await
            }
            Err(why) => integrity_failure(app, t, &why).await,
        };
    }
    // A release to S3 is published by its manifest object, spooled here as the files go.
    let spool = match app.volumes.needs_manifest(&dest) {
        true => Some(Spool::create(app.volumes.release_spool(t.id))?),
        false => None,
    };
    let spool = &spool;
    let dest_ref = &dest;
    let walked = walk_manifest(app, t, |f, want| async move {
        if !released(&f.path) {
            return Ok(None);
        }
        let path = RelPath::parse(&f.path)?;
        let bytes = super::upload::stored_bytes(app, &f).await?;
        let mut w = app.volumes.staging_writer(t.id, dest_ref, &path).await?;
        let copied = digest_stream(bytes, Some(&mut w)).await;
        let copied = match copied {
            Ok(d) => d,
            Err(e) => {
                w.abort().await;
                return Err(e);
            }
        };
        // Made durable all at once by `publish` (one syncfs before the tree is visible), not
        // two fsyncs per file: those were most of a 100,000-file release.
        w.finish_unsynced().await?;
        let reread =
            digest_stream(app.volumes.read_staged(t.id, dest_ref, &path).await?, None).await?;
        for (what, got) in [("quarantine copy", &copied), ("released copy", &reread)] {
            if got.size != want.size || got.sha256 != want.sha256 || got.blake3 != want.blake3 {
                return Ok(Some(format!(
                    "{}: {what} has sha256 {} ({} bytes), the manifest says {} ({} bytes)",
                    f.path, got.sha256, got.size, want.sha256, want.size
                )));
            }
        }
        if let Some(spool) = spool {
            spool.line(&f.path, &reread)?;
        }
        Ok(None)
    })
    .await;
    let mut walked = match walked {
        Ok(w) => w,
        Err(e) => {
            app.volumes.clear_staging(t.id, &dest).await?;
            return Err(e);
        }
    };
    let checked = match walked.mismatch.take() {
        Some(why) => Err(why),
        None => root_matches(walked, &sealed_root),
    };
    let checked = match (checked, &egress) {
        (Ok(done), Some(plan)) => {
            // The output-checking record goes with the files, written before the package
            // becomes visible.
            for (name, data) in super::egress::package_record(app, t, &ws, plan).await? {
                let path = RelPath::parse(name)?;
                if let Some(spool) = spool {
                    let mut st = HashState::new();
                    st.update(&data);
                    spool.line(name, &st.finish())?;
                }
                app.volumes.stage_bytes(t.id, &dest, &path, data).await?;
            }
            Ok(done)
        }
        (other, _) => other,
    };
    match checked {
        Ok((files, bytes)) => {
            let manifest = match spool {
                Some(s) => Some(s.finish()?),
                None => None,
            };
            let published = app.volumes.publish(t.id, &dest, manifest.as_deref()).await;
            if let Some(m) = &manifest {
                let _ = std::fs::remove_file(m);
            }
            published?;
            let done = Released {
                files,
                bytes,
                started,
            };
            record_release(app, t, &dest, done, &sealed_root).await
        }
        Err(why) => {
            app.volumes.clear_staging(t.id, &dest).await?;
            integrity_failure(app, t, &why).await
        }
    }
}

/// The manifest of a release to S3, spooled to a local file as its files are copied: one
/// JSON line per released object (`path`, `size`, `sha256`, `blake3`).
struct Spool {
    path: std::path::PathBuf,
    out: std::sync::Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Spool {
    fn create(path: std::path::PathBuf) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        Ok(Self {
            path,
            out: std::sync::Mutex::new(out),
        })
    }

    fn line(&self, path: &str, d: &crate::hashing::Digests) -> Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_vec(&serde_json::json!({
            "path": path, "size": d.size, "sha256": d.sha256, "blake3": d.blake3,
        }))
        .map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(&line)?;
        Ok(())
    }

    /// Flushes the spool and gives its path.
    fn finish(&self) -> Result<std::path::PathBuf> {
        use std::io::Write;
        self.out.lock().unwrap_or_else(|p| p.into_inner()).flush()?;
        Ok(self.path.clone())
    }
}

/// A release's size and start, for `/metrics`.
#[derive(Clone, Copy)]
struct Released {
    files: u64,
    bytes: u64,
    started: std::time::Instant,
}

async fn record_release(
    app: &App,
    t: &Transfer,
    dest: &object_store::path::Path,
    done: Released,
    sealed_root: &str,
) -> Result<()> {
    // The server's own path stays in the store (re-verification reads it); what members,
    // the uploader and webhook receivers see is the path inside the released volume.
    let location = app.volumes.location(dest);
    let shown = dest.as_ref();
    let volume = crate::volumes::RELEASED;
    let mut tx = app.store.begin().await?;
    if tx.transfer_state(t.id).await? != Some(TransferState::Approved) {
        // It left `approved` while it was being copied (a rescan blocked it, say): what was
        // just published must not stay in the workspace's volume.
        drop(tx);
        if app.store.transfer(t.id).await?.map(|t| t.state) != Some(TransferState::Released) {
            app.volumes.withdraw(t.id, dest).await?;
            tracing::warn!(transfer = %t.id, "no longer approved: the published copy was withdrawn");
        }
        return Ok(());
    }
    let released = tx
        .set_state(
            t.id,
            TransferState::Approved,
            TransferState::Released,
            &format!("released read-only to {shown} in the {volume} volume"),
        )
        .await?;
    if released {
        tx.set_released(t.id, &location).await?;
        tx.audit(
            AuditEvent::new("system", "transfer.released")
                .transfer(t.id)
                .detail(serde_json::json!({
                    "volume": volume, "location": shown, "files": done.files,
                    "root_digest": sealed_root,
                })),
        )
        .await?;
    }
    tx.commit().await?;
    if released {
        app.metrics
            .released(done.files, done.bytes, done.started.elapsed());
    }
    tracing::info!(transfer = %t.id, %location, "released");
    Ok(())
}
