//! Tokens: minting and checking the JWTs airlock issues (jsonwebtoken, HS256).
//!
//! Two kinds share one signing key kept in the data directory (mode 0600):
//! - **staff** tokens name a user; what the user may do is decided per request from their roles;
//! - **upload** tokens name one transfer and nothing else; they are write-only.
//!
//! A valid signature is necessary, not sufficient: `workflow::auth` also checks the token's
//! database record (revocation, the transfer's state, IP ranges) on every use.
//!
//! Staff tokens may also come from the institution's OIDC provider ([`oidc`], RS256/ES256
//! against its published keys); local HS256 tokens stay the default and work as before.

pub mod oidc;

use crate::domain::{TokenId, TransferId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

const ISSUER: &str = "airlock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Staff,
    Upload,
    /// A named recipient's read-only token for one released egress package.
    Collect,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub typ: TokenKind,
    /// The user id (staff) or the transfer id (upload, collect).
    pub sub: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token is not valid: {0}")]
    Invalid(String),
    #[error("cannot read or create the signing key at {path}: {source}")]
    Key {
        path: String,
        source: std::io::Error,
    },
}

/// The signing key.
#[derive(Clone)]
pub struct Keys {
    enc: EncodingKey,
    dec: DecodingKey,
}

impl Keys {
    /// Reads `dir/jwt.key`, creating 32 random bytes with mode 0600 the first time.
    pub fn load_or_create(dir: &Path) -> Result<Self, TokenError> {
        use rand::RngCore;
        let path = dir.join("jwt.key");
        let err = |source| TokenError::Key {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let secret = match std::fs::read(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut s = vec![0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut s);
                write_private(&path, &s).map_err(err)?;
                s
            }
            Err(e) => return Err(err(e)),
        };
        Ok(Self::from_secret(&secret))
    }

    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
        }
    }

    /// Mints a token; returns it with its id and expiry (seconds since the epoch).
    pub fn mint(&self, typ: TokenKind, sub: &str, ttl: Duration) -> (TokenId, String, i64) {
        let now = chrono::Utc::now().timestamp();
        let jti = TokenId::new();
        let exp = now + ttl.as_secs() as i64;
        let claims = Claims {
            iss: ISSUER.into(),
            typ,
            sub: sub.to_owned(),
            jti: jti.to_string(),
            iat: now,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .expect("HS256 encoding of plain claims cannot fail");
        (jti, token, exp)
    }

    pub fn mint_staff(&self, user: UserId, ttl: Duration) -> (TokenId, String, i64) {
        self.mint(TokenKind::Staff, &user.to_string(), ttl)
    }

    pub fn mint_upload(&self, transfer: TransferId, ttl: Duration) -> (TokenId, String, i64) {
        self.mint(TokenKind::Upload, &transfer.to_string(), ttl)
    }

    pub fn mint_collect(&self, transfer: TransferId, ttl: Duration) -> (TokenId, String, i64) {
        self.mint(TokenKind::Collect, &transfer.to_string(), ttl)
    }

    /// Checks signature (HS256 only: `alg: none` and every other algorithm are refused),
    /// issuer and expiry with no leeway.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.validate_aud = false;
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.dec, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                other => TokenError::Invalid(format!("{other:?}")),
            })
    }
}

/// Reads the claims of a token without checking it: the CLI uses this to learn which transfer
/// an upload token is for. Never use it to decide anything.
pub fn peek_claims(token: &str) -> Option<Claims> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Creates `path` with `bytes`, mode 0600 whatever the umask, and syncs it. Refuses to
/// overwrite.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn forged_tokens_are_refused() {
        let keys = Keys::from_secret(b"one");
        let other = Keys::from_secret(b"two");
        let (_, tok, _) = keys.mint_upload(TransferId::new(), Duration::from_secs(60));
        assert!(keys.verify(&tok).is_ok());
        assert!(other.verify(&tok).is_err(), "wrong key accepted");

        // alg: none with the same claims and no signature.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = tok.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            payload
        );
        assert!(keys.verify(&none).is_err(), "alg none accepted");

        // Changed claims under the old signature.
        let mut claims = peek_claims(&tok).unwrap();
        claims.sub = TransferId::new().to_string();
        let parts: Vec<&str> = tok.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(serde_json::to_vec(&claims).unwrap()),
            parts[2]
        );
        assert!(keys.verify(&forged).is_err(), "changed claims accepted");
    }

    #[test]
    fn an_expired_token_is_refused_without_leeway() {
        let keys = Keys::from_secret(b"k");
        let (_, tok, _) = keys.mint_staff(UserId::new(), Duration::from_secs(0));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(matches!(keys.verify(&tok), Err(TokenError::Expired)));
    }
}
