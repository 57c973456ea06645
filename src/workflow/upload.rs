//! Receiving bytes: a plain streaming PUT of one file, and the create / append / terminate
//! steps the tus handlers call. Bytes go to the quarantine volume while both digests are
//! computed on the way, in bounded memory.
//!
//! Every piece is recorded in the same transaction that re-checks the transfer is open and the
//! token unrevoked, so nothing is acknowledged after either is gone. A PATCH that follows a
//! small piece rewrites that piece longer instead of adding one ([`MERGE_BELOW`]), so tiny
//! chunks cannot multiply stored pieces and rows.

use super::access::Principal;
use super::budget::Claim;
use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::*;
use crate::hashing::{ChunkChecksum, HashState, StreamHasher};
use crate::store::{now, FileConflict, FileRow, Transfer, Workspace};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Running state of the uploads in progress on this replica.
#[derive(Default)]
pub struct UploadLocks {
    inner: Mutex<HashMap<FileId, Arc<tokio::sync::Mutex<Option<HashState>>>>>,
}

impl UploadLocks {
    pub(super) fn slot(&self, id: FileId) -> Arc<tokio::sync::Mutex<Option<HashState>>> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id).or_default().clone()
    }

    pub(super) fn forget(&self, id: FileId) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&id);
    }
}

/// A stored file as its uploader may see it: sizes and digests, never content.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FileReceipt {
    /// The file's `/`-separated path inside the transfer.
    pub path: String,
    /// Bytes received so far.
    pub size: u64,
    pub complete: bool,
    /// Set once complete.
    pub sha256: Option<String>,
    /// Set once complete.
    pub blake3: Option<String>,
    /// The digest the uploader sent with the file, if any.
    pub expected_sha256: Option<String>,
    /// `false` when the digest sent with the upload does not match: the transfer will be
    /// blocked at seal unless the file is deleted and sent again. `null` until both digests
    /// are known.
    pub expected_sha256_matches: Option<bool>,
    /// An egress request's file: `output`, `supporting` or `code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl From<&FileRow> for FileReceipt {
    fn from(f: &FileRow) -> Self {
        Self {
            path: f.path.clone(),
            size: f.received,
            complete: f.complete,
            sha256: f.sha256.clone(),
            blake3: f.blake3.clone(),
            expected_sha256: f.expected_sha256.clone(),
            expected_sha256_matches: match (&f.expected_sha256, &f.sha256) {
                (Some(e), Some(s)) => Some(e == s),
                _ => None,
            },
            role: None,
        }
    }
}

/// How much of the body to gather (as the frames that arrived) before handing it on: large
/// enough that per-message costs vanish, small enough to keep memory flat.
const BUFFER: usize = 1 << 20;

/// A PATCH that follows a stored piece smaller than this rewrites that piece with its own
/// bytes appended, instead of adding a piece: every piece but the last is at least this big,
/// so a file has at most `size / MERGE_BELOW + 1` pieces however small its chunks, and no
/// request copies more than this. Common client chunk sizes (1 MiB and up) never copy.
pub const MERGE_BELOW: u64 = 512 << 10;

enum End {
    Complete,
    Interrupted(String),
    TooLong,
    /// The transfer's size budget (or a re-check made with it) refused more bytes.
    Refused(Error),
}

/// Moves `body` into `writer` and `hasher`, stopping after `limit` bytes, and (for a body of
/// unknown length) before the bytes the transfer's budget will not grant.
async fn pump<S, E>(
    mut body: S,
    writer: &mut crate::volumes::SegmentWriter,
    hasher: &mut StreamHasher,
    checksum: &mut Option<ChunkChecksum>,
    limit: u64,
    mut claim: Option<&mut Claim<'_>>,
) -> Result<End>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut seen: u64 = 0;
    let end = loop {
        match body.next().await {
            Some(Ok(frame)) => {
                seen += frame.len() as u64;
                if seen > limit {
                    break End::TooLong;
                }
                if let Some(c) = claim.as_deref_mut() {
                    if let Err(e) = c.cover(seen).await {
                        break End::Refused(e);
                    }
                }
                batched += frame.len();
                batch.push(frame);
                if batched >= BUFFER {
                    flush(&mut batch, writer, hasher, checksum).await?;
                    batched = 0;
                }
            }
            Some(Err(e)) => break End::Interrupted(e.to_string()),
            None => break End::Complete,
        }
    };
    if !matches!(end, End::TooLong | End::Refused(_)) {
        flush(&mut batch, writer, hasher, checksum).await?;
    }
    Ok(end)
}

/// Hands a batch of frames to the hashers and the writer; nothing is copied.
async fn flush(
    batch: &mut Vec<Bytes>,
    writer: &mut crate::volumes::SegmentWriter,
    hasher: &mut StreamHasher,
    checksum: &mut Option<ChunkChecksum>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let frames: crate::hashing::Batch = std::mem::take(batch).into();
    if let Some(mut c) = checksum.take() {
        // The tus chunk checksum is CPU work too: off the async threads.
        let batch = frames.clone();
        let c = tokio::task::spawn_blocking(move || {
            for f in batch.iter() {
                c.update(f);
            }
            c
        })
        .await
        .map_err(|e| Error::Internal(format!("checksum worker failed: {e}")))?;
        *checksum = Some(c);
    }
    hasher.update_many(frames.clone()).await;
    for f in frames.iter() {
        writer.write(f.clone()).await?;
    }
    Ok(())
}

pub(super) fn require_open(t: &Transfer) -> Result<()> {
    if t.state.accepts_uploads() {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "transfer {} is {}: nothing can be added or changed",
            t.id, t.state
        )))
    }
}

/// Re-reads the transfer's state inside a write transaction: it may have been sealed,
/// cancelled or expired while bytes were arriving.
pub(super) async fn still_open(tx: &mut crate::store::Tx<'_>, id: TransferId) -> Result<()> {
    match tx.transfer_state(id).await? {
        Some(s) if s.accepts_uploads() => Ok(()),
        Some(s) => Err(Error::Conflict(format!(
            "transfer {id} is {s}: nothing can be added or changed"
        ))),
        None => Err(Error::NotFound(format!("no transfer {id}"))),
    }
}

/// An upload token is checked when a request starts; a long upload re-checks at commit that
/// it was not revoked meanwhile (replaced, or the transfer sealed or cancelled).
pub(super) async fn token_still_live(tx: &mut crate::store::Tx<'_>, who: &Principal) -> Result<()> {
    if let Principal::Upload { token, .. } = who {
        if let Some(reason) = tx.token_revoked(*token).await? {
            return Err(Error::Unauthenticated(format!(
                "the upload token was revoked during the upload: {reason}"
            )));
        }
    }
    Ok(())
}

/// Size and count limits: the settings', tightened by the workspace's policy.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) file: u64,
    pub(super) files: u64,
    pub(super) total: u64,
}

pub(super) fn limits(app: &App, ws: &Workspace) -> Result<Limits> {
    let p = app.policy(ws)?;
    Ok(Limits {
        file: app
            .settings
            .limits
            .max_file_size
            .min(p.rules.limits.max_file_size),
        files: app.settings.limits.max_files.min(p.rules.limits.max_files),
        total: p.rules.limits.max_transfer_size,
    })
}

/// Reserves a path in the transfer for a new file.
async fn reserve(
    app: &App,
    transfer: &Transfer,
    ws: &Workspace,
    path: &RelPath,
    length: Option<u64>,
    expected: Option<&HexDigest>,
) -> Result<FileRow> {
    let limits = limits(app, ws)?;
    if let Some(len) = length {
        check_size(limits, len)?;
    }
    let row = FileRow {
        id: FileId::new(),
        transfer_id: transfer.id,
        path: path.to_string(),
        length,
        received: 0,
        complete: false,
        sha256: None,
        blake3: None,
        expected_sha256: expected.map(|d| d.to_string()),
        created_at: now(),
        pack: None,
    };
    let mut tx = app.store.begin().await?;
    // Under the write lock, so a seal cannot slip in between this check and the insert.
    still_open(&mut tx, transfer.id).await?;
    let max = limits.files;
    if tx.file_count(transfer.id).await? >= max {
        return Err(Error::TooLarge(format!(
            "a transfer holds at most {max} files"
        )));
    }
    let total = tx.transfer_bytes(transfer.id).await? + length.unwrap_or(0);
    if total > limits.total {
        return Err(Error::TooLarge(format!(
            "a transfer holds at most {} bytes; this file would bring it to {total}",
            limits.total
        )));
    }
    match tx.insert_file(&row, path).await? {
        Ok(()) => {}
        Err(FileConflict::SameName(other)) => {
            return Err(Error::Conflict(format!(
                "`{path}` collides with `{other}`, already in this transfer \
                 (names are compared ignoring case and Unicode width)"
            )))
        }
        Err(FileConflict::FileFolder(other)) => {
            return Err(Error::Conflict(format!(
                "`{path}` collides with `{other}`: one would be a file and a folder at once"
            )))
        }
    }
    tx.commit().await?;
    Ok(row)
}

fn check_size(limits: Limits, len: u64) -> Result<()> {
    let max = limits.file;
    if len > max {
        return Err(Error::TooLarge(format!(
            "file of {len} bytes is over the limit of {max} bytes"
        )));
    }
    Ok(())
}

/// A piece just made durable in the quarantine volume, not yet recorded.
#[derive(Debug, Clone, Copy)]
struct Piece {
    seq: u64,
    /// Bytes of the stored piece that were already recorded (a small piece rewritten with
    /// the new bytes appended), or 0 for a new piece.
    carried: u64,
    /// New bytes in it.
    added: u64,
}

impl Piece {
    /// Records the piece, on the transaction that re-checked the transfer and token.
    async fn record(self, tx: &mut crate::store::Tx<'_>, file: FileId) -> Result<()> {
        if self.carried > 0 {
            tx.grow_segment(file, self.seq, self.added).await?;
        } else {
            tx.add_segment(file, self.seq, self.added).await?;
        }
        Ok(())
    }

    /// Takes back a piece that could not be recorded: the stored piece returns to what the
    /// database says, so a resumed upload finds exactly the acknowledged bytes.
    async fn undo(self, app: &App, transfer: TransferId, file: FileId) {
        let done = if self.carried > 0 {
            app.volumes
                .truncate_segment(transfer, file, self.seq, self.carried)
                .await
        } else {
            app.volumes.delete_segment(transfer, file, self.seq).await
        };
        if let Err(e) = done {
            // Left as it is, the next PATCH repairs it (see `repair_tail`).
            tracing::warn!(%file, seq = self.seq, error = %e, "could not take back an unrecorded piece");
        }
    }
}

/// Records a piece that does not finish the file, after re-checking in the same transaction
/// that the transfer is open and the token live: bytes are never acknowledged after either.
async fn record_piece(
    app: &App,
    who: &Principal,
    file: &FileRow,
    piece: Piece,
    expected: Option<&HexDigest>,
) -> Result<()> {
    let mut tx = app.store.begin().await?;
    still_open(&mut tx, file.transfer_id).await?;
    token_still_live(&mut tx, who).await?;
    piece.record(&mut tx, file.id).await?;
    if let Some(e) = expected {
        tx.set_expected_sha256(file.id, e).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Marks a file complete with its digests and records it. `budget` is the transfer's size
/// limit when the file's length was never declared: its real size is checked against it again.
/// `expected`: the provider's SHA-256 sent with the last bytes (a tus PATCH), recorded with them.
async fn complete(
    app: &App,
    who: &Principal,
    file: &FileRow,
    state: &HashState,
    last_segment: Option<Piece>,
    budget: Option<u64>,
    expected: Option<&HexDigest>,
) -> Result<FileRow> {
    let d = state.finish();
    let mut tx = app.store.begin().await?;
    still_open(&mut tx, file.transfer_id).await?;
    token_still_live(&mut tx, who).await?;
    // The last segment and completion commit together: a crash leaves either an unfinished
    // upload to resume or a complete file, never all the bytes without a digest.
    if let Some(piece) = last_segment {
        piece.record(&mut tx, file.id).await?;
    }
    if let Some(limit) = budget {
        // The grant gives way to the bytes received; the total is checked once more, as a
        // declared length was when the file was reserved.
        tx.drop_claim(file.id).await?;
        let total = tx.transfer_bytes(file.transfer_id).await?;
        if total > limit {
            return Err(Error::TooLarge(format!(
                "a transfer holds at most {limit} bytes; this file brings it to {total}"
            )));
        }
    }
    tx.complete_file(file.id, &d.sha256, &d.blake3).await?;
    if let Some(e) = expected {
        tx.set_expected_sha256(file.id, e).await?;
    }
    tx.audit(
        AuditEvent::new(who.actor(), "file.uploaded")
            .transfer(file.transfer_id)
            .detail(serde_json::json!({
                "path": file.path, "size": d.size, "sha256": d.sha256, "blake3": d.blake3,
            })),
    )
    .await?;
    tx.commit().await?;
    app.metrics.ingested(d.size, &file.created_at);
    app.uploads.forget(file.id);
    app.store
        .file(file.id)
        .await?
        .ok_or_else(|| Error::Internal("file vanished".into()))
}

/// A plain streaming PUT of one whole file: all or nothing.
pub async fn put_file<S, E>(
    app: &App,
    who: &Principal,
    transfer_id: TransferId,
    raw_path: &str,
    expected: Option<HexDigest>,
    declared_len: Option<u64>,
    body: S,
) -> Result<FileReceipt>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    who.upload_for(transfer_id)?;
    let (t, ws) = super::access::load(app, transfer_id).await?;
    let path = RelPath::parse(raw_path)?;
    store_whole(app, who, &t, &ws, &path, expected, declared_len, body).await
}

/// Stores one whole file into an open transfer from `body`, hashing it as it streams: all or
/// nothing. `who` has been checked by the caller (the upload token of a PUT, or the requester
/// whose egress request pins a file from the output volume).
#[allow(clippy::too_many_arguments)]
pub(super) async fn store_whole<S, E>(
    app: &App,
    who: &Principal,
    t: &crate::store::Transfer,
    ws: &crate::store::Workspace,
    path: &RelPath,
    expected: Option<HexDigest>,
    declared_len: Option<u64>,
    body: S,
) -> Result<FileReceipt>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    require_open(t)?;
    let limits = limits(app, ws)?;
    if let Some(len) = declared_len {
        check_size(limits, len)?;
    }
    // Held until the PUT ends, so two uploads cannot both count on the same free space.
    let _room = match declared_len {
        Some(len) => Some(
            app.volumes
                .reserve_room(len, app.settings.storage.min_free)?,
        ),
        None => None,
    };
    let file = reserve(app, t, ws, path, declared_len, expected.as_ref()).await?;
    // Held until the PUT ends, so a DELETE of the same path waits instead of racing it.
    let slot = app.uploads.slot(file.id);
    let _writing = slot.lock().await;
    let mut writer = app.volumes.segment_writer(t.id, file.id, 0).await?;
    let mut hasher = StreamHasher::resume(HashState::new());
    let limit = limits.file;
    // Without a Content-Length nothing was counted at reservation: the body draws on the
    // transfer's budget as it streams.
    let mut claim = declared_len
        .is_none()
        .then(|| Claim::new(app, who, file.id, t.id, limits.total));
    let end = pump(
        body,
        &mut writer,
        &mut hasher,
        &mut None,
        limit,
        claim.as_mut(),
    )
    .await;
    let state = hasher.finish().await?;
    let failure = match end {
        Ok(End::Complete) => match declared_len {
            Some(len) if len != state.size => Some(Error::BadRequest(format!(
                "Content-Length said {len} bytes but {} arrived",
                state.size
            ))),
            _ => None,
        },
        Ok(End::Interrupted(e)) => Some(Error::Interrupted(e)),
        Ok(End::TooLong) => Some(Error::TooLarge(format!(
            "file is over the limit of {limit} bytes"
        ))),
        Ok(End::Refused(e)) | Err(e) => Some(e),
    };
    if let Some(err) = failure {
        writer.abort().await;
        discard(app, &file).await?;
        return Err(err);
    }
    let size = match writer.commit().await {
        Ok(size) => size,
        Err(e) => {
            discard(app, &file).await.ok();
            return Err(e.into());
        }
    };
    let piece = Piece {
        seq: 0,
        carried: 0,
        added: size,
    };
    let budget = declared_len.is_none().then_some(limits.total);
    match complete(app, who, &file, &state, Some(piece), budget, None).await {
        Ok(done) => Ok(FileReceipt::from(&done)),
        Err(e) => {
            discard(app, &file).await.ok();
            Err(e)
        }
    }
}

/// Deletes a file's row and bytes from an open transfer (a failed upload, or an egress
/// request's earlier snapshot when it is submitted again).
pub(super) async fn discard(app: &App, file: &FileRow) -> Result<()> {
    let mut tx = app.store.begin().await?;
    still_open(&mut tx, file.transfer_id).await?;
    let emptied = tx.delete_file(file).await?;
    tx.commit().await?;
    app.volumes.delete_file(file.transfer_id, file.id).await?;
    // A packed member's bytes are erased from the pack its neighbours still need; the last
    // one deleted takes the pack with it.
    match (emptied, file.pack) {
        (Some(pack), _) => app.volumes.delete_file(file.transfer_id, pack).await?,
        (None, Some(p)) => {
            let len = file.length.unwrap_or(file.received);
            app.volumes
                .erase_range(file.transfer_id, p.id, p.offset, len)
                .await?
        }
        (None, None) => {}
    }
    app.uploads.forget(file.id);
    Ok(())
}

/// Deletes a file (complete or not) from an open transfer, so it can be sent again.
pub async fn delete_file(
    app: &App,
    who: &Principal,
    transfer_id: TransferId,
    raw_path: &str,
) -> Result<()> {
    who.upload_for(transfer_id)?;
    let (t, _) = super::access::load(app, transfer_id).await?;
    require_open(&t)?;
    let path = RelPath::parse(raw_path)?;
    let file = app
        .store
        .file_by_path(t.id, path.as_str())
        .await?
        .ok_or_else(|| Error::NotFound(format!("no file `{path}` in this transfer")))?;
    let slot = app.uploads.slot(file.id);
    let _busy = tokio::time::timeout(Duration::from_secs(30), slot.lock())
        .await
        .map_err(|_| Error::Conflict("the file is still being written; retry".into()))?;
    discard(app, &file).await?;
    app.store
        .audit(
            AuditEvent::new(who.actor(), "file.deleted")
                .transfer(t.id)
                .detail(serde_json::json!({ "path": file.path })),
        )
        .await?;
    Ok(())
}

/// What a tus client sent to create an upload.
pub struct NewUpload {
    pub path: String,
    pub length: u64,
    pub expected_sha256: Option<HexDigest>,
}

/// tus creation: reserves the path and returns the file id used in the upload URL.
pub async fn create_upload(
    app: &App,
    who: &Principal,
    transfer_id: TransferId,
    new: NewUpload,
) -> Result<FileRow> {
    who.upload_for(transfer_id)?;
    let (t, ws) = super::access::load(app, transfer_id).await?;
    require_open(&t)?;
    let path = RelPath::parse(&new.path)?;
    // The PATCHes come later: the room is checked now, not held.
    drop(
        app.volumes
            .reserve_room(new.length, app.settings.storage.min_free)?,
    );
    let file = reserve(
        app,
        &t,
        &ws,
        &path,
        Some(new.length),
        new.expected_sha256.as_ref(),
    )
    .await?;
    if new.length == 0 {
        return complete(app, who, &file, &HashState::new(), None, None, None).await;
    }
    Ok(file)
}

/// The file behind a tus upload URL, checked to belong to the caller's transfer.
pub async fn upload_status(
    app: &App,
    who: &Principal,
    transfer_id: TransferId,
    file: FileId,
) -> Result<FileRow> {
    who.upload_for(transfer_id)?;
    let f = app
        .store
        .file(file)
        .await?
        .filter(|f| f.transfer_id == transfer_id)
        .ok_or_else(|| Error::NotFound(format!("no upload {file} in this transfer")))?;
    Ok(f)
}

/// tus PATCH: appends `body` at `offset`. Returns the new offset. Bytes that arrived before an
/// interruption are kept (and hashed) unless the chunk carried a checksum that can no longer
/// be checked.
#[allow(clippy::too_many_arguments)]
pub async fn append<S, E>(
    app: &App,
    who: &Principal,
    transfer_id: TransferId,
    file_id: FileId,
    offset: u64,
    mut checksum: Option<ChunkChecksum>,
    expected: Option<HexDigest>,
    body: S,
) -> Result<FileRow>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let slot = app.uploads.slot(file_id);
    let mut cached = tokio::time::timeout(Duration::from_secs(30), slot.lock())
        .await
        .map_err(|_| {
            Error::Conflict("another request is still writing this upload; retry".into())
        })?;
    // Read the row under the lock: the offset is only ever advanced by a lock holder.
    let file = upload_status(app, who, transfer_id, file_id).await?;
    let (t, _) = super::access::load(app, transfer_id).await?;
    require_open(&t)?;
    if file.complete {
        return Err(Error::Conflict("this upload is already complete".into()));
    }
    if offset != file.received {
        return Err(Error::Conflict(format!(
            "Upload-Offset {offset} does not match the {} bytes stored; ask with HEAD and resume there",
            file.received
        )));
    }
    // The provider's digest may come with the last bytes instead of at creation (a client that
    // hashes while it sends), but a file has one: a second, different one is refused.
    if let (Some(e), Some(had)) = (&expected, &file.expected_sha256) {
        if e.as_str() != had {
            return Err(Error::BadRequest(format!(
                "the expected sha256 {e} differs from the {had} this upload was given before"
            )));
        }
    }
    let length = file
        .length
        .ok_or_else(|| Error::Internal("tus upload without a length".into()))?;
    let sizes = app.store.segments(file.id).await?;
    repair_tail(app, &file, &sizes).await?;
    let start = match cached.take() {
        Some(st) if st.size == file.received => st,
        // A restart (or another replica) lost the running hash: rebuild it from the stored
        // segments. Only a resumed upload pays for this read.
        _ => rehash(app, &file).await?,
    };
    // A small last piece is rewritten with the new bytes appended (the object store replaces
    // it whole when the write completes, so it is the old piece or the new one, never half).
    let (seq, carried) = match sizes.last() {
        Some(&last) if last < MERGE_BELOW => (sizes.len() as u64 - 1, last),
        _ => (sizes.len() as u64, 0),
    };
    let mut writer = app.volumes.segment_writer(t.id, file.id, seq).await?;
    if carried > 0 {
        let mut old = app.volumes.read_file_segment(t.id, file.id, seq);
        while let Some(chunk) = old.next().await {
            writer.write(chunk?).await?;
        }
        let copied = writer.written();
        if copied != carried {
            writer.abort().await;
            return Err(Error::Internal(format!(
                "segment {seq} of {} holds {copied} bytes, the database says {carried}",
                file.path,
            )));
        }
    }
    let mut hasher = StreamHasher::resume(start.clone());
    let end = pump(
        body,
        &mut writer,
        &mut hasher,
        &mut checksum,
        length - offset,
        None,
    )
    .await;
    let state = hasher.finish().await?;
    let keep = match &end {
        Ok(End::Complete) => match checksum.map(ChunkChecksum::matches) {
            Some(false) => {
                writer.abort().await;
                *cached = Some(start);
                return Err(Error::ChecksumMismatch(
                    "Upload-Checksum does not match the bytes received; the chunk was discarded"
                        .into(),
                ));
            }
            _ => true,
        },
        Ok(End::Interrupted(_)) => checksum.is_none(),
        Ok(End::TooLong) | Ok(End::Refused(_)) | Err(_) => false,
    };
    if !keep {
        writer.abort().await;
        *cached = Some(start);
        return Err(match end {
            Ok(End::TooLong) => Error::BadRequest(format!(
                "body runs past Upload-Length ({length} bytes); the chunk was discarded"
            )),
            Ok(End::Interrupted(e)) => Error::Interrupted(e),
            Ok(End::Refused(e)) | Err(e) => e,
            Ok(End::Complete) => Error::Internal("unreachable".into()),
        });
    }
    let added = writer.written() - carried;
    let piece = Piece {
        seq,
        carried,
        added,
    };
    if offset + added == length && !matches!(end, Ok(End::Interrupted(_))) {
        writer.commit().await?;
        return match complete(
            app,
            who,
            &file,
            &state,
            Some(piece),
            None,
            expected.as_ref(),
        )
        .await
        {
            Ok(done) => Ok(done),
            Err(e) => {
                piece.undo(app, t.id, file.id).await;
                *cached = Some(start);
                Err(e)
            }
        };
    }
    if added > 0 {
        writer.commit().await?;
        if let Err(e) = record_piece(app, who, &file, piece, expected.as_ref()).await {
            piece.undo(app, t.id, file.id).await;
            *cached = Some(start);
            return Err(e);
        }
    } else {
        writer.abort().await;
    }
    if let Ok(End::Interrupted(e)) = end {
        *cached = Some(state);
        return Err(Error::Interrupted(e));
    }
    *cached = Some(state);
    app.store
        .file(file.id)
        .await?
        .ok_or_else(|| Error::Internal("file vanished".into()))
}

/// Puts the stored pieces of an unfinished file back in line with the database after a crash
/// (or a failed take-back) between storing a piece and recording it: the last recorded piece
/// is cut back to its recorded size (a small piece rewritten longer), and a piece past the
/// recorded ones is removed. Those bytes were never acknowledged; the client resends them.
async fn repair_tail(app: &App, file: &FileRow, sizes: &[u64]) -> Result<()> {
    let next = sizes.len() as u64;
    app.volumes
        .delete_segment(file.transfer_id, file.id, next)
        .await?;
    if let Some(&want) = sizes.last() {
        let seq = next - 1;
        if let Some(have) = app
            .volumes
            .segment_len(file.transfer_id, file.id, seq)
            .await?
        {
            if have > want {
                tracing::warn!(file = %file.id, seq, have, want, "cutting an unrecorded merge back");
                app.volumes
                    .truncate_segment(file.transfer_id, file.id, seq, want)
                    .await?;
            }
        }
    }
    Ok(())
}

/// A stored file's bytes: a packed archive member's range of its pack, or its segments in
/// order.
pub(crate) async fn stored_bytes(
    app: &App,
    f: &FileRow,
) -> Result<futures::stream::BoxStream<'static, crate::volumes::Result<Bytes>>> {
    if let Some(p) = f.pack {
        let len = f.length.unwrap_or(f.received);
        return Ok(app.volumes.read_packed(f.transfer_id, p.id, p.offset, len));
    }
    let n = app.store.segments(f.id).await?.len();
    Ok(app.volumes.read_file(f.transfer_id, f.id, n))
}

/// Recomputes the running hash over what is stored of a file.
async fn rehash(app: &App, file: &FileRow) -> Result<HashState> {
    let mut stream = stored_bytes(app, file).await?;
    let mut h = StreamHasher::resume(HashState::new());
    while let Some(chunk) = stream.next().await {
        h.update(chunk?).await;
    }
    let st = h.finish().await?;
    if st.size != file.received {
        return Err(Error::Internal(format!(
            "stored segments of {} hold {} bytes, the database says {}",
            file.path, st.size, file.received
        )));
    }
    Ok(st)
}

/// tus termination: drops an unfinished (or finished) upload of an open transfer.
pub async fn terminate(
    app: &App,
    who: &Principal,
    transfer_id: TransferId,
    file_id: FileId,
) -> Result<()> {
    let file = upload_status(app, who, transfer_id, file_id).await?;
    delete_file(app, who, transfer_id, &file.path).await
}
