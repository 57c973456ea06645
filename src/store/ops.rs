//! Reads for the operations routes (`api::ops`): incidents, audit events and webhook
//! deliveries a page at a time, by keyset, so no list or export holds a whole table.
//!
//! Portable SQL only (`$n` placeholders, no SQLite-only functions): the same queries run on
//! PostgreSQL.

use super::{Incident, Result, Store};
use crate::audit;
use crate::domain::{TransferId, UserId};
use sqlx::Row;

/// Which incidents a caller may list.
#[derive(Debug, Clone)]
pub enum IncidentScope {
    /// Every incident, system-wide ones (no transfer) included: the System Manager.
    All,
    /// Every incident that belongs to a transfer: a Programme Manager.
    Transfers,
    /// Incidents of the transfers of the projects this user is an active Project Manager of.
    ManagedBy(UserId),
}

fn incident(r: &sqlx::any::AnyRow) -> Result<Incident> {
    Ok(Incident {
        id: r.try_get("id")?,
        transfer_id: r.try_get("transfer_id")?,
        kind: r.try_get("kind")?,
        detail: r.try_get("detail")?,
        state: r.try_get("state")?,
        created_at: r.try_get("created_at")?,
    })
}

fn record(r: &sqlx::any::AnyRow) -> Result<audit::Record> {
    Ok(audit::Record {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        transfer_id: r.try_get("transfer_id")?,
        detail: r.try_get("detail")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
        mac: r.try_get("mac")?,
    })
}

/// A page of the whole chain.
const AUDIT_PAGE_SQL: &str = "SELECT * FROM audit_events WHERE seq > $1 AND seq <= $2 \
     ORDER BY seq LIMIT $3";
/// A page of one transfer's events.
pub(super) const AUDIT_PAGE_OF_SQL: &str = "SELECT * FROM audit_events WHERE transfer_id = $1 \
     AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4";

impl Store {
    /// One incident by id.
    pub async fn incident(&self, id: &str) -> Result<Option<Incident>> {
        sqlx::query("SELECT * FROM incidents WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(incident)
            .transpose()
    }

    /// A page of incidents in creation order (then id), after the incident `after`
    /// (exclusive), optionally of one transfer, within `scope`.
    pub async fn incidents_page(
        &self,
        transfer: Option<TransferId>,
        scope: &IncidentScope,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Incident>> {
        let (mode, manager) = match scope {
            IncidentScope::All => ("all", None),
            IncidentScope::Transfers => ("transfers", None),
            IncidentScope::ManagedBy(u) => ("managed", Some(u.to_string())),
        };
        let rows = sqlx::query(
            "SELECT i.id, i.transfer_id, i.kind, i.detail, i.state, i.created_at \
             FROM incidents i \
             LEFT JOIN transfers t ON t.id = i.transfer_id \
             LEFT JOIN workspaces w ON w.id = t.workspace_id \
             WHERE ($1 IS NULL OR i.transfer_id = $1) \
             AND ($2 = 'all' \
                  OR ($2 = 'transfers' AND i.transfer_id IS NOT NULL) \
                  OR ($2 = 'managed' AND w.project_id IN ( \
                      SELECT m.project_id FROM project_members m \
                      WHERE m.user_id = $3 AND m.role = 'project-manager' \
                      AND m.state = 'active'))) \
             AND ($4 IS NULL \
                  OR i.created_at > (SELECT c.created_at FROM incidents c WHERE c.id = $4) \
                  OR (i.created_at = (SELECT c.created_at FROM incidents c WHERE c.id = $4) \
                      AND i.id > $4)) \
             ORDER BY i.created_at, i.id LIMIT $5",
        )
        .bind(transfer.map(|t| t.to_string()))
        .bind(mode)
        .bind(manager)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(incident).collect()
    }

    /// Whether `user` is an active Project Manager of any project.
    pub async fn manages_a_project(&self, user: UserId) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM project_members WHERE user_id = $1 \
             AND role = 'project-manager' AND state = 'active'",
        )
        .bind(user.to_string())
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// Up to `limit` audit records after `after` (exclusive) up to `upto` (inclusive), in
    /// chain order; only the transfer's if `transfer` is given.
    pub async fn audit_page(
        &self,
        transfer: Option<&str>,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<audit::Record>> {
        // Two statements: one transfer's page walks its events by index (`audit_transfer`),
        // not the whole chain.
        let q = match transfer {
            Some(t) => sqlx::query(AUDIT_PAGE_OF_SQL).bind(t),
            None => sqlx::query(AUDIT_PAGE_SQL),
        };
        q.bind(after)
            .bind(upto)
            .bind(limit)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(record)
            .collect()
    }

    /// A page of webhook deliveries, newest first (as `deliveries`), after the delivery
    /// `after` (exclusive), optionally in one state.
    pub async fn deliveries_page(
        &self,
        state: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<super::Delivery>> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries d WHERE ($1 IS NULL OR d.state = $1) \
             AND ($2 IS NULL \
                  OR d.audit_seq < (SELECT c.audit_seq FROM webhook_deliveries c WHERE c.id = $2) \
                  OR (d.audit_seq = (SELECT c.audit_seq FROM webhook_deliveries c WHERE c.id = $2) \
                      AND d.url > (SELECT c.url FROM webhook_deliveries c WHERE c.id = $2))) \
             ORDER BY d.audit_seq DESC, d.url LIMIT $3",
        )
        .bind(state)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(super::webhooks::delivery).collect()
    }
}
