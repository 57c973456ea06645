//! Tar streams expanded by the server: many small files in one request (issue 11, 3a).
//!
//! `PUT /api/v1/transfers/{id}/archive[?prefix=DIR]` carries a tar stream (ustar, GNU or PAX;
//! with or without a Content-Length). It is expanded **as it arrives**: each regular member is
//! hashed SHA-256 and BLAKE3 on the way and written to quarantine, a small one (up to `SMALL`)
//! into the archive's one pack object after the members before it (`files.pack`, `pack_offset`:
//! creating a file per 4 KiB member would cost more than the rest of the upload), a larger one
//! as segment 0 of a new file (the layout a PUT file has). The naming
//! and type rules are `domain::tarball`'s: a link, a device, a hostile name, a member over the
//! size limit or beyond the transfer's count or byte limit refuses the whole archive with the
//! member named.
//!
//! Over tus (Upload-Metadata `archive dGFy`, optional `prefix`) the archive's own bytes are
//! stored like any tus upload, apart from the transfer's files (`archive_uploads`, never listed
//! or counted; seal refuses while one waits), and resume the same way, across restarts too.
//! It is expanded **as its pieces arrive**: each PATCH, once its piece is stored and recorded,
//! feeds it to the upload's expansion (a task running the same `expand` over a channel,
//! [`Expansion`]) and answers once it is taken in, so a bad member refuses the PATCH that
//! brings it, and a refusal removes the upload and everything expanded. After a restart (or
//! on another replica) the next PATCH starts the expansion again from the stored pieces. The
//! PATCH with the last byte ends the archive and accepts it; that piece is recorded only by
//! the accepting transaction, so a crash in between leaves the upload one piece short: the
//! client's HEAD shows where to resume and the expansion runs again.
//!
//! All or nothing, under a crash too: members are written without rows; their list is spooled
//! to a file in quarantine (so memory does not grow with the member count); once the stream
//! has ended well, one `syncfs` makes every member's bytes durable, then one transaction
//! re-checks the transfer, the token and the limits, inserts the members a few hundred per
//! statement (`Tx::insert_members`, whose indexed checks catch collisions with existing files
//! and with earlier members alike), writes one `archive.uploaded` audit event (counts, bytes, the archive's own
//! digests) and commits. Until that commit nothing of the archive is listed or counted; after a
//! crash before it, the written members are unreferenced bytes (`sweep` removes them at start).
//! The write lock is taken only for that transaction, after every byte has arrived.
//!
//! A refusal removes every member written and is audited once (`archive.refused`, through the
//! token-event summariser, so repeated refusals cost no synced write each).

use super::access::Principal;
use super::refusals::{self, TokenEvent};
use super::upload::{limits, require_open, still_open, token_still_live, FileReceipt, Limits};
use super::{Error, Result};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::domain::tarball::{self, Block, Kind, Pending, TarError, BLOCK};
use crate::domain::*;
use crate::hashing::{ChunkChecksum, Digests, HashState, StreamHasher};
use crate::store::{now, ArchiveUploadRow, FileConflict, MemberRow, PackRef, Transfer};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Members up to this size are gathered whole and written with one put; larger ones stream
/// through a segment writer. Bounds the memory one member can take.
const SMALL: u64 = 256 << 10;
/// Members up to this size are hashed on the async thread that reads them.
const INLINE_HASH: u64 = 64 << 10;
/// Members inserted per statement when an archive is accepted (14 values each, well under
/// SQLite's limit of bound values).
const INSERT_BATCH: usize = 400;
/// How much the archive's frames are batched before being handed to its hashers.
const BATCH: usize = 1 << 20;
/// Bytes accepted after the end-of-archive block (tar pads to 10 KiB records; some writers
/// more). Must all be zero.
const TRAILER_MAX: u64 = 1 << 20;
/// tus archive uploads one transfer may have waiting at once.
const MAX_WAITING: u64 = 16;

/// Where a request came from, for the audit record of a refusal.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client: IpAddr,
    /// Method and path.
    pub route: String,
}

impl From<TarError> for Error {
    fn from(e: TarError) -> Self {
        Error::BadRequest(e.to_string())
    }
}

fn corrupt(msg: impl Into<String>) -> Error {
    TarError::Corrupt(msg.into()).into()
}

// ---- reading the stream ---------------------------------------------------------------------

/// Cuts a byte stream into tar blocks and member data without copying frames, and hashes the
/// archive itself on the way (its digests go into the audit event).
struct Framer<S> {
    body: S,
    cur: Bytes,
    hasher: StreamHasher,
    batch: Vec<Bytes>,
    batched: usize,
}

impl<S, E> Framer<S>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    fn new(body: S) -> Self {
        Self {
            body,
            cur: Bytes::new(),
            hasher: StreamHasher::resume(HashState::new()),
            batch: Vec::new(),
            batched: 0,
        }
    }

    /// Makes `cur` non-empty; false at the end of the stream.
    async fn pull(&mut self) -> Result<bool> {
        while self.cur.is_empty() {
            match self.body.next().await {
                Some(Ok(frame)) => {
                    if frame.is_empty() {
                        continue;
                    }
                    self.batched += frame.len();
                    self.batch.push(frame.clone());
                    self.cur = frame;
                    if self.batched >= BATCH {
                        self.hash_batch().await;
                    }
                }
                Some(Err(e)) => return Err(Error::Interrupted(e.to_string())),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    async fn hash_batch(&mut self) {
        if !self.batch.is_empty() {
            self.hasher
                .update_many(std::mem::take(&mut self.batch).into())
                .await;
            self.batched = 0;
        }
    }

    /// Up to `max` bytes (at least one), or `None` at the end of the stream.
    async fn take(&mut self, max: u64) -> Result<Option<Bytes>> {
        if !self.pull().await? {
            return Ok(None);
        }
        let n = (self.cur.len() as u64).min(max) as usize;
        Ok(Some(self.cur.split_to(n)))
    }

    /// The next block, or `None` if the stream ended exactly before it.
    async fn block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut out = [0u8; BLOCK];
        let mut have = 0usize;
        while have < BLOCK {
            match self.take((BLOCK - have) as u64).await? {
                Some(b) => {
                    out[have..have + b.len()].copy_from_slice(&b);
                    have += b.len();
                }
                None if have == 0 => return Ok(None),
                None => return Err(corrupt("the stream ends inside a header block")),
            }
        }
        Ok(Some(out))
    }

    /// Exactly `n` bytes into memory (small metadata records only).
    async fn exact(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n as usize);
        while (out.len() as u64) < n {
            match self.take(n - out.len() as u64).await? {
                Some(b) => out.extend_from_slice(&b),
                None => return Err(corrupt(format!("the stream ends inside {what}"))),
            }
        }
        Ok(out)
    }

    /// Skips `n` bytes.
    async fn skip(&mut self, mut n: u64, what: &str) -> Result<()> {
        while n > 0 {
            match self.take(n).await? {
                Some(b) => n -= b.len() as u64,
                None => return Err(corrupt(format!("the stream ends inside {what}"))),
            }
        }
        Ok(())
    }

    /// After the end-of-archive block: only zeros may follow, and not too many.
    async fn trailer(&mut self) -> Result<()> {
        let mut seen = 0u64;
        while let Some(b) = self.take(u64::MAX).await? {
            seen += b.len() as u64;
            if seen > TRAILER_MAX || b.iter().any(|&x| x != 0) {
                return Err(corrupt("data follows the end-of-archive block"));
            }
        }
        Ok(())
    }

    /// The archive's own digests, once the stream has ended.
    async fn finish(mut self) -> Result<Digests> {
        self.hash_batch().await;
        Ok(self.hasher.finish().await?.finish())
    }
}

// ---- the member list ------------------------------------------------------------------------

/// One expanded member, as spooled.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SpoolLine {
    id: FileId,
    transfer: TransferId,
    /// The path in the transfer.
    path: String,
    /// The name as the archive wrote it.
    raw: String,
    size: u64,
    sha256: HexDigest,
    blake3: HexDigest,
    expected: Option<HexDigest>,
    /// Where a small member lies in the archive's pack; `None`: its own segment 0.
    #[serde(default)]
    pack: Option<FileId>,
    #[serde(default)]
    offset: u64,
}

/// Spooled before the first byte goes into an archive's pack, so a crash at any point leaves
/// a list that names it (`sweep`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PackLine {
    pack_of: TransferId,
    pack: FileId,
}

/// The pack being written: every small member of the archive, one after another.
struct Pack {
    id: FileId,
    writer: crate::volumes::SegmentWriter,
    members: u64,
}

/// The members written so far: listed in a file, so their count costs no memory, and the
/// member being written (it has bytes but no line yet).
struct Spool {
    path: PathBuf,
    out: Option<tokio::io::BufWriter<tokio::fs::File>>,
    current: Option<FileId>,
    members: u64,
    bytes: u64,
    pack: Option<Pack>,
    /// The finished pack's id, size and number of members, once the stream has ended.
    packed: Option<(FileId, u64, u64)>,
}

impl Spool {
    async fn create(app: &App, id: FileId) -> Result<Spool> {
        let path = app.volumes.archive_spool(id);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::File::create(&path).await?;
        Ok(Spool {
            path,
            out: Some(tokio::io::BufWriter::new(file)),
            current: None,
            members: 0,
            bytes: 0,
            pack: None,
            packed: None,
        })
    }

    async fn write_line(&mut self, line: &impl serde::Serialize) -> Result<()> {
        let mut text =
            serde_json::to_string(line).map_err(|e| Error::Internal(format!("spool: {e}")))?;
        text.push('\n');
        if let Some(out) = self.out.as_mut() {
            out.write_all(text.as_bytes()).await?;
        }
        Ok(())
    }

    async fn push(&mut self, line: &SpoolLine) -> Result<()> {
        self.write_line(line).await?;
        self.members += 1;
        self.bytes += line.size;
        self.current = None;
        Ok(())
    }

    /// Appends a small member's bytes to the pack (opened on the first): its offset there.
    async fn pack(
        &mut self,
        app: &App,
        transfer: TransferId,
        bytes: Bytes,
    ) -> Result<(FileId, u64)> {
        if self.pack.is_none() {
            let id = FileId::new();
            self.write_line(&PackLine {
                pack_of: transfer,
                pack: id,
            })
            .await?;
            // The line is on disk before the pack is (`sweep` finds every pack by its line).
            if let Some(out) = self.out.as_mut() {
                out.flush().await?;
            }
            let writer = app.volumes.segment_writer(transfer, id, 0).await?;
            self.pack = Some(Pack {
                id,
                writer,
                members: 0,
            });
        }
        let pack = self.pack.as_mut().expect("opened above");
        pack.members += 1;
        let at = pack.writer.written();
        pack.writer.write(bytes).await?;
        Ok((pack.id, at))
    }

    /// Completes the pack (unsynced: the archive is synced once, before it is accepted).
    async fn finish_pack(&mut self) -> Result<()> {
        if let Some(p) = self.pack.take() {
            let size = p.writer.finish_unsynced().await?;
            self.packed = Some((p.id, size, p.members));
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush().await?;
        }
        self.finish_pack().await
    }

    /// Every spooled member, in archive order.
    /// (Takes the path, not `&self`: a `Spool` is not `Sync`, its pack writer is not.)
    fn lines(
        &self,
    ) -> impl std::future::Future<
        Output = Result<tokio::io::Lines<tokio::io::BufReader<tokio::fs::File>>>,
    > + Send
           + 'static {
        let path = self.path.clone();
        async move {
            let f = tokio::fs::File::open(&path).await?;
            Ok(tokio::io::BufReader::new(f).lines())
        }
    }

    /// Removes every member written and the list itself.
    async fn discard(mut self, app: &App, transfer: TransferId) {
        if let Some(p) = self.pack.take() {
            p.writer.abort().await;
        }
        let _ = self.close().await;
        if let Some(id) = self.current.take() {
            if let Err(e) = app.volumes.delete_file(transfer, id).await {
                tracing::warn!(file = %id, error = %e, "cannot remove a refused archive member");
            }
        }
        if let Ok(mut lines) = self.lines().await {
            while let Ok(Some(l)) = lines.next_line().await {
                let id = match serde_json::from_str::<SpoolLine>(&l) {
                    Ok(m) if m.pack.is_none() => m.id,
                    Ok(_) => continue,
                    Err(_) => match serde_json::from_str::<PackLine>(&l) {
                        Ok(p) => p.pack,
                        Err(_) => continue,
                    },
                };
                if let Err(e) = app.volumes.delete_file(transfer, id).await {
                    tracing::warn!(file = %id, error = %e, "cannot remove a refused archive member");
                }
            }
        }
        let _ = tokio::fs::remove_file(&self.path).await;
    }

    async fn remove(mut self) {
        let _ = self.close().await;
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

// ---- expansion ------------------------------------------------------------------------------

/// What the members may take, read once when the archive starts: the authoritative checks are
/// repeated in the accepting transaction.
struct Budget {
    limits: Limits,
    files: u64,
    bytes: u64,
}

impl Budget {
    /// The transfer's budget as its totals stand now.
    async fn now(app: &App, t: &Transfer, limits: Limits) -> Result<Budget> {
        let totals = app.store.totals(t.id).await?;
        Ok(Budget {
            limits,
            files: totals.files,
            bytes: totals.reserved,
        })
    }
}

/// Writes one member's `size` bytes, hashing them: a small one into the archive's pack (its
/// place there is returned), a larger one to segment 0 of `id`. No fsync (the archive is
/// synced once, before it is accepted).
async fn write_member<S, E>(
    app: &App,
    transfer: TransferId,
    id: FileId,
    size: u64,
    raw: &str,
    framer: &mut Framer<S>,
    spool: &mut Spool,
) -> Result<(Digests, Option<(FileId, u64)>)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let short = || corrupt(format!("the stream ends inside member `{raw}`"));
    if size <= SMALL {
        let mut buf = BytesMut::with_capacity(size as usize);
        while (buf.len() as u64) < size {
            let b = framer
                .take(size - buf.len() as u64)
                .await?
                .ok_or_else(short)?;
            buf.extend_from_slice(&b);
        }
        let bytes = buf.freeze();
        let digests = if size <= INLINE_HASH {
            // A few microseconds: less than handing it to a blocking worker would cost.
            let mut h = HashState::new();
            h.update(&bytes);
            h.finish()
        } else {
            let data = bytes.clone();
            tokio::task::spawn_blocking(move || {
                let mut h = HashState::new();
                h.update(&data);
                h.finish()
            })
            .await
            .map_err(|e| Error::Internal(format!("hashing worker failed: {e}")))?
        };
        let at = spool.pack(app, transfer, bytes).await?;
        return Ok((digests, Some(at)));
    }
    let mut writer = app.volumes.segment_writer(transfer, id, 0).await?;
    let mut hasher = StreamHasher::resume(HashState::new());
    let mut left = size;
    let streamed: Result<()> = async {
        let mut batch = Vec::new();
        let mut batched = 0usize;
        while left > 0 {
            let b = framer.take(left).await?.ok_or_else(short)?;
            left -= b.len() as u64;
            batched += b.len();
            batch.push(b);
            if batched >= BATCH || left == 0 {
                let frames: crate::hashing::Batch = std::mem::take(&mut batch).into();
                hasher.update_many(frames.clone()).await;
                for f in frames.iter() {
                    writer.write(f.clone()).await?;
                }
                batched = 0;
            }
        }
        Ok(())
    }
    .await;
    let state = hasher.finish().await?;
    if let Err(e) = streamed {
        writer.abort().await;
        return Err(e);
    }
    writer.finish_unsynced().await?;
    Ok((state.finish(), None))
}

/// Reads the whole tar stream, writing each regular member; refuses at the first bad member.
async fn expand<S, E>(
    app: &App,
    transfer: TransferId,
    prefix: Option<&RelPath>,
    budget: &Budget,
    spool: &mut Spool,
    framer: &mut Framer<S>,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut pending: Option<Pending> = None;
    loop {
        let Some(block) = framer.block().await? else {
            return Err(corrupt(
                "the stream ends without tar's end-of-archive block (cut short?)",
            ));
        };
        let header = match tarball::parse_block(&block)? {
            Block::End => {
                if pending.is_some() {
                    return Err(corrupt("the archive ends after a metadata record"));
                }
                return framer.trailer().await;
            }
            Block::Header(h) => h,
        };
        let pad = tarball::padding(header.size);
        match header.kind {
            Kind::PaxLocal | Kind::GnuLongName | Kind::PaxGlobal => {
                if header.size > tarball::MAX_META {
                    return Err(corrupt(format!(
                        "a metadata record of {} bytes (the limit is {})",
                        header.size,
                        tarball::MAX_META
                    )));
                }
                let data = framer.exact(header.size, "a metadata record").await?;
                framer.skip(pad, "a metadata record").await?;
                let p = pending.get_or_insert_with(Pending::default);
                match header.kind {
                    Kind::PaxLocal => p.pax(&data)?,
                    Kind::GnuLongName => p.gnu_long_name(&data),
                    // Global records apply to nothing this server stores.
                    _ => {}
                }
                if header.kind == Kind::PaxGlobal && *p == Pending::default() {
                    pending = None;
                }
                continue;
            }
            _ => {}
        }
        let m = tarball::member(&header, pending.take().unwrap_or_default(), prefix)?;
        let raw = m.raw.clone();
        let Some(path) = m.path.filter(|_| !m.directory) else {
            // A directory only implies its folder; it carries no data worth keeping.
            framer
                .skip(m.size + tarball::padding(m.size), "a directory member")
                .await?;
            continue;
        };
        let max = budget.limits.file;
        if m.size > max {
            return Err(Error::TooLarge(format!(
                "archive member `{raw}` is {} bytes, over the limit of {max} bytes",
                m.size
            )));
        }
        let files = budget.files + spool.members + 1;
        if files > budget.limits.files {
            return Err(Error::TooLarge(format!(
                "archive member `{raw}` would be file {files} of the transfer; a transfer holds at most {} files",
                budget.limits.files
            )));
        }
        let total = budget.bytes + spool.bytes + m.size;
        if total > budget.limits.total {
            return Err(Error::TooLarge(format!(
                "archive member `{raw}` would bring the transfer to {total} bytes; a transfer holds at most {}",
                budget.limits.total
            )));
        }
        // The room is checked, not held: the accepting transaction is what counts the bytes.
        drop(
            app.volumes
                .reserve_room(m.size, app.settings.storage.min_free)?,
        );
        let id = FileId::new();
        spool.current = Some(id);
        let (d, packed) = write_member(app, transfer, id, m.size, &raw, framer, spool).await?;
        framer
            .skip(tarball::padding(m.size), &format!("member `{raw}`"))
            .await?;
        spool
            .push(&SpoolLine {
                id,
                transfer,
                path: path.to_string(),
                raw,
                size: d.size,
                sha256: d.sha256,
                blake3: d.blake3,
                expected: m.expected_sha256,
                pack: packed.map(|p| p.0),
                offset: packed.map_or(0, |p| p.1),
            })
            .await?;
    }
}

/// What an accepted archive answers: every member's receipt, in member order, as the JSON
/// document `{"files": [receipt...]}`, written as the members are inserted. Kept as text, not
/// as receipts: a 4,000-member batch's receipts and their serialization held twice as much.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Members accepted.
    pub files: u64,
    /// `{"files": [...]}`.
    pub json: Bytes,
}

/// Inserts every spooled member, with the archive's one audit event, in one transaction.
#[allow(clippy::too_many_arguments)]
async fn accept(
    app: &App,
    who: &Principal,
    t: &Transfer,
    limits: Limits,
    spool: &mut Spool,
    archive: &Digests,
    prefix: Option<&RelPath>,
    upload: Option<FileId>,
    started_at: &str,
) -> Result<Accepted> {
    // Data before rows: every member's bytes are on disk before anything names them.
    app.volumes.sync_quarantine().await?;
    let mut tx = app.store.begin().await?;
    still_open(&mut tx, t.id).await?;
    token_still_live(&mut tx, who).await?;
    let totals = tx.totals(t.id).await?;
    if totals.files + spool.members > limits.files {
        return Err(Error::TooLarge(format!(
            "the archive's {} files would bring the transfer to {}; a transfer holds at most {} files",
            spool.members,
            totals.files + spool.members,
            limits.files
        )));
    }
    let total = tx.transfer_bytes(t.id).await? + spool.bytes;
    if total > limits.total {
        return Err(Error::TooLarge(format!(
            "the archive's {} bytes would bring the transfer to {total}; a transfer holds at most {}",
            spool.bytes, limits.total
        )));
    }
    let mut json = Vec::with_capacity(64 + spool.members as usize * 360);
    json.extend_from_slice(b"{\"files\":[");
    let mut files = 0u64;
    let mut lines = spool.lines().await?;
    let mut batch: Vec<(SpoolLine, MemberRow)> = Vec::with_capacity(INSERT_BATCH);
    loop {
        let line = lines.next_line().await?;
        if let Some(l) = &line {
            let Ok(m) = serde_json::from_str::<SpoolLine>(l) else {
                // The pack's own line.
                continue;
            };
            let row = MemberRow {
                id: m.id,
                path: RelPath::parse(&m.path)?,
                size: m.size,
                sha256: m.sha256.to_string(),
                blake3: m.blake3.to_string(),
                expected_sha256: m.expected.as_ref().map(|d| d.to_string()),
                pack: m.pack.map(|id| PackRef {
                    id,
                    offset: m.offset,
                }),
            };
            batch.push((m, row));
            if batch.len() < INSERT_BATCH {
                continue;
            }
        }
        let rows: Vec<MemberRow> = batch.iter().map(|(_, r)| r.clone()).collect();
        if let Err((i, conflict)) = tx.insert_members(t.id, &rows).await? {
            let (m, row) = &batch[i];
            let path = &row.path;
            return Err(Error::Conflict(match conflict {
                FileConflict::SameName(other) => format!(
                    "archive member `{}`: `{path}` collides with `{other}`, already in this \
                     transfer or earlier in this archive (names are compared ignoring case and \
                     Unicode width)",
                    m.raw
                ),
                FileConflict::FileFolder(other) => format!(
                    "archive member `{}`: `{path}` collides with `{other}`: one would be a file \
                     and a folder at once",
                    m.raw
                ),
            }));
        }
        for (m, _) in batch.drain(..) {
            if files > 0 {
                json.push(b',');
            }
            files += 1;
            serde_json::to_writer(
                &mut json,
                &FileReceipt {
                    path: m.path,
                    size: m.size,
                    complete: true,
                    expected_sha256_matches: m.expected.as_ref().map(|e| *e == m.sha256),
                    expected_sha256: m.expected.map(|d| d.to_string()),
                    sha256: Some(m.sha256.to_string()),
                    blake3: Some(m.blake3.to_string()),
                    role: None,
                },
            )
            .map_err(|e| Error::Internal(format!("archive answer: {e}")))?;
        }
        if line.is_none() {
            break;
        }
    }
    if let Some((pack, size, members)) = spool.packed {
        tx.insert_pack(pack, t.id, size, members).await?;
    }
    if let Some(id) = upload {
        tx.delete_archive_upload(id).await?;
    }
    tx.audit(
        AuditEvent::new(who.actor(), "archive.uploaded")
            .transfer(t.id)
            .detail(serde_json::json!({
                "via": if upload.is_some() { "tus" } else { "put" },
                "prefix": prefix.map(|p| p.to_string()),
                "files": spool.members,
                "bytes": spool.bytes,
                "size": archive.size,
                "sha256": archive.sha256,
                "blake3": archive.blake3,
            })),
    )
    .await?;
    tx.commit().await?;
    app.metrics
        .ingested_archive(spool.members, spool.bytes, started_at);
    json.extend_from_slice(b"]}");
    Ok(Accepted {
        files,
        json: Bytes::from(json),
    })
}

/// Expands the whole of `framer`'s stream into `spool`, then closes it: the archive's own
/// digests once every member is written (unsynced), ready for `accept`. On an error the spool
/// is left for the caller to discard.
async fn expand_all<S, E>(
    app: &App,
    transfer: TransferId,
    prefix: Option<&RelPath>,
    budget: &Budget,
    spool: &mut Spool,
    mut framer: Framer<S>,
) -> Result<Digests>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let expanded = expand(app, transfer, prefix, budget, spool, &mut framer).await;
    let digests = framer.finish().await;
    match (expanded, digests) {
        (Ok(()), Ok(d)) => spool.close().await.map(|()| d),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// `accept`, then the spool goes: only its list once the archive is accepted, everything it
/// wrote if not.
#[allow(clippy::too_many_arguments)]
async fn accept_or_discard(
    app: &App,
    who: &Principal,
    t: &Transfer,
    limits: Limits,
    mut spool: Spool,
    archive: &Digests,
    prefix: Option<&RelPath>,
    upload: Option<FileId>,
    started_at: &str,
) -> Result<Accepted> {
    let done = accept(
        app, who, t, limits, &mut spool, archive, prefix, upload, started_at,
    )
    .await;
    match done {
        Ok(accepted) => {
            spool.remove().await;
            Ok(accepted)
        }
        Err(e) => {
            spool.discard(app, t.id).await;
            Err(e)
        }
    }
}

/// Expands `body` into the transfer and accepts it whole, or removes everything it wrote.
#[allow(clippy::too_many_arguments)]
async fn expand_and_accept<S, E>(
    app: &App,
    who: &Principal,
    t: &Transfer,
    limits: Limits,
    prefix: Option<&RelPath>,
    upload: Option<FileId>,
    started_at: &str,
    body: S,
) -> Result<Accepted>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let budget = Budget::now(app, t, limits).await?;
    let mut spool = Spool::create(app, upload.unwrap_or_default()).await?;
    match expand_all(app, t.id, prefix, &budget, &mut spool, Framer::new(body)).await {
        Ok(d) => {
            accept_or_discard(app, who, t, limits, spool, &d, prefix, upload, started_at).await
        }
        Err(e) => {
            spool.discard(app, t.id).await;
            Err(e)
        }
    }
}

/// Whether `e` is our own failure (the upload stays, to be resumed), not the archive's
/// refusal (which removes the upload: the same bytes would meet it again).
fn ours(e: &Error) -> bool {
    matches!(
        e,
        Error::Internal(_) | Error::InsufficientStorage(_) | Error::Unavailable(_)
    )
}

/// Audits a refused archive once (through the token-event summariser).
async fn refused(app: &App, who: &Principal, origin: &Origin, transfer: TransferId, e: &Error) {
    if let Principal::Upload { token, .. } = who {
        let (token, transfer) = (token.to_string(), transfer.to_string());
        let route = refusals::cap_route(&origin.route);
        let reason = e.to_string();
        let reason = refusals::cap_route(&reason);
        refusals::refused(
            app,
            TokenEvent {
                action: "archive.refused",
                token: &token,
                transfer: &transfer,
                client: origin.client,
                route: route.as_ref(),
                reason: Some(reason.as_ref()),
            },
        )
        .await;
    }
}

/// `PUT /archive`: a tar stream expanded into the transfer as it arrives, all or nothing.
/// The receipts come in member order.
pub async fn put_archive<S, E>(
    app: &App,
    who: &Principal,
    origin: &Origin,
    transfer_id: TransferId,
    prefix: Option<&str>,
    declared_len: Option<u64>,
    body: S,
) -> Result<Accepted>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    who.upload_for(transfer_id)?;
    let (t, ws) = super::access::load(app, transfer_id).await?;
    require_open(&t)?;
    let done = async {
        let prefix = prefix.map(RelPath::parse).transpose()?;
        let limits = limits(app, &ws)?;
        // Held until the archive is in, so two uploads cannot count on the same free space.
        let _room = match declared_len {
            Some(len) => Some(
                app.volumes
                    .reserve_room(len, app.settings.storage.min_free)?,
            ),
            None => None,
        };
        let started_at = now();
        expand_and_accept(
            app,
            who,
            &t,
            limits,
            prefix.as_ref(),
            None,
            &started_at,
            body,
        )
        .await
    }
    .await;
    if let Err(e) = &done {
        refused(app, who, origin, t.id, e).await;
    }
    done
}

// ---- over tus -------------------------------------------------------------------------------

/// tus creation of an archive upload: checks the prefix and the room now, stores nothing yet.
pub async fn create_upload(
    app: &App,
    who: &Principal,
    transfer_id: TransferId,
    length: u64,
    prefix: Option<String>,
) -> Result<ArchiveUploadRow> {
    who.upload_for(transfer_id)?;
    let (t, ws) = super::access::load(app, transfer_id).await?;
    require_open(&t)?;
    if let Some(p) = &prefix {
        RelPath::parse(p)?;
    }
    if length < (2 * BLOCK) as u64 {
        return Err(Error::BadRequest(format!(
            "Upload-Length {length} is too short for a tar archive (at least {} bytes)",
            2 * BLOCK
        )));
    }
    let limits = limits(app, &ws)?;
    // Members' bytes plus at most two blocks of header and padding each, and the trailer.
    let most = limits
        .total
        .saturating_add(limits.files.saturating_mul(3 * BLOCK as u64))
        .saturating_add(TRAILER_MAX);
    if length > most {
        return Err(Error::TooLarge(format!(
            "an archive of {length} bytes cannot fit this transfer's limit of {} bytes",
            limits.total
        )));
    }
    drop(
        app.volumes
            .reserve_room(length, app.settings.storage.min_free)?,
    );
    let row = ArchiveUploadRow {
        id: FileId::new(),
        transfer_id,
        prefix,
        length,
        received: 0,
        created_at: now(),
    };
    let mut tx = app.store.begin().await?;
    still_open(&mut tx, transfer_id).await?;
    token_still_live(&mut tx, who).await?;
    let waiting = tx.archive_uploads_waiting(transfer_id).await?;
    if waiting >= MAX_WAITING {
        return Err(Error::TooLarge(format!(
            "{waiting} archive uploads are already waiting in this transfer; finish or delete one first"
        )));
    }
    tx.insert_archive_upload(&row).await?;
    tx.commit().await?;
    Ok(row)
}

/// The archive upload behind a tus URL, if it is one of the caller's transfer.
pub async fn upload_status(
    app: &App,
    who: &Principal,
    transfer_id: TransferId,
    id: FileId,
) -> Result<Option<ArchiveUploadRow>> {
    who.upload_for(transfer_id)?;
    Ok(app
        .store
        .archive_upload(id)
        .await?
        .filter(|a| a.transfer_id == transfer_id))
}

/// What one PATCH of an archive upload ended with.
pub enum Appended {
    /// More bytes are expected; the upload as it now stands.
    Stored(ArchiveUploadRow),
    /// The last bytes arrived and the archive was accepted: its length and its members'
    /// receipts.
    Accepted { length: u64, accepted: Accepted },
}

/// Puts the stored pieces back in line with the recorded ones after a crash (or an expansion
/// that did not finish): a piece past them goes, a merged last piece is cut back.
async fn repair_tail(app: &App, a: &ArchiveUploadRow, sizes: &[u64]) -> Result<()> {
    let next = sizes.len() as u64;
    app.volumes
        .delete_archive_segment(a.transfer_id, a.id, next)
        .await?;
    if let Some(&want) = sizes.last() {
        let seq = next - 1;
        if let Some(have) = app
            .volumes
            .archive_segment_len(a.transfer_id, a.id, seq)
            .await?
        {
            if have > want {
                app.volumes
                    .truncate_archive_segment(a.transfer_id, a.id, seq, want)
                    .await?;
            }
        }
    }
    Ok(())
}

/// tus PATCH of an archive upload: appends `body` at `offset`; the PATCH that brings the last
/// byte expands and accepts the archive (or refuses it, removing the upload).
#[allow(clippy::too_many_arguments)]
pub async fn append<S, E>(
    app: &App,
    who: &Principal,
    origin: &Origin,
    transfer_id: TransferId,
    id: FileId,
    offset: u64,
    mut checksum: Option<ChunkChecksum>,
    mut body: S,
) -> Result<Appended>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let slot = app.uploads.slot(id);
    let _busy = tokio::time::timeout(Duration::from_secs(30), slot.lock())
        .await
        .map_err(|_| {
            Error::Conflict("another request is still writing this upload; retry".into())
        })?;
    let a = upload_status(app, who, transfer_id, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no upload {id} in this transfer")))?;
    let (t, ws) = super::access::load(app, transfer_id).await?;
    require_open(&t)?;
    if offset != a.received {
        return Err(Error::Conflict(format!(
            "Upload-Offset {offset} does not match the {} bytes stored; ask with HEAD and resume there",
            a.received
        )));
    }
    let sizes = app.store.archive_segments(id).await?;
    repair_tail(app, &a, &sizes).await?;
    let (seq, carried) = match sizes.last() {
        Some(&last) if last < super::upload::MERGE_BELOW => (sizes.len() as u64 - 1, last),
        _ => (sizes.len() as u64, 0),
    };
    let mut writer = app.volumes.archive_writer(t.id, id, seq).await?;
    if carried > 0 {
        let mut old = app.volumes.read_archive(t.id, id, seq..seq + 1);
        while let Some(chunk) = old.next().await {
            writer.write(chunk?).await?;
        }
        if writer.written() != carried {
            writer.abort().await;
            return Err(Error::Internal(format!(
                "segment {seq} of archive upload {id} holds another size than recorded"
            )));
        }
    }
    let limit = a.length - offset;
    let mut seen = 0u64;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut interrupted = None;
    loop {
        let frame = match body.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                interrupted = Some(e.to_string());
                break;
            }
            None => break,
        };
        seen += frame.len() as u64;
        if seen > limit {
            writer.abort().await;
            return Err(Error::BadRequest(format!(
                "body runs past Upload-Length ({} bytes); the chunk was discarded",
                a.length
            )));
        }
        batched += frame.len();
        batch.push(frame);
        if batched >= BATCH {
            checksum = feed(&mut writer, checksum, std::mem::take(&mut batch)).await?;
            batched = 0;
        }
    }
    checksum = feed(&mut writer, checksum, batch).await?;
    if let Some(c) = checksum {
        if interrupted.is_some() || !c.matches() {
            writer.abort().await;
            return Err(match interrupted {
                Some(e) => Error::Interrupted(e),
                None => Error::ChecksumMismatch(
                    "Upload-Checksum does not match the bytes received; the chunk was discarded"
                        .into(),
                ),
            });
        }
    }
    let added = writer.written() - carried;
    if added == 0 {
        writer.abort().await;
        return match interrupted {
            Some(e) => Err(Error::Interrupted(e)),
            None => Ok(Appended::Stored(a)),
        };
    }
    writer.commit().await?;
    // The segments as they stand with this piece.
    let mut stored = sizes.clone();
    if carried > 0 {
        if let Some(last) = stored.last_mut() {
            *last = carried + added;
        }
    } else {
        stored.push(added);
    }
    let limits = limits(app, &ws)?;
    if offset + added == a.length && interrupted.is_none() {
        // The last piece is recorded by the transaction that accepts the archive, or never:
        // after a crash in between, the upload resumes one piece short and expands again.
        let prefix = a.prefix.as_deref().map(RelPath::parse).transpose()?;
        let done = finish_expansion(app, who, &t, limits, prefix.as_ref(), &a, &stored).await;
        return match done {
            Ok(accepted) => {
                app.volumes.delete_archive(t.id, id).await.ok();
                app.uploads.forget(id);
                Ok(Appended::Accepted {
                    length: a.length,
                    accepted,
                })
            }
            Err(e) => {
                refused(app, who, origin, t.id, &e).await;
                // A refusal removes the upload too; so does anything the same bytes would
                // meet again. Only our own failures leave it to be resumed.
                if !ours(&e) {
                    drop_upload(app, &a).await?;
                } else {
                    undo_piece(app, &a, seq, carried).await;
                }
                Err(e)
            }
        };
    }
    let mut tx = app.store.begin().await?;
    let recorded = async {
        still_open(&mut tx, t.id).await?;
        token_still_live(&mut tx, who).await?;
        tx.record_archive_piece(id, seq, carried, added).await?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = recorded {
        drop(tx);
        undo_piece(app, &a, seq, carried).await;
        return Err(e);
    }
    tx.commit().await?;
    // Expanded as it arrives: the piece, stored and recorded, goes on to the expansion; a bad
    // member in it refuses the archive now, not when the last byte comes.
    let prefix = a.prefix.as_deref().map(RelPath::parse).transpose()?;
    if let Err(e) = advance(app, &t, limits, prefix.as_ref(), &a, &stored).await {
        refused(app, who, origin, t.id, &e).await;
        if !ours(&e) {
            drop_upload(app, &a).await?;
        }
        return Err(e);
    }
    if let Some(e) = interrupted {
        return Err(Error::Interrupted(e));
    }
    let now = app
        .store
        .archive_upload(id)
        .await?
        .ok_or_else(|| Error::Internal("archive upload vanished".into()))?;
    Ok(Appended::Stored(now))
}

// ---- a tus archive expanded as its pieces arrive -------------------------------------------

/// What an expansion is fed: a stored piece's bytes, a mark answered once every byte before
/// it has been taken in (parsed, members written), or the end of the archive.
enum Feed {
    Bytes(Bytes),
    Sync(tokio::sync::oneshot::Sender<()>),
    End,
}

/// How an expansion ended.
enum Outcome {
    /// Every byte expanded: the spooled members (written, not yet synced) and the archive's
    /// own digests. `accept` takes it from here.
    Expanded(Box<(Spool, Digests)>),
    /// The archive is refused (a bad member, a limit) or our side failed; what it wrote is
    /// removed.
    Failed(Error),
    /// Stopped before its end (abandoned, or no piece for `IDLE`); what it wrote is removed.
    Abandoned,
}

/// A tus archive upload being expanded on this replica as its pieces arrive: a task runs
/// `expand` over a channel that each PATCH feeds with its piece once the piece is stored
/// and recorded (never a piece that may still be taken back).
pub struct Expansion {
    feed: tokio::sync::mpsc::Sender<Feed>,
    /// Bytes of the upload fed so far.
    fed: u64,
    task: tokio::task::JoinHandle<Outcome>,
}

impl Expansion {
    /// Stops it and waits until what it wrote is removed.
    async fn abandon(self) {
        drop(self.feed);
        let _ = self.task.await;
    }
}

/// The expansions running on this replica, by upload; each is taken and put back under its
/// upload's lock. After a restart (or on another replica) there is none: the next PATCH
/// starts one from the stored pieces.
#[derive(Default)]
pub struct Expansions(std::sync::Mutex<std::collections::HashMap<FileId, Expansion>>);

impl Expansions {
    fn take(&self, id: FileId) -> Option<Expansion> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&id)
    }

    fn put(&self, id: FileId, e: Expansion) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, e);
    }
}

/// How long an expansion waits for the next piece before it stops and removes what it wrote
/// (the upload stays; its next PATCH starts the expansion again from the stored pieces).
const IDLE: Duration = Duration::from_secs(3600);
/// Frames on their way to an expansion: the PATCH waits when it is this far ahead.
const FEED_FRAMES: usize = 16;

/// Starts expanding upload `a` of transfer `t` from its first byte.
fn start_expansion(
    app: &App,
    t: &Transfer,
    prefix: Option<&RelPath>,
    budget: Budget,
) -> Result<Expansion> {
    let app = app
        .handle()
        .ok_or_else(|| Error::Internal("the service is stopping".into()))?;
    let (feed, rx) = tokio::sync::mpsc::channel::<Feed>(FEED_FRAMES);
    let abandoned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = abandoned.clone();
    let body = futures::stream::unfold(Some(rx), move |rx| {
        let flag = flag.clone();
        async move {
            let mut rx = rx?;
            loop {
                return match tokio::time::timeout(IDLE, rx.recv()).await {
                    Ok(Some(Feed::Bytes(b))) => Some((Ok::<Bytes, String>(b), Some(rx))),
                    // Asked for more: everything before the mark has been taken in.
                    Ok(Some(Feed::Sync(ack))) => {
                        let _ = ack.send(());
                        continue;
                    }
                    Ok(Some(Feed::End)) => None,
                    // Abandoned, or idle too long: the stream fails, and the task cleans up.
                    Ok(None) | Err(_) => {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        Some((Err("the upload's expansion was stopped".to_owned()), None))
                    }
                };
            }
        }
    });
    let (tid, prefix) = (t.id, prefix.cloned());
    let task = tokio::spawn(async move {
        // A spool of its own (not named by the upload): one abandoned here and one started
        // elsewhere never share a list.
        let mut spool = match Spool::create(&app, FileId::new()).await {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(e),
        };
        let framer = Framer::new(Box::pin(body));
        let expanded = expand_all(&app, tid, prefix.as_ref(), &budget, &mut spool, framer).await;
        if abandoned.load(std::sync::atomic::Ordering::SeqCst) {
            spool.discard(&app, tid).await;
            return Outcome::Abandoned;
        }
        match expanded {
            Ok(d) => Outcome::Expanded(Box::new((spool, d))),
            Err(e) => {
                spool.discard(&app, tid).await;
                Outcome::Failed(e)
            }
        }
    });
    Ok(Expansion { feed, fed: 0, task })
}

/// The upload's expansion as far as the bytes recorded before this PATCH (`a.received`): the
/// running one if it has fed exactly those, else a new one (after a restart, or when
/// something went wrong) that starts from the first byte.
async fn expansion_at(
    app: &App,
    t: &Transfer,
    limits: Limits,
    prefix: Option<&RelPath>,
    a: &ArchiveUploadRow,
) -> Result<Expansion> {
    match app.expansions.take(a.id) {
        Some(ex) if ex.fed == a.received && !ex.task.is_finished() => Ok(ex),
        other => {
            if let Some(ex) = other {
                ex.abandon().await;
            }
            let budget = Budget::now(app, t, limits).await?;
            start_expansion(app, t, prefix, budget)
        }
    }
}

/// Feeds the stored bytes from where the expansion stands up to `to` (`stored`: the sizes
/// of the upload's pieces). False when the expansion stopped taking them (it has ended).
async fn feed_stored(
    app: &App,
    t: &Transfer,
    a: &ArchiveUploadRow,
    stored: &[u64],
    ex: &mut Expansion,
    to: u64,
) -> Result<bool> {
    let mut start = 0u64;
    for (seq, &len) in stored.iter().enumerate() {
        let end = start + len;
        if end <= ex.fed {
            start = end;
            continue;
        }
        if start >= to {
            break;
        }
        let mut skip = ex.fed - start;
        let seq = seq as u64;
        let mut piece = app.volumes.read_archive(t.id, a.id, seq..seq + 1);
        while let Some(chunk) = piece.next().await {
            let mut chunk = chunk?;
            if skip >= chunk.len() as u64 {
                skip -= chunk.len() as u64;
                continue;
            }
            let chunk = chunk.split_off(skip as usize);
            skip = 0;
            let room = (to - ex.fed).min(chunk.len() as u64) as usize;
            if room == 0 {
                break;
            }
            if ex
                .feed
                .send(Feed::Bytes(chunk.slice(..room)))
                .await
                .is_err()
            {
                return Ok(false);
            }
            ex.fed += room as u64;
        }
        start = end;
    }
    Ok(true)
}

/// After a piece that does not finish the upload is recorded: feeds it to the expansion and
/// waits until it is taken in. An error is the archive's refusal (a bad member in what has
/// arrived) or our failure; either way the expansion is gone.
async fn advance(
    app: &App,
    t: &Transfer,
    limits: Limits,
    prefix: Option<&RelPath>,
    a: &ArchiveUploadRow,
    stored: &[u64],
) -> Result<()> {
    let mut ex = expansion_at(app, t, limits, prefix, a).await?;
    let to: u64 = stored.iter().sum();
    let fed = match feed_stored(app, t, a, stored, &mut ex, to).await {
        Ok(fed) => fed,
        Err(e) => {
            ex.abandon().await;
            return Err(e);
        }
    };
    // The PATCH answers once its bytes are expanded: a bad member in them refuses it.
    let running = fed && {
        let (ack, taken) = tokio::sync::oneshot::channel();
        ex.feed.send(Feed::Sync(ack)).await.is_ok() && taken.await.is_ok()
    };
    if running {
        app.expansions.put(a.id, ex);
        return Ok(());
    }
    // It ended before the archive did: a refusal, or it was stopped.
    drop(ex.feed);
    match ex.task.await {
        Ok(Outcome::Failed(e)) => Err(e),
        Ok(Outcome::Abandoned) => Ok(()),
        Ok(Outcome::Expanded(done)) => {
            done.0.discard(app, t.id).await;
            Err(corrupt("the archive ended before the upload's last byte"))
        }
        Err(e) => Err(Error::Internal(format!("archive expansion failed: {e}"))),
    }
}

/// With the last piece stored: feeds the rest, ends the archive, and accepts what was
/// expanded (all or nothing, as a PUT archive is).
async fn finish_expansion(
    app: &App,
    who: &Principal,
    t: &Transfer,
    limits: Limits,
    prefix: Option<&RelPath>,
    a: &ArchiveUploadRow,
    stored: &[u64],
) -> Result<Accepted> {
    let mut ex = expansion_at(app, t, limits, prefix, a).await?;
    let fed = match feed_stored(app, t, a, stored, &mut ex, a.length).await {
        Ok(fed) => fed,
        Err(e) => {
            ex.abandon().await;
            return Err(e);
        }
    };
    if fed {
        // The end of the stream: the expansion checks the archive's trailer and finishes.
        let _ = ex.feed.send(Feed::End).await;
    }
    drop(ex.feed);
    let outcome = ex
        .task
        .await
        .map_err(|e| Error::Internal(format!("archive expansion failed: {e}")))?;
    let (spool, digests) = match outcome {
        Outcome::Expanded(done) => *done,
        Outcome::Failed(e) => return Err(e),
        Outcome::Abandoned => {
            return Err(Error::Internal(
                "the archive's expansion stopped before its end".into(),
            ))
        }
    };
    accept_or_discard(
        app,
        who,
        t,
        limits,
        spool,
        &digests,
        prefix,
        Some(a.id),
        &a.created_at,
    )
    .await
}

/// Writes a batch of frames, updating the tus chunk checksum off the async threads.
async fn feed(
    writer: &mut crate::volumes::SegmentWriter,
    checksum: Option<ChunkChecksum>,
    batch: Vec<Bytes>,
) -> Result<Option<ChunkChecksum>> {
    if batch.is_empty() {
        return Ok(checksum);
    }
    let frames: crate::hashing::Batch = batch.into();
    let checksum = match checksum {
        Some(mut c) => {
            let frames = frames.clone();
            Some(
                tokio::task::spawn_blocking(move || {
                    for f in frames.iter() {
                        c.update(f);
                    }
                    c
                })
                .await
                .map_err(|e| Error::Internal(format!("checksum worker failed: {e}")))?,
            )
        }
        None => None,
    };
    for f in frames.iter() {
        writer.write(f.clone()).await?;
    }
    Ok(checksum)
}

/// Takes back a stored piece that was not recorded.
async fn undo_piece(app: &App, a: &ArchiveUploadRow, seq: u64, carried: u64) {
    let done = if carried > 0 {
        app.volumes
            .truncate_archive_segment(a.transfer_id, a.id, seq, carried)
            .await
    } else {
        app.volumes
            .delete_archive_segment(a.transfer_id, a.id, seq)
            .await
    };
    if let Err(e) = done {
        // The next PATCH repairs it (`repair_tail`).
        tracing::warn!(upload = %a.id, seq, error = %e, "could not take back an unrecorded piece");
    }
}

/// Removes an archive upload: its row, then its bytes.
async fn drop_upload(app: &App, a: &ArchiveUploadRow) -> Result<()> {
    if let Some(ex) = app.expansions.take(a.id) {
        ex.abandon().await;
    }
    let mut tx = app.store.begin().await?;
    tx.delete_archive_upload(a.id).await?;
    tx.commit().await?;
    app.volumes.delete_archive(a.transfer_id, a.id).await?;
    app.uploads.forget(a.id);
    Ok(())
}

/// tus termination of an archive upload.
pub async fn terminate(
    app: &App,
    who: &Principal,
    transfer_id: TransferId,
    id: FileId,
) -> Result<()> {
    let slot = app.uploads.slot(id);
    let _busy = tokio::time::timeout(Duration::from_secs(30), slot.lock())
        .await
        .map_err(|_| Error::Conflict("the upload is still being written; retry".into()))?;
    let a = upload_status(app, who, transfer_id, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no upload {id} in this transfer")))?;
    let (t, _) = super::access::load(app, transfer_id).await?;
    require_open(&t)?;
    drop_upload(app, &a).await?;
    app.store
        .audit(
            AuditEvent::new(who.actor(), "archive.deleted")
                .transfer(t.id)
                .detail(serde_json::json!({ "upload": a.id, "received": a.received })),
        )
        .await?;
    Ok(())
}

/// At start: removes the members of archives whose expansion a crash interrupted (their list
/// is still spooled and no row names them). Accepted members keep their bytes.
pub async fn sweep(app: &App) -> Result<u64> {
    let dir = app.volumes.archive_spool_dir();
    let mut entries = match tokio::fs::read_dir(&dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut removed = 0;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        let f = tokio::fs::File::open(&path).await?;
        let mut lines = tokio::io::BufReader::new(f).lines();
        while let Some(l) = lines.next_line().await? {
            let Ok(m) = serde_json::from_str::<SpoolLine>(&l) else {
                // A pack goes whole unless its archive was accepted.
                if let Ok(p) = serde_json::from_str::<PackLine>(&l) {
                    if !app.store.pack_exists(p.pack).await? {
                        app.volumes.delete_file(p.pack_of, p.pack).await?;
                    }
                }
                continue;
            };
            if app.store.file(m.id).await?.is_none() {
                if m.pack.is_none() {
                    app.volumes.delete_file(m.transfer, m.id).await?;
                }
                removed += 1;
            }
        }
        tokio::fs::remove_file(&path).await?;
    }
    Ok(removed)
}
