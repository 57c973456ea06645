//! airlock: the door of a Trusted Research Environment.
//!
//! Layout (one line per module):
//! - [`config`]: settings from a TOML file and `AIRLOCK__SECTION__KEY` variables.
//! - [`app`]: `App`, everything a request or job needs, opened from the data directory.
//! - [`server`]: the HTTP server: every route, the error → status table, graceful shutdown.
//! - [`api`]: thin JSON handlers.
//! - [`ui`]: the browser's pages (askama), previews and vendored static files.
//! - [`tus`]: the tus 1.0.0 resumable-upload protocol.
//! - [`workflow`]: open, upload, seal, decide, release, expire: the only code that changes
//!   state, and the only writer of audit events.
//! - [`domain`]: ids, roles, kinds, the state machine, checked relative paths, manifests.
//! - [`notify`]: signed webhooks and email for every transition, fed from the audit log.
//! - [`policy`]: per-tier policies from `policies/`.
//! - [`hashing`]: streaming SHA-256 + BLAKE3, off the async threads.
//! - [`volumes`]: quarantine and released volumes over `object_store`.
//! - [`store`]: the metadata store (SQLite).
//! - [`audit`]: the hash-chained, keyed audit log, its signed head anchors, verify.
//! - [`auth`]: minting and checking JWTs; staff tokens of the institution's OIDC provider.
//! - [`cli`]: the `airlock` command line, server and client.
//! - [`telemetry`]: structured logs.
//! - [`metrics`]: the Prometheus registry behind `/metrics`, and the calls that count.
//! - [`memory`]: the allocator's settings (malloc arenas), so memory stays flat.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod hashing;
pub mod integrity;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod scan;
pub mod server;
pub mod store;
pub mod telemetry;
// A tus error is a finished HTTP response, built once per failed request; boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub mod tus;
pub mod ui;
pub mod volumes;
pub mod workflow;
