//! Tar streams expanded by the server (issue 11, 3a): by PUT (chunked, no Content-Length) and by
//! tus (interrupted, resumed across a restart), every member's digests equal sha256sum/b3sum of
//! its source; a PAX `AIRLOCK.sha256` that does not match blocks at seal; a bad member (hostile
//! name, link, device, collision, over a limit) or a broken stream refuses the whole archive,
//! names the member and changes nothing: rows, counts, bytes, quarantine contents, one audit
//! record of the refusal.

mod common;

use airlock::domain::TransferId;
use base64::Engine;
use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// A member of a test archive, built with the tar crate's Header API (raw names included, so
/// hostile ones reach the server exactly as written).
enum M<'a> {
    File(&'a str, &'a [u8]),
    /// A file with a PAX `AIRLOCK.sha256` record.
    Digest(&'a str, &'a [u8], &'a str),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    CharDevice(&'a str),
    Fifo(&'a str),
}

fn raw_header(kind: tar::EntryType, name: &[u8], size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn archive(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        match m {
            M::File(name, data) if name.len() <= 100 => {
                let h = raw_header(tar::EntryType::Regular, name.as_bytes(), data.len() as u64);
                b.append(&h, *data).unwrap();
            }
            M::File(name, data) => {
                // A long name: the tar crate writes a GNU long-name record for it.
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, name, *data).unwrap();
            }
            M::Digest(name, data, digest) => {
                b.append_pax_extensions([("AIRLOCK.sha256", digest.as_bytes())])
                    .unwrap();
                let h = raw_header(tar::EntryType::Regular, name.as_bytes(), data.len() as u64);
                b.append(&h, *data).unwrap();
            }
            M::Dir(name) => {
                let h = raw_header(tar::EntryType::Directory, name.as_bytes(), 0);
                b.append(&h, std::io::empty()).unwrap();
            }
            M::Symlink(name, target) | M::HardLink(name, target) => {
                let kind = if matches!(m, M::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = raw_header(kind, name.as_bytes(), 0);
                h.set_link_name(target).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            M::CharDevice(name) => {
                let mut h = raw_header(tar::EntryType::Char, name.as_bytes(), 0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            M::Fifo(name) => {
                let h = raw_header(tar::EntryType::Fifo, name.as_bytes(), 0);
                b.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The body as a chunked stream of `chunk`-byte frames: no Content-Length.
fn chunked(data: Vec<u8>, chunk: usize) -> reqwest::Body {
    let frames: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(frames))
}

async fn put_archive(
    t: &TestApp,
    tok: &str,
    id: &str,
    query: &str,
    body: reqwest::Body,
) -> (StatusCode, Value) {
    t.put_archive(tok, id, query, body).await
}

/// `tool FILE...` → {file: digest}, one run for all of them.
fn digests_with(tool: &str, dir: &Path, files: &[String]) -> BTreeMap<String, String> {
    let out = run(Command::new(tool).current_dir(dir).args(files));
    out.lines()
        .map(|l| {
            let (d, f) = l.split_once("  ").unwrap();
            (f.to_owned(), d.to_owned())
        })
        .collect()
}

/// Everything under the quarantine volume, with sizes: what a refusal must leave as it was.
fn quarantine(t: &TestApp) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, e.metadata().unwrap().len());
            }
        }
    }
    let root = t.data_dir().join("quarantine");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// What a refusal must not change: counts, bytes, the listing and the quarantine volume.
#[derive(Debug, PartialEq)]
struct Snapshot {
    files: u64,
    complete: u64,
    received: u64,
    reserved: u64,
    listing: Vec<(String, Option<String>)>,
    quarantine: BTreeMap<String, u64>,
}

async fn snapshot(t: &TestApp, id: &str) -> Snapshot {
    let tid: TransferId = id.parse().unwrap();
    let totals = t.app.store.totals(tid).await.unwrap();
    let listing = t
        .app
        .store
        .files_page(tid, None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.path, f.sha256))
        .collect();
    Snapshot {
        files: totals.files,
        complete: totals.complete,
        received: totals.received,
        reserved: totals.reserved,
        listing,
        quarantine: quarantine(t),
    }
}

async fn audit_actions(t: &TestApp, action: &str) -> usize {
    airlock::workflow::refusals::flush(&t.app).await.unwrap();
    t.app
        .store
        .audit_records()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.action == action)
        .map(|r| {
            // Repeats within a window are written as one summary with their count.
            let d: Value = serde_json::from_str(&r.detail).unwrap();
            if d["summary"] == true {
                d["count"].as_u64().unwrap() as usize
            } else {
                1
            }
        })
        .sum()
}

/// A source tree of nested folders: (relative path, bytes), a big member and an empty one among
/// the small ones, and a name too long for a plain tar header.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for d in 0..12 {
        for f in 0..10 {
            let rel = format!("set{d}/sub{}/f{f}.dat", d % 3);
            let len = 50 + (d * 37 + f * 101) % 3000;
            files.push((rel, bytes(len, (d * 10 + f) as u64 + 1)));
        }
    }
    files.push(("big/large.bin".into(), bytes(3 * 1024 * 1024 + 17, 99)));
    files.push(("empty/nothing.txt".into(), Vec::new()));
    let long = format!("long/{}/name.txt", "n".repeat(140));
    files.push((long, b"long name".to_vec()));
    for (rel, data) in &files {
        write(dir, rel, data);
    }
    files
}

fn check_receipts(receipts: &[Value], src: &Path, files: &[(String, Vec<u8>)], prefix: &str) {
    assert_eq!(receipts.len(), files.len());
    let names: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let sha = digests_with("sha256sum", src, &names);
    let b3 = digests_with("b3sum", src, &names);
    for (r, (rel, data)) in receipts.iter().zip(files) {
        assert_eq!(r["path"], format!("{prefix}{rel}"), "member order");
        assert_eq!(r["size"], data.len() as u64, "{rel}");
        assert_eq!(r["complete"], true);
        assert_eq!(r["sha256"].as_str().unwrap(), sha[rel], "{rel}");
        assert_eq!(r["blake3"].as_str().unwrap(), b3[rel], "{rel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunked_put_of_a_tar_of_nested_folders_becomes_its_files_with_their_digests() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let src = tempfile::tempdir().unwrap();
    let files = tree(src.path());
    let mut members: Vec<M> = vec![M::Dir("./"), M::Dir("set0/")];
    for (rel, data) in &files {
        members.push(M::File(rel, data));
    }
    let tar = archive(&members);
    let (s, v) = put_archive(&t, &tok, &id, "?prefix=batch%2F1", chunked(tar, 7_777)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    check_receipts(
        v["files"].as_array().unwrap(),
        src.path(),
        &files,
        "batch/1/",
    );

    // Counted, listed and stored like PUT files: each as one quarantine segment.
    let tid: TransferId = id.parse().unwrap();
    let totals = t.app.store.totals(tid).await.unwrap();
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(totals.files, files.len() as u64);
    assert_eq!(totals.complete, files.len() as u64);
    assert_eq!(totals.received, total);
    let row = t
        .app
        .store
        .file_by_path(tid, "batch/1/big/large.bin")
        .await
        .unwrap()
        .unwrap();
    let on_disk = std::fs::read(t.app.volumes.segment_path(tid, row.id, 0)).unwrap();
    assert_eq!(on_disk, files[files.len() - 3].1);
    // One audit event for the archive, none per member.
    assert_eq!(audit_actions(&t, "archive.uploaded").await, 1);
    assert_eq!(audit_actions(&t, "file.uploaded").await, 0);

    // The manifest seals and reaches review like any other.
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.scans_done(&id).await;
    assert_eq!(t.show(&people.pm, &id).await["state"], "in_review");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pax_digest_that_does_not_match_blocks_at_seal() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let good = b"the right bytes".to_vec();
    let right = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&good));
    let wrong = "0".repeat(64);
    let tar = archive(&[
        M::Digest("ok.txt", &good, &right),
        M::Digest("bad.txt", &good, &wrong),
    ]);
    let (s, v) = put_archive(&t, &tok, &id, "", tar.into()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["files"][0]["expected_sha256_matches"], true, "{v}");
    assert_eq!(v["files"][1]["expected_sha256_matches"], false, "{v}");
    assert_eq!(v["files"][1]["expected_sha256"], wrong);
    let (_, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(v["state"], "blocked", "{v}");
    let full = t.show(&people.pm, &id).await;
    let reason = full["state_reason"].as_str().unwrap();
    assert!(reason.contains("bad.txt: provider sent sha256"), "{full}");
    assert!(!reason.contains("ok.txt"), "{full}");
    t.stop().await;
}

fn tus_archive_meta(prefix: Option<&str>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut m = format!("archive {}", b64.encode("tar"));
    if let Some(p) = prefix {
        m.push_str(&format!(",prefix {}", b64.encode(p)));
    }
    m
}

/// The status of a tus HEAD of the upload at `url`, and its answer.
async fn tus_head(tok: &str, url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .head(url)
        .bearer_auth(tok)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap()
}

async fn head_offset(t: &TestApp, tok: &str, url: &str) -> u64 {
    let r = tus_head(tok, url).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = t;
    r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tar_over_tus_resumes_after_an_interruption_and_a_restart_and_is_accepted_at_the_end() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let src = tempfile::tempdir().unwrap();
    let files = tree(src.path());
    let members: Vec<M> = files.iter().map(|(p, d)| M::File(p, d)).collect();
    let tar = archive(&members);
    let len = tar.len();

    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", len.to_string())
        .header("Upload-Metadata", tus_archive_meta(Some("tusbatch")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let url = format!("{}{loc}", t.url);

    // First third, acknowledged.
    let third = len / 3;
    let r = t
        .tus_patch(&tok, &url, 0, tar[..third].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["upload-offset"], third.to_string().as_str());

    // Not a file of the manifest: nothing listed or counted, and seal waits for it.
    let tid: TransferId = id.parse().unwrap();
    assert_eq!(t.app.store.totals(tid).await.unwrap().files, 0);
    t.put(&tok, &id, "other.txt", b"x".to_vec()).await;
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("archive upload"),
        "{v}"
    );

    // The server restarts; the upload resumes where HEAD says.
    let dir = t.stop().await;
    let t = TestApp::spawn_in(dir).await;
    let url = format!("{}{loc}", t.url);
    assert_eq!(head_offset(&t, &tok, &url).await, third as u64);

    // A PATCH cut off halfway keeps what arrived.
    let part: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(tar[third..third + 700_000].to_vec()),
        Err(std::io::Error::other("cable pulled")),
    ];
    let _ = t
        .http
        .patch(&url)
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", third.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(part)))
        .send()
        .await;
    let mut at = third as u64;
    for _ in 0..50 {
        at = head_offset(&t, &tok, &url).await;
        if at > third as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(at >= third as u64 && at <= (third + 700_000) as u64, "{at}");
    assert_eq!(t.app.store.totals(tid).await.unwrap().files, 1);

    // The rest: the final PATCH expands the archive.
    let r = t
        .tus_patch(&tok, &url, at, tar[at as usize..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["upload-offset"], len.to_string().as_str());
    assert_eq!(
        r.headers()["airlock-archive-files"],
        files.len().to_string().as_str()
    );
    let mut receipts = Vec::new();
    for (rel, _) in &files {
        let f = t
            .app
            .store
            .file_by_path(tid, &format!("tusbatch/{rel}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{rel} missing"));
        receipts.push(serde_json::json!({
            "path": f.path, "size": f.received, "complete": f.complete,
            "sha256": f.sha256, "blake3": f.blake3,
        }));
    }
    check_receipts(&receipts, src.path(), &files, "tusbatch/");
    assert_eq!(
        t.app.store.totals(tid).await.unwrap().files,
        files.len() as u64 + 1
    );
    // The upload itself is gone, and so are its bytes.
    assert_eq!(tus_head(&tok, &url).await.status(), StatusCode::NOT_FOUND);
    assert!(!quarantine(&t).keys().any(|k| k.starts_with("archives/")));
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_tar_over_tus_answers_the_final_patch_and_leaves_nothing() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let before = snapshot(&t, &id).await;
    let tar = archive(&[
        M::File("fine.txt", b"fine"),
        M::Symlink("sneaky", "/etc/shadow"),
    ]);
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", tar.len().to_string())
        .header("Upload-Metadata", tus_archive_meta(None))
        .send()
        .await
        .unwrap();
    let url = format!("{}{}", t.url, r.headers()["location"].to_str().unwrap());
    let r = t.tus_patch(&tok, &url, 0, tar).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("`sneaky`"), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("symbolic link"),
        "{v}"
    );
    assert_eq!(snapshot(&t, &id).await, before);
    assert_eq!(tus_head(&tok, &url).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(audit_actions(&t, "archive.refused").await, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tar_over_tus_is_expanded_as_it_arrives_and_a_bad_member_refuses_the_patch_that_brings_it(
) {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let before = snapshot(&t, &id).await;
    let big = bytes(3_000_000, 77);
    let tar = archive(&[
        M::File("first.txt", b"first"),
        M::File("large.bin", &big),
        M::Symlink("sneaky", "/etc/shadow"),
        M::File("after.bin", &big),
    ]);
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", tar.len().to_string())
        .header("Upload-Metadata", tus_archive_meta(None))
        .send()
        .await
        .unwrap();
    let url = format!("{}{}", t.url, r.headers()["location"].to_str().unwrap());
    // The first PATCH: the first member and most of the large one. Taken in as it arrives:
    // its members are written to quarantine already, none listed.
    let cut = 2_000_000;
    let r = t
        .tus_patch(&tok, &url, 0, tar[..cut].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let tid: TransferId = id.parse().unwrap();
    assert_eq!(t.app.store.totals(tid).await.unwrap().files, 0);
    // (Members are written in 1 MiB parts: the first part of large.bin is on disk by now,
    // give or take the last write landing.)
    let mut stored = 0;
    for _ in 0..40 {
        stored = quarantine(&t)
            .iter()
            .filter(|(k, _)| !k.starts_with("archives/"))
            .map(|(_, n)| *n)
            .sum::<u64>();
        if stored >= 1_000_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        stored >= 1_000_000,
        "the members of the first piece are not written yet ({stored} bytes)"
    );
    // The second PATCH brings the link, and a megabyte past it: that PATCH is refused, the
    // link named, before the rest of the archive is sent.
    let link_end = 3_100_000 + 1_048_576;
    let r = t
        .tus_patch(&tok, &url, cut, tar[cut..link_end].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("`sneaky`"), "{v}");
    // Nothing of it is kept: no member, no upload, the same quarantine as before.
    assert_eq!(snapshot(&t, &id).await, before);
    assert_eq!(tus_head(&tok, &url).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(audit_actions(&t, "archive.refused").await, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_hostile_member_refuses_the_whole_archive_named_and_changes_nothing() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let (s, _) = t
        .put(&tok, &id, "kept/existing.txt", b"already here".to_vec())
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let before = snapshot(&t, &id).await;
    let big = bytes(300_000, 5);
    let cases: Vec<(M, &str)> = vec![
        (M::File("../escape.txt", b"x"), "../escape.txt"),
        (M::File("a/../../b.txt", b"x"), "a/../../b.txt"),
        (M::File("/etc/passwd", b"x"), "/etc/passwd"),
        (M::File("dir\\win.txt", b"x"), "dir\\win.txt"),
        (M::File("ctl\nname.txt", b"x"), "name.txt"),
        (M::File("zero\u{200B}width.txt", b"x"), "width.txt"),
        (M::File("rtl\u{202E}txt.exe", b"x"), "txt.exe"),
        (M::File("report#2", b"x"), "report#2"),
        (M::File("a//b.txt", b"x"), "a//b.txt"),
        (M::File("\u{FF0E}\u{FF0E}/up.txt", b"x"), "up.txt"),
        (M::Symlink("link-to-etc", "/etc"), "link-to-etc"),
        (M::HardLink("hard", "good/0.txt"), "hard"),
        (M::CharDevice("dev-null"), "dev-null"),
        (M::Fifo("pipe"), "pipe"),
    ];
    let mut refusals = 0;
    for (bad, named) in cases {
        // Good members first (a big one among them), so bytes were written before the refusal.
        let tar = archive(&[
            M::File("good/0.txt", b"fine"),
            M::File("good/big.bin", &big),
            bad,
            M::File("good/after.txt", b"never reached"),
        ]);
        let (s, v) = put_archive(&t, &tok, &id, "", chunked(tar, 4096)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{named}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("archive member"), "{named}: {msg}");
        assert!(msg.contains(named), "{named}: {msg}");
        assert_eq!(snapshot(&t, &id).await, before, "{named} changed something");
        refusals += 1;
    }
    // Each refusal is on the record once.
    assert_eq!(audit_actions(&t, "archive.refused").await, refusals);

    // A broken stream is refused likewise: cut short, no end block, a damaged header.
    let good = archive(&[M::File("good/0.txt", b"fine"), M::File("good/1.txt", &big)]);
    let cut = good[..good.len() - 1024 - 100_000].to_vec();
    let no_end = good[..good.len() - 1024].to_vec();
    let mut damaged = good.clone();
    // The first header's name changes under its checksum.
    damaged[0] ^= 0x01;
    for (body, what) in [
        (cut, "cut"),
        (no_end, "end-of-archive"),
        (damaged, "checksum"),
    ] {
        let (s, v) = put_archive(&t, &tok, &id, "", chunked(body, 10_000)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {v}");
        assert!(v["error"].as_str().unwrap().contains("tar"), "{what}: {v}");
        assert_eq!(snapshot(&t, &id).await, before, "{what} changed something");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collisions_with_a_file_or_between_members_refuse_the_whole_archive() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let (s, _) = t.put(&tok, &id, "Data/File.csv", b"a,b\n".to_vec()).await;
    assert_eq!(s, StatusCode::CREATED);
    let before = snapshot(&t, &id).await;
    let cases: Vec<(Vec<M>, &str)> = vec![
        // With the file already there: case, width, and file against folder.
        (
            vec![M::File("ok.txt", b"1"), M::File("data/file.CSV", b"2")],
            "data/file.CSV",
        ),
        (
            vec![M::File("ok.txt", b"1"), M::File("ｄａｔａ/File.csv", b"2")],
            "ｄａｔａ/File.csv",
        ),
        (
            vec![M::File("ok.txt", b"1"), M::File("data/file.csv/x", b"2")],
            "data/file.csv/x",
        ),
        (vec![M::File("ok.txt", b"1"), M::File("DATA", b"2")], "DATA"),
        // Between members of one archive.
        (
            vec![M::File("x/a.txt", b"1"), M::File("X/A.TXT", b"2")],
            "X/A.TXT",
        ),
        (
            vec![
                M::File("n/café.txt", b"1"),
                M::File("n/cafe\u{301}.txt", b"2"),
            ],
            "n/cafe\u{301}.txt",
        ),
        (vec![M::File("f", b"1"), M::File("f/g", b"2")], "f/g"),
        (vec![M::File("y/z/w", b"1"), M::File("y/z", b"2")], "y/z"),
    ];
    // Members are inserted a few hundred per statement: collisions across those batches too.
    let fill: Vec<String> = (0..450).map(|i| format!("fill/{i:03}.txt")).collect();
    let across = |first: &'static str, last: &'static str| {
        let mut m = vec![M::File(first, b"1")];
        m.extend(fill.iter().map(|p| M::File(p, b"f")));
        m.push(M::File(last, b"2"));
        (m, last)
    };
    let mut cases = cases;
    cases.push(across("far/away.txt", "FAR/Away.TXT"));
    cases.push(across("deep", "deep/under.txt"));
    cases.push(across("up/down.txt", "up"));
    for (members, named) in cases {
        let (s, v) = put_archive(&t, &tok, &id, "", archive(&members).into()).await;
        assert_eq!(s, StatusCode::CONFLICT, "{named}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(&format!("archive member `{named}`")),
            "{named}: {msg}"
        );
        assert_eq!(snapshot(&t, &id).await, before, "{named} changed something");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_over_a_limit_refuses_the_archive_with_413() {
    let t = TestApp::spawn_with(|s| {
        s.limits.max_file_size = 1000;
        s.limits.max_files = 4;
    })
    .await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let (s, _) = t.put(&tok, &id, "one.txt", b"1".to_vec()).await;
    assert_eq!(s, StatusCode::CREATED);
    let before = snapshot(&t, &id).await;
    let big = bytes(1001, 1);
    let tar = archive(&[M::File("a.txt", b"a"), M::File("too-big.bin", &big)]);
    let (s, v) = put_archive(&t, &tok, &id, "", chunked(tar, 300)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("too-big.bin"), "{v}");
    assert_eq!(snapshot(&t, &id).await, before);
    // Four files at most: one is there, the fourth member would be the fifth.
    let tar = archive(&[
        M::File("b1", b"1"),
        M::File("b2", b"2"),
        M::File("b3", b"3"),
        M::File("b4", b"4"),
    ]);
    let (s, v) = put_archive(&t, &tok, &id, "", tar.into()).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("`b4`"), "{v}");
    assert_eq!(snapshot(&t, &id).await, before);
    // Three fit.
    let tar = archive(&[
        M::File("b1", b"1"),
        M::File("b2", b"2"),
        M::File("b3", b"3"),
    ]);
    let (s, v) = put_archive(&t, &tok, &id, "", tar.into()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["files"].as_array().unwrap().len(), 3);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_left_by_a_crash_mid_expansion_are_removed_at_start_and_never_counted() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let (s, v) = put_archive(
        &t,
        &tok,
        &id,
        "",
        archive(&[M::File("kept.txt", b"kept")]).into(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tid: TransferId = id.parse().unwrap();
    let kept = t
        .app
        .store
        .file_by_path(tid, "kept.txt")
        .await
        .unwrap()
        .unwrap();
    // What a crash between writing members and accepting them leaves: member bytes without
    // rows, and the spooled member list (which also names an accepted member, as after a crash
    // between the commit and the list's removal).
    let orphan = airlock::domain::FileId::new();
    let seg = t.app.volumes.segment_path(tid, orphan, 0);
    std::fs::create_dir_all(seg.parent().unwrap()).unwrap();
    std::fs::write(&seg, b"half-expanded").unwrap();
    let line = |fid: String, path: &str| {
        serde_json::json!({
            "id": fid, "transfer": id, "path": path, "raw": path, "size": 4,
            "sha256": "0".repeat(64), "blake3": "0".repeat(64), "expected": null,
        })
        .to_string()
    };
    // And a pack that was being written: its line comes before any of its bytes.
    let pack_id = airlock::domain::FileId::new();
    let orphan_pack = t.app.volumes.segment_path(tid, pack_id, 0);
    std::fs::create_dir_all(orphan_pack.parent().unwrap()).unwrap();
    std::fs::write(&orphan_pack, b"packed members").unwrap();
    let pack_line = serde_json::json!({ "pack_of": id, "pack": pack_id }).to_string();
    let spool = t.app.volumes.archive_spool(airlock::domain::FileId::new());
    std::fs::create_dir_all(spool.parent().unwrap()).unwrap();
    std::fs::write(
        &spool,
        format!(
            "{pack_line}\n{}\n{}\n",
            line(kept.id.to_string(), "kept.txt"),
            line(orphan.to_string(), "orphan.txt")
        ),
    )
    .unwrap();
    let before = t.app.store.totals(tid).await.unwrap();
    let dir = t.stop().await;
    let t = TestApp::spawn_in(dir).await;
    // The sweep runs as the server starts, before it serves.
    t.show(&people.pm, &id).await;
    assert!(!seg.exists(), "the orphan member is removed");
    assert!(!spool.exists(), "the member list is removed");
    // The accepted member lives in its archive's pack, which stays.
    let at = kept.pack.expect("a small member is packed");
    let pack = std::fs::read(t.app.volumes.segment_path(tid, at.id, 0)).unwrap();
    assert_eq!(&pack[at.offset as usize..at.offset as usize + 4], b"kept");
    assert!(
        !orphan_pack.exists(),
        "the pack of an archive never accepted is removed"
    );
    let after = t.app.store.totals(tid).await.unwrap();
    assert_eq!(
        (after.files, after.received),
        (before.files, before.received)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gnu_tar_piped_into_curl_lands_in_both_formats() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let src = tempfile::tempdir().unwrap();
    let files = tree(src.path());
    let names: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let sha = digests_with("sha256sum", src.path(), &names);
    let tid: TransferId = id.parse().unwrap();
    for format in ["gnu", "pax"] {
        // `tar -c` of the tree's top folders, streamed by curl without a length (chunked).
        let tops = [
            "set0", "set1", "set2", "set3", "set4", "set5", "set6", "set7", "set8", "set9",
            "set10", "set11", "big", "empty", "long",
        ];
        let script = format!(
            "tar --format={format} -cf - {} | curl -sS -f -T - -H 'Content-Type: application/x-tar' \
             -H 'Authorization: Bearer {tok}' '{}?prefix={format}'",
            tops.join(" "),
            t.api(&format!("/transfers/{id}/archive"))
        );
        let out = run(Command::new("sh")
            .arg("-c")
            .arg(&script)
            .current_dir(src.path()));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["files"].as_array().unwrap().len(),
            files.len(),
            "{format}"
        );
        for (rel, _) in &files {
            let f = t
                .app
                .store
                .file_by_path(tid, &format!("{format}/{rel}"))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{format}: {rel} missing"));
            assert_eq!(
                f.sha256.as_deref(),
                Some(sha[rel].as_str()),
                "{format}: {rel}"
            );
        }
    }
    t.stop().await;
}

/// `airlock verify ID`: whether it passed, and everything it printed.
fn verify(t: &TestApp, id: &str) -> (bool, String) {
    let out = t.cli(None, &["verify", id]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Small members share one pack object; each is still checked on its own. `airlock verify`
/// passes on the intact pack, names exactly the member whose byte was flipped, and reports
/// every member missing once the pack is gone; the pack itself is never an unexpected file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn packed_members_are_verified_one_by_one() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let (a, b, c) = (bytes(3000, 1), bytes(5000, 2), bytes(700, 3));
    let (s, v) = put_archive(
        &t,
        &tok,
        &id,
        "",
        archive(&[
            M::File("p/a.bin", &a),
            M::File("p/b.bin", &b),
            M::File("p/c.bin", &c),
        ])
        .into(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let tid: TransferId = id.parse().unwrap();
    let fb = t
        .app
        .store
        .file_by_path(tid, "p/b.bin")
        .await
        .unwrap()
        .unwrap();
    let at = fb.pack.expect("a small member is packed");
    for p in ["p/a.bin", "p/c.bin"] {
        let f = t.app.store.file_by_path(tid, p).await.unwrap().unwrap();
        assert_eq!(f.pack.map(|x| x.id), Some(at.id), "{p} shares the pack");
        assert!(t.app.store.segments(f.id).await.unwrap().is_empty());
    }
    let pack = t.app.volumes.segment_path(tid, at.id, 0);
    assert_eq!(std::fs::metadata(&pack).unwrap().len(), 8700);

    let (ok, text) = verify(&t, &id);
    assert!(ok, "{text}");
    assert!(!text.contains("unexpected"), "{text}");

    let mut raw = std::fs::read(&pack).unwrap();
    raw[at.offset as usize + 10] ^= 0x80;
    std::fs::write(&pack, &raw).unwrap();
    let (ok, text) = verify(&t, &id);
    assert!(!ok, "{text}");
    assert!(text.contains("quarantine p/b.bin changed"), "{text}");
    assert!(
        !text.contains("p/a.bin") && !text.contains("p/c.bin"),
        "{text}"
    );

    std::fs::remove_file(&pack).unwrap();
    let (ok, text) = verify(&t, &id);
    assert!(!ok, "{text}");
    for p in ["p/a.bin", "p/b.bin", "p/c.bin"] {
        assert!(
            text.contains(&format!("quarantine {p} is missing")),
            "{text}"
        );
    }
    t.stop().await;
}

/// Deleting a packed member before seal: its bytes are overwritten in the pack it shares, the
/// others still read back whole, the last one deleted takes the pack with it (nothing the
/// provider deleted stays in quarantine), and the names can be sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_deleted_member_takes_its_pack() {
    let t = TestApp::spawn().await;
    let people = t.bootstrap(2).await;
    let id = t.open_transfer(&people.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&people.pm, &id, Value::Null).await;
    let (a, b) = (bytes(3000, 11), bytes(5000, 12));
    let (s, v) = put_archive(
        &t,
        &tok,
        &id,
        "",
        archive(&[M::File("q/a.bin", &a), M::File("q/b.bin", &b)]).into(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tid: TransferId = id.parse().unwrap();
    let fa = t
        .app
        .store
        .file_by_path(tid, "q/a.bin")
        .await
        .unwrap()
        .unwrap();
    let pack = t
        .app
        .volumes
        .segment_path(tid, fa.pack.expect("packed").id, 0);
    assert!(pack.exists());
    let packs = |t: &TestApp| {
        let pool = t.app.store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM packs")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let del = |p: &'static str| {
        t.http
            .delete(t.api(&format!("/transfers/{id}/files/{p}")))
            .bearer_auth(&tok)
            .send()
    };

    let r = del("q/a.bin").await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );
    assert!(pack.exists(), "q/b.bin still needs the pack");
    assert_eq!(packs(&t).await, 1);
    let fb = t
        .app
        .store
        .file_by_path(tid, "q/b.bin")
        .await
        .unwrap()
        .unwrap();
    let at = fb.pack.expect("packed").offset as usize;
    let raw = std::fs::read(&pack).unwrap();
    assert_eq!(
        &raw[at..at + b.len()],
        b.as_slice(),
        "q/b.bin reads back whole"
    );
    // The deleted member's bytes are gone from the pack it shares (overwritten with zeros).
    let a_at = fa.pack.unwrap().offset as usize;
    assert!(
        raw[a_at..a_at + a.len()].iter().all(|&x| x == 0),
        "q/a.bin's bytes are still in the pack"
    );

    let r = del("q/b.bin").await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );
    assert!(
        !pack.exists(),
        "the last member's deletion removes the pack"
    );
    assert_eq!(packs(&t).await, 0);

    // The names are free again, and the new copy is whole.
    let (s, v) = put_archive(&t, &tok, &id, "", archive(&[M::File("q/a.bin", &b)]).into()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = t
        .post_json(&tok, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (ok, text) = verify(&t, &id);
    assert!(ok, "{text}");
    assert!(!text.contains("unexpected"), "{text}");
    t.stop().await;
}
