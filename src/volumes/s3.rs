//! Volumes on S3: the client for one volume from its settings (`config::S3Volume`), and the
//! check that the store answers with those credentials.

use crate::config::S3Volume;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::ObjectStore;

/// The S3 client of one volume. Credentials are the configured keys, or, when none are
/// configured, what `AWS_*` variables, a web identity or the instance role give (object_store
/// reads them as the AWS SDKs do).
///
/// A store that does not answer fails a request within about 15 s (a few retries with
/// backoff), so an upload gets its 503 and retry hint instead of hanging.
pub fn client(v: &S3Volume) -> object_store::Result<AmazonS3> {
    let retry = object_store::RetryConfig {
        backoff: Default::default(),
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(15),
    };
    let options = object_store::ClientOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_timeout(std::time::Duration::from_secs(120));
    let mut b = AmazonS3Builder::from_env()
        .with_retry(retry)
        .with_client_options(options)
        .with_region(&v.region)
        .with_bucket_name(&v.bucket)
        .with_virtual_hosted_style_request(!v.path_style);
    if let Some(e) = &v.endpoint {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    if let Some((key, secret)) = &v.credentials {
        b = b.with_access_key_id(key).with_secret_access_key(secret);
    }
    if v.retention.is_some() {
        // AWS wants a content checksum on every upload into a bucket with Object Lock.
        b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
    }
    b.build()
}

/// The volume's root in its bucket.
pub fn root(v: &S3Volume) -> ObjPath {
    ObjPath::from(v.prefix.as_str())
}

/// One listing under the volume's prefix: the store answers, the bucket exists and the
/// credentials may read it.
pub async fn ping(store: &AmazonS3, v: &S3Volume) -> object_store::Result<()> {
    store.list_with_delimiter(Some(&root(v))).await.map(|_| ())
}
