//! `App`: everything a request or a background job needs, built once at start-up.

use crate::auth::Keys;
use crate::config::Settings;
use crate::policy::Policies;
use crate::store::Store;
use crate::volumes::Volumes;
use crate::workflow::upload::UploadLocks;
use std::sync::Arc;

pub struct App {
    /// The validated settings the service started with.
    pub settings: Settings,
    /// Metadata: users, transfers, files, audit log.
    pub store: Store,
    /// Quarantine and released volumes.
    pub volumes: Volumes,
    /// The token signing key (`jwt.key` in `[storage] keys_dir`, default `data_dir/keys`).
    pub keys: Keys,
    /// Checks staff tokens from the institution's OIDC provider, with its cached keys;
    /// `None` unless `[auth]` is configured (then only local tokens are accepted).
    pub oidc: Option<crate::auth::oidc::OidcVerifier>,
    /// The policy of each tier, and the overrides workspaces point to.
    pub policies: Policies,
    /// One lock and running hash per upload in progress, so a resumed tus upload continues
    /// the digests without re-reading what it already stored.
    pub uploads: UploadLocks,
    /// Wakes the background worker (release, expiry) when there is work now.
    pub jobs: tokio::sync::Notify,
    /// This process's name as a lease holder (`workflow::lease`): unique per start.
    pub replica: String,
    /// The configured scanners (scanners/).
    pub scanners: Arc<crate::scan::Scanners>,
    /// Wakes the scan worker when a transfer is sealed.
    pub scan_jobs: tokio::sync::Notify,
    /// Every Prometheus metric, in the one registry `/metrics` encodes.
    pub metrics: crate::metrics::Metrics,
    /// Upload-token uses and refusals of the current window, summarised at its end
    /// (`[audit] summary_window`).
    pub token_events: crate::workflow::refusals::TokenEvents,
    /// Refused authentications of the current window, per address and credential: past the
    /// limits, 429 before any token is checked (`[audit] refusals_per_client`, `_per_token`).
    pub refusal_throttle: crate::workflow::throttle::RefusalThrottle,
    /// Signs the audit chain's head (`keys/anchor.key`).
    pub anchor_key: Arc<crate::audit::AnchorKey>,
    /// tus archive uploads being expanded as their pieces arrive, on this replica.
    pub expansions: crate::workflow::archive_upload::Expansions,
    /// This `App` itself, for work that outlives the request that starts it (an expansion).
    me: std::sync::Weak<App>,
}

impl App {
    /// The shared handle of this `App` (`None` only while it is being dropped).
    pub fn handle(&self) -> Option<Arc<App>> {
        self.me.upgrade()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    #[error(transparent)]
    Token(#[from] crate::auth::TokenError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Scanner(#[from] crate::scan::ScannerConfigError),
    #[error(transparent)]
    AuditKey(#[from] crate::audit::key::KeyError),
    #[error(transparent)]
    Anchor(#[from] crate::audit::anchor::AnchorError),
    #[error("cannot build the HTTP client for `[auth] jwks_url`: {0}")]
    Oidc(#[source] reqwest::Error),
    /// Retention is configured for the released volume but its bucket has no Object Lock.
    #[error("{0}")]
    ObjectLock(String),
}

impl App {
    /// Opens the data directory: database, volumes, key and policies.
    pub async fn open(settings: Settings) -> Result<Arc<App>, StartError> {
        let dir = settings.storage.data_dir.clone();
        private_data_dir(&dir).map_err(|source| StartError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let group = settings.storage.group_commit;
        let store = match &settings.database.url {
            Some(url) => Store::open_url(url, group).await?,
            None => Store::open_sqlite_with(&dir.join("airlock.db"), group).await?,
        };
        let volumes =
            Volumes::open(&dir, &settings.storage)?.with_registry(Arc::new(store.clone()));
        let volumes = if group {
            volumes.with_group_commit()
        } else {
            volumes
        };
        volumes
            .check_object_lock()
            .await
            .map_err(StartError::ObjectLock)?;
        let keys_dir = settings.storage.keys_dir();
        let keys = Keys::load_or_create(&keys_dir)?;
        // The provider's keys are fetched at first need, so a provider that is down never
        // stops airlock starting (`auth::oidc`).
        let oidc = crate::auth::oidc::OidcVerifier::from_settings(&settings.auth)
            .map_err(StartError::Oidc)?;
        // The audit key and the anchor key live beside jwt.key, outside the database.
        let (events, keyed) = store.audit_counts().await?;
        let chain_key = crate::audit::ChainKey::load_or_create(&keys_dir, events, keyed)?;
        let store = store.with_chain_key(chain_key);
        let anchor_key = Arc::new(crate::audit::AnchorKey::load_or_create(&keys_dir)?);
        let scanners = Arc::new(crate::scan::Scanners::load(
            settings.scanning.dir.as_deref(),
            settings.scanning.clamd.as_deref(),
        )?);
        let policies = Policies::load(settings.policy.dir.as_deref(), scanners.clone())?;
        // Every override a workspace points to is checked now, so a bad file stops the start.
        for (file, tier) in store.workspace_policy_files().await? {
            policies.for_workspace(tier, Some(&file))?;
        }
        let max_immediate = settings.audit.max_immediate_events;
        let refusal_throttle = crate::workflow::throttle::RefusalThrottle::new(
            settings.audit.summary_window,
            settings.audit.refusals_per_client,
            settings.audit.refusals_per_token,
        );
        Ok(Arc::new_cyclic(|me| App {
            me: me.clone(),
            replica: format!("{}:{}", std::process::id(), uuid::Uuid::new_v4()),
            expansions: Default::default(),
            settings,
            store,
            volumes,
            keys,
            oidc,
            policies,
            uploads: UploadLocks::default(),
            jobs: tokio::sync::Notify::new(),
            scanners,
            scan_jobs: tokio::sync::Notify::new(),
            metrics: crate::metrics::Metrics::new(),
            token_events: crate::workflow::refusals::TokenEvents::new(max_immediate),
            refusal_throttle,
            anchor_key,
        }))
    }
}

/// Makes the data directory the service's alone, whatever the umask it was started with:
/// the process umask becomes 077, so every file it creates from now on (database, journal,
/// segments, scratch copies, keys) is 0600 and every folder 0700; the data directory is made
/// 0700 and the database files already there 0600 (installations from before). Released
/// volumes set their own modes explicitly (files 0444, folders 0555 and 0755).
fn private_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use rustix::fs::Mode;
    rustix::process::umask(Mode::from_raw_mode(0o077));
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for name in ["airlock.db", "airlock.db-wal", "airlock.db-shm"] {
            let p = dir.join(name);
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

impl App {
    /// The policy in force for a workspace.
    pub fn policy(
        &self,
        ws: &crate::store::Workspace,
    ) -> Result<Arc<crate::policy::Policy>, crate::workflow::Error> {
        self.policies
            .for_workspace(ws.tier, ws.policy_file.as_deref())
            .map_err(|e| crate::workflow::Error::Internal(e.to_string()))
    }
}
