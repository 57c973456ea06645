//! BagIt (RFC 8493) export of a released transfer: `bagit.txt`, `bag-info.txt` (with
//! Payload-Oxum), `manifest-sha256.txt` over `data/`, and `tagmanifest-sha256.txt` over the tag
//! files. Every payload file is copied from the read-only volume and checked against the
//! sealed manifest as it lands, so the bag says exactly what was reviewed. The manifest lines
//! are `HEX  data/PATH`, so `sha256sum -c manifest-sha256.txt` in the bag checks it too.

use crate::app::App;
use crate::domain::*;
use crate::workflow::{Error, Result};
use sha2::Digest;
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
    let files = app.store.files(id).await?;
    let manifest = crate::workflow::transfers::manifest(&files)?;
    let root = t.root_digest.clone().unwrap_or_default();
    let out = out.to_owned();
    tokio::task::spawn_blocking(move || write(&out, Path::new(&loc), &manifest, id, &root))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

/// RFC 8493 §2.1.3: CR, LF and % in a manifest path are percent-encoded.
fn encode(path: &str) -> String {
    path.replace('%', "%25")
        .replace('\n', "%0A")
        .replace('\r', "%0D")
}

fn write(
    out: &Path,
    released: &Path,
    manifest: &[ManifestEntry],
    id: TransferId,
    root: &str,
) -> Result<(u64, usize)> {
    let io = |e: std::io::Error| Error::Internal(format!("bag: {e}"));
    let data = out.join("data");
    std::fs::create_dir_all(&data).map_err(io)?;
    let mut lines = String::new();
    let mut bytes = 0u64;
    for m in manifest {
        let dest = data.join(&m.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::copy(released.join(&m.path), &dest).map_err(io)?;
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
        bytes += m.size;
        lines.push_str(&format!("{}  data/{}\n", m.sha256, encode(&m.path)));
    }
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
             Payload-Oxum: {bytes}.{}\n",
            env!("CARGO_PKG_VERSION"),
            chrono::Utc::now().format("%Y-%m-%d"),
            manifest.len()
        ),
    )?;
    tags += &tag("manifest-sha256.txt", &lines)?;
    std::fs::write(out.join("tagmanifest-sha256.txt"), tags).map_err(io)?;
    Ok((bytes, manifest.len()))
}
