//! Browser sign-in: one-time login links and server-side sessions (`workflow::sessions` has
//! the rules). Both are kept as SHA-256 hashes of their secrets, never the secrets.

use super::{Result, Store, Tx, User, USER_SELECT};
use crate::domain::UserId;
use sqlx::Row;

/// A live session, with its user as of this request.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user: User,
    pub csrf: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub expires_at: i64,
}

impl Tx<'_> {
    pub async fn insert_login_link(
        &mut self,
        hash: &str,
        user: UserId,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO login_links (hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(user.to_string())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Marks a login link used, once: the user it names when it was unused and unexpired,
    /// `None` otherwise (used before, expired, or never issued).
    pub async fn consume_login_link(&mut self, hash: &str, now: i64) -> Result<Option<UserId>> {
        let row = sqlx::query(
            "UPDATE login_links SET used_at = $2 WHERE hash = $1 AND used_at IS NULL \
             AND expires_at > $2 RETURNING user_id",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| super::parse("login_links", r.try_get("user_id")?))
            .transpose()
    }

    pub async fn insert_session(
        &mut self,
        hash: &str,
        user: UserId,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ui_sessions (hash, user_id, csrf, created_at, last_seen, expires_at) \
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(hash)
        .bind(user.to_string())
        .bind(csrf)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Ends one session; whether it was live.
    pub async fn end_session(&mut self, hash: &str, now: i64, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ui_sessions SET ended_at = $2, ended_reason = $3 \
             WHERE hash = $1 AND ended_at IS NULL",
        )
        .bind(hash)
        .bind(now)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every live session of a user (their staff tokens were revoked, or they were
    /// disabled); how many.
    pub async fn end_user_sessions(&mut self, user: UserId, now: i64, reason: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE ui_sessions SET ended_at = $2, ended_reason = $3 \
             WHERE user_id = $1 AND ended_at IS NULL",
        )
        .bind(user.to_string())
        .bind(now)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }
}

impl Store {
    /// A session that has not ended, with its user: one query per page load.
    pub async fn live_session(&self, hash: &str) -> Result<Option<SessionRow>> {
        let sql = format!(
            "{USER_SELECT}, s.csrf, s.created_at, s.last_seen, s.expires_at \
             FROM ui_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.hash = $1 AND s.ended_at IS NULL"
        );
        let row = sqlx::query(&self.sql(&sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(SessionRow {
                user: Self::user_from_row(&r)?,
                csrf: r.try_get("csrf")?,
                created_at: r.try_get("created_at")?,
                last_seen: r.try_get("last_seen")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Records activity on a session (not audited: it is no change of anything governed).
    pub async fn touch_session(&self, hash: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE ui_sessions SET last_seen = $2 WHERE hash = $1 AND ended_at IS NULL")
            .bind(hash)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
