//! Volumes: the quarantine volume (where uploads land), the released volumes (read-only,
//! mounted into workspaces) and the egress volume (packages for recipients), each on local
//! disk or on S3 (`[storage] backend`, `[storage.volumes.NAME]`). Every byte goes through
//! `object_store`. The local backend adds what a filesystem can do and an object store
//! cannot: fsync, read-only modes and an atomic directory rename to publish a release. On S3,
//! uploads are multipart uploads recorded in the metadata store while open ([`tracked`]), a
//! completed object's size is checked, and a release is published by its manifest object,
//! written last ([`Volumes::publish`]).
//!
//! Quarantine keys never contain a user's path: a file's bytes are stored as numbered segments
//! under `transfers/<transfer>/<file>/<seq>`, and the file is their concatenation. A resumed
//! tus upload adds segments, except that a small last segment is replaced whole by a longer
//! one (`workflow::upload::MERGE_BELOW`); acknowledged bytes are never rewritten in place.

pub mod lock;
pub mod output;
pub mod s3;
pub mod tracked;

use crate::domain::{FileId, RelPath, TransferId};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, WriteMultipart};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("filesystem: {0}")]
    Io(#[from] std::io::Error),
    /// The volume ran out of space (or quota), or has too little for what was declared. The
    /// message names the volume, never its path: clients see it.
    #[error("{0}")]
    Full(String),
    /// The object store behind a volume did not answer (S3 down, unreachable, failing). The
    /// message names the volume; clients get 503 with a retry hint.
    #[error("{0}")]
    Unavailable(String),
    /// The store refused the S3 Object Lock retention of a released object (`lock`).
    #[error("{0}")]
    Retention(String),
}

impl VolumeError {
    /// Whether this is an S3 store that did not answer (connection refused, timeouts, 5xx
    /// after the client's retries): the request can be retried once the store is back.
    pub fn is_unavailable(&self) -> bool {
        match self {
            VolumeError::Unavailable(_) => true,
            VolumeError::Store(object_store::Error::Generic { store, .. }) => *store == "S3",
            _ => false,
        }
    }
}

/// The names volumes are shown by (metrics, readiness, errors).
pub const QUARANTINE: &str = "quarantine";
pub const RELEASED: &str = "released";
pub const EGRESS: &str = "egress";

/// Whether an error, somewhere down its cause chain, is a full disk or an exceeded quota.
pub fn is_storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                return true;
            }
        }
        if let Some(VolumeError::Full(_)) = err.downcast_ref::<VolumeError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A write to `volume` failed: a full disk becomes [`VolumeError::Full`] naming the volume.
fn on_write(volume: &'static str, e: impl Into<VolumeError>) -> VolumeError {
    let e = e.into();
    if is_storage_full(&e) {
        VolumeError::Full(format!(
            "the {volume} volume is full; nothing of this request was kept, retry later"
        ))
    } else if e.is_unavailable() {
        tracing::warn!(volume, cause = %e, "object store did not answer");
        VolumeError::Unavailable(format!(
            "the {volume} volume's object store is not answering; what this request sent \
             after the last acknowledged offset was not kept, retry shortly"
        ))
    } else {
        e
    }
}

/// Where a volume keeps its bytes.
#[derive(Clone, Debug)]
enum Backing {
    /// A local directory (canonical path).
    Local(PathBuf),
    /// A prefix of an S3 bucket, shown as `s3://bucket/prefix/`.
    S3(String),
}

/// The raw S3 client of a volume on S3 and the volume's root in its bucket: for the
/// multipart uploads [`tracked`] records.
#[derive(Clone)]
struct S3Root {
    client: Arc<object_store::aws::AmazonS3>,
    root: ObjPath,
}

/// One volume: its store (keys relative to the volume's root) and where that is.
#[derive(Clone)]
struct Shelf {
    name: &'static str,
    store: Arc<dyn ObjectStore>,
    backing: Backing,
    s3: Option<S3Root>,
    /// S3 Object Lock retention of what is published there ([`lock`]).
    lock: Option<lock::Locker>,
}

impl Shelf {
    fn local(name: &'static str, root: &Path, mode: u32) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        set_mode(root, mode)?;
        let root = root.canonicalize()?;
        Ok(Self {
            name,
            store: Arc::new(LocalFileSystem::new_with_prefix(&root)?),
            backing: Backing::Local(root),
            s3: None,
            lock: None,
        })
    }

    fn s3(name: &'static str, v: &crate::config::S3Volume) -> Result<Self> {
        let client = Arc::new(s3::client(v)?);
        Ok(Self {
            name,
            store: Arc::new(object_store::prefix::PrefixStore::new(
                client.clone() as Arc<dyn ObjectStore>,
                s3::root(v),
            )),
            backing: Backing::S3(format!("s3://{}/{}/", v.bucket, v.prefix)),
            lock: lock::Locker::new(v, &client),
            s3: Some(S3Root {
                client,
                root: s3::root(v),
            }),
        })
    }

    fn root(&self) -> Option<&Path> {
        match &self.backing {
            Backing::Local(p) => Some(p),
            Backing::S3(_) => None,
        }
    }

    fn shown(&self) -> String {
        match &self.backing {
            Backing::Local(p) => p.display().to_string(),
            Backing::S3(url) => url.clone(),
        }
    }

    /// The bytes of `key` (or `range` of them): a local file read a megabyte at a time, or
    /// an S3 GET (with a `Range` header for a range).
    async fn stream(
        &self,
        key: &ObjPath,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        if let Some(root) = self.root() {
            return local_stream(root.join(key.as_ref()), range).await;
        }
        if range.as_ref().is_some_and(|r| r.is_empty()) {
            return Ok(futures::stream::empty().boxed());
        }
        let opts = object_store::GetOptions {
            range: range.map(object_store::GetRange::Bounded),
            ..Default::default()
        };
        let got = self.store.get_opts(key, opts).await?;
        Ok(got.into_stream().map_err(VolumeError::from).boxed())
    }

    /// Every key under `prefix`, deleted (an S3 listing, streamed a page at a time).
    async fn delete_under(&self, prefix: &ObjPath) -> Result<u64> {
        let mut n = 0;
        let mut keys = self.store.list(Some(prefix));
        while let Some(meta) = keys.next().await {
            match self.store.delete(&meta?.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }
}

/// Space on one volume's filesystem.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Space {
    pub volume: &'static str,
    /// Bytes an unprivileged writer may still use.
    pub free: u64,
    pub total: u64,
}

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// The volumes of the service: quarantine, released and egress, each on local disk or S3.
#[derive(Clone)]
pub struct Volumes {
    /// Where uploads land and wait for review.
    pub quarantine: Arc<dyn ObjectStore>,
    /// The workspaces' read-only volumes, one folder per project/workspace/kind.
    pub released: Arc<dyn ObjectStore>,
    q: Shelf,
    rel: Shelf,
    /// Egress packages (`project/workspace/egress/transfer`); the released volume unless
    /// `[storage.volumes.egress]` puts them elsewhere.
    egress: Shelf,
    /// The workspaces' output volumes when they are on S3 (`output/<project>/<ws>/`, read
    /// only by airlock: [`output`]); `None`: a local folder per workspace.
    out: Option<Shelf>,
    /// The quarantine folder on local disk; with quarantine on S3, a local folder for what
    /// scanning needs as files (scratch copies, archive member lists), as untrusted as the
    /// uploads.
    quarantine_root: PathBuf,
    /// Bytes declared by uploads in progress (see [`Volumes::reserve_room`]).
    reserved: Arc<AtomicU64>,
    /// One `syncfs` of the quarantine filesystem shared by every writer waiting for one
    /// (`store::durable`): archives always flush through it; quarantine segments do too when
    /// group commit is on ([`Volumes::with_group_commit`]), instead of an fsync of their own.
    data_sync: crate::store::durable::GroupSync,
    group_commit: bool,
    /// Where S3 multipart uploads in progress are recorded ([`tracked`]); `None`: not
    /// recorded (a volume opened without the metadata store).
    registry: Option<Arc<dyn tracked::UploadRegistry>>,
}

/// Room reserved on the quarantine volume for one upload, given back when dropped. (On the
/// safe side: bytes already written count twice, as used space and as reserved.)
pub struct Room {
    reserved: Arc<AtomicU64>,
    len: u64,
}

impl Drop for Room {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.len, Ordering::AcqRel);
    }
}

/// Size of the pieces a segment is written in; also bounds memory per upload (the upload
/// buffer window of `server::limits` counts on one part being at most 1 MiB).
const PART_SIZE: usize = 1 << 20;

/// Size of the parts of an S3 multipart upload: S3 refuses parts under 5 MiB (but the last).
/// The writer would keep three in flight, but an upload's memory window
/// (`server::limits::window_for`: one part plus 2 MiB) lets about one be in flight at a time:
/// the frames a part holds come back to the window only once it is uploaded.
const S3_PART_SIZE: usize = 5 << 20;

impl Volumes {
    /// The volumes as `storage` places them: each on local disk under `data_dir`
    /// (`quarantine/`, `volumes/`) or on S3. Nothing is written to S3 here.
    pub fn open(data_dir: &Path, storage: &crate::config::StorageSettings) -> Result<Self> {
        use crate::config::VolumeLocation;
        let place = |name: &'static str, dir: &Path, mode: u32| -> Result<Shelf> {
            match storage
                .volume(name)
                .map_err(|e| VolumeError::Io(std::io::Error::other(e)))?
            {
                VolumeLocation::Local => Shelf::local(name, dir, mode),
                VolumeLocation::S3(v) => Shelf::s3(name, &v),
            }
        };
        // Quarantine is for the service alone; released volumes are read by workspaces.
        let q = place(QUARANTINE, &data_dir.join("quarantine"), 0o700)?;
        let rel = place(RELEASED, &data_dir.join("volumes"), 0o755)?;
        let egress = place(EGRESS, &data_dir.join("volumes"), 0o755)?;
        // Workspace output folders are made per workspace (`workflow::admin`); on S3 the
        // volume is a prefix airlock only reads.
        let out = match storage
            .volume(output::OUTPUT)
            .map_err(|e| VolumeError::Io(std::io::Error::other(e)))?
        {
            VolumeLocation::Local => None,
            VolumeLocation::S3(v) => Some(Shelf::s3(output::OUTPUT, &v)?),
        };
        let quarantine_root = match q.root() {
            Some(root) => root.to_owned(),
            None => {
                let dir = data_dir.join("quarantine-scratch");
                std::fs::create_dir_all(&dir)?;
                set_mode(&dir, 0o700)?;
                dir.canonicalize()?
            }
        };
        Ok(Self {
            quarantine: q.store.clone(),
            released: rel.store.clone(),
            data_sync: syncfs_of(quarantine_root.clone()),
            quarantine_root,
            q,
            rel,
            egress,
            out,
            reserved: Arc::new(AtomicU64::new(0)),
            group_commit: false,
            registry: None,
        })
    }

    /// Records every S3 multipart upload in `registry` (the metadata store), so the sweep
    /// can abort one a crash left behind ([`Volumes::sweep_uploads`]).
    pub fn with_registry(mut self, registry: Arc<dyn tracked::UploadRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Whether any volume airlock writes is on S3 (the output volume, only read, is not
    /// counted: it has no uploads to sweep).
    pub fn any_on_s3(&self) -> bool {
        [&self.q, &self.rel, &self.egress]
            .iter()
            .any(|s| s.s3.is_some())
    }

    /// Aborts the S3 multipart uploads recorded as in progress but untouched for
    /// `stale_after_ms` (their replica died), and forgets them. Returns how many.
    pub async fn sweep_uploads(
        &self,
        store: &crate::store::Store,
        stale_after_ms: i64,
    ) -> Result<u64> {
        if [&self.q, &self.rel, &self.egress]
            .iter()
            .all(|s| s.s3.is_none())
        {
            return Ok(0);
        }
        let before = chrono::Utc::now().timestamp_millis() - stale_after_ms;
        let mut n = 0;
        for u in store
            .stale_uploads(before, 100)
            .await
            .map_err(|e| VolumeError::Io(std::io::Error::other(e.to_string())))?
        {
            let shelf = [&self.q, &self.rel, &self.egress]
                .into_iter()
                .find(|s| s.name == u.volume);
            let Some(s3) = shelf.and_then(|s| s.s3.as_ref()) else {
                tracing::warn!(upload = %u.upload_id, volume = %u.volume, "a recorded upload on a volume no longer on S3");
                continue;
            };
            use object_store::multipart::MultipartStore;
            let path = tracked::join(&s3.root, &ObjPath::from(u.object_key.as_str()));
            match s3.client.abort_multipart(&path, &u.upload_id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(upload = %u.upload_id, error = %e, "cannot abort a stale upload yet");
                    continue;
                }
            }
            store
                .upload_ended(&u.upload_id)
                .await
                .map_err(|e| VolumeError::Io(std::io::Error::other(e.to_string())))?;
            tracing::info!(upload = %u.upload_id, key = %u.object_key, "aborted a multipart upload left by a crash");
            n += 1;
        }
        Ok(n)
    }

    /// Bytes of one part of an upload's segment writer (what its memory window must hold).
    pub fn upload_part_size(&self) -> usize {
        match self.quarantine_is_local() {
            true => PART_SIZE,
            false => S3_PART_SIZE,
        }
    }

    /// Whether the quarantine volume is a local directory (its segments are files).
    pub fn quarantine_is_local(&self) -> bool {
        self.q.root().is_some()
    }

    /// The volume a published tree lies in: egress packages (`project/workspace/egress/…`)
    /// in the egress volume, everything else in the released volume.
    fn shelf(&self, dest: &ObjPath) -> &Shelf {
        match dest.parts().nth(2) {
            Some(p) if p.as_ref() == crate::domain::TransferKind::Egress.volume() => &self.egress,
            _ => &self.rel,
        }
    }

    /// How many shared `syncfs` runs the quarantine volume has made.
    pub fn data_syncs(&self) -> u64 {
        self.data_sync.runs()
    }

    /// Quarantine segments are made durable by the shared `syncfs` of [`Volumes::sync_quarantine`]
    /// instead of an fsync of the file and its folder each.
    pub fn with_group_commit(mut self) -> Self {
        self.group_commit = true;
        self
    }

    /// Checks every volume answers (a missing key is a fine answer): a local folder is
    /// there, an S3 store lists the volume's prefix with the configured credentials.
    pub async fn ping(&self) -> Result<()> {
        for shelf in [&self.q, &self.rel, &self.egress]
            .into_iter()
            .chain(self.out.as_ref())
        {
            match shelf
                .store
                .head(&ObjPath::from(".airlock-ready-probe"))
                .await
            {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(VolumeError::Unavailable(format!(
                        "the {} volume ({}) does not answer: {e}",
                        shelf.name,
                        shelf.shown()
                    )))
                }
            }
            if let Some(dir) = shelf.root() {
                if !dir.is_dir() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{} is not a directory", dir.display()),
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// What each volume is on, for `/readyz`: `local` or `s3` (never where: that answer is
    /// unauthenticated).
    pub fn kinds(&self) -> Vec<(&'static str, &'static str)> {
        let mut kinds: Vec<_> = [&self.q, &self.rel, &self.egress]
            .into_iter()
            .map(|s| {
                let kind = match s.backing {
                    Backing::Local(_) => "local",
                    Backing::S3(_) => "s3",
                };
                (s.name, kind)
            })
            .collect();
        let out = if self.out.is_some() { "s3" } else { "local" };
        kinds.push((output::OUTPUT, out));
        kinds
    }

    /// Free and total space of each local volume's filesystem (S3 has no such figure).
    pub fn space(&self) -> Vec<std::io::Result<Space>> {
        [&self.q, &self.rel]
            .into_iter()
            .filter_map(|shelf| Some((shelf.name, shelf.root()?)))
            .map(|(volume, root)| {
                let st = rustix::fs::statvfs(root).map_err(std::io::Error::from)?;
                Ok(Space {
                    volume,
                    free: st.f_bavail.saturating_mul(st.f_frsize),
                    total: st.f_blocks.saturating_mul(st.f_frsize),
                })
            })
            .collect()
    }

    /// Refuses, before anything is written, an upload of `len` bytes that would take the
    /// quarantine volume below `min_free`, counting what the PUTs in progress on this replica
    /// declared. The room is held until the returned guard drops. (On S3 there is no free
    /// space to read: the bucket's quota, if any, answers at write time.)
    pub fn reserve_room(&self, len: u64, min_free: u64) -> Result<Room> {
        let held = Room {
            reserved: self.reserved.clone(),
            len,
        };
        let before = self.reserved.fetch_add(len, Ordering::AcqRel);
        let Some(root) = self.q.root() else {
            return Ok(held);
        };
        let st = rustix::fs::statvfs(root).map_err(std::io::Error::from)?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let room = free.saturating_sub(min_free).saturating_sub(before);
        if len > room {
            drop(held);
            return Err(VolumeError::Full(format!(
                "the {QUARANTINE} volume has room for {room} more bytes; this upload declares {len}; retry later"
            )));
        }
        Ok(held)
    }

    fn segment_key(transfer: TransferId, file: FileId, seq: u64) -> ObjPath {
        ObjPath::from(format!("transfers/{transfer}/{file}/{seq:010}"))
    }

    /// A transfer's quarantine objects, as `file/segment` relative to its folder, in key
    /// order (a listing of the volume, streamed; for the fixity walk on S3).
    pub fn list_quarantine(&self, transfer: TransferId) -> BoxStream<'static, Result<String>> {
        let base = format!("transfers/{transfer}/");
        self.q
            .store
            .list(Some(&ObjPath::from(format!("transfers/{transfer}"))))
            .map_err(VolumeError::from)
            .map_ok(move |m| {
                let key = m.location.to_string();
                key.strip_prefix(&base).unwrap_or(&key).to_owned()
            })
            .boxed()
    }

    /// Where segment `seq` of a file lies on disk (the local backend).
    pub fn segment_path(&self, transfer: TransferId, file: FileId, seq: u64) -> PathBuf {
        self.quarantine_root
            .join(Self::segment_key(transfer, file, seq).as_ref())
    }

    /// The quarantine folder of a transfer on disk: one folder per file, its segments inside.
    pub fn transfer_dir(&self, transfer: TransferId) -> PathBuf {
        self.quarantine_root.join(format!("transfers/{transfer}"))
    }

    /// Scratch space for scanning a transfer (joined files, expanded archive members). It lies
    /// inside the quarantine volume: what is in it is as untrusted as the uploads.
    pub fn scratch_dir(&self, transfer: TransferId) -> PathBuf {
        self.quarantine_root
            .join(".scratch")
            .join(transfer.to_string())
    }

    /// Starts writing segment `seq` of a file.
    pub async fn segment_writer(
        &self,
        transfer: TransferId,
        file: FileId,
        seq: u64,
    ) -> Result<SegmentWriter> {
        let key = Self::segment_key(transfer, file, seq);
        self.writer(&self.q, key, self.group_commit).await
    }

    /// Starts writing the object `key` of `shelf` in parts. `group`: made durable by the
    /// shared `syncfs` instead of its own fsync (local quarantine only).
    async fn writer(&self, shelf: &Shelf, key: ObjPath, group: bool) -> Result<SegmentWriter> {
        let upload: Box<dyn object_store::MultipartUpload> = match (&shelf.s3, &self.registry) {
            (Some(s3), Some(registry)) => Box::new(
                tracked::Tracked::start(
                    s3.client.clone(),
                    registry.clone(),
                    shelf.name,
                    &s3.root,
                    &key,
                )
                .await
                .map_err(|e| on_write(shelf.name, e))?,
            ),
            _ => shelf
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| on_write(shelf.name, e))?,
        };
        let (part, fs_path, object) = match shelf.root() {
            Some(root) => (PART_SIZE, Some(root.join(key.as_ref())), None),
            None => (S3_PART_SIZE, None, Some((shelf.store.clone(), key))),
        };
        Ok(SegmentWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, part),
            fs_path,
            object,
            written: 0,
            volume: shelf.name,
            group: (group && shelf.root().is_some()).then(|| self.data_sync.clone()),
        })
    }

    /// The bytes of a file: its segments, in order.
    pub fn read_file(
        &self,
        transfer: TransferId,
        file: FileId,
        segments: usize,
    ) -> BoxStream<'static, Result<Bytes>> {
        self.read_segments(transfer, file, 0..segments as u64)
    }

    /// The bytes of one stored segment.
    pub fn read_file_segment(
        &self,
        transfer: TransferId,
        file: FileId,
        seq: u64,
    ) -> BoxStream<'static, Result<Bytes>> {
        self.read_segments(transfer, file, seq..seq + 1)
    }

    fn read_segments(
        &self,
        transfer: TransferId,
        file: FileId,
        seqs: std::ops::Range<u64>,
    ) -> BoxStream<'static, Result<Bytes>> {
        self.read_objects(seqs.map(move |seq| Self::segment_key(transfer, file, seq)))
    }

    /// `len` bytes at `offset` of a pack: one packed archive member.
    pub fn read_packed(
        &self,
        transfer: TransferId,
        pack: FileId,
        offset: u64,
        len: u64,
    ) -> BoxStream<'static, Result<Bytes>> {
        let store = self.quarantine.clone();
        let key = Self::segment_key(transfer, pack, 0);
        futures::stream::once(async move {
            if len == 0 {
                return Ok::<_, VolumeError>(futures::stream::empty().boxed());
            }
            let opts = object_store::GetOptions {
                range: Some(object_store::GetRange::Bounded(offset..offset + len)),
                ..Default::default()
            };
            let got = store.get_opts(&key, opts).await?;
            Ok(got.into_stream().map_err(VolumeError::from).boxed())
        })
        .try_flatten()
        .boxed()
    }

    /// The quarantine objects `keys`, one after another, as one stream (a file's segments, or
    /// a tus archive upload's).
    fn read_objects(
        &self,
        keys: impl Iterator<Item = ObjPath> + Send + 'static,
    ) -> BoxStream<'static, Result<Bytes>> {
        let shelf = self.q.clone();
        futures::stream::iter(keys)
            .then(move |key| {
                let shelf = shelf.clone();
                async move { shelf.stream(&key, None).await }
            })
            .try_flatten()
            .boxed()
    }

    /// The stored size of a quarantine object, or `None` if there is none.
    async fn object_len(&self, key: &ObjPath) -> Result<Option<u64>> {
        match self.quarantine.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored size of one segment, or `None` if there is none.
    pub async fn segment_len(
        &self,
        transfer: TransferId,
        file: FileId,
        seq: u64,
    ) -> Result<Option<u64>> {
        self.object_len(&Self::segment_key(transfer, file, seq))
            .await
    }

    /// Deletes one segment if it is there (a piece that was stored but never recorded).
    pub async fn delete_segment(&self, transfer: TransferId, file: FileId, seq: u64) -> Result<()> {
        match self
            .quarantine
            .delete(&Self::segment_key(transfer, file, seq))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Cuts a segment back to `len` bytes, durably (local backend): a piece rewritten longer
    /// whose new bytes were never recorded returns to exactly what was acknowledged.
    pub async fn truncate_segment(
        &self,
        transfer: TransferId,
        file: FileId,
        seq: u64,
        len: u64,
    ) -> Result<()> {
        self.truncate_object(Self::segment_key(transfer, file, seq), len)
            .await
    }

    /// Cuts a quarantine object back to its first `len` bytes, durably. On S3, whose objects
    /// cannot be cut, it is written again with those bytes (only a small merged piece, under
    /// `MERGE_BELOW` when recorded, is ever cut back).
    async fn truncate_object(&self, key: ObjPath, len: u64) -> Result<()> {
        if let Some(root) = self.q.root() {
            let path = root.join(key.as_ref());
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(len)?;
                f.sync_all()
            })
            .await
            .map_err(std::io::Error::other)??;
            return Ok(());
        }
        self.rewrite(&key, None, Some(len)).await
    }

    /// Writes the S3 quarantine object `key` again from its own bytes, with the bytes in
    /// `erase` zeroed and cut at `keep` bytes: streamed through a multipart upload, so memory
    /// stays a few parts. The new object replaces the old one whole when the upload completes.
    async fn rewrite(
        &self,
        key: &ObjPath,
        erase: Option<std::ops::Range<u64>>,
        keep: Option<u64>,
    ) -> Result<()> {
        let len = self.q.store.head(key).await?.size;
        let keep = keep.unwrap_or(len).min(len);
        let mut old = self.q.stream(key, Some(0..keep)).await?;
        let mut w = self.writer(&self.q, key.clone(), false).await?;
        let mut at = 0u64;
        while let Some(chunk) = old.next().await {
            match chunk {
                Ok(c) => {
                    let end = at + c.len() as u64;
                    let c = match &erase {
                        Some(r) if r.start < end && r.end > at => {
                            let mut v = c.to_vec();
                            let from = r.start.saturating_sub(at) as usize;
                            let to = (r.end.min(end) - at) as usize;
                            v[from..to].fill(0);
                            Bytes::from(v)
                        }
                        _ => c,
                    };
                    at = end;
                    w.write(c).await?
                }
                Err(e) => {
                    w.abort().await;
                    return Err(e);
                }
            }
        }
        w.commit().await?;
        Ok(())
    }

    /// Deletes every stored segment of a file (a terminated or replaced upload).
    pub async fn delete_file(&self, transfer: TransferId, file: FileId) -> Result<()> {
        let prefix = ObjPath::from(format!("transfers/{transfer}/{file}"));
        let keys: Vec<_> = self.quarantine.list(Some(&prefix)).try_collect().await?;
        for meta in keys {
            self.quarantine.delete(&meta.location).await?;
        }
        Ok(())
    }

    /// Overwrites `len` bytes at `offset` of a pack with zeros, durably: a deleted member's
    /// bytes do not stay in the pack its neighbours still need. (Local backend: in place. An
    /// object store would rewrite the pack without them.)
    pub async fn erase_range(
        &self,
        transfer: TransferId,
        pack: FileId,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        if !self.quarantine_is_local() {
            let key = Self::segment_key(transfer, pack, 0);
            return self.rewrite(&key, Some(offset..offset + len), None).await;
        }
        let path = self.segment_path(transfer, pack, 0);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            let zeros = vec![0u8; len.min(PART_SIZE as u64) as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                f.write_all_at(&zeros[..n], offset + done)?;
                done += n as u64;
            }
            f.sync_data()
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }

    /// Where a transfer's release is staged before it is published.
    pub fn staging_prefix(transfer: TransferId) -> ObjPath {
        ObjPath::from(format!(".staging/{transfer}"))
    }

    /// Where a transfer's files are published: `project/workspace/{data,software}/transfer`.
    pub fn release_prefix(
        project: &str,
        workspace: &str,
        volume: &str,
        transfer: TransferId,
    ) -> ObjPath {
        ObjPath::from(format!("{project}/{workspace}/{volume}/{transfer}"))
    }

    /// Where a staged file goes: on local disk under `.staging/<transfer>/` of the volume
    /// (moved into place by one rename); on S3 straight under `dest`, where nothing counts as
    /// released until the release's manifest object is written ([`Volumes::publish`]).
    fn staged_key(&self, transfer: TransferId, dest: &ObjPath, path: &RelPath) -> Result<ObjPath> {
        let base = match self.shelf(dest).root() {
            Some(_) => Self::staging_prefix(transfer),
            None => dest.clone(),
        };
        Ok(path.object_path(&base).map_err(object_store::Error::from)?)
    }

    /// The manifest object of a release on S3: `<dest>.manifest.jsonl`, beside its folder,
    /// one JSON line (`path`, `size`, `sha256`, `blake3`) per released object. Written last:
    /// a release on S3 is published when, and only while, it is there.
    pub fn manifest_key(dest: &ObjPath) -> ObjPath {
        ObjPath::from(format!("{dest}.manifest.jsonl"))
    }

    /// Whether releases to `dest` need a manifest object to be published (S3), which the
    /// caller spools while it stages ([`Volumes::publish`]).
    pub fn needs_manifest(&self, dest: &ObjPath) -> bool {
        self.shelf(dest).root().is_none()
    }

    /// Starts writing one released file into staging.
    pub async fn staging_writer(
        &self,
        transfer: TransferId,
        dest: &ObjPath,
        path: &RelPath,
    ) -> Result<SegmentWriter> {
        let key = self.staged_key(transfer, dest, path)?;
        self.writer(self.shelf(dest), key, false).await
    }

    /// Where a release is, as shown to people and kept in the store: the folder's path on
    /// local disk, or `s3://bucket/prefix/dest/`.
    pub fn location(&self, dest: &ObjPath) -> String {
        match &self.shelf(dest).backing {
            Backing::Local(root) => root.join(dest.as_ref()).display().to_string(),
            Backing::S3(url) => format!("{url}{dest}/"),
        }
    }

    /// The published tree a stored `location` names: (the volume's name, the tree's key),
    /// for a release on S3; `None` for a local path.
    pub fn s3_dest_of(&self, location: &str) -> Option<ObjPath> {
        for shelf in [&self.rel, &self.egress] {
            if let Backing::S3(url) = &shelf.backing {
                if let Some(rest) = location.strip_prefix(url.as_str()) {
                    return Some(ObjPath::from(rest.trim_end_matches('/')));
                }
            }
        }
        None
    }

    /// Whether a release is published at `dest` (published before a crash, say): its folder
    /// exists on local disk, its manifest object on S3.
    pub async fn published(&self, dest: &ObjPath) -> Result<bool> {
        let shelf = self.shelf(dest);
        match shelf.root() {
            Some(root) => Ok(root.join(dest.as_ref()).exists()),
            None => match shelf.store.head(&Self::manifest_key(dest)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// A published tree's files on S3, from a listing of its prefix in key order: (path
    /// relative to the tree, size). Streamed a page at a time.
    pub fn list_published(&self, dest: &ObjPath) -> BoxStream<'static, Result<(String, u64)>> {
        let base = format!("{dest}/");
        self.shelf(dest)
            .store
            .list(Some(dest))
            .map_err(VolumeError::from)
            .map_ok(move |m| {
                let key = m.location.to_string();
                (key.strip_prefix(&base).unwrap_or(&key).to_owned(), m.size)
            })
            .boxed()
    }

    /// A published release's manifest object, if it is there.
    pub async fn read_manifest(
        &self,
        dest: &ObjPath,
    ) -> Result<Option<BoxStream<'static, Result<Bytes>>>> {
        match self
            .shelf(dest)
            .stream(&Self::manifest_key(dest), None)
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(VolumeError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a published file (to verify it, or for a collection).
    pub async fn read_published(
        &self,
        dest: &ObjPath,
        path: &RelPath,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.published_stream(dest, path, None).await
    }

    /// Reads `range` of a published file (a collection, resumed where it stopped).
    pub async fn read_published_range(
        &self,
        dest: &ObjPath,
        path: &RelPath,
        range: std::ops::Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.published_stream(dest, path, Some(range)).await
    }

    /// A published file's bytes. On S3 only a release whose manifest is there is read: a
    /// release being written, or being withdrawn, is not published.
    async fn published_stream(
        &self,
        dest: &ObjPath,
        path: &RelPath,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let key = path.object_path(dest).map_err(object_store::Error::from)?;
        let shelf = self.shelf(dest);
        if shelf.root().is_none() && !self.published(dest).await? {
            return Err(object_store::Error::NotFound {
                path: key.to_string(),
                source: "the release's manifest object is not there: nothing is published".into(),
            }
            .into());
        }
        shelf.stream(&key, range).await
    }

    /// Reads a published file without asking first whether its release is published: for a
    /// verification pass, which asks once for the whole tree (one HEAD per file saved).
    pub async fn read_published_in_pass(
        &self,
        dest: &ObjPath,
        path: &RelPath,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let key = path.object_path(dest).map_err(object_store::Error::from)?;
        self.shelf(dest).stream(&key, None).await
    }

    /// The size of a published file.
    pub async fn published_len(&self, dest: &ObjPath, path: &RelPath) -> Result<u64> {
        let key = path.object_path(dest).map_err(object_store::Error::from)?;
        Ok(self.shelf(dest).store.head(&key).await?.size)
    }

    /// Writes a small file (the package's record) into a release's staging area.
    pub async fn stage_bytes(
        &self,
        transfer: TransferId,
        dest: &ObjPath,
        path: &RelPath,
        data: Bytes,
    ) -> Result<()> {
        let mut w = self.staging_writer(transfer, dest, path).await?;
        w.write(data).await?;
        w.finish_unsynced().await?;
        Ok(())
    }

    /// Reads a staged file back, to verify the copy.
    pub async fn read_staged(
        &self,
        transfer: TransferId,
        dest: &ObjPath,
        path: &RelPath,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let key = self.staged_key(transfer, dest, path)?;
        self.shelf(dest).stream(&key, None).await
    }

    /// Removes a staging area left by an interrupted release. On S3 that is whatever lies
    /// under `dest` while no manifest publishes it.
    pub async fn clear_staging(&self, transfer: TransferId, dest: &ObjPath) -> Result<()> {
        let shelf = self.shelf(dest);
        let Some(root) = shelf.root() else {
            if !self.published(dest).await? {
                let n = shelf.delete_under(dest).await?;
                if n > 0 {
                    tracing::info!(%transfer, objects = n, "removed an unpublished release's objects");
                }
            }
            return Ok(());
        };
        let dir = root.join(Self::staging_prefix(transfer).as_ref());
        if dir.exists() {
            make_writable(&dir)?;
            tokio::fs::remove_dir_all(&dir).await?;
        }
        Ok(())
    }

    /// A release found published after a crash, on a volume with Object Lock retention: the
    /// crash may have fallen between writing its manifest and setting the manifest's
    /// retention (its objects get theirs before the manifest is written). Sets it again,
    /// which only ever extends it. Nothing on local disk or without retention.
    pub async fn retain_published(&self, dest: &ObjPath) -> Result<()> {
        match &self.shelf(dest).lock {
            Some(lock) => lock.retain(&Self::manifest_key(dest)).await,
            None => Ok(()),
        }
    }

    /// Publishes a staged release atomically; returns its location.
    ///
    /// Local disk: files become 0444 and folders 0555, one `syncfs` makes every staged file
    /// durable (they are written without an fsync each), then one rename makes the whole
    /// tree visible at once.
    ///
    /// S3: the objects are already under `dest`, each verified; the manifest (`manifest`,
    /// the JSON lines spooled while staging) is written last, as one object: readers trust
    /// only what it lists, and only once it is there. With retention configured, every
    /// object it lists is put under Object Lock before it is written, and it after ([`lock`]).
    pub async fn publish(
        &self,
        transfer: TransferId,
        dest: &ObjPath,
        manifest: Option<&Path>,
    ) -> Result<String> {
        let shelf = self.shelf(dest);
        let Some(root) = shelf.root() else {
            let spool = manifest.ok_or_else(|| {
                VolumeError::Io(std::io::Error::other(format!(
                    "a release of {transfer} to S3 needs its manifest"
                )))
            })?;
            lock::before_manifest(shelf, dest, spool).await?;
            let file = tokio::fs::File::open(spool).await?;
            let mut lines = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK);
            let mut w = self.writer(shelf, Self::manifest_key(dest), false).await?;
            while let Some(chunk) = lines.next().await {
                match chunk {
                    Ok(c) => w.write(c).await?,
                    Err(e) => {
                        w.abort().await;
                        return Err(e.into());
                    }
                }
            }
            w.commit().await?;
            lock::after_manifest(shelf, dest).await?;
            return Ok(self.location(dest));
        };
        let staged = root.join(Self::staging_prefix(transfer).as_ref());
        let dest_dir = root.join(dest.as_ref());
        tokio::task::spawn_blocking(move || -> Result<PathBuf> {
            std::fs::create_dir_all(&staged)?;
            seal_tree(&staged, true)?;
            if let Some(parent) = dest_dir.parent() {
                create_traversable(parent)?;
            }
            // Every file's data, name and mode are on disk before any of them is visible.
            rustix::fs::syncfs(&std::fs::File::open(&staged)?).map_err(std::io::Error::from)?;
            // The top folder stays writable until it is in place: moving a folder to another
            // parent rewrites its `..` entry, which needs write permission on it.
            std::fs::rename(&staged, &dest_dir)?;
            set_mode(&dest_dir, 0o555)?;
            std::fs::File::open(&dest_dir)?.sync_all()?;
            if let Some(parent) = dest_dir.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(dest_dir)
        })
        .await
        .map_err(std::io::Error::other)?
        .map(|p| p.display().to_string())
    }
}

/// Bytes that arrive in a tar stream for the server to expand (`workflow::archive_upload`):
/// members are written without an fsync of their own and made durable together by one
/// [`Volumes::sync_quarantine`] before their rows are committed; a tus archive upload's own
/// bytes lie under `archives/<transfer>/<upload>/<seq>`, apart from the transfer's files, so a
/// fixity walk of the transfer never meets them.
impl Volumes {
    fn archive_key(transfer: TransferId, upload: FileId, seq: u64) -> ObjPath {
        ObjPath::from(format!("archives/{transfer}/{upload}/{seq:010}"))
    }

    /// Flushes everything written to the quarantine volume's filesystem (file data, new names,
    /// folders) with one `syncfs`: one flush for a whole archive's members.
    pub async fn sync_quarantine(&self) -> Result<()> {
        if !self.quarantine_is_local() {
            // A completed S3 upload is durable when it is acknowledged.
            return Ok(());
        }
        self.data_sync
            .wait()
            .await
            .map(drop)
            .map_err(|e| on_write(QUARANTINE, e))
    }

    /// Starts writing segment `seq` of a tus archive upload.
    pub async fn archive_writer(
        &self,
        transfer: TransferId,
        upload: FileId,
        seq: u64,
    ) -> Result<SegmentWriter> {
        let key = Self::archive_key(transfer, upload, seq);
        self.writer(&self.q, key, false).await
    }

    /// The stored bytes of a tus archive upload: segments `seqs`, in order.
    pub fn read_archive(
        &self,
        transfer: TransferId,
        upload: FileId,
        seqs: std::ops::Range<u64>,
    ) -> BoxStream<'static, Result<Bytes>> {
        self.read_objects(seqs.map(move |seq| Self::archive_key(transfer, upload, seq)))
    }

    /// The stored size of one segment of a tus archive upload, or `None`.
    pub async fn archive_segment_len(
        &self,
        transfer: TransferId,
        upload: FileId,
        seq: u64,
    ) -> Result<Option<u64>> {
        self.object_len(&Self::archive_key(transfer, upload, seq))
            .await
    }

    /// Deletes one segment of a tus archive upload if it is there.
    pub async fn delete_archive_segment(
        &self,
        transfer: TransferId,
        upload: FileId,
        seq: u64,
    ) -> Result<()> {
        match self
            .quarantine
            .delete(&Self::archive_key(transfer, upload, seq))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Cuts a segment of a tus archive upload back to `len` bytes, durably.
    pub async fn truncate_archive_segment(
        &self,
        transfer: TransferId,
        upload: FileId,
        seq: u64,
        len: u64,
    ) -> Result<()> {
        self.truncate_object(Self::archive_key(transfer, upload, seq), len)
            .await
    }

    /// Deletes every stored segment of a tus archive upload.
    pub async fn delete_archive(&self, transfer: TransferId, upload: FileId) -> Result<()> {
        let prefix = ObjPath::from(format!("archives/{transfer}/{upload}"));
        let keys: Vec<_> = self.quarantine.list(Some(&prefix)).try_collect().await?;
        for meta in keys {
            self.quarantine.delete(&meta.location).await?;
        }
        Ok(())
    }

    /// Where the member list of an archive being expanded is spooled (one JSON line per
    /// member), so memory does not grow with the member count. Inside the quarantine volume:
    /// it names untrusted paths.
    pub fn archive_spool(&self, archive: FileId) -> PathBuf {
        self.quarantine_root
            .join(".archives")
            .join(format!("{archive}.members"))
    }

    /// Where the manifest of a release to S3 is spooled while its files are copied (one JSON
    /// line per file), so memory does not grow with the file count.
    pub fn release_spool(&self, transfer: TransferId) -> PathBuf {
        self.quarantine_root
            .join(".releases")
            .join(format!("{transfer}.manifest.jsonl"))
    }

    /// The folder of the member lists of archives being expanded.
    pub fn archive_spool_dir(&self) -> PathBuf {
        self.quarantine_root.join(".archives")
    }
}

impl Volumes {
    /// Withdraws a published release (revocation): one rename takes the whole tree out of the
    /// workspace's volume at once, then it is deleted (the quarantine copy stays for the
    /// record). Returns false if nothing was published there. Safe to repeat.
    ///
    /// On S3 with Object Lock (a versioned bucket), a delete without a version id adds a
    /// delete marker: the release is gone for readers at once, and its locked versions stay
    /// in the bucket until their retention ends ([`lock`]).
    pub async fn withdraw(&self, transfer: TransferId, dest: &ObjPath) -> Result<bool> {
        let shelf = self.shelf(dest);
        let Some(root) = shelf.root() else {
            // Access goes first: once the manifest object is gone nothing is published, then
            // the objects go.
            // (S3 answers a delete of a missing key as done: ask first.)
            let published = self.published(dest).await?;
            if published {
                match shelf.store.delete(&Self::manifest_key(dest)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let removed = shelf.delete_under(dest).await?;
            tracing::info!(%transfer, objects = removed, "withdrew a release from S3");
            return Ok(published || removed > 0);
        };
        let dest = root.join(dest.as_ref());
        let trash = root.join(format!(".withdrawn/{transfer}-{}", uuid::Uuid::new_v4()));
        tokio::task::spawn_blocking(move || -> Result<bool> {
            if !dest.exists() {
                return Ok(false);
            }
            if let Some(parent) = trash.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Moving a folder to another parent rewrites its `..`: it must be writable.
            set_mode(&dest, 0o755)?;
            std::fs::rename(&dest, &trash)?;
            if let Some(parent) = dest.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            make_writable(&trash)?;
            std::fs::remove_dir_all(&trash)?;
            Ok(true)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// A group-commit coordinator whose action is one `syncfs` of the filesystem holding `root`.
fn syncfs_of(root: PathBuf) -> crate::store::durable::GroupSync {
    crate::store::durable::GroupSync::new(Arc::new(move || {
        let dir = std::fs::File::open(&root)?;
        rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
    }))
}

/// Writes one object in parts with bounded memory.
pub struct SegmentWriter {
    upload: WriteMultipart,
    /// Local backend: the file, made durable by fsync.
    fs_path: Option<PathBuf>,
    /// S3: where the object lands, to check its stored size once complete.
    object: Option<(Arc<dyn ObjectStore>, ObjPath)>,
    written: u64,
    volume: &'static str,
    /// Group commit: made durable by the volume's shared `syncfs` instead of its own fsync.
    group: Option<crate::store::durable::GroupSync>,
}

impl SegmentWriter {
    pub async fn write(&mut self, buf: Bytes) -> Result<()> {
        // Backpressure: at most three parts in flight (for an upload body, its memory window
        // is the tighter bound).
        self.upload
            .wait_for_capacity(3)
            .await
            .map_err(|e| on_write(self.volume, e))?;
        self.written += buf.len() as u64;
        self.upload.put(buf);
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Completes the object and makes it durable (fsync on the local backend; on S3 the
    /// completed upload is, and its stored size is checked). On failure nothing of it is
    /// left: a half-written segment never takes up a full disk.
    pub async fn commit(self) -> Result<u64> {
        let volume = self.volume;
        // A failed `finish` drops its upload, whose staging file goes with it.
        self.upload
            .finish()
            .await
            .map_err(|e| on_write(volume, e))?;
        if let Some((store, key)) = self.object {
            check_stored(volume, &store, &key, self.written).await?;
            return Ok(self.written);
        }
        let Some(path) = self.fs_path else {
            return Ok(self.written);
        };
        if let Some(group) = self.group {
            // Joined after the object is complete, so the shared run covers its data, its
            // name and its folder.
            if let Err(e) = group.wait().await {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(on_write(volume, e));
            }
            return Ok(self.written);
        }
        let synced = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let done = (|| {
                std::fs::File::open(&path)?.sync_all()?;
                if let Some(parent) = path.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                Ok(())
            })();
            if done.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            done
        })
        .await
        .map_err(std::io::Error::other)?;
        synced.map_err(|e| on_write(volume, e))?;
        Ok(self.written)
    }

    /// Completes the object without an fsync: for members of an archive, made durable
    /// together by one [`Volumes::sync_quarantine`] before anything records them. (On S3
    /// the stored size is checked, as by [`SegmentWriter::commit`].)
    pub async fn finish_unsynced(self) -> Result<u64> {
        let volume = self.volume;
        self.upload
            .finish()
            .await
            .map_err(|e| on_write(volume, e))?;
        if let Some((store, key)) = self.object {
            check_stored(volume, &store, &key, self.written).await?;
        }
        Ok(self.written)
    }

    pub async fn abort(self) {
        let _ = self.upload.abort().await;
    }
}

/// An object just completed on S3 holds exactly the bytes sent, or it is removed and the
/// write fails.
async fn check_stored(
    volume: &'static str,
    store: &Arc<dyn ObjectStore>,
    key: &ObjPath,
    sent: u64,
) -> Result<()> {
    let stored = store.head(key).await.map_err(|e| on_write(volume, e))?.size;
    if stored != sent {
        let _ = store.delete(key).await;
        return Err(VolumeError::Io(std::io::Error::other(format!(
            "the {volume} volume stored {stored} bytes of {key} where {sent} were sent"
        ))));
    }
    Ok(())
}

/// `create_dir_all` whose new folders are 0755 whatever the umask (the service runs with
/// 077): workspaces must be able to walk down to their released folders.
/// Bytes read from a local file at once. object_store's local backend streams a file in 8 KiB
/// reads, each a hop to a blocking thread: a 4 GiB collection was 524,288 of them and ran at a
/// fifth of nginx's speed on the same file (benches/collect.sh).
const READ_CHUNK: usize = 1 << 20;

/// A local file's bytes (or `range` of them) as a stream of `READ_CHUNK` pieces. A missing file
/// is object_store's `NotFound`, as before.
async fn local_stream(
    path: PathBuf,
    range: Option<std::ops::Range<u64>>,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(object_store::Error::NotFound {
                path: path.display().to_string(),
                source: Box::new(e),
            }
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    let len = f.metadata().await?.len();
    let (reader, want): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, u64) = match range {
        Some(r) => {
            f.seek(std::io::SeekFrom::Start(r.start)).await?;
            let want = r.end.saturating_sub(r.start);
            (Box::new(f.take(want)), want)
        }
        None => (Box::new(f), len),
    };
    // A small file gets a buffer its size, not a megabyte.
    let capacity = (want as usize).clamp(8 << 10, READ_CHUNK);
    Ok(
        tokio_util::io::ReaderStream::with_capacity(reader, capacity)
            .map_err(VolumeError::from)
            .boxed(),
    )
}

/// Creates `dir` and any missing parents, each 0755 (whatever the umask): folders others must
/// be able to traverse, such as a workspace's volumes.
pub(crate) fn create_traversable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_traversable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => set_mode(dir, 0o755),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let mut p = std::fs::metadata(path)?.permissions();
        p.set_readonly(mode & 0o200 == 0);
        std::fs::set_permissions(path, p)
    }
}

/// Makes every file 0444 and every folder 0555 below `dir` (and `dir` itself unless `keep_top`).
fn seal_tree(dir: &Path, keep_top: bool) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            seal_tree(&entry.path(), false)?;
        } else if ty.is_file() {
            set_mode(&entry.path(), 0o444)?;
        } else {
            return Err(std::io::Error::other(format!(
                "unexpected non-file {} in a release",
                entry.path().display()
            )));
        }
    }
    if !keep_top {
        set_mode(dir, 0o555)?;
    }
    Ok(())
}

fn make_writable(dir: &Path) -> std::io::Result<()> {
    set_mode(dir, 0o755)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}
