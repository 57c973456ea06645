//! tus 1.0.0: an off-the-shelf client (Debian's python3-tuspy) works unmodified; an upload
//! cut off mid-file resumes, across a server restart too, and ends with the same digests as
//! an uninterrupted one; checksums, offsets and lengths are enforced.

mod common;

use base64::Engine;
use common::tus::{head_offset, patch_then_cut, wait_offset};
use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tuspy_uploads_unmodified_with_checksums_and_small_chunks() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let work = tempfile::tempdir().unwrap();
    let f = write(work.path(), "cohort.parquet", &bytes(3_500_000, 11));
    let sha = digest_with("sha256sum", &f);
    let script = format!(
        r#"
from tusclient import client
c = client.TusClient("{url}", headers={{"Authorization": "Bearer {tok}"}})
u = c.uploader("{file}", chunk_size=1000000, upload_checksum=True,
               metadata={{"relativePath": "cohorts/2026/cohort.parquet", "sha256": "{sha}"}})
u.upload()
print(u.url)
"#,
        url = t.api(&format!("/transfers/{id}/tus")),
        file = f.display()
    );
    let url = run(Command::new("/usr/bin/python3").arg("-c").arg(script));
    assert!(url.trim().starts_with(&t.url), "{url}");
    let (_, m) = t.get_json(&tok, &format!("/transfers/{id}/manifest")).await;
    let file = &m["files"][0];
    assert_eq!(file["path"], "cohorts/2026/cohort.parquet");
    assert_eq!(file["complete"], true);
    assert_eq!(file["sha256"], digest_with("sha256sum", &f));
    assert_eq!(file["blake3"], digest_with("b3sum", &f));
    // The provider's digest, sent as tus metadata, was compared.
    assert_eq!(file["expected_sha256"], sha);
    assert_eq!(file["expected_sha256_matches"], true);
    // Four PATCH requests made four stored segments of one file.
    let fid = t.app.store.files(id.parse().unwrap()).await.unwrap()[0].id;
    assert_eq!(t.app.store.segments(fid).await.unwrap().len(), 4);
    t.stop().await;
}

async fn interrupted_upload_resumes(restart: bool) {
    let mut t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let data = bytes(6_000_000, 21);
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", tus_meta("resumed.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["upload-offset"], "0");

    // The connection drops 2.5 MB into the file; the server keeps what arrived.
    let addr = t.url.trim_start_matches("http://").to_owned();
    patch_then_cut(&addr, &location, &tok, 0, &data[..2_500_000], data.len()).await;
    let offset = wait_offset(&t, &location, &tok, 1).await;
    assert!(offset > 0 && offset <= 2_500_000, "{offset}");

    if restart {
        let dir = t.stop().await;
        t = TestApp::spawn_in(dir).await;
        assert_eq!(head_offset(&t, &location, &tok).await, offset);
    }

    // A PATCH at the wrong offset is refused and changes nothing.
    let r = t
        .tus_patch(
            &tok,
            &format!("{}{location}", t.url),
            "0",
            data[..10].to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(head_offset(&t, &location, &tok).await, offset);

    // Resume where the server says.
    let r = t
        .tus_patch(
            &tok,
            &format!("{}{location}", t.url),
            offset.to_string(),
            data[offset as usize..].to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["upload-offset"], data.len().to_string());

    let work = tempfile::tempdir().unwrap();
    let f = write(work.path(), "resumed.bin", &data);
    let (_, m) = t.get_json(&tok, &format!("/transfers/{id}/manifest")).await;
    assert_eq!(m["files"][0]["complete"], true);
    assert_eq!(m["files"][0]["sha256"], digest_with("sha256sum", &f));
    assert_eq!(m["files"][0]["blake3"], digest_with("b3sum", &f));

    // Sealed and released, the file is byte-identical to the original.
    let (s, _) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.scans_done(&id).await;
    t.post_json(
        &people.inv,
        &format!("/transfers/{id}/approve"),
        Value::Null,
    )
    .await;
    let v = t.wait_for_state(&people.pm, &id, "released").await;
    let released =
        std::path::Path::new(v["release"]["location"].as_str().unwrap()).join("resumed.bin");
    assert!(std::fs::read(released).unwrap() == data);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_cut_off_mid_file_resumes_with_the_same_digests() {
    interrupted_upload_resumes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_cut_off_resumes_after_a_server_restart() {
    interrupted_upload_resumes(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_chunks_are_refused_and_change_nothing() {
    use sha2::Digest;
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let data = bytes(100_000, 5);
    let b64 = base64::engine::general_purpose::STANDARD;

    // Creation with upload, first half.
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", tus_meta("c.bin"))
        .header("Content-Type", "application/offset+octet-stream")
        .header(
            "Upload-Checksum",
            format!(
                "sha256 {}",
                b64.encode(sha2::Sha256::digest(&data[..50_000]))
            ),
        )
        .body(data[..50_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["upload-offset"], "50000");
    let loc = format!("{}{}", t.url, r.headers()["location"].to_str().unwrap());
    let patch = |offset: &str, body: Vec<u8>| t.tus_patch(&tok, &loc, offset, body);

    // A checksum that does not match: 460, offset unchanged.
    let wrong = b64.encode(sha1::Sha1::digest(b"not these bytes"));
    let r = patch("50000", data[50_000..].to_vec())
        .header("Upload-Checksum", format!("sha1 {wrong}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 460);
    // An unknown checksum algorithm: 400.
    let r = patch("50000", data[50_000..].to_vec())
        .header("Upload-Checksum", "md5 AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // More bytes than Upload-Length: refused, offset unchanged.
    let mut too_long = data[50_000..].to_vec();
    too_long.extend_from_slice(b"extra");
    let r = patch("50000", too_long).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Wrong content type: 415; no Tus-Resumable: 412.
    let r = t
        .http
        .patch(&loc)
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "50000")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = t
        .http
        .patch(&loc)
        .bearer_auth(&tok)
        .header("Upload-Offset", "50000")
        .header("Content-Type", "application/offset+octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    let r = t
        .http
        .head(&loc)
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["upload-offset"], "50000");

    // The right second half, with a matching checksum, completes the file correctly.
    let good = b64.encode(sha1::Sha1::digest(&data[50_000..]));
    let r = patch("50000", data[50_000..].to_vec())
        .header("Upload-Checksum", format!("sha1 {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, m) = t.get_json(&tok, &format!("/transfers/{id}/manifest")).await;
    assert_eq!(
        m["files"][0]["sha256"],
        hex::encode(sha2::Sha256::digest(&data))
    );
    assert_eq!(
        m["files"][0]["blake3"],
        blake3::hash(&data).to_hex().as_str()
    );
    // Once complete, further PATCHes are refused.
    let r = patch("100000", b"x".to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Creation needs a length and a name.
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Metadata", tus_meta("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creation_with_upload_refuses_cleanly_and_the_upload_url_dies_at_seal() {
    use sha2::Digest;
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let data = bytes(20_000, 3);
    let create = |name: &str, len: usize| {
        t.tus_create(&tok, &id)
            .header("Upload-Length", len.to_string())
            .header("Upload-Metadata", tus_meta(name))
            .header("Content-Type", "application/offset+octet-stream")
    };
    // An unknown checksum algorithm or a body longer than Upload-Length: nothing reserved.
    let r = create("x.bin", data.len())
        .header("Upload-Checksum", "crc32 AAAA")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = create("y.bin", 10).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(t
        .app
        .store
        .files(id.parse().unwrap())
        .await
        .unwrap()
        .is_empty());

    // A wrong checksum on the creation body: 460 with the Location to retry at offset 0.
    let wrong = b64.encode(sha2::Sha256::digest(b"other"));
    let r = create("z.bin", data.len())
        .header("Upload-Checksum", format!("sha256 {wrong}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 460);
    let loc = format!("{}{}", t.url, r.headers()["location"].to_str().unwrap());
    let r = t
        .tus_patch(&tok, &loc, "0", data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // After seal, the upload URL answers nothing but 401.
    let (s, _) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.scans_done(&id).await;
    for m in [
        reqwest::Method::HEAD,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let r = t
            .http
            .request(m.clone(), &loc)
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{m}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_providers_sha256_may_come_with_the_last_patch_and_is_compared_at_seal() {
    // A client that hashes while it sends knows the digest only at the end: it sends it in
    // Airlock-Expected-Sha256 with the last PATCH, and the server treats it as it treats the
    // creation's `sha256` metadata.
    use sha2::Digest;
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let create = |name: &'static str, len: usize, meta: String| {
        let t = &t;
        let (tok, id) = (tok.clone(), id.clone());
        async move {
            let r = t
                .tus_create(&tok, &id)
                .header("Upload-Length", len.to_string())
                .header("Upload-Metadata", meta)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED, "{name}");
            r.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    let full = |loc: &str| format!("{}{loc}", t.url);
    // A PATCH the server refuses before reading its body: on a connection of its own (the
    // server closes it, and a pooled one would fail the next request).
    let refused_patch = |url: &str, offset: usize, body: Vec<u8>, digest: String| {
        reqwest::Client::new()
            .patch(url)
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .header("Airlock-Expected-Sha256", digest)
            .body(body)
            .send()
    };
    let good = bytes(300_000, 31);
    let good_sha = hex::encode(sha2::Sha256::digest(&good));
    let rel = create("good.bin", good.len(), tus_meta("good.bin")).await;
    let loc = full(&rel);
    let r = t
        .tus_patch(&tok, &loc, 0, good[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Not a digest: 400, and the bytes are not taken.
    let r = refused_patch(&loc, 100_000, good[100_000..].to_vec(), "not-hex".into())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("airlock-expected-sha256"));
    assert_eq!(head_offset(&t, &rel, &tok).await, 100_000);
    let r = t
        .tus_patch(&tok, &loc, 100_000, good[100_000..].to_vec())
        .header("Airlock-Expected-Sha256", &good_sha)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // A file whose creation named one digest cannot be given another at the end.
    let other = bytes(50_000, 32);
    let b64 = base64::engine::general_purpose::STANDARD;
    let named = hex::encode(sha2::Sha256::digest(&other));
    let rel2 = create(
        "other.bin",
        other.len(),
        format!("{},sha256 {}", tus_meta("other.bin"), b64.encode(&named)),
    )
    .await;
    let loc2 = full(&rel2);
    let r = refused_patch(&loc2, 0, other.clone(), "ab".repeat(32))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("differs"));
    assert_eq!(head_offset(&t, &rel2, &tok).await, 0);

    // A wrong digest at the end is recorded as given, and found at seal.
    let bad = bytes(70_000, 33);
    let loc3 = full(&create("bad.bin", bad.len(), tus_meta("bad.bin")).await);
    let r = t
        .tus_patch(&tok, &loc3, 0, bad.clone())
        .header("Airlock-Expected-Sha256", "cd".repeat(32))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let (_, m) = t.get_json(&tok, &format!("/transfers/{id}/manifest")).await;
    let by_path = |p: &str| {
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == p)
            .unwrap()
            .clone()
    };
    let g = by_path("good.bin");
    assert_eq!(g["sha256"], good_sha);
    assert_eq!(g["expected_sha256"], good_sha);
    assert_eq!(g["expected_sha256_matches"], true);
    let b = by_path("bad.bin");
    assert_eq!(b["expected_sha256"], "cd".repeat(32));
    assert_eq!(b["expected_sha256_matches"], false);
    // other.bin is not complete: finish it with no header, its creation's digest stands.
    let r = t.tus_patch(&tok, &loc2, 0, other).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, m) = t.get_json(&tok, &format!("/transfers/{id}/manifest")).await;
    let o = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "other.bin")
        .unwrap()
        .clone();
    assert_eq!(o["expected_sha256_matches"], true);
    // Seal finds the mismatch and blocks the transfer, naming the file.
    let (_, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.scans_done(&id).await;
    assert_eq!(v["state"], "blocked", "{v}");
    let full = t.show(&people.pm, &id).await;
    let reason = full["state_reason"].as_str().unwrap();
    assert!(reason.contains("bad.bin: provider sent sha256"), "{full}");
    assert!(
        !reason.contains("good.bin") && !reason.contains("other.bin"),
        "{full}"
    );
    t.stop().await;
}
