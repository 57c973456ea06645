//! People (paper, sections 2, 8 and 11.6): users, projects and who holds which role in them,
//! and the levers that cut a person off: removing a member, disabling a user, revoking staff
//! tokens. Each step is audited, and sent as a webhook (`member.*`, `user.*`).
//!
//! The separation-of-duties rules themselves live in [`crate::domain::duties`]; every grant,
//! from the API or from `airlock admin`, goes through [`grant`], so both obey them.

use super::access::{self, Principal};
use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::duties;
use crate::domain::*;
use crate::store::{Project, User};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    /// System-wide roles: `referee` puts them in the referee college, `provider` makes them a
    /// Dataset Provider Representative who may be named as an uploader, `programme-manager`.
    /// Not `system-manager`.
    #[serde(default)]
    pub roles: Vec<Role>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub name: String,
    pub roles: Vec<Role>,
}

/// Only a Programme Manager adds users to the system.
pub async fn add_user(app: &App, who: &Principal, req: NewUser) -> Result<UserView> {
    let user = who.staff()?;
    if !user.roles.contains(&Role::ProgrammeManager) {
        return Err(Error::Forbidden(
            "only a Programme Manager adds users to the system".into(),
        ));
    }
    if req.roles.contains(&Role::SystemManager) {
        return Err(Error::BadRequest(
            "System Managers are added with `airlock admin user add` on the server".into(),
        ));
    }
    super::admin::create_user_as(app, &who.actor(), &req.name, &req.roles).await?;
    Ok(UserView {
        name: req.name,
        roles: req.roles,
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// 1-64 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`.
    pub name: String,
}

/// A Programme Manager creates a project.
pub async fn create_project(app: &App, who: &Principal, req: NewProject) -> Result<String> {
    let user = who.staff()?;
    if !user.roles.contains(&Role::ProgrammeManager) {
        return Err(Error::Forbidden(
            "only a Programme Manager creates projects".into(),
        ));
    }
    super::admin::create_project_as(app, &who.actor(), &req.name).await?;
    Ok(req.name)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    pub user: String,
    /// A project role: `project-manager`, `investigator`, `researcher` or `provider`.
    pub role: Role,
}

/// One role a user holds (or awaits) in a project.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    /// The member's user name.
    pub user: String,
    pub role: Role,
    /// `active`, or `pending` the Dataset Provider Representative's counter-approval (a
    /// Researcher joining a project with a tier 3+ workspace).
    pub state: String,
    /// Who added them, if recorded.
    pub added_by: Option<String>,
    /// Who counter-approved them, if anyone.
    pub approved_by: Option<String>,
}

/// The roles a person can hold inside one project.
pub const PROJECT_ROLES: [Role; 4] = [
    Role::ProjectManager,
    Role::Investigator,
    Role::Researcher,
    Role::Provider,
];

fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) async fn user_named(app: &App, name: &str) -> Result<User> {
    app.store
        .user_by_name(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user {name}")))
}

/// Who grants, for [`grant`]: a person through the API, or the System Manager through
/// `airlock admin` (who answers to nobody inside airlock).
pub(super) enum Granter<'a> {
    Person(&'a Principal, &'a User),
    Admin(&'a str),
}

/// The one path by which anyone gains a role in a project. Refuses a role that would put one
/// person on both sides of a control ([`duties::conflict`]), checked under the write lock so
/// two concurrent grants cannot slip past each other.
pub(super) async fn grant(
    app: &App,
    by: Granter<'_>,
    p: &Project,
    member: &User,
    role: Role,
) -> Result<MemberView> {
    if role == Role::Referee {
        return Err(Error::BadRequest(
            "a Referee is never a member of the project: assign one to a transfer instead \
             (`airlock referee assign`)"
                .into(),
        ));
    }
    if !PROJECT_ROLES.contains(&role) {
        return Err(Error::BadRequest(format!(
            "{role} is a system-wide role, not a project role; project roles are {}",
            role_list(&PROJECT_ROLES)
        )));
    }
    if app.store.referee_in_project(p.id, member.id).await? {
        return Err(Error::Conflict(format!(
            "{} referees a transfer of {} that is still under way, and a Referee is never a \
             member of the project",
            member.name, p.name
        )));
    }
    let (actor, action, added_by) = match &by {
        Granter::Person(who, u) => (who.actor(), "member.added", Some(u)),
        Granter::Admin(actor) => (actor.to_string(), "project.member_added", None),
    };
    let pending = added_by.is_some()
        && role == Role::Researcher
        && app
            .store
            .project_max_tier(p.id)
            .await?
            .is_some_and(|t| t.get() >= 3);
    let mut tx = app.store.begin().await?;
    let held = tx.all_member_roles(p.id, member.id).await?;
    if let Some(why) = duties::conflict(&held, &member.roles, role) {
        return Err(Error::Conflict(format!(
            "{} cannot be given the {role} role in {}: {} {why}",
            member.name, p.name, member.name
        )));
    }
    if !tx
        .insert_member(p.id, member.id, role, pending, added_by.map(|u| u.id))
        .await?
    {
        return Err(Error::Conflict(format!(
            "{} already holds (or awaits) the {role} role in {}",
            member.name, p.name
        )));
    }
    tx.audit(AuditEvent::new(actor, action).detail(serde_json::json!({
        "project": p.name, "user": member.name, "role": role,
        "pending_counter_approval": pending,
    })))
    .await?;
    tx.commit().await?;
    Ok(MemberView {
        user: member.name.clone(),
        role,
        state: if pending { "pending" } else { "active" }.into(),
        added_by: added_by.map(|u| u.name.clone()),
        approved_by: None,
    })
}

/// Whether `user` is a Project Manager of `p` and whether a Programme Manager; 403 (saying
/// who `verb` members) if neither.
async fn appointer(app: &App, user: &User, p: &Project, verb: &str) -> Result<(bool, bool)> {
    let is_pm = app
        .store
        .member_roles(p.id, user.id)
        .await?
        .contains(&Role::ProjectManager);
    let is_progm = user.roles.contains(&Role::ProgrammeManager);
    if !is_pm && !is_progm {
        return Err(Error::Forbidden(format!(
            "only a Project Manager of {} (or a Programme Manager) {verb} its members",
            p.name
        )));
    }
    Ok((is_pm, is_progm))
}

/// A Project Manager of the project (or a Programme Manager) adds an existing user; only a
/// Programme Manager makes someone the Dataset Provider Representative, and nobody grants a
/// role to themselves. A Researcher joining a project with a tier 3+ workspace waits for the
/// Dataset Provider Representative's counter-approval (paper 11.6).
pub async fn add_member(
    app: &App,
    who: &Principal,
    project_name: &str,
    req: MemberRequest,
) -> Result<MemberView> {
    let user = who.staff()?;
    let p = access::visible_project(app, user, project_name).await?;
    let (is_pm, is_progm) = appointer(app, user, &p, "adds").await?;
    let member = app.store.user_by_name(&req.user).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "no user {}: a Programme Manager adds users to the system first",
            req.user
        ))
    })?;
    duties::may_grant(user.id, is_progm, is_pm, member.id, req.role)
        .map_err(|why| Error::Forbidden(format!("{} may not do this: {why}", user.name)))?;
    grant(app, Granter::Person(who, user), &p, &member, req.role).await
}

/// The project's Dataset Provider Representative counter-approves a pending member, unless
/// they added that member, are that member, or also hold the power to add members.
pub async fn approve_member(
    app: &App,
    who: &Principal,
    project_name: &str,
    req: MemberRequest,
) -> Result<MemberView> {
    let user = who.staff()?;
    let p = access::visible_project(app, user, project_name).await?;
    access::require_counter_approver(app, user, &p).await?;
    let member = user_named(app, &req.user).await?;
    let mut tx = app.store.begin().await?;
    let not_pending = || {
        Error::NotFound(format!(
            "{} has no {} role in {} awaiting counter-approval",
            member.name, req.role, p.name
        ))
    };
    let added_by = tx
        .member_added_by(p.id, member.id, req.role)
        .await?
        .ok_or_else(not_pending)?;
    duties::may_counter_approve(user.id, member.id, added_by)
        .map_err(|why| Error::Forbidden(format!("{} may not do this: {why}", user.name)))?;
    if !tx
        .approve_member(p.id, member.id, req.role, user.id)
        .await?
    {
        return Err(not_pending());
    }
    tx.audit(
        AuditEvent::new(who.actor(), "member.approved").detail(serde_json::json!({
            "project": p.name, "user": member.name, "role": req.role,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(MemberView {
        user: member.name,
        role: req.role,
        state: "active".into(),
        added_by: None,
        approved_by: Some(user.name.clone()),
    })
}

/// A project's members, for its members and Programme/System Managers.
pub async fn members(app: &App, who: &Principal, project_name: &str) -> Result<Vec<MemberView>> {
    let user = who.staff()?;
    let p = access::visible_project(app, user, project_name).await?;
    Ok(app
        .store
        .members(p.id)
        .await?
        .into_iter()
        .map(|m| MemberView {
            user: m.user,
            role: m.role,
            state: m.state,
            added_by: m.added_by,
            approved_by: m.approved_by,
        })
        .collect())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveMember {
    /// The member, by name.
    pub user: String,
    /// One role to remove; every role of theirs in the project when left out.
    pub role: Option<Role>,
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Removed {
    pub user: String,
    /// The roles removed.
    pub roles: Vec<Role>,
    /// Transfers not yet released on which their approvals were voided.
    pub voided_on: Vec<TransferId>,
}

/// A Project Manager of the project (or a Programme Manager) removes a member, one role or
/// all; removing the Dataset Provider Representative needs a Programme Manager, as granting
/// it does. Their approvals on transfers not yet released are void at once.
pub async fn remove_member(
    app: &App,
    who: &Principal,
    project_name: &str,
    req: RemoveMember,
) -> Result<Removed> {
    let user = who.staff()?;
    let p = access::visible_project(app, user, project_name).await?;
    let (_, is_progm) = appointer(app, user, &p, "removes").await?;
    let member = user_named(app, &req.user).await?;
    let mut tx = app.store.begin().await?;
    let held = tx.all_member_roles(p.id, member.id).await?;
    let removing: Vec<Role> = held
        .iter()
        .copied()
        .filter(|r| req.role.is_none_or(|want| want == *r))
        .collect();
    if removing.is_empty() {
        return Err(Error::NotFound(format!(
            "{} holds no {} in {}",
            member.name,
            req.role
                .map(|r| format!("{r} role"))
                .unwrap_or_else(|| "role".into()),
            p.name
        )));
    }
    if removing.contains(&Role::Provider) && !is_progm {
        return Err(Error::Forbidden(
            "only a Programme Manager removes a project's Dataset Provider Representative, as \
             only one makes them"
                .into(),
        ));
    }
    let roles = tx.remove_member(p.id, member.id, req.role).await?;
    let why = format!(
        "void: {} was removed from {} by {}",
        member.name, p.name, user.name
    );
    let voided_on = tx
        .void_decisions_of(member.id, Some(p.id), req.role, &why)
        .await?;
    tx.audit(
        AuditEvent::new(who.actor(), "member.removed").detail(serde_json::json!({
            "project": p.name, "user": member.name, "roles": roles,
            "reason": req.reason.trim(), "approvals_voided_on": voided_on,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(Removed {
        user: member.name,
        roles,
        voided_on,
    })
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableUser {
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Disabled {
    pub user: String,
    pub disabled: bool,
    /// Staff tokens revoked now.
    pub tokens_revoked: usize,
    /// Transfers not yet released on which their approvals were voided.
    pub voided_on: Vec<TransferId>,
}

/// A Programme Manager disables a user: every token of theirs (staff and the upload tokens of
/// transfers they upload) stops working on its next request, their staff tokens are revoked,
/// and their approvals on transfers not yet released are void. The System Manager is
/// disabled only on the server.
pub async fn disable_user(
    app: &App,
    who: &Principal,
    name: &str,
    req: DisableUser,
) -> Result<Disabled> {
    let user = who.staff()?;
    if !user.roles.contains(&Role::ProgrammeManager) {
        return Err(Error::Forbidden(
            "only a Programme Manager disables users".into(),
        ));
    }
    let target = user_named(app, name).await?;
    if target.id == user.id {
        return Err(Error::BadRequest(
            "you cannot disable yourself: ask another Programme Manager".into(),
        ));
    }
    if target.roles.contains(&Role::SystemManager) {
        return Err(Error::Forbidden(
            "a System Manager is disabled on the server, with `airlock admin`".into(),
        ));
    }
    disable_as(app, &who.actor(), &target, req.reason.trim()).await
}

/// Disables `target`, audited as done by `actor`: the one path for the API and the admin CLI.
pub(super) async fn disable_as(
    app: &App,
    actor: &str,
    target: &User,
    reason: &str,
) -> Result<Disabled> {
    let mut tx = app.store.begin().await?;
    if !tx.disable_user(target.id, actor, reason).await? {
        return Err(Error::Conflict(format!(
            "{} is already disabled",
            target.name
        )));
    }
    let revoked = tx.revoke_staff_tokens(target.id, None).await?;
    let now = chrono::Utc::now().timestamp();
    let sessions = tx
        .end_user_sessions(target.id, now, "user disabled")
        .await?;
    let why = format!("void: {} was disabled", target.name);
    let voided_on = tx.void_decisions_of(target.id, None, None, &why).await?;
    tx.audit(
        AuditEvent::new(actor, "user.disabled").detail(serde_json::json!({
            "user": target.name, "reason": reason, "tokens_revoked": revoked,
            "sessions_ended": sessions, "approvals_voided_on": voided_on,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(Disabled {
        user: target.name.clone(),
        disabled: true,
        tokens_revoked: revoked.len(),
        voided_on,
    })
}

/// Exactly one of `user` and `id`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeStaffTokens {
    /// Every staff token of this user.
    pub user: Option<String>,
    /// One staff token, by its id (`token_id` in the audit log's `token.staff_minted`).
    #[schema(format = "uuid")]
    pub id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokensRevoked {
    pub user: String,
    /// Ids of the tokens revoked now (already revoked ones are not listed).
    pub revoked: Vec<String>,
}

/// Revokes staff tokens: all of a user's, or one by id. Anyone may revoke their own; a
/// Programme Manager anyone's. A token id that is not the caller's to revoke is answered as
/// unknown, so ids cannot be probed.
pub async fn revoke_staff_tokens(
    app: &App,
    who: &Principal,
    req: RevokeStaffTokens,
) -> Result<TokensRevoked> {
    let user = who.staff()?;
    let is_progm = user.roles.contains(&Role::ProgrammeManager);
    let (target, only) = match (&req.user, &req.id) {
        (Some(name), None) => {
            let target = user_named(app, name).await?;
            if target.id != user.id && !is_progm {
                return Err(Error::Forbidden(
                    "only a Programme Manager revokes someone else's tokens".into(),
                ));
            }
            (target, None)
        }
        (None, Some(raw)) => {
            let unknown = || Error::NotFound(format!("no staff token {raw}"));
            let id: TokenId = raw.parse().map_err(|_| unknown())?;
            let owner = app.store.staff_token_owner(id).await?.ok_or_else(unknown)?;
            if owner != user.id && !is_progm {
                return Err(unknown());
            }
            let target = app.store.user(owner).await?.ok_or_else(unknown)?;
            (target, Some(id))
        }
        _ => {
            return Err(Error::BadRequest(
                "name exactly one of `user` (all their staff tokens) or `id` (one token)".into(),
            ))
        }
    };
    let mut tx = app.store.begin().await?;
    let revoked = tx.revoke_staff_tokens(target.id, only).await?;
    // Revoking all of a user's tokens also signs them out of the browser; one token by id
    // (say, a script's) leaves their sessions be.
    let sessions = match only {
        None => {
            let now = chrono::Utc::now().timestamp();
            tx.end_user_sessions(target.id, now, "staff tokens revoked")
                .await?
        }
        Some(_) => 0,
    };
    tx.audit(
        AuditEvent::new(who.actor(), "user.tokens_revoked").detail(serde_json::json!({
            "user": target.name, "token_ids": revoked, "sessions_ended": sessions,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(TokensRevoked {
        user: target.name,
        revoked,
    })
}
