//! Reads behind the browser's pages: a transfer's manifest one folder level at a time, the
//! transfers a person may be waiting on, and recent audit events.

use super::{file_from_row, parse, AuditRow, FileRow, Result, Store};
use crate::domain::{TransferId, UserId};
use sqlx::Row;

/// One entry of a folder: a sub-folder (its name with a trailing `/`) or a file.
#[derive(Debug, Clone)]
pub enum Entry {
    Folder(String),
    File(FileRow),
}

/// The smallest string greater than every path under `prefix` (`prefix` ends with `/`, and
/// `0` follows `/` in byte order).
fn past(prefix_with_slash: &str) -> String {
    let mut s = prefix_with_slash.to_owned();
    s.pop();
    s.push('0');
    s
}

/// An audit event from a row of `seq, at, actor, action, transfer_id, detail`.
pub(super) fn audit_row(r: &sqlx::any::AnyRow) -> Result<AuditRow> {
    Ok(AuditRow {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        transfer_id: r.try_get("transfer_id")?,
        detail: r.try_get("detail")?,
    })
}

/// Transfers a user may see (`t` transfers, `w` workspaces; `$1` the user, `$2` 1 for a
/// Programme or System Manager).
const VISIBLE: &str = "($2 = 1 OR t.uploader_id = $1 OR t.created_by = $1 \
     OR EXISTS (SELECT 1 FROM project_members m WHERE m.project_id = w.project_id \
                AND m.user_id = $1 AND m.state = 'active') \
     OR EXISTS (SELECT 1 FROM referee_assignments r WHERE r.transfer_id = t.id \
                AND r.user_id = $1))";

impl Store {
    /// The entries of folder `dir` (`""` for the top, else ending with `/`) after `after` (an
    /// entry name as returned), at most `limit`, in byte order. Each entry costs one index
    /// search, however many files lie below it: a folder of 100,000 files is one entry.
    pub async fn folder_page(
        &self,
        transfer: TransferId,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool)> {
        let id = transfer.to_string();
        let end = if dir.is_empty() {
            None
        } else {
            Some(past(dir))
        };
        // The next path to look past: after the last entry shown (past a whole folder).
        let mut from = match after {
            Some(a) if a.ends_with('/') => past(&format!("{dir}{a}")),
            Some(a) => format!("{dir}{a}"),
            None => dir.to_owned(),
        };
        let mut inclusive = matches!(after, Some(a) if a.ends_with('/'));
        let mut out = Vec::new();
        loop {
            let op = if inclusive { ">=" } else { ">" };
            let sql = format!(
                "SELECT * FROM files WHERE transfer_id = $1 AND path {op} $2 \
                 AND ($3 IS NULL OR path < $3) ORDER BY path LIMIT 1"
            );
            let row = sqlx::query(&sql)
                .bind(&id)
                .bind(&from)
                .bind(end.as_deref())
                .fetch_optional(&self.pool)
                .await?;
            let Some(row) = row else {
                return Ok((out, false));
            };
            if out.len() == limit {
                return Ok((out, true));
            }
            let f = file_from_row(&row)?;
            let rest = f.path.get(dir.len()..).unwrap_or("").to_owned();
            match rest.find('/') {
                Some(i) => {
                    let folder = rest[..=i].to_owned();
                    from = past(&format!("{dir}{folder}"));
                    inclusive = true;
                    out.push(Entry::Folder(folder));
                }
                None => {
                    from = f.path.clone();
                    inclusive = false;
                    out.push(Entry::File(f));
                }
            }
        }
    }

    /// Transfers still in motion that `user` may see, most recently changed first.
    pub async fn inbox_transfers(
        &self,
        user: UserId,
        overseer: bool,
        limit: i64,
    ) -> Result<Vec<TransferId>> {
        let sql = format!(
            "SELECT t.id FROM transfers t JOIN workspaces w ON w.id = t.workspace_id \
             WHERE t.state IN ('open', 'sealed', 'scanning', 'scan_error', 'in_review', \
             'approved', 'returned', 'blocked') AND {VISIBLE} \
             ORDER BY t.updated_at DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(user.to_string())
            .bind(overseer as i64)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| parse("transfers", r.try_get("id")?))
            .collect()
    }

    /// The latest audit events about transfers `user` may see, newest first.
    pub async fn recent_activity(
        &self,
        user: UserId,
        overseer: bool,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        let sql = format!(
            "SELECT a.seq, a.at, a.actor, a.action, a.transfer_id, a.detail \
             FROM audit_events a JOIN transfers t ON t.id = a.transfer_id \
             JOIN workspaces w ON w.id = t.workspace_id \
             WHERE {VISIBLE} ORDER BY a.seq DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(user.to_string())
            .bind(overseer as i64)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }

    /// A transfer's audit events, newest first, before `before` (a seq), at most `limit`.
    pub async fn transfer_history(
        &self,
        transfer: TransferId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, transfer_id, detail FROM audit_events \
             WHERE transfer_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(transfer.to_string())
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_row).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn past_a_folder_is_just_beyond_everything_in_it() {
        let p = super::past("a/b/");
        assert!(p.as_str() > "a/b/zzzz" && p.as_str() > "a/b/\u{10ffff}");
        assert!(p.as_str() < "a/b0" || p == "a/b0");
        assert!("a/b.txt" < "a/b/");
    }
}
