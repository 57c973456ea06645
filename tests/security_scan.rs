//! Security review (issue 10), findings 3 and 14: what the archive scanner cannot open is never
//! clean, and a finding made by a rescan is never thrown away because review moved on.
//!
//! Finding 3: every wrapped form of the machine's own ELF (/bin/true, the file the file-type
//! scanner blocks in tests/scanning.rs) is made here by the system's own tools (xz, bzip2,
//! zstd, lz4, GNU tar, ar, Python's zipfile and tarfile), never by our code, and must be opened
//! and blocked, or be unscannable. Finding 14: a signature written while a transfer waits must
//! stop its release, and a finding after a release must flag it.

mod common;

use airlock::domain::TransferState;
use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file-type scanner denies this at tier 2 (data ingress): an executable.
fn elf() -> Vec<u8> {
    let elf = std::fs::read("/bin/true").unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    elf
}

/// Opens a transfer in `workspace`, uploads `files` as the provider, seals, waits for the
/// scans, and returns the transfer as the PM sees it.
async fn scan(t: &TestApp, pm: &str, workspace: &str, files: &[(&str, Vec<u8>)]) -> Value {
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
    t.scans_done(&id).await;
    t.show(pm, &id).await
}

/// Asserts the transfer was blocked because the file-type scanner saw the ELF inside `path`,
/// as an archive member (so the archive scanner opened the wrapper).
fn blocked_for_the_elf_inside(v: &Value, path: &str) {
    assert_eq!(v["state"], "blocked", "{path}: {v}");
    let found: Vec<&Value> = verdicts(v, "infected")
        .into_iter()
        .filter(|x| {
            x["path"] == path
                && x["scanner"] == "filetype"
                && x["member"].as_str().is_some_and(|m| !m.is_empty())
                && x["detail"]
                    .as_str()
                    .unwrap()
                    .contains("application/x-executable")
        })
        .collect();
    assert_eq!(found.len(), 1, "{path}: {v}");
    // The member's own digest is the ELF's.
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "elf", &elf());
    assert_eq!(found[0]["sha256"], digest_with("sha256sum", &f), "{v}");
}

/// Runs a Python script (archives are made with the standard library, not by our code).
fn python(script: &str, args: &[&Path]) {
    run(Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args));
}

/// `tool args… < input > output`, the output's bytes.
fn filter(tool: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let mut stdin = c.stdin.take().unwrap();
    let data = input.to_vec();
    let feed = std::thread::spawn(move || stdin.write_all(&data));
    let out = c.wait_with_output().unwrap();
    feed.join().unwrap().unwrap();
    assert!(out.status.success(), "{tool} {args:?} failed");
    out.stdout
}

/// A folder holding `bin/tool`, the ELF.
fn elf_tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tool = write(dir.path(), "bin/tool", &elf());
    (dir, tool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_elf_wrapped_in_xz_bzip2_or_zstd_is_opened_and_blocked() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let (dir, _) = elf_tree();
    let tar = dir.path().join("tools.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .arg("bin/tool"));
    let tar = std::fs::read(&tar).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("tool.xz", filter("xz", &["-c"], &elf())),
        ("tool.bz2", filter("bzip2", &["-c"], &elf())),
        ("tool.zst", filter("zstd", &["-q", "-c"], &elf())),
        ("tools.tar.xz", filter("xz", &["-c"], &tar)),
        ("tools.tar.bz2", filter("bzip2", &["-c"], &tar)),
        ("tools.tar.zst", filter("zstd", &["-q", "-c"], &tar)),
    ];
    for (name, bytes) in cases {
        let v = scan(&t, &p.pm, "proj/ws", &[(name, bytes)]).await;
        blocked_for_the_elf_inside(&v, name);
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zip_with_bytes_prepended_is_found_by_its_central_directory_and_blocked() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let (dir, tool) = elf_tree();
    let zip = dir.path().join("tools.zip");
    python(
        "import sys, zipfile\n\
         with zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_DEFLATED) as z: z.write(sys.argv[1], 'bin/tool')\n",
        &[&tool, &zip],
    );
    let mut bytes = b"0123456789\n".to_vec();
    assert_eq!(bytes.len(), 11);
    bytes.extend(std::fs::read(&zip).unwrap());
    // The attack is real: unzip extracts the ELF from it (with a warning about the prefix).
    let shifted = write(dir.path(), "shifted.zip", &bytes);
    let out = Command::new("unzip")
        .arg("-p")
        .arg(&shifted)
        .arg("bin/tool")
        .output()
        .unwrap();
    assert_eq!(out.stdout, elf());
    let v = scan(&t, &p.pm, "proj/ws", &[("data/notes.txt", bytes)]).await;
    blocked_for_the_elf_inside(&v, "data/notes.txt");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v7_tar_and_a_tar_entry_of_unknown_type_are_read_and_blocked() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let (dir, tool) = elf_tree();
    // A pre-POSIX (v7) tar: no "ustar" magic at all.
    let v7 = dir.path().join("v7.tar");
    run(Command::new("tar")
        .arg("--format=v7")
        .arg("-cf")
        .arg(&v7)
        .arg("-C")
        .arg(dir.path())
        .arg("bin/tool"));
    let v7 = std::fs::read(&v7).unwrap();
    assert_ne!(&v7[257..262], b"ustar");
    // A ustar tar whose one entry has type 'Z', which GNU tar extracts as a regular file.
    let z = dir.path().join("z.tar");
    python(
        "import sys, tarfile\n\
         with tarfile.open(sys.argv[2], 'w', format=tarfile.USTAR_FORMAT) as t: t.add(sys.argv[1], 'bin/tool')\n\
         b = bytearray(open(sys.argv[2], 'rb').read())\n\
         b[156:157] = b'Z'\n\
         b[148:156] = b' ' * 8\n\
         b[148:156] = b'%06o\\0 ' % sum(b[:512])\n\
         open(sys.argv[2], 'wb').write(bytes(b))\n",
        &[&tool, &z],
    );
    let out = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&z)
        .arg("-C")
        .arg(out.path()));
    assert_eq!(std::fs::read(out.path().join("bin/tool")).unwrap(), elf());
    let z = std::fs::read(&z).unwrap();
    assert_eq!(z[156], b'Z');
    for (name, bytes) in [("old.tar", v7), ("typed.tar", z)] {
        let v = scan(&t, &p.pm, "proj/ws", &[(name, bytes)]).await;
        blocked_for_the_elf_inside(&v, name);
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zip_appended_to_a_tar_is_scanned_too() {
    // A polyglot: GNU tar reads the harmless tar at the front, unzip the zip at the end.
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let (dir, tool) = elf_tree();
    let notes = write(dir.path(), "notes.txt", b"harmless\n");
    let tar = dir.path().join("a.tar");
    let zip = dir.path().join("a.zip");
    python(
        "import sys, zipfile, tarfile\n\
         with tarfile.open(sys.argv[3], 'w') as t: t.add(sys.argv[2], 'notes.txt')\n\
         with zipfile.ZipFile(sys.argv[4], 'w') as z: z.write(sys.argv[1], 'bin/tool')\n",
        &[&tool, &notes, &tar, &zip],
    );
    let mut bytes = std::fs::read(&tar).unwrap();
    bytes.extend(std::fs::read(&zip).unwrap());
    let v = scan(&t, &p.pm, "proj/ws", &[("both.tar", bytes)]).await;
    blocked_for_the_elf_inside(&v, "both.tar");
    // The tar's own member was scanned as well.
    assert!(
        v["scans"]["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["member"] == "notes.txt" && x["verdict"] == "clean"),
        "{v}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_the_scanner_recognises_but_cannot_open_is_unscannable_never_clean() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let (dir, tool) = elf_tree();
    let ar = dir.path().join("tools.a");
    run(Command::new("ar").arg("rc").arg(&ar).arg(&tool));
    let ar = std::fs::read(&ar).unwrap();
    assert!(ar.starts_with(b"!<arch>\n"));
    let mut cut_xz = filter("xz", &["-c"], &elf());
    cut_xz.truncate(cut_xz.len() / 2);
    let mut cut_zst = filter("zstd", &["-q", "-c"], &elf());
    cut_zst.truncate(cut_zst.len() / 2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tools.a", ar, "unsupported: "),
        (
            "tool.lz4",
            filter("lz4", &["-q", "-c"], &elf()),
            "unsupported: ",
        ),
        ("cut.xz", cut_xz, "corrupt: "),
        ("cut.zst", cut_zst, "corrupt: "),
    ];
    for (name, bytes, why) in cases {
        let v = scan(&t, &p.pm, "proj/ws", &[(name, bytes)]).await;
        // Tier 2 lets review go on only with a Referee's acknowledgment.
        assert_eq!(v["state"], "in_review", "{name}: {v}");
        assert_eq!(v["scans"]["ack_required"], true, "{name}: {v}");
        let u = verdicts(&v, "unscannable");
        assert!(
            u.iter().any(|x| x["scanner"] == "archive"
                && x["path"] == name
                && x["detail"].as_str().unwrap().starts_with(why)),
            "{name}: {v}"
        );
        assert!(
            !v["scans"]["verdicts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["scanner"] == "archive" && x["verdict"] == "clean"),
            "{name}: {v}"
        );
    }
    t.stop().await;
}

/// A signature for `sample` written into clamd's database folder.
fn add_signature(clamd: &Clamd, sample: &[u8], name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "s", sample);
    let md5 = run(Command::new("md5sum").arg(&f))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(
        clamd.db_dir().join(format!("{name}.hdb")),
        format!("{md5}:{}:{name}\n", sample.len()),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finding_made_while_approval_races_the_rescan_stops_the_release() {
    let clamd = Clamd::start();
    let scanners = clamd.scanners_dir("100 MiB");
    let t = TestApp::spawn_with(|s| {
        s.scanning.dir = Some(scanners);
        s.scanning.clamd = None;
    })
    .await;
    let p = t.bootstrap(1).await;
    let novel = b"a sample nobody had a signature for at seal\n".to_vec();
    let v = scan(&t, &p.pm, "proj/ws", &[("sample.txt", novel.clone())]).await;
    assert_eq!(v["state"], "in_review", "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    // The signature lands, and the Investigator approves at once, before any rescan is done.
    add_signature(&clamd, &novel, "Test.Novel.Race");
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = t.wait_for_state(&p.pm, &id, "blocked").await;
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("sample.txt: Test.Novel.Race"),
        "{v}"
    );
    assert!(v["release"]["location"].is_null(), "{v}");
    // Nothing in the data volume (the workspace's output volume is there from the start).
    assert!(!t.data_dir().join("volumes/proj/ws/data").exists());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finding_after_the_release_flags_it_with_an_incident() {
    let clamd = Clamd::start();
    let scanners = clamd.scanners_dir("100 MiB");
    let t = TestApp::spawn_with(|s| {
        s.scanning.dir = Some(scanners);
        s.scanning.clamd = None;
    })
    .await;
    let p = t.bootstrap(1).await;
    let novel = b"released before anyone knew it was bad\n".to_vec();
    let v = scan(&t, &p.pm, "proj/ws", &[("sample.txt", novel.clone())]).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, &id, "released").await;
    // A rescan that began while the transfer was in review ends after its release (here
    // the last part is run directly: clamd reloads, and the rescan completes).
    add_signature(&clamd, &novel, "Test.Novel.Late");
    let clam = t.app.scanners.clamav.clone().unwrap();
    clam.reload().await.unwrap();
    tokio::time::sleep(clam.reload_settle).await;
    let tr = t
        .app
        .store
        .transfer(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tr.state, TransferState::Released);
    airlock::workflow::scanning::scan_and_record(&t.app, &tr, true)
        .await
        .unwrap();
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "released", "{v}");
    let reason = v["state_reason"].as_str().unwrap();
    assert!(
        reason.contains("SCAN FINDING") && reason.contains("sample.txt: Test.Novel.Late"),
        "{v}"
    );
    assert!(
        v["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "scan"),
        "{v}"
    );
    assert!(
        verdicts(&v, "infected")
            .iter()
            .any(|x| x["detail"].as_str().unwrap().starts_with("Test.Novel.Late")),
        "{v}"
    );
    let events: Vec<String> = t
        .app
        .store
        .audit_records()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.transfer_id.as_deref() == Some(id.as_str()))
        .map(|r| r.action)
        .collect();
    assert!(events.iter().any(|a| a == "incident.scan"), "{events:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zstd_bomb_is_a_finding_and_a_stream_needing_a_huge_window_is_unscannable() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    // 200 MiB of zeros compress to a few KiB: far past the 100:1 limit.
    let bomb = filter("zstd", &["-q", "-c"], &vec![0u8; 200 << 20]);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let v = scan(&t, &p.pm, "proj/ws", &[("zeros.zst", bomb)]).await;
    assert_eq!(v["state"], "blocked", "{v}");
    assert!(
        verdicts(&v, "infected")
            .iter()
            .any(|x| x["scanner"] == "archive"
                && x["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("Airlock.Archive.Bomb: zstd expands more than 100:1")),
        "{v}"
    );
    // A 2 GiB window (zstd --long=31, read from a pipe) is more memory than one scan may take.
    let wide = filter("zstd", &["-q", "-c", "--long=31"], &bytes(4096, 5));
    let v = scan(&t, &p.pm, "proj/ws", &[("wide.zst", wide)]).await;
    assert_eq!(v["state"], "in_review", "{v}");
    assert!(
        verdicts(&v, "unscannable")
            .iter()
            .any(|x| x["scanner"] == "archive"
                && x["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("unsupported: zstd")
                && x["detail"].as_str().unwrap().contains("archive.max_window")),
        "{v}"
    );
    t.stop().await;
}

/// Finding 9: a file stored in several pieces is joined into scratch space to be scanned, and
/// that copy goes as soon as the file is scanned, not when the whole transfer is. A command
/// scanner counts the joined copies beside the one it is given: never more than the files
/// scanned at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scratch_copies_go_as_soon_as_each_file_is_scanned() {
    let t0 = TestApp::spawn().await;
    let dir = repo_scanners(&t0.data_dir().join("scanners"));
    let log = t0.data_dir().join("../scratch-counts.log");
    let _ = std::fs::remove_file(&log);
    std::fs::write(
        dir.join("counter.toml"),
        format!(
            "kind = \"command\"\n\
             command = [\"sh\", \"-c\", \"ls \\\"$(dirname \\\"$0\\\")\\\" | grep -c '^f' >> {}; sleep 0.2; exit 0\", \"{{path}}\"]\n\
             input = \"path\"\nclean_exit_codes = [0]\ninfected_exit_codes = [1]\n\
             finding = \"Never\"\ntimeout = \"20s\"\n",
            log.display()
        ),
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
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tier1.toml"))
            .unwrap()
            .replace("required = [\"clamav\"]", "required = [\"counter\"]");
    let file = t.data_dir().join("counter-policy.toml");
    std::fs::write(&file, policy).unwrap();
    airlock::workflow::admin::create_workspace(&t.app, "proj", "count", 1, Some(&file))
        .await
        .unwrap();
    let id = t
        .open_transfer_in(&p.pm, "proj/count", "data-ingress", "prov")
        .await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    // Ten files, each stored as three 512 KiB pieces (pieces that large are not merged).
    const PIECE: usize = 512 << 10;
    let files = 10;
    for n in 0..files {
        let body = bytes(3 * PIECE, n as u64);
        let r = t
            .tus_create(&up, &id)
            .header("Upload-Length", body.len().to_string())
            .header("Upload-Metadata", tus_meta(&format!("f{n}.bin")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        let url = if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", t.url)
        };
        for k in 0..3 {
            let r = t
                .tus_patch(
                    &up,
                    &url,
                    k * PIECE,
                    body[k * PIECE..(k + 1) * PIECE].to_vec(),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
        }
    }
    let (s, v) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.scans_done(&id).await;
    let counts: Vec<usize> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), files, "one scan per file: {counts:?}");
    let at_once = t.app.scanners.concurrency;
    assert!(
        counts.iter().all(|c| *c <= at_once),
        "scratch held more joined copies than files scanned at once ({at_once}): {counts:?}"
    );
    std::fs::remove_file(&log).unwrap();
    t.stop().await;
}
