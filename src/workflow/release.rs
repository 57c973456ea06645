//! Release: copy an approved transfer's files from quarantine into the workspace's read-only
//! volume, verify every copy against the sealed manifest, and publish all files at once.
//!
//! A background worker does it, so a 100 GB release never holds an HTTP request open and a
//! restart simply picks the approved transfer up again (staging is cleared first).

use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::*;
use crate::hashing::{HashState, StreamHasher};
use crate::store::Transfer;
use crate::volumes::Volumes;
use futures::StreamExt;
use std::sync::Arc;

/// Runs until `shutdown` resolves: releases approved transfers and expires stale ones.
pub async fn worker(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = super::transfers::expire_due(&app).await {
            tracing::error!(error = %e, "expiry sweep failed");
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
                    if let Err(e) = release(&app, &t).await {
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
async fn digest_stream(
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

pub async fn release(app: &App, t: &Transfer) -> Result<()> {
    let started = std::time::Instant::now();
    let ws = app
        .store
        .workspace(t.workspace_id)
        .await?
        .ok_or_else(|| Error::Internal("transfer without workspace".into()))?;
    app.volumes.clear_staging(t.id).await?;
    let dest = Volumes::release_prefix(&ws.project_name, &ws.name, t.kind.volume(), t.id);
    let files = app.store.files(t.id).await?;
    let manifest = super::transfers::manifest(&files)?;
    // What `/metrics` counts once the release is recorded.
    let done = Released {
        files: manifest.len() as u64,
        bytes: manifest.iter().map(|m| m.size).sum(),
        started,
    };
    let sealed_root = t.root_digest.clone().unwrap_or_default();
    if manifest_root(&manifest).as_str() != sealed_root {
        return integrity_failure(
            app,
            t,
            "the file list no longer matches the sealed root digest",
        )
        .await;
    }
    if app.volumes.published(&dest) {
        // Published before a crash stopped us from recording it: accept it only if every
        // file is there and matches the manifest.
        for (f, want) in files.iter().zip(&manifest) {
            let path = RelPath::parse(&f.path)?;
            let got = match app.volumes.read_published(&dest, &path).await {
                Ok(s) => digest_stream(s, None).await?,
                Err(e) => {
                    let why = format!("{}: already-published copy unreadable: {e}", f.path);
                    return integrity_failure(app, t, &why).await;
                }
            };
            if got.sha256 != want.sha256 || got.blake3 != want.blake3 || got.size != want.size {
                let why = format!(
                    "{}: an earlier published copy does not match the manifest",
                    f.path
                );
                return integrity_failure(app, t, &why).await;
            }
        }
        return record_release(app, t, &dest, done, &sealed_root).await;
    }
    for (f, want) in files.iter().zip(&manifest) {
        let path = RelPath::parse(&f.path)?;
        let n = app.store.segments(f.id).await?.len();
        let mut w = app.volumes.staging_writer(t.id, &path).await?;
        let copied = digest_stream(app.volumes.read_file(t.id, f.id, n), Some(&mut w)).await;
        let copied = match copied {
            Ok(d) => d,
            Err(e) => {
                w.abort().await;
                return Err(e);
            }
        };
        w.commit().await?;
        let reread = digest_stream(app.volumes.read_staged(t.id, &path).await?, None).await?;
        for (what, got) in [("quarantine copy", &copied), ("released copy", &reread)] {
            if got.size != want.size || got.sha256 != want.sha256 || got.blake3 != want.blake3 {
                app.volumes.clear_staging(t.id).await?;
                let why = format!(
                    "{}: {what} has sha256 {} ({} bytes), the manifest says {} ({} bytes)",
                    f.path, got.sha256, got.size, want.sha256, want.size
                );
                return integrity_failure(app, t, &why).await;
            }
        }
    }
    app.volumes.publish(t.id, &dest).await?;
    record_release(app, t, &dest, done, &sealed_root).await
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
    let location = app.volumes.location(dest).display().to_string();
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
