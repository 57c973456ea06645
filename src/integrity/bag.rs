//! BagIt (RFC 8493) export of a released transfer: `bagit.txt`, `bag-info.txt` (with
//! Payload-Oxum), `manifest-sha256.txt` over `data/`, and `tagmanifest-sha256.txt` over the tag
//! files. Every payload file is copied from the read-only volume and checked against the
//! sealed manifest as it lands, so the bag says exactly what was reviewed. The manifest lines
//! are `HEX  data/PATH`, so `sha256sum -c manifest-sha256.txt` in the bag checks it too, and
//! `b3sum -c manifest-blake3.txt` checks the BLAKE3 manifest beside it.
//!
//! The files are walked a page of rows at a time and the manifests are written line by line
//! as each file lands: memory does not grow with the file count.

use crate::app::App;
use crate::domain::*;
use crate::store::Transfer;
use crate::workflow::{Error, Result};
use sha2::Digest;
use std::io::Read;
use std::path::Path;

/// Writes the bag of a released transfer into `out` (created; must not exist or be empty).
/// Returns the payload's bytes and file count.
pub async fn export(app: &App, id: TransferId, out: &Path) -> Result<(u64, usize)> {
    let t = app
        .store
        .transfer(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no transfer {id}")))?;
    let (TransferState::Released, Some(loc)) = (t.state, t.release_location.clone()) else {
        return Err(Error::Conflict(format!(
            "transfer {id} is {}: only a released transfer is exported as a bag",
            t.state
        )));
    };
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::BadRequest(format!(
            "{} exists and is not an empty folder",
            out.display()
        )));
    }
    let root = t.root_digest.clone().unwrap_or_default();
    let released = Source::of(app, &loc).await?;
    // An egress package holds its output files only (its supporting and code files stay in
    // quarantine), and its output-checking record goes into the bag's payload with them.
    let held = held_back(app, &t).await?;
    let bag = Bag::create(out.to_owned())?;
    // The payload a page of rows at a time: each page is copied and hashed off the async
    // threads, and its manifest lines go straight to the open manifest files.
    let mut bag = Some(bag);
    let mut after: Option<String> = None;
    loop {
        let page = app
            .store
            .files_page(id, after.as_deref(), crate::store::FILE_BATCH)
            .await?;
        let last_page = (page.len() as u32) < crate::store::FILE_BATCH;
        after = page.last().map(|f| f.path.clone());
        let mut entries = page
            .iter()
            .filter(|f| !held.contains(&f.path))
            .map(crate::workflow::transfers::manifest_entry)
            .collect::<Result<Vec<_>>>()?;
        if last_page && t.kind.is_egress() {
            let released = released.clone();
            entries.extend(
                tokio::task::spawn_blocking(move || record_entries(&released))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))??,
            );
        }
        let mut b = bag
            .take()
            .ok_or_else(|| Error::Internal("bag writer lost".into()))?;
        let released = released.clone();
        let b = tokio::task::spawn_blocking(move || -> Result<Bag> {
            for m in &entries {
                b.add(&released, m, id)?;
            }
            Ok(b)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        bag = Some(b);
        if last_page {
            break;
        }
    }
    let b = bag.ok_or_else(|| Error::Internal("bag writer lost".into()))?;
    tokio::task::spawn_blocking(move || b.finish(id, &root))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

/// The files of a transfer that stay out of its bag: an egress package holds its output files
/// only (its supporting and code files stay in quarantine).
async fn held_back(app: &App, t: &Transfer) -> Result<std::collections::HashSet<String>> {
    Ok(if t.kind.is_egress() {
        app.store
            .egress_files(t.id)
            .await?
            .into_iter()
            .filter(|p| p.role != crate::workflow::egress::FileRole::Output.as_str())
            .map(|p| p.path)
            .collect()
    } else {
        Default::default()
    })
}

/// An egress package's output-checking record, which goes into the bag's payload with its
/// files (a fixed, small number of files, hashed from the released folder).
fn record_entries(released: &Source) -> Result<Vec<ManifestEntry>> {
    crate::workflow::egress::RECORD_FILES
        .iter()
        .map(|name| {
            let mut data = Vec::new();
            released
                .open(name)
                .and_then(|mut r| r.read_to_end(&mut data))
                .map_err(|e| Error::Internal(format!("{name}: {e}")))?;
            let mut st = crate::hashing::HashState::new();
            st.update(&data);
            let d = st.finish();
            Ok(ManifestEntry {
                path: (*name).to_owned(),
                size: d.size,
                sha256: d.sha256,
                blake3: d.blake3,
            })
        })
        .collect()
}

/// The bag of a released transfer as a tar stream (`ID/bagit.txt`, `ID/data/...`), built
/// while it is sent: nothing is staged in memory or on disk.
///
/// A tar entry needs its size before its bytes, and the manifests come after the payload is
/// known good, so the payload goes first, each file hashed as it is sent and checked against
/// the sealed manifest (a mismatch ends the stream with an error: the client never gets a bag
/// that disagrees with what was reviewed). Meanwhile each manifest's length and SHA-256 are
/// counted, never its lines; then the manifests are written by walking the rows a second
/// time, checked against the first walk's digest. Memory holds one page of rows.
pub fn tar_stream(
    app: std::sync::Arc<App>,
    t: Transfer,
) -> futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let sink = crate::workflow::collect::ChannelWriter::new(tx.clone());
        if let Err(e) = write_tar(&app, &handle, &t, sink) {
            tracing::warn!(transfer = %t.id, error = %e, "bag stream ended early");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    crate::workflow::collect::receiver_stream(rx)
}

/// Reads a file while hashing it both ways.
struct Hashing<R> {
    inner: R,
    sha256: sha2::Sha256,
    blake3: blake3::Hasher,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        self.blake3.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// A manifest's running length and digest, for its tar header and the tag manifest.
#[derive(Default)]
struct Tally {
    len: u64,
    sha256: sha2::Sha256,
}

impl Tally {
    fn add(&mut self, line: &str) {
        self.len += line.len() as u64;
        self.sha256.update(line.as_bytes());
    }
}

fn write_tar(
    app: &App,
    handle: &tokio::runtime::Handle,
    t: &Transfer,
    sink: impl std::io::Write,
) -> Result<()> {
    let id = t.id;
    let loc = t
        .release_location
        .clone()
        .ok_or_else(|| Error::Conflict(format!("transfer {id} has no released copy to bag")))?;
    let released = handle.block_on(Source::of(app, &loc))?;
    let held = handle.block_on(held_back(app, t))?;
    let records = if t.kind.is_egress() {
        record_entries(&released)?
    } else {
        Vec::new()
    };
    let top = id.to_string();
    let mut b = tar::Builder::new(sink);
    let header = |size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    // Every page of payload entries, in path order, then the record files.
    let pages = |f: &mut dyn FnMut(&ManifestEntry) -> Result<()>| -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page = handle.block_on(app.store.files_page(
                id,
                after.as_deref(),
                crate::store::FILE_BATCH,
            ))?;
            let last = (page.len() as u32) < crate::store::FILE_BATCH;
            after = page.last().map(|f| f.path.clone());
            for row in page.iter().filter(|r| !held.contains(&r.path)) {
                f(&crate::workflow::transfers::manifest_entry(row)?)?;
            }
            if last {
                break;
            }
        }
        for m in &records {
            f(m)?;
        }
        Ok(())
    };
    let lines = |m: &ManifestEntry| {
        let path = encode(&m.path);
        (
            format!("{}  data/{path}\n", m.sha256),
            format!("{}  data/{path}\n", m.blake3),
        )
    };
    let (mut s_tally, mut b_tally) = (Tally::default(), Tally::default());
    let (mut bytes, mut files) = (0u64, 0u64);
    pages(&mut |m| {
        let file = released.open(&m.path).map_err(io)?;
        let mut r = Hashing {
            inner: file,
            sha256: sha2::Sha256::new(),
            blake3: blake3::Hasher::new(),
            n: 0,
        };
        let mut h = header(m.size);
        b.append_data(
            &mut h,
            format!("{top}/data/{}", m.path),
            (&mut r).take(m.size),
        )
        .map_err(io)?;
        let sha256 = hex::encode(r.sha256.finalize());
        if r.n != m.size
            || sha256 != m.sha256.as_str()
            || r.blake3.finalize().to_hex().as_str() != m.blake3.as_str()
        {
            return Err(Error::Conflict(format!(
                "{}: the released copy differs from the manifest (sha256 {sha256}, {} bytes); \
                 run `airlock verify {id}`",
                m.path, r.n
            )));
        }
        let (s, b3) = lines(m);
        s_tally.add(&s);
        b_tally.add(&b3);
        bytes += m.size;
        files += 1;
        Ok(())
    })?;
    let mut tags = String::new();
    let mut small = |b: &mut tar::Builder<_>, name: &str, text: &str| -> Result<()> {
        let mut h = header(text.len() as u64);
        b.append_data(&mut h, format!("{top}/{name}"), text.as_bytes())
            .map_err(io)?;
        tags += &format!(
            "{}  {name}\n",
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        );
        Ok(())
    };
    small(
        &mut b,
        "bagit.txt",
        "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n",
    )?;
    let root = t.root_digest.clone().unwrap_or_default();
    small(
        &mut b,
        "bag-info.txt",
        &format!(
            "Bag-Software-Agent: airlock {}\nBagging-Date: {}\nExternal-Identifier: {id}\n\
             External-Description: airlock transfer {id}, manifest root digest {root}\n\
             Payload-Oxum: {bytes}.{files}\n",
            env!("CARGO_PKG_VERSION"),
            chrono::Utc::now().format("%Y-%m-%d"),
        ),
    )?;
    // The manifests, one line at a time from a second walk of the rows, straight into the
    // tar (header first, with the length counted above, then the lines, then the padding).
    for (name, tally, blake) in [
        ("manifest-sha256.txt", s_tally, false),
        ("manifest-blake3.txt", b_tally, true),
    ] {
        let want = hex::encode(tally.sha256.finalize());
        let mut h = header(tally.len);
        h.set_path(format!("{top}/{name}")).map_err(io)?;
        h.set_cksum();
        let out = b.get_mut();
        out.write_all(h.as_bytes()).map_err(io)?;
        let mut again = Tally::default();
        pages(&mut |m| {
            let (s, b3) = lines(m);
            let line = if blake { b3 } else { s };
            again.add(&line);
            b.get_mut().write_all(line.as_bytes()).map_err(io)
        })?;
        let got = hex::encode(again.sha256.finalize());
        if got != want || again.len != tally.len {
            return Err(Error::Conflict(format!(
                "transfer {id}'s files changed while its bag was written; try again"
            )));
        }
        let pad = (512 - tally.len % 512) % 512;
        b.get_mut()
            .write_all(&vec![0u8; pad as usize])
            .map_err(io)?;
        tags += &format!("{want}  {name}\n");
    }
    let mut h = header(tags.len() as u64);
    b.append_data(
        &mut h,
        format!("{top}/tagmanifest-sha256.txt"),
        tags.as_bytes(),
    )
    .map_err(io)?;
    let mut inner = b.into_inner().map_err(io)?;
    inner.flush().map_err(io)?;
    Ok(())
}

/// RFC 8493 §2.1.3: CR, LF and % in a manifest path are percent-encoded.
fn encode(path: &str) -> String {
    path.replace('%', "%25")
        .replace('\n', "%0A")
        .replace('\r', "%0D")
}

/// Where a bag's payload is read from: the released folder, or a published release on S3
/// (streamed from the store; only while its manifest object is there).
#[derive(Clone)]
enum Source {
    Dir(std::path::PathBuf),
    S3 {
        volumes: Box<crate::volumes::Volumes>,
        dest: object_store::path::Path,
        handle: tokio::runtime::Handle,
    },
}

impl Source {
    async fn of(app: &App, location: &str) -> Result<Self> {
        Ok(match app.volumes.s3_dest_of(location) {
            Some(dest) => {
                if !app.volumes.published(&dest).await? {
                    return Err(Error::Conflict(format!(
                        "{location} has no manifest object: nothing of it is published"
                    )));
                }
                Source::S3 {
                    volumes: Box::new(app.volumes.clone()),
                    dest,
                    handle: tokio::runtime::Handle::current(),
                }
            }
            None => Source::Dir(std::path::PathBuf::from(location)),
        })
    }

    /// One released file's bytes, for a blocking reader.
    fn open(&self, rel: &str) -> std::io::Result<Box<dyn Read + Send>> {
        match self {
            Source::Dir(dir) => Ok(Box::new(std::fs::File::open(dir.join(rel))?)),
            Source::S3 {
                volumes,
                dest,
                handle,
            } => {
                use futures::TryStreamExt;
                let rel = RelPath::parse(rel).map_err(std::io::Error::other)?;
                let stream = handle
                    .block_on(volumes.read_published(dest, &rel))
                    .map_err(std::io::Error::other)?
                    .map_err(std::io::Error::other);
                Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
                    tokio_util::io::StreamReader::new(stream),
                    handle.clone(),
                )))
            }
        }
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Internal(format!("bag: {e}"))
}

/// A manifest file being written line by line, hashed as it goes for the tag manifest.
struct Manifest {
    name: &'static str,
    out: std::io::BufWriter<std::fs::File>,
    sha256: sha2::Sha256,
}

impl Manifest {
    fn create(dir: &Path, name: &'static str) -> Result<Self> {
        Ok(Self {
            name,
            out: std::io::BufWriter::new(std::fs::File::create(dir.join(name)).map_err(io)?),
            sha256: sha2::Sha256::new(),
        })
    }

    fn line(&mut self, line: &str) -> Result<()> {
        use std::io::Write;
        self.out.write_all(line.as_bytes()).map_err(io)?;
        self.sha256.update(line.as_bytes());
        Ok(())
    }

    /// Closes the file; returns its tag manifest line.
    fn finish(self) -> Result<String> {
        let f = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        Ok(format!(
            "{}  {}\n",
            hex::encode(self.sha256.finalize()),
            self.name
        ))
    }
}

/// A bag being written: the payload copied one file at a time, and the manifests (SHA-256
/// and BLAKE3, the two digests airlock keeps) streamed to disk beside it. Memory holds one
/// file's buffers and the counts.
struct Bag {
    out: std::path::PathBuf,
    data: std::path::PathBuf,
    sha256: Manifest,
    blake3: Manifest,
    bytes: u64,
    files: u64,
}

impl Bag {
    fn create(out: std::path::PathBuf) -> Result<Self> {
        let data = out.join("data");
        std::fs::create_dir_all(&data).map_err(io)?;
        Ok(Self {
            sha256: Manifest::create(&out, "manifest-sha256.txt")?,
            blake3: Manifest::create(&out, "manifest-blake3.txt")?,
            out,
            data,
            bytes: 0,
            files: 0,
        })
    }

    /// Copies one payload file from the released volume and checks it against the manifest.
    fn add(&mut self, released: &Source, m: &ManifestEntry, id: TransferId) -> Result<()> {
        let dest = self.data.join(&m.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        {
            let mut from = released.open(&m.path).map_err(io)?;
            let mut to = std::fs::File::create(&dest).map_err(io)?;
            std::io::copy(&mut from, &mut to).map_err(io)?;
        }
        // The bag is a working copy for the recipient: writable, unlike the volume.
        let mut perm = std::fs::metadata(&dest).map_err(io)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
        std::fs::set_permissions(&dest, perm).map_err(io)?;
        let got = crate::hashing::hash_paths(std::slice::from_ref(&dest)).map_err(io)?;
        if got.sha256 != m.sha256 || got.blake3 != m.blake3 || got.size != m.size {
            return Err(Error::Conflict(format!(
                "{}: the released copy has sha256 {}, the manifest says {}; run `airlock verify {id}`",
                m.path, got.sha256, m.sha256
            )));
        }
        self.bytes += m.size;
        self.files += 1;
        let path = encode(&m.path);
        self.sha256.line(&format!("{}  data/{path}\n", m.sha256))?;
        self.blake3.line(&format!("{}  data/{path}\n", m.blake3))?;
        Ok(())
    }

    /// Writes the tag files and the tag manifest. Returns the payload's bytes and file count.
    fn finish(self, id: TransferId, root: &str) -> Result<(u64, usize)> {
        let out = &self.out;
        let tag = |name: &str, text: &str| -> Result<String> {
            std::fs::write(out.join(name), text).map_err(io)?;
            Ok(format!(
                "{}  {name}\n",
                hex::encode(sha2::Sha256::digest(text.as_bytes()))
            ))
        };
        let mut tags = String::new();
        tags += &tag(
            "bagit.txt",
            "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n",
        )?;
        tags += &tag(
            "bag-info.txt",
            &format!(
                "Bag-Software-Agent: airlock {}\nBagging-Date: {}\nExternal-Identifier: {id}\n\
                 External-Description: airlock transfer {id}, manifest root digest {root}\n\
                 Payload-Oxum: {}.{}\n",
                env!("CARGO_PKG_VERSION"),
                chrono::Utc::now().format("%Y-%m-%d"),
                self.bytes,
                self.files
            ),
        )?;
        tags += &self.sha256.finish()?;
        tags += &self.blake3.finish()?;
        std::fs::write(out.join("tagmanifest-sha256.txt"), tags).map_err(io)?;
        Ok((self.bytes, self.files as usize))
    }
}
