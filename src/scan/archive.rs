//! Archive inspection: zip, tar, tar.gz and gzip are opened and every member is written to a
//! scratch folder (under a numbered name: a member's own name is never used as a path, so
//! `../../etc/passwd` or a symlink cannot escape), hashed, and handed back to be scanned like
//! any file, nested archives included, down to a depth limit.
//!
//! Zip bombs are stopped by limits on the total expanded size, the expansion ratio, the member
//! count and the depth, counted over everything expanded from one uploaded file. Passing a
//! limit is a finding ([`Expand::Bomb`]); an encrypted member is unscannable.
//!
//! All of this is blocking I/O and CPU: callers run it on the blocking pool.

use serde::Deserialize;
use sha2::Digest;
use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    max_depth: u32,
    max_members: u64,
    #[serde(deserialize_with = "super::size")]
    max_expanded_size: u64,
    max_ratio: u64,
    #[serde(deserialize_with = "super::size")]
    ratio_applies_above: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: u32,
    pub max_members: u64,
    pub max_expanded_size: u64,
    pub max_ratio: u64,
    pub ratio_applies_above: u64,
}

impl TryFrom<Config> for Limits {
    type Error = (&'static str, String);
    fn try_from(c: Config) -> Result<Self, Self::Error> {
        if c.max_depth == 0 || c.max_depth > 32 {
            return Err(("max_depth", "must be between 1 and 32".into()));
        }
        if c.max_members == 0 {
            return Err(("max_members", "must be more than 0".into()));
        }
        if c.max_ratio < 2 {
            return Err(("max_ratio", "must be at least 2".into()));
        }
        Ok(Limits {
            max_depth: c.max_depth,
            max_members: c.max_members,
            max_expanded_size: c.max_expanded_size,
            max_ratio: c.max_ratio,
            ratio_applies_above: c.ratio_applies_above,
        })
    }
}

/// What has been expanded from one uploaded file so far.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The uploaded (outermost) file's size: the ratio's denominator.
    pub outer_size: u64,
    pub members: u64,
    pub expanded: u64,
}

impl Budget {
    pub fn new(outer_size: u64) -> Self {
        Self {
            outer_size,
            members: 0,
            expanded: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zip,
    Tar,
    TarGz,
    Gz,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Zip => "zip",
            Format::Tar => "tar",
            Format::TarGz => "tar.gz",
            Format::Gz => "gzip",
        }
    }
}

/// The archive format of a file, from its content.
pub fn detect(path: &Path) -> std::io::Result<Option<Format>> {
    let mut head = Vec::with_capacity(512);
    File::open(path)?.take(512).read_to_end(&mut head)?;
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Some(Format::Zip));
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(Some(Format::Tar));
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        let mut inner = Vec::with_capacity(512);
        let gz = flate2::read::GzDecoder::new(File::open(path)?);
        let _ = gz.take(512).read_to_end(&mut inner);
        if inner.len() >= 262 && &inner[257..262] == b"ustar" {
            return Ok(Some(Format::TarGz));
        }
        return Ok(Some(Format::Gz));
    }
    Ok(None)
}

/// One expanded member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its name inside the archive.
    pub name: String,
    /// Where its bytes were written.
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Why an archive could not be fully inspected.
#[derive(Debug)]
pub enum Expand {
    /// A limit was passed: a finding that blocks.
    Bomb(String),
    /// A member is encrypted: unscannable.
    Encrypted(String),
    /// The archive is damaged: unscannable.
    Corrupt(String),
    /// Our own I/O failed (scratch space): an error, retried.
    Io(std::io::Error),
}

/// Counts and limits every byte written, and hashes it.
struct Sink<'a> {
    out: File,
    hash: sha2::Sha256,
    written: u64,
    budget: &'a mut Budget,
    limits: &'a Limits,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let b = &mut self.budget;
        b.expanded += buf.len() as u64;
        if b.expanded > self.limits.max_expanded_size {
            return Err(bomb(format!(
                "expands to more than {} bytes (archive.max_expanded_size)",
                self.limits.max_expanded_size
            )));
        }
        if b.expanded > self.limits.ratio_applies_above
            && b.expanded > b.outer_size.max(1).saturating_mul(self.limits.max_ratio)
        {
            return Err(bomb(format!(
                "expands more than {}:1 ({} bytes from {}; archive.max_ratio)",
                self.limits.max_ratio, b.expanded, b.outer_size
            )));
        }
        self.out.write_all(buf)?;
        self.hash.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A limit error travels through `io::copy` as an io::Error carrying this marker.
#[derive(Debug)]
struct BombMarker(String);
impl std::fmt::Display for BombMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BombMarker {}

fn bomb(why: String) -> std::io::Error {
    std::io::Error::other(BombMarker(why))
}

fn classify(e: std::io::Error, what: &str) -> Expand {
    if let Some(m) = e.get_ref().and_then(|i| i.downcast_ref::<BombMarker>()) {
        return Expand::Bomb(m.0.clone());
    }
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            Expand::Corrupt(format!("{what}: {e}"))
        }
        _ => Expand::Io(e),
    }
}

/// Writes one member from `reader` to `dir/<n>`.
fn write_member(
    name: String,
    reader: &mut dyn Read,
    dir: &Path,
    budget: &mut Budget,
    limits: &Limits,
) -> Result<Member, Expand> {
    budget.members += 1;
    if budget.members > limits.max_members {
        return Err(Expand::Bomb(format!(
            "holds more than {} members (archive.max_members)",
            limits.max_members
        )));
    }
    let path = dir.join(format!("m{:06}", budget.members));
    let out = File::create(&path).map_err(Expand::Io)?;
    let mut sink = Sink {
        out,
        hash: sha2::Sha256::new(),
        written: 0,
        budget,
        limits,
    };
    std::io::copy(reader, &mut sink).map_err(|e| classify(e, &name))?;
    let size = sink.written;
    let sha256 = hex::encode(sink.hash.finalize());
    Ok(Member {
        name,
        path,
        size,
        sha256,
    })
}

/// Expands one archive into `dir` (which must exist and be empty).
pub fn expand(
    path: &Path,
    format: Format,
    dir: &Path,
    budget: &mut Budget,
    limits: &Limits,
) -> Result<Vec<Member>, Expand> {
    let file = File::open(path).map_err(Expand::Io)?;
    match format {
        Format::Zip => expand_zip(file, dir, budget, limits),
        Format::Tar => expand_tar(BufReader::new(file), dir, budget, limits),
        Format::TarGz => expand_tar(
            flate2::read::GzDecoder::new(BufReader::new(file)),
            dir,
            budget,
            limits,
        ),
        Format::Gz => {
            let mut gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
            let name = gz
                .header()
                .and_then(|h| h.filename())
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_else(|| {
                    path.file_name()
                        .map(|n| n.to_string_lossy().trim_end_matches(".gz").to_owned())
                        .unwrap_or_else(|| "data".into())
                });
            Ok(vec![write_member(name, &mut gz, dir, budget, limits)?])
        }
    }
}

fn expand_zip<R: Read + Seek>(
    r: R,
    dir: &Path,
    budget: &mut Budget,
    limits: &Limits,
) -> Result<Vec<Member>, Expand> {
    let mut zip =
        zip::ZipArchive::new(r).map_err(|e| Expand::Corrupt(format!("not a readable zip: {e}")))?;
    if zip.len() as u64 > limits.max_members {
        return Err(Expand::Bomb(format!(
            "lists {} members, more than {} (archive.max_members)",
            zip.len(),
            limits.max_members
        )));
    }
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let (name, encrypted, is_dir) = {
            let raw = zip
                .by_index_raw(i)
                .map_err(|e| Expand::Corrupt(format!("member {i}: {e}")))?;
            (
                raw.name()
                    .map(|n| n.into_owned())
                    .unwrap_or_else(|_| format!("<member {i}>")),
                raw.encrypted(),
                raw.is_dir(),
            )
        };
        if encrypted {
            return Err(Expand::Encrypted(format!(
                "member {name} is encrypted and cannot be inspected"
            )));
        }
        if is_dir {
            continue;
        }
        let mut f = zip
            .by_index(i)
            .map_err(|e| Expand::Corrupt(format!("member {name}: {e}")))?;
        out.push(write_member(name, &mut f, dir, budget, limits)?);
    }
    Ok(out)
}

fn expand_tar<R: Read>(
    r: R,
    dir: &Path,
    budget: &mut Budget,
    limits: &Limits,
) -> Result<Vec<Member>, Expand> {
    let mut ar = tar::Archive::new(r);
    let mut out = Vec::new();
    let entries = ar
        .entries()
        .map_err(|e| Expand::Corrupt(format!("not a readable tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| classify(e, "tar entry"))?;
        let kind = entry.header().entry_type();
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "<unreadable name>".into());
        // Only file content is inspected; links and folders carry no bytes of their own.
        if !(kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse()) {
            continue;
        }
        let want = entry.size();
        let m = write_member(name, &mut entry, dir, budget, limits)?;
        if m.size != want {
            return Err(Expand::Corrupt(format!(
                "member {} is cut short: {} of {want} bytes",
                m.name, m.size
            )));
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, Vec<u8>)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            // Raw name bytes: the builder itself refuses `..`, a hostile archive does not.
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        b.finish().unwrap();
        f
    }

    fn limits() -> Limits {
        Limits {
            max_depth: 3,
            max_members: 100,
            max_expanded_size: 10 << 20,
            max_ratio: 100,
            ratio_applies_above: 1 << 20,
        }
    }

    #[test]
    fn members_are_written_under_numbered_names_with_their_digests() {
        let f = tar_of(&[
            ("../../etc/passwd", b"root".to_vec()),
            ("a/b.txt", b"hi".to_vec()),
        ]);
        assert_eq!(detect(f.path()).unwrap(), Some(Format::Tar));
        let dir = tempfile::tempdir().unwrap();
        let mut b = Budget::new(f.as_file().metadata().unwrap().len());
        let m = expand(f.path(), Format::Tar, dir.path(), &mut b, &limits()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "../../etc/passwd");
        // Written inside the scratch folder whatever the member's name says.
        assert!(m[0].path.starts_with(dir.path()));
        assert_eq!(std::fs::read(&m[0].path).unwrap(), b"root");
        assert_eq!(m[1].sha256, hex::encode(sha2::Sha256::digest(b"hi")));
        assert_eq!((b.members, b.expanded), (2, 6));
    }

    #[test]
    fn member_count_and_expanded_size_are_limited() {
        let many: Vec<(String, Vec<u8>)> = (0..5).map(|i| (format!("f{i}"), vec![1u8])).collect();
        let many: Vec<(&str, Vec<u8>)> =
            many.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let f = tar_of(&many);
        let dir = tempfile::tempdir().unwrap();
        let l = Limits {
            max_members: 3,
            ..limits()
        };
        let mut b = Budget::new(10_000);
        match expand(f.path(), Format::Tar, dir.path(), &mut b, &l) {
            Err(Expand::Bomb(w)) => assert!(w.contains("more than 3 members"), "{w}"),
            other => panic!("{other:?}"),
        }
        let f = tar_of(&[("big", vec![7u8; 3 << 20])]);
        let l = Limits {
            max_expanded_size: 2 << 20,
            max_ratio: 1_000_000,
            ..limits()
        };
        let mut b = Budget::new(3 << 20);
        match expand(f.path(), Format::Tar, dir.path(), &mut b, &l) {
            Err(Expand::Bomb(w)) => assert!(w.contains("max_expanded_size"), "{w}"),
            other => panic!("{other:?}"),
        }
        // The budget is shared: what was expanded before counts.
        let f = tar_of(&[("small", vec![7u8; 1 << 20])]);
        let mut b = Budget {
            outer_size: 100 << 20,
            members: 0,
            expanded: (2 << 20) - 10,
        };
        assert!(matches!(
            expand(f.path(), Format::Tar, dir.path(), &mut b, &l),
            Err(Expand::Bomb(_))
        ));
    }

    #[test]
    fn a_damaged_archive_is_corrupt_not_clean() {
        let f = tar_of(&[("a", vec![1u8; 4096])]);
        let mut bytes = std::fs::read(f.path()).unwrap();
        bytes.truncate(1024);
        let g = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(g.path(), &bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut b = Budget::new(1024);
        assert!(matches!(
            expand(g.path(), Format::Tar, dir.path(), &mut b, &limits()),
            Err(Expand::Corrupt(_))
        ));
        let z = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(z.path(), b"PK\x03\x04 not really a zip").unwrap();
        assert!(matches!(
            expand(z.path(), Format::Zip, dir.path(), &mut b, &limits()),
            Err(Expand::Corrupt(_))
        ));
    }
}
