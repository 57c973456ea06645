//! The re-verification scheduler: every file at rest is re-hashed within its policy's
//! `reverify_interval`. Each file keeps its last-verified time (the `fixity` table; a file never
//! re-hashed counts from its seal, or its release, when it was last hashed), so the work is
//! spread over the interval as files fell due, and a restart resumes the pass where it stopped:
//! what was verified stays verified. `[integrity] bytes_per_second` throttles it, so a large
//! estate never starves uploads.

use super::{record, verify, QUARANTINE, RELEASED};
use crate::app::App;
use crate::domain::TransferState;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn worker(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if !app.settings.integrity.enabled {
        return;
    }
    loop {
        tokio::select! {
            r = pass(&app) => if let Err(e) = r {
                tracing::error!(error = %e, "re-verification pass failed");
            },
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(app.settings.integrity.poll_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn ms(rfc3339: Option<&str>) -> i64 {
    rfc3339
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.timestamp_millis())
        .unwrap_or(0)
}

/// Re-hashes every file whose interval has run out, throttled.
pub async fn pass(app: &App) -> crate::workflow::Result<()> {
    let rate = app.settings.integrity.bytes_per_second;
    for t in app.store.transfers_at_rest().await? {
        if matches!(t.state, TransferState::Open | TransferState::Revoked) {
            continue;
        }
        let Some(ws) = app.store.workspace(t.workspace_id).await? else {
            continue;
        };
        let interval = app
            .policy(&ws)?
            .rules
            .integrity
            .reverify_interval
            .as_millis() as i64;
        let now = chrono::Utc::now().timestamp_millis();
        let files = app.store.files(t.id).await?;
        let mut due: Vec<((String, String), u64)> = Vec::new();
        let mut locations = vec![(QUARANTINE, ms(t.sealed_at.as_deref()))];
        if t.state == TransferState::Released {
            locations.push((RELEASED, ms(t.released_at.as_deref())));
        }
        for (loc, base) in locations {
            let last = app.store.last_verified(t.id, loc).await?;
            for f in &files {
                let at = last.get(&f.path).copied().unwrap_or(base);
                if at + interval <= now {
                    due.push(((loc.to_owned(), f.path.clone()), f.received));
                }
            }
        }
        if due.is_empty() {
            continue;
        }
        // Batches of about one second's worth of bytes, so throttling is smooth.
        let per_batch = if rate == 0 { u64::MAX } else { rate };
        let mut batch: HashSet<(String, String)> = HashSet::new();
        let mut batch_bytes = 0u64;
        let mut it = due.into_iter().peekable();
        while let Some((key, size)) = it.next() {
            batch.insert(key);
            batch_bytes += size;
            if batch_bytes >= per_batch || it.peek().is_none() {
                let started = Instant::now();
                let report = verify(app, &t, Some(std::mem::take(&mut batch))).await?;
                record(app, &t, &report).await?;
                if rate > 0 {
                    let want = Duration::from_secs_f64(batch_bytes as f64 / rate as f64);
                    if let Some(rest) = want.checked_sub(started.elapsed()) {
                        tokio::time::sleep(rest).await;
                    }
                }
                batch_bytes = 0;
            }
        }
    }
    Ok(())
}
