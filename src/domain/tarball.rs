//! The pure rules of a tar stream uploaded for the server to expand (`workflow::archive_upload`):
//! how a 512-byte header block is read (ustar, GNU and PAX, with the `tar` crate's header
//! parser), which member types are accepted, how a member's name is assembled from PAX
//! `path` / GNU long-name records and the header, and how that name becomes a [`RelPath`]
//! under the hostile-name rules. No I/O: the workflow feeds blocks in and acts on what comes
//! out, so every rule here has a unit test.
//!
//! Accepted: regular files (`0`, NUL, `7` contiguous), directories (`5`, which only imply
//! folders), PAX local records (`x`, keys `path`, `size` and `AIRLOCK.sha256`), PAX global
//! records (`g`, read and ignored) and GNU long names (`L`). Anything else (symbolic and hard
//! links, devices, fifos, GNU sparse, volume labels, multi-volume parts, GNU long link names)
//! refuses the whole archive, naming the member.

use super::{HexDigest, PathError, RelPath};

/// Tar's block size: headers are one block, data is padded to a whole number of blocks.
pub const BLOCK: usize = 512;
/// Largest PAX or GNU long-name record kept in memory; real ones are a few hundred bytes.
pub const MAX_META: u64 = 64 << 10;
/// The PAX key carrying the provider's SHA-256 of a member (hex), compared at seal like tus
/// metadata `sha256` or a PUT's `Airlock-Expected-Sha256`.
pub const PAX_SHA256: &str = "AIRLOCK.sha256";

/// Why an archive was refused. Each names the member (as it was written in the archive) so
/// the uploader can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// Not a tar stream, or one cut short or damaged. 400.
    #[error("not a valid tar stream: {0}")]
    Corrupt(String),
    /// A member of a type that cannot become a file. 422.
    #[error(
        "archive member `{name}` is a {kind}: only regular files and directories are accepted"
    )]
    Type { name: String, kind: &'static str },
    /// A member whose name the hostile-name rules refuse. 422.
    #[error("archive member `{name}`: {error}")]
    Name { name: String, error: PathError },
    /// A bad `AIRLOCK.sha256` record. 400.
    #[error("archive member `{name}`: PAX {PAX_SHA256} {error}")]
    Digest { name: String, error: String },
}

/// What one header block announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A zero block: the end of the archive (tar writes two; one is enough to stop).
    End,
    /// A member, or a metadata record, whose `size` bytes of data follow (padded).
    Header(Header),
}

/// The kinds of header this reader acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    /// PAX extended header for the next member.
    PaxLocal,
    /// PAX global header: read and ignored.
    PaxGlobal,
    /// GNU long name for the next member.
    GnuLongName,
    /// Anything refused, named for the message.
    Refused(&'static str),
}

/// One parsed header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// Data bytes that follow the header (before padding), as the header says.
    pub size: u64,
    /// The name in the header itself (ustar prefix and name joined), raw bytes.
    pub name: Vec<u8>,
}

/// Bytes of padding after `size` bytes of data.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Reads one header block: checks its checksum and classifies it.
pub fn parse_block(block: &[u8; BLOCK]) -> Result<Block, TarError> {
    if block.iter().all(|&b| b == 0) {
        return Ok(Block::End);
    }
    let h = tar::Header::from_byte_slice(block);
    let want = h
        .cksum()
        .map_err(|e| TarError::Corrupt(format!("header checksum field: {e}")))?;
    // The checksum is the byte sum with the checksum field itself read as spaces.
    let got: u32 = block[..148]
        .iter()
        .chain([b' '; 8].iter())
        .chain(block[156..].iter())
        .map(|&b| u32::from(b))
        .sum();
    if want != got {
        return Err(TarError::Corrupt(format!(
            "header checksum is {want}, the block sums to {got} (damaged, or not a tar stream)"
        )));
    }
    let size = h
        .size()
        .map_err(|e| TarError::Corrupt(format!("header size field: {e}")))?;
    let kind = match block[156] {
        b'0' | 0 | b'7' => Kind::Regular,
        b'5' => Kind::Directory,
        b'x' => Kind::PaxLocal,
        b'g' => Kind::PaxGlobal,
        b'L' => Kind::GnuLongName,
        b'1' => Kind::Refused("hard link"),
        b'2' => Kind::Refused("symbolic link"),
        b'3' => Kind::Refused("character device"),
        b'4' => Kind::Refused("block device"),
        b'6' => Kind::Refused("fifo"),
        b'K' => Kind::Refused("link with a GNU long link name"),
        b'S' => Kind::Refused("GNU sparse file"),
        b'V' => Kind::Refused("volume label"),
        b'M' => Kind::Refused("multi-volume continuation"),
        _ => Kind::Refused("member of an unknown type"),
    };
    Ok(Block::Header(Header {
        kind,
        size,
        name: h.path_bytes().into_owned(),
    }))
}

/// What the metadata records before a member said about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// PAX `path` or GNU long name: replaces the header's name.
    pub name: Option<Vec<u8>>,
    /// PAX `size`: replaces the header's size (members over 8 GiB).
    pub size: Option<u64>,
    /// PAX `AIRLOCK.sha256`, as written.
    pub sha256: Option<String>,
}

impl Pending {
    /// Takes in a PAX local record's data.
    pub fn pax(&mut self, data: &[u8]) -> Result<(), TarError> {
        for ext in tar::PaxExtensions::new(data) {
            let ext = ext.map_err(|e| TarError::Corrupt(format!("PAX record: {e}")))?;
            match ext.key_bytes() {
                b"path" => self.name = Some(ext.value_bytes().to_vec()),
                b"size" => {
                    let v = ext
                        .value()
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or_else(|| TarError::Corrupt("PAX size is not a number".into()))?;
                    self.size = Some(v);
                }
                k if k == PAX_SHA256.as_bytes() => {
                    self.sha256 = Some(String::from_utf8_lossy(ext.value_bytes()).into_owned())
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes in a GNU long name's data (NUL-terminated).
    pub fn gnu_long_name(&mut self, data: &[u8]) {
        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        self.name = Some(data[..end].to_vec());
    }
}

/// A member as it will be stored: checked path, size, provider digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name as the archive wrote it (for messages).
    pub raw: String,
    /// The file's path in the transfer (under the prefix). `None` for a directory, or the
    /// archive's own `./` top.
    pub path: Option<RelPath>,
    pub size: u64,
    pub expected_sha256: Option<HexDigest>,
    pub directory: bool,
}

/// Applies the naming rules to a member header and the records before it: the name is the
/// PAX path or GNU long name if one came, else the header's; leading `./` is dropped (tar's
/// usual way of writing `tar -cf x.tar .`), as is a directory's trailing `/`; then it goes under
/// `prefix` and through [`RelPath::parse`]. Refused types are refused here, named.
pub fn member(
    header: &Header,
    pending: Pending,
    prefix: Option<&RelPath>,
) -> Result<Member, TarError> {
    let raw_bytes = pending.name.unwrap_or_else(|| header.name.clone());
    let raw = String::from_utf8_lossy(&raw_bytes).into_owned();
    let directory = match header.kind {
        Kind::Regular => false,
        Kind::Directory => true,
        Kind::Refused(kind) => return Err(TarError::Type { name: raw, kind }),
        Kind::PaxLocal | Kind::PaxGlobal | Kind::GnuLongName => {
            return Err(TarError::Corrupt(format!(
                "a metadata record was taken for member `{raw}`"
            )))
        }
    };
    let name_err = |error: PathError| TarError::Name {
        name: raw.clone(),
        error,
    };
    let text =
        std::str::from_utf8(&raw_bytes).map_err(|_| name_err(PathError::NotUtf8(raw.clone())))?;
    let mut name = text;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    if directory {
        name = name.strip_suffix('/').unwrap_or(name);
    }
    let size = pending.size.unwrap_or(header.size);
    let expected_sha256 = match pending.sha256 {
        Some(s) if !directory => Some(HexDigest::parse(&s).map_err(|error| TarError::Digest {
            name: raw.clone(),
            error,
        })?),
        _ => None,
    };
    if directory && (name.is_empty() || name == ".") {
        return Ok(Member {
            raw,
            path: None,
            size,
            expected_sha256: None,
            directory,
        });
    }
    // An absolute name must be refused as absolute, not rescued by the prefix.
    if name.starts_with('/') {
        return Err(name_err(PathError::Absolute(name.to_owned())));
    }
    RelPath::parse(name).map_err(name_err)?;
    let full = match prefix {
        Some(p) => format!("{p}/{name}"),
        None => name.to_owned(),
    };
    let path = RelPath::parse(&full).map_err(name_err)?;
    Ok(Member {
        raw,
        path: Some(path),
        size,
        expected_sha256,
        directory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(kind: tar::EntryType, name: &str, size: u64) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        // Raw bytes: the tar crate's own setters normalise names this reader must see as sent.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        *h.as_bytes()
    }

    fn header(kind: tar::EntryType, name: &str) -> Header {
        match parse_block(&block_of(kind, name, 3)).unwrap() {
            Block::Header(h) => h,
            Block::End => panic!("not a header"),
        }
    }

    #[test]
    fn a_zero_block_ends_the_archive_and_a_damaged_one_is_corrupt() {
        assert_eq!(parse_block(&[0; BLOCK]).unwrap(), Block::End);
        let mut b = block_of(tar::EntryType::Regular, "a.txt", 3);
        b[0] ^= 1;
        assert!(matches!(parse_block(&b), Err(TarError::Corrupt(_))));
        let junk = [b'x'; BLOCK];
        assert!(matches!(parse_block(&junk), Err(TarError::Corrupt(_))));
    }

    #[test]
    fn regular_members_take_the_prefix_and_lose_a_leading_dot_slash() {
        let prefix = RelPath::parse("batch/1").unwrap();
        let h = header(tar::EntryType::Regular, "./dir/a.txt");
        assert_eq!(h.size, 3);
        let m = member(&h, Pending::default(), Some(&prefix)).unwrap();
        assert_eq!(m.path.unwrap().as_str(), "batch/1/dir/a.txt");
        assert_eq!(m.raw, "./dir/a.txt");
    }

    #[test]
    fn links_devices_and_fifos_are_refused_by_name() {
        for (kind, what) in [
            (tar::EntryType::Symlink, "symbolic link"),
            (tar::EntryType::Link, "hard link"),
            (tar::EntryType::Char, "character device"),
            (tar::EntryType::Block, "block device"),
            (tar::EntryType::Fifo, "fifo"),
        ] {
            let err = member(&header(kind, "x/evil"), Pending::default(), None).unwrap_err();
            assert_eq!(
                err,
                TarError::Type {
                    name: "x/evil".into(),
                    kind: what
                }
            );
            assert!(err.to_string().contains("x/evil"), "{err}");
        }
    }

    #[test]
    fn hostile_names_are_refused_even_under_a_prefix() {
        let prefix = RelPath::parse("p").unwrap();
        for name in [
            "../up",
            "a/../../b",
            "/etc/passwd",
            "a\\b",
            "data\u{200B}.csv",
        ] {
            let pending = Pending {
                name: Some(name.as_bytes().to_vec()),
                ..Default::default()
            };
            let h = header(tar::EntryType::Regular, "placeholder");
            let err = member(&h, pending, Some(&prefix)).unwrap_err();
            assert!(matches!(err, TarError::Name { .. }), "{name}: {err:?}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn pax_records_name_size_and_digest_the_next_member() {
        let digest = "a".repeat(64);
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            if format!("{len}{body}").len() != len {
                len += 1;
            }
            format!("{len}{body}")
        };
        let data = format!(
            "{}{}{}",
            rec("path", "deep/long name.bin"),
            rec("size", "12345"),
            rec(PAX_SHA256, &digest)
        );
        let mut p = Pending::default();
        p.pax(data.as_bytes()).unwrap();
        let m = member(&header(tar::EntryType::Regular, "short"), p, None).unwrap();
        assert_eq!(m.path.unwrap().as_str(), "deep/long name.bin");
        assert_eq!(m.size, 12345);
        assert_eq!(m.expected_sha256.unwrap().as_str(), digest);

        let mut bad = Pending::default();
        bad.pax(rec(PAX_SHA256, "nothex").as_bytes()).unwrap();
        let err = member(&header(tar::EntryType::Regular, "f"), bad, None).unwrap_err();
        assert!(matches!(err, TarError::Digest { .. }), "{err:?}");
    }

    #[test]
    fn gnu_long_names_and_directories() {
        let mut p = Pending::default();
        p.gnu_long_name(b"a/very/long/name.txt\0");
        let m = member(&header(tar::EntryType::Regular, "trunc"), p, None).unwrap();
        assert_eq!(m.path.unwrap().as_str(), "a/very/long/name.txt");
        let d = member(
            &header(tar::EntryType::Directory, "dir/sub/"),
            Pending::default(),
            None,
        )
        .unwrap();
        assert!(d.directory);
        assert_eq!(d.path.unwrap().as_str(), "dir/sub");
        let top = member(
            &header(tar::EntryType::Directory, "./"),
            Pending::default(),
            None,
        )
        .unwrap();
        assert!(top.path.is_none());
    }

    #[test]
    fn padding_rounds_to_whole_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
