//! ClamAV through clamd's INSTREAM command (the `clamav-client` crate, on tokio): the file is
//! streamed from the quarantine volume to clamd, which answers `stream: OK` or
//! `stream: NAME FOUND`.
//!
//! A file larger than clamd's StreamMaxLength is never reported clean: it is not sent, and its
//! verdict is "unscannable: size". clamd itself answers OK for a file past MaxFileSize or
//! MaxScanSize without scanning all of it, unless `AlertExceedsMax yes` makes it report
//! `Heuristics.Limits.Exceeded…`; that answer is "unscannable: size" too.

use super::{Outcome, Scanner, Target, Versions};
use futures::StreamExt;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub(crate) address: String,
    #[serde(deserialize_with = "super::size")]
    stream_max_length: u64,
    #[serde(deserialize_with = "super::duration")]
    timeout: Duration,
    concurrency: usize,
    #[serde(default)]
    database_dir: Option<PathBuf>,
    /// How long clamd is given to reload its database before files are scanned again.
    #[serde(default = "default_settle", deserialize_with = "super::duration")]
    reload_settle: Duration,
}

fn default_settle() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone)]
enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

pub struct ClamAv {
    name: String,
    addr: Addr,
    pub stream_max_length: u64,
    timeout: Duration,
    pub concurrency: usize,
    pub database_dir: Option<PathBuf>,
    pub reload_settle: Duration,
}

/// Bytes per INSTREAM chunk.
const CHUNK: usize = 256 << 10;

impl ClamAv {
    pub fn new(name: &str, c: Config) -> Result<Self, (&'static str, String)> {
        if c.concurrency == 0 || c.concurrency > 64 {
            return Err(("concurrency", "must be between 1 and 64".into()));
        }
        if c.stream_max_length == 0 || c.stream_max_length > u32::MAX as u64 {
            return Err((
                "stream_max_length",
                "must be between 1 byte and 4 GiB (clamd's own limit)".into(),
            ));
        }
        let addr = if c.address.starts_with('/') {
            Addr::Unix(PathBuf::from(&c.address))
        } else if c.address.contains(':') {
            Addr::Tcp(c.address.clone())
        } else {
            return Err((
                "address",
                format!(
                    "`{}` is neither host:port nor an absolute socket path",
                    c.address
                ),
            ));
        };
        Ok(Self {
            name: name.to_owned(),
            addr,
            stream_max_length: c.stream_max_length,
            timeout: c.timeout,
            concurrency: c.concurrency,
            database_dir: c.database_dir,
            reload_settle: c.reload_settle,
        })
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Asks clamd to reload its signature database.
    pub async fn reload(&self) -> Result<(), String> {
        let r = match &self.addr {
            Addr::Tcp(a) => {
                clamav_client::tokio::reload(clamav_client::tokio::Tcp {
                    host_address: a.as_str(),
                })
                .await
            }
            Addr::Unix(p) => {
                clamav_client::tokio::reload(clamav_client::tokio::Socket { socket_path: p }).await
            }
        };
        match r {
            Ok(v) if v.starts_with(b"RELOADING") => Ok(()),
            Ok(v) => Err(format!(
                "clamd at {} answered RELOAD with {:?}",
                self.addr,
                String::from_utf8_lossy(&v)
            )),
            Err(e) => Err(format!("clamd at {}: {e}", self.addr)),
        }
    }
}

/// A fingerprint of a database folder: names, sizes and modification times.
fn database_fingerprint(dir: Option<&std::path::Path>) -> Option<String> {
    use sha2::Digest;
    let mut entries: Vec<String> = match std::fs::read_dir(dir?) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let mtime = m
                    .modified()
                    .ok()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_nanos();
                Some(format!(
                    "{}\0{}\0{mtime}",
                    e.file_name().to_string_lossy(),
                    m.len()
                ))
            })
            .collect(),
        Err(e) => vec![format!("unreadable: {e}")],
    };
    entries.sort();
    let d = sha2::Sha256::digest(entries.join("\n").as_bytes());
    Some(format!("local:{}", &hex::encode(d)[..16]))
}

/// Reads clamd's answer: `stream: OK`, `stream: NAME FOUND`, `… size limit exceeded. ERROR`.
pub fn parse_answer(raw: &[u8]) -> Result<Outcome, String> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\0', '\n', ' ']);
    if text.contains("size limit exceeded") {
        return Ok(Outcome::Unscannable(
            "size: larger than clamd's StreamMaxLength".into(),
        ));
    }
    let body = text.strip_prefix("stream:").unwrap_or(text).trim();
    if body == "OK" {
        return Ok(Outcome::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        let name = name.trim();
        if name.starts_with("Heuristics.Limits.Exceeded") {
            return Ok(Outcome::Unscannable(format!(
                "size: past clamd's scan limits ({name})"
            )));
        }
        return Ok(Outcome::Infected(name.to_owned()));
    }
    if text.is_empty() {
        return Err("clamd closed the connection without an answer".into());
    }
    Err(format!("clamd answered {text:?}"))
}

#[async_trait::async_trait]
impl Scanner for ClamAv {
    fn name(&self) -> &str {
        &self.name
    }

    async fn versions(&self) -> Result<Versions, String> {
        let fut = async {
            match &self.addr {
                Addr::Tcp(a) => {
                    clamav_client::tokio::get_version(clamav_client::tokio::Tcp {
                        host_address: a.as_str(),
                    })
                    .await
                }
                Addr::Unix(p) => {
                    clamav_client::tokio::get_version(clamav_client::tokio::Socket {
                        socket_path: p,
                    })
                    .await
                }
            }
        };
        let raw = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| format!("clamd at {} did not answer VERSION within 10s", self.addr))?
            .map_err(|e| format!("clamd at {}: {e}", self.addr))?;
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches(['\0', '\n']);
        if !text.starts_with("ClamAV") {
            return Err(format!(
                "clamd at {} answered VERSION with {text:?}",
                self.addr
            ));
        }
        // "ClamAV 1.4.3/27000/Sun Nov 22 …" with official databases, "ClamAV 1.4.3" without.
        let mut parts = text.split('/');
        let scanner = parts.next().unwrap_or_default().to_owned();
        let mut database: Vec<String> = parts
            .next()
            .filter(|s| !s.is_empty())
            .map(|s| format!("daily:{s}"))
            .into_iter()
            .collect();
        let dir = self.database_dir.clone();
        if let Some(f) = tokio::task::spawn_blocking(move || database_fingerprint(dir.as_deref()))
            .await
            .ok()
            .flatten()
        {
            database.push(f);
        }
        Ok(Versions {
            scanner,
            database: database.join("+"),
        })
    }

    fn reads_memory(&self) -> bool {
        true
    }

    async fn scan(&self, target: &Target<'_>) -> Result<Outcome, String> {
        if target.size > self.stream_max_length {
            return Ok(Outcome::Unscannable(format!(
                "size: {} bytes is over clamd's StreamMaxLength of {} bytes",
                target.size, self.stream_max_length
            )));
        }
        let stream = match target.data {
            // Read once already: streamed from memory, in INSTREAM-sized pieces.
            Some(data) => {
                let pieces: Vec<std::io::Result<bytes::Bytes>> = (0..data.len())
                    .step_by(CHUNK)
                    .map(|at| Ok(data.slice(at..(at + CHUNK).min(data.len()))))
                    .collect();
                futures::stream::iter(pieces).boxed()
            }
            None => {
                let file = tokio::fs::File::open(target.path)
                    .await
                    .map_err(|e| format!("cannot read the quarantined file: {e}"))?;
                tokio_util::io::ReaderStream::with_capacity(file, CHUNK).boxed()
            }
        };
        let fut = async {
            match &self.addr {
                Addr::Tcp(a) => {
                    clamav_client::tokio::scan_stream(
                        stream,
                        clamav_client::tokio::Tcp {
                            host_address: a.as_str(),
                        },
                        Some(CHUNK),
                    )
                    .await
                }
                Addr::Unix(p) => {
                    clamav_client::tokio::scan_stream(
                        stream,
                        clamav_client::tokio::Socket { socket_path: p },
                        Some(CHUNK),
                    )
                    .await
                }
            }
        };
        let raw = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| {
                format!(
                    "clamd at {} did not answer within {}",
                    self.addr,
                    humantime::format_duration(self.timeout)
                )
            })?
            .map_err(|e| format!("clamd at {}: {e}", self.addr))?;
        parse_answer(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(parse_answer(b"stream: OK\0"), Ok(Outcome::Clean));
        assert_eq!(
            parse_answer(b"stream: Test.EICAR.HDB.UNOFFICIAL FOUND\0"),
            Ok(Outcome::Infected("Test.EICAR.HDB.UNOFFICIAL".into()))
        );
        assert!(matches!(
            parse_answer(b"INSTREAM size limit exceeded. ERROR\0"),
            Ok(Outcome::Unscannable(r)) if r.starts_with("size")
        ));
        assert!(matches!(
            parse_answer(b"stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\0"),
            Ok(Outcome::Unscannable(r)) if r.starts_with("size")
        ));
        // Anything else is an error, never clean.
        assert!(parse_answer(b"").is_err());
        assert!(parse_answer(b"stream: lstat() failed. ERROR\0").is_err());
        assert!(parse_answer(b"OKAY\0").is_err());
    }
}
