//! What a slow, stalled or greedy client may hold of the server: request bodies that send
//! nothing for `[uploads] idle_timeout` are cut off (408); one credential and one client
//! address have at most `per_token` and `per_address` uploads in progress (429 with
//! Retry-After); and the bytes every upload together holds in memory, received but not yet on
//! disk, stay within `buffer_total` whatever the number of connections.
//!
//! The memory bound works on the frames themselves. An upload first takes a *window* (a
//! permit of a semaphore sized `buffer_total / window`) before its body is read at all, so a
//! connection that is waiting for one costs no more than its socket. Each frame handed on
//! carries a share of that window inside its `Bytes` (`Bytes::from_owner`): the share comes
//! back only when the last copy of the frame is dropped, that is once it is hashed and written.
//! While a window is full the body is not read, and TCP pushes back on the client. Because
//! every upload holds a whole window or none, uploads never wait on each other's half-filled
//! buffers (no deadlock), and a window is always large enough for the upload to reach its next
//! flush (the 1 MiB batch of `workflow::upload` plus one part of `volumes::SegmentWriter`).

use crate::config::UploadSettings;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::{Stream, StreamExt};
use sha2::Digest;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes one upload may hold in memory at once with a quarantine on local disk: more than the
/// upload's own batch (1 MiB) plus one part of the segment writer (1 MiB) plus the largest
/// frame hyper hands on (about 400 KiB), so an upload can always reach the point where it
/// writes. See [`window_for`].
pub const WINDOW: usize = 3 << 20;

/// The window for a segment writer whose parts are `part` bytes: one part, the batch and a
/// frame (3 MiB for local disk's 1 MiB parts, 7 MiB for S3's 5 MiB parts).
pub fn window_for(part: usize) -> usize {
    part + (2 << 20)
}

/// Seconds a refused client is told to wait.
const RETRY_AFTER: u64 = 5;

/// Caps on uploads in progress and the shared budget of upload buffers. One per server.
pub struct Limiter {
    settings: UploadSettings,
    /// Bytes of one upload's window ([`window_for`]).
    window: usize,
    windows: Arc<Semaphore>,
    total_windows: usize,
    active: Mutex<HashMap<Key, usize>>,
    /// Refusals by reason, counted into `/metrics`.
    refused: crate::metrics::UploadRefusals,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// The SHA-256 of the credential as sent: a forged credential never matches a real one,
    /// so it cannot use up a real one's share.
    Token([u8; 32]),
    Address(IpAddr),
}

/// Why an upload was refused, for the counters on `/metrics` (in the order of
/// `metrics::REFUSALS`, which names them).
#[derive(Debug, Clone, Copy)]
enum Refusal {
    PerToken = 0,
    PerAddress = 1,
    Idle = 2,
    Busy = 3,
}

impl Limiter {
    pub fn new(settings: &UploadSettings, refused: crate::metrics::UploadRefusals) -> Self {
        Self::with_window(settings, refused, WINDOW)
    }

    /// As [`Limiter::new`], with windows of `window` bytes (`window_for` the part size).
    pub fn with_window(
        settings: &UploadSettings,
        refused: crate::metrics::UploadRefusals,
        window: usize,
    ) -> Self {
        let total_windows = ((settings.buffer_total as usize) / window).max(1);
        Self {
            settings: settings.clone(),
            window,
            windows: Arc::new(Semaphore::new(total_windows)),
            total_windows,
            active: Mutex::new(HashMap::new()),
            refused,
        }
    }

    /// Counts an upload in against its credential and address; `None` (and which cap) when
    /// either is at its limit, counting nothing.
    fn enter(self: &Arc<Self>, keys: Vec<(Key, usize)>) -> Result<Slot, Refusal> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        for (key, cap) in &keys {
            if active.get(key).copied().unwrap_or(0) >= *cap {
                return Err(match key {
                    Key::Token(_) => Refusal::PerToken,
                    Key::Address(_) => Refusal::PerAddress,
                });
            }
        }
        for (key, _) in &keys {
            *active.entry(key.clone()).or_default() += 1;
        }
        Ok(Slot {
            limiter: self.clone(),
            keys: keys.into_iter().map(|(k, _)| k).collect(),
        })
    }

    fn refuse(&self, why: Refusal) {
        self.refused.count(crate::metrics::REFUSALS[why as usize]);
    }

    /// The buffer budget and what uploads hold of it now, in bytes.
    pub fn buffers(&self) -> (u64, u64) {
        let in_use = self.total_windows - self.windows.available_permits();
        (
            (self.total_windows * self.window) as u64,
            (in_use * self.window) as u64,
        )
    }
}

/// One upload counted against its caps until dropped.
struct Slot {
    limiter: Arc<Limiter>,
    keys: Vec<Key>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut active = self
            .limiter
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(n) = active.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    active.remove(k);
                }
            }
        }
    }
}

fn refusal(status: StatusCode, message: String, retry: bool) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": message }))).into_response();
    if retry {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(RETRY_AFTER));
    }
    // The body may be half-sent: the connection cannot be reused.
    r.headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    r
}

/// What the body wrappers report back to the middleware once the handler has answered.
#[derive(Default)]
struct Outcome {
    idle: AtomicBool,
    busy: AtomicBool,
}

/// Every request: its body is cut off when the client sends nothing for `idle_timeout`, and
/// an error answer to such a request becomes 408, whatever the handler made of the cut.
pub async fn idle_bodies(
    Extension(limiter): Extension<Arc<Limiter>>,
    req: Request,
    next: Next,
) -> Response {
    let outcome = Arc::new(Outcome::default());
    let idle = limiter.settings.idle_timeout;
    let (parts, body) = req.into_parts();
    let body = Body::from_stream(Idle {
        inner: body.into_data_stream(),
        idle,
        timer: None,
        outcome: outcome.clone(),
        done: false,
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    finish(&limiter, &outcome, resp)
}

fn finish(limiter: &Limiter, outcome: &Outcome, resp: Response) -> Response {
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    if outcome.idle.load(Ordering::Acquire) {
        limiter.refuse(Refusal::Idle);
        let secs = limiter.settings.idle_timeout.as_secs_f64();
        return refusal(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body sent nothing for {secs} s; nothing of it was kept"),
            false,
        );
    }
    if outcome.busy.load(Ordering::Acquire) {
        limiter.refuse(Refusal::Busy);
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is receiving as many uploads as it has memory for; retry shortly".into(),
            true,
        );
    }
    resp
}

/// Upload routes: the caps, then the shared buffer budget around the body.
pub async fn uploads(
    Extension(limiter): Extension<Arc<Limiter>>,
    req: Request,
    next: Next,
) -> Response {
    if ![Method::PUT, Method::POST, Method::PATCH].contains(req.method()) {
        return next.run(req).await;
    }
    let s = &limiter.settings;
    let mut keys = Vec::new();
    if let Some(auth) = req.headers().get(axum::http::header::AUTHORIZATION) {
        let digest: [u8; 32] = sha2::Sha256::digest(auth.as_bytes().trim_ascii()).into();
        keys.push((Key::Token(digest), s.per_token));
    }
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        keys.push((Key::Address(addr.ip().to_canonical()), s.per_address));
    }
    let slot = match limiter.enter(keys) {
        Ok(slot) => slot,
        Err(why) => {
            limiter.refuse(why);
            let (n, what) = match why {
                Refusal::PerToken => (s.per_token, "with this token"),
                _ => (s.per_address, "from this address"),
            };
            return refusal(
                StatusCode::TOO_MANY_REQUESTS,
                format!("at most {n} uploads may be in progress at once {what}; retry when one has finished"),
                true,
            );
        }
    };
    let outcome = Arc::new(Outcome::default());
    let (parts, body) = req.into_parts();
    let windows = limiter.windows.clone();
    let wait = s.buffer_wait;
    let body = Body::from_stream(Budgeted {
        inner: body.into_data_stream(),
        admission: Some(Box::pin(async move {
            tokio::time::timeout(wait, windows.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        })),
        window: None,
        size: limiter.window,
        outcome: outcome.clone(),
        _slot: slot,
        done: false,
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    finish(&limiter, &outcome, resp)
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the client sent nothing for {0:?}")]
    Idle(Duration),
    #[error("no upload buffer became free in time")]
    Busy,
    #[error("{0}")]
    Inner(axum::Error),
}

/// A body that fails once the client has sent nothing for `idle` while we wait for it.
struct Idle<S> {
    inner: S,
    idle: Duration,
    /// Armed when we start waiting for the client, so time we spend not reading (a full
    /// buffer window, say) never counts against it.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    outcome: Arc<Outcome>,
    done: bool,
}

impl<S> Stream for Idle<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(item) => {
                this.timer = None;
                if item.is_none() {
                    this.done = true;
                }
                Poll::Ready(item.map(|r| r.map_err(BodyError::Inner)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.done = true;
                        this.outcome.idle.store(true, Ordering::Release);
                        Poll::Ready(Some(Err(BodyError::Idle(idle))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// One upload's share of the buffer budget: the bytes its frames still hold.
struct Window {
    held: AtomicUsize,
    /// Woken when a frame is dropped, so a full window reads on.
    freed: futures::task::AtomicWaker,
    _permit: OwnedSemaphorePermit,
}

/// A frame and the share of its window it holds until it is dropped.
struct Held {
    bytes: Bytes,
    window: Arc<Window>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.window
            .held
            .fetch_sub(self.bytes.len(), Ordering::AcqRel);
        self.window.freed.wake();
    }
}

type Admission = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// A body read only within a window of the shared budget.
struct Budgeted<S> {
    inner: S,
    /// Waiting for a window; `None` once one is held.
    admission: Option<Admission>,
    window: Option<Arc<Window>>,
    /// Bytes the window holds at most.
    size: usize,
    outcome: Arc<Outcome>,
    _slot: Slot,
    done: bool,
}

impl<S> Stream for Budgeted<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(admission) = this.admission.as_mut() {
            match admission.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    this.admission = None;
                    this.outcome.busy.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(BodyError::Busy)));
                }
                Poll::Ready(Some(permit)) => {
                    this.admission = None;
                    this.window = Some(Arc::new(Window {
                        held: AtomicUsize::new(0),
                        freed: Default::default(),
                        _permit: permit,
                    }));
                }
            }
        }
        let Some(window) = this.window.clone() else {
            this.done = true;
            return Poll::Ready(None);
        };
        // Register before looking, so a frame dropped in between still wakes us.
        window.freed.register(cx.waker());
        if window.held.load(Ordering::Acquire) >= this.size {
            return Poll::Pending;
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(BodyError::Inner(e))))
            }
            Poll::Ready(Some(Ok(bytes))) => {
                window.held.fetch_add(bytes.len(), Ordering::AcqRel);
                Poll::Ready(Some(Ok(Bytes::from_owner(Held {
                    bytes,
                    window: window.clone(),
                }))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(per_token: usize, per_address: usize) -> UploadSettings {
        UploadSettings {
            per_token,
            per_address,
            ..UploadSettings::default()
        }
    }

    #[test]
    fn caps_count_per_key_and_free_on_drop() {
        let l = Arc::new(Limiter::new(&settings(2, 3), Default::default()));
        let tok = |b: u8| (Key::Token([b; 32]), 2);
        let addr = (Key::Address("10.0.0.1".parse().unwrap()), 3);
        let a = l.enter(vec![tok(1), addr.clone()]).unwrap();
        let _b = l.enter(vec![tok(1), addr.clone()]).unwrap();
        assert!(matches!(
            l.enter(vec![tok(1), addr.clone()]),
            Err(Refusal::PerToken)
        ));
        let _c = l.enter(vec![tok(2), addr.clone()]).unwrap();
        assert!(matches!(
            l.enter(vec![tok(3), addr.clone()]),
            Err(Refusal::PerAddress)
        ));
        drop(a);
        let _d = l.enter(vec![tok(1), addr]).unwrap();
    }

    #[tokio::test]
    async fn a_full_window_stops_reading_until_frames_are_dropped() {
        let l = Limiter::new(&UploadSettings::default(), Default::default());
        let permit = l.windows.clone().acquire_owned().await.unwrap();
        let frames: Vec<Result<Bytes, axum::Error>> = (0..8)
            .map(|_| Ok(Bytes::from(vec![0u8; 1 << 20])))
            .collect();
        let limiter = Arc::new(l);
        let slot = limiter.enter(vec![]).unwrap();
        let mut body = Budgeted {
            inner: futures::stream::iter(frames),
            admission: Some(Box::pin(async move { Some(permit) })),
            window: None,
            size: WINDOW,
            outcome: Default::default(),
            _slot: slot,
            done: false,
        };
        let mut kept = Vec::new();
        for _ in 0..3 {
            kept.push(body.next().await.unwrap().unwrap());
        }
        // Three MiB held: the fourth frame waits.
        let more = tokio::time::timeout(Duration::from_millis(100), body.next()).await;
        assert!(more.is_err(), "read past a full window");
        kept.pop();
        let more = tokio::time::timeout(Duration::from_millis(100), body.next()).await;
        assert!(more.is_ok(), "did not read on once a frame was dropped");
    }
}
