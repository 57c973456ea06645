//! Staff tokens issued by the institution's OIDC provider (Keycloak, Entra ID), checked
//! against the provider's published keys (JWKS). Enabled by `[auth]` (`config::AuthSettings`).
//!
//! What is checked, and why this way:
//! - **Which path a token takes.** Only a token whose header says RS256 or ES256 comes here;
//!   everything else (HS256 included) goes to the local check, which accepts HS256 and the
//!   local secret only. So a provider token is never checked against the local secret and a
//!   local token never against a provider key: swapping `alg` to HS256 and using the public
//!   key as an HMAC secret meets the local secret and fails.
//! - **Keys.** Chosen by the header's `kid` (required). Each published key allows exactly one
//!   algorithm, from its own `kty` (and `alg`, when it gives one): RSA → RS256, EC P-256 →
//!   ES256. Symmetric (`oct`) keys, encryption keys (`use: enc`) and anything else are
//!   ignored. The header's `alg` must be the key's algorithm.
//! - **Claims.** `exp`, `iss` and `aud` are required; `exp`, `nbf` (when present), `iss` (exact)
//!   and `aud` (must contain the configured audience) are checked with [`LEEWAY_SECS`] of
//!   clock skew allowed.
//! - **The key set.** Fetched at first need, not at start (a provider briefly down never stops
//!   airlock starting; only its tokens wait). It is fetched again when a token names a `kid`
//!   it does not hold, or when it is older than [`MAX_AGE`], but never twice within
//!   `jwks_min_refresh`: a flood of tokens with made-up `kid`s costs the provider one request
//!   per interval, and each such token a 401. A fetch replaces the whole set, so a key the
//!   provider withdrew stops working at the next fetch. A failed fetch keeps the keys held.
//!   Responses are bounded to [`MAX_JWKS_BYTES`] and [`FETCH_TIMEOUT`].
//! - **Identity.** The configured claim names an airlock user (`workflow::access` looks it up);
//!   roles, memberships and disabling stay airlock's own. A provider token has no airlock
//!   token id and no database row: it is not revoked by `airlock token revoke`, only by
//!   disabling the user (checked on every request) or at the provider; the audit log names
//!   the user (`user:NAME`), and logs name the token by its `jti` (`uti` for Entra ID) or,
//!   failing both, a short SHA-256 of the token ([`IdpIdentity::token_id`]).

use crate::config::{AuthSettings, UsernameClaim};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Clock skew allowed between the provider and airlock for `exp` and `nbf`: 30 s, half the
/// jsonwebtoken default, enough for NTP-synchronised hosts.
pub const LEEWAY_SECS: u64 = 30;
/// A key set older than this is fetched again at the next request (subject to
/// `jwks_min_refresh`), so a withdrawn key stops working within about an hour even if no
/// token ever names an unknown `kid`.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// Largest key-set response read; a real one is a few KiB.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Whole-request limit of one key-set fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a provider token was refused. Every variant but `KeysUnavailable` is the caller's
/// (401, with this message); `KeysUnavailable` is ours (the provider cannot be reached and no
/// keys are held).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("token is not valid: {0}")]
    Invalid(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (its `nbf` lies in the future)")]
    NotYetValid,
    #[error("token is from another issuer (`iss` is not this airlock's identity provider)")]
    Issuer,
    #[error("token is for another audience (`aud` does not name this airlock)")]
    Audience,
    #[error("token's signature does not verify")]
    Signature,
    #[error("token has no `kid` header naming the identity provider's key")]
    NoKid,
    #[error("token is signed by a key the identity provider does not publish (unknown `kid`)")]
    UnknownKey,
    #[error("token's `alg` does not match its key's algorithm")]
    Algorithm,
    #[error("token has no `{0}` claim naming the user")]
    NoUsername(&'static str),
    #[error("token's `{claim}` must be NAME@{domain}")]
    Domain { claim: &'static str, domain: String },
    #[error("token is not an access token (its `typ` claim is not `Bearer`)")]
    NotAccessToken,
    #[error("token's email is not verified by the identity provider")]
    EmailNotVerified,
    #[error("the identity provider's keys cannot be fetched: {0}")]
    KeysUnavailable(String),
}

/// The person a verified provider token names.
#[derive(Debug, Clone)]
pub struct IdpIdentity {
    /// The airlock user name the configured claim gives.
    pub username: String,
    /// For logs only: `jti` (Keycloak), `uti` (Entra ID), or `sha256:` and the first 16 hex
    /// digits of the token's digest.
    pub token_id: String,
}

/// A published key that airlock accepts, with the one algorithm it allows.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys held, by `kid`, and when they were fetched.
struct KeySet {
    keys: HashMap<String, Arc<Key>>,
    fetched: Instant,
}

/// Checks provider tokens; one per `App`, shared by every request.
pub struct OidcVerifier {
    jwks_url: String,
    issuer: String,
    audience: String,
    claim: UsernameClaim,
    domain: Option<String>,
    min_refresh: Duration,
    http: reqwest::Client,
    /// The keys held; read by every request, replaced by a fetch.
    keys: RwLock<Option<KeySet>>,
    /// When the last fetch was tried; held across a fetch, so one runs at a time and requests
    /// that waited for it see its keys instead of fetching again.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// True when the token's header claims RS256 or ES256: only such a token is a provider token.
/// Anything unreadable or naming another algorithm is not (the local HS256 check refuses it).
pub fn is_provider_token(token: &str) -> bool {
    matches!(
        jsonwebtoken::decode_header(token).map(|h| h.alg),
        Ok(Algorithm::RS256 | Algorithm::ES256)
    )
}

impl OidcVerifier {
    /// `None` when `[auth]` is not configured. Settings were validated at load.
    pub fn from_settings(s: &AuthSettings) -> Result<Option<Self>, reqwest::Error> {
        let (Some(jwks_url), Some(issuer), Some(audience)) = (&s.jwks_url, &s.issuer, &s.audience)
        else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Some(Self {
            jwks_url: jwks_url.clone(),
            issuer: issuer.clone(),
            audience: audience.clone(),
            claim: s.username_claim,
            domain: s.username_domain.clone(),
            min_refresh: s.jwks_min_refresh,
            http,
            keys: RwLock::new(None),
            last_fetch: tokio::sync::Mutex::new(None),
        }))
    }

    /// Verifies a provider token (signature, `exp`, `nbf`, `iss`, `aud`) and reads the user
    /// name from it. The caller maps the name to an airlock user.
    pub async fn verify(&self, token: &str) -> Result<IdpIdentity, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| OidcError::Invalid(format!("unreadable header: {e}")))?;
        let kid = header.kid.as_deref().ok_or(OidcError::NoKid)?;
        let key = self.key(kid).await?;
        if header.alg != key.alg {
            return Err(OidcError::Algorithm);
        }
        let mut v = Validation::new(key.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &v)
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind as K;
                    match e.kind() {
                        K::ExpiredSignature => OidcError::Expired,
                        K::ImmatureSignature => OidcError::NotYetValid,
                        K::InvalidIssuer => OidcError::Issuer,
                        K::InvalidAudience => OidcError::Audience,
                        K::InvalidSignature => OidcError::Signature,
                        K::InvalidAlgorithm => OidcError::Algorithm,
                        K::MissingRequiredClaim(c) => {
                            OidcError::Invalid(format!("the `{c}` claim is missing"))
                        }
                        other => OidcError::Invalid(format!("{other:?}")),
                    }
                })?;
        let claims = data.claims;
        // Keycloak marks its ID tokens `typ: ID` (its refresh tokens are HS256 and never come
        // here); only access tokens act on the API. Entra ID writes no `typ` claim.
        if let Some(typ) = claims.get("typ").and_then(|v| v.as_str()) {
            if !typ.eq_ignore_ascii_case("Bearer") {
                return Err(OidcError::NotAccessToken);
            }
        }
        Ok(IdpIdentity {
            username: self.username(&claims)?,
            token_id: token_id(&claims, token),
        })
    }

    /// The airlock user name the configured claim gives.
    fn username(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, OidcError> {
        let name = self.claim.as_str();
        let value = claims
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .ok_or(OidcError::NoUsername(name))?;
        if self.claim == UsernameClaim::Email
            && claims.get("email_verified").and_then(|v| v.as_bool()) == Some(false)
        {
            return Err(OidcError::EmailNotVerified);
        }
        let Some(domain) = &self.domain else {
            return Ok(value.to_owned());
        };
        match value.rsplit_once('@') {
            Some((user, d)) if !user.is_empty() && d.eq_ignore_ascii_case(domain) => {
                Ok(user.to_owned())
            }
            _ => Err(OidcError::Domain {
                claim: name,
                domain: domain.clone(),
            }),
        }
    }

    /// The key of `kid`, fetching the key set when it is not held (or old), at most once per
    /// `min_refresh`.
    async fn key(&self, kid: &str) -> Result<Arc<Key>, OidcError> {
        if let Some(k) = self.held(kid, true) {
            return Ok(k);
        }
        let mut last = self.last_fetch.lock().await;
        // A fetch may have finished while this request waited for the lock.
        if let Some(k) = self.held(kid, true) {
            return Ok(k);
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            // Too soon to ask again: what is held (even if old) decides.
            if self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
            {
                return Err(OidcError::KeysUnavailable(format!(
                    "the last fetch failed; the next is tried {} s after it",
                    self.min_refresh.as_secs()
                )));
            }
            return self.held(kid, false).ok_or(OidcError::UnknownKey);
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(url = %self.jwks_url, keys = keys.len(), "fetched the identity provider's keys");
                let set = KeySet {
                    keys,
                    fetched: Instant::now(),
                };
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(set);
            }
            Err(e) => {
                tracing::warn!(url = %self.jwks_url, error = %e, "cannot fetch the identity provider's keys");
                if self
                    .keys
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_none()
                {
                    return Err(OidcError::KeysUnavailable(e));
                }
            }
        }
        self.held(kid, false).ok_or(OidcError::UnknownKey)
    }

    /// The held key of `kid`; with `fresh`, only if the set is younger than [`MAX_AGE`].
    fn held(&self, kid: &str, fresh: bool) -> Option<Arc<Key>> {
        let guard = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let set = guard.as_ref()?;
        if fresh && set.fetched.elapsed() > MAX_AGE {
            return None;
        }
        set.keys.get(kid).cloned()
    }

    /// GETs the key set, bounded in size and time, keeping the keys airlock accepts.
    async fn fetch(&self) -> Result<HashMap<String, Arc<Key>>, String> {
        let mut resp = self
            .http
            .get(&self.jwks_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{} answered {}", self.jwks_url, resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("the key set is over {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the key set is over {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_key_set(&body)
    }
}

/// The accepted keys of a JWKS document, by `kid`. Keys are read one by one, so one that
/// jsonwebtoken cannot read (a new algorithm the provider also publishes) does not hide the
/// others.
fn parse_key_set(body: &[u8]) -> Result<HashMap<String, Arc<Key>>, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc =
        serde_json::from_slice(body).map_err(|e| format!("the key set is not a JWKS: {e}"))?;
    let mut out = HashMap::new();
    for raw in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        if let Some((kid, key)) = accepted(&jwk) {
            out.insert(kid, Arc::new(key));
        }
    }
    Ok(out)
}

/// A signing key airlock accepts, with its one algorithm: RSA → RS256, EC P-256 → ES256.
fn accepted(jwk: &Jwk) -> Option<(String, Key)> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let stated_ok = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    if !stated_ok {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Key { alg, key }))
}

/// What logs call a provider token: its `jti`, Entra ID's `uti`, or a digest prefix.
fn token_id(claims: &serde_json::Map<String, serde_json::Value>, token: &str) -> String {
    for c in ["jti", "uti"] {
        if let Some(v) = claims.get(c).and_then(|v| v.as_str()) {
            return v.chars().take(64).collect();
        }
    }
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    format!("sha256:{}", &hex::encode(d)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rsa_and_p256_signing_keys_are_held_each_with_one_algorithm() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r", "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "sXch", "e": "AQAB"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "e", "crv": "P-256", "x": "AQ", "y": "AQ"},
            {"kty": "EC", "kid": "e384", "crv": "P-384", "x": "AQ", "y": "AQ"},
            {"kty": "weird", "kid": "w"}
        ]});
        let keys = parse_key_set(doc.to_string().as_bytes()).unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["e", "r"]);
        assert_eq!(keys["r"].alg, Algorithm::RS256);
        assert_eq!(keys["e"].alg, Algorithm::ES256);
    }

    fn verifier(claim: UsernameClaim, domain: Option<&str>) -> OidcVerifier {
        let s = AuthSettings {
            jwks_url: Some("http://127.0.0.1:9/certs".into()),
            issuer: Some("https://idp.example.org".into()),
            audience: Some("airlock".into()),
            username_claim: claim,
            username_domain: domain.map(str::to_owned),
            ..AuthSettings::default()
        };
        OidcVerifier::from_settings(&s).unwrap().unwrap()
    }

    fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_claim_names_the_user_and_a_domain_must_match_exactly() {
        let plain = verifier(UsernameClaim::PreferredUsername, None);
        let c = map(serde_json::json!({"preferred_username": "alice"}));
        assert_eq!(plain.username(&c).unwrap(), "alice");
        assert!(plain.username(&map(serde_json::json!({}))).is_err());

        let email = verifier(UsernameClaim::Email, Some("example.ac.uk"));
        for (claims, want) in [
            (
                serde_json::json!({"email": "alice@Example.AC.uk"}),
                Some("alice"),
            ),
            (serde_json::json!({"email": "alice@evil.example"}), None),
            (
                serde_json::json!({"email": "alice@example.ac.uk.evil"}),
                None,
            ),
            (serde_json::json!({"email": "@example.ac.uk"}), None),
            (serde_json::json!({"email": "alice"}), None),
            (
                serde_json::json!({"email": "alice@example.ac.uk", "email_verified": false}),
                None,
            ),
            (
                serde_json::json!({"preferred_username": "alice@example.ac.uk"}),
                None,
            ),
        ] {
            let got = email.username(&map(claims.clone())).ok();
            assert_eq!(got.as_deref(), want, "{claims}");
        }
    }

    #[test]
    fn only_rs256_and_es256_headers_are_provider_tokens() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let tok = |h: &str| format!("{}.{}.sig", b64.encode(h), b64.encode("{}"));
        assert!(is_provider_token(&tok(r#"{"alg":"RS256","kid":"k"}"#)));
        assert!(is_provider_token(&tok(r#"{"alg":"ES256"}"#)));
        for h in [
            r#"{"alg":"HS256","kid":"k"}"#,
            r#"{"alg":"none","kid":"k"}"#,
            r#"{"alg":"RS512"}"#,
            "not json",
        ] {
            assert!(!is_provider_token(&tok(h)), "{h}");
        }
    }
}
