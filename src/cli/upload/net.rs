//! The upload's HTTP habits: which answers are worth retrying, exponential backoff with
//! jitter that honours `Retry-After`, and one send-rate cap shared by every job.

use rand::Rng;
use reqwest::{Response, StatusCode};
use std::time::{Duration, Instant};

/// Why an attempt failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Worth trying again: the network, a 5xx or a 429 (`Retry-After`, if it said).
    Transient {
        error: String,
        retry_after: Option<Duration>,
    },
    /// The server refused (a 4xx): trying again would get the same answer.
    Refused { status: StatusCode, error: String },
}

impl Failure {
    pub fn message(&self) -> String {
        match self {
            Failure::Transient { error, .. } => error.clone(),
            Failure::Refused { status, error } => format!("{status}: {error}"),
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Failure::Refused { status, .. } => Some(*status),
            Failure::Transient { .. } => None,
        }
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Self {
        Failure::Transient {
            error: format!("network: {}", error_chain(&e)),
            retry_after: None,
        }
    }
}

/// An error with its causes, which reqwest keeps out of its own message.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Turns an error status into a [`Failure`] with the server's message; success passes.
pub async fn check(resp: Response) -> Result<Response, Failure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let text = resp.text().await.unwrap_or_default();
    let error = server_message(&text);
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(Failure::Transient {
            error: format!("{status}: {error}"),
            retry_after,
        })
    } else {
        Err(Failure::Refused { status, error })
    }
}

/// The `error` of a JSON error body, or the body itself.
pub fn server_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.trim().chars().take(500).collect())
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs and read as absent).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(300)))
}

/// How many times one step is tried, and the backoff between tries.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 10,
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before try `attempt + 1` (`attempt` counts from 1): doubling from `first`, up
    /// to `max`, with jitter of up to half, so parallel jobs that failed together do not come
    /// back together; never less than a `Retry-After`.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .first
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max);
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        let w = exp.mul_f64(jitter);
        match retry_after {
            Some(r) if r > w => r,
            _ => w,
        }
    }
}

/// Parses `500k`, `10M`, `1G`, `1024` (bytes per second; k, M, G are powers of 1024).
pub fn parse_rate(raw: &str) -> anyhow::Result<u64> {
    let s = raw.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_lowercase() {
                'k' => 1u64 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => anyhow::bail!("--limit-rate {raw:?}: use a number with k, M or G"),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--limit-rate {raw:?} is not a number of bytes per second"))?;
    let rate = (n * mult as f64) as u64;
    if !n.is_finite() || rate == 0 {
        anyhow::bail!("--limit-rate {raw:?} must be more than 0 bytes per second");
    }
    Ok(rate)
}

/// A pace shared by all jobs: each caller reserves its bytes' share of time, in order, so
/// the total rate stays at `rate` bytes per second.
pub struct Limiter {
    rate: f64,
    next: tokio::sync::Mutex<Instant>,
}

impl Limiter {
    pub fn new(rate: u64) -> Self {
        Self {
            rate: rate as f64,
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits until `n` more bytes may go.
    pub async fn take(&self, n: usize) {
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            // Time unused while idle is not saved up into a burst.
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(n as f64 / self.rate);
            start
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_binary_suffixes() {
        assert_eq!(parse_rate("500k").unwrap(), 500 << 10);
        assert_eq!(parse_rate("10M").unwrap(), 10 << 20);
        assert_eq!(parse_rate("1.5k").unwrap(), 1536);
        assert_eq!(parse_rate("2048").unwrap(), 2048);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10x").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let b = Backoff {
            attempts: 5,
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let w1 = b.wait(1, None);
            assert!(w1 >= Duration::from_millis(50) && w1 <= Duration::from_millis(100));
            let w3 = b.wait(3, None);
            assert!(w3 >= Duration::from_millis(200) && w3 <= Duration::from_millis(400));
            assert!(b.wait(30, None) <= Duration::from_secs(1));
        }
        assert_eq!(
            b.wait(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn server_messages_come_from_the_error_field() {
        assert_eq!(server_message(r#"{"error":"bad name"}"#), "bad name");
        assert_eq!(server_message("plain"), "plain");
    }

    #[tokio::test]
    async fn the_limiter_holds_the_rate() {
        let l = Limiter::new(100_000);
        let t = Instant::now();
        for _ in 0..10 {
            l.take(5_000).await;
        }
        // 50,000 bytes at 100,000 B/s: the last reservation starts at 0.45 s.
        assert!(
            t.elapsed() >= Duration::from_millis(440),
            "{:?}",
            t.elapsed()
        );
    }
}
