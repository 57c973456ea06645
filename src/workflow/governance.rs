//! Governance (Turing paper, sections 2, 8, 10 and 11): who may join a project, who reviews a
//! transfer, how decisions add up to a release, and how a release is withdrawn.
//!
//! The rules that always hold, whatever a policy says:
//! - the uploader (the requester) never decides, and neither does anyone who issued the
//!   transfer's upload token (they could have written into it);
//! - one person counts once per transfer, whatever roles they hold;
//! - a Referee is never a member of the project;
//! - nobody decides in a role they do not hold for that project (a Referee must be assigned
//!   to the transfer, and counter-approved at tier 3+);
//! - an approval is bound to the manifest root digest and the policy version it saw: change
//!   either and it no longer counts. Returning a transfer voids every approval.

use super::access::{self, Principal};
use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::state::Event;
use crate::domain::*;
use crate::policy::Policy;
use crate::store::{Decision, Transfer, Tx, User, Workspace};
use crate::volumes::Volumes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use super::transfers::Awaiting;

/// What a reviewer decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    /// Final.
    Reject,
    /// Back to the requester with comments; a new upload token reopens it, and every
    /// approval given so far is void.
    Return,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
            Verdict::Return => "return",
        }
    }
}

/// A reviewer's decision. Unknown fields are refused (400).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// The role the reviewer decides in. May be left out when they hold exactly one of the
    /// roles the policy asks for (400 if they hold several, 403 if none).
    #[serde(rename = "as")]
    pub role: Option<Role>,
    /// For the requester; required (non-blank) to reject or return, optional to approve.
    #[serde(default)]
    pub comment: String,
    /// The manifest root digest the reviewer saw (compared case-insensitively); 409 if the
    /// manifest is no longer that one. Left out: not checked.
    pub root_digest: Option<String>,
    /// The policy version the reviewer saw (`policy.version` of the transfer); 409 if the
    /// policy changed since. Left out: not checked.
    pub policy_version: Option<String>,
    /// A Referee approving a transfer whose scans left files unscannable
    /// (`scans.ack_required`) must set it: the unscannable files are recorded on the decision.
    /// 400 if left out then, or if set by anyone else or when there is nothing to acknowledge.
    #[serde(default)]
    pub acknowledge_unscannable: bool,
}

/// Decisions that still count: approvals, not void, bound to this root and policy version.
fn counting<'a>(
    decisions: &'a [Decision],
    root: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'a Decision> + 'a {
    decisions.iter().filter(move |d| {
        d.decision == "approve"
            && d.void_reason.is_none()
            && d.root_digest == root
            && d.policy_version == version
    })
}

/// Why a decision no longer counts, if it does not (for display).
pub fn void_reason(d: &Decision, root: Option<&str>, version: &str) -> Option<String> {
    if let Some(r) = &d.void_reason {
        return Some(r.clone());
    }
    if Some(d.root_digest.as_str()) != root {
        return Some("the manifest changed since".into());
    }
    if d.policy_version != version {
        return Some("the policy changed since".into());
    }
    None
}

/// The approvals a transfer needs: its policy's for its kind, plus a Referee's when scanning
/// left files unscannable and the policy lets review go on with an acknowledgment.
pub fn required(policy: &Policy, t: &Transfer) -> Vec<(Role, u32)> {
    let mut v = policy.approvals(t.kind).to_vec();
    if t.ack_required && !v.iter().any(|(r, _)| *r == Role::Referee) {
        v.push((Role::Referee, 1));
    }
    v
}

/// What a transfer needs, in the policy's order: [`required`], and for an egress request
/// whose outputs go to a target workspace (a derived workspace), the stricter of the two
/// workspaces' egress policies per role (paper 4.1.4).
pub async fn needed(app: &App, policy: &Policy, t: &Transfer) -> Result<Vec<(Role, u32)>> {
    let mut v = required(policy, t);
    if !t.kind.is_egress() {
        return Ok(v);
    }
    let Some(target) = app
        .store
        .egress(t.id)
        .await?
        .and_then(|e| e.target_workspace_id)
    else {
        return Ok(v);
    };
    let Some(tw) = app.store.workspace(target).await? else {
        return Ok(v);
    };
    for (role, n) in app.policy(&tw)?.approvals(t.kind) {
        match v.iter_mut().find(|(r, _)| r == role) {
            Some((_, m)) => *m = (*m).max(*n),
            None => v.push((*role, *n)),
        }
    }
    Ok(v)
}

/// The approvals still missing of `needed`: `(role, how many more)`, in policy order.
fn missing(
    needed: &[(Role, u32)],
    policy: &Policy,
    t: &Transfer,
    decisions: &[Decision],
) -> Vec<(Role, u32)> {
    let root = t.root_digest.as_deref().unwrap_or("");
    let version = policy.version.as_str();
    let mut have: BTreeMap<&str, u32> = BTreeMap::new();
    for d in counting(decisions, root, version) {
        *have.entry(d.role.as_str()).or_default() += 1;
    }
    needed
        .iter()
        .filter_map(|(role, want)| {
            let got = have.get(role.as_str()).copied().unwrap_or(0);
            (got < *want).then_some((*role, want - got))
        })
        .collect()
}

/// Everyone who could give each missing approval.
pub async fn awaiting(
    app: &App,
    t: &Transfer,
    ws: &Workspace,
    policy: &Policy,
    decisions: &[Decision],
) -> Result<Vec<Awaiting>> {
    if !matches!(
        t.state,
        TransferState::Sealed
            | TransferState::Scanning
            | TransferState::ScanError
            | TransferState::InReview
    ) {
        return Ok(Vec::new());
    }
    let root = t.root_digest.as_deref().unwrap_or("");
    let counted: Vec<UserId> = counting(decisions, root, policy.version.as_str())
        .map(|d| d.user_id)
        .collect();
    let barred = barred(app, t).await?;
    let members = app.store.members(ws.project_id).await?;
    let mut out = Vec::new();
    let needs = needed(app, policy, t).await?;
    for (role, needed) in missing(&needs, policy, t, decisions) {
        let candidates: Vec<(UserId, String)> = match role {
            Role::Referee => app
                .store
                .referees(t.id)
                .await?
                .into_iter()
                .filter(|r| r.state == "active")
                .map(|r| (r.user_id, r.user))
                .collect(),
            Role::ProgrammeManager | Role::SystemManager => app.store.users_with_role(role).await?,
            _ => members
                .iter()
                .filter(|m| m.role == role && m.state == "active")
                .map(|m| (m.user_id, m.user.clone()))
                .collect(),
        };
        out.push(Awaiting {
            role,
            needed,
            from: candidates
                .into_iter()
                .filter(|(id, _)| !barred.contains(id) && !counted.contains(id))
                .map(|(_, name)| name)
                .collect(),
        });
    }
    Ok(out)
}

/// The uploader and everyone who issued the transfer's upload token.
async fn barred(app: &App, t: &Transfer) -> Result<Vec<UserId>> {
    let mut v = app.store.token_issuers(t.id).await?;
    v.push(t.uploader_id);
    Ok(v)
}

/// A state reason naming what review waits for.
fn waiting_reason(missing: &[(Role, u32)]) -> String {
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, n)| format!("{n} {r}{}", if *n > 1 { "s" } else { "" }))
        .collect();
    format!("waiting for approval from {}", parts.join(" and "))
}

/// Review begins (after clean scans): the reason names who is awaited; a policy that asks no
/// approvals for this kind approves at once. Returns true if the transfer is now approved.
pub(super) async fn enter_review(
    app: &App,
    tx: &mut Tx<'_>,
    t: &Transfer,
    ws: &Workspace,
    from: TransferState,
) -> Result<bool> {
    let id = t.id;
    let policy = app.policy(ws)?;
    let needs = needed(app, &policy, t).await?;
    let missing = missing(&needs, &policy, t, &[]);
    let reason = if missing.is_empty() {
        "scans are clean".to_owned()
    } else {
        waiting_reason(&missing)
    };
    if !tx
        .set_state(id, from, TransferState::InReview, &reason)
        .await?
    {
        return Ok(false);
    }
    tx.audit(
        AuditEvent::new("system", "transfer.in_review")
            .transfer(id)
            .detail(serde_json::json!({
                "awaiting": missing.iter().map(|(r, n)| serde_json::json!({"role": r, "needed": n})).collect::<Vec<_>>(),
                "policy_version": policy.version,
            })),
    )
    .await?;
    if missing.is_empty() {
        let why = format!(
            "the tier {} policy asks no approval for {} beyond clean scans; releasing",
            ws.tier.get(),
            t.kind
        );
        tx.set_state(id, TransferState::InReview, TransferState::Approved, &why)
            .await?;
        tx.audit(
            AuditEvent::new("system", "transfer.approved")
                .transfer(id)
                .detail(serde_json::json!({ "reason": why })),
        )
        .await?;
        return Ok(true);
    }
    Ok(false)
}

/// Invariant 3, checked again just before any byte is released: the approvals recorded
/// against this exact root digest and the policy in force now satisfy that policy. If not (the
/// policy was changed after the approval, or the database was edited), the transfer goes back
/// to review with the reason, and nothing is released. Returns true if release may go ahead.
pub async fn recheck_before_release(app: &App, t: &Transfer) -> Result<bool> {
    let (_, ws) = access::load(app, t.id).await?;
    let policy = app.policy(&ws)?;
    let needs = needed(app, &policy, t).await?;
    let mut tx = app.store.begin().await?;
    let decisions = tx.decisions(t.id).await?;
    let still = missing(&needs, &policy, t, &decisions);
    if still.is_empty() {
        return Ok(true);
    }
    let why = format!(
        "not released: the approvals on record no longer satisfy the policy; {}",
        waiting_reason(&still)
    );
    if tx
        .set_state(t.id, TransferState::Approved, TransferState::InReview, &why)
        .await?
    {
        tx.audit(
            AuditEvent::new("system", "transfer.in_review")
                .transfer(t.id)
                .detail(serde_json::json!({
                    "reason": why, "policy_version": policy.version,
                    "awaiting": still.iter().map(|(r, n)| serde_json::json!({"role": r, "needed": n})).collect::<Vec<_>>(),
                })),
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(transfer = %t.id, "{why}");
    }
    Ok(false)
}

/// 403 unless `user` may see the transfer (its metadata, not content): its uploader, anyone
/// with a role in the project, or an assigned referee.
pub(super) async fn require_viewer(
    app: &App,
    user: &User,
    t: &Transfer,
    ws: &Workspace,
) -> Result<()> {
    if user.id == t.uploader_id || !held_roles(app, user, t, ws).await?.is_empty() {
        return Ok(());
    }
    Err(not_a_viewer(user, ws))
}

fn not_a_viewer(user: &User, ws: &Workspace) -> Error {
    Error::Forbidden(format!(
        "{} has no role in project {} and is not a referee of this transfer",
        user.name, ws.project_name
    ))
}

/// [`require_viewer`] on what [`access::load_seen`] read: the same rule (the uploader, a role
/// in the project, or an active referee who is not a member), with no second read of the
/// roles or the referees.
pub(super) async fn require_viewer_seen(app: &App, user: &User, s: &access::Seen) -> Result<()> {
    if user.id == s.t.uploader_id || !s.roles.is_empty() {
        return Ok(());
    }
    let referee = s
        .referees
        .iter()
        .any(|r| r.user_id == user.id && r.state == "active");
    if referee && !app.store.is_member(s.ws.project_id, user.id).await? {
        return Ok(());
    }
    Err(not_a_viewer(user, &s.ws))
}

/// The roles `user` holds for this transfer: their active roles in the project, the
/// system-wide Programme and System Manager roles, and Referee if they are an assigned (and,
/// where needed, counter-approved) referee of it who is not a member of the project.
pub(super) async fn held_roles(
    app: &App,
    user: &User,
    t: &Transfer,
    ws: &Workspace,
) -> Result<Vec<Role>> {
    let mut roles = access::roles_in(app, user, ws).await?;
    if app
        .store
        .referees(t.id)
        .await?
        .iter()
        .any(|r| r.user_id == user.id && r.state == "active")
        && !app.store.is_member(ws.project_id, user.id).await?
    {
        roles.push(Role::Referee);
    }
    Ok(roles)
}

fn role_list(roles: &[Role]) -> String {
    if roles.is_empty() {
        return "none".into();
    }
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Approve, reject or return a transfer in review.
pub async fn decide(
    app: &App,
    who: &Principal,
    id: TransferId,
    verdict: Verdict,
    req: DecisionRequest,
) -> Result<Transfer> {
    decide_as(app, who, id, verdict, req, false).await
}

/// [`decide`]; `from_review` when an egress checker's submitted review decides (an egress
/// request is approved or returned only that way).
pub(super) async fn decide_as(
    app: &App,
    who: &Principal,
    id: TransferId,
    verdict: Verdict,
    req: DecisionRequest,
    from_review: bool,
) -> Result<Transfer> {
    let user = who.staff()?;
    let (t, ws) = access::load_for(app, user, id).await?;
    let policy = app.policy(&ws)?;
    let role = decider_role(app, user, &t, &ws, &policy, req.role).await?;
    let needs = needed(app, &policy, &t).await?;
    if t.kind.is_egress() && !from_review && verdict != Verdict::Reject {
        return Err(Error::Conflict(format!(
            "an egress request is {} through output checking: vote on every file and submit \
             your review (`airlock egress vote` and `airlock egress review`)",
            if verdict == Verdict::Approve {
                "approved"
            } else {
                "returned"
            }
        )));
    }
    if verdict != Verdict::Approve && req.comment.trim().is_empty() {
        return Err(Error::BadRequest(format!(
            "say why: to {} a transfer, give a comment for the requester",
            verdict.as_str()
        )));
    }
    let event = match verdict {
        Verdict::Approve => Event::Approve,
        Verdict::Reject => Event::Reject,
        Verdict::Return => Event::Return,
    };
    t.state
        .on(event)
        .map_err(|e| Error::Conflict(format!("cannot decide now: {e}")))?;
    let root = t.root_digest.clone().unwrap_or_default();
    if let Some(seen) = &req.root_digest {
        if seen.trim().to_ascii_lowercase() != root {
            return Err(Error::Conflict(format!(
                "the manifest changed: you reviewed root digest {seen}, it is now {root}"
            )));
        }
    }
    let version = policy.version.as_str().to_owned();
    if let Some(seen) = &req.policy_version {
        if seen.trim().to_ascii_lowercase() != version {
            return Err(Error::Conflict(format!(
                "the policy changed: you saw version {seen}, it is now {version}"
            )));
        }
    }
    let acknowledged = if verdict == Verdict::Approve && role == Role::Referee && t.ack_required {
        // Only the unscannable verdicts, a page at a time: not every verdict of the transfer.
        let mut list: Vec<String> = Vec::new();
        let mut after = None;
        loop {
            let page = app
                .store
                .verdicts_of_kind(id, "unscannable", after, crate::store::FILE_BATCH)
                .await?;
            after = page.last().map(|v| v.seq);
            let full = page.len() as u32 == crate::store::FILE_BATCH;
            list.extend(page.into_iter().map(|v| {
                let at = if v.member.is_empty() {
                    v.path
                } else {
                    format!("{}!{}", v.path, v.member)
                };
                format!("{at}: {}", v.detail)
            }));
            if !full {
                break;
            }
        }
        if !req.acknowledge_unscannable {
            return Err(Error::BadRequest(format!(
                "{} file(s) could not be scanned ({}): a Referee approving this transfer \
                 acknowledges them (`acknowledge_unscannable`, or --acknowledge-unscannable)",
                list.len(),
                list.join("; ")
            )));
        }
        serde_json::to_string(&list).unwrap_or_default()
    } else {
        if req.acknowledge_unscannable {
            return Err(Error::BadRequest(
                "nothing to acknowledge: only a Referee approving a transfer with unscannable \
                 files acknowledges them"
                    .into(),
            ));
        }
        String::new()
    };
    let mut tx = app.store.begin().await?;
    if tx.transfer_state(id).await? != Some(TransferState::InReview) {
        return Err(Error::Conflict(
            "the transfer changed state meanwhile; look again".into(),
        ));
    }
    let decisions = tx.decisions(id).await?;
    if verdict == Verdict::Approve {
        if let Some(d) = counting(&decisions, &root, &version).find(|d| d.user_id == user.id) {
            return Err(Error::Conflict(format!(
                "{} already approved this transfer as {}: one person counts once per transfer",
                user.name, d.role
            )));
        }
        if !missing(&needs, &policy, &t, &decisions)
            .iter()
            .any(|(r, _)| *r == role)
        {
            return Err(Error::Conflict(format!(
                "the {role} approvals the policy asks for are already in"
            )));
        }
    }
    tx.insert_decision(crate::store::NewDecision {
        transfer: id,
        user: user.id,
        role,
        decision: verdict.as_str(),
        comment: &req.comment,
        root_digest: &root,
        policy_version: &version,
        acknowledged: &acknowledged,
    })
    .await?;
    let mut detail = serde_json::json!({
        "role": role, "decision": verdict.as_str(), "comment": req.comment,
        "root_digest": root, "policy_version": version,
    });
    if !acknowledged.is_empty() {
        detail["acknowledged_unscannable"] =
            serde_json::from_str(&acknowledged).unwrap_or_default();
    }
    let mut approved = false;
    match verdict {
        Verdict::Approve => {
            let decisions = tx.decisions(id).await?;
            let still = missing(&needs, &policy, &t, &decisions);
            if still.is_empty() {
                let names: Vec<String> = counting(&decisions, &root, &version)
                    .map(|d| format!("{} ({})", d.user, d.role))
                    .collect();
                let why = format!("approved by {}; releasing", names.join(", "));
                tx.set_state(id, TransferState::InReview, TransferState::Approved, &why)
                    .await?;
                tx.audit(
                    AuditEvent::new(who.actor(), "transfer.approved")
                        .transfer(id)
                        .detail(detail),
                )
                .await?;
                approved = true;
            } else {
                let why = format!(
                    "approved by {} ({role}); {}",
                    user.name,
                    waiting_reason(&still)
                );
                tx.set_reason(id, TransferState::InReview, &why).await?;
                tx.audit(
                    AuditEvent::new(who.actor(), "transfer.approval")
                        .transfer(id)
                        .detail(detail),
                )
                .await?;
            }
        }
        Verdict::Reject => {
            let why = format!("rejected by {} ({role}): {}", user.name, req.comment);
            tx.set_state(id, TransferState::InReview, TransferState::Rejected, &why)
                .await?;
            tx.audit(
                AuditEvent::new(who.actor(), "transfer.rejected")
                    .transfer(id)
                    .detail(detail),
            )
            .await?;
        }
        Verdict::Return => {
            let why = format!(
                "returned to the requester by {} ({role}): {}; {}",
                user.name,
                req.comment,
                if t.kind.is_egress() {
                    "the requester edits the request and submits it again"
                } else {
                    "a new upload token reopens it"
                }
            );
            tx.set_state(id, TransferState::InReview, TransferState::Returned, &why)
                .await?;
            let voided = tx
                .void_decisions(id, &format!("the transfer was returned by {}", user.name))
                .await?;
            tx.audit(
                AuditEvent::new(who.actor(), "transfer.returned")
                    .transfer(id)
                    .detail(serde_json::json!({
                        "role": role, "comment": req.comment, "root_digest": root,
                        "policy_version": version, "voided": voided,
                    })),
            )
            .await?;
        }
    }
    tx.commit().await?;
    if approved {
        app.jobs.notify_one();
    }
    Ok(access::load(app, id).await?.0)
}

/// The role `user` decides (or checks) in on `t`, from the one they asked for (or the only
/// one of theirs the policy asks for), with every rule that holds whatever the policy says:
/// the requester never decides, nor whoever issued its upload token; a Referee is assigned
/// (and counter-approved at tier 3+) and is never a member of the project.
pub(super) async fn decider_role(
    app: &App,
    user: &User,
    t: &Transfer,
    ws: &Workspace,
    policy: &Policy,
    asked_role: Option<Role>,
) -> Result<Role> {
    let held = held_roles(app, user, t, ws).await?;
    if held.is_empty() && asked_role != Some(Role::Referee) {
        return Err(Error::Forbidden(format!(
            "{} has no role in project {} and is not a referee of this transfer",
            user.name, ws.project_name
        )));
    }
    let asked: Vec<Role> = needed(app, policy, t)
        .await?
        .iter()
        .map(|(r, _)| *r)
        .collect();
    let role = match asked_role {
        Some(r) if held.contains(&r) => r,
        Some(Role::Referee) => {
            let pending = app
                .store
                .referees(t.id)
                .await?
                .iter()
                .any(|r| r.user_id == user.id && r.state == "pending");
            return Err(Error::Forbidden(if pending {
                format!(
                    "{} is assigned as referee but awaits the Dataset Provider \
                     Representative's counter-approval (tier 3+)",
                    user.name
                )
            } else {
                format!("{} is not an assigned referee of this transfer", user.name)
            }));
        }
        Some(r) => {
            return Err(Error::Forbidden(format!(
                "{} does not hold the {r} role in project {}; they hold: {}",
                user.name,
                ws.project_name,
                role_list(&held)
            )))
        }
        None => {
            let both: Vec<Role> = asked.iter().copied().filter(|r| held.contains(r)).collect();
            match both.as_slice() {
                [one] => *one,
                [] => {
                    return Err(Error::Forbidden(format!(
                    "{} holds none of the roles the policy asks to decide on a {} transfer ({})",
                    user.name,
                    t.kind,
                    role_list(&asked)
                )))
                }
                _ => {
                    return Err(Error::BadRequest(format!(
                        "say which role you decide in (`as`): you hold {}",
                        role_list(&both)
                    )))
                }
            }
        }
    };
    if !asked.contains(&role) {
        return Err(Error::Forbidden(format!(
            "the tier {} policy does not ask a {role} to decide on a {} transfer; it asks: {}",
            ws.tier.get(),
            t.kind,
            role_list(&asked)
        )));
    }
    if user.id == t.uploader_id {
        return Err(Error::Forbidden(format!(
            "{} requested this transfer (uploaded it) and never decides on it",
            user.name
        )));
    }
    // Whoever held an upload token could have written into the transfer: same rule.
    if app.store.token_issuers(t.id).await?.contains(&user.id) {
        return Err(Error::Forbidden(format!(
            "{} issued this transfer's upload token, so could have written into it, and cannot decide on it",
            user.name
        )));
    }
    if role == Role::Referee && app.store.is_member(ws.project_id, user.id).await? {
        return Err(Error::Forbidden(format!(
            "a Referee is never a member of the project, and {} is a member of {}",
            user.name, ws.project_name
        )));
    }
    Ok(role)
}

/// A referee assigned to a transfer, as `transfer show` lists them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefereeView {
    /// The referee's user name.
    pub user: String,
    /// `active`, or `pending` the Dataset Provider Representative's counter-approval (tier 3+).
    pub state: String,
    /// Who assigned them.
    pub assigned_by: String,
    /// The Dataset Provider Representative who counter-approved them; null if not (yet)
    /// needed or given.
    pub approved_by: Option<String>,
}

pub async fn referees(app: &App, id: TransferId) -> Result<Vec<RefereeView>> {
    Ok(referee_views(app.store.referees(id).await?))
}

/// Referee rows as a transfer's view shows them.
pub fn referee_views(rows: Vec<crate::store::RefereeRow>) -> Vec<RefereeView> {
    rows.into_iter()
        .map(|r| RefereeView {
            user: r.user,
            state: r.state,
            assigned_by: r.assigned_by,
            approved_by: r.approved_by,
        })
        .collect()
}

/// A user, by name.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRef {
    pub user: String,
}

async fn user_named(app: &App, name: &str) -> Result<User> {
    app.store
        .user_by_name(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user {name}")))
}

/// A Project Manager (or a Programme Manager) assigns a Referee from the referee college (or
/// a Programme Manager as fallback) to a transfer. At tier 3+ the assignment waits for the
/// Dataset Provider Representative's counter-approval.
pub async fn assign_referee(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: UserRef,
) -> Result<Vec<RefereeView>> {
    let user = who.staff()?;
    let (t, ws) = access::load_for(app, user, id).await?;
    access::require_role(
        app,
        user,
        &ws,
        &[Role::ProjectManager, Role::ProgrammeManager],
    )
    .await?;
    let referee = user_named(app, &req.user).await?;
    if !referee
        .roles
        .iter()
        .any(|r| matches!(r, Role::Referee | Role::ProgrammeManager))
    {
        return Err(Error::Conflict(format!(
            "{} is not in the referee college (role referee) and is not a Programme Manager",
            referee.name
        )));
    }
    if app.store.is_member(ws.project_id, referee.id).await? {
        return Err(Error::Conflict(format!(
            "a Referee is never a member of the project, and {} is a member of {}",
            referee.name, ws.project_name
        )));
    }
    if barred(app, &t).await?.contains(&referee.id) {
        return Err(Error::Conflict(format!(
            "{} uploaded this transfer or issued its token, so cannot referee it",
            referee.name
        )));
    }
    if matches!(
        t.state,
        TransferState::Approved
            | TransferState::Released
            | TransferState::Rejected
            | TransferState::Blocked
            | TransferState::Cancelled
            | TransferState::Expired
            | TransferState::Revoked
    ) {
        return Err(Error::Conflict(format!(
            "transfer {id} is {}: its review is over",
            t.state
        )));
    }
    let pending = ws.tier.get() >= 3;
    let mut tx = app.store.begin().await?;
    if !tx.assign_referee(id, referee.id, pending, user.id).await? {
        return Err(Error::Conflict(format!(
            "{} is already a referee of this transfer",
            referee.name
        )));
    }
    tx.audit(
        AuditEvent::new(who.actor(), "transfer.referee_assigned")
            .transfer(id)
            .detail(
                serde_json::json!({ "referee": referee.name, "pending_counter_approval": pending }),
            ),
    )
    .await?;
    tx.commit().await?;
    referees(app, id).await
}

/// The project's Dataset Provider Representative counter-approves a referee (tier 3+): never
/// the person who assigned them, never the referee, never someone who can also assign.
pub async fn approve_referee(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: UserRef,
) -> Result<Vec<RefereeView>> {
    let user = who.staff()?;
    let (_, ws) = access::load_for(app, user, id).await?;
    let project = crate::store::Project {
        id: ws.project_id,
        name: ws.project_name.clone(),
    };
    access::require_counter_approver(app, user, &project).await?;
    let referee = user_named(app, &req.user).await?;
    let mut tx = app.store.begin().await?;
    if let Some(assigned_by) = tx.referee_assigned_by(id, referee.id).await? {
        crate::domain::duties::may_counter_approve(user.id, referee.id, Some(assigned_by))
            .map_err(|why| Error::Forbidden(format!("{} may not do this: {why}", user.name)))?;
    }
    if !tx.approve_referee(id, referee.id, user.id).await? {
        return Err(Error::NotFound(format!(
            "{} is not a referee of this transfer awaiting counter-approval",
            referee.name
        )));
    }
    tx.audit(
        AuditEvent::new(who.actor(), "transfer.referee_approved")
            .transfer(id)
            .detail(serde_json::json!({ "referee": referee.name })),
    )
    .await?;
    tx.commit().await?;
    referees(app, id).await
}

/// A released transfer is withdrawn: its files leave the read-only volume at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why; shown in the state reason and the audit log.
    pub reason: String,
}

pub async fn revoke(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: RevokeRequest,
) -> Result<Transfer> {
    let user = who.staff()?;
    let (t, ws) = access::load_for(app, user, id).await?;
    let role = access::require_role(
        app,
        user,
        &ws,
        &[
            Role::ProjectManager,
            Role::Investigator,
            Role::Provider,
            Role::ProgrammeManager,
        ],
    )
    .await?;
    if req.reason.trim().is_empty() {
        return Err(Error::BadRequest(
            "say why the release is revoked (`reason`)".into(),
        ));
    }
    t.state
        .on(Event::Revoke)
        .map_err(|e| Error::Conflict(format!("cannot revoke: {e}")))?;
    let dest = Volumes::release_prefix(&ws.project_name, &ws.name, t.kind.volume(), t.id);
    // Withdraw first: a crash after this leaves a `released` transfer with nothing published,
    // and revoking again finishes the job; never the other way round.
    let withdrawn = app.volumes.withdraw(t.id, &dest).await?;
    let why = format!("revoked by {} ({role}): {}", user.name, req.reason.trim());
    let mut tx = app.store.begin().await?;
    if !tx
        .set_state(id, TransferState::Released, TransferState::Revoked, &why)
        .await?
    {
        return Err(Error::Conflict(
            "the transfer changed state meanwhile; look again".into(),
        ));
    }
    tx.audit(
        AuditEvent::new(who.actor(), "transfer.revoked")
            .transfer(id)
            .detail(serde_json::json!({
                "role": role, "reason": req.reason.trim(), "withdrawn": withdrawn,
                "volume": crate::volumes::RELEASED, "location": dest.as_ref(),
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(access::load(app, id).await?.0)
}
