//! tus uploads of tar archives waiting to be expanded (`workflow::archive_upload`): their rows
//! and stored pieces, apart from `files`, so they are never listed, counted or sealed.

use super::{parse, Result, Store, StoreError, Tx};
use crate::domain::{FileId, TransferId};
use sqlx::Row;

/// A tus archive upload in progress.
#[derive(Debug, Clone)]
pub struct ArchiveUploadRow {
    pub id: FileId,
    pub transfer_id: TransferId,
    /// Folder its members go under, if the client asked for one.
    pub prefix: Option<String>,
    /// `Upload-Length`.
    pub length: u64,
    /// Bytes durably stored and recorded.
    pub received: u64,
    pub created_at: String,
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ArchiveUploadRow> {
    let t = "archive_uploads";
    Ok(ArchiveUploadRow {
        id: parse(t, r.try_get("id")?)?,
        transfer_id: parse(t, r.try_get("transfer_id")?)?,
        prefix: r.try_get("prefix")?,
        length: r.try_get::<i64, _>("length")?.max(0) as u64,
        received: r.try_get::<i64, _>("received")?.max(0) as u64,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    pub async fn archive_upload(&self, id: FileId) -> Result<Option<ArchiveUploadRow>> {
        let row = sqlx::query("SELECT * FROM archive_uploads WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The sizes of an archive upload's recorded pieces, in order.
    pub async fn archive_segments(&self, id: FileId) -> Result<Vec<u64>> {
        sqlx::query("SELECT size FROM archive_segments WHERE archive_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<i64, _>("size")?.max(0) as u64))
            .collect()
    }
}

impl Tx<'_> {
    pub async fn insert_archive_upload(&mut self, a: &ArchiveUploadRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO archive_uploads (id, transfer_id, prefix, length, received, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(a.id.to_string())
        .bind(a.transfer_id.to_string())
        .bind(&a.prefix)
        .bind(a.length as i64)
        .bind(&a.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// How many archive uploads of the transfer are waiting (indexed).
    pub async fn archive_uploads_waiting(&mut self, transfer: TransferId) -> Result<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM archive_uploads WHERE transfer_id = $1")
                .bind(transfer.to_string())
                .fetch_one(&mut *self.tx)
                .await?;
        Ok(n.max(0) as u64)
    }

    /// Records a new piece of an archive upload, or (`carried > 0`) that its last piece was
    /// rewritten `added` bytes longer.
    pub async fn record_archive_piece(
        &mut self,
        id: FileId,
        seq: u64,
        carried: u64,
        added: u64,
    ) -> Result<()> {
        let done = if carried > 0 {
            sqlx::query(
                "UPDATE archive_segments SET size = size + $3 WHERE archive_id = $1 AND seq = $2",
            )
        } else {
            sqlx::query("INSERT INTO archive_segments (archive_id, seq, size) VALUES ($1, $2, $3)")
        }
        .bind(id.to_string())
        .bind(seq as i64)
        .bind(added as i64)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Corrupt {
                table: "archive_segments",
                message: format!("archive upload {id} has no segment {seq} to grow"),
            });
        }
        sqlx::query("UPDATE archive_uploads SET received = received + $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(added as i64)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Drops an archive upload and its pieces' rows (accepted, refused or terminated).
    pub async fn delete_archive_upload(&mut self, id: FileId) -> Result<()> {
        sqlx::query("DELETE FROM archive_segments WHERE archive_id = $1")
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("DELETE FROM archive_uploads WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
