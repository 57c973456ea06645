//! tus uploads of tar archives waiting to be expanded (`workflow::archive_upload`): their rows
//! and stored pieces, apart from `files`, so they are never listed, counted or sealed.

use super::{now, parse, FileConflict, PackRef, Result, Store, StoreError, Tx, SAME_KEY_SQL};
use crate::domain::{FileId, RelPath, TransferId};
use sqlx::Row;
use std::collections::{BTreeSet, HashMap};

/// A complete member of an accepted archive, for [`Tx::insert_members`].
#[derive(Debug, Clone)]
pub struct MemberRow {
    pub id: FileId,
    pub path: RelPath,
    pub size: u64,
    pub sha256: String,
    pub blake3: String,
    pub expected_sha256: Option<String>,
    /// In the archive's pack; `None`: stored as its own segment 0 (a large member).
    pub pack: Option<PackRef>,
}

/// Files whose key is any of a JSON list of keys: one index lookup per key (the list is
/// scanned, never the transfer's files).
pub(super) const KEYS_TAKEN_SQL: &str = "SELECT j.value AS k, f.path FROM json_each($2) j \
     CROSS JOIN files f ON f.transfer_id = $1 AND f.collision_key = j.value LIMIT 1";
/// A file under any of a JSON list of keys (`key/...`): one index range per key.
pub(super) const KEYS_UNDER_SQL: &str = "SELECT j.value AS k, f.path FROM json_each($2) j \
     CROSS JOIN files f ON f.transfer_id = $1 AND f.collision_key >= j.value || '/' \
     AND f.collision_key < j.value || '0' LIMIT 1";
/// The same on PostgreSQL, whose planner joins the range above as a nested loop filtering
/// every file of the transfer for every key (quadratic in a growing transfer): a LATERAL
/// subquery is one index range per key, as SQLite's plan is.
pub(super) const KEYS_UNDER_PG_SQL: &str = "SELECT j.value AS k, f.path FROM json_each($2) j, \
     LATERAL (SELECT path FROM files WHERE transfer_id = $1 AND collision_key >= j.value || '/' \
     AND collision_key < j.value || '0' LIMIT 1) f LIMIT 1";

/// The statement a batch's folder check runs on `backend`, as it is sent (for the store's
/// conformance suite, which has PostgreSQL plan it).
#[doc(hidden)]
pub fn keys_under_sql(backend: super::Backend) -> String {
    match backend {
        super::Backend::Sqlite => KEYS_UNDER_SQL.to_owned(),
        super::Backend::Postgres => backend.sql(KEYS_UNDER_PG_SQL).into_owned(),
    }
}

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

fn from_row(r: &sqlx::any::AnyRow) -> Result<ArchiveUploadRow> {
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
    /// Whether a pack was accepted (at start, a spooled pack without a row is removed).
    pub async fn pack_exists(&self, id: FileId) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM packs WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }

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

/// A file-and-folder conflict between member `i` and the file `other`, named by its later
/// member (as one-by-one inserts would find it): `other` itself when it is a later member of
/// the batch.
fn later_of(members: &[MemberRow], i: usize, other: String) -> (usize, FileConflict) {
    match members.iter().position(|m| m.path.as_str() == other) {
        Some(j) if j > i => (j, FileConflict::FileFolder(members[i].path.to_string())),
        _ => (i, FileConflict::FileFolder(other)),
    }
}

impl Tx<'_> {
    /// Inserts complete archive members in a few statements, whatever their number: one
    /// multi-row insert of their files and one of their segments, then one indexed lookup of
    /// every folder they imply and one of every path they take. The checks run after the
    /// insert, so they see the existing files, earlier batches and this one alike. On a
    /// conflict nothing more is inserted and the caller rolls back; the index of the member
    /// named in the conflict comes with it.
    pub async fn insert_members(
        &mut self,
        transfer: TransferId,
        members: &[MemberRow],
    ) -> Result<std::result::Result<(), (usize, FileConflict)>> {
        if members.is_empty() {
            return Ok(Ok(()));
        }
        let tid = transfer.to_string();
        let at = now();
        let keys: Vec<String> = members.iter().map(|m| m.path.collision_key()).collect();
        let sql = format!(
            "INSERT INTO files (id, transfer_id, path, collision_key, length, received, complete, \
             sha256, blake3, expected_sha256, created_at, completed_at, pack, pack_offset){}",
            super::values_list(members.len(), 14)
        );
        let mut files = sqlx::query(&sql);
        for (m, key) in members.iter().zip(&keys) {
            files = files
                .bind(m.id.to_string())
                .bind(&tid)
                .bind(m.path.as_str())
                .bind(key)
                .bind(m.size as i64)
                .bind(m.size as i64)
                .bind(1i64)
                .bind(&m.sha256)
                .bind(&m.blake3)
                .bind(&m.expected_sha256)
                .bind(&at)
                .bind(&at)
                .bind(m.pack.map(|p| p.id.to_string()))
                .bind(m.pack.map(|p| p.offset as i64));
        }
        // PostgreSQL aborts the whole transaction on an error; a savepoint undoes only this
        // statement, as SQLite does by itself, so the transaction can go on to find the name.
        let pg = self.backend == super::Backend::Postgres;
        if pg {
            sqlx::query("SAVEPOINT members")
                .execute(&mut *self.tx)
                .await?;
        }
        match files.execute(&mut *self.tx).await {
            Ok(_) => {
                if pg {
                    sqlx::query("RELEASE SAVEPOINT members")
                        .execute(&mut *self.tx)
                        .await?;
                }
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                if pg {
                    sqlx::query("ROLLBACK TO SAVEPOINT members")
                        .execute(&mut *self.tx)
                        .await?;
                }
                return self.name_taken(&tid, members, &keys).await;
            }
            Err(e) => return Err(e.into()),
        }
        let own: Vec<&MemberRow> = members.iter().filter(|m| m.pack.is_none()).collect();
        if !own.is_empty() {
            let sql = format!(
                "INSERT INTO segments (file_id, seq, size){}",
                super::values_list(own.len(), 3)
            );
            let mut segs = sqlx::query(&sql);
            for m in own {
                segs = segs.bind(m.id.to_string()).bind(0i64).bind(m.size as i64);
            }
            segs.execute(&mut *self.tx).await?;
        }
        // A folder of a member is a file (existing, or a member).
        let parents: BTreeSet<String> = members.iter().flat_map(|m| m.path.parent_keys()).collect();
        if let Some((k, other)) = self.first_hit(KEYS_TAKEN_SQL, &tid, parents).await? {
            let i = members
                .iter()
                .position(|m| m.path.parent_keys().contains(&k))
                .unwrap_or(0);
            return Ok(Err(later_of(members, i, other)));
        }
        // A member is a folder of a file (existing, or a member).
        let under = keys_under_sql(self.backend);
        if let Some((k, other)) = self.first_hit(&under, &tid, keys.iter()).await? {
            let i = keys.iter().position(|x| *x == k).unwrap_or(0);
            return Ok(Err(later_of(members, i, other)));
        }
        Ok(Ok(()))
    }

    async fn first_hit<T: serde::Serialize>(
        &mut self,
        sql: &str,
        tid: &str,
        keys: impl IntoIterator<Item = T>,
    ) -> Result<Option<(String, String)>> {
        let list: Vec<T> = keys.into_iter().collect();
        if list.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query(&self.backend.sql(sql))
            .bind(tid)
            .bind(serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()))
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| Ok((r.try_get("k")?, r.try_get("path")?)))
            .transpose()
    }

    /// After a unique violation (the statement was undone, nothing of it kept): the first
    /// member whose key an existing file or an earlier member of the batch already has.
    async fn name_taken(
        &mut self,
        tid: &str,
        members: &[MemberRow],
        keys: &[String],
    ) -> Result<std::result::Result<(), (usize, FileConflict)>> {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (i, (m, key)) in members.iter().zip(keys).enumerate() {
            if let Some(other) = seen.get(key.as_str()) {
                return Ok(Err((i, FileConflict::SameName((*other).to_owned()))));
            }
            if let Some(r) = sqlx::query(SAME_KEY_SQL)
                .bind(tid)
                .bind(key)
                .fetch_optional(&mut *self.tx)
                .await?
            {
                return Ok(Err((i, FileConflict::SameName(r.try_get("path")?))));
            }
            seen.insert(key, m.path.as_str());
        }
        Err(StoreError::Corrupt {
            table: "files",
            message: "a unique violation that no member's name explains".into(),
        })
    }

    /// Records an accepted archive's pack of `members` members (so re-verification expects
    /// its object).
    pub async fn insert_pack(
        &mut self,
        id: FileId,
        transfer: TransferId,
        size: u64,
        members: u64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO packs (id, transfer_id, size, members) VALUES ($1, $2, $3, $4)")
            .bind(id.to_string())
            .bind(transfer.to_string())
            .bind(size as i64)
            .bind(members as i64)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

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
