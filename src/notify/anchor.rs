//! Anchoring the audit chain: on a schedule (`[audit] anchor_interval`) and at shutdown, the
//! head is signed (`audit::anchor`), appended to the anchor file and queued for every webhook
//! URL as an `audit.anchor` delivery, signed and retried like every other one.
//!
//! The anchor is not itself an audit event: it describes the chain, and writing it into the
//! chain would make the head move with every anchor. A head that has not moved since the last
//! anchor is not anchored again.

use crate::app::App;
use crate::audit::{anchor, Anchor};
use serde_json::json;
use std::sync::Arc;

/// Anchors the head now, unless the latest anchor already names it. Returns the new anchor
/// and the ids of its webhook deliveries.
pub async fn anchor_now(app: &App) -> anyhow::Result<Option<(Anchor, Vec<String>)>> {
    let file = app
        .settings
        .audit
        .anchor_file(&app.settings.storage.data_dir);
    let (seq, hash) = app.store.audit_head().await?;
    let key = app.anchor_key.clone();
    let path = file.clone();
    // File reads, signing and the fsync run off the async threads.
    let made = tokio::task::spawn_blocking(move || {
        // Only the last line matters here: a damaged anchor file is for `audit verify` to
        // report, it must not stop new anchors from being made.
        if anchor::last(&path).is_some_and(|a| a.seq == seq && a.hash == hash) {
            return Ok(None);
        }
        let a = key.sign(seq, &hash);
        // Disk first: an anchor that was announced must also be where `audit verify` looks.
        anchor::append(&path, &a).map(|()| Some(a))
    })
    .await??;
    let Some(a) = made else {
        return Ok(None);
    };
    let urls = &app.settings.webhooks.urls;
    let mut ids = Vec::new();
    if !urls.is_empty() {
        let mut tx = app.store.begin().await?;
        for url in urls {
            let id = uuid::Uuid::new_v4().to_string();
            let body = json!({
                "id": id,
                "event": "audit.anchor",
                "seq": a.seq,
                "at": a.at,
                "actor": "system",
                "detail": a,
                "transfer": null,
            })
            .to_string();
            tx.insert_delivery(&id, a.seq, url, "audit.anchor", None, &body)
                .await?;
            ids.push(id);
        }
        tx.commit().await?;
    }
    tracing::info!(seq = a.seq, hash = %a.hash, file = %file.display(), "audit head anchored");
    Ok(Some((a, ids)))
}

/// Anchors every `anchor_interval` until `stop` turns true. The shutdown anchor is made by
/// [`at_shutdown`], after every other worker has written its last event.
pub async fn worker(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(app.settings.audit.anchor_interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Err(e) = anchor_now(&app).await {
            tracing::error!(error = %e, "cannot anchor the audit head");
        }
    }
}

/// The last anchor, and one attempt to send it, bounded by the webhook timeout (the notifier
/// has stopped by now; what is not delivered is retried at the next start).
pub async fn at_shutdown(app: &App) {
    let ids = match anchor_now(app).await {
        Ok(Some((_, ids))) => ids,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot anchor the audit head at shutdown");
            return;
        }
    };
    if ids.is_empty() {
        return;
    }
    let http = match super::client(&app.settings.webhooks) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client");
            return;
        }
    };
    let send = async {
        for id in &ids {
            if let Some(d) = app.store.delivery(id).await? {
                super::attempt(app, &http, &d, chrono::Utc::now().timestamp_millis()).await?;
            }
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(app.settings.webhooks.timeout, send).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot send the shutdown anchor"),
        Err(_) => tracing::warn!(
            "the shutdown anchor was not sent in time; it is retried at the next start"
        ),
    }
}
