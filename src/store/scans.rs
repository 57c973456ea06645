//! Scan verdicts and the retry queue of transfers whose scan failed.

use super::{now, Result, Store, Tx};
use crate::domain::{FileId, TransferId};
use sqlx::Row;

/// One verdict: a file (or an archive member) and one scanner.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerdictRow {
    #[serde(skip)]
    pub file_id: FileId,
    pub path: String,
    /// Path inside the file for an archive member ("inner.zip!a.txt"), else "".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub member: String,
    pub scanner: String,
    pub verdict: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub sha256: String,
    pub scanner_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub db_version: String,
    pub scanned_at: String,
}

/// A transfer waiting to be scanned again.
#[derive(Debug, Clone)]
pub struct ScanJob {
    pub transfer_id: TransferId,
    pub attempts: i64,
    pub retry_at: i64,
    pub last_error: String,
}

fn verdict(r: &sqlx::sqlite::SqliteRow) -> Result<VerdictRow> {
    Ok(VerdictRow {
        file_id: super::parse("scan_verdicts", r.try_get("file_id")?)?,
        path: r.try_get("path")?,
        member: r.try_get("member")?,
        scanner: r.try_get("scanner")?,
        verdict: r.try_get("verdict")?,
        detail: r.try_get("detail")?,
        sha256: r.try_get("sha256")?,
        scanner_version: r.try_get("scanner_version")?,
        db_version: r.try_get("db_version")?,
        scanned_at: r.try_get("scanned_at")?,
    })
}

impl Store {
    /// A transfer's verdicts, in file order then scanner.
    pub async fn verdicts(&self, transfer: TransferId) -> Result<Vec<VerdictRow>> {
        let rows = sqlx::query(
            "SELECT * FROM scan_verdicts WHERE transfer_id = $1 ORDER BY path, member, scanner, id",
        )
        .bind(transfer.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(verdict).collect()
    }

    /// Transfers not yet released (`in_review` or `approved`) with a verdict of `scanner`
    /// pinned to another database version.
    pub async fn stale_reviews(&self, scanner: &str, db_version: &str) -> Result<Vec<TransferId>> {
        let rows = sqlx::query(
            "SELECT DISTINCT v.transfer_id FROM scan_verdicts v JOIN transfers t \
             ON t.id = v.transfer_id WHERE t.state IN ('in_review', 'approved') \
             AND v.scanner = $1 AND v.db_version != $2",
        )
        .bind(scanner)
        .bind(db_version)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| super::parse("scan_verdicts", r.try_get("transfer_id")?))
            .collect()
    }

    /// Whether any of a transfer's verdicts by `scanner` was given by another database
    /// version than `db_version`.
    pub async fn has_stale_verdicts(
        &self,
        transfer: TransferId,
        scanner: &str,
        db_version: &str,
    ) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM scan_verdicts WHERE transfer_id = $1 \
             AND scanner = $2 AND db_version != $3 LIMIT 1)",
        )
        .bind(transfer.to_string())
        .bind(scanner)
        .bind(db_version)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// Whether a transfer has any verdict by `scanner`.
    pub async fn has_verdicts_by(&self, transfer: TransferId, scanner: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM scan_verdicts WHERE transfer_id = $1 \
             AND scanner = $2 LIMIT 1)",
        )
        .bind(transfer.to_string())
        .bind(scanner)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    pub async fn scan_job(&self, transfer: TransferId) -> Result<Option<ScanJob>> {
        let r = sqlx::query("SELECT * FROM scan_jobs WHERE transfer_id = $1")
            .bind(transfer.to_string())
            .fetch_optional(self.pool())
            .await?;
        r.map(|r| {
            Ok(ScanJob {
                transfer_id: super::parse("scan_jobs", r.try_get("transfer_id")?)?,
                attempts: r.try_get("attempts")?,
                retry_at: r.try_get("retry_at")?,
                last_error: r.try_get("last_error")?,
            })
        })
        .transpose()
    }

    /// Transfers in `scan_error` whose next attempt is due at `now_ms`.
    pub async fn due_scan_retries(&self, now_ms: i64) -> Result<Vec<TransferId>> {
        let rows = sqlx::query(
            "SELECT j.transfer_id FROM scan_jobs j JOIN transfers t ON t.id = j.transfer_id \
             WHERE t.state = 'scan_error' AND j.retry_at <= $1 ORDER BY j.retry_at",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| super::parse("scan_jobs", r.try_get("transfer_id")?))
            .collect()
    }

    /// When the next scan retry is due, if any.
    pub async fn next_scan_retry(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(j.retry_at) FROM scan_jobs j JOIN transfers t ON t.id = j.transfer_id \
             WHERE t.state = 'scan_error'",
        )
        .fetch_one(self.pool())
        .await?)
    }
}

impl Tx<'_> {
    /// Replaces a transfer's verdicts with a new scan's.
    pub async fn replace_verdicts(
        &mut self,
        transfer: TransferId,
        rows: &[VerdictRow],
    ) -> Result<()> {
        sqlx::query("DELETE FROM scan_verdicts WHERE transfer_id = $1")
            .bind(transfer.to_string())
            .execute(&mut *self.tx)
            .await?;
        for v in rows {
            sqlx::query(
                "INSERT INTO scan_verdicts (transfer_id, file_id, path, member, scanner, verdict, \
                 detail, sha256, scanner_version, db_version, scanned_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(transfer.to_string())
            .bind(v.file_id.to_string())
            .bind(&v.path)
            .bind(&v.member)
            .bind(&v.scanner)
            .bind(&v.verdict)
            .bind(&v.detail)
            .bind(&v.sha256)
            .bind(&v.scanner_version)
            .bind(&v.db_version)
            .bind(&v.scanned_at)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Records a failed attempt; returns how many there have been.
    pub async fn scan_failed(
        &mut self,
        transfer: TransferId,
        retry_at: i64,
        error: &str,
    ) -> Result<i64> {
        sqlx::query(
            "INSERT INTO scan_jobs (transfer_id, attempts, retry_at, last_error) \
             VALUES ($1, 1, $2, $3) ON CONFLICT(transfer_id) DO UPDATE SET \
             attempts = attempts + 1, retry_at = $2, last_error = $3",
        )
        .bind(transfer.to_string())
        .bind(retry_at)
        .bind(error)
        .execute(&mut *self.tx)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT attempts FROM scan_jobs WHERE transfer_id = $1")
                .bind(transfer.to_string())
                .fetch_one(&mut *self.tx)
                .await?,
        )
    }

    pub async fn scan_attempts(&mut self, transfer: TransferId) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT attempts FROM scan_jobs WHERE transfer_id = $1")
                .bind(transfer.to_string())
                .fetch_optional(&mut *self.tx)
                .await?
                .unwrap_or(0),
        )
    }

    pub async fn scan_done(&mut self, transfer: TransferId) -> Result<()> {
        sqlx::query("DELETE FROM scan_jobs WHERE transfer_id = $1")
            .bind(transfer.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn set_ack_required(&mut self, transfer: TransferId, on: bool) -> Result<()> {
        sqlx::query("UPDATE transfers SET ack_required = $2, updated_at = $3 WHERE id = $1")
            .bind(transfer.to_string())
            .bind(on as i64)
            .bind(now())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
