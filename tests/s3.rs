//! Volumes on S3 (issue 15), against a real Garage (common::garage) read back with a plain S3
//! client (rclone): the settings give a client with path-style addressing and the configured
//! keys; the whole ingress flow runs with quarantine and released volumes in the bucket; a
//! release is published by its manifest object, last; re-verification finds objects changed
//! behind airlock's back; Garage stopped mid-upload gives 503 and the upload resumes; Garage
//! stopped mid-release publishes nothing partial and the release retries.

mod common;

use airlock::config::{Settings, VolumeLocation};
use airlock::volumes::s3;
use common::garage::Garage;
use common::tus::{head_offset, patch_then_cut, wait_offset};
use common::{approve_and_release, bytes, digest_with, tus_meta, write, TestApp};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

fn s3_volume(env: Vec<(String, String)>, name: &str) -> airlock::config::S3Volume {
    let s = Settings::load(None, env).unwrap();
    match s.storage.volume(name).unwrap() {
        VolumeLocation::S3(v) => v,
        VolumeLocation::Local => panic!("{name} is not on S3"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_client_from_the_settings_writes_where_a_plain_s3_client_reads() {
    let g = Garage::start();
    let mut env = g.airlock_env();
    env.push(("AIRLOCK__STORAGE__S3__PREFIX".into(), "tre1".into()));
    let v = s3_volume(env.clone(), "released");
    assert_eq!(
        (v.bucket.as_str(), v.prefix.as_str()),
        ("airlock", "tre1/released")
    );
    let store = s3::client(&v).unwrap();
    s3::ping(&store, &v).await.unwrap();

    // airlock writes; rclone reads the same bytes under bucket/prefix/path.
    let body = common::bytes(3 << 20, 7);
    let key = ObjPath::from("tre1/released/proj/ws/a b.csv");
    store
        .put(&key, PutPayload::from(body.clone()))
        .await
        .unwrap();
    let out = g.rclone(&["cat", "g:airlock/tre1/released/proj/ws/a b.csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        hex::encode(Sha256::digest(&out.stdout)),
        hex::encode(Sha256::digest(&body))
    );
    // rclone writes; airlock's client reads it back.
    let dir = tempfile::tempdir().unwrap();
    let src = common::write(dir.path(), "in.bin", b"from rclone");
    let out = g.rclone(&[
        "copyto",
        src.to_str().unwrap(),
        "g:airlock/tre1/released/in.bin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = store
        .get(&ObjPath::from("tre1/released/in.bin"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"from rclone");

    // Another volume is another prefix of the same bucket.
    let q = s3_volume(env.clone(), "quarantine");
    assert_eq!(q.prefix, "tre1/quarantine");

    // A wrong secret is refused by Garage: the keys configured are the keys used.
    let mut bad = env;
    bad.retain(|(k, _)| k != "AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY");
    bad.push((
        "AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY".into(),
        "0".repeat(64),
    ));
    let bv = s3_volume(bad, "released");
    let err = s3::ping(&s3::client(&bv).unwrap(), &bv)
        .await
        .expect_err("a wrong secret was accepted");
    let msg = err.to_string();
    assert!(
        msg.contains("403") || msg.to_lowercase().contains("forbidden"),
        "{msg}"
    );
}

/// `airlock serve` with nothing but the contract's environment variables: every volume on
/// S3, the workspaces' outputs too. It starts, says so on `/readyz`, and leaves no volume
/// folders on local disk (only the database, the keys and scanning's scratch folder).
#[test]
fn airlock_serve_with_every_volume_on_s3_starts_and_keeps_no_volume_on_local_disk() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .envs(g.airlock_env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let mut ready = None;
    for _ in 0..600 {
        if let Ok(out) = std::process::Command::new("curl")
            .args(["-s", &url])
            .output()
        {
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                if v["volumes"] == "ok" {
                    ready = Some(v);
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ready = ready.unwrap_or_else(|| panic!("never ready: {stderr}"));
    for v in ["quarantine", "released", "output", "egress"] {
        assert_eq!(ready["storage"][v], "s3", "{ready}");
    }
    assert!(
        !stderr.contains(&g.secret),
        "the secret is printed: {stderr}"
    );
    for local in ["volumes", "quarantine"] {
        assert!(!data.join(local).exists(), "{local} was made on local disk");
    }
}

/// An output object is only ever read as the object that was listed: rewritten (other bytes,
/// same size) or deleted after the listing, the read gives nothing, so submit refuses to pin
/// it rather than pin another version than the one resolved.
#[tokio::test(flavor = "multi_thread")]
async fn an_output_object_rewritten_or_deleted_after_its_listing_is_not_read_as_the_listed_one() {
    let g = Garage::start();
    let mut s = Settings::default();
    g.apply_all(&mut s);
    let dir = tempfile::tempdir().unwrap();
    let v = airlock::volumes::Volumes::open(dir.path(), &s.storage).unwrap();
    assert!(v.output_on_s3());
    g.put("output/p/w/t/a.csv", b"north,120\n");
    g.put("output/p/w/t/b.csv", b"south,95\n");
    let listed: Vec<_> = futures::TryStreamExt::try_collect(
        v.list_output(
            "p",
            "w",
            Some(&airlock::domain::RelPath::parse("t").unwrap()),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let names: Vec<&str> = listed.iter().map(|o| o.rel.as_str()).collect();
    assert_eq!(names, ["t/a.csv", "t/b.csv"]);
    // As listed: read whole.
    let read = |o| {
        let v = v.clone();
        async move {
            match v.read_output("p", "w", &o).await.unwrap() {
                Some(s) => {
                    let chunks: Vec<bytes::Bytes> =
                        futures::TryStreamExt::try_collect(s).await.unwrap();
                    Some(chunks.concat())
                }
                None => None,
            }
        }
    };
    assert_eq!(read(listed[0].clone()).await.unwrap(), b"north,120\n");
    g.put("output/p/w/t/a.csv", b"north,999\n");
    g.delete("output/p/w/t/b.csv");
    assert_eq!(
        read(listed[0].clone()).await,
        None,
        "rewritten: not the listed one"
    );
    assert_eq!(read(listed[1].clone()).await, None, "deleted");
}

/// The manifest object of a release, read with rclone: path → sha256.
fn manifest_of(g: &Garage, dest: &str) -> Option<BTreeMap<String, String>> {
    let m = g.cat(&format!("{dest}.manifest.jsonl"))?;
    Some(
        String::from_utf8(m)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["path"].as_str().unwrap().to_owned(),
                    v["sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    )
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingress_runs_on_s3_from_an_interrupted_tus_upload_to_a_release_read_back_with_rclone() {
    let g = Garage::start();
    let t = TestApp::spawn_with(|s| g.apply(s)).await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;

    // A plain PUT of a small file, and one of several S3 parts.
    let small = bytes(1_000, 1);
    let big = bytes(12 << 20, 2);
    for (path, b) in [("notes/readme.txt", &small), ("data/big.bin", &big)] {
        let (s, v) = t.put(&up, &id, path, b.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // A tus upload cut off mid-file, resumed where the server says.
    let resumed = bytes(9 << 20, 3);
    let r = t
        .tus_create(&up, &id)
        .header("Upload-Length", resumed.len().to_string())
        .header("Upload-Metadata", tus_meta("data/resumed.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let addr = t.url.trim_start_matches("http://").to_owned();
    patch_then_cut(
        &addr,
        &location,
        &up,
        0,
        &resumed[..3_000_000],
        resumed.len(),
    )
    .await;
    let offset = wait_offset(&t, &location, &up, 1).await;
    assert!(offset > 0 && offset <= 3_000_000, "{offset}");
    let r = t
        .tus_patch(
            &up,
            &format!("{}{location}", t.url),
            offset,
            resumed[offset as usize..].to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Digests as sha256sum and b3sum give them.
    let work = tempfile::tempdir().unwrap();
    let (_, m) = t.get_json(&up, &format!("/transfers/{id}/manifest")).await;
    let files: BTreeMap<&str, &Vec<u8>> = [
        ("notes/readme.txt", &small),
        ("data/big.bin", &big),
        ("data/resumed.bin", &resumed),
    ]
    .into_iter()
    .collect();
    for f in m["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        let local = write(work.path(), path, files[path]);
        assert_eq!(f["sha256"], digest_with("sha256sum", &local), "{path}");
        assert_eq!(f["blake3"], digest_with("b3sum", &local), "{path}");
    }
    // The quarantine's bytes are in the bucket, not on local disk.
    let quarantined = g.ls(&format!("quarantine/transfers/{id}"));
    assert!(quarantined.len() >= 3, "{quarantined:?}");
    assert!(!t.data_dir().join("quarantine").exists());

    let v = approve_and_release(&t, &p, &up, &id).await;
    let dest = format!("released/proj/ws/data/{id}");
    assert_eq!(v["release"]["location"], format!("s3://airlock/{dest}/"));
    // The CLI contract: `transfer show --json` gives the same location.
    let out = t.cli(Some(&p.pm), &["transfer", "show", &id, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown["release"]["location"],
        format!("s3://airlock/{dest}/")
    );
    // A plain S3 client reads every released object under the location, byte for byte, and
    // the manifest object lists exactly them.
    let listed = g.ls(&dest);
    assert_eq!(listed.len(), 3, "{listed:?}");
    let manifest = manifest_of(&g, &dest).expect("the manifest object");
    assert_eq!(manifest.len(), 3);
    for (path, b) in &files {
        let got = g.cat(&format!("{dest}/{path}")).expect(path);
        assert!(got == **b, "{path} differs");
        assert_eq!(manifest[*path], sha256_hex(b));
    }
    // A full verification pass streams every copy back from S3 and finds them all sound.
    let tr = t
        .app
        .store
        .transfer(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let report = airlock::integrity::verify(&t.app, &tr, airlock::integrity::Scope::All)
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems.len());
    assert_eq!(report.ok, 6, "three in quarantine, three released");

    // /readyz reports the store each volume is on.
    let r: Value = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["volumes"], "ok", "{r}");
    assert_eq!(r["storage"]["quarantine"], "s3", "{r}");
    assert_eq!(r["storage"]["released"], "s3", "{r}");
    assert_eq!(r["storage"]["output"], "local", "{r}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn re_verification_on_s3_finds_objects_changed_deleted_or_added_behind_airlock() {
    let g = Garage::start();
    let t = TestApp::spawn_with(|s| {
        g.apply(s);
        s.integrity.poll_interval = Duration::from_millis(200);
    })
    .await;
    let p = t.bootstrap(1).await;
    let pol = common::fast_policy(t.data_dir(), "1s");
    airlock::workflow::admin::create_workspace(&t.app, "proj", "fast", 1, Some(&pol))
        .await
        .unwrap();
    let id = t
        .open_transfer_in(&p.pm, "proj/fast", "data-ingress", "prov")
        .await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    for (path, b) in [
        ("d/a.csv", bytes(200_000, 1)),
        ("d/b.csv", bytes(300_000, 2)),
        ("d/c.csv", bytes(6 << 20, 3)),
    ] {
        assert_eq!(t.put(&up, &id, path, b).await.0, StatusCode::CREATED);
    }
    approve_and_release(&t, &p, &up, &id).await;
    let dest = format!("released/proj/fast/data/{id}");
    let tid: airlock::domain::TransferId = id.parse().unwrap();
    // A clean pass first.
    for _ in 0..100 {
        let f = t.app.store.fixity(tid).await.unwrap();
        if f.iter().filter(|r| r.location == "released").count() == 3 {
            assert!(f.iter().all(|r| r.result == "ok"), "{f:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Behind airlock's back, with a plain S3 client: one object overwritten with a flipped
    // byte (same size), one deleted, one added.
    let work = tempfile::tempdir().unwrap();
    let mut a = g.cat(&format!("{dest}/d/a.csv")).unwrap();
    a[1234] ^= 1;
    let fa = write(work.path(), "a.csv", &a);
    let fx = write(work.path(), "x.csv", b"smuggled");
    for args in [
        vec![
            "copyto".to_owned(),
            fa.display().to_string(),
            format!("g:airlock/{dest}/d/a.csv"),
        ],
        vec!["deletefile".to_owned(), format!("g:airlock/{dest}/d/b.csv")],
        vec![
            "copyto".to_owned(),
            fx.display().to_string(),
            format!("g:airlock/{dest}/d/extra.csv"),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = g.rclone(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let found = common::wait_incidents(&t, &id, 3).await;
    assert!(
        found
            .iter()
            .any(|d| d.starts_with("released d/a.csv changed: sha256")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|d| d.starts_with("released d/b.csv is missing")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|d| d == "released d/extra.csv is not in the manifest"),
        "{found:?}"
    );
    let v = t.show(&p.pm, &id).await;
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("INTEGRITY INCIDENT"),
        "{v}"
    );
    // The manifest object deleted behind airlock's back: nothing is published any more, and
    // the next pass says so.
    let out = g.rclone(&["deletefile", &format!("g:airlock/{dest}.manifest.jsonl")]);
    assert!(out.status.success());
    let found = common::wait_incidents(&t, &id, 4).await;
    assert!(
        found
            .iter()
            .any(|d| d.contains("manifest object") && d.contains("nothing of the release")),
        "{found:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garage_stopped_mid_upload_gives_503_and_the_upload_resumes_with_correct_digests() {
    let mut g = Garage::start();
    let t = TestApp::spawn_with(|s| g.apply(s)).await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    let data = bytes(14 << 20, 9);
    let r = t
        .tus_create(&up, &id)
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", tus_meta("big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let url = format!("{}{location}", t.url);
    let first = 6 << 20;
    let r = t
        .tus_patch(&up, &url, 0, data[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    g.stop();
    let r = t
        .tus_patch(&up, &url, first, data[first..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
    // /readyz says the volumes are down.
    let r = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    g.restart();
    // Exactly what was acknowledged is kept; the rest resumes.
    assert_eq!(head_offset(&t, &location, &up).await, first as u64);
    let r = t
        .tus_patch(&up, &url, first, data[first..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let work = tempfile::tempdir().unwrap();
    let f = write(work.path(), "big.bin", &data);
    let (_, m) = t.get_json(&up, &format!("/transfers/{id}/manifest")).await;
    assert_eq!(m["files"][0]["complete"], true);
    assert_eq!(m["files"][0]["sha256"], digest_with("sha256sum", &f));
    assert_eq!(m["files"][0]["blake3"], digest_with("b3sum", &f));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_cut_off_by_garage_publishes_nothing_then_retries_to_a_whole_one() {
    let mut g = Garage::start();
    let t = TestApp::spawn_with(|s| g.apply(s)).await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    let n = 120;
    for i in 0..n {
        let (s, v) = t
            .put(&up, &id, &format!("f/{i:03}.bin"), bytes(64 << 10, i))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, _) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.scans_done(&id).await;
    let dest = format!("released/proj/ws/data/{id}");
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Garage goes down once the first objects are being written.
    let mut seen = Vec::new();
    for _ in 0..400 {
        seen = g.ls(&dest);
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    g.stop();
    assert!(!seen.is_empty(), "the release never started");
    assert!(
        seen.len() < n as usize,
        "the release finished before Garage stopped; the test proves nothing"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "approved", "{v}");
    g.restart();
    // Published nothing partial: no manifest until every object is there.
    assert!(
        manifest_of(&g, &dest).is_none_or(|m| m.len() == n as usize),
        "a partial manifest"
    );
    let v = t.wait_for_state(&p.pm, &id, "released").await;
    assert_eq!(v["release"]["location"], format!("s3://airlock/{dest}/"));
    let m = manifest_of(&g, &dest).expect("published");
    assert_eq!(m.len(), n as usize);
    assert_eq!(g.ls(&dest).len(), n as usize);
    for i in [0u64, 57, 119] {
        let path = format!("f/{i:03}.bin");
        let got = g.cat(&format!("{dest}/{path}")).unwrap();
        assert_eq!(sha256_hex(&got), sha256_hex(&bytes(64 << 10, i)));
        assert_eq!(m[&path], sha256_hex(&got));
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archive_expands_into_s3_a_deleted_member_is_erased_from_its_pack_and_the_bag_validates()
{
    let g = Garage::start();
    let t = TestApp::spawn_with(|s| g.apply(s)).await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    let secret = b"a member deleted before seal: its bytes must leave the pack".to_vec();
    let kept = bytes(40_000, 4);
    let big = bytes(6 << 20, 5);
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("a/secret.txt", &secret),
        ("a/kept.csv", &kept),
        ("b/big.bin", &big),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, &data[..]).unwrap();
    }
    let (s, v) = t.put_archive(&up, &id, "", tar.into_inner().unwrap()).await;
    assert!(s.is_success(), "{s} {v}");
    let tid: airlock::domain::TransferId = id.parse().unwrap();
    let mut files = Vec::new();
    for _ in 0..200 {
        files = t.app.store.files(tid).await.unwrap();
        if files.len() == 3 && files.iter().all(|f| f.complete) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(files.len(), 3, "{files:?}");
    let pack = files
        .iter()
        .find(|f| f.path == "a/secret.txt")
        .and_then(|f| f.pack)
        .expect("a small member is packed");
    let pack_key = format!("quarantine/transfers/{id}/{}/0000000000", pack.id);
    let before = g.cat(&pack_key).expect("the pack is in the bucket");
    assert!(before.windows(secret.len()).any(|w| w == &secret[..]));

    // Deleted before seal: its bytes are zeroed in the pack its neighbour still needs.
    let r = t
        .http
        .delete(t.api(&format!("/transfers/{id}/files/a/secret.txt")))
        .bearer_auth(&up)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let after = g
        .cat(&pack_key)
        .expect("the pack stays for its other member");
    assert_eq!(after.len(), before.len());
    assert!(!after.windows(secret.len()).any(|w| w == &secret[..]));

    let v = approve_and_release(&t, &p, &up, &id).await;
    let dest = format!("released/proj/ws/data/{id}");
    assert_eq!(v["release"]["location"], format!("s3://airlock/{dest}/"));
    assert_eq!(g.cat(&format!("{dest}/a/kept.csv")).unwrap(), kept);
    assert_eq!(g.cat(&format!("{dest}/b/big.bin")).unwrap(), big);
    assert!(g.cat(&format!("{dest}/a/secret.txt")).is_none());

    // A BagIt export streams the release back from S3, and bagit.py accepts it.
    let dir = tempfile::tempdir().unwrap();
    let bag = dir.path().join("bag");
    let (n_bytes, n_files) = airlock::integrity::bag::export(&t.app, tid, &bag)
        .await
        .unwrap();
    assert_eq!((n_bytes, n_files), ((kept.len() + big.len()) as u64, 2));
    common::run(
        std::process::Command::new("python3")
            .args(["-m", "bagit", "--validate"])
            .arg(&bag),
    );
    assert_eq!(std::fs::read(bag.join("data/b/big.bin")).unwrap(), big);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verification_pass_that_meets_garage_down_stops_and_raises_nothing() {
    let mut g = Garage::start();
    let t = TestApp::spawn_with(|s| g.apply(s)).await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    for (path, seed) in [("x/one.bin", 1), ("x/two.bin", 2)] {
        let (s, v) = t.put(&up, &id, path, bytes(300_000, seed)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    approve_and_release(&t, &p, &up, &id).await;
    let tid: airlock::domain::TransferId = id.parse().unwrap();
    let tr = t.app.store.transfer(tid).await.unwrap().unwrap();
    let all = airlock::integrity::Scope::All;

    g.stop();
    let err = airlock::integrity::verify(&t.app, &tr, all)
        .await
        .expect_err("a pass with the store down cannot say the files are sound");
    assert!(err.to_string().contains("verification stopped"), "{err}");
    // A store that does not answer is not a file missing: nothing is recorded or raised.
    let fixity = t.app.store.fixity(tid).await.unwrap();
    assert!(fixity.iter().all(|r| r.result == "ok"), "{fixity:?}");
    let incidents = t.app.store.incidents(Some(tid)).await.unwrap();
    assert!(incidents.is_empty(), "{incidents:?}");

    g.restart();
    let report = airlock::integrity::verify(&t.app, &tr, all).await.unwrap();
    assert!(report.problems.is_empty());
    assert_eq!(report.ok, 4);
    t.stop().await;
}
