//! S3 Object Lock retention of released objects (`[storage.volumes.released] retention_days`),
//! against real S3 servers: moto's standalone server (common::moto), which implements Object
//! Lock, read back with a plain aws-sdk-s3 client; and Garage (common::garage), which has
//! none. Every released object and the manifest are locked for the retention, a locked
//! version cannot be deleted, revocation hides the release behind delete markers while the
//! versions stay; a store without Object Lock, or one that does not answer, stops the start
//! with a message that says why and what to do.

mod common;

use airlock::app::App;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::ObjectLockMode;
use common::garage::Garage;
use common::moto::{self, Moto};
use common::{approve_and_release, bytes, People, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The settings of a released volume in `bucket` at `m`, with `extra` (retention) added.
fn locked_env(m: &Moto, bucket: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = m.released_env(bucket);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Uploads `files` into a new ingress transfer and releases it; gives its id.
async fn release(t: &TestApp, p: &People, files: &[(&str, Vec<u8>)]) -> String {
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    for (path, b) in files {
        let (s, v) = t.put(&up, &id, path, b.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    approve_and_release(t, p, &up, &id).await;
    id
}

/// The current version of `key` and its retention (mode, retain-until in seconds), from a
/// HEAD's `x-amz-object-lock-*` headers (moto 5.2.5 has no `GetObjectRetention`).
async fn retention_of(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> (String, ObjectLockMode, i64) {
    let head = c
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {key}: {}", DisplayErrorContext(&e)));
    (
        head.version_id().expect("a version id").to_owned(),
        head.object_lock_mode()
            .unwrap_or_else(|| panic!("{key}: no Object Lock mode"))
            .clone(),
        head.object_lock_retain_until_date()
            .unwrap_or_else(|| panic!("{key}: no retain-until date"))
            .secs(),
    )
}

async fn get_bytes(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> Result<Vec<u8>, String> {
    let got = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .send()
        .await
        .map_err(|e| DisplayErrorContext(&e).to_string())?;
    Ok(got.body.collect().await.unwrap().into_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn released_objects_and_manifest_are_locked_and_revocation_leaves_the_locked_versions() {
    let m = Moto::start();
    let bucket = "locked";
    m.create_bucket(bucket, true).await;
    let env = locked_env(
        &m,
        bucket,
        &[("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "1")],
    );
    let t = TestApp::spawn_with(|s| moto::apply_env(s, env)).await;
    let p = t.bootstrap(1).await;
    // A small file, one of several multipart parts (each part with its SHA-256), a space.
    let files = [
        ("notes/readme.txt", bytes(1_000, 1)),
        ("data/big.bin", bytes(11 << 20, 2)),
        ("data/a b.csv", bytes(70_000, 3)),
    ];
    let id = release(&t, &p, &files).await;
    let dest = format!("released/proj/ws/data/{id}");
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["release"]["location"], format!("s3://{bucket}/{dest}/"));

    // Every released object and the manifest: COMPLIANCE until about a day from now, read
    // back as they were, and a delete of the locked version is refused.
    let c = m.client();
    let manifest = format!("{dest}.manifest.jsonl");
    let mut keys: Vec<(String, Option<&Vec<u8>>)> = files
        .iter()
        .map(|(path, b)| (format!("{dest}/{path}"), Some(b)))
        .collect();
    keys.push((manifest.clone(), None));
    let mut versions = Vec::new();
    for (key, want) in &keys {
        let (version, mode, until) = retention_of(&c, bucket, key).await;
        assert_eq!(mode, ObjectLockMode::Compliance, "{key}");
        let now = now_secs();
        assert!(
            until > now + 23 * 3600 && until < now + 25 * 3600,
            "{key}: retained until {until}, now {now}"
        );
        // Uploaded with a SHA-256 content checksum, as AWS wants under Object Lock.
        let head = c
            .head_object()
            .bucket(bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert!(head.checksum_sha256().is_some(), "{key}: {head:?}");
        let got = get_bytes(&c, bucket, key, None).await.unwrap();
        if let Some(want) = want {
            assert!(&got == *want, "{key} differs");
        } else {
            assert_eq!(String::from_utf8(got).unwrap().lines().count(), 3);
        }
        let refused = c
            .delete_object()
            .bucket(bucket)
            .key(key)
            .version_id(&version)
            .send()
            .await;
        assert!(refused.is_err(), "{key}: the locked version was deleted");
        versions.push((key.clone(), version));
    }

    // airlock's own verification still reads every copy and finds it sound.
    let tid: airlock::domain::TransferId = id.parse().unwrap();
    let tr = t.app.store.transfer(tid).await.unwrap().unwrap();
    let report = airlock::integrity::verify(&t.app, &tr, airlock::integrity::Scope::All)
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems.len());
    assert_eq!(report.ok, 6, "three in quarantine, three released");

    // Revocation succeeds: the release is gone for readers (delete markers) ...
    let (s, v) = t
        .post_json(
            &p.inv,
            &format!("/transfers/{id}/revoke"),
            json!({ "reason": "consent withdrawn" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(t.show(&p.pm, &id).await["state"], "revoked");
    assert!(!t
        .app
        .volumes
        .published(&object_store::path::Path::from(dest.as_str()))
        .await
        .unwrap());
    for (key, version) in &versions {
        let latest = get_bytes(&c, bucket, key, None).await;
        assert!(
            latest.as_ref().is_err_and(|e| e.contains("NoSuchKey")),
            "{key}: {latest:?}"
        );
        // ... while the locked version stays, readable by its id and still not deletable.
        let kept = get_bytes(&c, bucket, key, Some(version)).await.unwrap();
        if let Some((_, Some(want))) = keys.iter().find(|(k, _)| k == key) {
            assert!(&kept == *want, "{key}: the kept version differs");
        }
        let refused = c
            .delete_object()
            .bucket(bucket)
            .key(key)
            .version_id(version)
            .send()
            .await;
        assert!(refused.is_err(), "{key}: deleted after revocation");
    }
    let listed = c
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&dest)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "{listed:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn governance_retention_can_be_bypassed_by_an_account_allowed_to() {
    let m = Moto::start();
    let bucket = "governed";
    m.create_bucket(bucket, true).await;
    let env = locked_env(
        &m,
        bucket,
        &[
            ("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "2"),
            (
                "AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_MODE",
                "governance",
            ),
        ],
    );
    let t = TestApp::spawn_with(|s| moto::apply_env(s, env)).await;
    let p = t.bootstrap(1).await;
    let id = release(&t, &p, &[("one.txt", bytes(500, 9))]).await;
    let c = m.client();
    let key = format!("released/proj/ws/data/{id}/one.txt");
    let (version, mode, until) = retention_of(&c, bucket, &key).await;
    assert_eq!(mode, ObjectLockMode::Governance);
    let now = now_secs();
    assert!(
        until > now + 47 * 3600 && until < now + 49 * 3600,
        "{until}"
    );
    let manifest = format!("released/proj/ws/data/{id}.manifest.jsonl");
    assert_eq!(
        retention_of(&c, bucket, &manifest).await.1,
        ObjectLockMode::Governance
    );
    // Refused without the bypass, done with it. (Without it, no header at all: moto takes
    // any `x-amz-bypass-governance-retention` header, even `false`, as a bypass.)
    let delete = |bypass: bool| {
        c.delete_object()
            .bucket(bucket)
            .key(&key)
            .version_id(&version)
            .set_bypass_governance_retention(bypass.then_some(true))
            .send()
    };
    assert!(delete(false).await.is_err());
    delete(true)
        .await
        .unwrap_or_else(|e| panic!("{}", DisplayErrorContext(&e)));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_whose_retention_is_refused_publishes_nothing_then_retries_to_a_locked_one() {
    let mut m = Moto::start();
    let bucket = "locked";
    m.create_bucket(bucket, true).await;
    let env = locked_env(
        &m,
        bucket,
        &[("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "1")],
    );
    let t = TestApp::spawn_with(|s| moto::apply_env(s, env)).await;
    let p = t.bootstrap(1).await;
    // The store loses its Object Lock after the start check (a new moto, its bucket without
    // it): every PutObjectRetention is refused.
    m.restart();
    m.create_bucket(bucket, false).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("f/{i:02}.bin"), bytes(20_000, i)))
        .collect();
    for (path, b) in &files {
        assert_eq!(
            t.put(&up, &id, path, b.clone()).await.0,
            StatusCode::CREATED
        );
    }
    let (s, _) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.scans_done(&id).await;
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let dest = format!("released/proj/ws/data/{id}");
    let refused = |log: &str| {
        log.lines()
            .any(|l| l.contains("?retention") && l.contains("\" 400"))
    };
    for _ in 0..300 {
        if refused(&m.log()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused(&m.log()), "no retention was refused: {}", m.log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Not released, and not published: the manifest was never written.
    assert_eq!(t.show(&p.pm, &id).await["state"], "approved");
    let c = m.client();
    let manifest = format!("{dest}.manifest.jsonl");
    assert!(c
        .head_object()
        .bucket(bucket)
        .key(&manifest)
        .send()
        .await
        .is_err());

    // Object Lock back (a new moto, its bucket with it): the release retries to a whole one,
    // every object and the manifest locked.
    m.restart();
    m.create_bucket(bucket, true).await;
    t.wait_for_state(&p.pm, &id, "released").await;
    let c = m.client();
    for key in files
        .iter()
        .map(|(path, _)| format!("{dest}/{path}"))
        .chain([manifest])
    {
        let (_, mode, _) = retention_of(&c, bucket, &key).await;
        assert_eq!(mode, ObjectLockMode::Compliance, "{key}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_configured_keys_the_lock_client_signs_with_object_stores_credentials() {
    // Garage checks every signature (moto checks none): a request signed with the keys
    // object_store's provider gives is answered, one with a wrong secret is refused.
    let g = Garage::start();
    let settings = airlock::config::Settings::load(None, g.airlock_env()).unwrap();
    let airlock::config::VolumeLocation::S3(v) = settings.storage.volume("released").unwrap()
    else {
        panic!("released is not on S3")
    };
    let store = airlock::volumes::s3::client(&v).unwrap();
    let mut bridged = v.clone();
    bridged.credentials = None;
    let list = |c: aws_sdk_s3::Client| async move {
        c.list_objects_v2()
            .bucket("airlock")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(&e).to_string())
    };
    list(airlock::volumes::lock::client(&bridged, &store))
        .await
        .unwrap();
    let mut wrong = v.clone();
    wrong.credentials = Some((g.key_id.clone(), "0".repeat(64)));
    let wrong_store = airlock::volumes::s3::client(&wrong).unwrap();
    let err = list(airlock::volumes::lock::client(&bridged, &wrong_store))
        .await
        .expect_err("a wrong secret was accepted");
    assert!(err.contains("403") || err.contains("AccessDenied"), "{err}");
}

/// airlock started with `env` on a fresh data directory: the start's error message.
async fn start_error(env: Vec<(String, String)>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::settings(dir.path());
    moto::apply_env(&mut s, env);
    match App::open(s).await {
        Ok(_) => panic!("airlock started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_without_object_lock_stops_the_start_with_what_to_do() {
    let m = Moto::start();
    m.create_bucket("plain", false).await;
    let env = locked_env(
        &m,
        "plain",
        &[("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "1")],
    );
    let msg = start_error(env).await;
    for want in [
        "retention is configured for the released volume",
        "retention_days = 1",
        "bucket `plain`",
        &format!("endpoint `{}`", m.endpoint()),
        "does not have S3 Object Lock enabled",
        "the store answered: ObjectLockConfigurationNotFoundError",
        "Create the bucket with S3 Object Lock enabled",
        "or remove retention_days",
    ] {
        assert!(msg.contains(want), "`{want}` not in: {msg}");
    }
    assert!(!msg.contains(moto::SECRET), "{msg}");
    // The same bucket without retention is fine.
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::settings(dir.path());
    moto::apply_env(&mut s, m.released_env("plain"));
    assert!(App::open(s).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn on_garage_a_configured_retention_stops_the_start_naming_object_lock_and_the_bucket() {
    let g = Garage::start();
    let mut env = g.airlock_env();
    env.extend(
        [
            ("AIRLOCK__STORAGE__VOLUMES__OUTPUT__BACKEND", "local"),
            ("AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS", "30"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let msg = start_error(env).await;
    for want in [
        "retention is configured for the released volume",
        "retention_days = 30",
        "bucket `airlock`",
        &format!("endpoint `{}`", g.endpoint()),
        "does not have S3 Object Lock enabled",
        "Garage",
        "the store answered: ",
        "remove retention_days",
    ] {
        assert!(msg.contains(want), "`{want}` not in: {msg}");
    }
    assert!(!msg.contains(&g.secret), "the secret is shown: {msg}");
    // Nothing was released or locked: the bucket holds nothing of airlock's.
    let ls = g.rclone(&["lsf", "-R", "g:airlock"]);
    assert!(ls.status.success());
    assert!(
        ls.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_does_not_answer_stops_the_start_too() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m_env = vec![
        (
            "AIRLOCK__STORAGE__VOLUMES__RELEASED__BACKEND",
            "s3".to_string(),
        ),
        (
            "AIRLOCK__STORAGE__S3__ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("AIRLOCK__STORAGE__S3__BUCKET", "gone".into()),
        ("AIRLOCK__STORAGE__S3__ACCESS_KEY_ID", moto::KEY_ID.into()),
        (
            "AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY",
            moto::SECRET.into(),
        ),
        ("AIRLOCK__STORAGE__S3__PATH_STYLE", "true".into()),
        (
            "AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS",
            "1".into(),
        ),
    ];
    let env = m_env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let started = std::time::Instant::now();
    let msg = start_error(env).await;
    assert!(
        msg.contains("did not answer whether bucket `gone` has S3 Object Lock enabled")
            && msg.contains(&format!("http://127.0.0.1:{port}"))
            && msg.contains("remove retention_days"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
