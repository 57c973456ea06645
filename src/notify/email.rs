//! Email for every transition that awaits someone or tells a requester the outcome.
//!
//! Each email names the workspace, transfer, kind, state and reason, says what is awaited
//! from whom (or what the outcome was), and links to the transfer's page,
//! `<[ui] public_url>/ui/transfers/<id>`. It never carries a token or a link that grants
//! access: access details stay in airlock (the Turing paper, 4.3), and a person signs in to
//! act. Free text that reaches an email (a state reason holds a reviewer's comment) has
//! anything shaped like a token removed. Egress checkers' own comments never reach the
//! requester: the reason already holds only what is shared with them.
//!
//! Who is mailed, by audit event:
//! - `transfer.in_review`: everyone who could give a missing approval (the transfer's
//!   `awaiting`: the role's holders in the project, the assigned Referees, the Programme
//!   Managers); when nobody can give one (no Referee assigned yet, say), the project's
//!   Project Managers, told what is missing. Egress requests reach their output checkers
//!   this way once the disclosure checks are in: a mail at `egress.submitted` would ask for a
//!   review that cannot start yet.
//! - `transfer.referee_assigned`: the Referee; at tier 3 and up, where the assignment
//!   awaits counter-approval, also the project's Dataset Provider Representatives (never
//!   the assigner or the Referee). `transfer.referee_approved`: the Referee.
//! - outcomes (`transfer.approved`, `released`, `rejected`, `returned`, `blocked`,
//!   `expired`, `cancelled`, `revoked`, and `egress.withdrawn`): the requester (the
//!   transfer's uploader) and the project's Project Managers.
//!
//! Nobody is mailed about their own action, nor while disabled. People are addressed as
//! `USER@[mail] domain`.
//!
//! The source is the audit log, as for webhooks ([`super`]): the notifier tails
//! `audit_events` by sequence number and copies the events it mails about into an outbox
//! (`mail_outbox`), one row per event and person, advancing its cursor (`mail_cursor`) in the
//! same transaction, so nothing committed is missed, nothing is queued twice, and a restart
//! carries on where it stopped. On first start with `[mail] smtp` set, the cursor begins at
//! the end of the log (no flood of history); without it nothing is queued. A message is
//! claimed with a lease before it is sent, so two replicas never send one twice; a failure
//! is retried with exponential backoff and jitter up to `[mail] max_attempts`, then the
//! message is marked `failed`, logged, and audited as `mail.failed`.

use super::mail::Mailer;
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::{Role, TransferState};
use crate::store::{AuditRow, MailRow, NewMail};
use crate::workflow::transfers::TransferView;
use crate::workflow::Result;
use serde_json::{json, Value};
use std::sync::Arc;

/// Outcomes the requester and the Project Managers are told of.
const OUTCOMES: [&str; 9] = [
    "transfer.approved",
    "transfer.released",
    "transfer.rejected",
    "transfer.returned",
    "transfer.blocked",
    "transfer.expired",
    "transfer.cancelled",
    "transfer.revoked",
    "egress.withdrawn",
];

/// Whether `action` is mailed about.
pub fn mailed(action: &str) -> bool {
    OUTCOMES.contains(&action)
        || matches!(
            action,
            "transfer.in_review" | "transfer.referee_assigned" | "transfer.referee_approved"
        )
}

/// One person to mail about an event, and what they are told first.
#[derive(Debug, Clone, PartialEq)]
struct Notice {
    user: String,
    /// The subject's end, such as "awaits your approval".
    short: String,
    /// The opening sentence.
    lead: String,
}

/// `PROJECT/WORKSPACE`'s active Project Managers.
async fn project_managers(app: &App, ws: &crate::store::Workspace) -> Result<Vec<String>> {
    Ok(app
        .store
        .members(ws.project_id)
        .await?
        .into_iter()
        .filter(|m| m.role == Role::ProjectManager && m.state == "active")
        .map(|m| m.user)
        .collect())
}

/// "transfer 0193… (data-ingress) in proj/ws".
fn what(v: &TransferView) -> String {
    let noun = if v.kind.is_egress() {
        "Egress request"
    } else {
        "Transfer"
    };
    format!("{noun} {} ({}) in workspace {}", v.id, v.kind, v.workspace)
}

/// Who is mailed about `e`, and what each is told.
async fn notices(app: &App, e: &AuditRow, v: &TransferView) -> Result<Vec<Notice>> {
    let t = app
        .store
        .transfer(v.id)
        .await?
        .ok_or_else(|| crate::workflow::Error::NotFound(format!("transfer {}", v.id)))?;
    let ws = app
        .store
        .workspace(t.workspace_id)
        .await?
        .ok_or_else(|| crate::workflow::Error::NotFound(format!("workspace of {}", v.id)))?;
    let detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
    let subject = what(v);
    let mut out = Vec::new();
    let mut push = |user: &str, short: String, lead: String| {
        out.push(Notice {
            user: user.to_owned(),
            short,
            lead,
        })
    };
    match e.action.as_str() {
        "transfer.in_review" => {
            // Only while review is still on: a policy asking nothing approves at once.
            if v.state != TransferState::InReview {
                return Ok(Vec::new());
            }
            let pms = project_managers(app, &ws).await?;
            for a in &v.awaiting {
                let verb = if v.kind.is_egress() {
                    "review"
                } else {
                    "approval"
                };
                for user in &a.from {
                    push(
                        user,
                        format!("awaits your {verb}"),
                        format!("{subject} awaits your {verb} as {}.", a.role),
                    );
                }
                if a.from.is_empty() {
                    let hint = if a.role == Role::Referee {
                        "no Referee is assigned yet: assign one on the transfer page".to_owned()
                    } else {
                        format!(
                            "nobody in the project holds the {} role and may approve it (the \
                             requester and token issuers never count)",
                            a.role
                        )
                    };
                    for pm in &pms {
                        push(
                            pm,
                            format!("needs a {}", a.role),
                            format!("{subject} awaits approval as {}, and {hint}.", a.role),
                        );
                    }
                }
            }
        }
        "transfer.referee_assigned" => {
            let Some(referee) = detail["referee"].as_str() else {
                return Ok(Vec::new());
            };
            if detail["pending_counter_approval"] == true {
                push(
                    referee,
                    "you were assigned as Referee".into(),
                    format!(
                        "You were assigned as Referee of {}; the assignment awaits \
                         counter-approval by the project's Dataset Provider Representative.",
                        lower(&subject)
                    ),
                );
                let assigner = e.actor.strip_prefix("user:").unwrap_or("");
                for m in app.store.members(ws.project_id).await? {
                    if m.role == Role::Provider
                        && m.state == "active"
                        && m.user != referee
                        && m.user != assigner
                    {
                        push(
                            &m.user,
                            format!("awaits your counter-approval of Referee {referee}"),
                            format!(
                                "{referee} was assigned as Referee of {}; the assignment \
                                 awaits your counter-approval.",
                                lower(&subject)
                            ),
                        );
                    }
                }
            } else {
                push(
                    referee,
                    "you were assigned as Referee".into(),
                    format!(
                        "You were assigned as Referee of {}. {}",
                        lower(&subject),
                        referee_next(v)
                    ),
                );
            }
        }
        "transfer.referee_approved" => {
            if let Some(referee) = detail["referee"].as_str() {
                push(
                    referee,
                    "your assignment as Referee was approved".into(),
                    format!(
                        "Your assignment as Referee of {} was counter-approved. {}",
                        lower(&subject),
                        referee_next(v)
                    ),
                );
            }
        }
        action if OUTCOMES.contains(&action) => {
            let outcome = match action {
                "transfer.approved" => "was approved",
                "transfer.released" => "was released",
                "transfer.rejected" => "was rejected",
                "transfer.returned" => "was returned to the requester",
                "transfer.blocked" => "was blocked",
                "transfer.expired" => "expired before it was sealed",
                "transfer.cancelled" => "was cancelled",
                "transfer.revoked" => "was revoked",
                _ => "was withdrawn",
            };
            let mut people = vec![v.uploader.clone()];
            people.extend(project_managers(app, &ws).await?);
            for user in &people {
                push(user, outcome.into(), format!("{subject} {outcome}."));
            }
        }
        _ => {}
    }
    // Never about one's own action, and one message per person and event (the first reason
    // that names them).
    let actor = e.actor.strip_prefix("user:");
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|n| Some(n.user.as_str()) != actor && seen.insert(n.user.clone()));
    let mut kept = Vec::with_capacity(out.len());
    for n in out {
        match app.store.user_by_name(&n.user).await? {
            Some(u) if !u.disabled => kept.push(n),
            _ => {}
        }
    }
    Ok(kept)
}

/// What a Referee can do now.
fn referee_next(v: &TransferView) -> &'static str {
    match v.state {
        TransferState::InReview => "It awaits your review.",
        TransferState::Open
        | TransferState::Sealed
        | TransferState::Scanning
        | TransferState::ScanError
        | TransferState::Returned => "Its review begins once it is sealed and its scans are clean.",
        _ => "Its review is over.",
    }
}

/// "Transfer …" → "transfer …" inside a sentence.
fn lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Removes anything shaped like a token (a JWT: `eyJ…​.…​.…`) from free text.
pub fn scrub(text: &str) -> String {
    static JWT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    JWT.get_or_init(|| {
        regex::Regex::new(r"eyJ[A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-=]*){1,2}").expect("static regex")
    })
    .replace_all(text, "[token removed]")
    .into_owned()
}

/// The subject and body of `n`'s email about `v`.
fn render(base_url: &str, v: &TransferView, n: &Notice) -> (String, String) {
    let link = format!("{base_url}/ui/transfers/{}", v.id);
    let subject = scrub(&format!(
        "[airlock] {} {} in {}: {}",
        v.kind, v.id, v.workspace, n.short
    ));
    let mut body = format!("Hello {},\n\n{}\n\n", n.user, n.lead);
    body.push_str(&format!("  Workspace: {}\n", v.workspace));
    body.push_str(&format!("  Transfer:  {}\n", v.id));
    body.push_str(&format!("  Kind:      {}\n", v.kind));
    body.push_str(&format!("  State:     {}\n", v.state));
    body.push_str(&format!("  Reason:    {}\n", v.state_reason));
    body.push_str(&format!("  Requester: {}\n", v.uploader));
    for a in &v.awaiting {
        let from = if a.from.is_empty() {
            "nobody yet".to_owned()
        } else {
            a.from.join(", ")
        };
        body.push_str(&format!(
            "  Awaiting:  {} {} approval{} from {from}\n",
            a.needed,
            a.role,
            if a.needed > 1 { "s" } else { "" }
        ));
    }
    body.push_str(&format!(
        "\nThe transfer's page, with its files, checks, decisions and history:\n  {link}\n\n\
         This email holds no access link or token: sign in to airlock to act.\n"
    ));
    (subject, scrub(&body))
}

/// Copies new audit events into the email outbox. Returns how many messages were queued.
pub async fn enqueue(app: &App) -> Result<usize> {
    let s = &app.settings;
    let (Some(_), Some(domain)) = (&s.mail.smtp, &s.mail.domain) else {
        return Ok(0);
    };
    let cursor = app.store.mail_cursor().await?;
    let after = match cursor {
        Some(c) => c,
        None => {
            let last = app.store.last_audit_seq().await?;
            let mut tx = app.store.begin().await?;
            tx.advance_mail_cursor(None, last).await?;
            tx.commit().await?;
            return Ok(0);
        }
    };
    let events = app.store.audit_after(after, 200).await?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    let base = s.ui.base_url(s.server.listen);
    // Messages are built before the write lock is taken (they read the store).
    let mut rows = Vec::new();
    for e in events.iter().filter(|e| mailed(&e.action)) {
        let Some(Ok(tid)) = e.transfer_id.as_deref().map(str::parse) else {
            continue;
        };
        let v = match crate::workflow::transfers::view(app, tid).await {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!(transfer = %tid, event = %e.action, error = %err, "no email: cannot read the transfer");
                continue;
            }
        };
        let people = match notices(app, e, &v).await {
            Ok(p) => p,
            Err(err) => {
                tracing::warn!(transfer = %tid, event = %e.action, error = %err, "no email: cannot tell whom to mail");
                continue;
            }
        };
        for n in people {
            let (subject, body) = render(&base, &v, &n);
            rows.push(NewMail {
                id: uuid::Uuid::new_v4().to_string(),
                audit_seq: e.seq,
                event: e.action.clone(),
                transfer_id: e.transfer_id.clone(),
                address: format!("{}@{domain}", n.user),
                recipient: n.user,
                subject,
                body,
            });
        }
    }
    let mut tx = app.store.begin().await?;
    if !tx.advance_mail_cursor(Some(after), last).await? {
        // Another replica queued these events meanwhile.
        return Ok(0);
    }
    let mut queued = 0;
    for m in &rows {
        queued += usize::from(tx.insert_mail(m).await?);
    }
    tx.commit().await?;
    Ok(queued)
}

/// Sends every due message once. Returns how many were attempted.
pub async fn send_due(app: &App, mailer: &Mailer) -> Result<usize> {
    let now = chrono::Utc::now().timestamp_millis();
    let due = app.store.due_mail(now, 50).await?;
    let mut n = 0;
    for m in &due {
        // Held for two timeouts: past that, the sender is taken to have died.
        let lease = now + 2 * app.settings.mail.timeout.as_millis() as i64 + 1000;
        if app.store.claim_mail(&m.id, now, lease).await? {
            attempt(app, mailer, m).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Sends `m` once and records the outcome: sent, failed after the last attempt (logged and
/// audited), or pending again after a backoff with jitter.
async fn attempt(app: &App, mailer: &Mailer, m: &MailRow) -> Result<()> {
    let cfg = &app.settings.mail;
    match mailer
        .send(std::slice::from_ref(&m.address), &m.subject, &m.body)
        .await
    {
        Ok(()) => {
            app.store
                .record_mail_attempt(&m.id, "sent", None, 0)
                .await?;
        }
        Err(err) => {
            let error = err.to_string();
            let attempts = m.attempts as u32 + 1;
            if attempts >= cfg.max_attempts {
                tracing::warn!(mail = %m.id, to = %m.recipient, event = %m.event, relay = mailer.relay(), %error, attempts, "email failed");
                app.store
                    .record_mail_attempt(&m.id, "failed", Some(&error), 0)
                    .await?;
                let mut ev = AuditEvent::new("system", "mail.failed").detail(json!({
                    "mail": m.id, "recipient": m.recipient, "event": m.event,
                    "seq": m.audit_seq, "attempts": attempts, "error": error,
                }));
                if let Some(Ok(t)) = m
                    .transfer_id
                    .as_deref()
                    .map(str::parse::<crate::domain::TransferId>)
                {
                    ev = ev.transfer(t);
                }
                app.store.audit(ev).await?;
            } else {
                let wait = super::backoff(cfg.backoff_initial, cfg.backoff_max, attempts);
                // Up to a quarter more, so messages failing together do not retry in lockstep.
                let jitter = rand::random::<f64>() * 0.25;
                let wait_ms = (wait.as_millis() as f64 * (1.0 + jitter)) as i64;
                tracing::info!(mail = %m.id, to = %m.recipient, relay = mailer.relay(), %error, attempts, wait_ms, "email will be retried");
                let next = chrono::Utc::now().timestamp_millis() + wait_ms;
                app.store
                    .record_mail_attempt(&m.id, "pending", Some(&error), next)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Queues and sends transition emails until `stop` turns true; does nothing without
/// `[mail] smtp`.
pub async fn worker(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mailer = match Mailer::from_settings(&app.settings) {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the SMTP transport; email is off");
            return;
        }
    };
    let every = app.settings.mail.poll_interval;
    super::poll(every, &mut stop, || async {
        // One replica queues and sends at a time: each message goes once.
        crate::workflow::lease::run(&app, "mail", async {
            if let Err(e) = enqueue(&app).await {
                tracing::warn!(error = %e, "cannot queue email");
            }
            if let Err(e) = send_due(&app, &mailer).await {
                tracing::warn!(error = %e, "cannot send email");
            }
        })
        .await;
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_scrubbed_from_free_text() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let s = scrub(&format!("returned by inv: use {jwt} to upload"));
        assert_eq!(s, "returned by inv: use [token removed] to upload");
        assert_eq!(scrub("eyJhbGciOi."), "[token removed]");
        assert_eq!(scrub("a plain reason"), "a plain reason");
    }

    #[test]
    fn transitions_and_outcomes_are_mailed_and_noise_is_not() {
        for a in [
            "transfer.in_review",
            "transfer.released",
            "transfer.returned",
            "transfer.referee_assigned",
            "egress.withdrawn",
        ] {
            assert!(mailed(a), "{a}");
        }
        for a in [
            "transfer.sealed",
            "transfer.approval",
            "token.issued",
            "egress.submitted",
            "mail.failed",
        ] {
            assert!(!mailed(a), "{a}");
        }
    }
}
