//! Shared test helpers: a real airlock server on port 0 in its own temporary data directory,
//! bootstrapped with the people of a small project, plus small HTTP and process helpers.
#![allow(dead_code)]

pub mod garage;
pub mod moto;
pub mod pg;
pub mod smtp;
pub mod tus;

use airlock::app::App;
use airlock::config::Settings;
use airlock::domain::Role;
use airlock::workflow::admin;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

pub struct TestApp {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub app: Arc<App>,
    pub http: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Staff tokens of the bootstrapped people.
pub struct People {
    pub pm: String,
    pub inv: String,
    pub prov: String,
    pub researcher: String,
    pub outsider: String,
}

pub fn settings(dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.storage.data_dir = dir.to_owned();
    s.scanning.clamd = Some(shared_clamd().to_owned());
    s.scanning.retry_initial = Duration::from_millis(200);
    s.scanning.retry_max = Duration::from_secs(2);
    s.server.sweep_interval = Duration::from_millis(200);
    s.server.shutdown_grace = Duration::from_secs(10);
    // Tests send many refused credentials from one address on purpose (the authorization
    // matrix); the refusal throttle is tested on its own with its real limits
    // (security_audit::refusals_past_the_limit_get_429_before_any_lookup).
    s.audit.refusals_per_client = 1_000_000;
    s.audit.refusals_per_token = 1_000_000;
    // AIRLOCK_TEST_DATABASE=postgres: the same test on a real PostgreSQL (common::pg).
    if pg::enabled() {
        s.database.url = Some(pg::database_for(dir));
    }
    s
}

impl TestApp {
    /// Starts a server on a fresh data directory.
    pub async fn spawn() -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn_in(dir).await
    }

    /// Starts a server with adjusted settings.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = settings(dir.path());
        adjust(&mut s);
        Self::start(dir, s).await
    }

    /// Starts a server on an existing data directory (a restart).
    pub async fn spawn_in(dir: tempfile::TempDir) -> TestApp {
        let s = settings(dir.path());
        Self::start(dir, s).await
    }

    /// Starts a server on an existing data directory with adjusted settings.
    pub async fn spawn_in_with(
        dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestApp {
        let mut s = settings(dir.path());
        adjust(&mut s);
        Self::start(dir, s).await
    }

    async fn start(dir: tempfile::TempDir, s: Settings) -> TestApp {
        // AIRLOCK_TEST_LOG=LEVEL: the servers' logs on stderr, to see why a test failed.
        if let Ok(level) = std::env::var("AIRLOCK_TEST_LOG") {
            airlock::telemetry::init(&airlock::config::LogSettings {
                level,
                ..Default::default()
            });
        }
        let app = App::open(s).await.expect("open app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(airlock::server::run(app.clone(), listener, async move {
            let _ = rx.await;
        }));
        TestApp {
            url,
            dir,
            app,
            http: Client::new(),
            stop: Some(tx),
            server: Some(server),
        }
    }

    /// Signals shutdown without waiting for it.
    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server gracefully and gives back its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            s.await.unwrap().unwrap();
        }
        self.app.store.pool().close().await;
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A project `proj` with workspace `proj/ws` at `tier`, and its people.
    pub async fn bootstrap(&self, tier: i64) -> People {
        let a = &self.app;
        admin::add_user(a, "pm", &[Role::ProjectManager])
            .await
            .unwrap();
        admin::add_user(a, "inv", &[Role::Investigator])
            .await
            .unwrap();
        admin::add_user(a, "prov", &[Role::Provider]).await.unwrap();
        admin::add_user(a, "res", &[Role::Researcher])
            .await
            .unwrap();
        admin::add_user(a, "outsider", &[Role::Investigator])
            .await
            .unwrap();
        admin::create_project(a, "proj").await.unwrap();
        admin::create_project(a, "other").await.unwrap();
        admin::add_member(a, "proj", "pm", Role::ProjectManager)
            .await
            .unwrap();
        admin::add_member(a, "proj", "inv", Role::Investigator)
            .await
            .unwrap();
        admin::add_member(a, "proj", "res", Role::Researcher)
            .await
            .unwrap();
        admin::add_member(a, "other", "outsider", Role::Investigator)
            .await
            .unwrap();
        admin::create_workspace(a, "proj", "ws", tier, None)
            .await
            .unwrap();
        admin::create_workspace(a, "other", "ws", tier, None)
            .await
            .unwrap();
        People {
            pm: admin::staff_token(a, "pm", None).await.unwrap(),
            inv: admin::staff_token(a, "inv", None).await.unwrap(),
            prov: admin::staff_token(a, "prov", None).await.unwrap(),
            researcher: admin::staff_token(a, "res", None).await.unwrap(),
            outsider: admin::staff_token(a, "outsider", None).await.unwrap(),
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    /// A tus creation request (POST) with the upload token; add Upload-Length, metadata and
    /// any body. A fresh connection each time, as a refused upload may have closed the last.
    pub fn tus_create(&self, token: &str, id: &str) -> reqwest::RequestBuilder {
        Client::new()
            .post(self.api(&format!("/transfers/{id}/tus")))
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0")
    }

    /// A tus PATCH of `bytes` at `offset` of the upload at `url`.
    pub fn tus_patch(
        &self,
        token: &str,
        url: &str,
        offset: impl ToString,
        bytes: impl Into<reqwest::Body>,
    ) -> reqwest::RequestBuilder {
        self.http
            .patch(url)
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(bytes)
    }

    /// Opens a transfer as the PM; returns its id.
    pub async fn open_transfer(&self, pm: &str, kind: &str, uploader: &str) -> String {
        self.open_transfer_in(pm, "proj/ws", kind, uploader).await
    }

    /// Opens a transfer in `workspace` (`PROJECT/WORKSPACE`) as the PM; returns its id.
    pub async fn open_transfer_in(
        &self,
        pm: &str,
        workspace: &str,
        kind: &str,
        uploader: &str,
    ) -> String {
        let (status, v) = self
            .post_json(
                pm,
                "/transfers",
                serde_json::json!({ "workspace": workspace, "kind": kind, "uploader": uploader }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// Issues an upload token as the PM.
    pub async fn upload_token(&self, pm: &str, id: &str, body: Value) -> String {
        let (status, v) = self
            .post_json(pm, &format!("/transfers/{id}/tokens"), body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    pub async fn post_json(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.api(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.api(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// PUTs `bytes` at `path` (already URL-encoded) with an upload token.
    pub async fn put(
        &self,
        token: &str,
        id: &str,
        encoded_path: &str,
        bytes: Vec<u8>,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .put(self.api(&format!("/transfers/{id}/files/{encoded_path}")))
            .bearer_auth(token)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// PUTs a tar stream to `/transfers/{id}/archive{query}` with an upload token.
    pub async fn put_archive(
        &self,
        token: &str,
        id: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .put(self.api(&format!("/transfers/{id}/archive{query}")))
            .bearer_auth(token)
            .header("Content-Type", "application/x-tar")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The transfer's summary, with `scans.verdicts` filled from the verdict pages as
    /// `airlock transfer show --json` fills it (the summary itself carries only counts).
    pub async fn show(&self, token: &str, id: &str) -> Value {
        let (status, mut v) = self.get_json(token, &format!("/transfers/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(
            v["scans"].get("verdicts").is_none() && v.get("files").is_none(),
            "the summary lists files or verdicts: {v}"
        );
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/transfers/{id}/verdicts?after={a}"),
                None => format!("/transfers/{id}/verdicts"),
            };
            let (status, mut page) = self.get_json(token, &path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            all.append(page["verdicts"].as_array_mut().unwrap());
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => break,
            }
        }
        v["scans"]["verdicts"] = Value::Array(all);
        v
    }

    /// Polls until the transfer reaches `state` (background work), or panics after 20 s.
    pub async fn wait_for_state(&self, token: &str, id: &str, state: &str) -> Value {
        for _ in 0..200 {
            let v = self.show(token, id).await;
            if v["state"] == state {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "transfer {id} never reached {state}: {}",
            self.show(token, id).await
        );
    }

    /// Waits (reading the database, so no token is needed) until the scans of a sealed
    /// transfer are done; panics after 30 s.
    pub async fn scans_done(&self, id: &str) {
        let tid: airlock::domain::TransferId = id.parse().unwrap();
        for _ in 0..300 {
            let st = self.app.store.transfer(tid).await.unwrap().unwrap().state;
            if !matches!(
                st,
                airlock::domain::TransferState::Sealed | airlock::domain::TransferState::Scanning
            ) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("transfer {id} is still scanning");
    }

    /// Runs the `airlock` binary against this server and data directory.
    pub fn cli(&self, token: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
        c.args(args)
            .env("AIRLOCK_SERVER", &self.url)
            .env("AIRLOCK__STORAGE__DATA_DIR", self.data_dir())
            .env_remove("AIRLOCK_TOKEN");
        if let Some(url) = pg::recorded(self.data_dir()) {
            c.env("AIRLOCK__DATABASE__URL", url);
        }
        if let Some(t) = token {
            c.env("AIRLOCK_TOKEN", t);
        }
        c.output().expect("run airlock")
    }
}

/// A direct connection to the database of the data directory `dir` (SQLite there, or the
/// PostgreSQL database recorded for it), for tests that read or tamper behind airlock's back.
pub async fn raw_db(dir: &Path) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = pg::recorded(dir)
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("airlock.db").display()));
    sqlx::AnyPool::connect(&url).await.unwrap()
}

/// A transfer's scan verdicts (as `transfer show` gives them) that are `verdict`.
pub fn verdicts<'a>(v: &'a Value, verdict: &str) -> Vec<&'a Value> {
    v["scans"]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["verdict"] == verdict)
        .collect()
}

/// Percent-encodes every byte, so hostile paths reach the server exactly as written.
pub fn encode_all(p: &str) -> String {
    p.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Runs a command and returns its stdout, failing the test on a non-zero exit.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The first field of `tool FILE` (sha256sum, b3sum).
pub fn digest_with(tool: &str, file: &Path) -> String {
    run(Command::new(tool).arg(file))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn write(dir: &Path, rel: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    p
}

/// The `airlock` binary on the data directory `data`, and on the PostgreSQL database recorded
/// for it when a server there ran on PostgreSQL.
pub fn airlock_at(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock"));
    if let Some(url) = pg::recorded(data) {
        cmd.env("AIRLOCK__DATABASE__URL", url);
    }
    cmd.arg("--data-dir").arg(data);
    cmd
}

/// Starts `airlock serve` on `data` and port 0; returns the child and its URL (read from the
/// "listening on" line).
pub fn serve_binary(data: &Path) -> (std::process::Child, String) {
    serve_binary_with(data, &[])
}

/// As [`serve_binary`], with more environment variables (settings) for the server.
pub fn serve_binary_with(data: &Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock"));
    if pg::enabled() {
        cmd.env("AIRLOCK__DATABASE__URL", pg::database_for(data));
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("AIRLOCK__SCANNING__CLAMD", shared_clamd())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start airlock serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

/// Opens a data ingress in `proj/ws` on the server at `url` and mints its upload token;
/// returns (transfer id, token).
pub async fn open_with_token(http: &reqwest::Client, url: &str, pm: &str) -> (String, String) {
    let v: Value = http
        .post(format!("{url}/api/v1/transfers"))
        .bearer_auth(pm)
        .json(&serde_json::json!({ "workspace": "proj/ws", "kind": "data-ingress", "uploader": "prov" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned();
    let v: Value = http
        .post(format!("{url}/api/v1/transfers/{id}/tokens"))
        .bearer_auth(pm)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (id, v["token"].as_str().unwrap().to_owned())
}

/// tus `Upload-Metadata` naming the file `path`.
pub fn tus_meta(path: &str) -> String {
    use base64::Engine;
    format!(
        "relativePath {}",
        base64::engine::general_purpose::STANDARD.encode(path)
    )
}

/// A real clamd (Debian's clamav-daemon) on a free port in its own temporary directory, with
/// the repository's clamd.conf.template and a database holding only scanners/test.hdb (EICAR
/// by MD5 and size; no signature download is possible on the test machines).
pub struct Clamd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn clamd_binary() -> &'static str {
    for p in ["/usr/sbin/clamd", "/usr/bin/clamd"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("clamd not found: ./scripts/test.sh installs Debian's clamav-daemon");
}

/// Writes a clamd config for `port` under `dir` (database in `dir/db`); returns its path.
fn clamd_config(dir: &Path, port: u16, stream_max: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    if !db.join("test.hdb").exists() {
        std::fs::copy(repo.join("scanners/test.hdb"), db.join("test.hdb")).unwrap();
    }
    let conf = std::fs::read_to_string(repo.join("scanners/clamd.conf.template"))
        .unwrap()
        .replace("@PORT@", &port.to_string())
        .replace("@DATABASE_DIR@", db.to_str().unwrap())
        .replace("@LOG_FILE@", dir.join("clamd.log").to_str().unwrap())
        .replace("@STREAM_MAX_LENGTH@", stream_max);
    let path = dir.join("clamd.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// Waits until clamd answers PING on `port`.
pub fn wait_clamd(port: u16, log: &Path) {
    use std::io::{Read, Write};
    for _ in 0..300 {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.write_all(b"zPING\0");
            let mut buf = Vec::new();
            let _ = c.read_to_end(&mut buf);
            if buf.starts_with(b"PONG") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "clamd on port {port} never answered PING: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

impl Clamd {
    /// Starts a clamd of this test's own (one it may stop and restart).
    pub fn start() -> Clamd {
        Self::start_with("100M")
    }

    /// Starts a clamd whose StreamMaxLength (and MaxFileSize) is `stream_max` ("1M").
    pub fn start_with(stream_max: &str) -> Clamd {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        clamd_config(dir.path(), port, stream_max);
        let mut c = Clamd {
            port,
            dir,
            child: None,
        };
        c.restart();
        c
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn db_dir(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// Kills clamd (as a crash would) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts clamd again on the same port, database and config.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(clamd_binary())
            .arg("-c")
            .arg(self.dir.path().join("clamd.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start clamd");
        self.child = Some(child);
        wait_clamd(self.port, &self.dir.path().join("clamd.log"));
    }

    /// A scanners/ folder like the repository's, with clamav.toml pointing at this clamd and
    /// its database folder, and `stream_max_length` set.
    pub fn scanners_dir(&self, stream_max_length: &str) -> PathBuf {
        let out = repo_scanners(&self.dir.path().join("scanners"));
        let clam = std::fs::read_to_string(out.join("clamav.toml"))
            .unwrap()
            .replace(
                "address = \"127.0.0.1:3310\"",
                &format!("address = \"{}\"", self.addr()),
            )
            .replace(
                "stream_max_length = \"100 MiB\"",
                &format!("stream_max_length = \"{stream_max_length}\""),
            )
            .replace(
                "# database_dir = \"/var/lib/clamav\"",
                &format!(
                    "database_dir = \"{}\"\nreload_settle = \"3s\"",
                    self.db_dir().display()
                ),
            );
        std::fs::write(out.join("clamav.toml"), clam).unwrap();
        out
    }
}

/// A copy of the repository's scanners/*.toml in `dir` (created), to edit for a test.
pub fn repo_scanners(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("scanners");
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(&repo).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    dir.to_owned()
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One clamd shared by every test of this test binary, started on first use. It is started
/// under a shell that kills it once this process's end of its stdin closes, so it never
/// outlives the test run.
pub fn shared_clamd() -> &'static str {
    type Guard = std::sync::Mutex<(std::process::Child, std::process::ChildStdin)>;
    static ADDR: std::sync::OnceLock<(String, Guard)> = std::sync::OnceLock::new();
    &ADDR
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap().keep();
            let port = free_port();
            let conf = clamd_config(&dir, port, "100M");
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{} -c '{}' >/dev/null 2>&1 & pid=$!; cat >/dev/null; kill $pid; wait $pid; rm -rf '{}'",
                    clamd_binary(),
                    conf.display(),
                    dir.display()
                ))
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("start clamd");
            let stdin = child.stdin.take().unwrap();
            wait_clamd(port, &dir.join("clamd.log"));
            (
                format!("127.0.0.1:{port}"),
                std::sync::Mutex::new((child, stdin)),
            )
        })
        .0
}

/// A tier-1 policy whose files are re-verified every `interval`.
pub fn fast_policy(dir: &Path, interval: &str) -> PathBuf {
    let p = dir.join("fast.toml");
    std::fs::write(
        &p,
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tier1.toml"))
            .unwrap()
            .replace(
                "reverify_interval = \"7d\"",
                &format!("reverify_interval = \"{interval}\""),
            ),
    )
    .unwrap();
    p
}

pub async fn integrity_incidents(t: &TestApp, id: &str) -> Vec<String> {
    t.app
        .store
        .incidents(Some(id.parse().unwrap()))
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.kind == "integrity")
        .map(|i| i.detail)
        .collect()
}

pub async fn wait_incidents(t: &TestApp, id: &str, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let v = integrity_incidents(t, id).await;
        if v.len() >= n {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "expected {n} integrity incidents, got {:?}",
        integrity_incidents(t, id).await
    );
}

/// Seals, waits for the scans, approves (an Investigator, enough at tier 1) and waits for the
/// release; returns `transfer show`.
pub async fn approve_and_release(t: &TestApp, p: &People, up: &str, id: &str) -> Value {
    let (s, v) = t
        .post_json(up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.scans_done(id).await;
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, id, "released").await
}
