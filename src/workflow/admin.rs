//! Bootstrap: users, projects, members, workspaces and staff tokens, as `airlock admin` does
//! them on the data directory (server running or not). Each step is audited.

use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::*;
use std::time::Duration;

const ADMIN: &str = "admin-cli";

pub async fn add_user(app: &App, name: &str, roles: &[Role]) -> Result<UserId> {
    create_user_as(app, ADMIN, name, roles).await
}

/// Creates a user, audited as done by `actor`: the one path for `airlock admin` and the API.
pub(super) async fn create_user_as(
    app: &App,
    actor: &str,
    name: &str,
    roles: &[Role],
) -> Result<UserId> {
    let name = Name::parse(name).map_err(Error::BadRequest)?;
    if app.store.user_by_name(name.as_str()).await?.is_some() {
        return Err(Error::Conflict(format!("user {name} already exists")));
    }
    let mut tx = app.store.begin().await?;
    let id = tx.create_user(&name, roles).await?;
    tx.audit(
        AuditEvent::new(actor, "user.created")
            .detail(serde_json::json!({ "user": name, "roles": roles })),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn create_project(app: &App, name: &str) -> Result<ProjectId> {
    create_project_as(app, ADMIN, name).await
}

/// Creates a project, audited as done by `actor`.
pub(super) async fn create_project_as(app: &App, actor: &str, name: &str) -> Result<ProjectId> {
    let name = Name::parse(name).map_err(Error::BadRequest)?;
    if app.store.project_by_name(name.as_str()).await?.is_some() {
        return Err(Error::Conflict(format!("project {name} already exists")));
    }
    let mut tx = app.store.begin().await?;
    let id = tx.create_project(&name).await?;
    tx.audit(
        AuditEvent::new(actor, "project.created").detail(serde_json::json!({ "project": name })),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn add_member(app: &App, project: &str, user: &str, role: Role) -> Result<()> {
    let p = app
        .store
        .project_by_name(project)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no project {project}")))?;
    let u = app
        .store
        .user_by_name(user)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user {user}")))?;
    super::membership::grant(app, super::membership::Granter::Admin(ADMIN), &p, &u, role).await?;
    Ok(())
}

/// Disables a user from the server (any user, a System Manager included).
pub async fn disable_user(app: &App, user: &str, reason: &str) -> Result<()> {
    let u = super::membership::user_named(app, user).await?;
    super::membership::disable_as(app, ADMIN, &u, reason).await?;
    Ok(())
}

pub async fn create_workspace(
    app: &App,
    project: &str,
    name: &str,
    tier: i64,
    policy_file: Option<&std::path::Path>,
) -> Result<WorkspaceId> {
    let tier = Tier::try_from(tier).map_err(Error::BadRequest)?;
    // An override is checked now and remembered by its absolute path.
    let policy = match policy_file {
        Some(f) => {
            let abs = std::fs::canonicalize(f)
                .map_err(|e| Error::BadRequest(format!("policy file {}: {e}", f.display())))?;
            let abs = abs.display().to_string();
            let p = app
                .policies
                .for_workspace(tier, Some(&abs))
                .map_err(|e| Error::BadRequest(e.to_string()))?;
            Some((abs, p.version.clone()))
        }
        None => None,
    };
    let name = Name::parse(name).map_err(Error::BadRequest)?;
    let p = app
        .store
        .project_by_name(project)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no project {project}")))?;
    if app
        .store
        .workspace_by_name(project, name.as_str())
        .await?
        .is_some()
    {
        return Err(Error::Conflict(format!(
            "workspace {project}/{name} already exists"
        )));
    }
    let mut tx = app.store.begin().await?;
    let id = tx
        .create_workspace(p.id, &name, tier, policy.as_ref().map(|p| p.0.as_str()))
        .await?;
    tx.audit(
        AuditEvent::new(ADMIN, "workspace.created").detail(serde_json::json!({
            "project": project, "workspace": name, "tier": tier,
            "policy_file": policy.as_ref().map(|p| &p.0),
            "policy_version": policy.as_ref().map(|p| &p.1),
        })),
    )
    .await?;
    tx.commit().await?;
    // The output volume the analysis environment writes to; airlock only ever reads it.
    let ws = app
        .store
        .workspace(id)
        .await?
        .ok_or_else(|| Error::Internal("workspace vanished".into()))?;
    // On S3 the workspace's prefix needs nothing made: its first object makes it.
    if !app.volumes.output_on_s3() {
        let out = super::egress::default_output_dir(app, &ws);
        crate::volumes::create_traversable(&out)?;
    }
    Ok(id)
}

/// Names another folder as a workspace's output volume (it must exist).
pub async fn set_output_volume(
    app: &App,
    project: &str,
    name: &str,
    dir: &std::path::Path,
) -> Result<()> {
    let ws = super::transfers::workspace_by_path(app, &format!("{project}/{name}")).await?;
    let abs = std::fs::canonicalize(dir)
        .map_err(|e| Error::BadRequest(format!("output volume {}: {e}", dir.display())))?;
    if !abs.is_dir() {
        return Err(Error::BadRequest(format!(
            "output volume {}: not a folder",
            abs.display()
        )));
    }
    let abs = abs.display().to_string();
    let mut tx = app.store.begin().await?;
    tx.set_workspace_output(ws.id, &abs).await?;
    tx.audit(
        AuditEvent::new(ADMIN, "workspace.output_volume").detail(serde_json::json!({
            "project": project, "workspace": name, "output": abs,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A workspace as `airlock admin workspace show --json` prints it.
pub async fn show_workspace(app: &App, path: &str) -> Result<serde_json::Value> {
    let ws = super::transfers::workspace_by_path(app, path).await?;
    let policy = app.policy(&ws)?;
    // Where the workspace's releases of each kind go: a folder, or a prefix on S3.
    let vol = |kind: TransferKind| {
        let dest = object_store::path::Path::from_iter([
            ws.project_name.as_str(),
            ws.name.as_str(),
            kind.volume(),
        ]);
        app.volumes.location(&dest)
    };
    let output = super::egress::output_dir(app, &ws).await?.shown(app, &ws);
    Ok(serde_json::json!({
        "id": ws.id,
        "project": ws.project_name,
        "name": ws.name,
        "tier": ws.tier.get(),
        "policy": { "file": policy.file, "version": policy.version },
        "volumes": {
            "output": output,
            "data": vol(TransferKind::DataIngress),
            "software": vol(TransferKind::SoftwareIngress),
            "egress": vol(TransferKind::Egress),
        },
    }))
}

/// Mints a staff token for `user`. The token itself is never stored.
pub async fn staff_token(app: &App, user: &str, ttl: Option<Duration>) -> Result<String> {
    let u = app
        .store
        .user_by_name(user)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user {user}")))?;
    if u.disabled {
        return Err(Error::Conflict(format!(
            "{user} is disabled: no token is minted for them"
        )));
    }
    let ttl = ttl.unwrap_or(app.settings.tokens.staff_default_ttl);
    let (jti, token, exp) = app.keys.mint_staff(u.id, ttl);
    let mut tx = app.store.begin().await?;
    tx.insert_staff_token(jti, u.id, exp).await?;
    tx.audit(
        AuditEvent::new(ADMIN, "token.staff_minted")
            .detail(serde_json::json!({ "user": user, "token_id": jti, "expires_at": exp })),
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}
