//! Issue 10, findings 5, 16 and 13: what a slow or stalled client may hold of the server
//! (idle bodies cut off with 408, uploads in progress capped per token and per address with
//! 429, buffer memory bounded whatever the number of connections, measured as the server's
//! RSS with 200 stalled connections); a full quarantine volume (507 naming the volume, the
//! partial segment removed, `/readyz` and `/metrics` showing the free space, a declared length
//! that does not fit refused); and a data directory that is the service's alone, with released
//! locations shown relative to the volume.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response read off a raw connection.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

fn parse(buf: &[u8]) -> Option<Resp> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &buf[end + 4..];
    let r = Resp {
        status,
        head,
        body: String::from_utf8_lossy(body).into_owned(),
    };
    match r
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) if body.len() < n => None,
        _ => Some(r),
    }
}

/// Reads one response, or what there is of it when the connection closes or `wait` passes.
async fn response(s: &mut TcpStream, wait: Duration) -> Option<Resp> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        if let Some(r) = parse(&buf) {
            if r.header("content-length").is_some() {
                return Some(r);
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return parse(&buf),
        }
    }
}

/// Connects from `from` (any 127.x.y.z works on Linux loopback), sends `head` and as much of
/// `body` as the server takes within 2 s, and keeps the connection open: a stalled client.
async fn stall(server: SocketAddr, from: IpAddr, head: &str, body: &[u8]) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock.connect(server).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(body)).await;
    s
}

fn put_head(id: &str, path: &str, token: &str, length: usize) -> String {
    format!(
        "PUT /api/v1/transfers/{id}/files/{path} HTTP/1.1\r\nHost: airlock\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n"
    )
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// `VmRSS` (or another field) of a process, in bytes.
fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Bootstraps a project on `data` with the library, as `airlock admin` would; returns the
/// Project Manager's token.
async fn bootstrap_dir(data: &Path) -> String {
    use airlock::domain::Role;
    use airlock::workflow::admin::*;
    let app = airlock::app::App::open(settings(data)).await.unwrap();
    add_user(&app, "pm", &[Role::ProjectManager]).await.unwrap();
    add_user(&app, "prov", &[Role::Provider]).await.unwrap();
    create_project(&app, "proj").await.unwrap();
    add_member(&app, "proj", "pm", Role::ProjectManager)
        .await
        .unwrap();
    create_workspace(&app, "proj", "ws", 1, None).await.unwrap();
    let pm = staff_token(&app, "pm", None).await.unwrap();
    app.store.pool().close().await;
    pm
}

/// Kills the child when the test ends, passing or not.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Finding 5: 200 PUTs that each send just under 4 MiB and stall. The caps are raised out of
/// the way, so the buffer budget alone has to hold the server's memory: its RSS stays within
/// a fixed allowance of the baseline (before: 4 MiB more per connection), and every stalled
/// request ends, 408 once its body has been idle or 503 when it never got buffer memory,
/// leaving no file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_stalled_uploads_hold_server_memory_flat_and_are_cut_off() {
    const CONNECTIONS: usize = 200;
    const ALLOWANCE: u64 = 48 << 20;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pm = bootstrap_dir(&data).await;
    let (child, url) = serve_binary_with(
        &data,
        &[
            ("AIRLOCK__UPLOADS__PER_TOKEN", "100000"),
            ("AIRLOCK__UPLOADS__PER_ADDRESS", "100000"),
            ("AIRLOCK__UPLOADS__BUFFER_TOTAL", "16 MiB"),
            ("AIRLOCK__UPLOADS__IDLE_TIMEOUT", "6s"),
            ("AIRLOCK__UPLOADS__BUFFER_WAIT", "3s"),
        ],
    );
    let child = Reap(child);
    let pid = child.0.id();
    let http = reqwest::Client::new();
    let (id, tok) = open_with_token(&http, &url, &pm).await;

    // Warm up the upload path, then take the baseline.
    let warm = bytes(8 << 20, 5);
    let r = http
        .put(format!("{url}/api/v1/transfers/{id}/files/warm.bin"))
        .bearer_auth(&tok)
        .body(warm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = proc_status(pid, "VmRSS");

    let server = addr_of(&url);
    let body = std::sync::Arc::new(bytes((4 << 20) - 4096, 9));
    let mut tasks = Vec::new();
    for i in 0..CONNECTIONS {
        let head = put_head(&id, &format!("stall-{i}.bin"), &tok, 8_000_000);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = stall(server, "127.0.0.1".parse().unwrap(), &head, &body).await;
            response(&mut s, Duration::from_secs(60)).await
        }));
    }
    // Sample the server's memory while the connections are stalled.
    let mut peak = baseline;
    while tasks.iter().any(|t| !t.is_finished()) {
        peak = peak.max(proc_status(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let hwm = proc_status(pid, "VmHWM");
    eprintln!(
        "baseline {} MiB, peak RSS {} MiB, VmHWM {} MiB",
        baseline >> 20,
        peak >> 20,
        hwm >> 20
    );
    assert!(
        peak < baseline + ALLOWANCE,
        "server RSS grew from {} MiB to {} MiB with {CONNECTIONS} stalled uploads",
        baseline >> 20,
        peak >> 20
    );
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for r in answers {
        let r = r.expect("every stalled request gets an answer");
        assert!(
            r.status == 408 || (r.status == 503 && r.header("retry-after").is_some()),
            "{r:?}"
        );
        *statuses.entry(r.status).or_default() += 1;
    }
    eprintln!("answers {statuses:?}");
    assert!(
        statuses.get(&408).copied().unwrap_or(0) >= 1,
        "{statuses:?}"
    );

    // Nothing of the stalled uploads was kept, and the server still takes uploads.
    let m: Value = http
        .get(format!("{url}/api/v1/transfers/{id}/manifest"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = m.to_string();
    assert!(text.contains("warm.bin") && !text.contains("stall-"), "{m}");
    let r = http
        .put(format!("{url}/api/v1/transfers/{id}/files/after.bin"))
        .bearer_auth(&tok)
        .body(bytes(1 << 20, 6))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("airlock_upload_refusals_total{reason=\"idle_timeout\"}"),
        "{metrics}"
    );
    drop(child);
}

/// Finding 5: one token has at most `per_token` uploads in progress, one address at most
/// `per_address`; more get 429 with Retry-After, PUT and tus alike, and a slot frees when its
/// upload ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_in_progress_are_capped_per_token_and_per_address_with_429() {
    let t = TestApp::spawn_with(|s| {
        s.uploads.per_token = 2;
        s.uploads.per_address = 3;
    })
    .await;
    let p = t.bootstrap(1).await;
    let mut toks = Vec::new();
    for _ in 0..3 {
        let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
        let tok = t.upload_token(&p.pm, &id, Value::Null).await;
        toks.push((id, tok));
    }
    let server = addr_of(&t.url);
    let home: IpAddr = "127.0.0.1".parse().unwrap();
    let (a_id, a) = &toks[0];
    let mut held = Vec::new();
    for i in 0..2 {
        let head = put_head(a_id, &format!("slow-{i}.bin"), a, 1_000_000);
        held.push(stall(server, home, &head, &[1u8; 1000]).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third upload with the same token: refused, and nothing recorded.
    let r = t
        .http
        .put(t.api(&format!("/transfers/{a_id}/files/third.bin")))
        .bearer_auth(a)
        .body(vec![2u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
    let r = t
        .tus_create(a, a_id)
        .header("Upload-Length", "10")
        .header("Upload-Metadata", tus_meta("tus.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let files = t.app.store.files(a_id.parse().unwrap()).await.unwrap();
    assert_eq!(files.len(), 2, "{files:?}");

    // A second token from the same address takes the third address slot; a fourth upload
    // from this address is refused whatever its token, and one from another address is not.
    let (b_id, b) = &toks[1];
    held.push(
        stall(
            server,
            home,
            &put_head(b_id, "slow.bin", b, 1_000_000),
            &[1u8; 10],
        )
        .await,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (c_id, c) = &toks[2];
    let r = t
        .http
        .put(t.api(&format!("/transfers/{c_id}/files/c.bin")))
        .bearer_auth(c)
        .body(vec![3u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("address"), "{v}");
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = elsewhere
        .put(t.api(&format!("/transfers/{c_id}/files/c.bin")))
        .bearer_auth(c)
        .body(vec![3u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Hanging up frees the slots.
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, v) = t.put(a, a_id, "third.bin", vec![2u8; 10]).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Finding 5: a body that sends nothing for the idle timeout is cut off with 408. A PUT keeps
/// nothing; a tus PATCH keeps what arrived, so the client resumes from HEAD's offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_body_is_cut_off_with_408() {
    let t = TestApp::spawn_with(|s| s.uploads.idle_timeout = Duration::from_secs(1)).await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    let server = addr_of(&t.url);
    let home: IpAddr = "127.0.0.1".parse().unwrap();

    let started = Instant::now();
    let mut s = stall(
        server,
        home,
        &put_head(&id, "idle.bin", &tok, 1_000_000),
        &[7u8; 100_000],
    )
    .await;
    let r = response(&mut s, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.body.contains("sent nothing"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(t
        .app
        .store
        .files(id.parse().unwrap())
        .await
        .unwrap()
        .is_empty());
    let segments = walk_files(&t.data_dir().join("quarantine/transfers"));
    assert!(segments.is_empty(), "{segments:?}");

    // tus: the chunk's bytes before the stall are kept.
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", "500000")
        .header("Upload-Metadata", tus_meta("resumable.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: airlock\r\nAuthorization: Bearer {tok}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: 500000\r\n\r\n"
    );
    let mut s = stall(server, home, &head, &[8u8; 200_000]).await;
    let r = response(&mut s, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(r.status, 408, "{r:?}");
    let r = t
        .http
        .head(format!("{}{loc}", t.url))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["upload-offset"], "200000");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn statvfs_free(p: &Path) -> u64 {
    let st = rustix::fs::statvfs(p).unwrap();
    st.f_bavail * st.f_frsize
}

/// A tmpfs mounted for one test, unmounted when it ends.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        // As root (here and in CI) mount directly; otherwise through sudo, owned by us.
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let opts = format!("size={size},mode=0700,uid={uid},gid={gid}");
        let mut cmd = if uid == 0 {
            Command::new("mount")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "mount"]);
            c
        };
        let out = cmd
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs to mount a {size} tmpfs at {} (as root, or with passwordless sudo): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = if rustix::process::getuid().is_root() {
            Command::new("umount").arg("-l").arg(&self.0).status()
        } else {
            Command::new("sudo")
                .args(["-n", "umount", "-l"])
                .arg(&self.0)
                .status()
        };
    }
}

/// Finding 16: the quarantine volume on a 60 MiB filesystem. A 70 MB upload without a
/// length gets 507 with Retry-After naming the volume (not its path), its partial segment is
/// gone and nothing is recorded; uploads whose declared length does not fit are refused
/// before a byte is written; `/readyz` reports the volume once it is below its floor and
/// `/metrics` shows the free space; freeing space brings everything back, chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_quarantine_volume_answers_507_and_shows_in_readyz_and_metrics() {
    const FLOOR: u64 = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("quarantine");
    let _mount = Mount::tmpfs(&quarantine, "60m");
    let secret = dir.path().display().to_string();
    let t = TestApp::spawn_in_with(dir, |s| s.storage.min_free = FLOOR).await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let tok = t.upload_token(&p.pm, &id, Value::Null).await;
    let total = statvfs_free(&quarantine);

    // A chunked PUT (no length declared) larger than the volume.
    let server = addr_of(&t.url);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    let mut s = sock.connect(server).await.unwrap();
    let head = format!(
        "PUT /api/v1/transfers/{id}/files/big.bin HTTP/1.1\r\nHost: airlock\r\n\
         Authorization: Bearer {tok}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let chunk = bytes(1 << 20, 3);
        for _ in 0..70 {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
        // Keep the write half open until the answer has been read.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    let r = loop {
        match tokio::time::timeout(Duration::from_secs(60), rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break parse(&buf).expect("an answer to the full-disk PUT"),
        }
        if let Some(r) = parse(&buf) {
            break r;
        }
    };
    writer.abort();
    assert_eq!(r.status, 507, "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(r.body.contains("quarantine volume"), "{r:?}");
    assert!(
        !r.body.contains(&secret),
        "the answer shows a server path: {r:?}"
    );
    assert!(t
        .app
        .store
        .files(id.parse().unwrap())
        .await
        .unwrap()
        .is_empty());
    let left = walk_files(&quarantine.join("transfers"));
    assert!(left.is_empty(), "partial segments left: {left:?}");
    assert!(statvfs_free(&quarantine) + (1 << 20) >= total);

    // Declared lengths that do not fit above the floor are refused before anything is kept.
    let mut declared = stall(
        server,
        "127.0.0.1".parse().unwrap(),
        &put_head(&id, "declared.bin", &tok, 55 << 20),
        &[],
    )
    .await;
    let r = response(&mut declared, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(r.status, 507, "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(
        r.body.contains("quarantine volume") && !r.body.contains(&secret),
        "{r:?}"
    );
    // Two PUTs in progress cannot both count on the same free space.
    let first = stall(
        server,
        "127.0.0.1".parse().unwrap(),
        &put_head(&id, "first.bin", &tok, 30 << 20),
        &[1u8; 1000],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = stall(
        server,
        "127.0.0.1".parse().unwrap(),
        &put_head(&id, "second.bin", &tok, 30 << 20),
        &[],
    )
    .await;
    let r = response(&mut second, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(r.status, 507, "{r:?}");
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = t
        .tus_create(&tok, &id)
        .header("Upload-Length", (100u64 << 20).to_string())
        .header("Upload-Metadata", tus_meta("tus.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(r.headers().contains_key("retry-after"));
    assert!(t
        .app
        .store
        .files(id.parse().unwrap())
        .await
        .unwrap()
        .is_empty());

    // Ready, with the free space in the metrics.
    let r = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let metrics = t
        .http
        .get(format!("{}/metrics", t.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let free: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("airlock_volume_free_bytes{volume=\"quarantine\"} "))
        .unwrap_or_else(|| panic!("no quarantine free-space metric: {metrics}"))
        .parse()
        .unwrap();
    assert!(free.abs_diff(statvfs_free(&quarantine)) < (1 << 20));
    assert!(metrics.contains("airlock_volume_free_bytes{volume=\"released\"}"));

    // Below the floor: not ready, naming the volume.
    let filler = quarantine.join("filler");
    std::fs::write(&filler, vec![0u8; (total - FLOOR / 2) as usize]).unwrap();
    let r = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["free_space"]["quarantine"]
            .as_str()
            .unwrap()
            .starts_with("low"),
        "{v}"
    );
    assert_eq!(v["free_space"]["released"], "ok", "{v}");
    assert!(!v.to_string().contains(&secret), "{v}");

    // Space freed: ready again, uploads work, the audit chain is whole.
    std::fs::remove_file(&filler).unwrap();
    let r = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, v) = t.put(&tok, &id, "small.bin", bytes(1 << 20, 4)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let out = t.cli(None, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Finding 13: under a permissive umask the data directory is 0700, the database and every
/// quarantined segment 0600 (also on a directory from before the fix), released files keep
/// 0444 in 0555 folders under traversable parents, and the release is shown (state reason,
/// audit detail, webhook body) relative to its volume, never as the server's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_data_directory_is_private_and_releases_show_no_server_path() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let t = TestApp::spawn_with(|s| {
        // Nobody listens there: deliveries stay queued, with their bodies, for the test.
        s.webhooks.urls = vec!["http://127.0.0.1:9/hook".into()];
        s.webhooks.secret = "a-webhook-secret-of-some-length".into();
    })
    .await;
    let p = t.bootstrap(1).await;
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    let (s, v) = t.put(&up, &id, "sub/a.csv", b"1,2".to_vec()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.scans_done(&id).await;
    let (s, v) = t
        .post_json(
            &p.inv,
            &format!("/transfers/{id}/approve"),
            json!({ "as": "investigator" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = t.wait_for_state(&p.pm, &id, "released").await;

    let data = t.data_dir().to_owned();
    let secret = data.canonicalize().unwrap().display().to_string();
    assert_eq!(mode(&data), 0o700);
    // On PostgreSQL (AIRLOCK_TEST_DATABASE) there is no database file in the directory.
    let db_files: &[&str] = if pg::enabled() {
        &[]
    } else {
        &["airlock.db", "airlock.db-wal", "airlock.db-shm"]
    };
    for f in db_files.iter().chain(&["keys/jwt.key", "keys/audit.key"]) {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let segments = walk_files(&data.join("quarantine/transfers"));
    assert!(!segments.is_empty());
    for s in &segments {
        assert_eq!(mode(s), 0o600, "{}", s.display());
        assert_eq!(mode(s.parent().unwrap()), 0o700, "{}", s.display());
    }
    let released = data.join(format!("volumes/proj/ws/data/{id}"));
    assert_eq!(mode(&released.join("sub/a.csv")), 0o444);
    assert_eq!(mode(&released.join("sub")), 0o555);
    assert_eq!(mode(&released), 0o555);
    for parent in [
        "volumes",
        "volumes/proj",
        "volumes/proj/ws",
        "volumes/proj/ws/data",
    ] {
        assert_eq!(mode(&data.join(parent)), 0o755, "{parent}");
    }

    let reason = v["state_reason"].as_str().unwrap();
    assert!(reason.contains(&format!("proj/ws/data/{id}")), "{reason}");
    assert!(!reason.contains(&secret), "{reason}");
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit_events WHERE action = 'transfer.released' AND transfer_id = $1",
    )
    .bind(&id)
    .fetch_one(t.app.store.pool())
    .await
    .unwrap();
    assert!(!detail.contains(&secret), "{detail}");
    // The webhook bodies, once queued, name no server path either.
    let mut bodies = Vec::new();
    for _ in 0..100 {
        bodies = sqlx::query_scalar::<_, String>(
            "SELECT payload FROM webhook_deliveries WHERE event = 'transfer.released'",
        )
        .fetch_all(t.app.store.pool())
        .await
        .unwrap();
        if !bodies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!bodies.is_empty(), "no webhook queued for the release");
    for b in &bodies {
        assert!(!b.contains(&secret), "{b}");
        assert!(b.contains(&format!("proj/ws/data/{id}")), "{b}");
    }

    // A data directory from before (0755, database 0644) is made private on start.
    let dir = t.stop().await;
    use std::os::unix::fs::PermissionsExt;
    let loose = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(dir.path(), loose).unwrap();
    for f in db_files.iter().take(1) {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let t = TestApp::spawn_in(dir).await;
    assert_eq!(mode(t.data_dir()), 0o700);
    for f in db_files.iter().take(1) {
        assert_eq!(mode(&t.data_dir().join(f)), 0o600);
    }
}
