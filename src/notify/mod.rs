//! Signed webhooks: every transition of a transfer (and every membership change) is POSTed to
//! the configured URLs, with its context: workspace, transfer, requester, what is awaited and
//! from whom.
//!
//! The source is the audit log. Each change already writes its audit event in the same
//! transaction as the change itself, so the notifier tails `audit_events` by sequence number
//! and copies the events it cares about into an outbox (`webhook_deliveries`), advancing its
//! cursor in the same transaction: nothing committed is missed, nothing is sent twice by one
//! process, and a restart carries on where it stopped. On first start with webhooks on, the
//! cursor begins at the end of the log (no flood of history).
//!
//! Delivery: a POST with `content-type: application/json` and these headers:
//! - `airlock-event`: the event, such as `transfer.in_review`;
//! - `airlock-delivery`: the delivery id (retries keep it; receivers de-duplicate on it);
//! - `airlock-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! A receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares in
//! constant time, and refuses old timestamps (replays). Any 2xx is success; anything else is
//! retried with exponential backoff and jitter up to `max_attempts`, then marked `failed`,
//! logged, and written to the audit log as `webhook.failed`. `airlock webhooks list` shows
//! deliveries and their last error; `airlock webhooks retry ID` sends a failed one again.
//! Deliveries are sent oldest first, but a retried one may arrive after newer ones: order by
//! `seq` in the body, not by arrival. Redirects are never followed.
//!
//! Besides the audit events, [`anchor`] sends `audit.anchor` deliveries: the signed head of
//! the audit chain, to be kept by the receiver as evidence outside airlock.
//!
//! People are told by email ([`email`]), fed from the audit log the same way into an outbox
//! of its own, and sent through the SMTP transport of [`mail`].

pub mod anchor;
pub mod email;
pub mod mail;

use crate::app::App;
use crate::audit::AuditEvent;
use crate::store::{AuditRow, Delivery};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Audit actions that are notified: state changes and decisions (`transfer.`), membership
/// (`member.`), incidents (`incident.`) and people cut off (`user.disabled`,
/// `user.tokens_revoked`). Token uses, content reads and bootstrap steps are not.
pub const NOTIFIED: [&str; 9] = [
    "transfer.",
    "member.",
    "incident.",
    "user.disabled",
    "user.tokens_revoked",
    // Egress: submitted (pinned), withdrawn, each checker's review (its outcome, never the
    // votes' comments), the disclosure checks (counts and rules, never a value), and
    // collection tokens and downloads.
    "egress.submitted",
    "egress.withdrawn",
    "egress.reviewed",
    "egress.disclosure_checked",
];

/// `t=<t>,v1=<hex>`: the `airlock-signature` header for `body` sent at `t`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

/// HMAC-SHA256 over `"<t>.<body>"`.
fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks an `airlock-signature` header: the HMAC matches and `t` is within `tolerance` of
/// `now`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance {
        return false;
    }
    mac(secret, t, body).verify_slice(&v1).is_ok()
}

/// The wait before attempt `attempts + 1`, after `attempts` failures: `initial · 2^(n-1)`,
/// capped at `max`, without jitter.
pub fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
    initial.saturating_mul(factor).min(max)
}

fn notified(action: &str) -> bool {
    NOTIFIED.iter().any(|p| action.starts_with(p))
}

/// The transfer's context now, for an event's body.
async fn context(app: &App, e: &AuditRow) -> Value {
    match e.transfer_id.as_deref().map(str::parse) {
        Some(Ok(tid)) => match crate::workflow::transfers::view(app, tid).await {
            Ok(v) => json!({
                "id": v.id, "kind": v.kind, "workspace": v.workspace, "tier": v.tier,
                "state": v.state, "state_reason": v.state_reason,
                "requester": v.uploader, "created_by": v.created_by,
                "root_digest": v.root_digest, "policy_version": v.policy_version,
                "awaiting": v.awaiting, "referees": v.referees, "decisions": v.decisions,
                "file_count": v.file_count, "total_bytes": v.total_bytes,
                // Egress: who may collect, and the disclosure findings by status (counts only).
                "recipients": v.egress.as_ref().map(|e| &e.recipients),
                "target_workspace": v.egress.as_ref().and_then(|e| e.target_workspace.as_ref()),
                "findings": v.egress.as_ref().map(|e| &e.disclosure.counts),
            }),
            Err(err) => {
                tracing::warn!(transfer = ?e.transfer_id, error = %err, "webhook without transfer context");
                Value::Null
            }
        },
        _ => Value::Null,
    }
}

/// The body of one delivery: its id, the event and the transfer's context.
fn payload(id: &str, e: &AuditRow, transfer: &Value) -> String {
    json!({
        "id": id,
        "event": e.action,
        "seq": e.seq,
        "at": e.at,
        "actor": e.actor,
        "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null),
        "transfer": transfer,
    })
    .to_string()
}

/// Copies new audit events into the outbox. Returns how many deliveries were queued.
pub async fn enqueue(app: &App) -> anyhow::Result<usize> {
    let urls = &app.settings.webhooks.urls;
    if urls.is_empty() {
        return Ok(0);
    }
    let cursor = match app.store.webhook_cursor().await? {
        Some(c) => c,
        None => {
            let last = app.store.last_audit_seq().await?;
            let mut tx = app.store.begin().await?;
            tx.set_webhook_cursor(last).await?;
            tx.commit().await?;
            last
        }
    };
    let events = app.store.audit_after(cursor, 200).await?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    // Bodies are built before the write lock is taken (they read the store).
    let mut rows = Vec::new();
    for e in events.iter().filter(|e| notified(&e.action)) {
        let transfer = context(app, e).await;
        for url in urls {
            let id = uuid::Uuid::new_v4().to_string();
            let body = payload(&id, e, &transfer);
            rows.push((id, e, url, body));
        }
    }
    let mut tx = app.store.begin().await?;
    for (id, e, url, body) in &rows {
        tx.insert_delivery(id, e.seq, url, &e.action, e.transfer_id.as_deref(), body)
            .await?;
    }
    tx.set_webhook_cursor(last).await?;
    tx.commit().await?;
    Ok(rows.len())
}

/// Sends one delivery; returns the status, or the receiver's status (if it answered) and
/// what went wrong.
async fn send(
    app: &App,
    http: &reqwest::Client,
    d: &Delivery,
) -> Result<u16, (Option<u16>, String)> {
    let t = chrono::Utc::now().timestamp();
    let sig = sign(
        app.settings.webhooks.secret.as_bytes(),
        t,
        d.payload.as_bytes(),
    );
    let resp = http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("airlock-event", &d.event)
        .header("airlock-delivery", &d.id)
        .header("airlock-signature", sig)
        .body(d.payload.clone())
        .send()
        .await
        .map_err(|e| (None, format!("cannot deliver: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err((
            Some(status.as_u16()),
            format!("receiver answered {status}: {text}"),
        ))
    }
}

/// Sends every due delivery once. Returns how many were attempted.
pub async fn deliver_due(app: &App, http: &reqwest::Client) -> anyhow::Result<usize> {
    let now = chrono::Utc::now().timestamp_millis();
    let due = app.store.due_deliveries(now, 50).await?;
    for d in &due {
        attempt(app, http, d, now).await?;
    }
    Ok(due.len())
}

/// Sends `d` once and records the outcome: delivered, failed after the last attempt
/// (audited), or pending again after a backoff with jitter.
pub(crate) async fn attempt(
    app: &App,
    http: &reqwest::Client,
    d: &Delivery,
    now: i64,
) -> anyhow::Result<()> {
    let cfg = &app.settings.webhooks;
    match send(app, http, d).await {
        Ok(status) => {
            app.store
                .record_attempt(&d.id, "delivered", Some(status), None, 0)
                .await?;
        }
        Err((status, error)) => {
            let attempts = d.attempts as u32 + 1;
            if attempts >= cfg.max_attempts {
                tracing::warn!(delivery = %d.id, url = %d.url, event = %d.event, %error, attempts, "webhook failed");
                app.store
                    .record_attempt(&d.id, "failed", status, Some(&error), 0)
                    .await?;
                app.store
                    .audit(AuditEvent::new("system", "webhook.failed").detail(json!({
                        "delivery": d.id, "url": d.url, "event": d.event,
                        "seq": d.audit_seq, "attempts": attempts, "error": error,
                    })))
                    .await?;
            } else {
                let wait = backoff(cfg.backoff_initial, cfg.backoff_max, attempts);
                // Up to a quarter more, so many receivers failing at once do not retry
                // in lockstep.
                let jitter = rand::random::<f64>() * 0.25;
                let wait_ms = (wait.as_millis() as f64 * (1.0 + jitter)) as i64;
                tracing::info!(delivery = %d.id, url = %d.url, %error, attempts, wait_ms, "webhook will be retried");
                app.store
                    .record_attempt(&d.id, "pending", status, Some(&error), now + wait_ms)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Puts a failed delivery back in the queue (audited).
pub async fn retry(app: &App, id: &str) -> anyhow::Result<()> {
    let mut tx = app.store.begin().await?;
    if !tx.retry_delivery(id).await? {
        anyhow::bail!("no failed delivery {id}");
    }
    tx.audit(AuditEvent::new("admin-cli", "webhook.retried").detail(json!({ "delivery": id })))
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The HTTP client deliveries go through. Redirects are not followed: a receiver (or whoever
/// answers in its name) could otherwise point a signed delivery at an internal address; a
/// 3xx is an answer like any other non-2xx, so it is retried and then failed, visibly.
pub fn client(cfg: &crate::config::WebhookSettings) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Queues and sends webhooks until `stop` turns true.
pub async fn worker(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if app.settings.webhooks.urls.is_empty() {
        return;
    }
    let http = match client(&app.settings.webhooks) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; webhooks are off");
            return;
        }
    };
    let every = app.settings.webhooks.poll_interval;
    poll(every, &mut stop, || async {
        // One replica queues and sends at a time: each event is delivered once.
        crate::workflow::lease::run(&app, "webhooks", async {
            if let Err(e) = enqueue(&app).await {
                tracing::warn!(error = %e, "cannot queue webhooks");
            }
            if let Err(e) = deliver_due(&app, &http).await {
                tracing::warn!(error = %e, "cannot deliver webhooks");
            }
        })
        .await;
    })
    .await
}

/// Runs `step` now and then every `every` until `stop` turns true: the loop of the outbox
/// workers (webhooks, email).
pub(crate) async fn poll<F, Fut>(
    every: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        step().await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_catch_changes_and_replays() {
        let body = br#"{"event":"transfer.sealed"}"#;
        let h = sign(b"0123456789abcdef", 1000, body);
        assert!(h.starts_with("t=1000,v1="));
        assert!(verify(b"0123456789abcdef", &h, body, 1010, 300));
        assert!(!verify(b"0123456789abcdeX", &h, body, 1010, 300));
        assert!(!verify(
            b"0123456789abcdef",
            &h,
            br#"{"event":"transfer.sealeD"}"#,
            1010,
            300
        ));
        assert!(
            !verify(b"0123456789abcdef", &h, body, 2000, 300),
            "replayed"
        );
        assert!(!verify(b"0123456789abcdef", "v1=00", body, 1000, 300));
    }

    #[test]
    fn backoff_doubles_and_stops_at_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), s(600), 1), s(1));
        assert_eq!(backoff(s(1), s(600), 2), s(2));
        assert_eq!(backoff(s(1), s(600), 4), s(8));
        assert_eq!(backoff(s(1), s(600), 40), s(600));
    }

    #[test]
    fn only_transitions_are_notified() {
        assert!(notified("transfer.in_review"));
        assert!(notified("member.added"));
        assert!(!notified("token.used"));
        assert!(!notified("content.read"));
        assert!(!notified("webhook.failed"));
    }
}
