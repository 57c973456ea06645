//! Volumes: the quarantine volume (where uploads land) and the released volumes (read-only,
//! mounted into workspaces). Every byte goes through `object_store`; the local backend adds
//! what a filesystem can do and an object store cannot: fsync, read-only modes and an atomic
//! directory rename to publish a release.
//!
//! Quarantine keys never contain a user's path: a file's bytes are stored as numbered segments
//! under `transfers/<transfer>/<file>/<seq>`, and the file is their concatenation. A resumed
//! tus upload adds segments, except that a small last segment is replaced whole by a longer
//! one (`workflow::upload::MERGE_BELOW`); acknowledged bytes are never rewritten in place.

pub mod s3;

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
}

/// The names volumes are shown by (metrics, readiness, errors).
pub const QUARANTINE: &str = "quarantine";
pub const RELEASED: &str = "released";

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
    } else {
        e
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

/// Both volumes of the service.
#[derive(Clone)]
pub struct Volumes {
    /// Where uploads land and wait for review.
    pub quarantine: Arc<dyn ObjectStore>,
    /// The workspaces' read-only volumes, one folder per project/workspace/kind.
    pub released: Arc<dyn ObjectStore>,
    quarantine_root: PathBuf,
    released_root: PathBuf,
    /// Bytes declared by uploads in progress (see [`Volumes::reserve_room`]).
    reserved: Arc<AtomicU64>,
    /// One `syncfs` of the quarantine filesystem shared by every writer waiting for one
    /// (`store::durable`): archives always flush through it; quarantine segments do too when
    /// group commit is on ([`Volumes::with_group_commit`]), instead of an fsync of their own.
    data_sync: crate::store::durable::GroupSync,
    group_commit: bool,
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

impl Volumes {
    /// Local directories `data_dir/quarantine` and `data_dir/volumes`.
    pub fn local(data_dir: &Path) -> Result<Self> {
        let quarantine_root = data_dir.join("quarantine");
        let released_root = data_dir.join("volumes");
        std::fs::create_dir_all(&quarantine_root)?;
        std::fs::create_dir_all(&released_root)?;
        // Quarantine is for the service alone; released volumes are read by workspaces.
        set_mode(&quarantine_root, 0o700)?;
        set_mode(&released_root, 0o755)?;
        let quarantine_root = quarantine_root.canonicalize()?;
        let released_root = released_root.canonicalize()?;
        Ok(Self {
            quarantine: Arc::new(LocalFileSystem::new_with_prefix(&quarantine_root)?),
            released: Arc::new(LocalFileSystem::new_with_prefix(&released_root)?),
            quarantine_root: quarantine_root.clone(),
            released_root,
            reserved: Arc::new(AtomicU64::new(0)),
            data_sync: syncfs_of(quarantine_root),
            group_commit: false,
        })
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

    /// Checks both volumes answer (a missing key is a fine answer).
    pub async fn ping(&self) -> Result<()> {
        for store in [&self.quarantine, &self.released] {
            match store.head(&ObjPath::from(".airlock-ready-probe")).await {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for dir in [&self.quarantine_root, &self.released_root] {
            if !dir.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} is not a directory", dir.display()),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Free and total space of each volume's filesystem.
    pub fn space(&self) -> Vec<std::io::Result<Space>> {
        [
            (QUARANTINE, &self.quarantine_root),
            (RELEASED, &self.released_root),
        ]
        .into_iter()
        .map(|(volume, root)| {
            let st = rustix::fs::statvfs(root.as_path()).map_err(std::io::Error::from)?;
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
    /// declared. The room is held until the returned guard drops.
    pub fn reserve_room(&self, len: u64, min_free: u64) -> Result<Room> {
        let st =
            rustix::fs::statvfs(self.quarantine_root.as_path()).map_err(std::io::Error::from)?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let before = self.reserved.fetch_add(len, Ordering::AcqRel);
        let room = free.saturating_sub(min_free).saturating_sub(before);
        let held = Room {
            reserved: self.reserved.clone(),
            len,
        };
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
        let upload = self
            .quarantine
            .put_multipart(&key)
            .await
            .map_err(|e| on_write(QUARANTINE, e))?;
        Ok(SegmentWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            fs_path: self.quarantine_root.join(key.as_ref()),
            written: 0,
            volume: QUARANTINE,
            group: self.group_commit.then(|| self.data_sync.clone()),
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
        let root = self.quarantine_root.clone();
        futures::stream::iter(keys)
            .then(move |key| {
                let path = root.join(key.as_ref());
                async move { local_stream(path, None).await }
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
        let path = self.segment_path(transfer, file, seq);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.set_len(len)?;
            f.sync_all()
        })
        .await
        .map_err(std::io::Error::other)??;
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

    /// Starts writing one released file into staging.
    pub async fn staging_writer(
        &self,
        transfer: TransferId,
        path: &RelPath,
    ) -> Result<SegmentWriter> {
        let key = path
            .object_path(&Self::staging_prefix(transfer))
            .map_err(object_store::Error::from)?;
        let upload = self
            .released
            .put_multipart(&key)
            .await
            .map_err(|e| on_write(RELEASED, e))?;
        Ok(SegmentWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            fs_path: self.released_root.join(key.as_ref()),
            written: 0,
            volume: RELEASED,
            group: None,
        })
    }

    /// The filesystem path of a released folder (local backend).
    pub fn location(&self, dest: &ObjPath) -> PathBuf {
        self.released_root.join(dest.as_ref())
    }

    /// Whether a release folder already exists (published before a crash, say).
    pub fn published(&self, dest: &ObjPath) -> bool {
        self.released_root.join(dest.as_ref()).exists()
    }

    /// Reads a published file (to verify it, or for a collection).
    pub async fn read_published(
        &self,
        dest: &ObjPath,
        path: &RelPath,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let key = path.object_path(dest).map_err(object_store::Error::from)?;
        local_stream(self.released_root.join(key.as_ref()), None).await
    }

    /// Reads `range` of a published file (a collection, resumed where it stopped).
    pub async fn read_published_range(
        &self,
        dest: &ObjPath,
        path: &RelPath,
        range: std::ops::Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let key = path.object_path(dest).map_err(object_store::Error::from)?;
        local_stream(self.released_root.join(key.as_ref()), Some(range)).await
    }

    /// The size of a published file.
    pub async fn published_len(&self, dest: &ObjPath, path: &RelPath) -> Result<u64> {
        let key = path.object_path(dest).map_err(object_store::Error::from)?;
        Ok(self.released.head(&key).await?.size)
    }

    /// Writes a small file (the package's record) into a release's staging area.
    pub async fn stage_bytes(
        &self,
        transfer: TransferId,
        path: &RelPath,
        data: Bytes,
    ) -> Result<()> {
        let mut w = self.staging_writer(transfer, path).await?;
        w.write(data).await?;
        w.finish_unsynced().await?;
        Ok(())
    }

    /// Reads a staged file back, to verify the copy.
    pub async fn read_staged(
        &self,
        transfer: TransferId,
        path: &RelPath,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let key = path
            .object_path(&Self::staging_prefix(transfer))
            .map_err(object_store::Error::from)?;
        let got = self.released.get(&key).await?;
        Ok(got.into_stream().map_err(VolumeError::from).boxed())
    }

    /// Removes a staging area left by an interrupted release.
    pub async fn clear_staging(&self, transfer: TransferId) -> Result<()> {
        let dir = self
            .released_root
            .join(Self::staging_prefix(transfer).as_ref());
        if dir.exists() {
            make_writable(&dir)?;
            tokio::fs::remove_dir_all(&dir).await?;
        }
        Ok(())
    }

    /// Publishes a staged release atomically: files become 0444 and folders 0555, one
    /// `syncfs` makes every staged file durable (they are written without an fsync each),
    /// then one rename makes the whole tree visible at once. Returns the published directory.
    pub async fn publish(&self, transfer: TransferId, dest: &ObjPath) -> Result<PathBuf> {
        let staged = self
            .released_root
            .join(Self::staging_prefix(transfer).as_ref());
        let dest = self.released_root.join(dest.as_ref());
        tokio::task::spawn_blocking(move || -> Result<PathBuf> {
            std::fs::create_dir_all(&staged)?;
            seal_tree(&staged, true)?;
            if let Some(parent) = dest.parent() {
                create_traversable(parent)?;
            }
            // Every file's data, name and mode are on disk before any of them is visible.
            rustix::fs::syncfs(&std::fs::File::open(&staged)?).map_err(std::io::Error::from)?;
            // The top folder stays writable until it is in place: moving a folder to another
            // parent rewrites its `..` entry, which needs write permission on it.
            std::fs::rename(&staged, &dest)?;
            set_mode(&dest, 0o555)?;
            std::fs::File::open(&dest)?.sync_all()?;
            if let Some(parent) = dest.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(dest)
        })
        .await
        .map_err(std::io::Error::other)?
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

    fn writer_at(
        &self,
        key: ObjPath,
        upload: Box<dyn object_store::MultipartUpload>,
    ) -> SegmentWriter {
        SegmentWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            fs_path: self.quarantine_root.join(key.as_ref()),
            written: 0,
            volume: QUARANTINE,
            group: self.group_commit.then(|| self.data_sync.clone()),
        }
    }

    /// Flushes everything written to the quarantine volume's filesystem (file data, new names,
    /// folders) with one `syncfs`: one flush for a whole archive's members.
    pub async fn sync_quarantine(&self) -> Result<()> {
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
        let up = self
            .quarantine
            .put_multipart(&key)
            .await
            .map_err(|e| on_write(QUARANTINE, e))?;
        Ok(self.writer_at(key, up))
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
        let path = self
            .quarantine_root
            .join(Self::archive_key(transfer, upload, seq).as_ref());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.set_len(len)?;
            f.sync_all()
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
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

    /// The folder of the member lists of archives being expanded.
    pub fn archive_spool_dir(&self) -> PathBuf {
        self.quarantine_root.join(".archives")
    }
}

impl Volumes {
    /// Withdraws a published release (revocation): one rename takes the whole tree out of the
    /// workspace's volume at once, then it is deleted (the quarantine copy stays for the
    /// record). Returns false if nothing was published there. Safe to repeat.
    pub async fn withdraw(&self, transfer: TransferId, dest: &ObjPath) -> Result<bool> {
        let dest = self.released_root.join(dest.as_ref());
        let trash = self
            .released_root
            .join(format!(".withdrawn/{transfer}-{}", uuid::Uuid::new_v4()));
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
    fs_path: PathBuf,
    written: u64,
    volume: &'static str,
    /// Group commit: made durable by the volume's shared `syncfs` instead of its own fsync.
    group: Option<crate::store::durable::GroupSync>,
}

impl SegmentWriter {
    pub async fn write(&mut self, buf: Bytes) -> Result<()> {
        // Backpressure: at most three parts in flight.
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

    /// Completes the object and makes it durable (fsync on the local backend). On failure
    /// nothing of it is left: a half-written segment never takes up a full disk.
    pub async fn commit(self) -> Result<u64> {
        let volume = self.volume;
        // A failed `finish` drops its upload, whose staging file goes with it.
        self.upload
            .finish()
            .await
            .map_err(|e| on_write(volume, e))?;
        let path = self.fs_path;
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
    /// together by one [`Volumes::sync_quarantine`] before anything records them.
    pub async fn finish_unsynced(self) -> Result<u64> {
        let volume = self.volume;
        self.upload
            .finish()
            .await
            .map_err(|e| on_write(volume, e))?;
        Ok(self.written)
    }

    pub async fn abort(self) {
        let _ = self.upload.abort().await;
    }
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
