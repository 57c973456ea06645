//! Auditing upload-token uses and refusals without letting a client buy a synced write per
//! request.
//!
//! Every use (`token.used`) and refusal (`token.refused`) of an upload token belongs in the
//! audit log, but a client that repeats a HEAD a thousand times, or replays an expired token,
//! must not turn each request into a durable (fsynced) database write. So, per window
//! (`[audit] summary_window`, default 60 s):
//! - the first event of each (action, token, client address) is written at once, as long as
//!   that token and that address have had fewer than [`PER_TOKEN`] / [`PER_CLIENT`] such
//!   writes in the window and the whole service fewer than `[audit] max_immediate_events`;
//! - everything else is counted in memory and written at the window's end as one event per
//!   (action, token) with `"summary": true`, the `count`, and the clients, routes and
//!   reasons seen (each list capped) — all summaries of a window in one transaction.
//!
//! So the synced writes per window are bounded whatever the request rate, and no request is
//! left out of the counts. What a crash costs: the counts of the unfinished window (the first
//! event of each kind is already on disk). Request paths are capped at [`ROUTE_MAX`] bytes
//! wherever they are recorded.
//!
//! Memory is bounded too: at most [`MAX_TRACKED`] distinct keys are remembered per window;
//! beyond that, events are folded into one overflow summary (actor `system`).

use crate::app::App;
use crate::audit::AuditEvent;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Longest request path (method and path) kept in an audit event or a log line, in bytes.
pub const ROUTE_MAX: usize = 256;
/// Immediate writes per token and action in one window.
pub const PER_TOKEN: u32 = 4;
/// Immediate writes per client address and action in one window.
pub const PER_CLIENT: u32 = 4;
/// Distinct keys remembered per window before events fold into the overflow summary.
pub const MAX_TRACKED: usize = 10_000;
/// Entries kept per list (clients, routes, reasons) of one summary.
const LIST_MAX: usize = 16;

/// `route`, cut to [`ROUTE_MAX`] bytes on a character boundary, saying how long it was.
pub fn cap_route(route: &str) -> std::borrow::Cow<'_, str> {
    if route.len() <= ROUTE_MAX {
        return route.into();
    }
    let mut end = ROUTE_MAX;
    while !route.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &route[..end], route.len()).into()
}

/// One use or refusal of an upload token.
#[derive(Debug, Clone)]
pub struct TokenEvent<'a> {
    /// `token.used` or `token.refused`.
    pub action: &'static str,
    /// The token's id (jti).
    pub token: &'a str,
    /// The transfer the token names.
    pub transfer: &'a str,
    pub client: IpAddr,
    /// Method and path, already capped.
    pub route: &'a str,
    /// Why it was refused (`None` for a use).
    pub reason: Option<&'a str>,
}

impl<'a> TokenEvent<'a> {
    /// A refusal of upload token `token` (its jti) naming transfer `transfer`.
    pub fn refusal(
        token: &'a str,
        transfer: &'a str,
        client: IpAddr,
        route: &'a str,
        reason: &'a str,
    ) -> Self {
        Self {
            action: "token.refused",
            token,
            transfer,
            client,
            route,
            reason: Some(reason),
        }
    }

    /// A use of upload token `token` for `transfer`.
    pub fn used(token: &'a str, transfer: &'a str, client: IpAddr, route: &'a str) -> Self {
        Self {
            action: "token.used",
            token,
            transfer,
            client,
            route,
            reason: None,
        }
    }

    fn audit_event(&self) -> AuditEvent {
        let mut detail = json!({ "route": self.route, "client": self.client.to_string() });
        if let Some(r) = self.reason {
            detail["reason"] = r.into();
        }
        AuditEvent::new(format!("upload-token:{}", self.token), self.action)
            .transfer(self.transfer)
            .detail(detail)
    }
}

/// Counts of one list, capped at [`LIST_MAX`] entries plus an "others" count.
#[derive(Debug, Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
    others: u64,
}

impl Tally {
    fn add(&mut self, key: &str) {
        if let Some(n) = self.counts.get_mut(key) {
            *n += 1;
        } else if self.counts.len() < LIST_MAX {
            self.counts.insert(key.to_owned(), 1);
        } else {
            self.others += 1;
        }
    }

    fn json(&self) -> Value {
        let mut m: Map<String, Value> = self
            .counts
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        if self.others > 0 {
            m.insert("(others)".into(), self.others.into());
        }
        Value::Object(m)
    }
}

/// The repeats of one (action, token) in the current window.
#[derive(Debug)]
struct Summary {
    transfer: Option<String>,
    count: u64,
    first: String,
    last: String,
    clients: Tally,
    routes: Tally,
    reasons: Tally,
}

/// What one window has seen so far.
#[derive(Debug, Default)]
struct Window {
    started: String,
    /// (action, token, client) already written at once this window.
    written: HashSet<(&'static str, String, IpAddr)>,
    per_token: HashMap<(&'static str, String), u32>,
    per_client: HashMap<(&'static str, IpAddr), u32>,
    immediate: u32,
    /// (action, token) → repeats; `token` is `*` for the overflow.
    summaries: HashMap<(&'static str, String), Summary>,
}

impl Window {
    fn tracked(&self) -> usize {
        self.written.len() + self.per_token.len() + self.per_client.len() + self.summaries.len()
    }
}

/// The current window of upload-token uses and refusals. Cheap to share.
#[derive(Debug, Clone)]
pub struct TokenEvents {
    window: Arc<Mutex<Window>>,
    max_immediate: u32,
}

impl TokenEvents {
    pub fn new(max_immediate: u32) -> Self {
        Self {
            window: Arc::new(Mutex::new(Window {
                started: crate::store::now(),
                ..Default::default()
            })),
            max_immediate,
        }
    }

    /// Notes `e`; returns the event to write now, or `None` when it was counted for the
    /// window's summary instead.
    pub fn note(&self, e: &TokenEvent<'_>) -> Option<AuditEvent> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let pair = (e.action, e.token.to_owned(), e.client);
        let token_n = w
            .per_token
            .get(&(e.action, e.token.to_owned()))
            .copied()
            .unwrap_or(0);
        let client_n = w
            .per_client
            .get(&(e.action, e.client))
            .copied()
            .unwrap_or(0);
        let room = w.tracked() + 3 <= MAX_TRACKED;
        if room
            && !w.written.contains(&pair)
            && token_n < PER_TOKEN
            && client_n < PER_CLIENT
            && w.immediate < self.max_immediate
        {
            w.written.insert(pair);
            *w.per_token
                .entry((e.action, e.token.to_owned()))
                .or_default() += 1;
            *w.per_client.entry((e.action, e.client)).or_default() += 1;
            w.immediate += 1;
            return Some(e.audit_event());
        }
        let now = crate::store::now();
        let mut key = (e.action, e.token.to_owned());
        if !w.summaries.contains_key(&key) && w.tracked() + 1 > MAX_TRACKED {
            key = (e.action, "*".to_owned());
        }
        let overflow = key.1 == "*";
        let s = w.summaries.entry(key).or_insert_with(|| Summary {
            transfer: (!overflow).then(|| e.transfer.to_owned()),
            count: 0,
            first: now.clone(),
            last: now.clone(),
            clients: Tally::default(),
            routes: Tally::default(),
            reasons: Tally::default(),
        });
        s.count += 1;
        s.last = now;
        s.clients.add(&e.client.to_string());
        s.routes.add(e.route);
        if let Some(r) = e.reason {
            s.reasons.add(r);
        }
        None
    }

    /// Ends the window: its summaries as audit events, and a fresh window.
    pub fn take(&self) -> Vec<AuditEvent> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(
            &mut *w,
            Window {
                started: crate::store::now(),
                ..Default::default()
            },
        );
        drop(w);
        let mut out: Vec<_> = old.summaries.into_iter().collect();
        out.sort_by(|a, b| a.1.first.cmp(&b.1.first));
        out.into_iter()
            .map(|((action, token), s)| {
                let actor = if token == "*" {
                    "system".to_owned()
                } else {
                    format!("upload-token:{token}")
                };
                let mut detail = json!({
                    "summary": true,
                    "count": s.count,
                    "window_from": old.started,
                    "first": s.first,
                    "last": s.last,
                    "clients": s.clients.json(),
                    "routes": s.routes.json(),
                });
                if action == "token.refused" {
                    detail["reasons"] = s.reasons.json();
                }
                if token == "*" {
                    detail["note"] = "more distinct tokens and clients than are tracked".into();
                }
                let mut ev = AuditEvent::new(actor, action).detail(detail);
                if let Some(t) = s.transfer {
                    ev = ev.transfer(t);
                }
                ev
            })
            .collect()
    }
}

/// Records a refusal of an upload token: at once, or in the window's summary. A failure to
/// write is logged, never turned into another answer than the refusal itself.
pub async fn refused(app: &App, e: TokenEvent<'_>) {
    if let Some(ev) = app.token_events.note(&e) {
        if let Err(err) = app.store.audit(ev).await {
            tracing::warn!(error = %err, token = e.token, "cannot audit a token refusal");
        }
    }
}

/// Records a use of an upload token: at once, or in the window's summary.
pub async fn used(app: &App, e: TokenEvent<'_>) -> crate::store::Result<()> {
    match app.token_events.note(&e) {
        Some(ev) => app.store.audit(ev).await,
        None => Ok(()),
    }
}

/// Writes the window's summaries, all in one transaction, and starts a new window.
pub async fn flush(app: &App) -> crate::store::Result<usize> {
    let events = app.token_events.take();
    if events.is_empty() {
        return Ok(0);
    }
    let n = events.len();
    let mut tx = app.store.begin().await?;
    for ev in events {
        tx.audit(ev).await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Flushes every `summary_window`, and once more when `stop` turns true.
pub async fn worker(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(app.settings.audit.summary_window) => false,
            _ = stop.changed() => true,
        };
        if let Err(e) = flush(&app).await {
            tracing::warn!(error = %e, "cannot write the token-event summaries");
        }
        if stopping || *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(token: &'a str, client: &str, route: &'a str) -> TokenEvent<'a> {
        TokenEvent {
            action: "token.refused",
            token,
            transfer: "t1",
            client: client.parse().unwrap(),
            route,
            reason: Some("token has expired"),
        }
    }

    #[test]
    fn repeats_are_counted_not_written_and_summarised_once() {
        let t = TokenEvents::new(100);
        assert!(t.note(&ev("a", "10.0.0.1", "HEAD /x")).is_some());
        for _ in 0..999 {
            assert!(t.note(&ev("a", "10.0.0.1", "HEAD /x")).is_none());
        }
        let s = t.take();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].detail["count"], 999);
        assert_eq!(s[0].detail["clients"]["10.0.0.1"], 999);
        assert!(t.take().is_empty(), "a new window starts empty");
        assert!(t.note(&ev("a", "10.0.0.1", "HEAD /x")).is_some());
    }

    #[test]
    fn many_addresses_or_tokens_do_not_buy_more_writes() {
        let t = TokenEvents::new(10);
        let written = (0..500)
            .filter(|i| {
                t.note(&ev(
                    "a",
                    &format!("10.0.{}.{}", i / 250, i % 250),
                    "HEAD /x",
                ))
                .is_some()
            })
            .count();
        assert_eq!(written as u32, PER_TOKEN);
        let tokens: Vec<String> = (0..500).map(|i| format!("tok{i}")).collect();
        let written = tokens
            .iter()
            .filter(|tok| t.note(&ev(tok, "10.9.9.9", "HEAD /x")).is_some())
            .count();
        assert_eq!(written as u32, PER_CLIENT);
        let written = tokens
            .iter()
            .enumerate()
            .filter(|(i, tok)| {
                t.note(&ev(
                    tok,
                    &format!("10.1.{}.{}", i / 250, i % 250),
                    "HEAD /x",
                ))
                .is_some()
            })
            .count();
        assert!(written as u32 + PER_TOKEN + PER_CLIENT <= 10, "{written}");
        let total: u64 = t
            .take()
            .iter()
            .map(|e| e.detail["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 1500 - 10);
    }

    #[test]
    fn long_routes_are_capped_on_a_character_boundary() {
        let long = format!("HEAD /{}", "é".repeat(30_000));
        let c = cap_route(&long);
        assert!(c.len() < ROUTE_MAX + 40, "{}", c.len());
        assert!(c.ends_with(&format!("({} bytes)", long.len())));
        assert_eq!(cap_route("GET /a"), "GET /a");
    }
}
