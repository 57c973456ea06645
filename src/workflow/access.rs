//! Who is calling, and what they may do. Every request's bearer token becomes a [`Principal`]
//! here; every use and every refusal of an upload token lands in the audit log, through
//! [`refusals`] so that repeats are summarised rather than written one by one.

use super::refusals::{self, TokenEvent};
use super::{Error, Result};
use crate::app::App;
use crate::auth::{TokenError, TokenKind};
use crate::domain::*;
use crate::store::{Project, Transfer, User, Workspace};
use std::net::IpAddr;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person with a staff token.
    Staff(User),
    /// An upload token: may write into one open transfer, nothing else.
    Upload {
        token: TokenId,
        transfer: TransferId,
    },
    /// A recipient's collection token: may read one released egress package, nothing else.
    Collect {
        token: TokenId,
        transfer: TransferId,
        recipient: User,
    },
}

impl Principal {
    pub fn actor(&self) -> String {
        match self {
            Principal::Staff(u) => format!("user:{}", u.name),
            Principal::Upload { token, .. } => format!("upload-token:{token}"),
            Principal::Collect {
                token, recipient, ..
            } => format!("collection-token:{token}:{}", recipient.name),
        }
    }

    /// The staff user, or 403 for an upload token: upload tokens are write-only.
    pub fn staff(&self) -> Result<&User> {
        match self {
            Principal::Staff(u) => Ok(u),
            Principal::Upload { .. } => Err(Error::Forbidden(
                "upload tokens are write-only: they cannot read, list or download anything, \
                 nor act as a person"
                    .into(),
            )),
            Principal::Collect { .. } => Err(collect_only()),
        }
    }

    /// The transfer of an upload token, which must be `transfer`.
    pub fn upload_for(&self, transfer: TransferId) -> Result<TokenId> {
        match self {
            Principal::Upload { token, transfer: t } if *t == transfer => Ok(*token),
            Principal::Upload { .. } => Err(Error::Forbidden(
                "this upload token belongs to another transfer".into(),
            )),
            Principal::Staff(_) | Principal::Collect { .. } => Err(Error::Forbidden(
                "only the transfer's upload token may upload files".into(),
            )),
        }
    }
}

/// What a collection token gets anywhere but the collection routes.
pub fn collect_only() -> Error {
    Error::Forbidden(
        "collection tokens are read-only: they can collect one released package, nothing else"
            .into(),
    )
}

/// Turns an `Authorization` header into a principal, checking everything a token promises.
/// `route` is recorded with each use of an upload token.
pub async fn authenticate(
    app: &App,
    authorization: Option<&str>,
    client: IpAddr,
    route: &str,
) -> Result<Principal> {
    // Throttled before anything is verified or read: a client that keeps being refused costs
    // a map lookup per request, nothing more.
    let credential = authorization.map(|a| a.get(..512).unwrap_or(a));
    if let Err(retry_after) = app.refusal_throttle.check(client, credential) {
        return Err(Error::TooManyRequests {
            message: format!(
                "too many refused requests from {client} or with this token; retry in \
                 {retry_after} s"
            ),
            retry_after,
        });
    }
    let result = verify(app, authorization, client, route).await;
    if let Err(Error::Unauthenticated(_)) = &result {
        app.refusal_throttle.refused(client, credential);
    }
    result
}

async fn verify(
    app: &App,
    authorization: Option<&str>,
    client: IpAddr,
    route: &str,
) -> Result<Principal> {
    // A request path is the client's to choose: only a bounded prefix is logged or audited.
    let route = &*refusals::cap_route(route);
    let raw = authorization.ok_or_else(|| {
        Error::Unauthenticated("missing `Authorization: Bearer <token>` header".into())
    })?;
    let token = raw
        .strip_prefix("Bearer ")
        .or_else(|| raw.strip_prefix("bearer "))
        .ok_or_else(|| Error::Unauthenticated("Authorization must use the Bearer scheme".into()))?
        .trim();
    // RS256/ES256 tokens are the identity provider's and are checked only against its keys;
    // every other token only against the local HS256 secret (`auth::oidc`).
    if crate::auth::oidc::is_provider_token(token) {
        return provider_staff(app, token, client, route).await;
    }
    let claims = app.keys.verify(token);
    if let Err(TokenError::Expired) = &claims {
        // The signature was checked before the expiry, so these claims are ours.
        if let Some(c) = crate::auth::peek_claims(token).filter(|c| c.typ == TokenKind::Upload) {
            let e = TokenEvent::refusal(&c.jti, &c.sub, client, route, "token has expired");
            refusals::refused(app, e).await;
        }
    }
    let claims = claims.map_err(|e| match e {
        TokenError::Expired => Error::Unauthenticated("token has expired".into()),
        other => {
            tracing::warn!(%client, route, error = %other, "refused a token that does not verify");
            Error::Unauthenticated("token is not valid".into())
        }
    })?;
    let jti: TokenId = claims
        .jti
        .parse()
        .map_err(|_| Error::Unauthenticated("token is not valid".into()))?;
    match claims.typ {
        TokenKind::Staff => {
            let user_id: UserId = claims
                .sub
                .parse()
                .map_err(|_| Error::Unauthenticated("token is not valid".into()))?;
            let user = match app.store.staff_token_user(jti, user_id).await? {
                Some((true, user)) => user,
                Some((false, _)) => {
                    return Err(Error::Unauthenticated("token has been revoked".into()))
                }
                // No such token for this user, or no such user: say which, as before.
                None if !app.store.staff_token_live(jti).await? => {
                    return Err(Error::Unauthenticated("token has been revoked".into()))
                }
                None => {
                    return Err(Error::Unauthenticated(
                        "token's user no longer exists".into(),
                    ))
                }
            };
            if user.disabled {
                return Err(Error::Unauthenticated(format!(
                    "user {} has been disabled",
                    user.name
                )));
            }
            Ok(Principal::Staff(user))
        }
        TokenKind::Upload => {
            let sub = claims.sub.clone();
            let jti_s = jti.to_string();
            let refuse = |reason: String| {
                let (jti_s, sub) = (&jti_s, &sub);
                async move {
                    let e = TokenEvent::refusal(jti_s, sub, client, route, &reason);
                    refusals::refused(app, e).await;
                    Err(Error::Unauthenticated(reason))
                }
            };
            let Some(row) = app.store.upload_token(jti).await? else {
                return refuse("token is not valid".into()).await;
            };
            if row.transfer_id.to_string() != claims.sub {
                return refuse("token is not valid".into()).await;
            }
            if let Some(reason) = &row.revoked_reason {
                return refuse(format!("token has been revoked: {reason}")).await;
            }
            let transfer = app.store.transfer(row.transfer_id).await?.ok_or_else(|| {
                Error::Unauthenticated("token's transfer no longer exists".into())
            })?;
            // One lookup, not the whole user: this runs on every upload request.
            if app.store.user_disabled(transfer.uploader_id).await? {
                return refuse("the transfer's uploader has been disabled".into()).await;
            }
            if !transfer.state.accepts_uploads() {
                return refuse(format!(
                    "the transfer is {}: its upload token is no longer accepted",
                    transfer.state
                ))
                .await;
            }
            if !row.cidrs.is_empty() && !row.cidrs.iter().any(|n| n.contains(&client)) {
                return refuse(format!(
                    "address {client} is outside the IP ranges this token is bound to"
                ))
                .await;
            }
            refusals::used(app, TokenEvent::used(&jti_s, &sub, client, route)).await?;
            Ok(Principal::Upload {
                token: jti,
                transfer: row.transfer_id,
            })
        }
        TokenKind::Collect => super::collect::collector(app, jti, &claims.sub, client).await,
    }
}

/// A staff token from the institution's OIDC provider: verified against its keys, then the
/// configured claim names the airlock user, whose own roles apply. Without `[auth]`, refused.
async fn provider_staff(app: &App, token: &str, client: IpAddr, route: &str) -> Result<Principal> {
    use crate::auth::oidc::OidcError;
    let Some(oidc) = &app.oidc else {
        return Err(Error::Unauthenticated(
            "token is not valid: it is signed for an identity provider, and this airlock \
             accepts none (no `[auth]` configured)"
                .into(),
        ));
    };
    let id = match oidc.verify(token).await {
        Ok(id) => id,
        Err(OidcError::KeysUnavailable(cause)) => {
            return Err(Error::Internal(format!(
                "cannot check an identity-provider token: {cause}"
            )))
        }
        Err(e) => {
            tracing::warn!(%client, route, error = %e, "refused an identity-provider token");
            return Err(Error::Unauthenticated(e.to_string()));
        }
    };
    let refuse = |why: String| {
        tracing::warn!(%client, route, token = %id.token_id, "{why}");
        Err(Error::Unauthenticated(why))
    };
    let Some(user) = app.store.user_by_name(&id.username).await? else {
        let shown: String = id.username.chars().take(64).collect();
        return refuse(format!(
            "the identity provider's user `{shown}` is not an airlock user"
        ));
    };
    if user.disabled {
        return refuse(format!("user {} has been disabled", user.name));
    }
    tracing::debug!(%client, route, user = %user.name, token = %id.token_id, "identity-provider token");
    Ok(Principal::Staff(user))
}

/// A transfer with its workspace, or 404.
pub async fn load(app: &App, id: TransferId) -> Result<(Transfer, Workspace)> {
    if let Some(both) = app.store.transfer_with_workspace(id).await? {
        return Ok(both);
    }
    // Not both there: which one is missing decides the error.
    let t = app
        .store
        .transfer(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no transfer {id}")))?;
    let w = app
        .store
        .workspace(t.workspace_id)
        .await?
        .ok_or_else(|| Error::Internal(format!("transfer {id} has no workspace")))?;
    Ok((t, w))
}

/// A transfer with its workspace, for someone who may see it: its uploader, anyone with a role
/// in the project (or a Programme/System Manager), or a referee assigned to it. Anyone else
/// gets the same 404 as for a transfer that does not exist, naming no project.
pub async fn load_for(app: &App, user: &User, id: TransferId) -> Result<(Transfer, Workspace)> {
    let s = load_seen(app, user, id).await?;
    Ok((s.t, s.ws))
}

/// A transfer as one staff user may see it, with what decided that (their roles in its
/// project, its referees), read once per request so later checks and the view reuse them.
pub struct Seen {
    pub t: Transfer,
    pub ws: Workspace,
    pub roles: Vec<Role>,
    pub referees: Vec<crate::store::RefereeRow>,
}

/// [`load_for`], keeping what it read.
pub async fn load_seen(app: &App, user: &User, id: TransferId) -> Result<Seen> {
    let (t, ws) = load(app, id).await.map_err(|_| no_transfer(id))?;
    let roles = roles_in(app, user, &ws).await?;
    let referees = app.store.referees(id).await?;
    if user.id == t.uploader_id
        || !roles.is_empty()
        || referees.iter().any(|r| r.user_id == user.id)
    {
        Ok(Seen {
            t,
            ws,
            roles,
            referees,
        })
    } else {
        Err(no_transfer(id))
    }
}

/// [`load_for`] for a person; an upload token loads the transfer and is checked against it
/// by the caller ([`Principal::upload_for`]).
pub async fn load_as(app: &App, who: &Principal, id: TransferId) -> Result<(Transfer, Workspace)> {
    match who {
        Principal::Staff(user) => load_for(app, user, id).await,
        Principal::Upload { .. } => load(app, id).await,
        Principal::Collect { .. } => Err(collect_only()),
    }
}

/// A workspace by its `PROJECT/WORKSPACE` path, for someone with a role in the project (or a
/// Programme/System Manager); 404 for everyone else, as for one that does not exist.
pub async fn visible_workspace(app: &App, user: &User, path: &str) -> Result<Workspace> {
    let ws = super::transfers::workspace_by_path(app, path).await?;
    visible_project(app, user, &ws.project_name)
        .await
        .map_err(|_| no_workspace(path))?;
    Ok(ws)
}

/// The roles `user` holds for `ws`'s project; a Programme or System Manager sees every project.
pub async fn roles_in(app: &App, user: &User, ws: &Workspace) -> Result<Vec<Role>> {
    let mut roles = app.store.member_roles(ws.project_id, user.id).await?;
    for global in [Role::ProgrammeManager, Role::SystemManager] {
        if user.roles.contains(&global) && !roles.contains(&global) {
            roles.push(global);
        }
    }
    Ok(roles)
}

/// 403 unless `user` holds one of `allowed` for the workspace's project. Callers reach this
/// only through [`load_for`] or [`visible_workspace`], so a stranger has had a 404 already and
/// learns nothing from this message.
pub async fn require_role(
    app: &App,
    user: &User,
    ws: &Workspace,
    allowed: &[Role],
) -> Result<Role> {
    let roles = roles_in(app, user, ws).await?;
    allowed
        .iter()
        .find(|r| roles.contains(r))
        .copied()
        .ok_or_else(|| {
            Error::Forbidden(format!(
                "{} needs one of these roles in project {}: {}",
                user.name,
                ws.project_name,
                allowed
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Anyone with an active role in the project (or a Programme/System Manager) may see a
/// workspace's transfers; a pending member is told to wait.
pub async fn require_member(app: &App, user: &User, ws: &Workspace) -> Result<()> {
    if roles_in(app, user, ws).await?.is_empty() {
        return Err(Error::Forbidden(format!(
            "{} has no active role in project {} yet",
            user.name, ws.project_name
        )));
    }
    Ok(())
}

/// The one answer for a project that does not exist and one the caller has no role in.
pub fn no_project(name: &str) -> Error {
    Error::NotFound(format!("no project {name}"))
}

/// The one answer for a workspace that does not exist and one the caller has no role in.
pub fn no_workspace(path: &str) -> Error {
    Error::NotFound(format!("no workspace {path}"))
}

/// The one answer for a transfer that does not exist and one the caller may not see.
pub fn no_transfer(id: TransferId) -> Error {
    Error::NotFound(format!("no transfer {id}"))
}

/// A project by name, for someone with a role (active or pending) in it or a Programme or
/// System Manager; 404 for everyone else, worded as for a project that does not exist.
pub async fn visible_project(app: &App, user: &User, name: &str) -> Result<Project> {
    let p = app
        .store
        .project_by_name(name)
        .await?
        .ok_or_else(|| no_project(name))?;
    let global = user
        .roles
        .iter()
        .any(|r| matches!(r, Role::ProgrammeManager | Role::SystemManager));
    if global || app.store.is_member(p.id, user.id).await? {
        Ok(p)
    } else {
        Err(no_project(name))
    }
}

/// 403 unless `user` may counter-approve in project `p`: the active Dataset Provider
/// Representative who does not also hold the power to appoint (a Project Manager of the
/// project or a Programme Manager). Grants refuse that combination; this also refuses it
/// where it predates the rule.
pub async fn require_counter_approver(app: &App, user: &User, p: &Project) -> Result<()> {
    let roles = app.store.member_roles(p.id, user.id).await?;
    if !roles.contains(&Role::Provider) {
        return Err(Error::Forbidden(format!(
            "{} needs the provider role in project {} to counter-approve",
            user.name, p.name
        )));
    }
    if let Some(why) = crate::domain::duties::conflict(
        &roles
            .iter()
            .copied()
            .filter(|r| *r != Role::Provider)
            .collect::<Vec<_>>(),
        &user.roles,
        Role::Provider,
    ) {
        return Err(Error::Forbidden(format!(
            "{} may not counter-approve: {} {why}",
            user.name, user.name
        )));
    }
    Ok(())
}
