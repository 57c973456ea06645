//! S3 multipart uploads the metadata store knows about. S3 keeps the parts of an upload that
//! was neither completed nor aborted, and bills them, for ever; a replica killed mid-upload
//! cannot abort its own. So every upload is recorded (`store::uploads`) before its first part,
//! touched as its parts go in, and forgotten once completed or aborted; the sweep
//! ([`super::Volumes::sweep_uploads`]) aborts what a dead replica left untouched.

use futures::future::BoxFuture;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{MultipartId, MultipartUpload, PutPayload, PutResult, UploadPart};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Where uploads in progress are recorded (the metadata store, shared by every replica).
pub trait UploadRegistry: Send + Sync + 'static {
    fn started(
        &self,
        volume: &str,
        key: &str,
        upload_id: &str,
    ) -> BoxFuture<'_, Result<(), String>>;
    fn touched(&self, upload_id: &str) -> BoxFuture<'_, Result<(), String>>;
    fn ended(&self, upload_id: &str) -> BoxFuture<'_, Result<(), String>>;
}

impl UploadRegistry for crate::store::Store {
    fn started(
        &self,
        volume: &str,
        key: &str,
        upload_id: &str,
    ) -> BoxFuture<'_, Result<(), String>> {
        let (volume, key, id) = (volume.to_owned(), key.to_owned(), upload_id.to_owned());
        Box::pin(async move {
            self.upload_started(&volume, &key, &id)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn touched(&self, upload_id: &str) -> BoxFuture<'_, Result<(), String>> {
        let id = upload_id.to_owned();
        Box::pin(async move { self.upload_touched(&id).await.map_err(|e| e.to_string()) })
    }

    fn ended(&self, upload_id: &str) -> BoxFuture<'_, Result<(), String>> {
        let id = upload_id.to_owned();
        Box::pin(async move { self.upload_ended(&id).await.map_err(|e| e.to_string()) })
    }
}

/// How often a writer touches its record while parts go in. The sweep takes an upload
/// untouched for [`STALE_AFTER_MS`] as abandoned: far longer, so a live one is never taken.
pub const TOUCH_EVERY_MS: i64 = 60_000;
pub const STALE_AFTER_MS: i64 = 15 * 60_000;

/// One recorded multipart upload, driven by object_store's `WriteMultipart`.
pub struct Tracked {
    s3: Arc<AmazonS3>,
    /// The object's full key in the bucket.
    path: ObjPath,
    id: MultipartId,
    parts: Arc<Mutex<Vec<Option<PartId>>>>,
    registry: Arc<dyn UploadRegistry>,
    last_touch: Arc<AtomicI64>,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("path", &self.path)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn generic(e: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: e.into(),
    }
}

impl Tracked {
    /// Creates the upload on S3 and records it (`volume`, `key` relative to the volume's
    /// root). If it cannot be recorded it is aborted at once: nothing unrecorded is left.
    pub async fn start(
        s3: Arc<AmazonS3>,
        registry: Arc<dyn UploadRegistry>,
        volume: &'static str,
        root: &ObjPath,
        key: &ObjPath,
    ) -> object_store::Result<Self> {
        let path = join(root, key);
        let id = s3.create_multipart(&path).await?;
        if let Err(e) = registry.started(volume, key.as_ref(), &id).await {
            let _ = s3.abort_multipart(&path, &id).await;
            return Err(generic(format!("cannot record the multipart upload: {e}")));
        }
        Ok(Self {
            s3,
            path,
            id,
            parts: Default::default(),
            registry,
            last_touch: Arc::new(AtomicI64::new(now_ms())),
        })
    }

    async fn forget(&self) {
        if let Err(e) = self.registry.ended(&self.id).await {
            // Left recorded, the sweep aborts it later: S3 answers that it is gone.
            tracing::warn!(upload = %self.id, error = %e, "could not forget a finished upload");
        }
    }
}

/// `root/key`.
pub fn join(root: &ObjPath, key: &ObjPath) -> ObjPath {
    root.parts().chain(key.parts()).collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait::async_trait]
impl MultipartUpload for Tracked {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let idx = {
            let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            parts.push(None);
            parts.len() - 1
        };
        let (s3, path, id) = (self.s3.clone(), self.path.clone(), self.id.clone());
        let (parts, registry, last) = (
            self.parts.clone(),
            self.registry.clone(),
            self.last_touch.clone(),
        );
        Box::pin(async move {
            let part = s3.put_part(&path, &id, idx, data).await?;
            parts.lock().unwrap_or_else(|p| p.into_inner())[idx] = Some(part);
            let now = now_ms();
            let before = last.load(Ordering::Relaxed);
            if now - before >= TOUCH_EVERY_MS
                && last
                    .compare_exchange(before, now, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                if let Err(e) = registry.touched(&id).await {
                    tracing::warn!(upload = %id, error = %e, "could not touch an upload's record");
                }
            }
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Option<Vec<PartId>> = self
            .parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let parts = parts.ok_or_else(|| generic("a part of the upload is missing".into()))?;
        let done = self
            .s3
            .complete_multipart(&self.path, &self.id, parts)
            .await?;
        self.forget().await;
        Ok(done)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.s3.abort_multipart(&self.path, &self.id).await?;
        self.forget().await;
        Ok(())
    }
}
