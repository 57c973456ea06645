//! S3 multipart uploads in progress (`volumes::tracked`), in the `s3_uploads` table: recorded
//! before the first part, forgotten once completed or aborted, and swept when left behind.

use super::{Result, Store};
use sqlx::Row;

/// One multipart upload recorded as in progress.
#[derive(Debug, Clone)]
pub struct S3Upload {
    pub upload_id: String,
    pub volume: String,
    pub object_key: String,
    pub touched_at: i64,
}

impl Store {
    /// Records a multipart upload just created on `volume` for `key`.
    pub async fn upload_started(&self, volume: &str, key: &str, upload_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO s3_uploads (upload_id, volume, object_key, touched_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(upload_id)
        .bind(volume)
        .bind(key)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Notes that an upload is still being written.
    pub async fn upload_touched(&self, upload_id: &str) -> Result<()> {
        sqlx::query("UPDATE s3_uploads SET touched_at = $1 WHERE upload_id = $2")
            .bind(chrono::Utc::now().timestamp_millis())
            .bind(upload_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets an upload that was completed or aborted.
    pub async fn upload_ended(&self, upload_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM s3_uploads WHERE upload_id = $1")
            .bind(upload_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Uploads untouched since `before` (Unix ms), oldest first, at most `limit`.
    pub async fn stale_uploads(&self, before: i64, limit: i64) -> Result<Vec<S3Upload>> {
        let rows = sqlx::query(
            "SELECT upload_id, volume, object_key, touched_at FROM s3_uploads \
             WHERE touched_at < $1 ORDER BY touched_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(S3Upload {
                    upload_id: r.try_get(0)?,
                    volume: r.try_get(1)?,
                    object_key: r.try_get(2)?,
                    touched_at: r.try_get(3)?,
                })
            })
            .collect()
    }
}
