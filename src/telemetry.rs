//! Structured logs with `tracing`: text for people, JSON for log pipelines.

use crate::config::LogSettings;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; logs go to stderr so stdout stays clean for scripts.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.level.clone()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if settings.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
