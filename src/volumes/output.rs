//! Workspace output volumes on S3 (`[storage.volumes.output] backend = "s3"`): each
//! workspace writes its outputs under `s3://BUCKET/PREFIX/output/<project>/<workspace>/`, and
//! airlock only ever reads there. An egress request lists that prefix, pins chosen objects
//! by streaming them into quarantine, and later compares the pinned copies with what is there
//! (`workflow::egress`). On local disk, the output volume is a folder per workspace and none
//! of this is used.
//!
//! An S3 prefix has no links, devices or folders to escape through: a key is a name. What
//! must hold is that what is pinned is one version of the object, the one that was listed:
//! every read checks the object's entity tag and size against the listing's.

use super::{Result, Shelf, VolumeError, Volumes};
use crate::domain::RelPath;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::ObjectStore;

/// The name the output volume is shown by.
pub const OUTPUT: &str = "output";

/// One object of a workspace's output prefix on S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputObject {
    /// The key relative to the workspace's output prefix (`tables/counts.csv`).
    pub rel: String,
    pub size: u64,
    /// The store's entity tag: a new one for every write of the key.
    pub e_tag: Option<String>,
    /// When the object was last written, in nanoseconds since the epoch (S3 gives seconds).
    pub modified_ns: i64,
}

impl OutputObject {
    fn of(meta: object_store::ObjectMeta, base: &str) -> Self {
        let key = meta.location.to_string();
        Self {
            rel: key.strip_prefix(base).unwrap_or(&key).to_owned(),
            size: meta.size,
            e_tag: meta.e_tag,
            modified_ns: meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
        }
    }
}

impl Volumes {
    /// Whether workspace outputs are on S3 (else each workspace has a local folder).
    pub fn output_on_s3(&self) -> bool {
        self.out.is_some()
    }

    fn out_shelf(&self) -> Result<&Shelf> {
        self.out
            .as_ref()
            .ok_or_else(|| VolumeError::Io(std::io::Error::other("the output volume is not on S3")))
    }

    fn output_base(project: &str, workspace: &str) -> ObjPath {
        ObjPath::from_iter([project, workspace])
    }

    /// Where a workspace writes its outputs on S3: `s3://BUCKET/PREFIX/output/<project>/<ws>/`.
    pub fn output_location(&self, project: &str, workspace: &str) -> Option<String> {
        let shelf = self.out.as_ref()?;
        Some(format!(
            "{}{}/",
            shelf.shown(),
            Self::output_base(project, workspace)
        ))
    }

    /// The objects under a workspace's output prefix (under `under` in it, when given), in
    /// key order, streamed a page at a time.
    pub fn list_output(
        &self,
        project: &str,
        workspace: &str,
        under: Option<&RelPath>,
    ) -> Result<BoxStream<'static, Result<OutputObject>>> {
        let shelf = self.out_shelf()?;
        let root = Self::output_base(project, workspace);
        let prefix = match under {
            Some(rel) => rel.object_path(&root)?,
            None => root.clone(),
        };
        let base = format!("{root}/");
        Ok(shelf
            .store
            .list(Some(&prefix))
            .map_err(VolumeError::from)
            .map_ok(move |m| OutputObject::of(m, &base))
            .boxed())
    }

    /// The object at `rel` in a workspace's output prefix, if there is one.
    pub async fn head_output(
        &self,
        project: &str,
        workspace: &str,
        rel: &RelPath,
    ) -> Result<Option<OutputObject>> {
        let shelf = self.out_shelf()?;
        let root = Self::output_base(project, workspace);
        match shelf.store.head(&rel.object_path(&root)?).await {
            Ok(m) => Ok(Some(OutputObject::of(m, &format!("{root}/")))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of `obj`, as listed: `Ok(None)` when the object there now is another (its
    /// entity tag or size differs, or it is gone), so what is read is always the listed one.
    pub async fn read_output(
        &self,
        project: &str,
        workspace: &str,
        obj: &OutputObject,
    ) -> Result<Option<BoxStream<'static, Result<Bytes>>>> {
        let shelf = self.out_shelf()?;
        let rel = RelPath::parse(&obj.rel)
            .map_err(|e| VolumeError::Io(std::io::Error::other(format!("{}: {e}", obj.rel))))?;
        let key = rel.object_path(&Self::output_base(project, workspace))?;
        let got = match shelf.store.get(&key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if got.meta.size != obj.size || got.meta.e_tag != obj.e_tag {
            return Ok(None);
        }
        Ok(Some(got.into_stream().map_err(VolumeError::from).boxed()))
    }
}

impl From<object_store::path::Error> for VolumeError {
    fn from(e: object_store::path::Error) -> Self {
        VolumeError::Store(e.into())
    }
}
