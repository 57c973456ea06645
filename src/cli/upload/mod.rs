//! `airlock upload`: a resumable, parallel upload of files and folders with an upload token.
//!
//! How a run goes:
//! 1. **Select** ([`paths`]): walk the arguments, map each file to its path in the transfer,
//!    apply `--exclude`, refuse links unless `--follow-links`.
//! 2. **Reconcile** with the server, once: one walk of the stretch of the transfer's file list
//!    the selected paths fall in (`GET /api/v1/transfers/{id}/files?after=PATH&limit=N`, or
//!    the whole manifest from a server without it). A file already complete there with the local digests is skipped; one
//!    that differs, or an unfinished upload this cache did not start, is deleted there and
//!    sent again from the start (reported as `changed`); an unfinished upload this cache
//!    started for the file as it is now is resumed.
//! 3. **Send**, `--jobs` at once: files of at least the tus threshold (8 MiB) by tus (SHA-256
//!    and BLAKE3 computed on a blocking thread while the first chunks go; the SHA-256 goes
//!    with the last PATCH, `Airlock-Expected-Sha256`, so the server compares it; 32 MiB
//!    PATCHes read from the file as they go; the upload URL is saved in the
//!    [`state`] cache before the first byte goes, so a run killed at any point resumes from the
//!    server's HEAD offset and never re-sends an acknowledged byte); smaller files packed into
//!    tar batches ([`batch`]) for `PUT /api/v1/transfers/{id}/archive`, or one PUT each where
//!    the server has no archive route or refused a batch (so one bad file fails alone).
//! 4. **Confirm**: every digest the server answers with is compared with the ones computed
//!    here from the bytes read; a difference fails that file, named.
//!
//! Network errors, 5xx and 429 are retried with backoff ([`net`]); any other 4xx stops that
//! file with the server's message. The exit status is non-zero if any file was not sent.
//!
//! `--receipt FILE` lists every file confirmed on the server (sent now or before) in
//! `sha256sum` format with its path in the transfer: `sha256sum -c FILE` passes when run in
//! a folder holding the files under those paths (the released volume, or the current folder
//! when relative paths were sent without `--prefix`), and the same file serves
//! `airlock seal --sha256sums`.

pub mod batch;
pub mod net;
pub mod paths;
pub mod progress;
pub mod state;

use super::client::{api, encode_path, transfer_of};
use super::UploadArgs;
use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use net::{Backoff, Failure, Limiter};
use paths::LocalFile;
use progress::{Item, Reporter};
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::json;
use sha2::Digest;
use state::{Entry, StateDir};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A file as the server lists it (`FileReceipt`).
#[derive(Debug, Clone, Deserialize)]
pub struct Receipt {
    pub path: String,
    pub size: u64,
    pub complete: bool,
    pub sha256: Option<String>,
    pub blake3: Option<String>,
    #[serde(default)]
    pub expected_sha256_matches: Option<bool>,
}

/// Files per page when walking the server's list.
const PAGE: usize = 1000;
/// Pieces a request body is cut into, for the rate cap and the progress bars.
const SLICE: usize = 256 << 10;
const TUS_VERSION: &str = "1.0.0";

/// A tus upload left unfinished on the server.
#[derive(Debug, Clone)]
struct Unfinished {
    path: String,
    /// Bytes the server holds, if it could say.
    offset: Option<u64>,
    size: u64,
    url: String,
}

/// Everything the jobs share.
struct Ctx {
    http: Client,
    server: String,
    transfer: String,
    token: String,
    state: StateDir,
    rep: Arc<Reporter>,
    limiter: Option<Arc<Limiter>>,
    /// `--limit-rate` in bytes per second, and `--jobs`: for request deadlines.
    rate: Option<u64>,
    jobs: u64,
    backoff: Backoff,
    chunk: u64,
    /// Whether the server takes tar batches, learnt by the first batch: if not, batches go
    /// file by file.
    archive: tokio::sync::OnceCell<bool>,
    /// Set when the token itself is refused: nothing more is tried.
    stop: AtomicBool,
    /// `(sha256, path)` of every file confirmed on the server.
    confirmed: Mutex<Vec<(String, String)>>,
    unfinished: Mutex<Vec<Unfinished>>,
    done: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
}

/// One unit of work for a job.
enum Work {
    Tus {
        file: LocalFile,
        resume: Option<Entry>,
        delete_first: bool,
    },
    Batch(Vec<(LocalFile, bool)>),
}

pub async fn run(server: &str, args: &UploadArgs) -> anyhow::Result<()> {
    tokio::select! {
        r = upload(server, args) => r,
        _ = tokio::signal::ctrl_c() => {
            // The state cache is only ever replaced whole, so stopping here is safe.
            eprintln!("interrupted: run the same command again to resume where it stopped");
            std::process::exit(130);
        }
    }
}

async fn upload(server: &str, args: &UploadArgs) -> anyhow::Result<()> {
    let transfer = transfer_of(&args.token)?;
    let sel = paths::select(
        &args.paths,
        &paths::Options {
            prefix: args.prefix.as_deref(),
            excludes: &args.exclude,
            follow_links: args.follow_links,
        },
    )?;
    let rate = args
        .limit_rate
        .as_deref()
        .map(net::parse_rate)
        .transpose()?;
    let limiter = rate.map(|r| Arc::new(Limiter::new(r)));
    if sel.files.is_empty() && sel.refused.is_empty() {
        bail!("no files found under the given paths");
    }
    let total_bytes: u64 = sel.files.iter().map(|f| f.size).sum();
    let rep = Reporter::new(args.json, sel.files.len() as u64, total_bytes);
    for r in &sel.refused {
        rep.failed(&r.local, &r.error);
    }
    let method = |f: &LocalFile| {
        if f.size >= args.tus_threshold {
            "tus"
        } else {
            "tar"
        }
    };
    if args.dry_run {
        for f in &sel.files {
            rep.dry_run(&f.remote, f.size, method(f));
        }
        if !sel.refused.is_empty() {
            bail!("{} path(s) would be refused", sel.refused.len());
        }
        return Ok(());
    }
    let http = Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .tcp_keepalive(Duration::from_secs(30))
        .build()?;
    let ctx = Arc::new(Ctx {
        http,
        server: server.trim_end_matches('/').to_owned(),
        state: StateDir::open(&state::cache_root()?, &transfer)?,
        transfer,
        token: args.token.clone(),
        rep: rep.clone(),
        limiter,
        rate,
        jobs: u64::from(args.jobs),
        backoff: Backoff::default(),
        chunk: args.chunk_size.max(1),
        archive: tokio::sync::OnceCell::new(),
        stop: AtomicBool::new(false),
        confirmed: Mutex::new(Vec::new()),
        unfinished: Mutex::new(Vec::new()),
        done: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        failed: AtomicU64::new(sel.refused.len() as u64),
    });
    let ticker = rep.spawn_plain_ticker(Duration::from_secs(5));
    let work = reconcile(&ctx, sel.files, args).await?;
    futures::stream::iter(work)
        .map(|w| {
            let ctx = ctx.clone();
            async move {
                match w {
                    Work::Tus {
                        file,
                        resume,
                        delete_first,
                    } => send_tus(&ctx, file, resume, delete_first).await,
                    Work::Batch(files) => send_batch(&ctx, files).await,
                }
                // A batch's events leave together, as soon as it is settled.
                ctx.rep.flush();
            }
        })
        .buffer_unordered(args.jobs as usize)
        .collect::<Vec<()>>()
        .await;
    if let Some(t) = ticker {
        t.abort();
    }
    finish(&ctx, args).await
}

/// The summary, the receipt, the unfinished list and the exit status.
async fn finish(ctx: &Ctx, args: &UploadArgs) -> anyhow::Result<()> {
    let rep = &ctx.rep;
    let (done, skipped, failed) = (
        ctx.done.load(Ordering::Relaxed),
        ctx.skipped.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    let sent = rep.sent.load(Ordering::Relaxed);
    let mut confirmed =
        std::mem::take(&mut *ctx.confirmed.lock().unwrap_or_else(|p| p.into_inner()));
    let unfinished = ctx
        .unfinished
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(path) = &args.receipt {
        confirmed.sort_by(|a, b| a.1.cmp(&b.1));
        let mut text = String::new();
        for (sha, p) in &confirmed {
            text.push_str(&format!("{sha}  {p}\n"));
        }
        write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write the receipt {}", path.display()))?;
    }
    let secs = rep.elapsed().as_secs_f64();
    rep.summary(json!({
        "event": "summary",
        "files": done + skipped + failed,
        "done": done,
        "skipped": skipped,
        "failed": failed,
        "bytes_sent": sent,
        "bytes_total": rep.total_bytes(),
        "seconds": secs,
        "unfinished": unfinished.iter().map(|u| json!({
            "path": u.path, "offset": u.offset, "size": u.size, "url": u.url,
        })).collect::<Vec<_>>(),
    }));
    if !rep.is_json() {
        rep.note(&format!(
            "{done} sent, {skipped} already on the server, {failed} failed; {} sent in {secs:.1} s",
            progress::human(sent)
        ));
    }
    if !unfinished.is_empty() {
        let mut msg = String::from(
            "unfinished on the server (run the same command again, with a live upload token of the \
             transfer, to resume; to delete one instead: \
             curl -X DELETE -H 'Tus-Resumable: 1.0.0' -H \"Authorization: Bearer $AIRLOCK_UPLOAD_TOKEN\" URL):",
        );
        for u in &unfinished {
            msg.push_str(&format!(
                "\n  {}  {} of {} bytes  {}",
                u.path,
                u.offset.map_or("?".to_owned(), |o| o.to_string()),
                u.size,
                u.url
            ));
        }
        rep.note(&msg);
    }
    if failed > 0 {
        bail!("{failed} file(s) not sent; run the same command again to retry them");
    }
    ctx.state.tidy();
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "receipt".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Compares the server's receipt with the digests computed here.
fn verify(path: &str, sha256: &str, blake3: &str, r: &Receipt) -> Result<(), String> {
    if !r.complete {
        return Err(format!(
            "the server holds {} bytes of it but not the whole file",
            r.size
        ));
    }
    let theirs_sha = r.sha256.as_deref().unwrap_or("(none)");
    if theirs_sha != sha256 {
        return Err(format!(
            "the server stored sha256 {theirs_sha} but the bytes read here have {sha256}; \
             was {path} changed while it was sent?"
        ));
    }
    let theirs_b3 = r.blake3.as_deref().unwrap_or("(none)");
    if theirs_b3 != blake3 {
        return Err(format!(
            "the server stored blake3 {theirs_b3} but the bytes read here have {blake3}"
        ));
    }
    if r.expected_sha256_matches == Some(false) {
        return Err("the server says the sha256 sent with it does not match".into());
    }
    Ok(())
}

/// SHA-256 and BLAKE3 of a whole file, read in 1 MiB pieces.
fn hash_file(path: &std::path::Path) -> std::io::Result<(String, String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sha = sha2::Sha256::new();
    let mut b3 = blake3::Hasher::new();
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        sha.update(&buf[..k]);
        b3.update(&buf[..k]);
        n += k as u64;
    }
    Ok((
        hex::encode(sha.finalize()),
        b3.finalize().to_hex().to_string(),
        n,
    ))
}

/// [`hash_file`] for a big file: SHA-256 and BLAKE3 on two threads, each reading the file
/// (the second read mostly from the page cache), so the first pass costs the slower digest,
/// not both.
fn hash_big_file(path: &std::path::Path) -> std::io::Result<(String, String, u64)> {
    use std::io::Read;
    std::thread::scope(|s| {
        let b3 = s.spawn(|| -> std::io::Result<String> {
            let mut h = blake3::Hasher::new();
            // Read, not mapped: a mapping of a 100 GB file would show as resident memory.
            h.update_reader(std::fs::File::open(path)?)?;
            Ok(h.finalize().to_hex().to_string())
        });
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut sha = sha2::Sha256::new();
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            sha.update(&buf[..k]);
            n += k as u64;
        }
        let b3 = b3
            .join()
            .map_err(|_| std::io::Error::other("the BLAKE3 thread failed"))??;
        Ok((hex::encode(sha.finalize()), b3, n))
    })
}

/// Step 2: one walk of the server's list decides, for each file, skip, resume or send.
async fn reconcile(
    ctx: &Arc<Ctx>,
    files: Vec<LocalFile>,
    args: &UploadArgs,
) -> anyhow::Result<Vec<Work>> {
    // Only the stretch of the server's list the selection's paths fall in (the selection is
    // sorted): a run adding a folder to a transfer that already holds 90,000 files lists what
    // is under that folder, not the 90,000.
    let (lo, hi) = (
        files.first().map(|f| f.remote.as_str()),
        files.last().map(|f| f.remote.as_str()),
    );
    let server = match (lo, hi) {
        (Some(lo), Some(hi)) => list_range(ctx, Some(lo), Some(hi)).await,
        _ => Ok(HashMap::new()),
    }
    .map_err(|f| anyhow::anyhow!("cannot read the transfer's files: {}", f.message()))?;
    // Files the server holds complete at the same size: compared by digest, hashed here off
    // the async threads (and in parallel: this is the whole cost of a re-run).
    let to_hash: Vec<(usize, std::path::PathBuf)> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            server
                .get(&f.remote)
                .is_some_and(|r| r.complete && r.size == f.size)
        })
        .map(|(i, f)| (i, f.local.clone()))
        .collect();
    let hashed: HashMap<usize, std::io::Result<(String, String, u64)>> =
        tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            to_hash
                .into_par_iter()
                .map(|(i, p)| (i, hash_file(&p)))
                .collect()
        })
        .await
        .context("hashing worker failed")?;
    let mut tus = Vec::new();
    let mut small: Vec<(LocalFile, bool)> = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let on_server = server.get(&f.remote);
        let saved = ctx.state.load(&f.remote);
        let mut delete_first = false;
        let mut resume = None;
        match (on_server, saved) {
            (Some(r), saved) if r.complete => {
                if let Some(Ok((sha, b3, _))) = hashed.get(&i) {
                    if r.sha256.as_deref() == Some(sha) && r.blake3.as_deref() == Some(b3) {
                        ctx.state.remove(&f.remote);
                        ctx.rep.skipped(&f.remote, f.size, sha, b3);
                        ctx.skipped.fetch_add(1, Ordering::Relaxed);
                        ctx.confirmed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((sha.clone(), f.remote.clone()));
                        continue;
                    }
                }
                if let Some(Err(e)) = hashed.get(&i) {
                    ctx.rep.failed(
                        &f.remote,
                        &format!("cannot read {}: {e}", f.local.display()),
                    );
                    ctx.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if saved.is_some() {
                    ctx.state.remove(&f.remote);
                }
                ctx.rep.changed(
                    &f.remote,
                    &format!(
                        "differs from the copy already on the server ({} bytes, sha256 {})",
                        r.size,
                        r.sha256.as_deref().unwrap_or("?")
                    ),
                );
                delete_first = true;
            }
            (Some(r), Some(e)) if e.matches(f.size, f.mtime) && e.size == f.size => {
                let _ = r;
                resume = Some(e);
            }
            (Some(_), Some(_)) => {
                ctx.state.remove(&f.remote);
                ctx.rep.changed(
                    &f.remote,
                    "changed since its upload started (size or modification time differ)",
                );
                delete_first = true;
            }
            (Some(_), None) => {
                ctx.rep.changed(
                    &f.remote,
                    "an unfinished upload of it on the server was not started from this cache",
                );
                delete_first = true;
            }
            (None, Some(_)) => ctx.state.remove(&f.remote),
            (None, None) => {}
        }
        if resume.is_some() || f.size >= args.tus_threshold {
            tus.push(Work::Tus {
                file: f,
                resume,
                delete_first,
            });
        } else {
            small.push((f, delete_first));
        }
    }
    let sizes: Vec<u64> = small.iter().map(|(f, _)| f.size).collect();
    // The first batches are small (1/16 of the size, doubling): the pipeline fills at once.
    let first = (args.batch_files / 16).max(1);
    let ranges = batch::plan_ramped(&sizes, first, args.batch_files, args.batch_bytes);
    let mut it = small.into_iter();
    let mut work = tus;
    for r in ranges {
        work.push(Work::Batch(it.by_ref().take(r.len()).collect()));
    }
    Ok(work)
}

impl Ctx {
    fn api(&self, path: &str) -> String {
        api(&self.server, path)
    }

    fn file_url(&self, remote: &str) -> String {
        self.api(&format!(
            "/transfers/{}/files/{}",
            self.transfer,
            encode_path(remote)
        ))
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.server)
        }
    }

    /// Waits out the backoff for try `attempt` of `path`, reporting it, or gives up.
    async fn again(&self, path: &str, attempt: u32, f: &Failure) -> bool {
        if attempt >= self.backoff.attempts || self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let retry_after = match f {
            Failure::Transient { retry_after, .. } => *retry_after,
            Failure::Refused { .. } => None,
        };
        let wait = self.backoff.wait(attempt, retry_after);
        self.rep.retry(path, attempt, &f.message(), wait);
        tokio::time::sleep(wait).await;
        true
    }

    /// Notes a refusal of the token itself: every later request would get it too.
    fn refused(&self, f: &Failure) {
        if f.status() == Some(StatusCode::UNAUTHORIZED) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn fail(&self, path: &str, error: &str) {
        self.rep.failed(path, error);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn confirm(&self, path: &str, size: u64, sha256: &str, blake3: &str, method: &str) {
        self.rep.done(path, size, sha256, blake3, method);
        self.done.fetch_add(1, Ordering::Relaxed);
        self.confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((sha256.to_owned(), path.to_owned()));
    }

    /// A body that goes out in slices, each waiting for the rate cap and counted.
    fn body(&self, data: Bytes, item: Arc<Item>) -> reqwest::Body {
        let limiter = self.limiter.clone();
        let len = data.len();
        let slices = (0..len)
            .step_by(SLICE)
            .map(move |i| data.slice(i..(i + SLICE).min(len)));
        let s = futures::stream::iter(slices).then(move |b| {
            let (limiter, item) = (limiter.clone(), item.clone());
            async move {
                if let Some(l) = &limiter {
                    l.take(b.len()).await;
                }
                item.sent(b.len() as u64);
                Ok::<_, std::io::Error>(b)
            }
        });
        reqwest::Body::wrap_stream(s)
    }

    /// `len` bytes of the file at `path` from `offset`, read as they are sent (so reading
    /// overlaps sending, and a chunk is never held whole), each piece waiting for the rate cap.
    fn file_body(
        &self,
        path: std::path::PathBuf,
        offset: u64,
        len: u64,
        item: Arc<Item>,
    ) -> reqwest::Body {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        struct Cursor {
            file: Option<tokio::fs::File>,
            path: std::path::PathBuf,
            offset: u64,
            left: u64,
            limiter: Option<Arc<Limiter>>,
            item: Arc<Item>,
        }
        let start = Cursor {
            file: None,
            path,
            offset,
            left: len,
            limiter: self.limiter.clone(),
            item,
        };
        let s = futures::stream::unfold(start, |mut c| async move {
            if c.left == 0 {
                return None;
            }
            let n = c.left.min(SLICE as u64) as usize;
            let mut buf = vec![0u8; n];
            let read = async {
                if c.file.is_none() {
                    let mut f = tokio::fs::File::open(&c.path).await?;
                    f.seek(std::io::SeekFrom::Start(c.offset)).await?;
                    c.file = Some(f);
                }
                match c.file.as_mut() {
                    Some(f) => f.read_exact(&mut buf).await.map(|_| ()),
                    None => Ok(()),
                }
            }
            .await;
            if let Err(e) = read {
                // The request fails; nothing after this piece is sent.
                c.left = 0;
                return Some((Err(e), c));
            }
            if let Some(l) = &c.limiter {
                l.take(n).await;
            }
            c.item.sent(n as u64);
            c.offset += n as u64;
            c.left -= n as u64;
            Some((Ok(Bytes::from(buf)), c))
        });
        reqwest::Body::wrap_stream(s)
    }

    /// How long one request of `bytes` may take before it counts as lost.
    /// Two minutes, plus the time the body takes at 256 KiB/s or, under `--limit-rate`,
    /// at the job's share of the rate (every job may be sending at once).
    fn deadline(&self, bytes: u64) -> Duration {
        let per_job = self
            .rate
            .map_or(256 << 10, |r| (r / self.jobs).clamp(1, 256 << 10));
        Duration::from_secs(120) + Duration::from_secs(bytes / per_job)
    }

    /// Sends `req` with the token, within the deadline, and checks the status.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        bytes: u64,
    ) -> Result<reqwest::Response, Failure> {
        let fut = req.bearer_auth(&self.token).send();
        let resp = match tokio::time::timeout(self.deadline(bytes), fut).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Failure::Transient {
                    error: "no answer from the server in time".into(),
                    retry_after: None,
                })
            }
        };
        net::check(resp).await
    }

    /// DELETE of a file by its path; a missing file is fine.
    async fn delete_path(&self, remote: &str) -> Result<(), Failure> {
        let mut attempt = 1;
        loop {
            match self.send(self.http.delete(self.file_url(remote)), 0).await {
                Ok(_) => return Ok(()),
                Err(Failure::Refused { status, .. }) if status == StatusCode::NOT_FOUND => {
                    return Ok(())
                }
                Err(f @ Failure::Transient { .. }) if self.again(remote, attempt, &f).await => {
                    attempt += 1
                }
                Err(f) => return Err(f),
            }
        }
    }
}

/// One page of the server's list after `after`; `None` if the server has no such route.
async fn list_page(
    ctx: &Ctx,
    after: Option<&str>,
) -> Result<Option<(Vec<Receipt>, Option<String>)>, Failure> {
    #[derive(Deserialize)]
    struct Page {
        files: Vec<Receipt>,
        next: Option<String>,
    }
    let mut q: Vec<(&str, String)> = vec![("limit", PAGE.to_string())];
    if let Some(a) = after {
        q.push(("after", a.to_owned()));
    }
    let url = ctx.api(&format!("/transfers/{}/files", ctx.transfer));
    match ctx.send(ctx.http.get(url).query(&q), 0).await {
        Ok(r) => {
            let p: Page = r.json().await.map_err(|e| Failure::Transient {
                error: format!("the file list did not parse: {e}"),
                retry_after: None,
            })?;
            Ok(Some((p.files, p.next)))
        }
        Err(Failure::Refused { status, .. })
            if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED =>
        {
            Ok(None)
        }
        Err(f) => Err(f),
    }
}

/// The whole manifest at once, from a server without the paginated list.
async fn manifest(ctx: &Ctx) -> Result<Vec<Receipt>, Failure> {
    #[derive(Deserialize)]
    struct Manifest {
        files: Vec<Receipt>,
    }
    let url = ctx.api(&format!("/transfers/{}/manifest", ctx.transfer));
    let r = ctx.send(ctx.http.get(url), 0).await?;
    let m: Manifest = r.json().await.map_err(|e| Failure::Transient {
        error: format!("the manifest did not parse: {e}"),
        retry_after: None,
    })?;
    Ok(m.files)
}

/// Calls `f` with retries on transient failures.
async fn retrying<T, F, Fut>(ctx: &Ctx, what: &str, mut f: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e @ Failure::Transient { .. }) if ctx.again(what, attempt, &e).await => {
                attempt += 1
            }
            other => return other,
        }
    }
}

/// The files the server holds with paths in `lo..=hi` (`None`: unbounded). The list is
/// ordered by path (bytewise), so the walk starts just before `lo` (at `lo` less its last
/// character) and stops past `hi`.
async fn list_range(
    ctx: &Ctx,
    lo: Option<&str>,
    hi: Option<&str>,
) -> Result<HashMap<String, Receipt>, Failure> {
    let in_range = |p: &str| lo.is_none_or(|l| p >= l) && hi.is_none_or(|h| p <= h);
    let mut out = HashMap::new();
    let mut after: Option<String> = lo.map(|l| {
        let mut s = l.to_owned();
        s.pop();
        s
    });
    loop {
        let a = after.clone().filter(|s| !s.is_empty());
        let page = retrying(ctx, "(file list)", || list_page(ctx, a.as_deref())).await?;
        let Some((files, next)) = page else {
            let all = retrying(ctx, "(manifest)", || manifest(ctx)).await?;
            return Ok(all
                .into_iter()
                .filter(|r| in_range(&r.path))
                .map(|r| (r.path.clone(), r))
                .collect());
        };
        let past = files
            .last()
            .is_some_and(|r| hi.is_some_and(|h| r.path.as_str() > h));
        for r in files {
            if in_range(&r.path) {
                out.insert(r.path.clone(), r);
            }
        }
        match next {
            Some(n) if !past && after.as_deref() != Some(n.as_str()) => after = Some(n),
            _ => return Ok(out),
        }
    }
}

/// The server's receipt of one file.
async fn receipt_of(ctx: &Ctx, remote: &str) -> Result<Option<Receipt>, Failure> {
    Ok(list_range(ctx, Some(remote), Some(remote))
        .await?
        .remove(remote))
}

fn header_u64(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The server's offset and length of a tus upload; `None` if it is gone.
async fn head(ctx: &Ctx, url: &str) -> Result<Option<(u64, Option<u64>)>, Failure> {
    let req = ctx.http.head(url).header("Tus-Resumable", TUS_VERSION);
    match ctx.send(req, 0).await {
        Ok(r) => Ok(Some((
            header_u64(&r, "upload-offset").unwrap_or(0),
            header_u64(&r, "upload-length"),
        ))),
        Err(Failure::Refused { status, .. })
            if status == StatusCode::NOT_FOUND || status == StatusCode::GONE =>
        {
            Ok(None)
        }
        Err(f) => Err(f),
    }
}

/// Whether the file still has the size and mtime it had when selected.
fn unchanged(f: &LocalFile) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(&f.local)
        .map(|m| m.len() == f.size && (m.mtime(), m.mtime_nsec()) == f.mtime)
        .unwrap_or(false)
}

/// A big file by tus, from where the server stopped.
async fn send_tus(ctx: &Arc<Ctx>, f: LocalFile, resume: Option<Entry>, delete_first: bool) {
    let path = f.remote.clone();
    if ctx.stop.load(Ordering::Relaxed) {
        return ctx.fail(&path, "not tried: the upload token was refused");
    }
    let item = Arc::new(ctx.rep.item(&path, f.size));
    match tus_inner(ctx, &f, resume, delete_first, &item).await {
        Ok((sha, b3)) => {
            ctx.state.remove(&path);
            ctx.confirm(&path, f.size, &sha, &b3, "tus");
        }
        Err((error, url)) => {
            if let Some(url) = url {
                // What the server holds of it now; unknown if the server cannot say (a
                // revoked token, no network), gone if it answers so.
                let offset = match head(ctx, &url).await {
                    Ok(Some((o, _))) => Some(Some(o)),
                    Ok(None) => None,
                    Err(_) => Some(None),
                };
                if let Some(offset) = offset {
                    ctx.unfinished
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Unfinished {
                            path: path.clone(),
                            offset,
                            size: f.size,
                            url,
                        });
                }
            }
            ctx.fail(&path, &error);
        }
    }
}

/// Returns the digests, or the error and the upload URL if one was made.
async fn tus_inner(
    ctx: &Arc<Ctx>,
    f: &LocalFile,
    resume: Option<Entry>,
    delete_first: bool,
    item: &Arc<Item>,
) -> Result<(String, String), (String, Option<String>)> {
    let path = f.remote.as_str();
    let no_url = |e: Failure| (e.message(), None::<String>);
    if delete_first {
        ctx.delete_path(path).await.map_err(no_url)?;
    }
    ctx.rep.start(path, f.size, "tus");
    // An upload started by an earlier run, if the server still has it.
    let mut found: Option<(Entry, u64)> = None;
    if let Some(e) = resume {
        let at = ctx.absolute(&e.url);
        match retrying(ctx, path, || head(ctx, &at)).await {
            Ok(Some((offset, len))) if len.is_none_or(|l| l == f.size) => found = Some((e, offset)),
            Ok(_) => {
                // Gone, or not this file's: start over.
                ctx.state.remove(path);
                ctx.delete_path(path).await.map_err(no_url)?;
            }
            Err(x) => {
                ctx.refused(&x);
                return Err((x.message(), Some(at)));
            }
        }
    }
    let (entry, mut offset) = match found {
        Some((e, o)) => {
            if o > 0 {
                ctx.rep.resumed(path, o, f.size);
                item.already(o);
            }
            (e, o)
        }
        None => (create(ctx, f).await?, 0),
    };
    let url = ctx.absolute(&entry.url);
    let with_url = |e: String| (e, Some(url.clone()));
    // The digests: from the run that hashed the file already, or computed now on a blocking
    // thread while the first chunks go (one pass of time over the file, not a hashing pass
    // before the first byte). The SHA-256 is needed only with the last PATCH.
    let mut entry = entry;
    let mut hashing = (entry.sha256.is_empty() || entry.blake3.is_empty()).then(|| {
        let local = f.local.clone();
        tokio::task::spawn_blocking(move || hash_big_file(&local))
    });
    let mut attempt = 1;
    while offset < f.size {
        if !unchanged(f) {
            return Err(with_url(format!(
                "{} changed while it was being sent; run again to send it from the start",
                f.local.display()
            )));
        }
        let len = (f.size - offset).min(ctx.chunk);
        let last = offset + len == f.size;
        if last {
            digests_into(ctx, f, &mut entry, &mut hashing, true)
                .await
                .map_err(with_url)?;
        }
        // No Upload-Checksum: it would cost a SHA-256 of every chunk on both sides, and a
        // chunk that carries one is discarded whole when cut off, where one without keeps
        // what arrived. The end-to-end SHA-256 and BLAKE3 check every byte anyway.
        let req = ctx
            .http
            .patch(&url)
            .header("Tus-Resumable", TUS_VERSION)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len);
        // With the last bytes, the provider's SHA-256: the server compares it at seal.
        let req = if last {
            req.header(crate::api::EXPECTED_SHA256_HEADER, &entry.sha256)
        } else {
            req
        }
        .body(ctx.file_body(f.local.clone(), offset, len, item.clone()));
        match ctx.send(req, len).await {
            Ok(r) => {
                offset = header_u64(&r, "upload-offset").unwrap_or(offset + len);
                item.rewind(offset);
                attempt = 1;
                // Digests kept as soon as they are known: a run stopped after this resumes
                // without hashing the file again.
                digests_into(ctx, f, &mut entry, &mut hashing, false)
                    .await
                    .map_err(with_url)?;
            }
            Err(e) => {
                ctx.refused(&e);
                let conflict =
                    matches!(e.status(), Some(s) if s == StatusCode::CONFLICT || s.as_u16() == 460);
                let retry = matches!(e, Failure::Transient { .. }) || conflict;
                if !retry || !ctx.again(path, attempt, &e).await {
                    return Err(with_url(e.message()));
                }
                attempt += 1;
                // What the server holds now decides where to go on.
                match retrying(ctx, path, || head(ctx, &url)).await {
                    Ok(Some((o, _))) => {
                        offset = o;
                        item.rewind(o);
                    }
                    Ok(None) => {
                        ctx.state.remove(path);
                        return Err((
                            "the server no longer has this upload; run again to send it from the start"
                                .into(),
                            None,
                        ));
                    }
                    Err(x) => return Err(with_url(x.message())),
                }
            }
        }
    }
    // Every byte was already on the server (an earlier run sent the last one, with the
    // digest, and stopped before confirming it): the digests are still checked.
    digests_into(ctx, f, &mut entry, &mut hashing, true)
        .await
        .map_err(with_url)?;
    let r = retrying(ctx, path, || receipt_of(ctx, path))
        .await
        .map_err(|e| with_url(e.message()))?
        .ok_or_else(|| with_url("the server does not list the file after its last byte".into()))?;
    verify(
        &f.local.display().to_string(),
        &entry.sha256,
        &entry.blake3,
        &r,
    )
    .map_err(|e| (e, None))?;
    Ok((entry.sha256, entry.blake3))
}

/// A big file's hashing on a blocking thread: SHA-256, BLAKE3 and the bytes read.
type Hashing = tokio::task::JoinHandle<std::io::Result<(String, String, u64)>>;

/// Once the hashing of `f` has ended (or, with `wait`, after waiting for it): keeps its
/// digests in `entry` and in the state cache, so a later run resumes without hashing again.
/// Nothing to do once they are kept.
async fn digests_into(
    ctx: &Ctx,
    f: &LocalFile,
    entry: &mut Entry,
    hashing: &mut Option<Hashing>,
    wait: bool,
) -> Result<(), String> {
    if !wait && !hashing.as_ref().is_some_and(|h| h.is_finished()) {
        return Ok(());
    }
    let Some(h) = hashing.take() else {
        return Ok(());
    };
    let (sha, b3, n) = h
        .await
        .map_err(|e| format!("hashing worker failed: {e}"))?
        .map_err(|e| format!("cannot read {}: {e}", f.local.display()))?;
    if n != f.size || !unchanged(f) {
        return Err(format!(
            "{} changed while it was being read; run again to send it from the start",
            f.local.display()
        ));
    }
    entry.sha256 = sha;
    entry.blake3 = b3;
    ctx.state.save(entry).map_err(|e| format!("{e:#}"))
}

/// tus creation. The URL is saved before any byte is sent; the digests follow once hashed
/// (`digests_into`).
async fn create(ctx: &Arc<Ctx>, f: &LocalFile) -> Result<Entry, (String, Option<String>)> {
    let path = f.remote.as_str();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let meta = format!("filename {}", b64(path));
    let mut attempt = 1;
    let mut unsure = false;
    let url = loop {
        let req = ctx
            .http
            .post(ctx.api(&format!("/transfers/{}/tus", ctx.transfer)))
            .header("Tus-Resumable", TUS_VERSION)
            .header("Upload-Length", f.size.to_string())
            .header("Upload-Metadata", &meta);
        match ctx.send(req, 0).await {
            Ok(r) => {
                let loc = r
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        (
                            "the server's tus creation gave no Location".to_owned(),
                            None,
                        )
                    })?;
                // Kept as the server gave it (a path): resolved against --server at each use, so the
                // same upload resumes through another address of the same server.
                break loc.to_owned();
            }
            // A creation whose answer was lost collides with itself: remove it, create again.
            Err(Failure::Refused { status, .. }) if status == StatusCode::CONFLICT && unsure => {
                unsure = false;
                ctx.delete_path(path)
                    .await
                    .map_err(|e| (e.message(), None))?;
            }
            Err(e @ Failure::Transient { .. }) if ctx.again(path, attempt, &e).await => {
                attempt += 1;
                unsure = true;
            }
            Err(e) => {
                ctx.refused(&e);
                return Err((e.message(), None));
            }
        }
    };
    let entry = Entry {
        path: path.to_owned(),
        size: f.size,
        mtime: f.mtime,
        url: url.clone(),
        sha256: String::new(),
        blake3: String::new(),
    };
    ctx.state
        .save(&entry)
        .map_err(|e| (format!("{e:#}"), Some(ctx.absolute(&url))))?;
    Ok(entry)
}

/// Small files: one tar batch, or one PUT each.
async fn send_batch(ctx: &Arc<Ctx>, files: Vec<(LocalFile, bool)>) {
    if ctx.stop.load(Ordering::Relaxed) {
        for (f, _) in &files {
            ctx.fail(&f.remote, "not tried: the upload token was refused");
        }
        return;
    }
    for (f, delete_first) in &files {
        if *delete_first {
            if let Err(e) = ctx.delete_path(&f.remote).await {
                ctx.fail(
                    &f.remote,
                    &format!("cannot remove the old copy: {}", e.message()),
                );
            }
        }
    }
    // Read (and hash) the members off the async threads.
    let list: Vec<LocalFile> = files.into_iter().map(|(f, _)| f).collect();
    let read = tokio::task::spawn_blocking(move || {
        list.into_iter()
            .map(|f| {
                let m = batch::Member::read(&f.local, &f.remote, f.size);
                (f, m)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(read) = read else {
        return;
    };
    let mut members = Vec::new();
    for (f, m) in read {
        match m {
            Ok(m) => members.push(m),
            Err(e) => ctx.fail(
                &f.remote,
                &format!("cannot read {}: {e}", f.local.display()),
            ),
        }
    }
    if members.is_empty() {
        return;
    }
    // Whether the server takes tar batches is learnt once, by the first batch, with one
    // member: a server without the route then costs one small file's bytes, not a batch's.
    // Later batches wait for the answer.
    let mut probe = Probe::NotRun;
    let supported = *ctx
        .archive
        .get_or_init(|| async {
            match send_archive(ctx, &members[..1]).await {
                Ok(()) => {
                    probe = Probe::Sent;
                    true
                }
                Err(None) => {
                    probe = Probe::Unsupported;
                    false
                }
                Err(Some(_)) => {
                    probe = Probe::Refused;
                    true
                }
            }
        })
        .await;
    let rest = match probe {
        Probe::Sent => &members[1..],
        // Refused alone: it goes by PUT for its own message, the others as a batch.
        Probe::Refused => {
            send_put(ctx, &members[0], false).await;
            &members[1..]
        }
        Probe::NotRun | Probe::Unsupported => &members[..],
    };
    if rest.is_empty() {
        return;
    }
    if supported {
        match send_archive(ctx, rest).await {
            Ok(()) => return,
            Err(Some(msg)) => {
                ctx.rep.note(&format!(
                    "a batch of {} files was refused ({msg}); sending them one by one",
                    rest.len()
                ));
            }
            Err(None) => {}
        }
    }
    for (i, m) in rest.iter().enumerate() {
        // A member tried in a tar already announced its `start`.
        let announced = supported || (i == 0 && probe == Probe::Unsupported);
        send_put(ctx, m, !announced).await;
    }
}

/// What the first batch learnt about the archive route.
#[derive(PartialEq, Eq)]
enum Probe {
    NotRun,
    Sent,
    Unsupported,
    Refused,
}

/// PUTs one tar batch. `Err(None)`: the server has no archive route; `Err(Some(msg))`: refused or not confirmed, the members go one by one.
async fn send_archive(ctx: &Arc<Ctx>, members: &[batch::Member]) -> Result<(), Option<String>> {
    #[derive(Deserialize)]
    struct Answer {
        files: Vec<Receipt>,
    }
    for m in members {
        ctx.rep.start(&m.remote, m.data.len() as u64, "tar");
    }
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let owned = members.to_vec();
    let tar_bytes = tokio::task::spawn_blocking(move || batch::build(&owned, mtime))
        .await
        .map_err(|e| Some(format!("packing failed: {e}")))?
        .map_err(|e| Some(format!("packing failed: {e}")))?;
    let first = members[0].remote.as_str();
    let last = members[members.len() - 1].remote.as_str();
    let label = format!("{} files from {first}", members.len());
    let bytes = Bytes::from(tar_bytes);
    let item = Arc::new(ctx.rep.item(&label, bytes.len() as u64));
    let url = ctx.api(&format!("/transfers/{}/archive", ctx.transfer));
    let mut attempt = 1;
    let mut unsure = false;
    let receipts: HashMap<String, Receipt> = loop {
        item.rewind(0);
        let req = ctx
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .header(reqwest::header::CONTENT_LENGTH, bytes.len() as u64)
            .body(ctx.body(bytes.clone(), item.clone()));
        match ctx.send(req, bytes.len() as u64).await {
            Ok(r) => {
                let a: Answer = r
                    .json()
                    .await
                    .map_err(|e| Some(format!("the archive answer did not parse: {e}")))?;
                break a.files.into_iter().map(|r| (r.path.clone(), r)).collect();
            }
            Err(Failure::Refused { status, error })
                if (status == StatusCode::NOT_FOUND && error.starts_with("no such route"))
                    || status == StatusCode::METHOD_NOT_ALLOWED =>
            {
                return Err(None);
            }
            Err(e @ Failure::Refused { .. }) => {
                ctx.refused(&e);
                if e.status() == Some(StatusCode::UNAUTHORIZED) {
                    for m in members {
                        ctx.fail(&m.remote, &e.message());
                    }
                    return Ok(());
                }
                // After a lost answer the batch may be there already: look before re-sending.
                if unsure {
                    if let Ok(found) = list_range(ctx, Some(first), Some(last)).await {
                        if members.iter().all(|m| {
                            found
                                .get(&m.remote)
                                .is_some_and(|r| verify(&m.remote, &m.sha256, &m.blake3, r).is_ok())
                        }) {
                            break found;
                        }
                    }
                }
                return Err(Some(e.message()));
            }
            Err(e) => {
                if !ctx.again(&label, attempt, &e).await {
                    return Err(Some(e.message()));
                }
                attempt += 1;
                unsure = true;
            }
        }
    };
    for m in members {
        match receipts.get(&m.remote) {
            Some(r) => match verify(&m.remote, &m.sha256, &m.blake3, r) {
                Ok(()) => ctx.confirm(&m.remote, m.data.len() as u64, &m.sha256, &m.blake3, "tar"),
                Err(e) => ctx.fail(&m.remote, &e),
            },
            None => ctx.fail(
                &m.remote,
                "the server's answer to its batch does not list it",
            ),
        }
    }
    Ok(())
}

/// One small file by PUT, with its SHA-256 for the server to compare.
async fn send_put(ctx: &Arc<Ctx>, m: &batch::Member, announce: bool) {
    let path = m.remote.as_str();
    if ctx.stop.load(Ordering::Relaxed) {
        return ctx.fail(path, "not tried: the upload token was refused");
    }
    if announce {
        ctx.rep.start(path, m.data.len() as u64, "put");
    }
    let item = Arc::new(ctx.rep.item(path, m.data.len() as u64));
    let data = m.data.clone();
    let mut attempt = 1;
    let mut unsure = false;
    let receipt = loop {
        item.rewind(0);
        let req = ctx
            .http
            .put(ctx.file_url(path))
            .header(crate::api::EXPECTED_SHA256_HEADER, &m.sha256)
            .header(reqwest::header::CONTENT_LENGTH, data.len() as u64)
            .body(ctx.body(data.clone(), item.clone()));
        match ctx.send(req, data.len() as u64).await {
            Ok(r) => match r.json::<Receipt>().await {
                Ok(r) => break r,
                Err(e) => {
                    return ctx.fail(path, &format!("the server's answer did not parse: {e}"))
                }
            },
            Err(e @ Failure::Refused { .. }) => {
                ctx.refused(&e);
                if unsure && e.status() == Some(StatusCode::CONFLICT) {
                    if let Ok(Some(r)) = receipt_of(ctx, path).await {
                        break r;
                    }
                }
                return ctx.fail(path, &e.message());
            }
            Err(e) => {
                if !ctx.again(path, attempt, &e).await {
                    return ctx.fail(path, &e.message());
                }
                attempt += 1;
                unsure = true;
            }
        }
    };
    match verify(path, &m.sha256, &m.blake3, &receipt) {
        Ok(()) => ctx.confirm(path, m.data.len() as u64, &m.sha256, &m.blake3, "put"),
        Err(e) => ctx.fail(path, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(sha: &str, b3: &str) -> Receipt {
        Receipt {
            path: "a".into(),
            size: 3,
            complete: true,
            sha256: Some(sha.into()),
            blake3: Some(b3.into()),
            expected_sha256_matches: Some(true),
        }
    }

    #[test]
    fn every_digest_of_the_receipt_is_checked() {
        assert!(verify("a", "s", "b", &receipt("s", "b")).is_ok());
        let e = verify("a", "s", "b", &receipt("t", "b")).unwrap_err();
        assert!(e.contains("sha256 t"), "{e}");
        assert!(verify("a", "s", "b", &receipt("s", "c")).is_err());
        let mut r = receipt("s", "b");
        r.complete = false;
        assert!(verify("a", "s", "b", &r).is_err());
        let mut r = receipt("s", "b");
        r.expected_sha256_matches = Some(false);
        assert!(verify("a", "s", "b", &r).is_err());
    }

    #[test]
    fn files_hash_as_the_tools_do() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (sha, b3, n) = hash_file(&p).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(b3, blake3::hash(b"abc").to_hex().to_string());
        let big = vec![9u8; 3 << 20];
        std::fs::write(&p, &big).unwrap();
        let (sha2, b32, n) = hash_big_file(&p).unwrap();
        assert_eq!((sha2, b32, n), hash_file(&p).unwrap());
        assert_eq!(n, 3 << 20);
    }
}
