//! Fixity records: each file at rest, where it lies, when it was last re-hashed and the result.
//!
//! Re-verification walks a transfer's files in path order a page at a time, each row joined
//! with its last check ([`Store::fixity_page`]), and writes the results a batch per
//! transaction ([`Store::record_fixity_batch`]); whether anything is due at all comes from one
//! index ([`Store::fixity_age`]).

use super::{FileRow, Result, Store, Tx};
use crate::domain::TransferId;
use sqlx::Row;
use std::collections::HashMap;

/// A file at rest, for re-verification: its row, how many segments hold its bytes in
/// quarantine, and when it was last verified at the location asked for.
#[derive(Debug, Clone)]
pub struct AtRest {
    pub file: FileRow,
    pub segments: u64,
    pub verified_at: Option<i64>,
}

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

    /// Up to `limit` of a transfer's files after the path `after`, in path order, each with its
    /// segment count and its last check at `location`: index lookups per row, so a page costs
    /// the same wherever it lies in the transfer.
    pub async fn fixity_page(
        &self,
        transfer: TransferId,
        location: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AtRest>> {
        let rows = sqlx::query(
            "SELECT f.*, (SELECT COUNT(*) FROM segments s WHERE s.file_id = f.id) AS nseg, \
             x.verified_at AS last_verified FROM files f LEFT JOIN fixity x \
             ON x.transfer_id = f.transfer_id AND x.location = $2 AND x.path = f.path \
             WHERE f.transfer_id = $1 AND f.path > $3 ORDER BY f.path LIMIT $4",
        )
        .bind(transfer.to_string())
        .bind(location)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AtRest {
                    file: super::file_from_row(r)?,
                    segments: r.try_get::<i64, _>("nseg")?.max(0) as u64,
                    verified_at: r.try_get("last_verified")?,
                })
            })
            .collect()
    }

    /// How many files of a transfer have a check at `location`, and the oldest check's time:
    /// from the `fixity_age` index alone (the count is an index range, the minimum one seek).
    pub async fn fixity_age(
        &self,
        transfer: TransferId,
        location: &str,
    ) -> Result<(u64, Option<i64>)> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(verified_at) AS oldest FROM fixity \
             WHERE transfer_id = $1 AND location = $2",
        )
        .bind(transfer.to_string())
        .bind(location)
        .fetch_one(self.pool())
        .await?;
        Ok((
            r.try_get::<i64, _>("n")?.max(0) as u64,
            r.try_get("oldest")?,
        ))
    }

    /// The segment counts of those of `ids` that are files of the transfer, and of its packs
    /// (one object each), in one query for a batch of names found in its quarantine folder.
    pub async fn segment_counts(
        &self,
        transfer: TransferId,
        ids: &[String],
    ) -> Result<HashMap<String, u64>> {
        let rows = sqlx::query(&self.sql(
            // CROSS JOIN keeps this order: each name is one lookup by id (the primary key), not
            // a walk of the transfer's files.
            "SELECT f.id, (SELECT COUNT(*) FROM segments s WHERE s.file_id = f.id) AS nseg \
             FROM json_each($2) j CROSS JOIN files f ON f.id = j.value WHERE f.transfer_id = $1 \
             UNION ALL SELECT p.id, 1 FROM json_each($2) j CROSS JOIN packs p ON p.id = j.value \
             WHERE p.transfer_id = $1",
        ))
        .bind(transfer.to_string())
        .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get::<i64, _>("nseg")?.max(0) as u64)))
            .collect()
    }

    /// Records a batch of checks in one transaction.
    pub async fn record_fixity_batch(
        &self,
        transfer: TransferId,
        rows: &[FixityRow],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for row in rows {
            tx.record_fixity(transfer, row).await?;
        }
        tx.commit().await
    }

    /// Removes rows for unexpected files (written by versions that kept them) at a location:
    /// an unexpected file is an incident, not a file at rest with a last check.
    pub async fn forget_unexpected(&self, transfer: TransferId, location: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM fixity WHERE transfer_id = $1 AND location = $2 AND result = 'unexpected'",
        )
        .bind(transfer.to_string())
        .bind(location)
        .execute(self.pool())
        .await?;
        Ok(())
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
