//! `airlock upload`, the built binary against a real server: folder trees with big (tus) and
//! small (batched) files, `--json` events and `--receipt`, SIGKILL halfway and the same
//! command again (bytes counted through a proxy), files changed between runs, links, path
//! mapping, `--prefix`, `--exclude`, `--dry-run`, and one refused file among good ones.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MIB: usize = 1 << 20;

struct Setup {
    app: TestApp,
    id: String,
    token: String,
    /// The Project Manager's staff token.
    pm: String,
    /// The client's state cache, kept across runs of one test.
    cache: tempfile::TempDir,
}

async fn setup() -> Setup {
    let app = TestApp::spawn().await;
    let people = app.bootstrap(1).await;
    let id = app.open_transfer(&people.pm, "data-ingress", "prov").await;
    let token = app
        .upload_token(&people.pm, &id, serde_json::json!({}))
        .await;
    Setup {
        app,
        id,
        token,
        pm: people.pm,
        cache: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// `airlock upload ARGS` in `cwd` against `url` (the server, or a proxy in front of it).
    fn command(&self, url: &str, cwd: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_airlock"));
        c.arg("upload")
            .args(args)
            .current_dir(cwd)
            .env("AIRLOCK_SERVER", url)
            .env("AIRLOCK_UPLOAD_TOKEN", &self.token)
            .env("AIRLOCK_CACHE_DIR", self.cache.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn upload(&self, cwd: &Path, args: &[&str]) -> Output {
        self.upload_via(&self.app.url, cwd, args).await
    }

    async fn upload_via(&self, url: &str, cwd: &Path, args: &[&str]) -> Output {
        self.command(url, cwd, args).output().await.unwrap()
    }

    /// What the server holds: path → (complete, received, sha256, blake3), from its database.
    async fn server_files(&self) -> BTreeMap<String, (bool, u64, String, String)> {
        let tid = self.id.parse().unwrap();
        self.app
            .app
            .store
            .files(tid)
            .await
            .unwrap()
            .into_iter()
            .map(|f| {
                (
                    f.path.clone(),
                    (
                        f.complete,
                        f.received,
                        f.sha256.unwrap_or_default(),
                        f.blake3.unwrap_or_default(),
                    ),
                )
            })
            .collect()
    }

    /// Bytes the server has acknowledged of `path` (0 if it has no such file).
    async fn received(&self, path: &str) -> u64 {
        self.server_files().await.get(path).map_or(0, |f| f.1)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every stdout line as a JSON event; panics on one that does not parse.
fn events(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}"))
        })
        .inspect(|v| assert!(v["event"].is_string(), "{v}"))
        .collect()
}

fn of_kind<'a>(ev: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["event"] == kind).collect()
}

fn paths_of(ev: &[Value], kind: &str) -> Vec<String> {
    let mut v: Vec<String> = of_kind(ev, kind)
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// `tool` (sha256sum, b3sum) over every regular file under `dir`: relative path → digest.
fn digests_of_tree(tool: &str, dir: &Path) -> HashMap<String, String> {
    let out = run(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find . -type f ! -name '*.receipt' -print0 | sort -z | xargs -0 {tool}"
        ))
        .current_dir(dir));
    out.lines()
        .map(|l| {
            let (d, p) = l.split_once("  ").unwrap();
            (p.trim_start_matches("./").to_owned(), d.to_owned())
        })
        .collect()
}

/// A TCP proxy in front of the server that counts the bytes clients send through it, and
/// can cut every connection (a lost network) and move to a new upstream (a restarted server).
struct Proxy {
    url: String,
    sent: Arc<AtomicU64>,
    upstream: Arc<std::sync::Mutex<String>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::broadcast::Sender<()>,
    /// Status lines the next new connections get instead of the server (`Retry-After: 1`).
    busy: Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = Proxy {
            url: format!("http://{}", listener.local_addr().unwrap()),
            sent: Arc::new(AtomicU64::new(0)),
            upstream: Arc::new(std::sync::Mutex::new(String::new())),
            down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            cut: tokio::sync::broadcast::channel(4).0,
            busy: Arc::default(),
        };
        p.restore(upstream);
        let (count, upstream, down, cut, busy) = (
            p.sent.clone(),
            p.upstream.clone(),
            p.down.clone(),
            p.cut.clone(),
            p.busy.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let canned = {
                    let mut b = busy.lock().unwrap();
                    (!b.is_empty()).then(|| b.remove(0))
                };
                if let Some(status) = canned {
                    tokio::spawn(async move {
                        // Read the request head, answer, close.
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match client.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let body = r#"{"error":"busy, come back later"}"#;
                        let resp = format!(
                            "HTTP/1.1 {status}\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(resp.as_bytes()).await;
                        let _ = client.shutdown().await;
                    });
                    continue;
                }
                let target = upstream.lock().unwrap().clone();
                let c = count.clone();
                let mut stop = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            c.fetch_add(n as u64, Ordering::Relaxed);
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    // A cut drops both halves of both sockets at once.
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        _ = stop.recv() => {}
                    }
                });
            }
        });
        p
    }

    /// Drops every connection and refuses new ones until [`Proxy::restore`].
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        let _ = self.cut.send(());
    }

    fn restore(&self, upstream: &str) {
        *self.upstream.lock().unwrap() = upstream.trim_start_matches("http://").to_owned();
        self.down.store(false, Ordering::SeqCst);
    }

    /// The next new connections get these status lines, one each.
    fn busy(&self, statuses: &[&'static str]) {
        self.busy.lock().unwrap().extend_from_slice(statuses);
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// Checks that the server holds exactly the files of `dir` (under `prefix`), complete, with
/// the digests sha256sum and b3sum give.
async fn assert_server_matches_tree(s: &Setup, dir: &Path) {
    let sha = digests_of_tree("sha256sum", dir);
    let b3 = digests_of_tree("b3sum", dir);
    let server = s.server_files().await;
    assert_eq!(
        server.keys().cloned().collect::<Vec<_>>(),
        {
            let mut k: Vec<String> = sha.keys().cloned().collect();
            k.sort();
            k
        },
        "the server's paths are the tree's"
    );
    for (p, (complete, _, s256, bl)) in &server {
        assert!(complete, "{p} incomplete");
        assert_eq!(s256, &sha[p], "sha256 of {p}");
        assert_eq!(bl, &b3[p], "blake3 of {p}");
    }
    // The client sent its own SHA-256 of every file (a tar member's PAX record, a tus
    // upload's last PATCH), for the server to compare at seal.
    let tid = s.id.parse().unwrap();
    for f in s.app.app.store.files(tid).await.unwrap() {
        assert_eq!(
            f.expected_sha256.as_deref(),
            Some(sha[&f.path].as_str()),
            "the provider's sha256 of {}",
            f.path
        );
    }
}

/// A tree of nested folders: `big` files of the given sizes and `small` small ones.
fn make_tree(dir: &Path, big: &[usize], small: usize, small_size: usize) -> u64 {
    let mut total = 0;
    for (i, &n) in big.iter().enumerate() {
        // Written a few MiB at a time: a 1 GiB file is not held whole.
        use std::io::Write;
        let path = write(dir, &format!("big/file{i}.bin"), &[]);
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        let mut left = n;
        let mut piece = 0u64;
        while left > 0 {
            let k = left.min(4 * MIB);
            f.write_all(&bytes(k, 1000 + i as u64 * 100_000 + piece))
                .unwrap();
            left -= k;
            piece += 1;
        }
        f.into_inner().unwrap().sync_all().unwrap();
        total += n as u64;
    }
    for i in 0..small {
        let len = small_size + (i % 7) * 13;
        write(
            dir,
            &format!("small/d{}/e{}/f{i:05}.txt", i % 5, i % 3),
            &bytes(len, i as u64),
        );
        total += len as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_tree_arrives_whole_with_json_events_and_a_receipt_that_sha256sum_accepts() {
    let s = setup().await;
    let src = tempfile::tempdir().unwrap();
    // Two files above the tus threshold (one of three chunks) and 300 small ones in nested
    // folders, in batches of 100.
    make_tree(src.path(), &[9 * MIB, 17 * MIB + 5], 300, 200);
    let receipt = src.path().join("sent.receipt");
    let out = s
        .upload(
            src.path(),
            &[
                "--json",
                "--receipt",
                receipt.to_str().unwrap(),
                "--batch-files",
                "100",
                ".",
            ],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    let done = of_kind(&ev, "done");
    assert_eq!(done.len(), 302, "{}", text(&out.stdout));
    assert!(of_kind(&ev, "failed").is_empty());
    assert_eq!(of_kind(&ev, "start").len(), 302);
    // The big files went by tus, the small ones in tar batches where the server takes them
    // (issue 11, 3a), else one PUT each.
    let small_method = if has_archive_route() {
        "tar"
    } else {
        eprintln!("this server has no PUT /archive yet: small files went one PUT each");
        "put"
    };
    for d in &done {
        let big = d["path"].as_str().unwrap().starts_with("big/");
        assert_eq!(d["method"], if big { "tus" } else { small_method }, "{d}");
    }
    let summary = of_kind(&ev, "summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["done"], 302);
    assert_eq!(summary[0]["failed"], 0);
    assert_server_matches_tree(&s, src.path()).await;
    // The done events carry the server's digests, which are sha256sum's and b3sum's.
    let sha = digests_of_tree("sha256sum", src.path());
    let b3 = digests_of_tree("b3sum", src.path());
    for d in &done {
        let p = d["path"].as_str().unwrap();
        assert_eq!(d["sha256"].as_str().unwrap(), sha[p]);
        assert_eq!(d["blake3"].as_str().unwrap(), b3[p]);
    }
    // The receipt passes sha256sum -c where the files are, and seals the transfer.
    run(std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "--strict"])
        .arg(&receipt)
        .current_dir(src.path()));
    assert_eq!(
        std::fs::read_to_string(&receipt).unwrap().lines().count(),
        302
    );
    let sealed = s.app.cli(
        None,
        &[
            "seal",
            "--token",
            &s.token,
            "--sha256sums",
            receipt.to_str().unwrap(),
        ],
    );
    assert!(sealed.status.success(), "{}", text(&sealed.stderr));
    // Nothing is left in the state cache once every upload finished.
    let left = walk_count(s.cache.path());
    assert_eq!(left, 0, "state entries left behind");
}

/// Whether the server takes tar batches (`PUT /api/v1/transfers/{id}/archive`).
fn has_archive_route() -> bool {
    airlock::server::api_routes()
        .iter()
        .any(|(m, p)| *m == "put" && p == "/api/v1/transfers/{id}/archive")
}

fn walk_count(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += walk_count(&p);
        } else {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_halfway_the_same_command_resumes_without_resending_acknowledged_bytes()
{
    let s = setup().await;
    let src = tempfile::tempdir().unwrap();
    // The issue's sizes: a 1 GiB file and a folder of 5,000 small ones.
    const BIG: usize = 1024 * MIB;
    const SMALL: usize = 5000;
    make_tree(src.path(), &[BIG], SMALL, 4096);
    let big = "big/file0.bin";
    let args = ["--json", "--jobs", "2", "--batch-files", "50", "."];
    // First run, slowed so it can be stopped midway without a race: SIGKILL once the
    // server has acknowledged 16 MiB of the big file. The rate is shared by the two jobs, so
    // by then about 16 MiB of the small files' 24 MiB of tar have gone too.
    let mut first = s
        .command(
            &s.app.url,
            src.path(),
            &[&["--limit-rate", "8M"], &args[..]].concat(),
        )
        .spawn()
        .unwrap();
    let began = std::time::Instant::now();
    let mut waited = 0;
    while s.received(big).await < 16 * MIB as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        assert!(waited < 600, "the first run never reached 16 MiB");
        if let Ok(Some(st)) = first.try_wait() {
            panic!("the first run ended before it was killed: {st}");
        }
    }
    // --limit-rate held: 16 MiB at 8 MiB/s take two seconds at least.
    assert!(
        began.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        began.elapsed()
    );
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    // Let the server finish with the requests cut off by the kill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_kill = s.server_files().await;
    let acked = after_kill[big].1;
    assert!(
        acked >= 16 * MIB as u64 && acked < BIG as u64,
        "killed at {acked}"
    );
    assert!(!after_kill[big].0);
    let small_done = after_kill
        .iter()
        .filter(|(p, f)| p.starts_with("small/") && f.0)
        .count();
    assert!(
        small_done < SMALL,
        "every small file was done before the kill"
    );
    let small_left: u64 = {
        let sizes: HashMap<String, u64> = digests_of_tree("sha256sum", src.path())
            .keys()
            .map(|p| {
                (
                    p.clone(),
                    std::fs::metadata(src.path().join(p)).unwrap().len(),
                )
            })
            .collect();
        sizes
            .iter()
            .filter(|(p, _)| p.starts_with("small/") && !after_kill.get(*p).is_some_and(|f| f.0))
            .map(|(_, n)| *n)
            .sum()
    };
    // The same command again, through a proxy that counts what the client sends.
    let proxy = Proxy::start(&s.app.url).await;
    let out = s.upload_via(&proxy.url, src.path(), &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    let resumed = of_kind(&ev, "resumed");
    assert_eq!(resumed.len(), 1, "{}", text(&out.stdout));
    assert_eq!(resumed[0]["path"], big);
    assert_eq!(resumed[0]["offset"].as_u64().unwrap(), acked);
    assert!(of_kind(&ev, "changed").is_empty(), "{}", text(&out.stdout));
    // Every small file the server completed before the kill is skipped, not sent again.
    assert_eq!(of_kind(&ev, "skipped").len(), small_done);
    assert_eq!(of_kind(&ev, "done").len(), 1 + SMALL - small_done);
    let wire = proxy.sent();
    let must = BIG as u64 - acked + small_left;
    // Request lines, headers and tar headers: a few KiB per request, far below one chunk.
    let slack = (SMALL - small_done) as u64 * 3072 + 512 * 1024;
    assert!(
        wire >= must && wire <= must + slack,
        "sent {wire} bytes; the unacknowledged content is {must}"
    );
    assert_server_matches_tree(&s, src.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_between_runs_is_sent_again_from_the_start_and_reported() {
    let s = setup().await;
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "big.bin", &bytes(24 * MIB, 1));
    write(src.path(), "notes/a.txt", b"first version");
    write(src.path(), "notes/b.txt", b"stays the same");
    // A first run stopped partway through the big file.
    let mut first = s
        .command(
            &s.app.url,
            src.path(),
            &[
                "--json",
                "--limit-rate",
                "8M",
                "--chunk-size",
                "4194304",
                ".",
            ],
        )
        .spawn()
        .unwrap();
    let mut waited = 0;
    while s.received("big.bin").await < 8 * MIB as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        assert!(waited < 600, "the first run never reached 8 MiB");
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The big file changes (same size, new bytes and mtime).
    write(src.path(), "big.bin", &bytes(24 * MIB, 2));
    let proxy = Proxy::start(&s.app.url).await;
    let out = s.upload_via(&proxy.url, src.path(), &["--json", "."]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    assert_eq!(
        paths_of(&ev, "changed"),
        vec!["big.bin"],
        "{}",
        text(&out.stdout)
    );
    assert!(of_kind(&ev, "resumed").is_empty());
    // Sent whole again: every byte of it crossed the wire in this run.
    assert!(proxy.sent() >= 24 * MIB as u64);
    assert_server_matches_tree(&s, src.path()).await;
    // A small file changed after it was complete: deleted and sent again, the others skipped.
    std::thread::sleep(Duration::from_millis(20));
    write(src.path(), "notes/a.txt", b"second version, longer");
    let out = s.upload(src.path(), &["--json", "."]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    assert_eq!(paths_of(&ev, "changed"), vec!["notes/a.txt"]);
    assert_eq!(paths_of(&ev, "done"), vec!["notes/a.txt"]);
    assert_eq!(paths_of(&ev, "skipped"), vec!["big.bin", "notes/b.txt"]);
    assert_server_matches_tree(&s, src.path()).await;
    // Without --json, the change is said on stderr and the sha256sum lines stay on stdout.
    write(src.path(), "notes/b.txt", b"changed too");
    let out = s.upload(src.path(), &["."]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("notes/b.txt: differs"),
        "{}",
        text(&out.stderr)
    );
    let sha = digests_of_tree("sha256sum", src.path());
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    let mut want: Vec<String> = sha.iter().map(|(p, d)| format!("{d}  {p}")).collect();
    want.sort();
    assert_eq!(lines, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_refused_with_their_path_unless_follow_links() {
    let s = setup().await;
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "d/real.txt", b"real content");
    std::os::unix::fs::symlink("real.txt", src.path().join("d/link.txt")).unwrap();
    let out = s.upload(src.path(), &["d"]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("d/link.txt is a symbolic link"), "{err}");
    let files = s.server_files().await;
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["d/real.txt"]);
    // With --follow-links the link's target goes, under the link's name.
    let out = s
        .upload(src.path(), &["--follow-links", "--json", "d"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    assert_eq!(paths_of(&ev, "done"), vec!["d/link.txt"]);
    assert_eq!(paths_of(&ev, "skipped"), vec!["d/real.txt"]);
    let files = s.server_files().await;
    assert_eq!(files["d/link.txt"].2, files["d/real.txt"].2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_paths_prefix_exclude_and_dry_run() {
    let s = setup().await;
    let outside = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    write(outside.path(), "survey/2024/a.csv", b"x,y\n1,2\n");
    write(outside.path(), "survey/2024/scratch.tmp", b"junk");
    write(outside.path(), "survey/cache/c.bin", b"cached");
    write(outside.path(), "survey/readme.txt", b"about");
    write(cwd.path(), "here/local.txt", b"local");
    let abs = outside.path().join("survey");
    let abs = abs.to_str().unwrap();
    let climbing = format!(
        "../{}/survey",
        outside.path().file_name().unwrap().to_str().unwrap()
    );
    // A dry run lists what would go, and sends nothing.
    let out = s
        .upload(
            cwd.path(),
            &[
                "--dry-run",
                "--json",
                "--exclude",
                "*.tmp",
                "--exclude",
                "cache",
                abs,
                "here",
            ],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    let want = vec!["here/local.txt", "survey/2024/a.csv", "survey/readme.txt"];
    assert_eq!(paths_of(&ev, "dry_run"), want);
    assert!(s.server_files().await.is_empty());
    // The real run, under a prefix.
    let out = s
        .upload(
            cwd.path(),
            &[
                "--prefix",
                "in",
                "--exclude",
                "*.tmp",
                "--exclude",
                "cache",
                abs,
                "here",
            ],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files = s.server_files().await;
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        vec![
            "in/here/local.txt",
            "in/survey/2024/a.csv",
            "in/survey/readme.txt"
        ]
    );
    // A path climbing out with `..` also lands under its last component.
    let sub = cwd.path().join("here");
    let out = s
        .upload(
            &sub,
            &[
                "--json",
                "--prefix",
                "again",
                "--exclude",
                "*.tmp",
                &format!("../{climbing}"),
            ],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    assert_eq!(
        paths_of(&ev, "done"),
        vec![
            "again/survey/2024/a.csv",
            "again/survey/cache/c.bin",
            "again/survey/readme.txt"
        ]
    );
    for (p, f) in s.server_files().await {
        assert!(f.0, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_is_named_with_the_servers_message_and_the_others_still_arrive() {
    let s = setup().await;
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "ok/one.txt", b"one");
    write(src.path(), "ok/two.txt", b"two");
    // A bidirectional-override character: a name that reads differently than it is.
    let bad = "ok/invoice\u{202e}fdp.exe";
    write(src.path(), bad, b"hostile name");
    let out = s.upload(src.path(), &["--json", "ok"]).await;
    assert!(!out.status.success());
    let ev = events(&out);
    let failed = of_kind(&ev, "failed");
    assert_eq!(failed.len(), 1, "{}", text(&out.stdout));
    assert_eq!(failed[0]["path"], bad);
    let msg = failed[0]["error"].as_str().unwrap();
    assert!(msg.starts_with("400"), "{msg}");
    assert_eq!(paths_of(&ev, "done"), vec!["ok/one.txt", "ok/two.txt"]);
    assert_eq!(of_kind(&ev, "summary")[0]["failed"], 1);
    let files = s.server_files().await;
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        vec!["ok/one.txt", "ok/two.txt"]
    );
    // Without --json the error names the file on stderr, and the exit status says so.
    let out = s.upload(src.path(), &["ok"]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("error: {bad}: 400")), "{err}");
    assert!(err.contains("1 file(s) not sent"), "{err}");
}

/// Waits until the server has acknowledged `n` bytes of `path`, or panics after 30 s.
async fn wait_received(s: &Setup, path: &str, n: usize) {
    for _ in 0..600 {
        if s.received(path).await >= n as u64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never reached {n} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_leaves_the_upload_listed_unfinished_and_a_new_token_resumes_it() {
    let mut s = setup().await;
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "big.bin", &bytes(24 * MIB, 3));
    write(src.path(), "small.txt", b"small");
    let child = s
        .command(
            &s.app.url,
            src.path(),
            &[
                "--json",
                "--limit-rate",
                "8M",
                "--chunk-size",
                "4194304",
                "big.bin",
            ],
        )
        .spawn()
        .unwrap();
    wait_received(&s, "big.bin", 8 * MIB).await;
    let (status, v) = s
        .app
        .post_json(
            &s.pm,
            &format!("/transfers/{}/tokens/revoke", s.id),
            serde_json::json!({}),
        )
        .await;
    assert!(status.is_success(), "{v}");
    let out = child.wait_with_output().await.unwrap();
    assert!(!out.status.success());
    let ev = events(&out);
    let failed = of_kind(&ev, "failed");
    assert_eq!(failed.len(), 1, "{}", text(&out.stdout));
    assert!(
        failed[0]["error"].as_str().unwrap().starts_with("401"),
        "{}",
        failed[0]
    );
    let summary = of_kind(&ev, "summary")[0];
    assert_eq!(summary["unfinished"][0]["path"], "big.bin", "{summary}");
    assert!(summary["unfinished"][0]["url"]
        .as_str()
        .unwrap()
        .contains("/tus/"));
    let err = text(&out.stderr);
    assert!(err.contains("unfinished on the server"), "{err}");
    assert!(err.contains("big.bin"), "{err}");
    let held = s.received("big.bin").await;
    assert!(held > 0 && held < 24 * MIB as u64);
    // A new token for the same transfer: the same command continues at the server's offset.
    s.token = s
        .app
        .upload_token(&s.pm, &s.id, serde_json::json!({}))
        .await;
    let out = s
        .upload(src.path(), &["--json", "big.bin", "small.txt"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    let resumed = of_kind(&ev, "resumed");
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["offset"].as_u64().unwrap(), held);
    assert_server_matches_tree(&s, src.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_network_and_a_server_restart_are_retried_and_the_digests_still_match() {
    let Setup {
        app,
        id,
        token,
        pm,
        cache,
    } = setup().await;
    let src = tempfile::tempdir().unwrap();
    let total = make_tree(src.path(), &[32 * MIB], 40, 1000);
    let proxy = Proxy::start(&app.url).await;
    let s = Setup {
        app,
        id,
        token,
        pm,
        cache,
    };
    let child = s
        .command(
            &proxy.url,
            src.path(),
            &[
                "--json",
                "--limit-rate",
                "8M",
                "--chunk-size",
                "4194304",
                ".",
            ],
        )
        .spawn()
        .unwrap();
    wait_received(&s, "big/file0.bin", 8 * MIB).await;
    // The network goes; meanwhile the server restarts on the same data directory.
    proxy.cut();
    let Setup {
        app,
        id,
        token,
        pm,
        cache,
    } = s;
    let dir = app.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let app = TestApp::spawn_in(dir).await;
    proxy.restore(&app.url);
    let s = Setup {
        app,
        id,
        token,
        pm,
        cache,
    };
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    assert!(!of_kind(&ev, "retry").is_empty(), "{}", text(&out.stdout));
    assert_eq!(of_kind(&ev, "done").len(), 41);
    // What was cut off is sent again, but not more than the chunks in flight.
    assert!(
        proxy.sent() <= total + 2 * 8 * MIB as u64 + 512 * 1024,
        "{}",
        proxy.sent()
    );
    assert_server_matches_tree(&s, src.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_failing_answers_are_retried_after_the_wait_the_server_asks_for() {
    let s = setup().await;
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "a.txt", b"alpha");
    write(src.path(), "b/c.txt", b"gamma");
    let proxy = Proxy::start(&s.app.url).await;
    proxy.busy(&["503 Service Unavailable", "429 Too Many Requests"]);
    let began = std::time::Instant::now();
    let out = s.upload_via(&proxy.url, src.path(), &["--json", "."]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    let retries = of_kind(&ev, "retry");
    assert_eq!(retries.len(), 2, "{}", text(&out.stdout));
    assert!(
        retries[0]["error"].as_str().unwrap().starts_with("503"),
        "{}",
        retries[0]
    );
    assert!(
        retries[1]["error"].as_str().unwrap().starts_with("429"),
        "{}",
        retries[1]
    );
    assert!(retries[1]["error"]
        .as_str()
        .unwrap()
        .contains("busy, come back later"));
    for r in &retries {
        // Retry-After: 1 is honoured however short the backoff would have been.
        assert!(r["wait_ms"].as_u64().unwrap() >= 1000, "{r}");
    }
    assert!(began.elapsed() >= Duration::from_secs(2));
    assert_server_matches_tree(&s, src.path()).await;
}

/// How many times the server's file list (`GET .../files`) was asked for, from its metrics.
async fn list_requests(s: &Setup) -> u64 {
    let text = reqwest::get(format!("{}/metrics", s.app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("airlock_http_request_duration_seconds_count{")
                && l.contains("route=\"/api/v1/transfers/{id}/files\"")
                && l.contains("method=\"GET\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_adding_a_folder_reads_only_its_stretch_of_the_servers_list() {
    // 2,500 files already in the transfer fill three pages of the server's list; a later run
    // sending a new folder must not read them all to decide what to send (its work would grow
    // with the files already there).
    let s = setup().await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..2500 {
        write(
            src.path(),
            &format!("a/f{i:05}.txt"),
            &bytes(10 + i % 7, i as u64),
        );
    }
    let out = s.upload(src.path(), &["--json", "a"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for i in 0..5 {
        write(
            src.path(),
            &format!("b/g{i}.txt"),
            &bytes(100, 7000 + i as u64),
        );
    }
    let before = list_requests(&s).await;
    let out = s.upload(src.path(), &["--json", "b"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lists = list_requests(&s).await - before;
    assert_eq!(
        lists, 1,
        "the second run read the server's list {lists} times (its folder fits one page)"
    );
    assert_eq!(paths_of(&events(&out), "done").len(), 5);
    // Files already there, in the stretch, are still found and skipped.
    let before = list_requests(&s).await;
    let out = s.upload(src.path(), &["--json", "b"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(paths_of(&events(&out), "skipped").len(), 5);
    assert_eq!(list_requests(&s).await - before, 1);
    assert_server_matches_tree(&s, src.path()).await;
}

/// The client's saved state for `path` in this transfer (`state.rs`), if it has one.
fn saved_entry(s: &Setup, path: &str) -> Option<Value> {
    use sha2::Digest;
    let key = hex::encode(sha2::Sha256::digest(path.as_bytes()));
    let file = s
        .cache
        .path()
        .join("transfers")
        .join(&s.id)
        .join(format!("{key}.json"));
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_file_is_hashed_while_it_is_sent_and_a_resumed_run_keeps_the_digests() {
    // No hashing pass before the first byte: the first PATCH is acknowledged while the digests
    // are still unknown to the client's state, they are saved once computed (so a run killed
    // after that does not hash again), and the last PATCH carries the SHA-256.
    let s = setup().await;
    let src = tempfile::tempdir().unwrap();
    const BIG: usize = 48 * MIB;
    make_tree(src.path(), &[BIG], 0, 0);
    let big = "big/file0.bin";
    let sha = digests_of_tree("sha256sum", src.path())[big].clone();
    let b3 = digests_of_tree("b3sum", src.path())[big].clone();
    let args = ["--json", "--chunk-size", "4194304", "."];
    let mut first = s
        .command(
            &s.app.url,
            src.path(),
            &[&["--limit-rate", "4M"], &args[..]].concat(),
        )
        .spawn()
        .unwrap();
    let mut waited = 0;
    // Bytes went before the digests were known...
    while s.received(big).await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
        assert!(waited < 1500, "nothing arrived");
    }
    let e = saved_entry(&s, big).expect("the upload URL is saved before any byte goes");
    assert!(e["url"].as_str().is_some_and(|u| !u.is_empty()), "{e}");
    // ...and once known, they are kept while the upload goes on.
    let mut waited = 0;
    let e = loop {
        if let Some(e) = saved_entry(&s, big).filter(|e| e["sha256"] != "") {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
        assert!(waited < 1500, "the digests were never saved");
        if let Ok(Some(st)) = first.try_wait() {
            panic!("the first run ended before it was killed: {st}");
        }
    };
    assert_eq!(e["sha256"], sha);
    assert_eq!(e["blake3"], b3);
    // Kept well before the end (hashing 48 MiB takes a fraction of the 12 s the rate cap
    // gives the sending), not only when the last PATCH needs them.
    let at = s.received(big).await;
    assert!(at < BIG as u64 / 2, "the digests were saved only at {at}");
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = s.received(big).await;
    assert!(acked > 0 && acked < BIG as u64, "killed at {acked}");
    let out = s.upload(src.path(), &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events(&out);
    assert_eq!(
        of_kind(&ev, "resumed")[0]["offset"].as_u64().unwrap(),
        acked
    );
    let done = of_kind(&ev, "done");
    assert_eq!(done[0]["sha256"], sha);
    assert_eq!(done[0]["blake3"], b3);
    // The server has the provider's SHA-256, from the last PATCH.
    assert_server_matches_tree(&s, src.path()).await;
}
