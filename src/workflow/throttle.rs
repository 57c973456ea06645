//! Refused authentications, rate-limited per client address and per credential.
//!
//! A refusal is cheap (no synced write: [`super::refusals`] summarises the audit side), but a
//! client that keeps presenting a dead, forged or guessed token should not be answered at full
//! speed forever. Per window (`[audit] summary_window`), once a client address has had
//! `[audit] refusals_per_client` refusals, or one credential `[audit] refusals_per_token`,
//! every further request from that address (or with that credential) is answered 429 with
//! `Retry-After` (the rest of the window) before any token is checked or any row read.
//!
//! Memory is bounded: at most [`MAX_KEYS`] addresses and credentials are counted per window;
//! past that, new ones are not counted (the summaries still record them).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses and credentials counted per window.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug)]
struct Window {
    started: Instant,
    clients: HashMap<IpAddr, u32>,
    /// Credentials by a keyed hash of the bearer string as sent: nothing secret is kept.
    tokens: HashMap<u64, u32>,
}

/// The current window's refusals. One per service.
#[derive(Debug)]
pub struct RefusalThrottle {
    window: Mutex<Window>,
    length: Duration,
    per_client: u32,
    per_token: u32,
    hasher: std::collections::hash_map::RandomState,
}

impl RefusalThrottle {
    pub fn new(length: Duration, per_client: u32, per_token: u32) -> Self {
        Self {
            window: Mutex::new(Window {
                started: Instant::now(),
                clients: HashMap::new(),
                tokens: HashMap::new(),
            }),
            length,
            per_client,
            per_token,
            hasher: Default::default(),
        }
    }

    fn key(&self, credential: &str) -> u64 {
        self.hasher.hash_one(credential)
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Window> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.started.elapsed() >= self.length {
            w.started = Instant::now();
            w.clients.clear();
            w.tokens.clear();
        }
        w
    }

    /// `Err(seconds to wait)` if `client`, or `credential`, has had its refusals this window.
    pub fn check(&self, client: IpAddr, credential: Option<&str>) -> Result<(), u64> {
        let key = credential.map(|c| self.key(c));
        let w = self.current();
        let over = w
            .clients
            .get(&client)
            .is_some_and(|n| *n >= self.per_client)
            || key
                .and_then(|k| w.tokens.get(&k))
                .is_some_and(|n| *n >= self.per_token);
        if over {
            let left = self.length.saturating_sub(w.started.elapsed());
            Err(left.as_secs().max(1))
        } else {
            Ok(())
        }
    }

    /// Counts one refusal of `credential` from `client`.
    pub fn refused(&self, client: IpAddr, credential: Option<&str>) {
        let key = credential.map(|c| self.key(c));
        let mut w = self.current();
        if w.clients.len() < MAX_KEYS || w.clients.contains_key(&client) {
            *w.clients.entry(client).or_default() += 1;
        }
        if let Some(k) = key {
            if w.tokens.len() < MAX_KEYS || w.tokens.contains_key(&k) {
                *w.tokens.entry(k).or_default() += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_past_the_limit_are_throttled_until_the_window_ends() {
        let t = RefusalThrottle::new(Duration::from_millis(200), 5, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // Per credential.
        t.refused(a, Some("dead"));
        assert!(t.check(a, Some("dead")).is_ok());
        t.refused(a, Some("dead"));
        assert!(t.check(a, Some("dead")).is_err());
        assert!(
            t.check(b, Some("dead")).is_err(),
            "the credential, from anywhere"
        );
        assert!(t.check(a, Some("other")).is_ok());
        // Per address.
        for n in 0..3 {
            t.refused(a, Some(&format!("guess{n}")));
        }
        assert!(t.check(a, Some("valid")).is_err());
        assert!(t.check(b, Some("valid")).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.check(a, Some("dead")).is_ok(), "a new window forgets");
    }

    #[test]
    fn memory_is_bounded_whatever_the_number_of_addresses() {
        let t = RefusalThrottle::new(Duration::from_secs(60), 1, 1);
        for i in 0..(MAX_KEYS as u32 + 500) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            t.refused(ip, Some(&i.to_string()));
        }
        let w = t.current();
        assert!(w.clients.len() <= MAX_KEYS && w.tokens.len() <= MAX_KEYS);
    }
}
