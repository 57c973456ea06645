//! Egress tables: requests (context, target, round), the researcher's chosen items and
//! recipients, each pinned file's role, output checkers' votes and reviews, disclosure findings
//! and their acknowledgments, recipients' collection tokens and every collection.

use super::{now, parse, Result, Store, Tx};
use crate::domain::*;
use sqlx::Row;

/// What only an egress request has, beside its transfer row.
#[derive(Debug, Clone)]
pub struct EgressRow {
    pub context: String,
    pub target_workspace_id: Option<WorkspaceId>,
    /// 0 while a first draft; 1 from the first submit, one more at each resubmit.
    pub round: i64,
}

/// A pinned file's role, and its size and modification time in the output volume at submit.
#[derive(Debug, Clone)]
pub struct PinnedRow {
    pub path: String,
    pub role: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// The object's entity tag, when the output volume is on S3 (`volumes::output`).
    pub etag: Option<String>,
}

#[derive(Debug, Clone)]
pub struct VoteRow {
    pub user_id: UserId,
    pub user: String,
    pub role: Role,
    pub path: String,
    pub vote: String,
    pub comment: String,
    pub visibility: String,
    pub at: String,
}

#[derive(Debug, Clone)]
pub struct ReviewRow {
    pub user_id: UserId,
    pub user: String,
    pub role: Role,
    pub outcome: String,
    pub comment: String,
    pub visibility: String,
    pub at: String,
}

#[derive(Debug, Clone)]
pub struct FindingRow {
    pub id: String,
    pub path: String,
    pub rule: String,
    pub status: String,
    /// The location as JSON (`{"kind": "cell", "row": 3, "col": 2}`).
    pub location: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct AckRow {
    pub finding_id: String,
    pub user_id: UserId,
    pub user: String,
    pub role: Role,
    pub comment: String,
    pub at: String,
}

#[derive(Debug, Clone)]
pub struct CollectionTokenRow {
    pub id: TokenId,
    pub transfer_id: TransferId,
    pub recipient_id: UserId,
    pub recipient: String,
    pub root_digest: String,
    pub issued_by: String,
    pub issued_at: String,
    pub expires_at: i64,
    pub cidrs: Vec<ipnet::IpNet>,
    pub max_downloads: Option<i64>,
    pub downloads: i64,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CollectionRow {
    pub token_id: String,
    pub recipient: String,
    pub client: String,
    pub what: String,
    pub bytes: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
}

fn token_from_row(r: &sqlx::any::AnyRow) -> Result<CollectionTokenRow> {
    let t = "collection_tokens";
    let cidrs: String = r.try_get("cidrs")?;
    Ok(CollectionTokenRow {
        id: parse(t, r.try_get("id")?)?,
        transfer_id: parse(t, r.try_get("transfer_id")?)?,
        recipient_id: parse(t, r.try_get("recipient_id")?)?,
        recipient: r.try_get("recipient")?,
        root_digest: r.try_get("root_digest")?,
        issued_by: r.try_get("issuer")?,
        issued_at: r.try_get("issued_at")?,
        expires_at: r.try_get("expires_at")?,
        cidrs: cidrs
            .split(',')
            .filter(|c| !c.is_empty())
            .map(|c| parse(t, c))
            .collect::<Result<_>>()?,
        max_downloads: r.try_get("max_downloads")?,
        downloads: r.try_get("downloads")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

const TOKEN_SQL: &str = "SELECT c.*, u.name AS recipient, i.name AS issuer \
     FROM collection_tokens c JOIN users u ON u.id = c.recipient_id \
     JOIN users i ON i.id = c.issued_by";

impl Store {
    /// The output volume folder a workspace names instead of the default, if any.
    pub async fn workspace_output(&self, ws: WorkspaceId) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT dir FROM workspace_output WHERE workspace_id = $1")
                .bind(ws.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("dir"))
                .transpose()?,
        )
    }

    pub async fn egress(&self, transfer: TransferId) -> Result<Option<EgressRow>> {
        let row = sqlx::query(
            "SELECT context, target_workspace_id, round FROM egress_requests WHERE transfer_id = $1",
        )
        .bind(transfer.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(EgressRow {
                context: r.try_get("context")?,
                target_workspace_id: r
                    .try_get::<Option<String>, _>("target_workspace_id")?
                    .map(|s| parse("egress_requests", &s))
                    .transpose()?,
                round: r.try_get("round")?,
            })
        })
        .transpose()
    }

    /// The chosen files and folders, with their roles, in path order.
    pub async fn egress_items(&self, transfer: TransferId) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT path, role FROM egress_items WHERE transfer_id = $1 ORDER BY path")
                .bind(transfer.to_string())
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("path")?, r.try_get("role")?)))
            .collect()
    }

    pub async fn egress_recipients(&self, transfer: TransferId) -> Result<Vec<(UserId, String)>> {
        let rows = sqlx::query(
            "SELECT u.id, u.name FROM egress_recipients r JOIN users u ON u.id = r.user_id \
             WHERE r.transfer_id = $1 ORDER BY u.name",
        )
        .bind(transfer.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((parse("users", r.try_get("id")?)?, r.try_get("name")?)))
            .collect()
    }

    /// Pinned files with their roles, in path order.
    pub async fn egress_files(&self, transfer: TransferId) -> Result<Vec<PinnedRow>> {
        let rows = sqlx::query(
            "SELECT path, role, size, mtime_ns, etag FROM egress_files WHERE transfer_id = $1 \
             ORDER BY path",
        )
        .bind(transfer.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PinnedRow {
                    path: r.try_get("path")?,
                    role: r.try_get("role")?,
                    size: r.try_get::<i64, _>("size")? as u64,
                    mtime_ns: r.try_get("mtime_ns")?,
                    etag: r.try_get("etag")?,
                })
            })
            .collect()
    }

    pub async fn egress_votes(&self, transfer: TransferId, round: i64) -> Result<Vec<VoteRow>> {
        let rows = sqlx::query(
            "SELECT v.*, u.name FROM egress_votes v JOIN users u ON u.id = v.user_id \
             WHERE v.transfer_id = $1 AND v.round = $2 ORDER BY v.path, u.name",
        )
        .bind(transfer.to_string())
        .bind(round)
        .fetch_all(&self.pool)
        .await?;
        let t = "egress_votes";
        rows.iter()
            .map(|r| {
                Ok(VoteRow {
                    user_id: parse(t, r.try_get("user_id")?)?,
                    user: r.try_get("name")?,
                    role: parse(t, r.try_get("role")?)?,
                    path: r.try_get("path")?,
                    vote: r.try_get("vote")?,
                    comment: r.try_get("comment")?,
                    visibility: r.try_get("visibility")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    pub async fn egress_reviews(&self, transfer: TransferId, round: i64) -> Result<Vec<ReviewRow>> {
        let rows = sqlx::query(
            "SELECT r.*, u.name FROM egress_reviews r JOIN users u ON u.id = r.user_id \
             WHERE r.transfer_id = $1 AND r.round = $2 ORDER BY r.at",
        )
        .bind(transfer.to_string())
        .bind(round)
        .fetch_all(&self.pool)
        .await?;
        let t = "egress_reviews";
        rows.iter()
            .map(|r| {
                Ok(ReviewRow {
                    user_id: parse(t, r.try_get("user_id")?)?,
                    user: r.try_get("name")?,
                    role: parse(t, r.try_get("role")?)?,
                    outcome: r.try_get("outcome")?,
                    comment: r.try_get("comment")?,
                    visibility: r.try_get("visibility")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    pub async fn findings(&self, transfer: TransferId, round: i64) -> Result<Vec<FindingRow>> {
        let rows = sqlx::query(
            "SELECT * FROM disclosure_findings WHERE transfer_id = $1 AND round = $2 \
             ORDER BY path, id",
        )
        .bind(transfer.to_string())
        .bind(round)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FindingRow {
                    id: r.try_get("id")?,
                    path: r.try_get("path")?,
                    rule: r.try_get("rule")?,
                    status: r.try_get("status")?,
                    location: r.try_get("location")?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    pub async fn finding_acks(&self, transfer: TransferId, round: i64) -> Result<Vec<AckRow>> {
        let rows = sqlx::query(
            "SELECT a.*, u.name FROM finding_acks a JOIN users u ON u.id = a.user_id \
             JOIN disclosure_findings f ON f.transfer_id = a.transfer_id AND f.id = a.finding_id \
             WHERE f.transfer_id = $1 AND f.round = $2 ORDER BY a.at",
        )
        .bind(transfer.to_string())
        .bind(round)
        .fetch_all(&self.pool)
        .await?;
        let t = "finding_acks";
        rows.iter()
            .map(|r| {
                Ok(AckRow {
                    finding_id: r.try_get("finding_id")?,
                    user_id: parse(t, r.try_get("user_id")?)?,
                    user: r.try_get("name")?,
                    role: parse(t, r.try_get("role")?)?,
                    comment: r.try_get("comment")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Each file's disclosure report of a round: `(path, report JSON)`, in path order.
    pub async fn disclosure_reports(
        &self,
        transfer: TransferId,
        round: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT path, report FROM disclosure_reports WHERE transfer_id = $1 AND round = $2 \
             ORDER BY path",
        )
        .bind(transfer.to_string())
        .bind(round)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("path")?, r.try_get("report")?)))
            .collect()
    }

    /// The ACRO folders' reports of a round: `(results.json path, report JSON)`.
    pub async fn acro_reports(
        &self,
        transfer: TransferId,
        round: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT path, report FROM acro_reports WHERE transfer_id = $1 AND round = $2 \
             ORDER BY path",
        )
        .bind(transfer.to_string())
        .bind(round)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("path")?, r.try_get("report")?)))
            .collect()
    }

    pub async fn collection_token(&self, id: TokenId) -> Result<Option<CollectionTokenRow>> {
        sqlx::query(&format!("{TOKEN_SQL} WHERE c.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| token_from_row(&r))
            .transpose()
    }

    pub async fn collection_tokens(&self, transfer: TransferId) -> Result<Vec<CollectionTokenRow>> {
        let rows = sqlx::query(&format!(
            "{TOKEN_SQL} WHERE c.transfer_id = $1 ORDER BY c.issued_at"
        ))
        .bind(transfer.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    pub async fn collections(&self, transfer: TransferId) -> Result<Vec<CollectionRow>> {
        let rows =
            sqlx::query("SELECT * FROM collections WHERE transfer_id = $1 ORDER BY started_at, id")
                .bind(transfer.to_string())
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(CollectionRow {
                    token_id: r.try_get("token_id")?,
                    recipient: r.try_get("recipient")?,
                    client: r.try_get("client")?,
                    what: r.try_get("what")?,
                    bytes: r.try_get("bytes")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                })
            })
            .collect()
    }

    /// Records the end of a collection: the bytes sent.
    pub async fn finish_collection(&self, id: &str, bytes: u64) -> Result<()> {
        sqlx::query("UPDATE collections SET bytes = $2, finished_at = $3 WHERE id = $1")
            .bind(id)
            .bind(bytes as i64)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Tx<'_> {
    pub async fn set_workspace_output(&mut self, ws: WorkspaceId, dir: &str) -> Result<()> {
        sqlx::query("INSERT INTO workspace_output (workspace_id, dir) VALUES ($1, $2)")
            .bind(ws.to_string())
            .bind(dir)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Writes (or rewrites) a draft: its context, target, items and recipients.
    pub async fn put_egress_draft(
        &mut self,
        transfer: TransferId,
        context: &str,
        target: Option<WorkspaceId>,
        items: &[(String, String)],
        recipients: &[UserId],
    ) -> Result<()> {
        let id = transfer.to_string();
        sqlx::query(
            "INSERT INTO egress_requests (transfer_id, context, target_workspace_id) \
             VALUES ($1, $2, $3) ON CONFLICT (transfer_id) DO UPDATE \
             SET context = excluded.context, target_workspace_id = excluded.target_workspace_id",
        )
        .bind(&id)
        .bind(context)
        .bind(target.map(|t| t.to_string()))
        .execute(&mut *self.tx)
        .await?;
        for table in ["egress_items", "egress_recipients"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE transfer_id = $1"))
                .bind(&id)
                .execute(&mut *self.tx)
                .await?;
        }
        for (path, role) in items {
            sqlx::query("INSERT INTO egress_items (transfer_id, path, role) VALUES ($1, $2, $3)")
                .bind(&id)
                .bind(path)
                .bind(role)
                .execute(&mut *self.tx)
                .await?;
        }
        for user in recipients {
            sqlx::query("INSERT INTO egress_recipients (transfer_id, user_id) VALUES ($1, $2)")
                .bind(&id)
                .bind(user.to_string())
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Starts a new round (a submit): returns it. Earlier rounds' votes no longer count.
    pub async fn next_round(&mut self, transfer: TransferId) -> Result<i64> {
        sqlx::query("UPDATE egress_requests SET round = round + 1 WHERE transfer_id = $1")
            .bind(transfer.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(
            sqlx::query("SELECT round FROM egress_requests WHERE transfer_id = $1")
                .bind(transfer.to_string())
                .fetch_one(&mut *self.tx)
                .await?
                .try_get("round")?,
        )
    }

    pub async fn clear_egress_files(&mut self, transfer: TransferId) -> Result<()> {
        sqlx::query("DELETE FROM egress_files WHERE transfer_id = $1")
            .bind(transfer.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn insert_egress_file(&mut self, transfer: TransferId, f: &PinnedRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO egress_files (transfer_id, path, role, size, mtime_ns, etag) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(transfer.to_string())
        .bind(&f.path)
        .bind(&f.role)
        .bind(f.size as i64)
        .bind(f.mtime_ns)
        .bind(&f.etag)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// A checker's vote on one file; a later vote in the same round replaces it.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_vote(
        &mut self,
        transfer: TransferId,
        round: i64,
        user: UserId,
        role: Role,
        path: &str,
        vote: &str,
        comment: &str,
        visibility: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO egress_votes (transfer_id, round, user_id, role, path, vote, comment, \
             visibility, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (transfer_id, round, user_id, path) DO UPDATE SET role = excluded.role, \
             vote = excluded.vote, comment = excluded.comment, visibility = excluded.visibility, \
             at = excluded.at",
        )
        .bind(transfer.to_string())
        .bind(round)
        .bind(user.to_string())
        .bind(role.as_str())
        .bind(path)
        .bind(vote)
        .bind(comment)
        .bind(visibility)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records a submitted review; false if this checker had already submitted this round.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_review(
        &mut self,
        transfer: TransferId,
        round: i64,
        user: UserId,
        role: Role,
        outcome: &str,
        comment: &str,
        visibility: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO egress_reviews (transfer_id, round, user_id, role, outcome, comment, \
             visibility, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(transfer.to_string())
        .bind(round)
        .bind(user.to_string())
        .bind(role.as_str())
        .bind(outcome)
        .bind(comment)
        .bind(visibility)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a round's findings and reports (a rescan writes them again).
    pub async fn clear_findings(&mut self, transfer: TransferId, round: i64) -> Result<()> {
        sqlx::query(
            "DELETE FROM finding_acks WHERE transfer_id = $1 AND finding_id IN \
             (SELECT id FROM disclosure_findings WHERE transfer_id = $1 AND round = $2)",
        )
        .bind(transfer.to_string())
        .bind(round)
        .execute(&mut *self.tx)
        .await?;
        for table in ["disclosure_findings", "disclosure_reports", "acro_reports"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE transfer_id = $1 AND round = $2"
            ))
            .bind(transfer.to_string())
            .bind(round)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    pub async fn insert_acro_report(
        &mut self,
        transfer: TransferId,
        round: i64,
        path: &str,
        report: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO acro_reports (transfer_id, round, path, report) VALUES ($1, $2, $3, $4)",
        )
        .bind(transfer.to_string())
        .bind(round)
        .bind(path)
        .bind(report)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_report(
        &mut self,
        transfer: TransferId,
        round: i64,
        path: &str,
        report: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO disclosure_reports (transfer_id, round, path, report) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(transfer.to_string())
        .bind(round)
        .bind(path)
        .bind(report)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_finding(
        &mut self,
        transfer: TransferId,
        round: i64,
        f: &FindingRow,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO disclosure_findings (id, transfer_id, round, path, rule, status, \
             location, message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&f.id)
        .bind(transfer.to_string())
        .bind(round)
        .bind(&f.path)
        .bind(&f.rule)
        .bind(&f.status)
        .bind(&f.location)
        .bind(&f.message)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// False if this checker had already acknowledged the finding.
    pub async fn insert_ack(
        &mut self,
        transfer: TransferId,
        finding: &str,
        user: UserId,
        role: Role,
        comment: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO finding_acks (transfer_id, finding_id, user_id, role, comment, at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(transfer.to_string())
        .bind(finding)
        .bind(user.to_string())
        .bind(role.as_str())
        .bind(comment)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_collection_token(
        &mut self,
        id: TokenId,
        transfer: TransferId,
        recipient: UserId,
        root_digest: &str,
        issued_by: UserId,
        expires_at: i64,
        cidrs: &[ipnet::IpNet],
        max_downloads: Option<u32>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO collection_tokens (id, transfer_id, recipient_id, root_digest, \
             issued_by, issued_at, expires_at, cidrs, max_downloads) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.to_string())
        .bind(transfer.to_string())
        .bind(recipient.to_string())
        .bind(root_digest)
        .bind(issued_by.to_string())
        .bind(now())
        .bind(expires_at)
        .bind(
            cidrs
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .bind(max_downloads.map(i64::from))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Revokes live collection tokens of a transfer (all of them, or one); returns how many.
    pub async fn revoke_collection_tokens(
        &mut self,
        transfer: TransferId,
        only: Option<TokenId>,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE collection_tokens SET revoked_at = $2 WHERE transfer_id = $1 \
             AND revoked_at IS NULL AND ($3 IS NULL OR id = $3)",
        )
        .bind(transfer.to_string())
        .bind(now())
        .bind(only.map(|t| t.to_string()))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    /// Counts one download against a token's limit. False (counting nothing) if the limit
    /// is used up or the token was revoked meanwhile.
    pub async fn use_download(&mut self, token: TokenId) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE collection_tokens SET downloads = downloads + 1 WHERE id = $1 \
             AND revoked_at IS NULL AND (max_downloads IS NULL OR downloads < max_downloads)",
        )
        .bind(token.to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn start_collection(
        &mut self,
        id: &str,
        token: TokenId,
        transfer: TransferId,
        recipient: &str,
        client: &str,
        what: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO collections (id, token_id, transfer_id, recipient, client, what, \
             started_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(token.to_string())
        .bind(transfer.to_string())
        .bind(recipient)
        .bind(client)
        .bind(what)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
