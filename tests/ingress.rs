//! End-to-end ingress through the real server and the `airlock` CLI: open, upload, seal,
//! approve, release; digests checked against sha256sum and b3sum; released files read-only.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "airlock failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Builds a small dataset with nested folders under `root/name`.
fn dataset(root: &Path, name: &str) -> Vec<String> {
    let files = [
        (format!("{name}/readme.txt"), b"a dataset\n".to_vec()),
        (format!("{name}/tables/visits.csv"), bytes(300_000, 1)),
        (
            format!("{name}/tables/deep/nested/genome.bin"),
            bytes(2_500_000, 2),
        ),
        (format!("{name}/empty.dat"), Vec::new()),
        // Legal names that object stores like to escape: they must reach disk as written.
        (format!("{name}/tables/data[1] 100%.csv"), bytes(1000, 5)),
        (format!("{name}/~$budget {{draft}}.xlsx"), bytes(1000, 6)),
        (format!("{name}/ünïcode 名前 q?#x|<y>.txt"), bytes(1000, 7)),
    ];
    for (rel, content) in &files {
        write(root, rel, content);
    }
    files.iter().map(|(r, _)| r.clone()).collect()
}

async fn happy_path(kind: &str, uploader: &str, volume: &str) {
    let t = TestApp::spawn().await;
    let people = t
        .bootstrap(if kind == "software-ingress" { 2 } else { 1 })
        .await;
    let work = tempfile::tempdir().unwrap();
    let rels = dataset(work.path(), "ds");

    // The PM opens the transfer and issues the token with the CLI.
    let id = ok(t.cli(
        Some(&people.pm),
        &[
            "transfer",
            "create",
            "--workspace",
            "proj/ws",
            "--kind",
            kind,
            "--uploader",
            uploader,
        ],
    ))
    .trim()
    .to_owned();
    let token = ok(t.cli(Some(&people.pm), &["transfer", "token", &id, "--ttl", "2h"]))
        .trim()
        .to_owned();

    // The uploader sends a folder, from its parent directory, and seals.
    let up = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .current_dir(work.path())
        .env("AIRLOCK_SERVER", &t.url)
        .args(["upload", "--token", &token, "ds"])
        .output()
        .unwrap();
    ok(up);
    let sealed = ok(Command::new(env!("CARGO_BIN_EXE_airlock"))
        .env("AIRLOCK_SERVER", &t.url)
        .args(["seal", "--token", &token])
        .output()
        .unwrap());
    // Scanning starts at once, in the background; review follows clean scans.
    assert!(sealed.starts_with("scanning"), "{sealed}");
    t.scans_done(&id).await;

    // The sealed manifest: every file, digests equal to sha256sum and b3sum of the originals.
    let v: Value = serde_json::from_str(&ok(
        t.cli(Some(&people.pm), &["transfer", "show", &id, "--json"])
    ))
    .unwrap();
    assert_eq!(v["kind"], kind);
    assert_eq!(v["state"], "in_review");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), rels.len());
    for rel in &rels {
        let f = files
            .iter()
            .find(|f| f["path"] == rel.as_str())
            .unwrap_or_else(|| panic!("{rel} missing"));
        let local = work.path().join(rel);
        assert_eq!(f["size"], std::fs::metadata(&local).unwrap().len());
        assert_eq!(f["sha256"], digest_with("sha256sum", &local), "{rel}");
        assert_eq!(f["blake3"], digest_with("b3sum", &local), "{rel}");
    }
    // The root digest can be recomputed by anyone from the manifest.
    let mut lines: Vec<String> = files
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {}\n",
                f["sha256"].as_str().unwrap(),
                f["blake3"].as_str().unwrap(),
                f["size"],
                f["path"].as_str().unwrap()
            )
        })
        .collect();
    lines.sort_by(|a, b| a.split(' ').nth(3).cmp(&b.split(' ').nth(3)));
    let manifest_file = work.path().join("manifest.txt");
    std::fs::write(&manifest_file, lines.concat()).unwrap();
    assert_eq!(v["root_digest"], digest_with("sha256sum", &manifest_file));

    // The uploader cannot approve; the Investigator can.
    let uploader_token = if uploader == "prov" {
        &people.prov
    } else {
        &people.researcher
    };
    let (status, _) = t
        .post_json(
            uploader_token,
            &format!("/transfers/{id}/approve"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    ok(t.cli(
        Some(&people.inv),
        &[
            "transfer",
            "approve",
            &id,
            "--as",
            "investigator",
            "--comment",
            "looks right",
        ],
    ));
    let v = t.wait_for_state(&people.pm, &id, "released").await;
    assert_eq!(v["decisions"][0]["user"], "inv");
    assert_eq!(v["decisions"][0]["root_digest"], v["root_digest"]);

    // Released: byte-identical, files 0444, folders 0555, in the right volume, nothing staged.
    let loc = Path::new(v["release"]["location"].as_str().unwrap()).to_owned();
    assert!(
        loc.starts_with(
            t.data_dir()
                .canonicalize()
                .unwrap()
                .join("volumes/proj/ws")
                .join(volume)
        ),
        "{loc:?}"
    );
    for rel in &rels {
        let released = loc.join(rel);
        assert_eq!(
            std::fs::read(&released).unwrap(),
            std::fs::read(work.path().join(rel)).unwrap(),
            "{rel}"
        );
        assert_eq!(
            std::fs::metadata(&released).unwrap().permissions().mode() & 0o777,
            0o444,
            "{rel}"
        );
        let mut dir = released.parent().unwrap();
        while dir.starts_with(&loc) {
            assert_eq!(
                std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
                0o555,
                "{dir:?}"
            );
            dir = dir.parent().unwrap();
        }
    }
    // Every step is in the hash-chained audit log, and the chain verifies.
    let records = t.app.store.audit_records().await.unwrap();
    airlock::audit::verify_chain(&records).unwrap();
    let actions: Vec<&str> = records
        .iter()
        .filter(|r| r.transfer_id.as_deref() == Some(id.as_str()))
        .map(|r| r.action.as_str())
        .collect();
    for want in [
        "transfer.created",
        "token.issued",
        "token.used",
        "transfer.sealed",
        "transfer.scanning",
        "transfer.in_review",
        "transfer.approved",
        "transfer.released",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    // The client sends big files one by one and packs small ones into tar batches: each
    // lands as `file.uploaded` or, for a batch, one `archive.uploaded` naming its count.
    let uploaded: u64 = records
        .iter()
        .filter(|r| r.transfer_id.as_deref() == Some(id.as_str()))
        .map(|r| match r.action.as_str() {
            "file.uploaded" => 1,
            "archive.uploaded" => serde_json::from_str::<Value>(&r.detail).unwrap()["files"]
                .as_u64()
                .unwrap(),
            _ => 0,
        })
        .sum();
    assert_eq!(uploaded, rels.len() as u64, "{actions:?}");
    let staging = t.data_dir().join("volumes/.staging");
    assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_ingress_goes_from_token_to_a_read_only_release() {
    happy_path("data-ingress", "prov", "data").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn software_ingress_lands_in_the_software_volume() {
    happy_path("software-ingress", "res", "software").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_curl_put_streams_one_file() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let token = t.upload_token(&people.pm, &id, Value::Null).await;
    let work = tempfile::tempdir().unwrap();
    let f = write(work.path(), "big.bin", &bytes(5_000_000, 9));
    let out = run(Command::new("curl").args([
        "-sS",
        "--fail-with-body",
        "-T",
        f.to_str().unwrap(),
        "-H",
        &format!("Authorization: Bearer {token}"),
        &t.api(&format!("/transfers/{id}/files/folder/big.bin")),
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["path"], "folder/big.bin");
    assert_eq!(v["size"], 5_000_000);
    assert_eq!(v["sha256"], digest_with("sha256sum", &f));
    assert_eq!(v["blake3"], digest_with("b3sum", &f));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_digests_are_confirmed_and_a_mismatch_blocks_with_an_incident() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let good = bytes(1000, 3);
    let sha = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };

    // A correct sha256sum manifest passes to review.
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&tok, &id, "a.bin", good.clone()).await.0,
        StatusCode::CREATED
    );
    let sums = format!("{}  ./a.bin\n", sha(&good));
    let (s, v) = t
        .post_json(
            &tok,
            &format!("/transfers/{id}/seal"),
            serde_json::json!({ "sha256sums": sums }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "scanning");
    t.scans_done(&id).await;
    assert_eq!(t.show(&people.pm, &id).await["state"], "in_review");

    // A digest sent with the upload that does not match blocks the transfer at seal.
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let r = t
        .http
        .put(t.api(&format!("/transfers/{id}/files/a.bin")))
        .bearer_auth(&tok)
        .header("airlock-expected-sha256", sha(b"something else"))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let receipt: Value = r.json().await.unwrap();
    assert_eq!(receipt["expected_sha256_matches"], false);
    let (_, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.scans_done(&id).await;
    assert_eq!(v["state"], "blocked");
    let full = t.show(&people.pm, &id).await;
    assert!(
        full["state_reason"]
            .as_str()
            .unwrap()
            .contains("a.bin: provider sent sha256"),
        "{full}"
    );
    assert_eq!(full["incidents"][0]["kind"], "hash-confirmation");

    // A wrong root digest blocks too; approval is then impossible.
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    t.put(&tok, &id, "a.bin", good.clone()).await;
    let (_, v) = t
        .post_json(
            &tok,
            &format!("/transfers/{id}/seal"),
            serde_json::json!({ "expected_root_digest": "0".repeat(64) }),
        )
        .await;
    t.scans_done(&id).await;
    assert_eq!(v["state"], "blocked");
    let (s, _) = t
        .post_json(
            &people.inv,
            &format!("/transfers/{id}/approve"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealing_refuses_unfinished_or_empty_transfers_and_approval_checks_the_digest_seen() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.scans_done(&id).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("empty"));

    // An unfinished tus upload blocks the seal.
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", "10")
        .header("Upload-Metadata", "filename cGFydC5iaW4=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.scans_done(&id).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(v["error"].as_str().unwrap().contains("part.bin"), "{v}");
    let (s, v) = t.put(&tok, &id, "whole.bin", b"x".to_vec()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Delete the unfinished one via tus termination, then seal.
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let d = t
        .http
        .delete(format!("{}{loc}", t.url))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), StatusCode::NO_CONTENT);
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.scans_done(&id).await;

    // A decision against a digest other than the sealed one is refused.
    let (s, _) = t
        .post_json(
            &people.inv,
            &format!("/transfers/{id}/approve"),
            serde_json::json!({ "root_digest": "f".repeat(64) }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Someone outside the project cannot decide, or even learn that the transfer exists.
    let (s, _) = t
        .post_json(
            &people.outsider,
            &format!("/transfers/{id}/approve"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = t
        .get_json(&people.outsider, &format!("/transfers/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Rejection is final.
    let (s, v) = t
        .post_json(
            &people.inv,
            &format!("/transfers/{id}/reject"),
            serde_json::json!({ "comment": "no" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["state"], "rejected");
    let (s, _) = t
        .post_json(
            &people.inv,
            &format!("/transfers/{id}/approve"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_readiness_and_the_openapi_document_cover_every_route() {
    let t = TestApp::spawn().await;
    let r = t
        .http
        .get(format!("{}/healthz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ready"], true);
    assert!(
        v["migrations"]
            .as_str()
            .unwrap()
            .starts_with("ok (version "),
        "{v}"
    );
    let backend = if pg::enabled() { "postgres" } else { "sqlite" };
    assert_eq!(v["database"], backend);
    assert_eq!(v["clamd"], "ok");

    let doc: Value = t
        .http
        .get(format!("{}/openapi.json", t.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = airlock::server::api_routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);

    // Readiness fails when a volume disappears.
    std::fs::rename(
        t.data_dir().join("quarantine"),
        t.data_dir().join("q-moved"),
    )
    .unwrap();
    let r = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    std::fs::rename(
        t.data_dir().join("q-moved"),
        t.data_dir().join("quarantine"),
    )
    .unwrap();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_provider_confirms_the_root_digest_after_seal_and_a_wrong_one_blocks() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let mut roots = Vec::new();
    for _ in 0..2 {
        let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
        let tok = t.upload_token(&people.pm, &id, Value::Null).await;
        t.put(&tok, &id, "a.bin", bytes(1000, 4)).await;
        let (_, v) = t
            .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
            .await;
        t.scans_done(&id).await;
        roots.push((id, v["root_digest"].as_str().unwrap().to_owned()));
    }
    let (good, root) = &roots[0];
    // Only the uploader confirms.
    let (s, _) = t
        .post_json(
            &people.inv,
            &format!("/transfers/{good}/confirm"),
            serde_json::json!({ "root_digest": root }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = t
        .post_json(
            &people.prov,
            &format!("/transfers/{good}/confirm"),
            serde_json::json!({ "root_digest": root }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "in_review");

    let (bad, _) = &roots[1];
    let (s, v) = t
        .post_json(
            &people.prov,
            &format!("/transfers/{bad}/confirm"),
            serde_json::json!({ "root_digest": "ab".repeat(32) }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "blocked");
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("provider confirmed"),
        "{v}"
    );
    assert_eq!(v["incidents"][0]["kind"], "hash-confirmation");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lying_lengths_and_oversize_files_store_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestApp::spawn_with(|s| s.limits.max_file_size = 1_000_000).await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;

    // Content-Length says 100000 but the client stops at 40000 and hangs up.
    let addr = t.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /api/v1/transfers/{id}/files/short.bin HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {tok}\r\nContent-Length: 100000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&bytes(40_000, 1)).await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply).await;
    // Nothing was acknowledged, so nothing is kept: the name is free again.
    for _ in 0..50 {
        if t.app
            .store
            .files(id.parse().unwrap())
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(t
        .app
        .store
        .files(id.parse().unwrap())
        .await
        .unwrap()
        .is_empty());
    let (s1, v) = t.put(&tok, &id, "short.bin", bytes(100_000, 1)).await;
    assert_eq!(s1, StatusCode::CREATED, "{v}");

    // Over the file-size limit: 413, declared or not, and nothing stored.
    let (s2, v) = t.put(&tok, &id, "big.bin", bytes(1_000_001, 2)).await;
    assert_eq!(s2, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
    // A fresh connection: the server closed the last one without reading the refused body.
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", "1000001")
        .header("Upload-Metadata", "filename YmlnLmJpbg==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let files = t.app.store.files(id.parse().unwrap()).await.unwrap();
    assert_eq!(files.len(), 1);
    // No stray segments were left in quarantine for the refused uploads.
    let mut stored = 0;
    for e in walk(&t.data_dir().join("quarantine")) {
        if e.is_file() {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    t.stop().await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_uploads_into_one_transfer_all_land() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let mut jobs = Vec::new();
    for i in 0..24u64 {
        let (http, url, tok) = (
            t.http.clone(),
            t.api(&format!("/transfers/{id}/files/part/{i}.bin")),
            tok.clone(),
        );
        jobs.push(tokio::spawn(async move {
            let r = http
                .put(url)
                .bearer_auth(tok)
                .body(bytes(200_000 + i as usize, i))
                .send()
                .await
                .unwrap();
            r.status()
        }));
    }
    for j in jobs {
        assert_eq!(j.await.unwrap(), StatusCode::CREATED);
    }
    let (_, m) = t.get_json(&tok, &format!("/transfers/{id}/manifest")).await;
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 24);
    for f in files {
        let i: u64 = f["path"]
            .as_str()
            .unwrap()
            .trim_start_matches("part/")
            .trim_end_matches(".bin")
            .parse()
            .unwrap();
        let want = bytes(200_000 + i as usize, i);
        assert_eq!(f["blake3"], blake3::hash(&want).to_hex().as_str());
    }
    let records = t.app.store.audit_records().await.unwrap();
    airlock::audit::verify_chain(&records).unwrap();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_issuer_cannot_approve_even_as_investigator() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    airlock::workflow::admin::add_member(&t.app, "proj", "pm", airlock::domain::Role::Investigator)
        .await
        .unwrap();
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    t.put(&tok, &id, "a.bin", b"a".to_vec()).await;
    t.post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    t.scans_done(&id).await;
    let (s, v) = t
        .post_json(&people.pm, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("issued"), "{v}");
    let (s, _) = t
        .post_json(
            &people.inv,
            &format!("/transfers/{id}/approve"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_published_but_not_recorded_is_verified_and_accepted_or_blocked() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(1).await;
    let mut ids = Vec::new();
    for n in 0..2u64 {
        let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
        let tok = t.upload_token(&people.pm, &id, Value::Null).await;
        t.put(&tok, &id, "d/a.bin", bytes(10_000, n)).await;
        t.post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
            .await;
        t.scans_done(&id).await;
        t.post_json(
            &people.inv,
            &format!("/transfers/{id}/approve"),
            Value::Null,
        )
        .await;
        let v = t.wait_for_state(&people.pm, &id, "released").await;
        ids.push((id, v["release"]["location"].as_str().unwrap().to_owned()));
    }
    // Pretend the service crashed after the rename but before recording the release; the
    // second one's published copy was also changed meanwhile.
    std::fs::write(Path::new(&ids[1].1).join("d/a.bin"), b"tampered").unwrap();
    let dir = t.stop().await;
    {
        let pool = raw_db(dir.path()).await;
        sqlx::query("UPDATE transfers SET state = 'approved', release_location = NULL")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let t = TestApp::spawn_in(dir).await;
    let v = t.wait_for_state(&people.pm, &ids[0].0, "released").await;
    assert_eq!(v["release"]["location"], ids[0].1.as_str());
    let v = t.wait_for_state(&people.pm, &ids[1].0, "blocked").await;
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{v}"
    );
    t.stop().await;
}
