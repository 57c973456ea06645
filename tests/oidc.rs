//! Staff tokens from the institution's OIDC provider (`[auth]`): the test is the provider. It
//! generates RSA and P-256 keys with the `openssl` CLI, serves their JWKS from a small axum
//! server of its own (counting fetches), and signs tokens with them; the airlock under test
//! fetches the keys as it would from Keycloak or Entra ID.

mod common;

use airlock::workflow::admin;
use axum::extract::State;
use axum::routing::get;
use axum::Json;
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ISS: &str = "https://idp.example.ac.uk/realms/tre";
const AUD: &str = "airlock";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key of the test provider: how to sign with it, and its public JWK.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    enc: EncodingKey,
    jwk: Value,
    /// The public key as PEM (for the alg-swap attack).
    public_pem: Vec<u8>,
}

/// A 2048-bit RSA key, made by `openssl genpkey`.
fn rsa_key(dir: &Path, kid: &str) -> SigningKey {
    let f = dir.join(format!("{kid}.pem"));
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&f));
    let modulus = run(Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&f));
    let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
    let public_pem = run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&f));
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        enc: EncodingKey::from_rsa_pem(&std::fs::read(&f).unwrap()).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": b64(&n), "e": b64(&[1, 0, 1])}),
        public_pem: public_pem.into_bytes(),
    }
}

/// A P-256 key, made by `openssl genpkey`; x and y are the last 64 bytes of its public DER.
fn ec_key(dir: &Path, kid: &str) -> SigningKey {
    let f = dir.join(format!("{kid}.pem"));
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&f));
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&f)
        .output()
        .unwrap()
        .stdout;
    let point = &der[der.len() - 65..];
    assert_eq!(point[0], 4, "an uncompressed point");
    let public_pem = run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&f));
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        enc: EncodingKey::from_ec_pem(&std::fs::read(&f).unwrap()).unwrap(),
        jwk: json!({"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256",
                    "x": b64(&point[1..33]), "y": b64(&point[33..])}),
        public_pem: public_pem.into_bytes(),
    }
}

/// The test's identity provider: a JWKS endpoint whose keys the test changes, counting fetches.
struct Provider {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Served {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

async fn certs(State(s): State<Served>) -> Json<Value> {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "keys": s.keys.lock().unwrap().clone() }))
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> Provider {
        let served = Served {
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .route("/certs", get(certs))
            .with_state(served.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Provider {
            url,
            keys: served.keys,
            fetches: served.fetches,
        }
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// An airlock trusting `jwks_url`, with `min_refresh` between key-set fetches.
async fn airlock_trusting(jwks_url: &str, min_refresh: Duration) -> TestApp {
    let url = jwks_url.to_owned();
    TestApp::spawn_with(move |s| {
        s.auth.jwks_url = Some(url);
        s.auth.issuer = Some(ISS.into());
        s.auth.audience = Some(AUD.into());
        s.auth.jwks_min_refresh = min_refresh;
    })
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims a provider writes for `user`, valid for five minutes.
fn claims(user: &str) -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": uuid::Uuid::new_v4().to_string(),
        "iat": now(), "exp": now() + 300,
        "preferred_username": user, "jti": uuid::Uuid::new_v4().to_string(),
    })
}

/// `claims` with `changes` laid over them (a `null` removes a claim).
fn claims_with(user: &str, changes: Value) -> Value {
    let mut c = claims(user);
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut h = Header::new(key.alg);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, claims, &key.enc).unwrap()
}

/// Opens a data-ingress transfer: a Project Manager's call (201); anyone else gets 403.
async fn open(t: &TestApp, token: &str) -> (StatusCode, Value) {
    t.post_json(
        token,
        "/transfers",
        json!({"workspace": "proj/ws", "kind": "data-ingress", "uploader": "prov"}),
    )
    .await
}

/// Asserts a 401 whose message contains `why`.
async fn assert_refused(t: &TestApp, token: &str, why: &str, case: &str) {
    let (status, body) = open(t, token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(why),
        "{case}: the message `{msg}` should say `{why}`"
    );
}

#[tokio::test]
async fn rs256_and_es256_provider_tokens_act_with_the_airlock_users_own_roles() {
    let keys = tempfile::tempdir().unwrap();
    let (rsa, ec) = (rsa_key(keys.path(), "rsa-1"), ec_key(keys.path(), "ec-1"));
    let idp = Provider::start(&[&rsa, &ec]).await;
    let t = airlock_trusting(&idp.url, Duration::from_secs(30)).await;
    let p = t.bootstrap(1).await;
    assert_eq!(
        idp.fetches(),
        0,
        "keys are fetched at first need, not at start"
    );

    for key in [&rsa, &ec] {
        let pm = sign(key, &claims("pm"));
        let (status, v) = open(&t, &pm).await;
        assert_eq!(status, StatusCode::CREATED, "{:?} PM: {v}", key.alg);
        let id = v["id"].as_str().unwrap();
        let (status, shown) = t.get_json(&pm, &format!("/transfers/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{shown}");

        // The investigator is a member, but only a Project Manager opens transfers.
        let inv = sign(key, &claims("inv"));
        let (status, v) = open(&t, &inv).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{:?} investigator: {v}",
            key.alg
        );
        // Someone of another project does not see the transfer at all.
        let outsider = sign(key, &claims("outsider"));
        let (status, _) = t.get_json(&outsider, &format!("/transfers/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{:?} outsider", key.alg);
    }
    assert_eq!(idp.fetches(), 1, "the key set is cached");

    // Local HS256 staff tokens work beside provider tokens, as before.
    let (status, v) = open(&t, &p.pm).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, _) = open(&t, &p.inv).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The audit log names the airlock user, as for a local token.
    let actors: Vec<String> =
        sqlx::query_scalar("SELECT actor FROM audit_events WHERE action = 'transfer.created'")
            .fetch_all(t.app.store.pool())
            .await
            .unwrap();
    assert!(
        actors.iter().filter(|a| *a == "user:pm").count() >= 3,
        "{actors:?}"
    );
}

#[tokio::test]
async fn a_rotated_key_works_after_a_refresh_and_the_withdrawn_key_stops_working() {
    let keys = tempfile::tempdir().unwrap();
    let (old, new) = (rsa_key(keys.path(), "2024"), rsa_key(keys.path(), "2025"));
    let idp = Provider::start(&[&old]).await;
    let refresh = Duration::from_millis(300);
    let t = airlock_trusting(&idp.url, refresh).await;
    t.bootstrap(1).await;

    let (status, v) = open(&t, &sign(&old, &claims("pm"))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let before = idp.fetches();

    // The provider rotates: only the new key is published now.
    idp.publish(&[&new]);
    tokio::time::sleep(refresh + Duration::from_millis(100)).await;
    let (status, v) = open(&t, &sign(&new, &claims("pm"))).await;
    assert_eq!(status, StatusCode::CREATED, "the new kid is fetched: {v}");
    assert_eq!(idp.fetches(), before + 1);

    tokio::time::sleep(refresh + Duration::from_millis(100)).await;
    assert_refused(
        &t,
        &sign(&old, &claims("pm")),
        "unknown `kid`",
        "the withdrawn key",
    )
    .await;
    // The new key still works, from the cache.
    let fetched = idp.fetches();
    let (status, _) = open(&t, &sign(&new, &claims("pm"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(idp.fetches(), fetched);
}

#[tokio::test]
async fn forged_foreign_stale_and_unknown_tokens_get_401_with_the_reason() {
    let keys = tempfile::tempdir().unwrap();
    let (rsa, ec) = (rsa_key(keys.path(), "rsa-1"), ec_key(keys.path(), "ec-1"));
    let stranger = rsa_key(keys.path(), "stranger");
    let idp = Provider::start(&[&rsa, &ec]).await;
    let t = airlock_trusting(&idp.url, Duration::from_secs(30)).await;
    t.bootstrap(1).await;
    admin::add_user(&t.app, "gone", &[]).await.unwrap();
    admin::disable_user(&t.app, "gone", "left").await.unwrap();
    // The fixture is sound: this token is accepted.
    let (status, v) = open(&t, &sign(&rsa, &claims("pm"))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    assert_refused(
        &t,
        &sign(&stranger, &claims("pm")),
        "unknown `kid`",
        "a key the provider does not publish",
    )
    .await;
    // Another key under a published kid.
    let mut impostor = sign(&stranger, &claims("pm"));
    let h = b64(format!(r#"{{"alg":"RS256","kid":"{}"}}"#, rsa.kid).as_bytes());
    impostor = format!("{h}.{}", impostor.split_once('.').unwrap().1);
    assert_refused(&t, &impostor, "signature", "another key, a published kid").await;

    for (changes, why, case) in [
        (json!({"aud": "someone-else"}), "audience", "another aud"),
        (json!({"aud": ["a", "b"]}), "audience", "auds without ours"),
        (json!({"aud": null}), "`aud`", "no aud"),
        (
            json!({"iss": "https://evil.example"}),
            "issuer",
            "another iss",
        ),
        (
            json!({"exp": now() - 120, "iat": now() - 600}),
            "expired",
            "expired",
        ),
        (json!({"exp": null}), "`exp`", "no exp"),
        (
            json!({"nbf": now() + 120}),
            "not valid yet",
            "nbf in the future",
        ),
        (json!({"typ": "ID"}), "access token", "a Keycloak ID token"),
        (
            json!({"preferred_username": null}),
            "preferred_username",
            "no username claim",
        ),
    ] {
        for key in [&rsa, &ec] {
            let tok = sign(key, &claims_with("pm", changes.clone()));
            assert_refused(&t, &tok, why, &format!("{case} ({:?})", key.alg)).await;
        }
    }
    assert_refused(
        &t,
        &sign(&rsa, &claims("nobody")),
        "not an airlock user",
        "a user airlock does not know",
    )
    .await;
    assert_refused(
        &t,
        &sign(&ec, &claims("gone")),
        "disabled",
        "a disabled user",
    )
    .await;

    // alg swapped to HS256 with the provider's public key as the HMAC secret: HS256 tokens
    // only ever meet the local secret.
    for key in [&rsa, &ec] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(key.kid.clone());
        let swapped = jsonwebtoken::encode(
            &h,
            &claims("pm"),
            &EncodingKey::from_secret(&key.public_pem),
        )
        .unwrap();
        assert_refused(&t, &swapped, "not valid", "alg swapped to HS256").await;
    }
    // alg: none, unsigned.
    let payload = b64(claims("pm").to_string().as_bytes());
    for header in [
        format!(r#"{{"alg":"none","kid":"{}"}}"#, rsa.kid),
        r#"{"alg":"none"}"#.to_owned(),
    ] {
        let none = format!("{}.{payload}.", b64(header.as_bytes()));
        assert_refused(&t, &none, "not valid", "alg none").await;
    }
    // ES256 in the header of an RSA key's kid (and its signature).
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(rsa.kid.clone());
    let mixed = jsonwebtoken::encode(&h, &claims("pm"), &ec.enc).unwrap();
    assert_refused(&t, &mixed, "`alg`", "ES256 under an RSA kid").await;
    // No kid at all.
    let no_kid =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims("pm"), &rsa.enc).unwrap();
    assert_refused(&t, &no_kid, "`kid`", "no kid").await;
}

#[tokio::test]
async fn tokens_with_made_up_kids_fetch_the_key_set_a_bounded_number_of_times() {
    let keys = tempfile::tempdir().unwrap();
    let (rsa, stranger) = (rsa_key(keys.path(), "rsa-1"), rsa_key(keys.path(), "x"));
    let idp = Provider::start(&[&rsa]).await;
    let t = airlock_trusting(&idp.url, Duration::from_secs(30)).await;
    t.bootstrap(1).await;
    let (status, _) = open(&t, &sign(&rsa, &claims("pm"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let before = idp.fetches();

    let flood = (0..100).map(|i| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(format!("made-up-{i}-{}", uuid::Uuid::new_v4()));
        let tok = jsonwebtoken::encode(&h, &claims("pm"), &stranger.enc).unwrap();
        let t = &t;
        async move { open(t, &tok).await.0 }
    });
    let statuses = futures::future::join_all(flood).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    // Within one `jwks_min_refresh` of the last fetch: none more at all.
    assert_eq!(
        idp.fetches(),
        before,
        "made-up kids must not become fetches within the interval"
    );
    // The real key still works, from the cache.
    let (status, _) = open(&t, &sign(&rsa, &claims("pm"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(idp.fetches(), before);
}

#[tokio::test]
async fn with_a_short_interval_a_flood_fetches_at_most_once_per_interval() {
    let keys = tempfile::tempdir().unwrap();
    let (rsa, stranger) = (rsa_key(keys.path(), "rsa-1"), rsa_key(keys.path(), "x"));
    let idp = Provider::start(&[&rsa]).await;
    let interval = Duration::from_millis(500);
    let t = airlock_trusting(&idp.url, interval).await;
    t.bootstrap(1).await;
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(1600) {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(uuid::Uuid::new_v4().to_string());
        let tok = jsonwebtoken::encode(&h, &claims("pm"), &stranger.enc).unwrap();
        assert_eq!(open(&t, &tok).await.0, StatusCode::UNAUTHORIZED);
        sent += 1;
    }
    let bound = (started.elapsed().as_millis() / interval.as_millis()) as usize + 1;
    assert!(
        idp.fetches() <= bound,
        "{} fetches for {sent} tokens in {:?}; at most {bound} allowed",
        idp.fetches(),
        started.elapsed()
    );
    assert!(sent > bound * 2, "the flood was too small to tell: {sent}");
}

#[tokio::test]
async fn without_auth_provider_tokens_get_401_and_local_tokens_still_work() {
    let keys = tempfile::tempdir().unwrap();
    let rsa = rsa_key(keys.path(), "rsa-1");
    let idp = Provider::start(&[&rsa]).await;
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    assert_refused(
        &t,
        &sign(&rsa, &claims("pm")),
        "no `[auth]`",
        "a provider token with no [auth]",
    )
    .await;
    assert_eq!(idp.fetches(), 0);
    let (status, v) = open(&t, &p.pm).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, _) = open(&t, &p.inv).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_provider_that_is_down_stops_neither_the_start_nor_local_tokens() {
    let keys = tempfile::tempdir().unwrap();
    let rsa = rsa_key(keys.path(), "rsa-1");
    // A port nobody listens on (bound, then let go).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("http://127.0.0.1:{port}/certs");
    let t = airlock_trusting(&closed, Duration::from_secs(30)).await;
    let p = t.bootstrap(1).await;
    let (status, v) = open(&t, &sign(&rsa, &claims("pm"))).await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the provider is down: our problem, not the caller's: {v}"
    );
    let (status, v) = open(&t, &p.pm).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}
