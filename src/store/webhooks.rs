//! The webhook outbox: deliveries fed from the audit log, with their attempts.

use super::{now, Result, Store, Tx};
use sqlx::Row;

/// An audit event as the notifier reads it.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub transfer_id: Option<String>,
    pub detail: String,
}

/// One webhook delivery.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: String,
    pub audit_seq: i64,
    pub url: String,
    pub event: String,
    pub transfer_id: Option<String>,
    #[serde(skip)]
    pub payload: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

pub(super) fn delivery(r: &sqlx::any::AnyRow) -> Result<Delivery> {
    Ok(Delivery {
        id: r.try_get("id")?,
        audit_seq: r.try_get("audit_seq")?,
        url: r.try_get("url")?,
        event: r.try_get("event")?,
        transfer_id: r.try_get("transfer_id")?,
        payload: r.try_get("payload")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

impl Store {
    /// The last audit seq handed to the notifier; `None` before the first time.
    pub async fn webhook_cursor(&self) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM webhook_cursor WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn audit_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, transfer_id, detail FROM audit_events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(super::browse::audit_row).collect()
    }

    pub async fn last_audit_seq(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Pending deliveries due by `now`, oldest first.
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
             ORDER BY audit_seq, url LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery).collect()
    }

    /// Deliveries, newest first, optionally in one state.
    pub async fn deliveries(&self, state: Option<&str>) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE ($1 IS NULL OR state = $1) \
             ORDER BY audit_seq DESC, url",
        )
        .bind(state)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery).collect()
    }

    /// One delivery by id.
    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>> {
        let row = sqlx::query("SELECT * FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(delivery).transpose()
    }

    /// How many deliveries are in each state.
    pub async fn delivery_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM webhook_deliveries GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// Records an attempt. `next` is when to try again (`None`: delivered or given up).
    pub async fn record_attempt(
        &self,
        id: &str,
        state: &str,
        status: Option<u16>,
        error: Option<&str>,
        next: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, last_status = $3, \
             last_error = $4, next_attempt_at = $5, \
             delivered_at = CASE WHEN $2 = 'delivered' THEN $6 ELSE delivered_at END WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(status.map(i64::from))
        .bind(error)
        .bind(next)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Tx<'_> {
    pub async fn set_webhook_cursor(&mut self, seq: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_cursor (id, seq) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
        )
        .bind(seq)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_delivery(
        &mut self,
        id: &str,
        seq: i64,
        url: &str,
        event: &str,
        transfer: Option<&str>,
        payload: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, audit_seq, url, event, transfer_id, payload, \
             state, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, 0, $7)",
        )
        .bind(id)
        .bind(seq)
        .bind(url)
        .bind(event)
        .bind(transfer)
        .bind(payload)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Puts a failed delivery back in the queue; false if it was not failed.
    pub async fn retry_delivery(&mut self, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = 0, attempts = 0 \
             WHERE id = $1 AND state = 'failed'",
        )
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
