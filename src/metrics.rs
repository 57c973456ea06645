//! Prometheus metrics: one registry, built at start-up and held by `App`, that `GET /metrics`
//! encodes (the OpenMetrics text format, through the `prometheus-client` crate).
//!
//! What happens is counted where it happens, with one call from the code that does it
//! (`app.metrics.ingested(..)` when an upload completes, `released(..)` when a release is
//! recorded, `verified(..)` when a re-verification is recorded). What *is* (transfers by state,
//! background work waiting, free space, upload buffers) is read at scrape time: two indexed
//! statements at most once per [`REFRESH`], however often `/metrics` is called, so an
//! unauthenticated flood of scrapes costs the database nothing more. Counters are this
//! process's (they restart at 0); the store-backed gauges are the whole store's, so replicas
//! sharing one database all report the same transfers and queues.
//!
//! `/metrics` needs no token, so no label ever carries a name, a path or an id: labels are
//! closed sets (states, queues, reasons, volumes, the route *templates* of the route table,
//! methods, status classes). An unknown method is `other`, a path no route matched is
//! `unmatched`, so a client cannot grow the label sets by what it sends.

use crate::domain::TransferState;
use crate::store::{Queues, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::{Duration, Instant};

/// How long values read from the store at scrape time are reused.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Where a verified copy lies, and what an integrity check can find (the label values of
/// `airlock_integrity_incidents_total`, all shown from the start, at 0).
const LOCATIONS: [&str; 2] = [crate::volumes::QUARANTINE, crate::volumes::RELEASED];
const INCIDENT_KINDS: [&str; 3] = ["changed", "missing", "unexpected"];

/// Why an upload was refused (`server::limits`), all shown from the start.
pub const REFUSALS: [&str; 4] = ["per_token", "per_address", "idle_timeout", "buffers_busy"];

/// The methods the route table uses; anything else is counted as `other`.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IncidentLabels {
    kind: &'static str,
    location: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// The route template (`/api/v1/transfers/{id}`), never the path that was asked for.
    route: String,
    method: &'static str,
    /// `2xx`, `4xx`, ...
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

type Timings = Family<HttpLabels, Histogram, fn() -> Histogram>;

/// Request durations: 0.5 ms to about 16 s, doubling (the status-read target is 20 ms p99).
fn http_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the service. Cheap to update from any thread: counters and gauges are
/// atomics, families take a read lock once their label set exists.
pub struct Metrics {
    registry: Registry,
    incidents: Family<IncidentLabels, Counter>,
    verified_files: Counter,
    verified_bytes: Counter,
    ingested_files: Counter,
    ingested_bytes: Counter,
    upload_seconds: Histogram,
    released_files: Counter,
    released_bytes: Counter,
    release_seconds: Histogram,
    http: Timings,
    transfers: Family<StateLabels, Gauge>,
    queues: Family<QueueLabels, Gauge>,
    volume_free: Family<VolumeLabels, Gauge>,
    volume_size: Family<VolumeLabels, Gauge>,
    upload_buffers: Family<KindLabels, Gauge>,
    upload_refusals: Family<ReasonLabels, Counter>,
    scrape_errors: Counter,
    /// When the store was last read for the scrape-time gauges; held while reading, so
    /// concurrent scrapes wait for one read instead of each making their own.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds the registry with every metric, each labelled series that has a fixed label
    /// set already present at 0 (so a dashboard sees "none yet", not "no data").
    pub fn new() -> Self {
        let mut r = Registry::default();
        let incidents = Family::<IncidentLabels, Counter>::default();
        r.register(
            "airlock_integrity_incidents",
            "Files found changed, missing or unexpected at rest",
            incidents.clone(),
        );
        for kind in INCIDENT_KINDS {
            for location in LOCATIONS {
                let _ = incidents.get_or_create(&IncidentLabels { kind, location });
            }
        }
        let verified_files = Counter::default();
        r.register(
            "airlock_integrity_files_verified",
            "Files re-hashed",
            verified_files.clone(),
        );
        let verified_bytes = Counter::default();
        r.register(
            "airlock_integrity_bytes_verified",
            "Bytes re-hashed",
            verified_bytes.clone(),
        );
        let ingested_files = Counter::default();
        r.register(
            "airlock_ingested_files",
            "Files whose upload completed (both digests recorded)",
            ingested_files.clone(),
        );
        let ingested_bytes = Counter::default();
        r.register(
            "airlock_ingested_bytes",
            "Bytes of the files whose upload completed",
            ingested_bytes.clone(),
        );
        // 5 ms to about 6 h, in factors of 4: a tiny PUT to a 100 GB tus upload.
        let upload_seconds = Histogram::new(exponential_buckets(0.005, 4.0, 12));
        r.register(
            "airlock_upload_duration_seconds",
            "Time from a file's creation (PUT or tus POST) to its completion",
            upload_seconds.clone(),
        );
        let released_files = Counter::default();
        r.register(
            "airlock_released_files",
            "Files copied, verified and published to a released volume",
            released_files.clone(),
        );
        let released_bytes = Counter::default();
        r.register(
            "airlock_released_bytes",
            "Bytes of the released files",
            released_bytes.clone(),
        );
        let release_seconds = Histogram::new(exponential_buckets(0.01, 4.0, 12));
        r.register(
            "airlock_release_duration_seconds",
            "Time to copy, verify and publish one approved transfer",
            release_seconds.clone(),
        );
        let http: Timings = Family::new_with_constructor(http_buckets);
        r.register(
            "airlock_http_request_duration_seconds",
            "HTTP requests until the response head, by route template, method and status class",
            http.clone(),
        );
        let transfers = Family::<StateLabels, Gauge>::default();
        r.register(
            "airlock_transfers",
            "Transfers in each state",
            transfers.clone(),
        );
        for s in TransferState::ALL {
            let _ = transfers.get_or_create(&StateLabels { state: s.as_str() });
        }
        let queues = Family::<QueueLabels, Gauge>::default();
        r.register(
            "airlock_background_waiting",
            "Background work waiting, by queue",
            queues.clone(),
        );
        let volume_free = Family::<VolumeLabels, Gauge>::default();
        r.register(
            "airlock_volume_free_bytes",
            "Bytes still free on the volume's filesystem",
            volume_free.clone(),
        );
        let volume_size = Family::<VolumeLabels, Gauge>::default();
        r.register(
            "airlock_volume_size_bytes",
            "Size of the volume's filesystem",
            volume_size.clone(),
        );
        let upload_buffers = Family::<KindLabels, Gauge>::default();
        r.register(
            "airlock_upload_buffer_bytes",
            "Memory for upload buffers: the budget and what uploads hold now",
            upload_buffers.clone(),
        );
        let upload_refusals = Family::<ReasonLabels, Counter>::default();
        r.register(
            "airlock_upload_refusals",
            "Upload requests refused or cut off, by reason",
            upload_refusals.clone(),
        );
        for reason in REFUSALS {
            let _ = upload_refusals.get_or_create(&ReasonLabels { reason });
        }
        let scrape_errors = Counter::default();
        r.register(
            "airlock_metrics_store_errors",
            "Scrapes whose store-backed values could not be read (the previous values were shown)",
            scrape_errors.clone(),
        );
        Self {
            registry: r,
            incidents,
            verified_files,
            verified_bytes,
            ingested_files,
            ingested_bytes,
            upload_seconds,
            released_files,
            released_bytes,
            release_seconds,
            http,
            transfers,
            queues,
            volume_free,
            volume_size,
            upload_buffers,
            upload_refusals,
            scrape_errors,
            refreshed: tokio::sync::Mutex::new(None),
        }
    }

    /// A file's upload completed now: `bytes` long, created at `created_at` (the file row's
    /// RFC 3339 time), which the upload-duration histogram measures from.
    pub fn ingested(&self, bytes: u64, created_at: &str) {
        self.ingested_files.inc();
        self.ingested_bytes.inc_by(bytes);
        self.observe_upload(created_at);
    }

    /// A tar archive's `files` members, `bytes` bytes in all, were accepted: one upload, begun
    /// at `created_at` (RFC 3339).
    pub fn ingested_archive(&self, files: u64, bytes: u64, created_at: &str) {
        self.ingested_files.inc_by(files);
        self.ingested_bytes.inc_by(bytes);
        self.observe_upload(created_at);
    }

    fn observe_upload(&self, created_at: &str) {
        match chrono::DateTime::parse_from_rfc3339(created_at) {
            Ok(t) => {
                let ms = (chrono::Utc::now().timestamp_millis() - t.timestamp_millis()).max(0);
                self.upload_seconds.observe(ms as f64 / 1000.0);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: unreadable file creation time"),
        }
    }

    /// A transfer of `files` files and `bytes` bytes was released, the copy taking `took`.
    pub fn released(&self, files: u64, bytes: u64, took: Duration) {
        self.released_files.inc_by(files);
        self.released_bytes.inc_by(bytes);
        self.release_seconds.observe(took.as_secs_f64());
    }

    /// A verification re-hashed `files` files holding `bytes` bytes.
    pub fn verified(&self, files: u64, bytes: u64) {
        self.verified_files.inc_by(files);
        self.verified_bytes.inc_by(bytes);
    }

    /// A new integrity incident: `kind` is `changed`, `missing` or `unexpected`.
    pub fn incident(&self, kind: &str, location: &str) {
        self.incidents_n(kind, location, 1);
    }

    /// `n` new integrity incidents of one kind and location (those counted, not named, by one
    /// verification).
    pub fn incidents_n(&self, kind: &str, location: &str, n: u64) {
        // Only the closed sets become labels, whatever a caller passes.
        let (Some(kind), Some(location)) = (
            INCIDENT_KINDS.iter().find(|k| **k == kind),
            LOCATIONS.iter().find(|l| **l == location),
        ) else {
            return;
        };
        self.incidents
            .get_or_create(&IncidentLabels { kind, location })
            .inc_by(n);
    }

    /// The counters of uploads refused by `server::limits`, for its limiter to hold.
    pub fn upload_refusals(&self) -> UploadRefusals {
        UploadRefusals(self.upload_refusals.clone())
    }

    /// One HTTP request: its route template (`None`: no route matched), method, status and
    /// time to the response head.
    pub fn request(&self, route: Option<&str>, method: &str, status: u16, took: Duration) {
        let method = METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("other");
        let status = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = HttpLabels {
            route: route.unwrap_or(UNMATCHED).to_owned(),
            method,
            status,
        };
        self.http.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Reads what is (transfers by state, background work, free space) and encodes every
    /// metric. `buffers` is the upload-buffer budget and what is held now, when the server
    /// has a limiter.
    pub async fn scrape(
        &self,
        store: &Store,
        volumes: &crate::volumes::Volumes,
        buffers: Option<(u64, u64)>,
    ) -> String {
        self.refresh(store).await;
        for s in volumes.space() {
            match s {
                Ok(s) => {
                    let v = VolumeLabels { volume: s.volume };
                    self.volume_free.get_or_create(&v).set(gauge(s.free));
                    self.volume_size.get_or_create(&v).set(gauge(s.total));
                }
                Err(e) => tracing::warn!(error = %e, "metrics: free space"),
            }
        }
        if let Some((budget, reserved)) = buffers {
            for (kind, v) in [("budget", budget), ("reserved", reserved)] {
                self.upload_buffers
                    .get_or_create(&KindLabels { kind })
                    .set(gauge(v));
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; should the encoder ever refuse, say so.
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        out
    }

    /// Reads the store-backed gauges, at most once per [`REFRESH`].
    async fn refresh(&self, store: &Store) {
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        let now = chrono::Utc::now().timestamp_millis();
        match (store.transfers_by_state().await, store.queues(now).await) {
            (Ok(states), Ok(q)) => {
                self.set_states(&states);
                self.set_queues(q);
                *last = Some(Instant::now());
            }
            (Err(e), _) | (_, Err(e)) => {
                self.scrape_errors.inc();
                tracing::error!(error = %e, "metrics: cannot read the store");
            }
        }
    }

    fn set_states(&self, counts: &[(String, u64)]) {
        // Every state is set, so one that emptied shows 0 rather than its last count.
        for s in TransferState::ALL {
            let n = counts
                .iter()
                .find(|(name, _)| name == s.as_str())
                .map_or(0, |(_, n)| *n);
            self.transfers
                .get_or_create(&StateLabels { state: s.as_str() })
                .set(gauge(n));
        }
    }

    fn set_queues(&self, q: Queues) {
        for (queue, n) in [
            ("scan", q.scan),
            ("scan_retry", q.scan_retry),
            ("release", q.release),
            ("expiry", q.expiry),
            ("webhook_delivery", q.webhook_delivery),
            ("webhook_outbox", q.webhook_outbox),
        ] {
            self.queues
                .get_or_create(&QueueLabels { queue })
                .set(gauge(n));
        }
    }
}

/// Uploads refused or cut off, by reason: a handle on the registered counters (clones count
/// into the same series; a default one is registered nowhere, for tests).
#[derive(Clone, Default)]
pub struct UploadRefusals(Family<ReasonLabels, Counter>);

impl UploadRefusals {
    /// Counts one refusal; `reason` is one of [`REFUSALS`].
    pub fn count(&self, reason: &'static str) {
        self.0.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// A count as a gauge value (gauges are `i64`; nothing here comes near 2^63).
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The content type of what [`Metrics::scrape`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        out
    }

    #[test]
    fn the_existing_names_keep_their_exact_lines() {
        let m = Metrics::new();
        m.incident("changed", "released");
        m.upload_refusals().count("idle_timeout");
        let t = text(&m);
        for line in [
            "airlock_integrity_incidents_total{kind=\"changed\",location=\"released\"} 1",
            "airlock_integrity_incidents_total{kind=\"missing\",location=\"quarantine\"} 0",
            "airlock_integrity_files_verified_total 0",
            "airlock_integrity_bytes_verified_total 0",
            "airlock_upload_refusals_total{reason=\"idle_timeout\"} 1",
            "airlock_upload_refusals_total{reason=\"per_token\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "no line {line:?} in\n{t}");
        }
    }

    #[test]
    fn labels_stay_in_their_closed_sets() {
        let m = Metrics::new();
        m.incident("/etc/passwd", "released");
        m.request(None, "BREW", 418, Duration::from_millis(3));
        m.request(
            Some("/api/v1/transfers/{id}"),
            "GET",
            200,
            Duration::from_millis(1),
        );
        let t = text(&m);
        assert!(!t.contains("passwd"), "{t}");
        assert!(!t.contains("BREW"), "{t}");
        assert!(t.contains(
            "airlock_http_request_duration_seconds_count{route=\"unmatched\",method=\"other\",status=\"4xx\"} 1"
        ), "{t}");
        assert!(t.contains(
            "airlock_http_request_duration_seconds_count{route=\"/api/v1/transfers/{id}\",method=\"GET\",status=\"2xx\"} 1"
        ), "{t}");
    }

    #[test]
    fn counts_add_up_and_every_state_is_shown() {
        let m = Metrics::new();
        let created = crate::store::now();
        m.ingested(10, &created);
        m.ingested(32, &created);
        m.released(2, 42, Duration::from_millis(20));
        m.verified(2, 42);
        m.set_states(&[("open".into(), 3)]);
        let t = text(&m);
        for line in [
            "airlock_ingested_files_total 2",
            "airlock_ingested_bytes_total 42",
            "airlock_released_files_total 2",
            "airlock_released_bytes_total 42",
            "airlock_integrity_files_verified_total 2",
            "airlock_integrity_bytes_verified_total 42",
            "airlock_upload_duration_seconds_count 2",
            "airlock_transfers{state=\"open\"} 3",
            "airlock_transfers{state=\"released\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "no line {line:?} in\n{t}");
        }
    }
}
