//! Leases on background jobs (`workflow::lease`), in the `leases` table.

use super::{Result, Store};
use std::time::Duration;

impl Store {
    /// Takes the lease `name` for `holder`, or renews it if `holder` has it, until `ttl` from
    /// now; true if `holder` has it now. One statement: two replicas asking at once cannot both
    /// get it (a row lock on PostgreSQL, the write lock on SQLite).
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = chrono::Utc::now().timestamp_millis();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease `name` up, if `holder` has it.
    pub async fn unlease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Gives up every lease `holder` has (at shutdown).
    pub async fn unlease_all(&self, holder: &str) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM leases WHERE holder = $1")
            .bind(holder)
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// Who holds the lease `name` now, if anyone does (an expired lease counts as none).
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        let now = chrono::Utc::now().timestamp_millis();
        Ok(
            sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1 AND expires_at > $2")
                .bind(name)
                .bind(now)
                .fetch_optional(self.pool())
                .await?,
        )
    }
}
