//! S3 Object Lock retention of released objects (`[storage.volumes.released] retention_days`).
//!
//! object_store has no Object Lock calls, so these go through `aws-sdk-s3`, on its own client
//! for the released volume: the same endpoint, region, addressing and credentials as the
//! volume's object_store client (the configured keys, or object_store's own provider, so the
//! environment, a web identity or the instance role serve both alike).
//!
//! - At start ([`Volumes::check_object_lock`]): the released volume's bucket must answer
//!   `GetObjectLockConfiguration` with Object Lock `Enabled`, or airlock does not start. Garage
//!   has no Object Lock; AWS and MinIO have it on buckets created with it.
//! - At publish ([`before_manifest`], [`after_manifest`]): every object the release's manifest
//!   lists gets `PutObjectRetention` (mode, now + days), then the manifest is written, then it
//!   gets its own. Only at publish, so an unpublished release's leftovers can still be cleared
//!   before a retry (`Volumes::clear_staging`). A failure fails the release, which retries.
//! - Revocation (`Volumes::withdraw`) deletes without a version id: on a bucket with Object
//!   Lock (always versioned) that adds a delete marker, so the release is gone for readers at
//!   once while its locked versions stay in the bucket until their retention ends.

use super::{Result, Shelf, VolumeError, Volumes};
use crate::config::{Retention, RetentionMode, S3Volume};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockRetention, ObjectLockRetentionMode};
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use std::time::Duration;

/// Released objects whose retention is being set at once.
const AT_ONCE: usize = 8;

/// The Object Lock client of the released volume, and the retention it applies.
#[derive(Clone, Debug)]
pub struct Locker {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// The volume's root in the bucket (keys are relative to it, as in object_store).
    root: ObjPath,
    /// Where the store is, as shown in messages.
    endpoint: String,
    retention: Retention,
}

impl Locker {
    /// The Object Lock client for the volume `v` on S3, whose object_store client is `store`
    /// (its credential provider is used when no keys are configured). `None` when the
    /// volume has no retention.
    pub fn new(v: &S3Volume, store: &object_store::aws::AmazonS3) -> Option<Locker> {
        let retention = v.retention?;
        Some(Locker {
            client: client(v, store),
            bucket: v.bucket.clone(),
            root: super::s3::root(v),
            endpoint: v
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("AWS S3 in {}", v.region)),
            retention,
        })
    }

    /// The bucket's Object Lock is on, or what the store answered instead (a message for the
    /// operator, naming the bucket, the endpoint and what to do).
    pub async fn check(&self) -> std::result::Result<(), String> {
        let (bucket, endpoint, days) = (&self.bucket, &self.endpoint, self.retention.days);
        let setting = format!(
            "retention is configured for the released volume ([storage.volumes.released] \
             retention_days = {days})"
        );
        let todo = "Create the bucket with S3 Object Lock enabled (or enable it on it), or \
                    remove retention_days (AIRLOCK__STORAGE__VOLUMES__RELEASED__RETENTION_DAYS)";
        let answered = match self
            .client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => {
                let enabled = out
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled());
                if enabled == Some(&ObjectLockEnabled::Enabled) {
                    return Ok(());
                }
                match enabled {
                    Some(e) => format!("Object Lock is `{}`", e.as_str()),
                    None => "a configuration without ObjectLockEnabled".into(),
                }
            }
            Err(SdkError::ServiceError(e)) => {
                let e = e.err();
                format!(
                    "{}: {}",
                    e.code().unwrap_or("an error without a code"),
                    e.message().unwrap_or("no message")
                )
            }
            Err(e) => {
                return Err(format!(
                    "{setting}, but the store at endpoint `{endpoint}` did not answer whether \
                     bucket `{bucket}` has S3 Object Lock enabled: {}. Check that the store \
                     is up and reachable, or remove retention_days",
                    DisplayErrorContext(&e)
                ))
            }
        };
        Err(format!(
            "{setting}, but bucket `{bucket}` at endpoint `{endpoint}` does not have S3 Object \
             Lock enabled (or the store does not support it, as Garage does not); the store \
             answered: {answered}. {todo}"
        ))
    }

    /// Sets the retention of the object `key` (relative to the volume's root) to now + days.
    pub(super) async fn retain(&self, key: &ObjPath) -> Result<()> {
        let full: ObjPath = self.root.parts().chain(key.parts()).collect();
        let days = i64::from(self.retention.days);
        let until = aws_sdk_s3::primitives::DateTime::from_secs(
            chrono::Utc::now().timestamp() + days * 86_400,
        );
        let mode = match self.retention.mode {
            RetentionMode::Compliance => ObjectLockRetentionMode::Compliance,
            RetentionMode::Governance => ObjectLockRetentionMode::Governance,
        };
        let retention = ObjectLockRetention::builder()
            .mode(mode)
            .retain_until_date(until)
            .build();
        match self
            .client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(full.as_ref())
            .retention(retention)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let why = format!(
                    "could not set the Object Lock retention of s3://{}/{full}: {}",
                    self.bucket,
                    DisplayErrorContext(&e)
                );
                Err(match e {
                    SdkError::ServiceError(_) => VolumeError::Retention(why),
                    _ => VolumeError::Unavailable(why),
                })
            }
        }
    }
}

/// Bridges object_store's AWS credential provider (keys from the environment, a web
/// identity, the instance role; cached and refreshed by object_store) to aws-sdk-s3.
#[derive(Debug)]
struct FromObjectStore(object_store::aws::AwsCredentialProvider);

impl aws_credential_types::provider::ProvideCredentials for FromObjectStore {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let c = self.0.get_credential().await.map_err(|e| {
                aws_credential_types::provider::error::CredentialsError::provider_error(e)
            })?;
            Ok(Credentials::new(
                &c.key_id,
                &c.secret_key,
                c.token.clone(),
                None,
                "object_store",
            ))
        })
    }
}

/// An aws-sdk-s3 client for the volume `v`: HTTPS on rustls with ring, its endpoint, region
/// and addressing, and its credentials: the configured keys, or `store`'s provider.
pub fn client(v: &S3Volume, store: &object_store::aws::AmazonS3) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let (credentials, cache) = match &v.credentials {
        Some((key, secret)) => (
            SharedCredentialsProvider::new(Credentials::new(
                key,
                secret,
                None,
                None,
                "airlock-settings",
            )),
            aws_sdk_s3::config::IdentityCache::lazy().build(),
        ),
        // object_store caches and refreshes its credentials itself: ask it every time.
        None => (
            SharedCredentialsProvider::new(FromObjectStore(store.credentials().clone())),
            aws_sdk_s3::config::IdentityCache::no_cache(),
        ),
    };
    // As the object_store client: a store that does not answer fails within seconds.
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(60))
        .build();
    let mut conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new(v.region.clone()))
        .credentials_provider(credentials)
        .identity_cache(cache)
        .force_path_style(v.path_style)
        .timeout_config(timeouts)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3));
    if let Some(e) = &v.endpoint {
        conf = conf.endpoint_url(e);
    }
    aws_sdk_s3::Client::from_conf(conf.build())
}

impl Volumes {
    /// With retention configured for the released volume: its bucket has S3 Object Lock
    /// enabled, or the reason airlock must not start.
    pub async fn check_object_lock(&self) -> std::result::Result<(), String> {
        match &self.rel.lock {
            Some(lock) => lock.check().await,
            None => Ok(()),
        }
    }
}

/// Before a release's manifest is written to `shelf`: every object `spool` (its JSON lines)
/// lists under `dest` gets its retention, [`AT_ONCE`] at a time, the file read a line at a
/// time (memory does not grow with the number of files). Nothing without retention.
pub(super) async fn before_manifest(
    shelf: &Shelf,
    dest: &ObjPath,
    spool: &std::path::Path,
) -> Result<()> {
    let Some(lock) = &shelf.lock else {
        return Ok(());
    };
    use tokio::io::AsyncBufReadExt;
    #[derive(serde::Deserialize)]
    struct Line {
        path: String,
    }
    let lines = tokio::io::BufReader::new(tokio::fs::File::open(spool).await?).lines();
    let lines = futures::stream::try_unfold(lines, |mut lines| async move {
        Ok::<_, VolumeError>(lines.next_line().await?.map(|l| (l, lines)))
    });
    lines
        .try_for_each_concurrent(AT_ONCE, |line| async move {
            if line.trim().is_empty() {
                return Ok(());
            }
            let path = serde_json::from_str::<Line>(&line)
                .map_err(|e| {
                    VolumeError::Retention(format!("a manifest line of {dest} is not JSON: {e}"))
                })?
                .path;
            let path = crate::domain::RelPath::parse(&path)
                .map_err(|e| VolumeError::Retention(format!("{dest}: {path}: {e}")))?;
            let key = path.object_path(dest).map_err(object_store::Error::from)?;
            lock.retain(&key).await
        })
        .await
}

/// After a release's manifest is written to `shelf`: the manifest gets its retention. If it
/// cannot, the manifest is deleted again (the release is not published without it) and the
/// release fails, to be retried.
pub(super) async fn after_manifest(shelf: &Shelf, dest: &ObjPath) -> Result<()> {
    let Some(lock) = &shelf.lock else {
        return Ok(());
    };
    let manifest = Volumes::manifest_key(dest);
    if let Err(e) = lock.retain(&manifest).await {
        if let Err(d) = shelf.store.delete(&manifest).await {
            tracing::error!(%dest, cause = %d, "a manifest without its retention could not be deleted");
        }
        return Err(e);
    }
    Ok(())
}
