//! A tiny open-loop HTTP load generator for the benchmarks (benches/api.sh): GET one URL at a
//! constant rate and report latency percentiles.
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever happened to the ones before,
//! and its latency is measured from that due time, not from when it was actually sent. So
//! time spent queueing (in the server, or here when the generator falls behind) counts, as it
//! would for a client arriving on schedule; a closed loop (send, wait, send) would instead
//! slow down with the server and hide its stalls ("coordinated omission").
//!
//! ```sh
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080/healthz \
//!     --rate 500 --duration 10s [--warmup 1s] [--token T] [--threads 1] [--timeout 10s]
//! ```
//! Prints one JSON object on stdout: requests, errors (by kind), the rate achieved, and
//! p50/p90/p99/max of the latency from the due time (`*_ms`) and of the service time from
//! the actual send (`service_*_ms`), in milliseconds.

use clap::Parser;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Constant-rate (open-loop) HTTP GET load, with latency percentiles")]
struct Args {
    /// The URL to GET.
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// How long to send for, after the warm-up (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Sent at the same rate first and not counted (connections opened, caches warm).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// A bearer token for every request.
    #[arg(long, env = "LOADGEN_TOKEN")]
    token: Option<String>,
    /// Runtime worker threads. One leaves the other core to the server on a 2-core machine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A request not answered within this is an error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// What one counted request gave.
#[derive(Default)]
struct Results {
    /// (latency from the due time, service time from the send), seconds.
    ok: Vec<(f64, f64)>,
    errors: BTreeMap<String, u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let out = rt.block_on(run(&args))?;
    println!("{out}");
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let http = reqwest::Client::builder()
        .timeout(args.timeout)
        .pool_max_idle_per_host(256)
        .build()?;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let warm = (args.warmup.as_secs_f64() * args.rate).round() as u64;
    let total = warm + (args.duration.as_secs_f64() * args.rate).round() as u64;
    let results = Arc::new(Mutex::new(Results::default()));
    let mut tasks = Vec::with_capacity(total as usize);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut late_max = Duration::ZERO;
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        late_max = late_max.max(tokio::time::Instant::now().saturating_duration_since(due));
        let mut req = http.get(&args.url);
        if let Some(t) = &args.token {
            req = req.bearer_auth(t);
        }
        let results = results.clone();
        let counted = i >= warm;
        let due: Instant = due.into_std();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = match req.send().await {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("body: {}", kind(&e))),
                },
                Ok(r) => Err(format!("status {}", r.status().as_u16())),
                Err(e) => Err(kind(&e)),
            };
            if !counted {
                return;
            }
            let done = Instant::now();
            let mut res = results.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(()) => res.ok.push((
                    done.duration_since(due).as_secs_f64(),
                    done.duration_since(sent).as_secs_f64(),
                )),
                Err(k) => *res.errors.entry(k).or_default() += 1,
            }
        }));
    }
    let sending = start.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    let res = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    let mut lat: Vec<f64> = res.ok.iter().map(|x| x.0).collect();
    let mut svc: Vec<f64> = res.ok.iter().map(|x| x.1).collect();
    lat.sort_by(f64::total_cmp);
    svc.sort_by(f64::total_cmp);
    let errors: u64 = res.errors.values().sum();
    let counted = total - warm;
    let ms = |v: &[f64], q: f64| pct(v, q).map(|s| (s * 1e5).round() / 100.0);
    let out = serde_json::json!({
        "url": redact(&args.url),
        "rate": args.rate,
        "seconds": args.duration.as_secs_f64(),
        "requests": counted,
        "ok": lat.len(),
        "errors": errors,
        "error_kinds": res.errors,
        // Requests sent per second over the whole run (warm-up included): below `rate`, the
        // generator itself could not keep up, and its lateness is in the latencies.
        "achieved_rate": (total as f64 / sending.as_secs_f64() * 10.0).round() / 10.0,
        "generator_late_max_ms": (late_max.as_secs_f64() * 1e5).round() / 100.0,
        "p50_ms": ms(&lat, 0.50),
        "p90_ms": ms(&lat, 0.90),
        "p99_ms": ms(&lat, 0.99),
        "max_ms": ms(&lat, 1.0),
        "service_p50_ms": ms(&svc, 0.50),
        "service_p99_ms": ms(&svc, 0.99),
    });
    Ok(out)
}

/// The `q` quantile of sorted `v` (nearest rank).
fn pct(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// A short name for a transport error (errors are grouped by it).
fn kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_request() {
        "request".into()
    } else if e.is_body() || e.is_decode() {
        "body".into()
    } else {
        "other".into()
    }
}

/// The URL without its query (which might hold a secret) for the report.
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::pct;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&v, 0.5), Some(50.0));
        assert_eq!(pct(&v, 0.99), Some(99.0));
        assert_eq!(pct(&v, 1.0), Some(100.0));
        assert_eq!(pct(&[], 0.5), None);
        assert_eq!(pct(&[7.0], 0.99), Some(7.0));
    }
}
