//! Collection of a released egress package by a named recipient (DESIGN.md, "Egress in
//! detail"): a read-only token per recipient, bound to the request's sealed manifest, with an
//! expiry capped by the policy, optionally bound to IP ranges and limited to N downloads,
//! shown once and revocable. Downloads are per file (with `Range`, so they resume) or the
//! whole package as a zip or tar stream built while it is sent; every start and finish is
//! audited with the recipient, the address and the bytes.
//!
//! A *download* (what `max_downloads` counts) is a response that starts at a file's first byte,
//! or a whole package: a resumed range (starting later in the file) continues one already
//! counted. Once the count is used, the token is refused everywhere, resumes included.

use super::access::{self, Principal};
use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::*;
use crate::store::{Transfer, Workspace};
use crate::volumes::Volumes;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The recipient's user name: one of the request's named recipients.
    pub recipient: String,
    /// Lifetime such as `24h` (default 24h, capped by the policy's `collection_max_ttl`).
    pub ttl: Option<String>,
    /// IP ranges the token is bound to; empty: any address.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Downloads allowed (see the module's doc); none: no limit.
    pub max_downloads: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// Shown once; never stored.
    pub token: String,
    pub token_id: TokenId,
    pub recipient: String,
    pub expires_at: i64,
}

/// Where a request's package lies in the released volume.
pub fn package_prefix(ws: &Workspace, t: &Transfer) -> object_store::path::Path {
    Volumes::release_prefix(
        &ws.project_name,
        &ws.name,
        TransferKind::Egress.volume(),
        t.id,
    )
}

/// A Project Manager issues a recipient's collection token for a released request.
pub async fn issue_token(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: TokenRequest,
) -> Result<IssuedToken> {
    let user = who.staff()?;
    let (t, ws) = access::load_for(app, user, id).await?;
    access::require_role(app, user, &ws, &[Role::ProjectManager]).await?;
    if !t.kind.is_egress() {
        return Err(Error::Conflict(format!(
            "transfer {id} is a {} transfer: only egress packages are collected",
            t.kind
        )));
    }
    if t.state != TransferState::Released {
        return Err(Error::Conflict(format!(
            "request {id} is {}: collection tokens are issued once it is released",
            t.state
        )));
    }
    let recipients = app.store.egress_recipients(id).await?;
    let Some((recipient_id, recipient)) = recipients
        .iter()
        .find(|(_, n)| *n == req.recipient)
        .cloned()
    else {
        return Err(Error::BadRequest(format!(
            "{} is not a named recipient of this request (recipients: {})",
            req.recipient,
            if recipients.is_empty() {
                "none: it goes to a target workspace".to_owned()
            } else {
                recipients
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    };
    let policy = app.policy(&ws)?;
    let max = policy.rules.egress.collection_max_ttl;
    let ttl = match &req.ttl {
        Some(s) => humantime::parse_duration(s)
            .map_err(|e| Error::BadRequest(format!("ttl `{s}`: {e}")))?,
        None => Duration::from_secs(24 * 3600).min(max),
    };
    if ttl > max || ttl.is_zero() {
        return Err(Error::BadRequest(format!(
            "ttl {} is outside what the tier {} policy allows (up to {})",
            humantime::format_duration(ttl),
            ws.tier.get(),
            humantime::format_duration(max)
        )));
    }
    let cidrs = req
        .cidrs
        .iter()
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| Error::BadRequest(format!("`{c}` is not an IP range (CIDR)")))
        })
        .collect::<Result<Vec<_>>>()?;
    // Paper 6 and DESIGN.md: data going back to its provider is collected from the
    // provider's network, inside a window the Project Manager sets.
    if t.kind == TransferKind::ReturnToProvider && (cidrs.is_empty() || req.ttl.is_none()) {
        return Err(Error::BadRequest(
            "a return to provider is collected from the provider's network within a set \
             window: give its IP ranges (cidrs) and a ttl"
                .into(),
        ));
    }
    if req.max_downloads == Some(0) {
        return Err(Error::BadRequest(
            "max_downloads must be at least 1 (leave it out for no limit)".into(),
        ));
    }
    let root = t.root_digest.clone().unwrap_or_default();
    let (token_id, token, expires_at) = app.keys.mint_collect(id, ttl);
    let mut tx = app.store.begin().await?;
    tx.insert_collection_token(
        token_id,
        id,
        recipient_id,
        &root,
        user.id,
        expires_at,
        &cidrs,
        req.max_downloads,
    )
    .await?;
    tx.audit(
        AuditEvent::new(who.actor(), "egress.collection_token_issued")
            .transfer(id)
            .detail(serde_json::json!({
                "token_id": token_id, "recipient": recipient, "expires_at": expires_at,
                "cidrs": req.cidrs, "max_downloads": req.max_downloads,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedToken {
        token,
        token_id,
        recipient,
        expires_at,
    })
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// One token; none: every live token of the request.
    pub token_id: Option<String>,
}

/// A Project Manager revokes collection tokens: refused from the next request on.
pub async fn revoke_tokens(
    app: &App,
    who: &Principal,
    id: TransferId,
    req: RevokeRequest,
) -> Result<u64> {
    let user = who.staff()?;
    let (_, ws) = access::load_for(app, user, id).await?;
    access::require_role(app, user, &ws, &[Role::ProjectManager]).await?;
    let only = req
        .token_id
        .as_deref()
        .map(|s| {
            s.parse::<TokenId>()
                .map_err(|_| Error::BadRequest(format!("`{s}` is not a token id")))
        })
        .transpose()?;
    let mut tx = app.store.begin().await?;
    let n = tx.revoke_collection_tokens(id, only).await?;
    tx.audit(
        AuditEvent::new(who.actor(), "egress.collection_tokens_revoked")
            .transfer(id)
            .detail(serde_json::json!({ "revoked": n, "token_id": req.token_id })),
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Checks a collection token's row and its request, for `access::authenticate`. Refusals
/// are audited (the refusal throttle bounds how often).
pub async fn collector(app: &App, jti: TokenId, sub: &str, client: IpAddr) -> Result<Principal> {
    let refuse = |reason: String| async move {
        let _ = app
            .store
            .audit(
                AuditEvent::new(
                    format!("collection-token:{jti}"),
                    "egress.collection_refused",
                )
                .detail(serde_json::json!({ "client": client.to_string(), "reason": reason })),
            )
            .await;
        Err(Error::Unauthenticated(reason))
    };
    let Some(row) = app.store.collection_token(jti).await? else {
        return refuse("token is not valid".into()).await;
    };
    if row.transfer_id.to_string() != sub {
        return refuse("token is not valid".into()).await;
    }
    if row.revoked_at.is_some() {
        return refuse("token has been revoked".into()).await;
    }
    if row.expires_at <= chrono::Utc::now().timestamp() {
        return refuse("token has expired".into()).await;
    }
    if !row.cidrs.is_empty() && !row.cidrs.iter().any(|n| n.contains(&client)) {
        return refuse(format!(
            "address {client} is outside the IP ranges this token is bound to"
        ))
        .await;
    }
    if row.max_downloads.is_some_and(|m| row.downloads >= m) {
        return refuse(format!(
            "the token's {} download(s) are used",
            row.downloads
        ))
        .await;
    }
    let Some(t) = app.store.transfer(row.transfer_id).await? else {
        return refuse("token is not valid".into()).await;
    };
    if t.state != TransferState::Released {
        return refuse(format!(
            "the request is {}: nothing can be collected",
            t.state
        ))
        .await;
    }
    if t.root_digest.as_deref() != Some(row.root_digest.as_str()) {
        return refuse("the request's manifest is no longer the one this token is bound to".into())
            .await;
    }
    let Some(recipient) = app.store.user(row.recipient_id).await? else {
        return refuse("token's recipient no longer exists".into()).await;
    };
    if recipient.disabled {
        return refuse(format!("user {} has been disabled", recipient.name)).await;
    }
    Ok(Principal::Collect {
        token: jti,
        transfer: row.transfer_id,
        recipient,
    })
}

/// The collection token's request; anything else gets 403.
async fn collecting(app: &App, who: &Principal) -> Result<(TokenId, User, Transfer, Workspace)> {
    match who {
        Principal::Collect {
            token,
            transfer,
            recipient,
        } => {
            let (t, ws) = access::load(app, *transfer).await?;
            Ok((*token, recipient.clone(), t, ws))
        }
        _ => Err(Error::Forbidden(
            "collection routes take a recipient's collection token; staff and upload tokens \
             cannot collect"
                .into(),
        )),
    }
}

use crate::store::User;

/// One file of the package.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PackageFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub blake3: String,
}

/// What a collection token may collect.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Package {
    pub id: TransferId,
    pub root_digest: Option<String>,
    pub recipient: String,
    pub files: Vec<PackageFile>,
    /// The output-checking record that goes with the files.
    pub record: Vec<String>,
    pub expires_at: i64,
    pub downloads_left: Option<i64>,
}

/// The output files of a request with their digests, in path order.
async fn output_files(app: &App, t: &Transfer) -> Result<Vec<PackageFile>> {
    let outputs: std::collections::BTreeSet<String> = app
        .store
        .egress_files(t.id)
        .await?
        .into_iter()
        .filter(|p| p.role == super::egress::FileRole::Output.as_str())
        .map(|p| p.path)
        .collect();
    Ok(app
        .store
        .files(t.id)
        .await?
        .into_iter()
        .filter(|f| outputs.contains(&f.path))
        .map(|f| PackageFile {
            size: f.length.unwrap_or(f.received),
            sha256: f.sha256.unwrap_or_default(),
            blake3: f.blake3.unwrap_or_default(),
            path: f.path,
        })
        .collect())
}

pub async fn package(app: &App, who: &Principal) -> Result<Package> {
    let (token, recipient, t, _) = collecting(app, who).await?;
    let row = app
        .store
        .collection_token(token)
        .await?
        .ok_or_else(|| Error::Unauthenticated("token is not valid".into()))?;
    Ok(Package {
        id: t.id,
        root_digest: t.root_digest.clone(),
        recipient: recipient.name,
        files: output_files(app, &t).await?,
        record: super::egress::RECORD_FILES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        expires_at: row.expires_at,
        downloads_left: row.max_downloads.map(|m| (m - row.downloads).max(0)),
    })
}

/// Audits a download's start (counting it if it is one) and returns its collection id.
async fn start(
    app: &App,
    token: TokenId,
    recipient: &User,
    t: &Transfer,
    client: IpAddr,
    what: &str,
    counts: bool,
) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = app.store.begin().await?;
    if counts && !tx.use_download(token).await? {
        return Err(Error::Unauthenticated(
            "the token's downloads are used".into(),
        ));
    }
    tx.start_collection(&id, token, t.id, &recipient.name, &client.to_string(), what)
        .await?;
    tx.audit(
        AuditEvent::new(
            format!("collection-token:{token}:{}", recipient.name),
            "egress.collection_started",
        )
        .transfer(t.id)
        .detail(serde_json::json!({
            "collection": id, "recipient": recipient.name, "client": client.to_string(),
            "what": what, "counted": counts,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// A response body that records, when it ends (or the client hangs up), how many bytes went.
pub struct Audited<S> {
    inner: S,
    sent: u64,
    expected: Option<u64>,
    done: Option<Finish>,
}

struct Finish {
    app: std::sync::Arc<App>,
    collection: String,
    transfer: TransferId,
    actor: String,
}

impl<S> Audited<S> {
    fn finish(&mut self, complete: bool) {
        if let Some(f) = self.done.take() {
            let (sent, expected) = (self.sent, self.expected);
            tokio::spawn(async move {
                let _ = f.app.store.finish_collection(&f.collection, sent).await;
                let _ = f
                    .app
                    .store
                    .audit(
                        AuditEvent::new(f.actor, "egress.collection_finished")
                            .transfer(f.transfer)
                            .detail(serde_json::json!({
                                "collection": f.collection, "bytes": sent,
                                "complete": complete && expected.is_none_or(|e| e == sent),
                            })),
                    )
                    .await;
            });
        }
    }
}

impl<S> Stream for Audited<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    type Item = std::io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let got = self.inner.poll_next_unpin(cx);
        match &got {
            Poll::Ready(Some(Ok(b))) => self.sent += b.len() as u64,
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Ready(None) => self.finish(true),
            Poll::Pending => {}
        }
        got
    }
}

impl<S> Drop for Audited<S> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// One file (or a range of it) for a download.
pub struct FileDownload {
    pub file: PackageFile,
    /// The bytes sent: `start..end` (end exclusive) of the file.
    pub range: std::ops::Range<u64>,
    pub body: Audited<futures::stream::BoxStream<'static, std::io::Result<Bytes>>>,
}

/// Opens one output file of the package for a download, from `range.start` (a resume).
pub async fn file(
    app: &std::sync::Arc<App>,
    who: &Principal,
    client: IpAddr,
    path: &str,
    range: Option<(u64, Option<u64>)>,
) -> Result<FileDownload> {
    let (token, recipient, t, ws) = collecting(app, who).await?;
    let files = output_files(app, &t).await?;
    let file = files
        .into_iter()
        .find(|f| f.path == path)
        .ok_or_else(|| Error::NotFound(format!("{path}: not a file of this package")))?;
    let size = file.size;
    let range = match range {
        None => 0..size,
        Some((s, e)) => {
            let end = e.map(|e| e.saturating_add(1)).unwrap_or(size).min(size);
            if s >= size || s >= end {
                return Err(Error::RangeNotSatisfiable(size));
            }
            s..end
        }
    };
    let rel = RelPath::parse(path)?;
    let dest = package_prefix(&ws, &t);
    let stream = app
        .volumes
        .read_published_range(&dest, &rel, range.clone())
        .await?
        .map_err(std::io::Error::other)
        .boxed();
    let what = if range.start == 0 && range.end == size {
        path.to_owned()
    } else {
        format!(
            "{path} bytes {}-{}",
            range.start,
            range.end.saturating_sub(1)
        )
    };
    let collection = start(app, token, &recipient, &t, client, &what, range.start == 0).await?;
    Ok(FileDownload {
        file,
        range: range.clone(),
        body: Audited {
            inner: stream,
            sent: 0,
            expected: Some(range.end - range.start),
            done: Some(Finish {
                app: app.clone(),
                collection,
                transfer: t.id,
                actor: format!("collection-token:{token}:{}", recipient.name),
            }),
        },
    })
}

/// The whole package as one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zip,
    Tar,
}

/// The package's files and record as a zip or tar stream, built while it is sent (never
/// written to disk). Files are stored uncompressed in the zip: outputs are small or already
/// compressed, and the digests in `manifest-sha256.txt` are of the bytes as stored.
pub async fn whole(
    app: &std::sync::Arc<App>,
    who: &Principal,
    client: IpAddr,
    format: Format,
) -> Result<Audited<futures::stream::BoxStream<'static, std::io::Result<Bytes>>>> {
    let (token, recipient, t, ws) = collecting(app, who).await?;
    let files = output_files(app, &t).await?;
    let dest = package_prefix(&ws, &t);
    let what = match format {
        Format::Zip => "package.zip",
        Format::Tar => "package.tar",
    };
    let collection = start(app, token, &recipient, &t, client, what, true).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let handle = tokio::runtime::Handle::current();
    let app2 = app.clone();
    let mut names: Vec<(String, u64)> = files.iter().map(|f| (f.path.clone(), f.size)).collect();
    for r in super::egress::RECORD_FILES {
        names.push((r.to_owned(), 0));
    }
    tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = write_package(&app2, &handle, &dest, &names, format, sink);
        if let Err(e) = r {
            tracing::warn!(error = %e, "package stream ended early");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = tokio_stream_from(rx).boxed();
    Ok(Audited {
        inner: stream,
        sent: 0,
        expected: None,
        done: Some(Finish {
            app: app.clone(),
            collection,
            transfer: t.id,
            actor: format!("collection-token:{token}:{}", recipient.name),
        }),
    })
}

/// The chunks a [`ChannelWriter`] sends, as a response body.
pub(crate) fn receiver_stream(
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
    tokio_stream_from(rx).boxed()
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl Stream<Item = std::io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

const CHUNK: usize = 256 * 1024;

/// A blocking `Write` that sends what is written down a bounded channel in chunks: the
/// package (or a bag, `integrity::bag::tar_stream`) is built at the pace the client reads it.
pub(crate) struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

fn write_package(
    app: &App,
    handle: &tokio::runtime::Handle,
    dest: &object_store::path::Path,
    files: &[(String, u64)],
    format: Format,
    sink: ChannelWriter,
) -> std::io::Result<()> {
    let open = |path: &str| -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let rel = RelPath::parse(path).map_err(std::io::Error::other)?;
        let stream = handle
            .block_on(app.volumes.read_published(dest, &rel))
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(stream);
        Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
            reader,
            handle.clone(),
        )))
    };
    match format {
        Format::Zip => {
            let mut z = zip::ZipWriter::new_stream(sink);
            for (path, size) in files {
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .large_file(*size >= u32::MAX as u64)
                    .unix_permissions(0o444);
                z.start_file(path.as_str(), opts)
                    .map_err(std::io::Error::other)?;
                std::io::copy(&mut open(path)?, &mut z)?;
            }
            let mut inner = z.finish().map_err(std::io::Error::other)?;
            std::io::Write::flush(&mut inner)?;
        }
        Format::Tar => {
            let mut b = tar::Builder::new(sink);
            for (path, size) in files {
                let mut h = tar::Header::new_gnu();
                let len = if *size == 0 {
                    // The record files' sizes are read from the volume.
                    let rel = RelPath::parse(path).map_err(std::io::Error::other)?;
                    handle
                        .block_on(app.volumes.published_len(dest, &rel))
                        .map_err(std::io::Error::other)?
                } else {
                    *size
                };
                h.set_size(len);
                h.set_mode(0o444);
                h.set_mtime(0);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, open(path)?)?;
            }
            let mut inner = b.into_inner()?;
            std::io::Write::flush(&mut inner)?;
        }
    }
    Ok(())
}
