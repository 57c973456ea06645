//! Real Chromium for the browser UI tests (tests/ui*.rs): Debian's `chromedriver` on a free
//! port, driving Debian's `/usr/bin/chromium` headless, through fantoccini.
//!
//! Each [`Browser`] has its own chromedriver, its own fresh profile and download folder (both
//! temporary). Nothing is left running: chromedriver starts under a small watchdog that leads a
//! process group of its own, which chromedriver and every Chromium process it starts join;
//! [`Browser::close`] ends the session and kills the group, `Drop` (a test that panicked) kills
//! the group, and if the test process dies without either (a timeout's SIGKILL, Ctrl-C) the
//! watchdog sees its stdin pipe close and kills the group itself.
//!
//! Checked against Chromium/ChromeDriver 148 with pages on 127.0.0.1:
//! - CSP violations reach the browser log ([`Browser::console`]) as `SEVERE` lines such as
//!   `SEVERE http://…/page 0 Executing inline script violates the following Content Security
//!   Policy directive 'script-src 'self''. …`. Scripts blocked by a sandbox (`<iframe
//!   sandbox="">`, `Content-Security-Policy: sandbox`) log nothing at all: check a marker the
//!   script would set. A missing favicon also logs a `SEVERE … 404` line.
//! - [`Browser::throttle`] slows uploads to 127.0.0.1 (fetch and XMLHttpRequest alike: 20 MiB
//!   at 4 MB/s took 5.4 s, against 0.1 s unthrottled), and new conditions apply to a request
//!   already under way. A reload in the middle of a throttled upload aborts it (the server
//!   sees a cut body). [`Browser::offline`] does *not* abort a request under way (it ran on to
//!   the end); only new requests fail.
//! - A `__Host-` cookie with `Secure; HttpOnly; SameSite=Strict; Path=/` set over plain HTTP by
//!   `http://127.0.0.1:PORT` or `http://localhost:PORT` (loopback counts as a secure context)
//!   is stored and sent back, also on the GET that follows a form POST answered 303.
//! - A directory path sent to an `<input type=file webkitdirectory>` yields every file under
//!   it with `webkitRelativePath` `DIRNAME/sub/file` (see [`Browser::set_file_input`]).
//! - Attachments are downloaded into [`Browser::download_dir`] without a prompt.
#![allow(dead_code)]

use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One headless Chromium session.
pub struct Browser {
    /// The WebDriver session: `goto`, `find`, `execute`, `refresh`, … (fantoccini 0.22).
    pub client: Client,
    driver: Child,
    port: u16,
    session: String,
    http: reqwest::Client,
    log: Mutex<Log>,
    profile: tempfile::TempDir,
    downloads: tempfile::TempDir,
    closed: bool,
}

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    console_seen: usize,
    csp_seen: usize,
}

fn is_csp(line: &str) -> bool {
    line.contains("Content Security Policy") || line.contains("Refused to")
}

/// A port that was free a moment ago (chromedriver is retried on another if it is taken).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session (window 1280×1024, browser
    /// log at level ALL, downloads allowed into [`Browser::download_dir`] without a prompt).
    pub async fn start() -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver (scripts/test.sh does)"
            );
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let (driver, port) = start_driver(&http).await;
        let profile = tempfile::tempdir().expect("profile tempdir");
        let downloads = tempfile::tempdir().expect("downloads tempdir");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-gpu".into(),
            // The network is closed: no background calls to Google's hosts.
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-quic".into(),
            "--password-store=basic".into(),
            format!("--user-data-dir={}", profile.path().display()),
            "--window-size=1280,1024".into(),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut b = None;
        let mut last_err = String::new();
        // Session creation is retried once: a slow first Chromium start on a loaded machine.
        for _ in 0..2 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => {
                    b = Some(c);
                    break;
                }
                Err(e) => last_err = format!("{e:?}"),
            }
        }
        let mut driver = driver;
        let client = match b {
            Some(c) => c,
            None => {
                kill_group(&mut driver);
                panic!("chromedriver could not start Chromium: {last_err}");
            }
        };
        let session = client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("session id");
        let b = Browser {
            client,
            driver,
            port,
            session,
            http,
            log: Mutex::new(Log::default()),
            profile,
            downloads,
            closed: false,
        };
        // Headless Chromium honours the download prefs only on some versions; the DevTools
        // command makes downloads land in the folder on all of them.
        let dl = b.downloads.path().display().to_string();
        b.cdp(
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": dl, "eventsEnabled": false }),
        )
        .await;
        b
    }

    /// chromedriver's port (its HTTP API is at `http://127.0.0.1:{port}`).
    pub fn driver_port(&self) -> u16 {
        self.port
    }

    /// The WebDriver session id.
    pub fn session_id(&self) -> &str {
        &self.session
    }

    /// Where downloads land.
    pub fn download_dir(&self) -> &Path {
        self.downloads.path()
    }

    /// Sends a chromedriver command under `/session/{id}/{path}` (vendor endpoints such as
    /// `se/log` and `chromium/network_conditions`); returns its `value`, panics on an error.
    pub async fn driver_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/session/{}/{path}",
            self.port, self.session
        );
        let mut req = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "chromedriver {method} {path}: {status} {v}"
        );
        v.get("value").cloned().unwrap_or(Value::Null)
    }

    /// Runs a Chrome DevTools Protocol command on the current tab (`goog/cdp/execute`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.driver_cmd(
            reqwest::Method::POST,
            "goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    /// Fetches new browser-log entries into the kept log.
    async fn pull_log(&self) {
        let v = self
            .driver_cmd(
                reqwest::Method::POST,
                "se/log",
                Some(json!({ "type": "browser" })),
            )
            .await;
        let mut log = self.log.lock().unwrap();
        for e in v.as_array().into_iter().flatten() {
            let level = e.get("level").and_then(Value::as_str).unwrap_or("?");
            let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
            log.lines.push(format!("{level} {msg}"));
        }
    }

    /// Browser console and log messages ("LEVEL message", e.g. `SEVERE http://… Refused to
    /// execute inline script …`) since the last call of `console`.
    pub async fn console(&self) -> Vec<String> {
        self.pull_log().await;
        let mut log = self.log.lock().unwrap();
        let new = log.lines[log.console_seen..].to_vec();
        log.console_seen = log.lines.len();
        new
    }

    /// Every browser log message of this session so far.
    pub async fn console_all(&self) -> Vec<String> {
        self.pull_log().await;
        self.log.lock().unwrap().lines.clone()
    }

    /// The log lines that are CSP violations ("Content Security Policy" / "Refused to") since
    /// the last call of `csp_violations` (independent of `console`). A script blocked by a
    /// sandbox logs nothing: pair this with a check of a marker the script would set.
    pub async fn csp_violations(&self) -> Vec<String> {
        self.pull_log().await;
        let mut log = self.log.lock().unwrap();
        let new: Vec<String> = log.lines[log.csp_seen..]
            .iter()
            .filter(|l| is_csp(l))
            .cloned()
            .collect();
        log.csp_seen = log.lines.len();
        new
    }

    async fn network_conditions(&self, offline: bool, latency_ms: u64, down: i64, up: i64) {
        self.driver_cmd(
            reqwest::Method::POST,
            "chromium/network_conditions",
            Some(json!({ "network_conditions": {
                "offline": offline,
                "latency": latency_ms,
                "download_throughput": down,
                "upload_throughput": up,
            }})),
        )
        .await;
    }

    /// Limits uploads from the page to `upload_bytes_per_s` (downloads stay unlimited, no added
    /// latency). Applies to 127.0.0.1, to fetch and XMLHttpRequest, and to a request already
    /// under way. Stays in force across reloads until `unthrottle`.
    pub async fn throttle(&self, upload_bytes_per_s: u64) {
        self.network_conditions(false, 0, -1, upload_bytes_per_s as i64)
            .await;
    }

    /// Takes the browser off the network (`true`: new requests fail at once, but a request
    /// already under way is *not* aborted and runs on unthrottled) or puts it back without
    /// limits (`false`). To cut an upload in the middle, `throttle` it and reload the page.
    pub async fn offline(&self, offline: bool) {
        if offline {
            self.network_conditions(true, 0, -1, -1).await;
        } else {
            self.unthrottle().await;
        }
    }

    /// Clears any network conditions.
    pub async fn unthrottle(&self) {
        self.driver_cmd(reqwest::Method::DELETE, "chromium/network_conditions", None)
            .await;
    }

    /// A PNG screenshot of the viewport written to `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The first 2 KB of the page source and the whole browser log, for failure messages.
    pub async fn debug_state(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let src = self.client.source().await.unwrap_or_default();
        let mut cut = src.len().min(2048);
        while !src.is_char_boundary(cut) {
            cut -= 1;
        }
        format!(
            "url: {url}\npage source (first 2 KB):\n{}\nbrowser log:\n{}",
            &src[..cut],
            self.console_all().await.join("\n")
        )
    }

    /// Waits (polling every 100 ms) until an element matching `css` has text containing
    /// `text` (`""` matches any such element); panics on timeout with the page and the log.
    pub async fn wait_text(&self, css: &str, text: &str, timeout: Duration) -> Element {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(found) = self.client.find_all(Locator::Css(css)).await {
                for e in found {
                    if let Ok(t) = e.text().await {
                        if t.contains(text) {
                            return e;
                        }
                    }
                }
            }
            if Instant::now() >= end {
                panic!(
                    "no element {css:?} with text {text:?} after {timeout:?}\n{}",
                    self.debug_state().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (polling every 100 ms) until the JavaScript expression `expr` is truthy; returns
    /// its value. Panics on timeout with the page and the log.
    pub async fn wait_js(&self, expr: &str, timeout: Duration) -> Value {
        let end = Instant::now() + timeout;
        let script = format!("return ({expr});");
        loop {
            if let Ok(v) = self.client.execute(&script, vec![]).await {
                let truthy = match &v {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    return v;
                }
            }
            if Instant::now() >= end {
                panic!(
                    "{expr} not true after {timeout:?}\n{}",
                    self.debug_state().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Gives files to an `<input type=file>` (chromedriver sends the paths as keys, one a
    /// line; `multiple` is needed for more than one). For an input with `webkitdirectory`,
    /// pass one directory: the input gets every file under it, each with `webkitRelativePath`
    /// `DIRNAME/sub/file` (DIRNAME being the directory's own name). Paths must be absolute.
    /// Fires the input's `change` event like a user's pick.
    pub async fn set_file_input(&self, css: &str, paths: &[&Path]) {
        let input = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("file input {css:?}: {e}"));
        let keys: Vec<String> = paths
            .iter()
            .map(|p| {
                assert!(p.is_absolute(), "{} is not absolute", p.display());
                p.display().to_string()
            })
            .collect();
        input
            .send_keys(&keys.join("\n"))
            .await
            .unwrap_or_else(|e| panic!("send files to {css:?}: {e}"));
    }

    /// The cookie `name` as the browser holds it for the current page's site, with its
    /// flags (`http_only()`, `secure()`, `same_site()`, `path()`), HttpOnly ones included.
    pub async fn cookie(&self, name: &str) -> Option<Cookie<'static>> {
        self.client
            .get_all_cookies()
            .await
            .expect("get cookies")
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// Waits until a download named `name` is complete in [`Browser::download_dir`].
    pub async fn wait_download(&self, name: &str, timeout: Duration) -> PathBuf {
        let path = self.download_dir().join(name);
        let partial = self.download_dir().join(format!("{name}.crdownload"));
        let end = Instant::now() + timeout;
        loop {
            if path.exists() && !partial.exists() {
                return path;
            }
            if Instant::now() >= end {
                let have: Vec<_> = std::fs::read_dir(self.download_dir())
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                panic!(
                    "no download {name} after {timeout:?}; download dir holds {have:?}\n{}",
                    self.debug_state().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(20), self.client.clone().close()).await;
        kill_group(&mut self.driver);
        self.closed = true;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            // A test that panicked (or forgot `close`): every Chromium process chromedriver
            // started is in chromedriver's process group; kill them all at once.
            kill_group(&mut self.driver);
        }
    }
}

/// chromedriver under a small bash watchdog, the leader of a process group of its own that
/// chromedriver and every Chromium process it starts belong to. The watchdog reads its stdin,
/// a pipe whose only writer is this test process: if the test process dies without `Drop`
/// (killed on a timeout, Ctrl-C), the read sees end of file and the watchdog kills the whole
/// group. It exits by itself if chromedriver does (a port taken meanwhile).
const WATCHDOG: &str = r#"
"$0" --port="$1" </dev/null >/dev/null 2>&1 &
d=$!
while :; do
  read -r -t 1 _
  [ $? -gt 128 ] || break
  kill -0 "$d" 2>/dev/null || exit 3
done
kill -KILL 0
"#;

/// Starts chromedriver on a free port and waits until it is ready; retried on another port if
/// the one picked was taken meanwhile.
async fn start_driver(http: &reqwest::Client) -> (Child, u16) {
    let mut why = String::new();
    for _attempt in 0..5 {
        let port = free_port();
        let mut child = Command::new("/bin/bash")
            .args(["-c", WATCHDOG, CHROMEDRIVER, &port.to_string()])
            .stdin(Stdio::piped())
            // Output must go nowhere: an inherited pipe keeps the test run from ending.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn chromedriver");
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                why = format!("chromedriver on port {port} exited: {status}");
                break;
            }
            let ready = http
                .get(format!("http://127.0.0.1:{port}/status"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["value"]["ready"] == Value::Bool(true) {
                    return (child, port);
                }
            }
            if Instant::now() >= end {
                why = format!("chromedriver on port {port} not ready after 20 s");
                kill_group(&mut child);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("could not start chromedriver: {why}");
}

/// Kills the watchdog's process group (chromedriver and every Chromium process it started)
/// and reaps the watchdog.
fn kill_group(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // The group id is the watchdog's pid (process_group(0)), which is not reaped yet: the group
    // is ours alone.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}
