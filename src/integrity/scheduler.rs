//! The re-verification scheduler: every file at rest is re-hashed within its policy's
//! `reverify_interval`. Each file keeps its last-verified time (the `fixity` table; a file never
//! re-hashed counts from its seal, or its release, when it was last hashed), so the work is
//! spread over the interval as files fell due, and a restart resumes the pass where it stopped:
//! what was verified stays verified. `[integrity] bytes_per_second` throttles it, so a large
//! estate never starves uploads.

use super::{record, verify, Scope, QUARANTINE, RELEASED};
use crate::app::App;
use crate::domain::TransferState;
use std::sync::Arc;

pub async fn worker(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if !app.settings.integrity.enabled {
        return;
    }
    loop {
        tokio::select! {
            // One replica re-verifies at a time (`workflow::lease`).
            r = crate::workflow::lease::run(&app, "fixity", pass(&app)) => if let Some(Err(e)) = r {
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

/// An RFC 3339 time as Unix milliseconds (0 if absent or unreadable).
pub(crate) fn ms(rfc3339: Option<&str>) -> i64 {
    rfc3339
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.timestamp_millis())
        .unwrap_or(0)
}

/// Re-hashes every file whose interval has run out, throttled. A transfer with nothing due
/// costs two index reads per location; one with something due is walked once, hashing only
/// what is due (and looking for missing and unexpected files on the way).
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
        if !anything_due(app, &t, interval, now).await? {
            continue;
        }
        let scope = Scope::Due {
            interval_ms: interval,
            now_ms: now,
            bytes_per_second: rate,
        };
        let report = verify(app, &t, scope).await?;
        record(app, &t, &report).await?;
    }
    Ok(())
}

/// Whether any file of the transfer is due somewhere: one never checked while its seal (or
/// release) is older than the interval, or an oldest check older than the interval.
async fn anything_due(
    app: &App,
    t: &crate::store::Transfer,
    interval: i64,
    now: i64,
) -> crate::workflow::Result<bool> {
    let files = app.store.totals(t.id).await?.files;
    let mut locations = vec![(QUARANTINE, ms(t.sealed_at.as_deref()))];
    if t.state == TransferState::Released {
        locations.push((RELEASED, ms(t.released_at.as_deref())));
    }
    for (loc, base) in locations {
        let (checked, oldest) = app.store.fixity_age(t.id, loc).await?;
        if (checked < files && base + interval <= now)
            || oldest.is_some_and(|o| o + interval <= now)
        {
            return Ok(true);
        }
    }
    Ok(false)
}
