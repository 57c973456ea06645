//! The email outbox: one message per audit event and person, fed from the audit log
//! (`notify::email`), with its attempts.

use super::{now, Result, Store, Tx};
use sqlx::Row;

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub id: String,
    pub audit_seq: i64,
    pub event: String,
    pub transfer_id: Option<String>,
    /// The user name.
    pub recipient: String,
    pub address: String,
    pub subject: String,
    pub body: String,
}

/// One queued message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MailRow {
    pub id: String,
    pub audit_seq: i64,
    pub event: String,
    pub transfer_id: Option<String>,
    pub recipient: String,
    pub address: String,
    pub subject: String,
    #[serde(skip)]
    pub body: String,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

fn mail(r: &sqlx::any::AnyRow) -> Result<MailRow> {
    Ok(MailRow {
        id: r.try_get("id")?,
        audit_seq: r.try_get("audit_seq")?,
        event: r.try_get("event")?,
        transfer_id: r.try_get("transfer_id")?,
        recipient: r.try_get("recipient")?,
        address: r.try_get("address")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

impl Store {
    /// The last audit seq looked at for email; `None` before the first time.
    pub async fn mail_cursor(&self) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM mail_cursor WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Pending messages due by `now` (Unix ms), oldest event first.
    pub async fn due_mail(&self, now: i64, limit: i64) -> Result<Vec<MailRow>> {
        let rows = sqlx::query(
            "SELECT * FROM mail_outbox WHERE state = 'pending' AND next_attempt_at <= $1 \
             ORDER BY audit_seq, recipient LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(mail).collect()
    }

    /// Every message, newest event first, optionally in one state.
    pub async fn mail_outbox(&self, state: Option<&str>) -> Result<Vec<MailRow>> {
        let rows = sqlx::query(
            "SELECT * FROM mail_outbox WHERE ($1 IS NULL OR state = $1) \
             ORDER BY audit_seq DESC, recipient",
        )
        .bind(state)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(mail).collect()
    }

    /// Takes a due message for sending until `lease_until` (Unix ms): false if another sender
    /// (another replica) took it first. A sender that dies holding it leaves it due again
    /// when the lease ends.
    pub async fn claim_mail(&self, id: &str, now: i64, lease_until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE mail_outbox SET next_attempt_at = $3 \
             WHERE id = $1 AND state = 'pending' AND next_attempt_at <= $2",
        )
        .bind(id)
        .bind(now)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an attempt: `sent`, `failed` (given up), or `pending` again at `next`.
    pub async fn record_mail_attempt(
        &self,
        id: &str,
        state: &str,
        error: Option<&str>,
        next: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE mail_outbox SET state = $2, attempts = attempts + 1, last_error = $3, \
             next_attempt_at = $4, sent_at = CASE WHEN $2 = 'sent' THEN $5 ELSE sent_at END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(error)
        .bind(next)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Tx<'_> {
    /// Moves the email cursor from `from` (`None`: never set) to `to`; false if someone else
    /// moved it meanwhile (another replica queued these events).
    pub async fn advance_mail_cursor(&mut self, from: Option<i64>, to: i64) -> Result<bool> {
        let done =
            match from {
                None => sqlx::query(
                    "INSERT INTO mail_cursor (id, seq) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                )
                .bind(to)
                .execute(&mut *self.tx)
                .await?,
                Some(from) => {
                    sqlx::query("UPDATE mail_cursor SET seq = $2 WHERE id = 1 AND seq = $1")
                        .bind(from)
                        .bind(to)
                        .execute(&mut *self.tx)
                        .await?
                }
            };
        Ok(done.rows_affected() == 1)
    }

    /// Queues a message; false if this event already has one for this person.
    pub async fn insert_mail(&mut self, m: &NewMail) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO mail_outbox (id, audit_seq, event, transfer_id, recipient, address, \
             subject, body, state, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, 0, $9) \
             ON CONFLICT (audit_seq, recipient) DO NOTHING",
        )
        .bind(&m.id)
        .bind(m.audit_seq)
        .bind(&m.event)
        .bind(&m.transfer_id)
        .bind(&m.recipient)
        .bind(&m.address)
        .bind(&m.subject)
        .bind(&m.body)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
