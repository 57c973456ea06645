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
    /// Reads `dir/jwt.key`, creating 32 random bytes with mode 0600 the first time. Replicas
    /// starting together on a fresh shared directory all end up with the one key that was
    /// published first (`create_or_read`).
    pub fn load_or_create(dir: &Path) -> Result<Self, TokenError> {
        use rand::RngCore;
        let path = dir.join("jwt.key");
        let err = |source| TokenError::Key {
            path: path.display().to_string(),
            source,
        };
        let mut mkdir = std::fs::DirBuilder::new();
        mkdir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut mkdir, 0o700);
        mkdir.create(dir).map_err(err)?;
        let secret = match std::fs::read(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut s = vec![0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut s);
                create_or_read(&path, &s).map_err(err)?
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
/// overwrite (`AlreadyExists`). The bytes are written and synced under a temporary name and
/// then hard-linked into place, so nobody ever reads a half-written key: a replica racing
/// another to create it either publishes a whole file or finds the other's whole file.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    written?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Publishes `fresh` as `path` (`write_private`), or, when another process published it
/// first, returns what that one wrote.
pub(crate) fn create_or_read(path: &Path, fresh: &[u8]) -> std::io::Result<Vec<u8>> {
    match write_private(path, fresh) {
        Ok(()) => Ok(fresh.to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// Replicas starting together on a fresh shared keys directory: each key is created once,
    /// and every one of them gets the same bytes (a token minted by one verifies on all).
    #[test]
    fn replicas_racing_to_create_the_keys_all_get_the_same_ones() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("shared-keys");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let keys = Keys::load_or_create(&dir).unwrap();
                    let chain = crate::audit::ChainKey::load_or_create(&dir, 0, 0).unwrap();
                    let anchor = crate::audit::AnchorKey::load_or_create(&dir).unwrap();
                    let (_, tok, _) = keys.mint_staff(UserId::new(), Duration::from_secs(60));
                    (tok, chain.mac("h"), anchor.public_hex())
                })
            })
            .collect();
        let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let disk = Keys::load_or_create(&dir).unwrap();
        for (tok, mac, public) in &got {
            assert!(disk.verify(tok).is_ok(), "a racer minted with another key");
            assert_eq!(mac, &got[0].1);
            assert_eq!(public, &got[0].2);
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["anchor.key", "anchor.pub", "audit.key", "jwt.key"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("jwt.key")), 0o600);
        }
    }

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
