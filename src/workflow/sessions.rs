//! Browser sign-in for staff: one-time login links and server-side sessions.
//!
//! A login link carries 32 random bytes in its URL fragment (`/ui/login#SECRET`): fragments
//! never reach a server's log or a `Referer`. It is consumed by a POST of the page it opens,
//! never by a GET, so a mail scanner prefetching the link consumes nothing. It lives
//! `[ui] login_link_ttl` (10 minutes) and works once.
//!
//! A session is a row keyed by the SHA-256 of a random id the browser holds in a `__Host-`
//! cookie; the database never holds the id itself. It ends after `[ui] session_idle` without a
//! request, `[ui] session_max` after sign-in, at sign-out, and when the user's staff tokens are
//! all revoked or the user is disabled (`membership`). Each session has its own synchronizer
//! token, which every form posts back.
//!
//! The seam for single sign-on: whatever proves who someone is (a login link today; an OIDC
//! authorization-code callback with PKCE later) ends in [`start_session`] with the user it
//! proved. Nothing else about sessions depends on how the user got there.

use super::access::Principal;
use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::store::User;
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Sessions are touched (their idle clock reset) at most this often: a page load is a read.
const TOUCH_EVERY: i64 = 60;

/// A login link, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginLink {
    /// `BASE/ui/login#SECRET`: open it in a browser and press Sign in.
    pub url: String,
    pub user: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A session just started: the cookie value (shown to the browser only) and its lifetime.
pub struct NewSession {
    pub id: String,
    pub max_age: u64,
}

/// A live session on a request.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    /// The synchronizer token every form of this session posts back.
    pub csrf: String,
    hash: String,
}

impl Session {
    pub fn principal(&self) -> Principal {
        Principal::Staff(self.user.clone())
    }
}

fn secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Compares two synchronizer tokens without an early exit on the first difference.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Mints a login link for `user`, audited as done by `actor`.
async fn mint(app: &App, actor: &str, user: &User) -> Result<LoginLink> {
    if user.disabled {
        return Err(Error::Conflict(format!(
            "{} is disabled: no login link is made for them",
            user.name
        )));
    }
    let s = secret();
    let now = now();
    let expires_at = now + app.settings.ui.login_link_ttl.as_secs() as i64;
    let mut tx = app.store.begin().await?;
    tx.insert_login_link(&hash(&s), user.id, now, expires_at)
        .await?;
    tx.audit(
        AuditEvent::new(actor, "ui.login_link_issued")
            .detail(serde_json::json!({ "user": user.name, "expires_at": expires_at })),
    )
    .await?;
    tx.commit().await?;
    let base = app.settings.ui.base_url(app.settings.server.listen);
    Ok(LoginLink {
        url: format!("{base}/ui/login#{s}"),
        user: user.name.clone(),
        expires_at,
    })
}

/// `airlock admin login-link USER`: on the server, for anyone.
pub async fn admin_login_link(app: &App, user: &str) -> Result<LoginLink> {
    let u = app
        .store
        .user_by_name(user)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user {user}")))?;
    mint(app, "admin-cli", &u).await
}

/// `POST /api/v1/login-links`: a staff token's holder gets a link for themselves (`airlock
/// ui`), never for anyone else.
pub async fn own_login_link(app: &App, who: &Principal) -> Result<LoginLink> {
    let user = who.staff()?;
    mint(app, &who.actor(), user).await
}

/// Consumes a login link and starts a session. A link used before, expired, never issued or
/// for a user disabled since gets the same refusal. A client that keeps being refused is
/// throttled (429) like one with bad tokens, before anything is looked up.
pub async fn sign_in(app: &App, secret: &str, client: std::net::IpAddr) -> Result<NewSession> {
    if let Err(retry_after) = app.refusal_throttle.check(client, None) {
        return Err(Error::TooManyRequests {
            message: format!("too many refused sign-ins from {client}; retry in {retry_after} s"),
            retry_after,
        });
    }
    let result = consume(app, secret).await;
    if let Err(Error::Unauthenticated(_)) = &result {
        app.refusal_throttle.refused(client, None);
    }
    result
}

async fn consume(app: &App, secret: &str) -> Result<NewSession> {
    let refused = || {
        Error::Unauthenticated(
            "this login link is not valid: it was used before, it has expired (links live 10 \
             minutes), or it was never issued. Ask for a new one."
                .into(),
        )
    };
    let secret = secret.trim();
    if secret.is_empty() || secret.len() > 128 {
        return Err(refused());
    }
    let mut tx = app.store.begin().await?;
    let Some(user_id) = tx.consume_login_link(&hash(secret), now()).await? else {
        // Nothing matched: nothing was written, and the transaction is dropped.
        return Err(refused());
    };
    tx.commit().await?;
    let user = app.store.user(user_id).await?.ok_or_else(refused)?;
    if user.disabled {
        return Err(refused());
    }
    start_session(app, &user, "login-link").await
}

/// Starts a session for a user whose identity `method` proved. The one way in.
pub async fn start_session(app: &App, user: &User, method: &str) -> Result<NewSession> {
    let id = secret();
    let csrf = secret();
    let now = now();
    let max = app.settings.ui.session_max.as_secs();
    let mut tx = app.store.begin().await?;
    tx.insert_session(&hash(&id), user.id, &csrf, now, now + max as i64)
        .await?;
    tx.audit(
        AuditEvent::new(format!("user:{}", user.name), "ui.signed_in")
            .detail(serde_json::json!({ "user": user.name, "method": method })),
    )
    .await?;
    tx.commit().await?;
    Ok(NewSession { id, max_age: max })
}

/// The live session of a cookie value, if any. Ends a session found past its idle or total
/// lifetime; refuses one whose user was disabled.
pub async fn session(app: &App, cookie: &str) -> Result<Option<Session>> {
    if cookie.is_empty() || cookie.len() > 128 {
        return Ok(None);
    }
    let h = hash(cookie);
    let Some(row) = app.store.live_session(&h).await? else {
        return Ok(None);
    };
    let now = now();
    let idle = app.settings.ui.session_idle.as_secs() as i64;
    let ended = if now >= row.expires_at {
        Some("session lifetime over")
    } else if now - row.last_seen > idle {
        Some("idle")
    } else if row.user.disabled {
        Some("user disabled")
    } else {
        None
    };
    if let Some(reason) = ended {
        let mut tx = app.store.begin().await?;
        tx.end_session(&h, now, reason).await?;
        tx.commit().await?;
        return Ok(None);
    }
    if now - row.last_seen >= TOUCH_EVERY {
        app.store.touch_session(&h, now).await?;
    }
    Ok(Some(Session {
        user: row.user,
        csrf: row.csrf,
        hash: h,
    }))
}

/// Ends a session at the user's request.
pub async fn sign_out(app: &App, s: &Session) -> Result<()> {
    let mut tx = app.store.begin().await?;
    if tx.end_session(&s.hash, now(), "signed out").await? {
        tx.audit(
            AuditEvent::new(format!("user:{}", s.user.name), "ui.signed_out")
                .detail(serde_json::json!({ "user": s.user.name })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_and_differ_and_only_their_hash_is_kept() {
        let (a, b) = (secret(), secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), a);
    }

    #[test]
    fn synchronizer_tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
    }
}
