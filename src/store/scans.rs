//! Scan verdicts and the retry queue of transfers whose scan failed.
//!
//! A scan writes its verdicts a batch at a time while it runs (one short transaction per
//! batch, never one holding the write lock for the whole scan). Each transfer's current
//! verdicts are the rows whose ids lie in the range `scan_counts` names; a scan in progress
//! writes above that range, and only its last transaction moves the range (and the counts
//! beside it) onto its own rows, so the previous scan's verdicts stand until then. Rows outside
//! the range (a superseded scan, one cut short by a crash) are pruned in batches.

use super::{now, Result, Store, StoreError, Tx};
use crate::domain::{FileId, TransferId};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};

/// One verdict: a file (or an archive member) and one scanner.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = ScanVerdict)]
pub struct VerdictRow {
    /// The row's id: the cursor of [`Store::verdicts_page`] (0 before it is written).
    #[serde(skip)]
    pub seq: i64,
    #[serde(skip)]
    pub file_id: FileId,
    /// The file's path in the transfer.
    pub path: String,
    /// Path inside the file for an archive member ("inner.zip!a.txt"), else "" (left out of
    /// the JSON).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub member: String,
    /// The scanner's name (a file of scanners/).
    pub scanner: String,
    /// `clean`, `infected`, `unscannable` or `error`.
    pub verdict: String,
    /// The signature or finding name, why it was unscannable, or the error; left out when
    /// clean.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// SHA-256 of the bytes scanned (the file's, or the member's).
    pub sha256: String,
    pub scanner_version: String,
    /// The signature database's version; left out for scanners without one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub db_version: String,
    #[schema(format = DateTime)]
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

/// The kinds a verdict may have, as `scan_counts` keeps them.
pub const VERDICT_KINDS: [&str; 4] = ["clean", "infected", "unscannable", "error"];

/// How many verdict rows one pruning statement deletes.
const PRUNE_BATCH: i64 = 1000;
/// Verdict rows per INSERT statement.
const VERDICTS_PER_INSERT: usize = 400;

/// What a scan has written so far: the span of its row ids, its counts by kind and the
/// (scanner, database version) pairs it used. Constant in size whatever the file count.
#[derive(Debug, Clone, Default)]
pub struct ScanTally {
    pub span: Option<(i64, i64)>,
    pub counts: BTreeMap<String, u64>,
    pub databases: BTreeSet<(String, String)>,
}

impl ScanTally {
    /// Counts one verdict written with the ids `span`.
    pub fn add(&mut self, v: &VerdictRow, span: Option<(i64, i64)>) {
        *self.counts.entry(v.verdict.clone()).or_default() += 1;
        self.databases
            .insert((v.scanner.clone(), v.db_version.clone()));
        self.extend(span);
    }

    /// Widens the id span by a batch's.
    pub fn extend(&mut self, span: Option<(i64, i64)>) {
        if let Some(s) = span {
            self.span = widen(self.span, s);
        }
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.counts.get(kind).copied().unwrap_or(0)
    }
}

/// `span` grown to cover `(lo, hi)`.
fn widen(span: Option<(i64, i64)>, (lo, hi): (i64, i64)) -> Option<(i64, i64)> {
    Some(match span {
        None => (lo, hi),
        Some((a, b)) => (a.min(lo), b.max(hi)),
    })
}

/// Gives every transfer scanned before `scan_counts` existed its range, counts and database
/// versions, computed once from its verdicts.
pub(super) async fn backfill_scan_counts(pool: &sqlx::AnyPool) -> Result<()> {
    // Driven by transfers, each an index probe: every start pays per transfer, not per verdict.
    // A transfer in `scanning` is a first scan still writing (seen by another process: the
    // CLI, a replica): its counts are the scan's to write when it ends, never a partial tally.
    let todo: Vec<String> = sqlx::query_scalar(
        "SELECT t.id FROM transfers t \
         WHERE t.state <> 'scanning' \
         AND NOT EXISTS (SELECT 1 FROM scan_counts c WHERE c.transfer_id = t.id) \
         AND EXISTS (SELECT 1 FROM scan_verdicts v WHERE v.transfer_id = t.id)",
    )
    .fetch_all(pool)
    .await?;
    for t in todo {
        let mut tx = pool.begin().await?;
        sqlx::query(
            // OR IGNORE: a scan that ended since the query above has written its own row.
            "INSERT OR IGNORE INTO scan_counts (transfer_id, first_seq, last_seq, clean, infected, \
             unscannable, error) SELECT transfer_id, MIN(id), MAX(id), \
             SUM(verdict = 'clean'), SUM(verdict = 'infected'), SUM(verdict = 'unscannable'), \
             SUM(verdict = 'error') FROM scan_verdicts WHERE transfer_id = $1 GROUP BY transfer_id",
        )
        .bind(&t)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT OR IGNORE INTO scan_databases (transfer_id, scanner, db_version) \
             SELECT DISTINCT transfer_id, scanner, db_version FROM scan_verdicts \
             WHERE transfer_id = $1",
        )
        .bind(&t)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn verdict(r: &sqlx::any::AnyRow) -> Result<VerdictRow> {
    Ok(VerdictRow {
        seq: r.try_get("id")?,
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
    /// A transfer's current verdicts, in file order then scanner. Every row at once: for small
    /// transfers and the CLI; views page with [`Store::verdicts_page`].
    pub async fn verdicts(&self, transfer: TransferId) -> Result<Vec<VerdictRow>> {
        let rows = sqlx::query(
            "SELECT v.* FROM scan_verdicts v JOIN scan_counts c ON c.transfer_id = v.transfer_id \
             WHERE v.transfer_id = $1 AND v.id BETWEEN c.first_seq AND c.last_seq \
             ORDER BY v.path, v.member, v.scanner, v.id",
        )
        .bind(transfer.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(verdict).collect()
    }

    /// Transfers not yet released (`in_review` or `approved`) with a verdict of `scanner`
    /// pinned to another database version. Reads the few database versions each transfer's
    /// scan used (`scan_databases`), never the verdicts themselves.
    pub async fn stale_reviews(&self, scanner: &str, db_version: &str) -> Result<Vec<TransferId>> {
        let rows = sqlx::query(
            "SELECT DISTINCT d.transfer_id FROM scan_databases d JOIN transfers t \
             ON t.id = d.transfer_id WHERE t.state IN ('in_review', 'approved') \
             AND d.scanner = $1 AND d.db_version != $2",
        )
        .bind(scanner)
        .bind(db_version)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| super::parse("scan_databases", r.try_get("transfer_id")?))
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
            "SELECT COUNT(*) FROM scan_databases WHERE transfer_id = $1 \
             AND scanner = $2 AND db_version != $3",
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
            "SELECT COUNT(*) FROM scan_databases WHERE transfer_id = $1 AND scanner = $2",
        )
        .bind(transfer.to_string())
        .bind(scanner)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// The transfer's current verdicts counted by kind (`clean`, `infected`, `unscannable`,
    /// `error`; each key always present), kept at the end of each scan: one row read,
    /// whatever the file count.
    /// The transfer's totals and its current verdict counts, in one query (the summary).
    pub async fn totals_and_scan_counts(
        &self,
        transfer: TransferId,
    ) -> Result<(super::Totals, BTreeMap<String, u64>)> {
        let r = sqlx::query(
            "SELECT tt.files, tt.complete, tt.received, tt.reserved, sc.clean, sc.infected, \
             sc.unscannable, sc.error FROM (SELECT $1 AS id) k \
             LEFT JOIN transfer_totals tt ON tt.transfer_id = k.id \
             LEFT JOIN scan_counts sc ON sc.transfer_id = k.id",
        )
        .bind(transfer.to_string())
        .fetch_one(self.pool())
        .await?;
        let n = |c: &str| -> Result<u64> {
            Ok(r.try_get::<Option<i64>, _>(c)?.unwrap_or(0).max(0) as u64)
        };
        let totals = super::Totals {
            files: n("files")?,
            complete: n("complete")?,
            received: n("received")?,
            reserved: n("reserved")?,
        };
        let mut counts = BTreeMap::new();
        for k in VERDICT_KINDS {
            counts.insert(k.to_owned(), n(k)?);
        }
        Ok((totals, counts))
    }

    pub async fn scan_counts(&self, transfer: TransferId) -> Result<BTreeMap<String, u64>> {
        let row = sqlx::query(
            "SELECT clean, infected, unscannable, error FROM scan_counts WHERE transfer_id = $1",
        )
        .bind(transfer.to_string())
        .fetch_optional(self.pool())
        .await?;
        let mut out = BTreeMap::new();
        for k in VERDICT_KINDS {
            let n = match &row {
                Some(r) => r.try_get::<i64, _>(k)?.max(0) as u64,
                None => 0,
            };
            out.insert(k.to_owned(), n);
        }
        Ok(out)
    }

    /// Up to `limit` of the transfer's current verdicts after the cursor `after` (a row's
    /// `seq`; `None` from the start), in the order the scan wrote them. An index range: the
    /// cost of a page does not depend on the pages before it.
    pub async fn verdicts_page(
        &self,
        transfer: TransferId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<VerdictRow>> {
        let rows = sqlx::query(
            "SELECT v.* FROM scan_counts c JOIN scan_verdicts v ON v.transfer_id = c.transfer_id \
             WHERE c.transfer_id = $1 AND v.id >= c.first_seq AND v.id <= c.last_seq \
             AND v.id > $2 ORDER BY v.id LIMIT $3",
        )
        .bind(transfer.to_string())
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(verdict).collect()
    }

    /// Up to `limit` of the transfer's current verdicts of one kind (`unscannable`, say), in
    /// scan order, after the cursor `after`.
    pub async fn verdicts_of_kind(
        &self,
        transfer: TransferId,
        kind: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<VerdictRow>> {
        let rows = sqlx::query(
            "SELECT v.* FROM scan_counts c JOIN scan_verdicts v ON v.transfer_id = c.transfer_id \
             WHERE c.transfer_id = $1 AND v.id >= c.first_seq AND v.id <= c.last_seq \
             AND v.id > $2 AND v.verdict = $3 ORDER BY v.id LIMIT $4",
        )
        .bind(transfer.to_string())
        .bind(after.unwrap_or(0))
        .bind(kind)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(verdict).collect()
    }

    /// Writes one batch of a scan's verdicts in one transaction, above the transfer's current
    /// range (so nobody sees them as the transfer's verdicts yet). Returns the ids given.
    pub async fn insert_verdicts(
        &self,
        transfer: TransferId,
        rows: &[VerdictRow],
    ) -> Result<Option<(i64, i64)>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let mut tx = self.begin().await?;
        let span = tx.insert_verdict_rows(transfer, rows).await?;
        tx.commit().await?;
        Ok(span)
    }

    /// Deletes the transfer's verdict rows that are not its current ones (a superseded scan,
    /// or one a crash cut short), `PRUNE_BATCH` rows per statement so no delete holds the
    /// write lock for long. Returns how many went.
    pub async fn prune_verdicts(&self, transfer: TransferId) -> Result<u64> {
        let range: Option<(i64, i64)> =
            sqlx::query_as("SELECT first_seq, last_seq FROM scan_counts WHERE transfer_id = $1")
                .bind(transfer.to_string())
                .fetch_optional(self.pool())
                .await?;
        // Below the current range (older scans) and above it (a newer one that did not
        // count): each an index range of the transfer's rows, never a walk past the current ones.
        let (below, above) = range.unwrap_or((i64::MAX, i64::MAX));
        let mut gone = 0;
        for (sql, bound) in [
            (
                "DELETE FROM scan_verdicts WHERE id IN (SELECT id FROM scan_verdicts \
                 WHERE transfer_id = $1 AND id < $2 LIMIT $3)",
                below,
            ),
            (
                "DELETE FROM scan_verdicts WHERE id IN (SELECT id FROM scan_verdicts \
                 WHERE transfer_id = $1 AND id > $2 LIMIT $3)",
                above,
            ),
        ] {
            loop {
                let n = sqlx::query(sql)
                    .bind(transfer.to_string())
                    .bind(bound)
                    .bind(PRUNE_BATCH)
                    .execute(self.pool())
                    .await?
                    .rows_affected();
                gone += n;
                if n < PRUNE_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(gone)
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
    /// Makes a finished scan's rows (written by [`Store::insert_verdicts`]) the transfer's
    /// verdicts, with their counts and the database versions they were given by. The rows
    /// they replace are pruned afterwards ([`Store::prune_verdicts`]).
    pub async fn switch_verdicts(&mut self, transfer: TransferId, scan: &ScanTally) -> Result<()> {
        let (first, last) = scan.span.unwrap_or((1, 0));
        let c = |k: &str| scan.counts.get(k).copied().unwrap_or(0) as i64;
        sqlx::query(
            "INSERT INTO scan_counts (transfer_id, first_seq, last_seq, clean, infected, \
             unscannable, error) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT(transfer_id) DO UPDATE SET first_seq = $2, last_seq = $3, clean = $4, \
             infected = $5, unscannable = $6, error = $7",
        )
        .bind(transfer.to_string())
        .bind(first)
        .bind(last)
        .bind(c("clean"))
        .bind(c("infected"))
        .bind(c("unscannable"))
        .bind(c("error"))
        .execute(&mut *self.tx)
        .await?;
        sqlx::query("DELETE FROM scan_databases WHERE transfer_id = $1")
            .bind(transfer.to_string())
            .execute(&mut *self.tx)
            .await?;
        for (scanner, db) in &scan.databases {
            sqlx::query(
                "INSERT INTO scan_databases (transfer_id, scanner, db_version) VALUES ($1, $2, $3)",
            )
            .bind(transfer.to_string())
            .bind(scanner)
            .bind(db)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Inserts `rows` a few hundred per statement (11 values each, well under SQLite's limit of
    /// bound values): one round trip to the database thread per batch, not per row. Returns
    /// the span of the ids given.
    async fn insert_verdict_rows(
        &mut self,
        transfer: TransferId,
        rows: &[VerdictRow],
    ) -> Result<Option<(i64, i64)>> {
        let mut span = None;
        let tid = transfer.to_string();
        for chunk in rows.chunks(VERDICTS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO scan_verdicts (transfer_id, file_id, path, member, scanner, verdict, \
                 detail, sha256, scanner_version, db_version, scanned_at){} RETURNING id",
                super::values_list(chunk.len(), 11)
            );
            let mut q = sqlx::query_scalar(&sql);
            for v in chunk {
                q = q
                    .bind(&tid)
                    .bind(v.file_id.to_string())
                    .bind(&v.path)
                    .bind(&v.member)
                    .bind(&v.scanner)
                    .bind(&v.verdict)
                    .bind(&v.detail)
                    .bind(&v.sha256)
                    .bind(&v.scanner_version)
                    .bind(&v.db_version)
                    .bind(&v.scanned_at);
            }
            let ids: Vec<i64> = q.fetch_all(&mut *self.tx).await?;
            if ids.len() != chunk.len() {
                return Err(StoreError::Corrupt {
                    table: "scan_verdicts",
                    message: format!("{} rows inserted, {} ids returned", chunk.len(), ids.len()),
                });
            }
            if let (Some(&lo), Some(&hi)) = (ids.iter().min(), ids.iter().max()) {
                span = widen(span, (lo, hi));
            }
        }
        Ok(span)
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
             attempts = scan_jobs.attempts + 1, retry_at = $2, last_error = $3",
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
