//! Volumes on S3 (issue 15, begun), against a real Garage (common::garage): the settings nest
//! as the file does and give a client that writes where a plain S3 client (rclone) reads, with
//! path-style addressing and the configured keys; and until the volumes themselves run on S3,
//! `airlock serve` refuses a volume on S3 by name rather than keep its bytes on local disk.

mod common;

use airlock::config::{Settings, VolumeLocation};
use airlock::volumes::s3;
use common::garage::Garage;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest, Sha256};

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

#[test]
fn airlock_serve_refuses_volumes_on_s3_by_name_and_writes_nothing() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"));
    cmd.arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(g.airlock_env())
        .env("AIRLOCK__STORAGE__VOLUMES__QUARANTINE__BACKEND", "local");
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not supported")
            && stderr.contains("released on s3://airlock/released/")
            && stderr.contains("egress on s3://airlock/egress/")
            && !stderr.contains("quarantine on"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&g.secret),
        "the secret is printed: {stderr}"
    );
    assert!(!data.exists(), "the data directory was made");
    // Nothing was written to the bucket either.
    let ls = g.rclone(&["lsf", "-R", "g:airlock"]);
    assert!(ls.status.success());
    assert!(
        ls.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
}
