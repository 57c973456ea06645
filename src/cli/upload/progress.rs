//! What an upload shows while it runs, in one of three forms:
//! - on a terminal (stderr): a total bar and one bar per file or batch in flight (indicatif),
//!   with bytes, rate and ETA; finished files still print `SHA256  PATH` on stdout;
//! - not on a terminal: the `SHA256  PATH` lines on stdout and a plain progress line on
//!   stderr every few seconds;
//! - `--json`: one JSON object per line on stdout, and nothing else there.
//!
//! The `--json` events (every one has `event`; sizes and offsets are bytes):
//! - `start`: `path`, `size`, `method` (`tus`, `tar` or `put`) — a file begins to go;
//! - `resumed`: `path`, `offset`, `size` — a tus upload continues where the server stopped;
//! - `retry`: `path`, `attempt`, `error`, `wait_ms` — a try failed and will be made again;
//! - `changed`: `path`, `reason` — the file differs from what an earlier run started or
//!   sent, and is sent again from the start;
//! - `skipped`: `path`, `size`, `sha256`, `blake3` — already complete on the server with
//!   these digests, equal to the local file's;
//! - `done`: `path`, `size`, `sha256`, `blake3`, `method` — the server holds the file, and
//!   its digests equal the ones computed here;
//! - `failed`: `path`, `error` — the file was not sent (the server's message, or why not);
//! - `dry_run`: `path`, `size`, `method` — with `--dry-run`, what would be sent;
//! - `summary`: `files`, `done`, `skipped`, `failed`, `bytes_sent` (body bytes put on the
//!   wire by this run, re-sends included), `bytes_total` (size of every selected file),
//!   `seconds`, `unfinished` (list of `{path, offset, size, url}` tus uploads left on the
//!   server).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

enum Mode {
    Json,
    Bars {
        multi: MultiProgress,
        total: ProgressBar,
    },
    Plain,
}

/// Shared by every job; cheap to call from any of them.
pub struct Reporter {
    mode: Mode,
    started: Instant,
    /// Body bytes sent by this run (re-sends included).
    pub sent: AtomicU64,
    /// Bytes of files already finished or skipped (for the plain line's total).
    settled: AtomicU64,
    files_done: AtomicU64,
    total_bytes: u64,
    total_files: u64,
    /// stdout is one writer at a time, so lines never interleave.
    /// Lines not yet written (JSON and plain modes): a batch's events go out in one write, not
    /// one write (and one wake-up of whatever reads them) per file.
    out: Mutex<Pending>,
}

/// The progress of one file or batch in flight.
pub struct Item {
    bar: Option<ProgressBar>,
    rep: Arc<Reporter>,
}

impl Item {
    /// `n` more body bytes went out.
    pub fn sent(&self, n: u64) {
        self.rep.sent.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Mode::Bars { total, .. } = &self.rep.mode {
            total.inc(n);
        }
    }

    /// The server already holds `n` bytes (a resumed upload): counted as done, not sent.
    pub fn already(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.set_position(n);
        }
        if let Mode::Bars { total, .. } = &self.rep.mode {
            total.inc(n);
        }
    }

    /// Renames the bar (`hashing PATH`, then `PATH`).
    pub fn label(&self, label: &str) {
        if let Some(b) = &self.bar {
            b.set_message(label.to_owned());
        }
    }

    /// A try is being made again from `pos`: the bar goes back to it.
    pub fn rewind(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        Self::write_out(self.out.get_mut().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Buffered output lines and when they were last written.
#[derive(Default)]
struct Pending {
    text: String,
    written: Option<Instant>,
}

/// Output is written at least this often while events arrive, and at the end of every batch
/// or file ([`Reporter::flush`]).
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const FLUSH_BYTES: usize = 64 << 10;

impl Reporter {
    pub fn new(json: bool, total_files: u64, total_bytes: u64) -> Arc<Self> {
        use std::io::IsTerminal;
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = multi.add(ProgressBar::new(total_bytes));
            total.set_style(
                ProgressStyle::with_template(
                    "{msg:28!} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta:>3} [{wide_bar}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            total.set_message(format!("total, 0/{total_files} files"));
            Mode::Bars { multi, total }
        } else {
            Mode::Plain
        };
        Arc::new(Self {
            mode,
            started: Instant::now(),
            sent: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            total_bytes,
            total_files,
            out: Mutex::new(Pending::default()),
        })
    }

    pub fn is_json(&self) -> bool {
        matches!(self.mode, Mode::Json)
    }

    /// Writes a line to stdout (suspending the bars so they are not torn).
    fn stdout_line(&self, line: &str) {
        let mut p = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Mode::Bars { multi, .. } = &self.mode {
            // People watch a terminal: at once.
            multi.suspend(|| {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{line}");
                let _ = o.flush();
            });
            return;
        }
        p.text.push_str(line);
        p.text.push('\n');
        let due = p.written.is_none_or(|t| t.elapsed() >= FLUSH_EVERY);
        if due || p.text.len() >= FLUSH_BYTES {
            Self::write_out(&mut p);
        }
    }

    fn write_out(p: &mut Pending) {
        if !p.text.is_empty() {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(p.text.as_bytes());
            let _ = o.flush();
            p.text.clear();
        }
        p.written = Some(Instant::now());
    }

    /// Writes out every line held: at the end of each batch or file, and at the end.
    pub fn flush(&self) {
        Self::write_out(&mut self.out.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A message for people, on stderr (never in the JSON stream).
    pub fn note(&self, msg: &str) {
        match &self.mode {
            Mode::Bars { multi, .. } => {
                let _ = multi.println(msg);
            }
            _ => eprintln!("{msg}"),
        }
    }

    fn event(&self, v: Value) {
        if self.is_json() {
            self.stdout_line(&v.to_string());
        }
    }

    /// A file or batch starts; `label` names it on its bar.
    pub fn item(self: &Arc<Self>, label: &str, size: u64) -> Item {
        let bar = match &self.mode {
            Mode::Bars { multi, .. } => {
                let b = multi.add(ProgressBar::new(size));
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg:28!} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta:>3} [{wide_bar}]",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_message(label.to_owned());
                Some(b)
            }
            _ => None,
        };
        Item {
            bar,
            rep: self.clone(),
        }
    }

    pub fn start(&self, path: &str, size: u64, method: &str) {
        self.event(json!({"event": "start", "path": path, "size": size, "method": method}));
    }

    pub fn resumed(&self, path: &str, offset: u64, size: u64) {
        self.event(json!({"event": "resumed", "path": path, "offset": offset, "size": size}));
        if !self.is_json() {
            self.note(&format!("{path}: resuming at byte {offset} of {size}"));
        }
    }

    pub fn retry(&self, path: &str, attempt: u32, error: &str, wait: Duration) {
        self.event(json!({
            "event": "retry", "path": path, "attempt": attempt, "error": error,
            "wait_ms": wait.as_millis() as u64,
        }));
        if !self.is_json() {
            self.note(&format!(
                "{path}: {error}; trying again in {:.1} s (attempt {})",
                wait.as_secs_f64(),
                attempt + 1
            ));
        }
    }

    pub fn changed(&self, path: &str, reason: &str) {
        self.event(json!({"event": "changed", "path": path, "reason": reason}));
        if !self.is_json() {
            self.note(&format!(
                "{path}: {reason}; sending it again from the start"
            ));
        }
    }

    pub fn skipped(&self, path: &str, size: u64, sha256: &str, blake3: &str) {
        self.settle(size);
        if self.is_json() {
            self.event(json!({
                "event": "skipped", "path": path, "size": size, "sha256": sha256, "blake3": blake3,
            }));
        } else {
            self.stdout_line(&format!("{sha256}  {path}"));
        }
    }

    pub fn done(&self, path: &str, size: u64, sha256: &str, blake3: &str, method: &str) {
        self.settle(size);
        if self.is_json() {
            self.event(json!({
                "event": "done", "path": path, "size": size, "sha256": sha256, "blake3": blake3,
                "method": method,
            }));
        } else {
            self.stdout_line(&format!("{sha256}  {path}"));
        }
    }

    pub fn failed(&self, path: &str, error: &str) {
        self.event(json!({"event": "failed", "path": path, "error": error}));
        if !self.is_json() {
            self.note(&format!("error: {path}: {error}"));
        }
    }

    pub fn dry_run(&self, path: &str, size: u64, method: &str) {
        if self.is_json() {
            self.event(json!({"event": "dry_run", "path": path, "size": size, "method": method}));
        } else {
            self.stdout_line(&format!("would send {path} ({size} bytes, by {method})"));
        }
    }

    fn settle(&self, size: u64) {
        self.settled.fetch_add(size, Ordering::Relaxed);
        self.files_done.fetch_add(1, Ordering::Relaxed);
        if let Mode::Bars { total, .. } = &self.mode {
            let n = self.files_done.load(Ordering::Relaxed);
            total.set_message(format!("total, {n}/{} files", self.total_files));
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn summary(&self, v: Value) {
        if let Mode::Bars { total, .. } = &self.mode {
            total.finish_and_clear();
        }
        self.event(v);
        self.flush();
    }

    /// The plain line: how far, how fast, how long still.
    pub fn plain_line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let sent = self.sent.load(Ordering::Relaxed);
        let settled = self.settled.load(Ordering::Relaxed);
        let rate = sent as f64 / secs;
        let left = self.total_bytes.saturating_sub(settled.max(sent));
        let eta = if rate > 0.0 {
            format!("{:.0} s", left as f64 / rate)
        } else {
            "?".into()
        };
        format!(
            "airlock upload: {}/{} files, {} of {} sent, {}/s, ETA {eta}",
            self.files_done.load(Ordering::Relaxed),
            self.total_files,
            human(sent),
            human(self.total_bytes),
            human(rate as u64),
        )
    }

    /// Without a terminal, a progress line on stderr every `every` until the upload ends.
    pub fn spawn_plain_ticker(
        self: &Arc<Self>,
        every: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !matches!(self.mode, Mode::Plain) {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                eprintln!("{}", me.plain_line());
            }
        }))
    }
}

/// Bytes for people: `12.3 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_for_people() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(10 << 20), "10.0 MiB");
    }

    #[test]
    fn the_plain_line_counts_files_and_bytes() {
        let r = Reporter::new(true, 3, 3000);
        let item = r.item("x", 1000);
        item.sent(1000);
        r.done("x", 1000, "s", "b", "tus");
        let line = r.plain_line();
        assert!(line.contains("1/3 files"), "{line}");
        assert!(line.contains("1000 B of 2.9 KiB"), "{line}");
    }
}
