//! Big transfers through every step after upload: thousands of small files are sealed, scanned
//! by a real clamd, approved, released, re-verified and exported as a bag, and every digest is
//! checked against `sha256sum` (and `b3sum`) of the source. Verification finds a changed, a
//! missing and an unexpected file among thousands, naming them, and caps what it names; the
//! scan counts kept per transfer equal the verdicts paged one by one; the kept file totals equal
//! a count over the rows through PUT, tus, resume and delete. The server's peak RSS is printed
//! for each step (`SCALE_FILES=20000 cargo test --test scale -- --nocapture` to measure).

mod common;

use airlock::domain::TransferId;
use airlock::integrity::{self, Scope};
use common::*;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Folders the files are spread over, as in issue 11's report.
const FOLDERS: usize = 20;

fn file_count() -> usize {
    std::env::var("SCALE_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

/// The `i`th file: its path and about 190 bytes of content unique to it.
fn nth(i: usize) -> (String, Vec<u8>) {
    let path = format!("d{:02}/f{i:06}.txt", i % FOLDERS);
    let mut body = format!("file {i} of a big transfer\n").into_bytes();
    body.extend(bytes(160, i as u64));
    (path, body)
}

/// Resets this process's peak RSS (the server runs in it), so the next read is one step's.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak RSS in KiB since the last reset.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn step(name: &str, n: usize, started: Instant) {
    eprintln!(
        "scale: {n} files: {name}: {:.2} s, peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        peak_kib() / 1024
    );
    reset_peak();
}

/// Waits (up to `secs`) until the transfer is in `state`.
async fn wait_state(t: &TestApp, id: &str, state: &str, secs: u64) {
    let tid: TransferId = id.parse().unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let tr = t.app.store.transfer(tid).await.unwrap().unwrap();
        if tr.state.to_string() == state {
            return;
        }
        assert!(
            Instant::now() < until,
            "transfer {id} is {} ({}), not {state}",
            tr.state,
            tr.state_reason
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `sha256sum` (or `b3sum`) of every file below `dir`, as `HEX  PATH` lines sorted by path.
fn sums_of(tool: &str, dir: &Path) -> Vec<String> {
    let out = run(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find . -type f -printf '%P\\0' | sort -z | xargs -0 {tool}"
        ))
        .current_dir(dir));
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    lines
}

/// A manifest file of the bag, as `HEX  PATH` lines without `data/`, sorted by path.
fn bag_lines(bag: &Path, name: &str) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(bag.join(name))
        .unwrap()
        .lines()
        .map(|l| l.replacen("  data/", "  ", 1))
        .collect();
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    lines
}

fn writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(p).unwrap().permissions();
    perm.set_mode(perm.mode() | 0o200);
    std::fs::set_permissions(p, perm).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_files_go_through_seal_scan_release_verify_and_bag_with_every_digest_checked()
{
    let n = file_count();
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tid: TransferId = id.parse().unwrap();
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    // The source tree, for sha256sum and b3sum to read.
    let src = tempfile::tempdir().unwrap();
    for i in 0..n {
        let (path, body) = nth(i);
        write(src.path(), &path, &body);
    }

    reset_peak();
    let started = Instant::now();
    let results: Vec<StatusCode> = futures::stream::iter(0..n)
        .map(|i| {
            let (t, up, id) = (&t, &up, &id);
            async move {
                let (path, body) = nth(i);
                t.put(up, id, &path, body).await.0
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(results.iter().all(|s| *s == StatusCode::CREATED));
    step("upload (PUT, 16 at once)", n, started);

    let started = Instant::now();
    let (s, v) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    step("seal", n, started);
    let started = Instant::now();
    wait_state(&t, &id, "in_review", 120).await;
    step("scan (real clamd)", n, started);

    // The kept counts equal the verdicts, paged one page at a time, each row seen once.
    let counts = t.app.store.scan_counts(tid).await.unwrap();
    let mut paged: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut after, mut seen, mut pages) = (None, std::collections::HashSet::new(), 0);
    loop {
        let page = t.app.store.verdicts_page(tid, after, 250).await.unwrap();
        if page.is_empty() {
            break;
        }
        pages += 1;
        for v in &page {
            assert!(seen.insert(v.seq), "verdict {} seen twice", v.seq);
            *paged.entry(v.verdict.clone()).or_default() += 1;
        }
        after = page.last().map(|v| v.seq);
    }
    for (k, got) in &counts {
        assert_eq!(paged.get(k).copied().unwrap_or(0), *got, "{k}: {counts:?}");
    }
    assert_eq!(counts["clean"], n as u64, "one clamav verdict per file");
    assert!(pages >= n / 250, "{pages} pages");
    // Every file has its verdict: the paths the verdicts name are exactly the files.
    let verdict_paths: std::collections::BTreeSet<String> = t
        .app
        .store
        .verdicts(tid)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.path)
        .collect();
    assert_eq!(verdict_paths.len(), n);
    // The status read's counts are the kept ones.
    let v = t.show(&p.pm, &id).await;
    for (k, got) in &counts {
        assert_eq!(v["scans"]["counts"][k].as_u64(), Some(*got), "{k}");
    }
    // The audit event names counts, not the files.
    let scanned = t
        .app
        .store
        .audit_records()
        .await
        .unwrap()
        .into_iter()
        .rfind(|r| r.action == "transfer.scanned")
        .unwrap();
    assert!(scanned.detail.len() < 4000, "{}", scanned.detail.len());
    let detail: Value = serde_json::from_str(&scanned.detail).unwrap();
    assert_eq!(detail["verdicts"]["clean"], n as u64);

    let started = Instant::now();
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    step("approve", n, started);
    let started = Instant::now();
    wait_state(&t, &id, "released", 180).await;
    step("release", n, started);
    let tr = t.app.store.transfer(tid).await.unwrap().unwrap();
    let root = PathBuf::from(tr.release_location.clone().unwrap());
    // The released tree is the source, byte for byte: same files, same digests.
    let source = sums_of("sha256sum", src.path());
    assert_eq!(source.len(), n);
    assert_eq!(sums_of("sha256sum", &root), source);

    let started = Instant::now();
    let report = integrity::verify(&t.app, &tr, Scope::All).await.unwrap();
    step("verify (both copies)", n, started);
    assert_eq!(report.problem_count(), 0, "{:?}", report.problems);
    assert_eq!(report.ok, 2 * n as u64, "quarantine and released copies");
    let fixity = t.app.store.fixity(tid).await.unwrap();
    assert_eq!(fixity.len(), 2 * n);
    assert!(fixity.iter().all(|f| f.result == "ok"));

    let started = Instant::now();
    let out = tempfile::tempdir().unwrap();
    let bag = out.path().join("bag");
    let (bytes_n, files_n) = integrity::bag::export(&t.app, tid, &bag).await.unwrap();
    step("bag", n, started);
    assert_eq!(files_n, n);
    let total: u64 = (0..n).map(|i| nth(i).1.len() as u64).sum();
    assert_eq!(bytes_n, total);
    // The bag's manifests are sha256sum's and b3sum's of the source, and check themselves.
    assert_eq!(bag_lines(&bag, "manifest-sha256.txt"), source);
    assert_eq!(
        bag_lines(&bag, "manifest-blake3.txt"),
        sums_of("b3sum", src.path())
    );
    run(std::process::Command::new("sha256sum")
        .args([
            "-c",
            "--quiet",
            "manifest-sha256.txt",
            "tagmanifest-sha256.txt",
        ])
        .current_dir(&bag));
    run(std::process::Command::new("b3sum")
        .args(["-c", "--quiet", "manifest-blake3.txt"])
        .current_dir(&bag));
    run(std::process::Command::new("python3")
        .args(["-m", "bagit", "--validate", "--fast"])
        .arg(&bag));
    let info = std::fs::read_to_string(bag.join("bag-info.txt")).unwrap();
    assert!(
        info.contains(&format!("Payload-Oxum: {total}.{n}")),
        "{info}"
    );

    // Among thousands: one byte changed, one file deleted, one added where byte order and
    // folder order differ ("d03.txt" sorts between "d03/..." siblings' parents).
    let changed = nth(7).0;
    let deleted = nth(n / 2).0;
    for d in ["d03", "d05"] {
        writable(&root.join(d));
    }
    writable(&root);
    let c = root.join(&changed);
    writable(&c);
    let mut b = std::fs::read(&c).unwrap();
    b[3] ^= 0x20;
    std::fs::write(&c, &b).unwrap();
    std::fs::remove_file(root.join(&deleted)).unwrap();
    std::fs::write(root.join("d03.txt"), b"smuggled").unwrap();
    std::fs::write(root.join("d05/zz-extra.txt"), b"smuggled too").unwrap();
    let report = integrity::verify(&t.app, &tr, Scope::All).await.unwrap();
    let named: Vec<(&str, &str, &str)> = report
        .problems()
        .map(|c| (c.location, c.result, c.path.as_str()))
        .collect();
    assert_eq!(report.problem_count(), 4, "{named:?}");
    assert!(
        named.contains(&("released", "changed", changed.as_str())),
        "{named:?}"
    );
    assert!(
        named.contains(&("released", "missing", deleted.as_str())),
        "{named:?}"
    );
    assert!(
        named.contains(&("released", "unexpected", "d03.txt")),
        "{named:?}"
    );
    assert!(
        named.contains(&("released", "unexpected", "d05/zz-extra.txt")),
        "{named:?}"
    );
    assert_eq!(report.ok, 2 * n as u64 - 2);
    integrity::record(&t.app, &tr, &report).await.unwrap();
    let incidents = t.app.store.incidents(Some(tid)).await.unwrap();
    assert_eq!(incidents.len(), 4, "{incidents:?}");

    // Many files gone: the first few are named, the rest counted, and the incidents stay few.
    let gone = 300.min(n / 4);
    let mut removed = 0;
    for i in (0..n).step_by(n / gone) {
        let path = nth(i).0;
        if path == deleted {
            continue;
        }
        writable(&root.join(path.split('/').next().unwrap()));
        if std::fs::remove_file(root.join(&path)).is_ok() {
            removed += 1;
        }
    }
    let report = integrity::verify(&t.app, &tr, Scope::All).await.unwrap();
    let missing = report.counts["released"]["missing"];
    assert_eq!(missing, removed + 1);
    assert_eq!(report.problems.len(), integrity::NAMED);
    assert_eq!(report.problem_count(), missing + 3);
    let before = t.app.store.incidents(Some(tid)).await.unwrap().len();
    integrity::record(&t.app, &tr, &report).await.unwrap();
    let raised = t.app.store.incidents(Some(tid)).await.unwrap().len() - before;
    assert!(
        raised <= integrity::NAMED + 1,
        "{raised} incidents for {missing} missing files"
    );
    let last = t.app.store.incidents(Some(tid)).await.unwrap();
    assert!(
        last.iter()
            .any(|i| i.detail.contains("more problem(s) beyond the 20 named")),
        "{last:?}"
    );
    t.stop().await;
}

/// `Store::totals` against a count over the rows themselves.
async fn totals_match(t: &TestApp, id: &str, what: &str) -> (u64, u64) {
    let tid: TransferId = id.parse().unwrap();
    let kept = t.app.store.totals(tid).await.unwrap();
    let (files, complete, received): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(complete), 0) AS BIGINT), \
         CAST(COALESCE(SUM(received), 0) AS BIGINT) FROM files WHERE transfer_id = $1",
    )
    .bind(id)
    .fetch_one(t.app.store.pool())
    .await
    .unwrap();
    let reserved: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(CASE WHEN received > COALESCE(length, 0) THEN received \
         ELSE COALESCE(length, 0) END), 0) AS BIGINT) FROM files WHERE transfer_id = $1",
    )
    .bind(id)
    .fetch_one(t.app.store.pool())
    .await
    .unwrap();
    assert_eq!(kept.files, files as u64, "files after {what}");
    assert_eq!(kept.complete, complete as u64, "complete after {what}");
    assert_eq!(kept.received, received as u64, "received after {what}");
    assert_eq!(kept.reserved, reserved as u64, "reserved after {what}");
    (kept.files, kept.received)
}

/// A tus Location as a full URL.
fn absolute(t: &TestApp, location: &str) -> String {
    if location.starts_with('/') {
        format!("{}{location}", t.url)
    } else {
        location.to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kept_file_totals_equal_a_count_of_the_rows_through_put_tus_resume_and_delete() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    assert_eq!(totals_match(&t, &id, "opening").await, (0, 0));
    for i in 0..5 {
        let (s, _) = t
            .put(&up, &id, &format!("a/{i}.bin"), bytes(1000 + i, 1))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    assert_eq!(totals_match(&t, &id, "five PUTs").await.0, 5);
    // A PUT over an existing path is refused and changes nothing.
    let (s, _) = t.put(&up, &id, "a/0.bin", bytes(10, 2)).await;
    assert!(s.is_client_error(), "{s}");
    totals_match(&t, &id, "a refused PUT").await;

    // tus: created with a declared length (reserved, not received), sent in two pieces (a
    // resume at the offset the server stored), then complete.
    let data = bytes(300_000, 3);
    let r = t
        .tus_create(&up, &id)
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", tus_meta("b/tus.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = absolute(&t, r.headers()["location"].to_str().unwrap());
    totals_match(&t, &id, "tus creation").await;
    let r = t
        .tus_patch(&up, &loc, 0, data[..120_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    totals_match(&t, &id, "a first tus piece").await;
    // A piece at the wrong offset is refused; the totals do not move.
    let r = t
        .tus_patch(&up, &loc, 5, data[5..10].to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    totals_match(&t, &id, "a refused PATCH").await;
    let r = t
        .tus_patch(&up, &loc, 120_000, data[120_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (files, _) = totals_match(&t, &id, "the resumed tus upload").await;
    assert_eq!(files, 6);

    // An unfinished tus upload, then terminated.
    let r = t
        .tus_create(&up, &id)
        .header("Upload-Length", "5000")
        .header("Upload-Metadata", tus_meta("b/cut.bin"))
        .send()
        .await
        .unwrap();
    let cut = absolute(&t, r.headers()["location"].to_str().unwrap());
    t.tus_patch(&up, &cut, 0, bytes(2000, 4))
        .send()
        .await
        .unwrap();
    totals_match(&t, &id, "an unfinished tus upload").await;
    let r = t
        .http
        .delete(&cut)
        .bearer_auth(&up)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(totals_match(&t, &id, "tus termination").await.0, 6);

    // DELETE of a file, then the same path again.
    let r = t
        .http
        .delete(t.api(&format!("/transfers/{id}/files/a/1.bin")))
        .bearer_auth(&up)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(totals_match(&t, &id, "DELETE").await.0, 5);
    let (s, _) = t.put(&up, &id, "a/1.bin", bytes(77, 5)).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(totals_match(&t, &id, "a PUT again").await.0, 6);
    // And they hold through a restart (nothing is kept only in memory).
    let data_dir = t.stop().await;
    let t = TestApp::spawn_in(data_dir).await;
    assert_eq!(totals_match(&t, &id, "a restart").await.0, 6);
    t.stop().await;
}
