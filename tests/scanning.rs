//! The scanning pipeline against a real clamd (Debian's clamav-daemon) started by the test
//! helpers, with a signature database holding only scanners/test.hdb (EICAR by MD5 and size).
//! Archives are made by Python's zipfile and tarfile; the ELF is the machine's own /bin/true.

mod common;

use airlock::domain::Role;
use airlock::workflow::admin;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// The 68-byte EICAR test file (a standard, harmless antivirus test string).
const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Opens a transfer in `workspace` as the PM, uploads `files` as the provider, seals, and
/// waits for the scans. Returns the transfer id.
async fn scan(t: &TestApp, pm: &str, workspace: &str, files: &[(&str, Vec<u8>)]) -> String {
    let id = t
        .open_transfer_in(pm, workspace, "data-ingress", "prov")
        .await;
    let up = t.upload_token(pm, &id, Value::Null).await;
    for (path, bytes) in files {
        let (s, v) = t.put(&up, &id, path, bytes.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "scanning", "{v}");
    t.scans_done(&id).await;
    id
}

/// A server whose scanners are read from `dir` (clamav.toml there names its own clamd).
async fn with_scanners(dir: std::path::PathBuf) -> TestApp {
    TestApp::spawn_with(|s| {
        s.scanning.dir = Some(dir);
        s.scanning.clamd = None;
    })
    .await
}

/// Runs a Python script (archives are made with the standard library, not by our code).
fn python(script: &str, args: &[&Path]) {
    run(Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args));
}

/// Every audit event of a transfer (the tamper-evident log), as `{action, detail}`.
async fn audit_actions(t: &TestApp, id: &str) -> Vec<Value> {
    t.app
        .store
        .audit_records()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.transfer_id.as_deref() == Some(id))
        .map(|r| {
            json!({
                "action": r.action,
                "detail": serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eicar_is_blocked_with_its_signature_name_shown() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let id = scan(
        &t,
        &p.pm,
        "proj/ws",
        &[
            ("data/clean.csv", b"id,age\n1,42\n".to_vec()),
            ("data/eicar.com", EICAR.to_vec()),
        ],
    )
    .await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "blocked", "{v}");
    let reason = v["state_reason"].as_str().unwrap();
    assert!(
        reason.contains("data/eicar.com: Test.EICAR.HDB") && reason.contains("(clamav)"),
        "{reason}"
    );
    assert_eq!(v["incidents"][0]["kind"], "scan");
    let bad = verdicts(&v, "infected");
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["path"], "data/eicar.com");
    assert!(bad[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("Test.EICAR.HDB"));
    // Pinned to the file's digest (sha256sum's) and to the scanner's version.
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "eicar.com", EICAR);
    assert_eq!(bad[0]["sha256"], digest_with("sha256sum", &f));
    assert!(bad[0]["scanner_version"]
        .as_str()
        .unwrap()
        .starts_with("ClamAV 1."));
    assert_eq!(verdicts(&v, "clean").len(), 1);
    // The CLI shows the signature, and so does the audit log.
    let shown = t.cli(Some(&p.pm), &["transfer", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("infected    data/eicar.com: Test.EICAR.HDB"),
        "{shown}"
    );
    let events = audit_actions(&t, &id).await;
    let scanned = events
        .iter()
        .find(|e| e["action"] == "transfer.scanned")
        .expect("a transfer.scanned event");
    assert_eq!(scanned["detail"]["verdicts"]["infected"], 1, "{scanned}");
    assert!(scanned["detail"]["findings"][0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("Test.EICAR.HDB"));
    // Nobody can approve it, and nothing was released.
    let (s, _) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Nothing in the data volume (the workspace's output volume is there from the start).
    assert!(!t.data_dir().join("volumes/proj/ws/data").exists());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eicar_inside_a_zip_inside_a_tar_is_blocked_and_named_by_member() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let dir = tempfile::tempdir().unwrap();
    let eicar = write(dir.path(), "eicar.com", EICAR);
    let out = dir.path().join("outer.tar");
    python(
        "import sys, zipfile, tarfile, io\n\
         b = io.BytesIO()\n\
         with zipfile.ZipFile(b, 'w', zipfile.ZIP_DEFLATED) as z:\n\
         \x20   z.write(sys.argv[1], 'docs/eicar.com')\n\
         \x20   z.writestr('readme.txt', 'nothing to see')\n\
         data = b.getvalue()\n\
         with tarfile.open(sys.argv[2], 'w') as t:\n\
         \x20   i = tarfile.TarInfo('bundle/inner.zip'); i.size = len(data)\n\
         \x20   t.addfile(i, io.BytesIO(data))\n",
        &[&eicar, &out],
    );
    let id = scan(
        &t,
        &p.pm,
        "proj/ws",
        &[("upload.tar", std::fs::read(&out).unwrap())],
    )
    .await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "blocked", "{v}");
    // The archive scanner opened both levels and ClamAV saw the member itself.
    let found: Vec<&Value> = verdicts(&v, "infected")
        .into_iter()
        .filter(|x| x["member"] == "bundle/inner.zip!docs/eicar.com" && x["scanner"] == "clamav")
        .collect();
    assert_eq!(found.len(), 1, "{v}");
    assert!(found[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("Test.EICAR.HDB"));
    // The member's own digest is recorded.
    assert_eq!(found[0]["sha256"], digest_with("sha256sum", &eicar));
    // The harmless member was scanned too, and is clean.
    assert!(v["scans"]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["member"] == "bundle/inner.zip!readme.txt"
            && x["scanner"] == "clamav"
            && x["verdict"] == "clean"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zip_bomb_is_flagged_and_blocks() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bomb.zip");
    // 200 MiB of zeros deflate to about 200 KiB: a ratio near 1000:1 (the limit is 100:1).
    python(
        "import sys, zipfile\n\
         with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
         \x20   with z.open('zeros.bin', 'w', force_zip64=True) as f:\n\
         \x20       for _ in range(200): f.write(bytes(1 << 20))\n",
        &[&out],
    );
    let bomb = std::fs::read(&out).unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let id = scan(&t, &p.pm, "proj/ws", &[("data/results.zip", bomb)]).await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "blocked", "{v}");
    let found = verdicts(&v, "infected");
    assert!(
        found.iter().any(|x| x["scanner"] == "archive"
            && x["detail"]
                .as_str()
                .unwrap()
                .starts_with("Airlock.Archive.Bomb: zip expands more than 100:1")),
        "{v}"
    );
    // Expansion stopped at the limit: the scratch space is gone.
    assert!(!t.data_dir().join("quarantine/.scratch").join(&id).exists());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renamed_executable_is_caught_by_a_deny_rule() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let elf = std::fs::read("/bin/true").unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let id = scan(
        &t,
        &p.pm,
        "proj/ws",
        &[
            ("data/table.csv", elf),
            ("data/real.csv", b"a,b\n".to_vec()),
        ],
    )
    .await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "blocked", "{v}");
    let found = verdicts(&v, "infected");
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["path"], "data/table.csv");
    assert_eq!(found[0]["scanner"], "filetype");
    assert!(
        found[0]["detail"]
            .as_str()
            .unwrap()
            .contains("application/x-executable (denied: executable)"),
        "{v}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_dataset_passes_every_scanner_and_is_released() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    admin::add_user(&t.app, "ref", &[Role::Referee])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "cohort.csv", b"id,age\n1,42\n2,37\n");
    let tgz = dir.path().join("notes.tar.gz");
    python(
        "import sys, tarfile\n\
         with tarfile.open(sys.argv[2], 'w:gz') as t: t.add(sys.argv[1], 'notes/cohort.csv')\n",
        &[&csv, &tgz],
    );
    let id = scan(
        &t,
        &p.pm,
        "proj/ws",
        &[
            ("cohort.csv", std::fs::read(&csv).unwrap()),
            ("notes.tar.gz", std::fs::read(&tgz).unwrap()),
        ],
    )
    .await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "in_review", "{v}");
    // Two files and one member, each through clamav, filetype and archive: nine verdicts.
    assert_eq!(v["scans"]["counts"]["clean"], 9, "{v}");
    assert_eq!(verdicts(&v, "clean").len(), 9);
    assert!(v["scans"]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["path"] == "notes.tar.gz" && x["member"] == "notes/cohort.csv"));
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees"),
            json!({"user": "ref"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rf = admin::staff_token(&t.app, "ref", None).await.unwrap();
    for (tok, role) in [(&p.inv, "investigator"), (&rf, "referee")] {
        let (s, v) = t
            .post_json(
                tok,
                &format!("/transfers/{id}/approve"),
                json!({"as": role}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let v = t.wait_for_state(&p.pm, &id, "released").await;
    let loc = Path::new(v["release"]["location"].as_str().unwrap());
    assert_eq!(
        std::fs::read(loc.join("cohort.csv")).unwrap(),
        std::fs::read(&csv).unwrap()
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clamd_stopped_mid_run_gives_scan_error_and_a_restart_completes_the_scan() {
    let mut clamd = Clamd::start();
    let addr = clamd.addr();
    let t = TestApp::spawn_with(|s| s.scanning.clamd = Some(addr)).await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    for i in 0..24u64 {
        let (s, _) = t
            .put(&up, &id, &format!("d/{i}.bin"), bytes(2 << 20, i))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, _) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    // Kill clamd while the 48 MiB are being streamed to it.
    clamd.stop();
    let v = t.wait_for_state(&p.pm, &id, "scan_error").await;
    let reason = v["state_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("scan_error: ") && reason.contains(&clamd.addr()),
        "{reason}"
    );
    assert!(reason.contains("next try in"), "{reason}");
    assert!(!reason.contains(": :"), "{reason}");
    // It is retried with backoff, and never passes while clamd is down.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let v = t.show(&p.pm, &id).await;
    assert!(
        v["state"] == "scan_error" || v["state"] == "scanning",
        "{v}"
    );
    assert!(!verdicts(&v, "error").is_empty(), "{v}");
    let job = t
        .app
        .store
        .scan_job(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(job.attempts >= 2, "{job:?}");
    let events = audit_actions(&t, &id).await;
    assert!(events.iter().any(|e| e["action"] == "transfer.scan_error"));
    // clamd comes back: the next attempt completes and review begins.
    clamd.restart();
    let v = t.wait_for_state(&p.pm, &id, "in_review").await;
    assert_eq!(v["scans"]["counts"]["clean"], 24, "{v}");
    assert_eq!(v["scans"]["counts"]["error"], 0, "{v}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_file_is_unscannable_never_clean() {
    // clamd accepts at most 1 MiB per stream; airlock is told so in its scanners/ folder.
    let clamd = Clamd::start_with("1M");
    let scanners = clamd.scanners_dir("1 MiB");
    let t = with_scanners(scanners).await;
    let p = t.bootstrap(1).await;
    admin::add_user(&t.app, "ref", &[Role::Referee])
        .await
        .unwrap();
    let big = bytes(2 << 20, 9);
    let id = scan(&t, &p.pm, "proj/ws", &[("big.bin", big.clone())]).await;
    let v = t.show(&p.pm, &id).await;
    // Tier 1's policy lets review go on, but only with a Referee's acknowledgment.
    assert_eq!(v["state"], "in_review", "{v}");
    let u = verdicts(&v, "unscannable");
    assert_eq!(u.len(), 1, "{v}");
    assert!(
        u[0]["detail"].as_str().unwrap().starts_with("size: "),
        "{v}"
    );
    assert_eq!(verdicts(&v, "clean").len(), 0);
    assert_eq!(v["scans"]["ack_required"], true);
    let roles: Vec<&str> = v["awaiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["investigator", "referee"], "{v}");
    // The Investigator's approval alone does not release it.
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "in_review");
    t.post_json(
        &p.pm,
        &format!("/transfers/{id}/referees"),
        json!({"user": "ref"}),
    )
    .await;
    let rf = admin::staff_token(&t.app, "ref", None).await.unwrap();
    let (s, v) = t
        .post_json(
            &rf,
            &format!("/transfers/{id}/approve"),
            json!({"as": "referee"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("big.bin: size"),
        "{v}"
    );
    // Acknowledging it goes on the record, and the release follows.
    let (s, v) = t
        .post_json(
            &rf,
            &format!("/transfers/{id}/approve"),
            json!({"as": "referee", "acknowledge_unscannable": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = t.wait_for_state(&p.pm, &id, "released").await;
    let d = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["role"] == "referee")
        .unwrap();
    assert!(d["acknowledged_unscannable"][0]
        .as_str()
        .unwrap()
        .starts_with("big.bin: size"));

    // Under a policy that blocks what cannot be scanned, the same file is blocked.
    let pol = t.data_dir().join("strict.toml");
    std::fs::write(
        &pol,
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tier1.toml"))
            .unwrap()
            .replace("unscannable = \"acknowledge\"", "unscannable = \"block\""),
    )
    .unwrap();
    admin::create_workspace(&t.app, "proj", "strict", 1, Some(&pol))
        .await
        .unwrap();
    let id = scan(&t, &p.pm, "proj/strict", &[("big.bin", big)]).await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "blocked", "{v}");
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("policy blocks what cannot be scanned"),
        "{v}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_over_clamds_own_limit_is_unscannable_even_if_airlock_is_misconfigured() {
    // airlock believes clamd takes 100 MiB; clamd takes 1 MiB. clamd's answer still wins.
    let clamd = Clamd::start_with("1M");
    let scanners = clamd.scanners_dir("100 MiB");
    let t = with_scanners(scanners).await;
    let p = t.bootstrap(1).await;
    let id = scan(&t, &p.pm, "proj/ws", &[("big.bin", bytes(3 << 20, 3))]).await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(verdicts(&v, "clean").len(), 0, "{v}");
    let u = verdicts(&v, "unscannable");
    let e = verdicts(&v, "error");
    // clamd either says "size limit exceeded" (unscannable) or hangs up on the stream (an
    // error, retried): never clean.
    assert!(u.len() + e.len() == 1, "{v}");
    if let Some(u) = u.first() {
        assert!(u["detail"].as_str().unwrap().starts_with("size"), "{v}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_signature_rescans_transfers_awaiting_review() {
    let clamd = Clamd::start();
    let scanners = clamd.scanners_dir("100 MiB");
    let t = with_scanners(scanners).await;
    let p = t.bootstrap(1).await;
    let novel = b"a sample nobody has a signature for yet\n".to_vec();
    let id = scan(&t, &p.pm, "proj/ws", &[("sample.txt", novel.clone())]).await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "in_review", "{v}");
    let old_db = verdicts(&v, "clean")[0]["db_version"].clone();
    // freshclam (here: the test) writes a new signature; airlock sees the database change,
    // asks clamd to reload, and scans the waiting transfer again.
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "s", &novel);
    let md5 = run(Command::new("md5sum").arg(&f))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(
        clamd.db_dir().join("new.hdb"),
        format!("{md5}:{}:Test.Novel.Sample\n", novel.len()),
    )
    .unwrap();
    let v = t.wait_for_state(&p.pm, &id, "blocked").await;
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("sample.txt: Test.Novel.Sample"),
        "{v}"
    );
    let found = verdicts(&v, "infected");
    assert_ne!(found[0]["db_version"], old_db);
    let events = audit_actions(&t, &id).await;
    assert!(events
        .iter()
        .any(|e| e["action"] == "transfer.scanned" && e["detail"]["rescan"] == true));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_scanners_give_verdicts_by_exit_code_and_are_killed_past_their_timeout() {
    let t0 = TestApp::spawn().await;
    let dir = repo_scanners(&t0.data_dir().join("scanners"));
    // A scanner that never finishes in time.
    std::fs::write(
        dir.join("slow.toml"),
        "kind = \"command\"\ncommand = [\"sleep\", \"30\"]\ninput = \"stdin\"\n\
         clean_exit_codes = [0]\ninfected_exit_codes = [1]\nfinding = \"Slow\"\ntimeout = \"1s\"\n",
    )
    .unwrap();
    let data = t0.stop().await;
    let scanners = dir.clone();
    let t = TestApp::spawn_with(|s| {
        s.storage.data_dir = data.path().to_owned();
        s.scanning.dir = Some(scanners);
    })
    .await;
    let p = t.bootstrap(1).await;
    let policy = |required: &str| {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tier1.toml"))
            .unwrap()
            .replace("required = [\"clamav\"]", required)
    };
    let secrets = t.data_dir().join("secrets-policy.toml");
    std::fs::write(&secrets, policy("required = [\"clamav\", \"secrets\"]")).unwrap();
    admin::create_workspace(&t.app, "proj", "keys", 1, Some(&secrets))
        .await
        .unwrap();
    let key = b"config\n-----BEGIN RSA PRIVATE KEY-----\nMIIB...\n".to_vec();
    let id = scan(
        &t,
        &p.pm,
        "proj/keys",
        &[("app/id_rsa", key), ("app/ok.txt", b"fine".to_vec())],
    )
    .await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "blocked", "{v}");
    let found = verdicts(&v, "infected");
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["path"], "app/id_rsa");
    assert_eq!(found[0]["detail"], "Airlock.Secrets.PrivateKey");
    assert!(found[0]["scanner_version"]
        .as_str()
        .unwrap()
        .contains("grep"));

    let slow = t.data_dir().join("slow-policy.toml");
    std::fs::write(&slow, policy("required = [\"slow\"]")).unwrap();
    admin::create_workspace(&t.app, "proj", "slow", 1, Some(&slow))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let id = scan(&t, &p.pm, "proj/slow", &[("a.txt", b"x".to_vec())]).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "scan_error", "{v}");
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("sleep did not finish within 1s and was killed"),
        "{v}"
    );
    // A scan that cannot complete does not hold the transfer forever: the PM cancels it
    // (nobody else may), and the retries stop.
    let (s, _) = t
        .post_json(&p.inv, &format!("/transfers/{id}/cancel"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // (Retries move it through `scanning` and back; it is cancelled from `scan_error`.)
    let mut cancelled = Value::Null;
    for _ in 0..50 {
        t.wait_for_state(&p.pm, &id, "scan_error").await;
        let (s, v) = t
            .post_json(&p.pm, &format!("/transfers/{id}/cancel"), Value::Null)
            .await;
        if s == StatusCode::OK {
            cancelled = v;
            break;
        }
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
    }
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(t.show(&p.pm, &id).await["state"], "cancelled");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encrypted_archive_is_unscannable() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("secret.zip");
    python(
        "import sys, zipfile\n\
         with zipfile.ZipFile(sys.argv[1], 'w') as z: z.writestr('payload.bin', 'x' * 100)\n",
        &[&out],
    );
    // Python writes no encrypted zips: set the "encrypted" flag (bit 0) in both headers.
    let mut zip = std::fs::read(&out).unwrap();
    for (sig, at) in [(&b"PK\x03\x04"[..], 6), (&b"PK\x01\x02"[..], 8)] {
        let i = zip.windows(4).position(|w| w == sig).unwrap();
        zip[i + at] |= 1;
    }
    let id = scan(&t, &p.pm, "proj/ws", &[("secret.zip", zip)]).await;
    let v = t.show(&p.pm, &id).await;
    let u = verdicts(&v, "unscannable");
    assert!(
        u.iter().any(|x| x["scanner"] == "archive"
            && x["detail"].as_str().unwrap().starts_with("encrypted: ")),
        "{v}"
    );
    assert_ne!(v["state"], "released");
    assert_eq!(v["scans"]["ack_required"], true, "{v}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archives_nested_past_the_depth_limit_are_a_finding() {
    // The repository's scanners with archive.max_depth = 1: a zip inside a tar is too deep.
    let dir = tempfile::tempdir().unwrap();
    let archive = repo_scanners(dir.path()).join("archive.toml");
    std::fs::write(
        &archive,
        std::fs::read_to_string(&archive)
            .unwrap()
            .replace("max_depth = 4", "max_depth = 1"),
    )
    .unwrap();
    let scanners = dir.path().to_owned();
    let t = TestApp::spawn_with(|s| s.scanning.dir = Some(scanners)).await;
    let p = t.bootstrap(2).await;
    let out = dir.path().join("outer.tar");
    python(
        "import sys, zipfile, tarfile, io\n\
         b = io.BytesIO()\n\
         with zipfile.ZipFile(b, 'w') as z: z.writestr('a.txt', 'harmless')\n\
         data = b.getvalue()\n\
         with tarfile.open(sys.argv[1], 'w') as t:\n\
         \x20   i = tarfile.TarInfo('inner.zip'); i.size = len(data)\n\
         \x20   t.addfile(i, io.BytesIO(data))\n",
        &[&out],
    );
    let id = scan(
        &t,
        &p.pm,
        "proj/ws",
        &[("nested.tar", std::fs::read(&out).unwrap())],
    )
    .await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "blocked", "{v}");
    let found = verdicts(&v, "infected");
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["member"], "inner.zip");
    assert!(found[0]["detail"]
        .as_str()
        .unwrap()
        .contains("nested deeper than 1 (archive.max_depth)"));
    t.stop().await;
}

/// Members of a tar batch are packed, with no file of their own: each is still scanned by
/// every scanner, from memory, and named by its own path. EICAR as a member is caught; so is
/// EICAR inside a zip that is itself a packed member (opened from a scratch copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn packed_members_are_each_scanned_and_named() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let dir = tempfile::tempdir().unwrap();
    let eicar = write(dir.path(), "eicar.com", EICAR);
    let batch = dir.path().join("batch.tar");
    python(
        "import sys, zipfile, tarfile, io\n\
         b = io.BytesIO()\n\
         with zipfile.ZipFile(b, 'w', zipfile.ZIP_DEFLATED) as z:\n\
         \x20   z.write(sys.argv[1], 'inner/eicar.com')\n\
         data = b.getvalue()\n\
         with tarfile.open(sys.argv[2], 'w', format=tarfile.PAX_FORMAT) as t:\n\
         \x20   t.add(sys.argv[1], 'm/eicar.com')\n\
         \x20   i = tarfile.TarInfo('m/bundle.zip'); i.size = len(data)\n\
         \x20   t.addfile(i, io.BytesIO(data))\n\
         \x20   c = b'id,value\\n1,2\\n'\n\
         \x20   i = tarfile.TarInfo('m/clean.csv'); i.size = len(c)\n\
         \x20   t.addfile(i, io.BytesIO(c))\n",
        &[&eicar, &batch],
    );
    let id = t
        .open_transfer_in(&p.pm, "proj/ws", "data-ingress", "prov")
        .await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    let (s, v) = t
        .put_archive(&up, &id, "", std::fs::read(&batch).unwrap())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tid: airlock::domain::TransferId = id.parse().unwrap();
    for m in ["m/eicar.com", "m/bundle.zip", "m/clean.csv"] {
        let f = t.app.store.file_by_path(tid, m).await.unwrap().unwrap();
        assert!(f.pack.is_some(), "{m} is packed");
    }
    let (s, v) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.scans_done(&id).await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "blocked", "{v}");
    let infected = verdicts(&v, "infected");
    assert!(
        infected.iter().any(|x| x["path"] == "m/eicar.com"
            && x.get("member").is_none()
            && x["scanner"] == "clamav"
            && x["detail"].as_str().unwrap().starts_with("Test.EICAR.HDB")),
        "{v}"
    );
    assert!(
        infected.iter().any(|x| x["path"] == "m/bundle.zip"
            && x["member"] == "inner/eicar.com"
            && x["scanner"] == "clamav"),
        "{v}"
    );
    // Every scanner saw the clean member, and found nothing.
    let clean: Vec<&Value> = v["scans"]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["path"] == "m/clean.csv")
        .collect();
    let names: std::collections::BTreeSet<&str> = clean
        .iter()
        .map(|x| x["scanner"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["archive", "clamav", "filetype"].into_iter().collect(),
        "{v}"
    );
    assert!(clean.iter().all(|x| x["verdict"] == "clean"), "{v}");
    // Nothing was left in scratch space.
    let scratch = t.app.volumes.scratch_dir(tid);
    assert!(
        !scratch.exists() || std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "scratch space left behind"
    );
    t.stop().await;
}

/// A store opened while a first scan is still writing its verdicts (the CLI's `airlock
/// verify`, another replica) leaves that scan's counts to the scan: no partial `scan_counts`
/// row, and no failure when the scan's own row lands first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opening_the_store_mid_scan_leaves_the_scan_its_counts() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let id = t
        .open_transfer_in(&p.pm, "proj/ws", "data-ingress", "prov")
        .await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    let (s, v) = t.put(&up, &id, "a.csv", b"id\n1\n".to_vec()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tid: airlock::domain::TransferId = id.parse().unwrap();
    let f = t
        .app
        .store
        .file_by_path(tid, "a.csv")
        .await
        .unwrap()
        .unwrap();
    // As a scan in progress leaves it: state `scanning`, some verdicts, no counts yet.
    sqlx::query("UPDATE transfers SET state = 'scanning' WHERE id = $1")
        .bind(&id)
        .execute(t.app.store.pool())
        .await
        .unwrap();
    let row = airlock::store::VerdictRow {
        seq: 0,
        file_id: f.id,
        path: "a.csv".into(),
        member: String::new(),
        scanner: "clamav".into(),
        verdict: "clean".into(),
        detail: String::new(),
        sha256: f.sha256.clone().unwrap(),
        scanner_version: "ClamAV 1".into(),
        db_version: "1".into(),
        scanned_at: "2026-12-02T00:00:00Z".into(),
    };
    t.app.store.insert_verdicts(tid, &[row]).await.unwrap();
    let other = airlock::store::Store::open_sqlite(&t.data_dir().join("airlock.db"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scan_counts WHERE transfer_id = $1")
        .bind(&id)
        .fetch_one(other.pool())
        .await
        .unwrap();
    assert_eq!(n, 0, "a partial scan was counted as done");
    t.stop().await;
}
