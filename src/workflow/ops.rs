//! Operations through the API (`api::ops`): integrity verification, incidents, the audit log,
//! BagIt export and webhook deliveries, each with exactly one permission rule, and the same
//! work the CLI does on the data directory (which calls the `*_as` functions here as the
//! System Manager on the server, actor `admin-cli`).
//!
//! Who may do what (`tests/authz.rs` holds the same table, route by route):
//!
//! | operation | allowed |
//! |---|---|
//! | list incidents (`?transfer=`) | System Manager: all; Programme Manager: every transfer's; Project Manager: their projects' transfers' |
//! | resolve an incident | of a transfer: its project's Project Managers, Programme and System Managers; system-wide: System Manager |
//! | verify a transfer or a workspace | its project's Project Managers, Programme and System Managers |
//! | a transfer's audit events | its project's Project Managers, Programme and System Managers |
//! | verify or export the whole audit chain | System Manager (it holds every project's events) |
//! | a released transfer's bag | its project's Project Managers, Programme and System Managers (audited as `content.read`) |
//! | list or retry webhook deliveries | System Manager (deliveries carry every project's events) |
//!
//! Anyone else with a staff token gets 403; a transfer, workspace or incident of a project the
//! caller has no role in gets the same 404 as one that does not exist. Upload and collection
//! tokens get 403 everywhere here.

use super::access::{self, Principal};
use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::{Role, TransferId, TransferState};
use crate::store::{Incident, IncidentScope, Transfer, User};
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// The roles that manage a project's operations: its Project Managers, and the Programme and
/// System Managers (who hold their role for every project, see [`access::roles_in`]).
pub const MANAGERS: [Role; 3] = [
    Role::ProjectManager,
    Role::ProgrammeManager,
    Role::SystemManager,
];

/// Most items in one page of a list (and the default).
pub const MAX_PAGE: u32 = 1000;

/// Audit events read from the store at once by an export.
const AUDIT_PAGE: i64 = 1000;

/// An incident, as `airlock incidents --json` prints it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct IncidentView {
    #[schema(format = "uuid")]
    pub id: String,
    /// The transfer it concerns; `null` for a system-wide incident.
    pub transfer: Option<String>,
    /// `integrity`, `scan`, `hash-confirmation`, ...
    pub kind: String,
    /// `open` or `resolved`.
    pub state: String,
    pub detail: String,
    pub created_at: String,
}

impl From<&Incident> for IncidentView {
    fn from(i: &Incident) -> Self {
        Self {
            id: i.id.clone(),
            transfer: i.transfer_id.clone(),
            kind: i.kind.clone(),
            state: i.state.clone(),
            detail: i.detail.clone(),
            created_at: i.created_at.clone(),
        }
    }
}

/// The System Manager, or 403.
pub fn system_manager<'a>(who: &'a Principal, what: &str) -> Result<&'a User> {
    let u = who.staff()?;
    if u.roles.contains(&Role::SystemManager) {
        Ok(u)
    } else {
        Err(Error::Forbidden(format!(
            "{what} is for the System Manager only"
        )))
    }
}

/// A transfer the caller manages: 404 if they may not see it, 403 if they see it but do not
/// manage its project.
async fn managed_transfer(app: &App, user: &User, id: TransferId) -> Result<Transfer> {
    let (t, ws) = access::load_for(app, user, id).await?;
    access::require_role(app, user, &ws, &MANAGERS).await?;
    Ok(t)
}

fn page_size(limit: Option<u32>) -> i64 {
    limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE) as i64
}

/// A page of the incidents the caller may see, oldest first, after the incident `after`.
pub async fn incidents(
    app: &App,
    who: &Principal,
    transfer: Option<TransferId>,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<Vec<IncidentView>> {
    let user = who.staff()?;
    let scope = if let Some(id) = transfer {
        // One transfer: whoever manages it sees all of its incidents.
        managed_transfer(app, user, id).await?;
        IncidentScope::All
    } else if user.roles.contains(&Role::SystemManager) {
        IncidentScope::All
    } else if user.roles.contains(&Role::ProgrammeManager) {
        IncidentScope::Transfers
    } else if user.roles.contains(&Role::ProjectManager)
        || app.store.manages_a_project(user.id).await?
    {
        IncidentScope::ManagedBy(user.id)
    } else {
        return Err(Error::Forbidden(format!(
            "{} manages no project: incidents are for Project, Programme and System Managers",
            user.name
        )));
    };
    Ok(app
        .store
        .incidents_page(transfer, &scope, after, page_size(limit))
        .await?
        .iter()
        .map(IncidentView::from)
        .collect())
}

/// Resolves an open incident as the caller (see the table above for who may).
pub async fn resolve_incident(
    app: &App,
    who: &Principal,
    id: &str,
    comment: &str,
) -> Result<IncidentView> {
    let user = who.staff()?;
    let none = || Error::NotFound(format!("no incident {id}"));
    let i = app.store.incident(id).await?.ok_or_else(none)?;
    match i.transfer_id.as_deref().map(str::parse::<TransferId>) {
        Some(Ok(t)) => {
            // An incident of a transfer the caller may not see does not exist for them.
            let (_, ws) = access::load_for(app, user, t).await.map_err(|e| match e {
                Error::NotFound(_) => none(),
                e => e,
            })?;
            access::require_role(app, user, &ws, &MANAGERS).await?;
        }
        Some(Err(_)) | None => {
            system_manager(who, "a system-wide incident")?;
        }
    }
    resolve_as(app, &who.actor(), id, comment).await?;
    let i = app.store.incident(id).await?.ok_or_else(none)?;
    Ok(IncidentView::from(&i))
}

/// Marks an open incident resolved, audited as `incident.resolved` by `actor` in the same
/// transaction. If the problem is still there, the next check raises it again.
pub async fn resolve_as(app: &App, actor: &str, id: &str, comment: &str) -> Result<()> {
    let comment = comment.trim();
    if comment.is_empty() {
        return Err(Error::BadRequest(
            "say how it was handled: a non-empty comment".into(),
        ));
    }
    let mut tx = app.store.begin().await?;
    let Some(t) = tx.resolve_incident(id).await? else {
        return Err(Error::Conflict(format!(
            "no open incident {id}: it is resolved already, or does not exist"
        )));
    };
    let mut ev = AuditEvent::new(actor, "incident.resolved")
        .detail(serde_json::json!({ "incident": id, "comment": comment }));
    if let Some(t) = t.and_then(|t| t.parse::<TransferId>().ok()) {
        ev = ev.transfer(t);
    }
    tx.audit(ev).await?;
    tx.commit().await?;
    Ok(())
}

/// Re-hashes a transfer the caller manages (quarantine copy and, once released, its
/// read-only copy), recording the results and raising incidents as the scheduler does.
pub async fn verify_transfer(
    app: &App,
    who: &Principal,
    id: TransferId,
    scope: crate::integrity::Scope,
) -> Result<Vec<crate::integrity::Report>> {
    let user = who.staff()?;
    let t = managed_transfer(app, user, id).await?;
    verify_as(app, &who.actor(), vec![t], scope).await
}

/// Re-hashes every transfer released into a workspace (`PROJECT/WORKSPACE`) the caller
/// manages.
pub async fn verify_workspace(
    app: &App,
    who: &Principal,
    path: &str,
    scope: crate::integrity::Scope,
) -> Result<Vec<crate::integrity::Report>> {
    let user = who.staff()?;
    let ws = access::visible_workspace(app, user, path).await?;
    access::require_role(app, user, &ws, &MANAGERS).await?;
    verify_as(app, &who.actor(), released_in(app, &ws).await?, scope).await
}

/// The transfers released into a workspace.
pub async fn released_in(app: &App, ws: &crate::store::Workspace) -> Result<Vec<Transfer>> {
    Ok(app
        .store
        .transfers_in(ws.id)
        .await?
        .into_iter()
        .filter(|t| t.state == TransferState::Released)
        .collect())
}

/// Verifies `transfers` one after the other (`scope`: `All` or `Released`), each recorded
/// (incidents raised) and audited as `integrity.verified` by `actor`. A transfer not sealed
/// yet has nothing to verify, nor one not released when only released copies are asked
/// for: 409.
pub async fn verify_as(
    app: &App,
    actor: &str,
    transfers: Vec<Transfer>,
    scope: crate::integrity::Scope,
) -> Result<Vec<crate::integrity::Report>> {
    if let Some(t) = transfers.iter().find(|t| t.root_digest.is_none()) {
        return Err(Error::Conflict(format!(
            "transfer {} is not sealed: nothing to verify yet",
            t.id
        )));
    }
    let released_only = matches!(scope, crate::integrity::Scope::Released);
    if let Some(t) = transfers
        .iter()
        .find(|t| released_only && t.state != TransferState::Released)
    {
        return Err(Error::Conflict(format!(
            "transfer {} is {}, not released: it has no released copies to verify (leave out \
             --released-only to verify its quarantine copy)",
            t.id, t.state
        )));
    }
    let mut reports = Vec::with_capacity(transfers.len());
    for t in &transfers {
        let r = crate::integrity::verify(app, t, scope).await?;
        crate::integrity::record(app, t, &r).await?;
        app.store
            .audit(
                AuditEvent::new(actor, "integrity.verified")
                    .transfer(t.id)
                    .detail(serde_json::json!({
                        "ok": r.ok, "bytes": r.bytes, "problems": r.problem_count(),
                    })),
            )
            .await?;
        reports.push(r);
    }
    Ok(reports)
}

/// The newest anchor [`AuditVerification`] checked.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct AnchorSeen {
    pub seq: i64,
    pub at: String,
}

/// Where a head pinned by the caller (`?head=`) sits in the chain.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct PinnedHead {
    pub hash: String,
    /// Its event; `null` if it is not in the chain (events were rewritten).
    pub seq: Option<i64>,
    /// Events after it.
    pub after: Option<u64>,
}

/// What `airlock audit verify` found: the chain, the key on every event and the signed
/// anchors, checked a page at a time.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct AuditVerification {
    /// Whether the chain, keys, anchors (and the pinned head, if any) all check out.
    pub ok: bool,
    /// The first problem, naming the bad event, when `ok` is false.
    pub error: Option<String>,
    pub events: u64,
    /// Events from before the audit key, checked by linkage only.
    pub legacy: u64,
    /// Anchors checked.
    pub anchors: u64,
    /// The anchor file on the server.
    pub anchor_file: String,
    pub latest_anchor: Option<AnchorSeen>,
    /// The hash of the last event checked.
    pub head: String,
    pub pinned: Option<PinnedHead>,
}

/// Checks the whole audit chain up to its head when called, a page of events at a time
/// (memory does not grow with the log). Anchors are read first, so none can vouch for an
/// event written after the head was taken.
pub async fn verify_audit(app: &App, head: Option<&str>) -> Result<AuditVerification> {
    let key = app
        .store
        .chain_key()
        .ok_or_else(|| Error::Internal("the audit key was not loaded".into()))?;
    let file = app
        .settings
        .audit
        .anchor_file(&app.settings.storage.data_dir);
    let mut out = AuditVerification {
        ok: false,
        error: None,
        events: 0,
        legacy: 0,
        anchors: 0,
        anchor_file: file.display().to_string(),
        latest_anchor: None,
        head: crate::audit::GENESIS.to_owned(),
        pinned: head.map(|h| PinnedHead {
            hash: h.trim().to_owned(),
            seq: None,
            after: None,
        }),
    };
    let anchors = match crate::audit::anchor::read(&file, app.anchor_key.public()) {
        Ok(a) => a,
        Err(e) => {
            out.error = Some(e.to_string());
            return Ok(out);
        }
    };
    let upto = app.store.last_audit_seq().await?;
    let mut v = crate::audit::ChainVerifier::new(key, &anchors);
    let mut after = 0;
    loop {
        let page = app.store.audit_page(None, after, upto, AUDIT_PAGE).await?;
        for r in &page {
            if let Err(e) = v.push(r) {
                out.error = Some(e.to_string());
                out.events = v.events() as u64;
                return Ok(out);
            }
            if let Some(p) = out.pinned.as_mut().filter(|p| p.hash == r.hash) {
                p.seq = Some(r.seq);
            }
            out.head.clone_from(&r.hash);
        }
        match page.last() {
            Some(r) if page.len() as i64 == AUDIT_PAGE => after = r.seq,
            _ => break,
        }
    }
    match v.finish() {
        Ok(done) => {
            out.events = done.events as u64;
            out.legacy = done.legacy as u64;
            out.anchors = done.anchors as u64;
            out.latest_anchor = done.latest_anchor.map(|a| AnchorSeen {
                seq: a.seq,
                at: a.at,
            });
            if let Some(p) = out.pinned.as_mut() {
                p.after = p.seq.map(|s| out.events.saturating_sub(s as u64));
            }
            out.ok = out.pinned.as_ref().is_none_or(|p| p.seq.is_some());
        }
        Err(e) => out.error = Some(e.to_string()),
    }
    Ok(out)
}

/// The whole audit chain verified, for the System Manager.
pub async fn verify_audit_for(
    app: &App,
    who: &Principal,
    head: Option<&str>,
) -> Result<AuditVerification> {
    system_manager(who, "the whole audit chain")?;
    verify_audit(app, head).await
}

/// Every audit event up to the head when called (or only one transfer's), one JSON object per
/// line, read from the store a page at a time as the client takes them.
pub fn audit_lines(
    app: Arc<App>,
    transfer: Option<String>,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    use futures::StreamExt;
    struct At {
        app: Arc<App>,
        transfer: Option<String>,
        after: i64,
        upto: Option<i64>,
        done: bool,
    }
    let start = At {
        app,
        transfer,
        after: 0,
        upto: None,
        done: false,
    };
    futures::stream::unfold(start, |mut at| async move {
        if at.done {
            return None;
        }
        let page = async {
            let upto = match at.upto {
                Some(u) => u,
                None => {
                    let u = at.app.store.last_audit_seq().await?;
                    at.upto = Some(u);
                    u
                }
            };
            at.app
                .store
                .audit_page(at.transfer.as_deref(), at.after, upto, AUDIT_PAGE)
                .await
        }
        .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                at.done = true;
                return Some((Err(std::io::Error::other(e.to_string())), at));
            }
        };
        if (page.len() as i64) < AUDIT_PAGE {
            at.done = true;
        }
        let last = page.last()?;
        at.after = last.seq;
        let mut buf = Vec::with_capacity(page.len() * 400);
        for r in &page {
            if let Err(e) = serde_json::to_writer(&mut buf, r) {
                at.done = true;
                return Some((Err(std::io::Error::other(e)), at));
            }
            buf.push(b'\n');
        }
        Some((Ok(Bytes::from(buf)), at))
    })
    .boxed()
}

/// The whole chain as JSON lines, for the System Manager.
pub fn export_audit(
    app: Arc<App>,
    who: &Principal,
) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
    system_manager(who, "the whole audit chain")?;
    Ok(audit_lines(app, None))
}

/// One transfer's audit events as JSON lines, for whoever manages it.
pub async fn transfer_audit(
    app: Arc<App>,
    who: &Principal,
    id: TransferId,
) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
    managed_transfer(&app, who.staff()?, id).await?;
    Ok(audit_lines(app, Some(id.to_string())))
}

/// A released transfer's BagIt bag as a tar stream, for whoever manages it; audited as a
/// content read (`content.read`, `"what": "bag"`) before the first byte.
pub async fn bag(
    app: Arc<App>,
    who: &Principal,
    id: TransferId,
) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
    let t = managed_transfer(&app, who.staff()?, id).await?;
    if t.state != TransferState::Released || t.release_location.is_none() {
        return Err(Error::Conflict(format!(
            "transfer {id} is {}: only a released transfer is exported as a bag",
            t.state
        )));
    }
    app.store
        .audit(
            AuditEvent::new(who.actor(), "content.read")
                .transfer(id)
                .detail(serde_json::json!({ "what": "bag", "state": t.state })),
        )
        .await?;
    Ok(crate::integrity::bag::tar_stream(app, t))
}

/// A webhook delivery, as `airlock webhooks list --json` prints it (the signed body is not
/// shown).
pub type DeliveryView = crate::store::Delivery;

/// A page of webhook deliveries, newest first, for the System Manager.
pub async fn webhooks(
    app: &App,
    who: &Principal,
    state: Option<&str>,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<Vec<DeliveryView>> {
    system_manager(
        who,
        "webhook deliveries (they carry every project's events)",
    )?;
    if let Some(s) = state {
        if !["pending", "delivered", "failed"].contains(&s) {
            return Err(Error::BadRequest(format!(
                "state must be pending, delivered or failed, not `{s}`"
            )));
        }
    }
    Ok(app
        .store
        .deliveries_page(state, after, page_size(limit))
        .await?)
}

/// Puts a failed delivery back in the queue, for the System Manager.
pub async fn retry_webhook(app: &App, who: &Principal, id: &str) -> Result<DeliveryView> {
    system_manager(
        who,
        "webhook deliveries (they carry every project's events)",
    )?;
    if app.store.delivery(id).await?.is_none() {
        return Err(Error::NotFound(format!("no delivery {id}")));
    }
    retry_as(app, &who.actor(), id).await?;
    app.store
        .delivery(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no delivery {id}")))
}

/// Puts a failed delivery back in the queue, audited as `webhook.retried` by `actor` in the
/// same transaction.
pub async fn retry_as(app: &App, actor: &str, id: &str) -> Result<()> {
    let mut tx = app.store.begin().await?;
    if !tx.retry_delivery(id).await? {
        return Err(Error::Conflict(format!(
            "no failed delivery {id}: only a failed delivery is sent again"
        )));
    }
    tx.audit(
        AuditEvent::new(actor, "webhook.retried").detail(serde_json::json!({ "delivery": id })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
