//! Governance tables: project membership (with counter-approval), the referees assigned to a
//! transfer, and the decisions taken on it.

use super::{decisions_on, now, parse, Decision, Result, Store, Tx};
use crate::domain::*;
use sqlx::Row;

/// One role one user holds (or waits to hold) in a project.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: UserId,
    pub user: String,
    pub role: Role,
    /// `active`, or `pending` counter-approval.
    pub state: String,
    pub added_by: Option<String>,
    pub approved_by: Option<String>,
}

/// A referee assigned to a transfer.
#[derive(Debug, Clone)]
pub struct RefereeRow {
    pub user_id: UserId,
    pub user: String,
    /// `active`, or `pending` counter-approval.
    pub state: String,
    pub assigned_by: String,
    pub approved_by: Option<String>,
}

impl Store {
    /// Every membership of a project, pending ones included.
    pub async fn members(&self, project: ProjectId) -> Result<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.name, m.role, m.state, a.name AS added_by, b.name AS approved_by \
             FROM project_members m JOIN users u ON u.id = m.user_id \
             LEFT JOIN users a ON a.id = m.added_by LEFT JOIN users b ON b.id = m.approved_by \
             WHERE m.project_id = $1 ORDER BY u.name, m.role",
        )
        .bind(project.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    user_id: parse("project_members", r.try_get("user_id")?)?,
                    user: r.try_get("name")?,
                    role: parse("project_members", r.try_get("role")?)?,
                    state: r.try_get("state")?,
                    added_by: r.try_get("added_by")?,
                    approved_by: r.try_get("approved_by")?,
                })
            })
            .collect()
    }

    /// Whether `user` has any membership of `project`, pending included.
    pub async fn is_member(&self, project: ProjectId, user: UserId) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM project_members WHERE project_id = $1 AND user_id = $2")
                .bind(project.to_string())
                .bind(user.to_string())
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Names of users holding a system-wide role (the referee college, Programme Managers).
    pub async fn users_with_role(&self, role: Role) -> Result<Vec<(UserId, String)>> {
        let rows = sqlx::query(
            "SELECT u.id, u.name FROM users u JOIN user_roles r ON r.user_id = u.id \
             WHERE r.role = $1 ORDER BY u.name",
        )
        .bind(role.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((parse("users", r.try_get("id")?)?, r.try_get("name")?)))
            .collect()
    }

    /// The highest tier among a project's workspaces.
    pub async fn project_max_tier(&self, project: ProjectId) -> Result<Option<Tier>> {
        let t: Option<i64> =
            sqlx::query_scalar("SELECT MAX(tier) FROM workspaces WHERE project_id = $1")
                .bind(project.to_string())
                .fetch_one(&self.pool)
                .await?;
        t.map(|t| Tier::try_from(t).map_err(super::corrupt("workspaces")))
            .transpose()
    }

    /// Override policy files named by workspaces, with the tier each must declare.
    pub async fn workspace_policy_files(&self) -> Result<Vec<(String, Tier)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT policy_file, tier FROM workspaces WHERE policy_file IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("policy_file")?,
                    Tier::try_from(r.try_get::<i64, _>("tier")?)
                        .map_err(super::corrupt("workspaces"))?,
                ))
            })
            .collect()
    }

    pub async fn referees(&self, transfer: TransferId) -> Result<Vec<RefereeRow>> {
        let rows = sqlx::query(
            "SELECT r.user_id, u.name, r.state, a.name AS assigned_by, b.name AS approved_by \
             FROM referee_assignments r JOIN users u ON u.id = r.user_id \
             JOIN users a ON a.id = r.assigned_by LEFT JOIN users b ON b.id = r.approved_by \
             WHERE r.transfer_id = $1 ORDER BY r.assigned_at",
        )
        .bind(transfer.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RefereeRow {
                    user_id: parse("referee_assignments", r.try_get("user_id")?)?,
                    user: r.try_get("name")?,
                    state: r.try_get("state")?,
                    assigned_by: r.try_get("assigned_by")?,
                    approved_by: r.try_get("approved_by")?,
                })
            })
            .collect()
    }

    /// Whether `user` is a referee on any transfer of `project` that is still under way.
    pub async fn referee_in_project(&self, project: ProjectId, user: UserId) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 FROM referee_assignments r JOIN transfers t ON t.id = r.transfer_id \
             JOIN workspaces w ON w.id = t.workspace_id WHERE w.project_id = $1 AND r.user_id = $2 \
             AND t.state NOT IN ('released', 'rejected', 'cancelled', 'expired', 'revoked') LIMIT 1",
        )
        .bind(project.to_string())
        .bind(user.to_string())
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }
}

impl Tx<'_> {
    /// The transfer's decisions, read under the write lock.
    pub async fn decisions(&mut self, transfer: TransferId) -> Result<Vec<Decision>> {
        decisions_on(&mut self.tx, transfer).await
    }

    /// Adds a membership; false if that user already holds (or waits for) that role.
    pub async fn insert_member(
        &mut self,
        project: ProjectId,
        user: UserId,
        role: Role,
        pending: bool,
        added_by: Option<UserId>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role, state, added_by, added_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(project.to_string())
        .bind(user.to_string())
        .bind(role.as_str())
        .bind(if pending { "pending" } else { "active" })
        .bind(added_by.map(|u| u.to_string()))
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counter-approves a pending membership; false if there was none.
    pub async fn approve_member(
        &mut self,
        project: ProjectId,
        user: UserId,
        role: Role,
        by: UserId,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE project_members SET state = 'active', approved_by = $4 \
             WHERE project_id = $1 AND user_id = $2 AND role = $3 AND state = 'pending'",
        )
        .bind(project.to_string())
        .bind(user.to_string())
        .bind(role.as_str())
        .bind(by.to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Assigns a referee; false if already assigned.
    pub async fn assign_referee(
        &mut self,
        transfer: TransferId,
        user: UserId,
        pending: bool,
        by: UserId,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO referee_assignments (transfer_id, user_id, state, assigned_by, assigned_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(transfer.to_string())
        .bind(user.to_string())
        .bind(if pending { "pending" } else { "active" })
        .bind(by.to_string())
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counter-approves a pending referee assignment; false if there was none.
    pub async fn approve_referee(
        &mut self,
        transfer: TransferId,
        user: UserId,
        by: UserId,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE referee_assignments SET state = 'active', approved_by = $3 \
             WHERE transfer_id = $1 AND user_id = $2 AND state = 'pending'",
        )
        .bind(transfer.to_string())
        .bind(user.to_string())
        .bind(by.to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Voids every decision of a transfer that still counts; returns how many.
    pub async fn void_decisions(&mut self, transfer: TransferId, reason: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE decisions SET void_reason = $2 WHERE transfer_id = $1 AND void_reason IS NULL",
        )
        .bind(transfer.to_string())
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    /// Updates the state reason without changing the state (an approval that is not the last).
    pub async fn set_reason(
        &mut self,
        id: TransferId,
        state: TransferState,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE transfers SET state_reason = $3, updated_at = $4 WHERE id = $1 AND state = $2",
        )
        .bind(id.to_string())
        .bind(state.as_str())
        .bind(reason)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes `user`'s membership of `project`: one role, or every role. Returns the roles
    /// removed.
    pub async fn remove_member(
        &mut self,
        project: ProjectId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<Vec<Role>> {
        let rows = sqlx::query(
            "DELETE FROM project_members WHERE project_id = $1 AND user_id = $2 \
             AND ($3 IS NULL OR role = $3) RETURNING role",
        )
        .bind(project.to_string())
        .bind(user.to_string())
        .bind(role.map(|r| r.as_str()))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| parse("project_members", r.try_get("role")?))
            .collect()
    }

    /// Voids `user`'s decisions that still count on transfers not yet released (in `project`
    /// only, or everywhere; in `role` only, or any); returns the transfers touched.
    pub async fn void_decisions_of(
        &mut self,
        user: UserId,
        project: Option<ProjectId>,
        role: Option<Role>,
        reason: &str,
    ) -> Result<Vec<TransferId>> {
        let rows = sqlx::query(
            "UPDATE decisions SET void_reason = $3 WHERE user_id = $1 AND void_reason IS NULL \
             AND ($4 IS NULL OR role = $4) AND transfer_id IN (SELECT t.id FROM transfers t JOIN workspaces w \
               ON w.id = t.workspace_id WHERE ($2 IS NULL OR w.project_id = $2) \
               AND t.state NOT IN ('released', 'revoked')) \
             RETURNING transfer_id",
        )
        .bind(user.to_string())
        .bind(project.map(|p| p.to_string()))
        .bind(reason)
        .bind(role.map(|r| r.as_str()))
        .fetch_all(&mut *self.tx)
        .await?;
        let mut ids: Vec<TransferId> = rows
            .iter()
            .map(|r| parse("decisions", r.try_get("transfer_id")?))
            .collect::<Result<_>>()?;
        ids.sort_by_key(|t| t.to_string());
        ids.dedup();
        Ok(ids)
    }

    /// Marks a user disabled; false if they already were.
    pub async fn disable_user(&mut self, user: UserId, by: &str, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO user_disabled (user_id, disabled_by, reason, at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(user.to_string())
        .bind(by)
        .bind(reason)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes staff tokens: one by id, or all of a user's. Returns the ids revoked now.
    pub async fn revoke_staff_tokens(
        &mut self,
        user: UserId,
        only: Option<TokenId>,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE staff_tokens SET revoked_at = $3 WHERE user_id = $1 \
             AND ($2 IS NULL OR id = $2) AND revoked_at IS NULL RETURNING id",
        )
        .bind(user.to_string())
        .bind(only.map(|t| t.to_string()))
        .bind(now())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// The user who added a membership (for the counter-approval check), if it exists.
    pub async fn member_added_by(
        &mut self,
        project: ProjectId,
        user: UserId,
        role: Role,
    ) -> Result<Option<Option<UserId>>> {
        let row = sqlx::query(
            "SELECT added_by FROM project_members WHERE project_id = $1 AND user_id = $2 \
             AND role = $3",
        )
        .bind(project.to_string())
        .bind(user.to_string())
        .bind(role.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            r.try_get::<Option<String>, _>("added_by")?
                .map(|s| parse("project_members", &s))
                .transpose()
        })
        .transpose()
    }

    /// The user who assigned a referee (for the counter-approval check), if assigned.
    pub async fn referee_assigned_by(
        &mut self,
        transfer: TransferId,
        user: UserId,
    ) -> Result<Option<UserId>> {
        let row = sqlx::query(
            "SELECT assigned_by FROM referee_assignments WHERE transfer_id = $1 AND user_id = $2",
        )
        .bind(transfer.to_string())
        .bind(user.to_string())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| parse("referee_assignments", r.try_get("assigned_by")?))
            .transpose()
    }

    /// Every role `user` holds or awaits in `project`, read under the write lock.
    pub async fn all_member_roles(
        &mut self,
        project: ProjectId,
        user: UserId,
    ) -> Result<Vec<Role>> {
        sqlx::query("SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2")
            .bind(project.to_string())
            .bind(user.to_string())
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|r| parse("project_members", r.try_get("role")?))
            .collect()
    }
}
