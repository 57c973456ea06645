//! What `/metrics` reads from the store at scrape time: transfers by state and the background
//! work waiting. Each is one statement answered from an index (`transfers_state`,
//! `webhook_due`, the primary keys), never a walk over files, so a scrape costs the same with
//! one transfer of ten files or thousands of transfers of 100,000.

use super::{Result, Store};
use sqlx::Row;

/// Background work waiting, by queue (see [`Store::queues`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queues {
    /// Transfers sealed or scanning: the scan worker has them to do.
    pub scan: u64,
    /// Transfers in `scan_error` whose retry is due now.
    pub scan_retry: u64,
    /// Approved transfers the release worker has still to copy out.
    pub release: u64,
    /// Webhook deliveries not yet delivered (due now or backing off).
    pub webhook_delivery: u64,
    /// Open transfers whose every upload token ran out: the expiry sweep has them to close
    /// (the same rule as [`Store::open_transfers_with_expired_tokens`]).
    pub expiry: u64,
    /// Audit events the notifier has not looked at yet (0 while webhooks are off: the cursor
    /// only exists once the notifier has run).
    pub webhook_outbox: u64,
}

impl Store {
    /// How many transfers are in each state (states with none are absent).
    pub async fn transfers_by_state(&self) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM transfers GROUP BY state")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok((r.try_get("state")?, n.max(0) as u64))
            })
            .collect()
    }

    /// The background work waiting at `now_ms`, in one statement.
    pub async fn queues(&self, now_ms: i64) -> Result<Queues> {
        let r = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM transfers WHERE state IN ('sealed', 'scanning')) AS scan, \
               (SELECT COUNT(*) FROM scan_jobs j JOIN transfers t ON t.id = j.transfer_id \
                 WHERE t.state = 'scan_error' AND j.retry_at <= $1) AS scan_retry, \
               (SELECT COUNT(*) FROM transfers WHERE state = 'approved') AS release, \
               (SELECT COUNT(*) FROM transfers t WHERE t.state = 'open' \
                 AND EXISTS (SELECT 1 FROM upload_tokens u WHERE u.transfer_id = t.id \
                             AND u.revoked_at IS NULL AND u.expires_at <= $2) \
                 AND NOT EXISTS (SELECT 1 FROM upload_tokens u WHERE u.transfer_id = t.id \
                                 AND u.revoked_at IS NULL AND u.expires_at > $2)) AS expiry, \
               (SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending') AS delivery, \
               (SELECT COALESCE((SELECT MAX(seq) FROM audit_events) - c.seq, 0) \
                  FROM webhook_cursor c WHERE c.id = 1) AS outbox",
        )
        .bind(now_ms)
        // Token expiry is in Unix seconds.
        .bind(now_ms.div_euclid(1000))
        .fetch_one(self.pool())
        .await?;
        let n = |col: &str| -> Result<u64> {
            let v: Option<i64> = r.try_get(col)?;
            Ok(v.unwrap_or(0).max(0) as u64)
        };
        Ok(Queues {
            scan: n("scan")?,
            scan_retry: n("scan_retry")?,
            release: n("release")?,
            expiry: n("expiry")?,
            webhook_delivery: n("delivery")?,
            webhook_outbox: n("outbox")?,
        })
    }
}
