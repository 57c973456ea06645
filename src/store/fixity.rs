//! Fixity records: each file at rest, where it lies, when it was last re-hashed and the result.

use super::{Result, Store, Tx};
use crate::domain::TransferId;
use sqlx::Row;
use std::collections::HashMap;

#[derive(Debug, Clone, serde::Serialize)]
pub struct FixityRow {
    pub location: String,
    pub path: String,
    /// Unix milliseconds.
    pub verified_at: i64,
    pub result: String,
    pub detail: String,
}

impl Store {
    pub async fn fixity(&self, transfer: TransferId) -> Result<Vec<FixityRow>> {
        let rows =
            sqlx::query("SELECT * FROM fixity WHERE transfer_id = $1 ORDER BY location, path")
                .bind(transfer.to_string())
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| {
                Ok(FixityRow {
                    location: r.try_get("location")?,
                    path: r.try_get("path")?,
                    verified_at: r.try_get("verified_at")?,
                    result: r.try_get("result")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// When each file of a transfer was last verified at `location`.
    pub async fn last_verified(
        &self,
        transfer: TransferId,
        location: &str,
    ) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT path, verified_at FROM fixity WHERE transfer_id = $1 AND location = $2",
        )
        .bind(transfer.to_string())
        .bind(location)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("path")?, r.try_get("verified_at")?)))
            .collect()
    }

    /// Transfers whose files are at rest: sealed (their quarantine copy) and not withdrawn.
    pub async fn transfers_at_rest(&self) -> Result<Vec<super::Transfer>> {
        sqlx::query("SELECT * FROM transfers WHERE root_digest IS NOT NULL ORDER BY sealed_at")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(super::transfer_from_row)
            .collect()
    }

    /// Whether an open incident with exactly this detail exists for the transfer.
    pub async fn open_incident(&self, transfer: TransferId, detail: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM incidents WHERE transfer_id = $1 AND detail = $2 AND state = 'open'",
        )
        .bind(transfer.to_string())
        .bind(detail)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }
}

impl Tx<'_> {
    /// Marks an open incident resolved; returns its transfer, or `None` if no open incident
    /// has that id.
    pub async fn resolve_incident(&mut self, id: &str) -> Result<Option<Option<String>>> {
        let t: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE incidents SET state = 'resolved' WHERE id = $1 AND state = 'open' \
             RETURNING transfer_id",
        )
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(t)
    }

    pub async fn record_fixity(&mut self, transfer: TransferId, row: &FixityRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO fixity (transfer_id, location, path, verified_at, result, detail) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT(transfer_id, location, path) DO UPDATE \
             SET verified_at = $4, result = $5, detail = $6",
        )
        .bind(transfer.to_string())
        .bind(&row.location)
        .bind(&row.path)
        .bind(row.verified_at)
        .bind(&row.result)
        .bind(&row.detail)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
