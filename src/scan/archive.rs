//! Archive inspection: zip, tar (ustar, GNU and pre-POSIX v7), and gzip, bzip2, xz, zstd and
//! lzip streams (a tar inside one included) are opened and every member is written to a
//! scratch folder (under a numbered name: a member's own name is never used as a path, so
//! `../../etc/passwd` or a symlink cannot escape), hashed, and handed back to be scanned like
//! any file, nested archives included, down to a depth limit.
//!
//! Formats are recognised by content, never by name: the magic at offset 0, a tar header's
//! checksum (v7 tars have no magic), and a zip's end-of-central-directory record wherever it
//! is (zip readers find it from the end, so a zip may follow any prefix). A file may be more
//! than one thing at once (a tar with a zip appended): each one found is inspected. A
//! container we recognise but cannot open (7z, RAR, cpio, lz4, a damaged stream, a window
//! too large) is unscannable, never clean, so the policy decides.
//!
//! Zip bombs are stopped by limits on the total expanded size, the expansion ratio, the member
//! count and the depth, counted over everything expanded from one uploaded file, and a
//! decompressor's memory by a window limit. Passing a size limit is a finding
//! ([`Expand::Bomb`]); an encrypted member is unscannable.
//!
//! All of this is blocking I/O and CPU: callers run it on the blocking pool.

use serde::Deserialize;
use sha2::Digest;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
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
    /// The largest window (dictionary) a compressed stream may need to be decompressed; a
    /// stream that asks for more is unscannable. Bounds the memory one scan takes.
    #[serde(default = "default_max_window", deserialize_with = "super::size")]
    max_window: u64,
}

fn default_max_window() -> u64 {
    256 << 20
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: u32,
    pub max_members: u64,
    pub max_expanded_size: u64,
    pub max_ratio: u64,
    pub ratio_applies_above: u64,
    pub max_window: u64,
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
        if c.max_window < 1 << 20 || c.max_window > 4 << 30 {
            return Err(("max_window", "must be between 1 MiB and 4 GiB".into()));
        }
        Ok(Limits {
            max_depth: c.max_depth,
            max_members: c.max_members,
            max_expanded_size: c.max_expanded_size,
            max_ratio: c.max_ratio,
            ratio_applies_above: c.ratio_applies_above,
            max_window: c.max_window,
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

/// A compressed stream: one file in, one file out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    Lzip,
}

impl Codec {
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Bzip2 => "bzip2",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
            Codec::Lzip => "lzip",
        }
    }

    fn tar_name(self) -> &'static str {
        match self {
            Codec::Gzip => "tar.gz",
            Codec::Bzip2 => "tar.bz2",
            Codec::Xz => "tar.xz",
            Codec::Zstd => "tar.zst",
            Codec::Lzip => "tar.lz",
        }
    }

    /// The file-name endings this codec's files usually have, and what they stand for once
    /// decompressed (`.tgz` is a `.tar`).
    fn endings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Codec::Gzip => &[(".tgz", ".tar"), (".gz", ""), (".z", "")],
            Codec::Bzip2 => &[(".tbz2", ".tar"), (".tbz", ".tar"), (".bz2", "")],
            Codec::Xz => &[(".txz", ".tar"), (".xz", "")],
            Codec::Zstd => &[(".tzst", ".tar"), (".zst", ""), (".zstd", "")],
            Codec::Lzip => &[(".tlz", ".tar"), (".lz", "")],
        }
    }

    /// The codec whose magic number `head` starts with.
    fn sniff(head: &[u8]) -> Option<Codec> {
        if head.starts_with(&[0x1f, 0x8b]) {
            return Some(Codec::Gzip);
        }
        // "BZh", the block size '1'..'9', then a block's or the end-of-stream's magic.
        if head.len() >= 10
            && head.starts_with(b"BZh")
            && (b'1'..=b'9').contains(&head[3])
            && (head[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
                || head[4..10] == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90])
        {
            return Some(Codec::Bzip2);
        }
        if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            return Some(Codec::Xz);
        }
        // A zstd frame, or a skippable frame (0x184D2A50..5F) that may precede one.
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
        {
            return Some(Codec::Zstd);
        }
        if head.starts_with(b"LZIP\x01") {
            return Some(Codec::Lzip);
        }
        None
    }

    /// A decoder over `r` whose memory is bounded by `max_window`. Errors reading `r` come
    /// back as they are (the caller tags them); everything else the decoder says is about
    /// the data.
    fn decoder<'a, R: BufRead + 'a>(
        self,
        mut r: R,
        max_window: u64,
    ) -> Result<Box<dyn Read + 'a>, Expand> {
        let kb = u32::try_from(max_window / 1024).unwrap_or(u32::MAX - 1);
        Ok(match self {
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Codec::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
            Codec::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(r, true, kb)),
            Codec::Zstd => Box::new(Zstd::new(r, max_window)),
            Codec::Lzip => {
                // lzip has no memory limit of its own: its dictionary size is in byte 5.
                let head = r.fill_buf().map_err(|e| read_error(e, "lzip"))?;
                if head.len() < 6 {
                    return Err(Expand::Corrupt("lzip: header cut short".into()));
                }
                let b = head[5];
                let base = 1u64 << (b & 0x1f);
                let dict = base - (base / 16) * u64::from(b >> 5);
                if dict > max_window {
                    return Err(too_big("lzip", dict, max_window));
                }
                Box::new(lzma_rust2::LzipReader::new(r))
            }
        })
    }
}

fn too_big(what: &str, need: u64, max: u64) -> Expand {
    Expand::Unsupported(format!(
        "{what} needs a {need}-byte window to decompress, more than {max} (archive.max_window)"
    ))
}

/// What the archive scanner can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zip,
    Tar,
    /// A tar inside a compressed stream: its members are read straight from the stream.
    CompressedTar(Codec),
    /// Any other compressed stream: one member, which is scanned (and opened) in turn.
    Compressed(Codec),
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Zip => "zip",
            Format::Tar => "tar",
            Format::CompressedTar(c) => c.tar_name(),
            Format::Compressed(c) => c.as_str(),
        }
    }
}

/// What the archive scanner found in a file: formats it opens, or a container it recognises
/// and cannot open (which is unscannable, never clean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Open(Format),
    Unsupported(&'static str),
}

/// Bytes read from the start of a file to recognise it (ISO 9660's magic is at 32 KiB).
const HEAD: u64 = 64 << 10;
/// How far in a self-extracting stub may put a RAR, 7z or CAB archive that we look for.
const SFX_SEARCH: u64 = 1 << 20;
/// A zip's end-of-central-directory record: 22 bytes and a comment of up to 64 KiB.
const EOCD_SEARCH: u64 = 22 + 0xffff;

/// Containers and compressors recognised by their magic at offset 0, that we cannot open.
const UNSUPPORTED: &[(usize, &[u8], &str)] = &[
    (0, b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (0, b"Rar!\x1a\x07", "RAR archive"),
    (0, b"MSCF\0\0\0\0", "cabinet (CAB) archive"),
    (0, b"!<arch>\n", "ar archive (.a, .deb)"),
    (0, b"\xed\xab\xee\xdb", "RPM package"),
    (0, b"xar!", "xar archive"),
    (0, b"hsqs", "squashfs image"),
    (0, b"sqsh", "squashfs image"),
    (0, b"\x04\x22\x4d\x18", "lz4 stream"),
    (0, b"\x02\x21\x4c\x18", "lz4 stream"),
    (0, b"\x89LZO\0\r\n\x1a\n", "lzop stream"),
    (0, b"MSWIM\0\0\0", "Windows image (WIM)"),
    (0x8001, b"CD001", "ISO 9660 image"),
];

/// Containers whose readers look for them past a self-extracting stub.
const SFX: &[(&[u8], &str)] = &[
    (b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"MSCF\0\0\0\0", "cabinet (CAB) archive"),
];

/// Everything the archive scanner recognises in a file, from its content: the format at
/// offset 0, and also a zip found by its end-of-central-directory record anywhere (zip
/// readers find it from the end, so data may precede it: a self-extractor, a polyglot), and
/// self-extracting RAR, 7z or CAB archives. Each one found is inspected.
pub fn detect(path: &Path, limits: &Limits) -> std::io::Result<Vec<Found>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    detect_in(&mut f, len, limits)
}

/// [`detect`] over a file already in memory.
pub fn detect_bytes(data: &[u8], limits: &Limits) -> std::io::Result<Vec<Found>> {
    detect_in(&mut std::io::Cursor::new(data), data.len() as u64, limits)
}

fn detect_in<R: Read + Seek>(f: &mut R, len: u64, limits: &Limits) -> std::io::Result<Vec<Found>> {
    let max_window = limits.max_window;
    let mut head = Vec::with_capacity(HEAD as usize);
    f.by_ref().take(HEAD).read_to_end(&mut head)?;
    let mut found = Vec::new();
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        found.push(Found::Open(Format::Zip));
    } else if is_tar_header(&head) {
        found.push(Found::Open(Format::Tar));
    } else if let Some(c) = Codec::sniff(&head) {
        // Is it a tar inside? Decompress the first block to see (a failure says nothing:
        // expanding it will say what is wrong).
        let mut inner = Vec::with_capacity(512);
        f.seek(std::io::SeekFrom::Start(0))?;
        if let Ok(d) = c.decoder(BufReader::new(f.by_ref()), max_window) {
            let _ = d.take(512).read_to_end(&mut inner);
        }
        found.push(Found::Open(if is_tar_header(&inner) {
            Format::CompressedTar(c)
        } else {
            Format::Compressed(c)
        }));
    } else if let Some((_, _, what)) = UNSUPPORTED
        .iter()
        .find(|(at, magic, _)| head.get(*at..*at + magic.len()) == Some(*magic))
    {
        found.push(Found::Unsupported(what));
    } else if is_lzma_header(&head) {
        found.push(Found::Unsupported("lzma (.lzma) stream"));
    } else if is_cpio_header(&head) {
        found.push(Found::Unsupported("cpio archive"));
    } else if head.len() >= 3
        && head[0] == 0x1f
        && head[1] == 0x9d
        && (9..=16).contains(&(head[2] & 0x1f))
    {
        found.push(Found::Unsupported("compress (.Z) stream"));
    }
    if found.first() != Some(&Found::Open(Format::Zip)) && has_zip_directory(f, len)? {
        found.push(Found::Open(Format::Zip));
    }
    if found.is_empty() {
        if let Some(what) = sfx(f)? {
            found.push(Found::Unsupported(what));
        }
    }
    Ok(found)
}

/// Whether `b` starts like a legacy .lzma file as the lzma tools write it: the default
/// properties byte, a dictionary size of a whole number of 64 KiB, and an unknown (all ones)
/// or plausible uncompressed size. The format has no magic number, so this is a guess.
fn is_lzma_header(b: &[u8]) -> bool {
    b.len() >= 13
        && b[..3] == [0x5d, 0x00, 0x00]
        && (b[5..13].iter().all(|c| *c == 0xff) || b[11..13] == [0, 0])
}

/// Whether `b` starts with a portable cpio header: its magic, then only hexadecimal (newc,
/// crc) or octal (odc) digits, so a table whose first cell is "070701" is not taken for one.
fn is_cpio_header(b: &[u8]) -> bool {
    let digits = |len: usize, ok: fn(&u8) -> bool| b.len() >= len && b[6..len].iter().all(ok);
    match b.get(..6) {
        Some(b"070701") | Some(b"070702") => digits(110, u8::is_ascii_hexdigit),
        Some(b"070707") => digits(76, |c| (b'0'..=b'7').contains(c)),
        _ => false,
    }
}

/// Whether `b` starts with a tar header: ustar, GNU or pre-POSIX (v7), which has no magic,
/// so the header's checksum is what tells (computed unsigned or, as old tars did, signed).
fn is_tar_header(b: &[u8]) -> bool {
    if b.len() < 512 {
        return false;
    }
    let h = &b[..512];
    if h[0] == 0 {
        return false; // no name: an end-of-archive block, or not a tar.
    }
    // The checksum: octal digits, maybe led by spaces, ended by NULs or spaces.
    let field = &h[148..156];
    let from = field.iter().position(|c| *c != b' ').unwrap_or(8);
    let to = field[from..]
        .iter()
        .position(|c| !(b'0'..=b'7').contains(c))
        .map_or(8, |n| from + n);
    if to == from || !field[to..].iter().all(|c| *c == 0 || *c == b' ') {
        return false;
    }
    let want = field[from..to].iter().fold(0u32, |a, d| {
        a.saturating_mul(8).saturating_add(u32::from(d - b'0'))
    });
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, c) in h.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { *c };
        unsigned += u32::from(c);
        signed += i32::from(c as i8);
    }
    want == unsigned || i64::from(want) == i64::from(signed)
}

/// Whether the last bytes of the file hold a zip's end-of-central-directory record whose
/// central directory is where the record says, relative to wherever the zip starts (the
/// same check zip readers make): so a stray "PK\5\6" in compressed data does not count.
fn has_zip_directory<R: Read + Seek>(f: &mut R, len: u64) -> std::io::Result<bool> {
    let start = len.saturating_sub(EOCD_SEARCH);
    f.seek(std::io::SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    f.by_ref().take(EOCD_SEARCH).read_to_end(&mut tail)?;
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u64;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    for i in (0..tail.len().saturating_sub(21)).rev() {
        if &tail[i..i + 4] != b"PK\x05\x06" {
            continue;
        }
        let eocd = start + i as u64;
        let comment = u16_at(&tail, i + 20);
        if eocd + 22 + comment > len {
            continue;
        }
        let entries = u16_at(&tail, i + 10);
        let cd_size = u64::from(u32_at(&tail, i + 12));
        let cd_offset = u32_at(&tail, i + 16);
        // Zip64 keeps the real numbers in a record of its own, located just before.
        if entries == 0xffff || cd_offset == u32::MAX || cd_size == u64::from(u32::MAX) {
            let at = i.checked_sub(20);
            if at.is_some_and(|a| &tail[a..a + 4] == b"PK\x06\x07") {
                return Ok(true);
            }
            continue;
        }
        if entries == 0 {
            // An empty zip holds nothing to scan: only a whole file of it counts.
            if eocd == 0 {
                return Ok(true);
            }
            continue;
        }
        let Some(cd) = eocd.checked_sub(cd_size) else {
            continue;
        };
        let mut sig = [0u8; 4];
        f.seek(std::io::SeekFrom::Start(cd))?;
        if f.read_exact(&mut sig).is_ok() && &sig == b"PK\x01\x02" && cd >= u64::from(cd_offset) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A RAR, 7z or CAB archive behind a self-extracting stub, in the first MiB.
fn sfx<R: Read + Seek>(f: &mut R) -> std::io::Result<Option<&'static str>> {
    f.seek(std::io::SeekFrom::Start(0))?;
    let mut b = Vec::new();
    f.by_ref().take(SFX_SEARCH).read_to_end(&mut b)?;
    for (magic, what) in SFX {
        if b.windows(magic.len()).any(|w| w == *magic) {
            return Ok(Some(what));
        }
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
    /// Recognised, but not something we can open (a method or window we do not support):
    /// unscannable.
    Unsupported(String),
    /// Our own I/O failed (reading quarantine, writing scratch space): an error, retried.
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

/// An error reading the uploaded file itself (our disk, not its content), tagged so that it
/// stays an error (retried) after passing through a decoder that calls everything else bad
/// data.
#[derive(Debug)]
struct SourceFailed(std::io::Error);
impl std::fmt::Display for SourceFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reading the file: {}", self.0)
    }
}
impl std::error::Error for SourceFailed {}

/// The uploaded file, with its read errors tagged.
struct Source(File);

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), SourceFailed(e)))
    }
}

impl Seek for Source {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0
            .seek(pos)
            .map_err(|e| std::io::Error::new(e.kind(), SourceFailed(e)))
    }
}

/// Whether an error, or anything it wraps, is a `T`.
fn carries<T: std::error::Error + 'static>(e: &std::io::Error) -> Option<&T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|i| i as _);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cur = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|i| i as _),
            None => c.source(),
        };
    }
    None
}

/// An error writing a member: a limit passed (a bomb), or our scratch space failed.
fn write_error(e: std::io::Error) -> Expand {
    match carries::<BombMarker>(&e) {
        Some(m) => Expand::Bomb(m.0.clone()),
        None => Expand::Io(e),
    }
}

/// An error reading an archive: our own disk failing is an error (retried); anything else
/// is the archive's content, which we could not read: corrupt, or past a memory limit.
fn read_error(e: std::io::Error, what: &str) -> Expand {
    if carries::<SourceFailed>(&e).is_some() {
        return Expand::Io(e);
    }
    if let Some(m) = carries::<BombMarker>(&e) {
        return Expand::Bomb(m.0.clone());
    }
    if e.kind() == std::io::ErrorKind::OutOfMemory {
        return Expand::Unsupported(format!(
            "{what}: needs more memory to decompress than archive.max_window allows ({e})"
        ));
    }
    Expand::Corrupt(format!("{what}: {e}"))
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
    // Not io::copy: which side failed decides the verdict (the archive's bytes, or ours).
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e, &name)),
        };
        sink.write_all(&buf[..n]).map_err(write_error)?;
    }
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
    let file = Source(File::open(path).map_err(Expand::Io)?);
    match format {
        Format::Zip => expand_zip(file, dir, budget, limits),
        Format::Tar => expand_tar(BufReader::new(file), dir, budget, limits),
        Format::CompressedTar(c) => expand_tar(
            c.decoder(BufReader::new(file), limits.max_window)?,
            dir,
            budget,
            limits,
        ),
        Format::Compressed(c) => {
            let mut r = BufReader::new(file);
            let mut name = None;
            if c == Codec::Gzip {
                // gzip may carry the original name; a hostile one is only a label here.
                let mut gz = flate2::bufread::GzDecoder::new(&mut r);
                name = gz
                    .header()
                    .and_then(|h| h.filename())
                    .map(|n| String::from_utf8_lossy(n).into_owned());
                let _ = gz.read(&mut []);
                name = name.or_else(|| {
                    gz.header()
                        .and_then(|h| h.filename())
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                });
                drop(gz);
                r.seek(std::io::SeekFrom::Start(0))
                    .map_err(|e| read_error(e, c.as_str()))?;
            }
            let name = name.unwrap_or_else(|| stripped_name(path, c));
            let mut d = c.decoder(r, limits.max_window)?;
            Ok(vec![write_member(name, &mut d, dir, budget, limits)?])
        }
    }
}

/// The name a decompressed file would get: its own without the codec's ending.
fn stripped_name(path: &Path, c: Codec) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    for (end, becomes) in c.endings() {
        if lower.ends_with(end) && lower.len() > end.len() {
            return format!("{}{becomes}", &name[..name.len() - end.len()]);
        }
    }
    "data".into()
}

fn expand_zip<R: Read + Seek>(
    r: R,
    dir: &Path,
    budget: &mut Budget,
    limits: &Limits,
) -> Result<Vec<Member>, Expand> {
    let mut zip = zip::ZipArchive::new(r).map_err(|e| match e {
        zip::result::ZipError::Io(e) => read_error(e, "zip"),
        e => Expand::Corrupt(format!("not a readable zip: {e}")),
    })?;
    if zip.len() as u64 > limits.max_members {
        return Err(Expand::Bomb(format!(
            "lists {} members, more than {} (archive.max_members)",
            zip.len(),
            limits.max_members
        )));
    }
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let (name, encrypted, is_dir, size) = {
            let raw = zip
                .by_index_raw(i)
                .map_err(|e| Expand::Corrupt(format!("member {i}: {e}")))?;
            (
                raw.name()
                    .map(|n| n.into_owned())
                    .unwrap_or_else(|_| format!("<member {i}>")),
                raw.encrypted(),
                raw.is_dir(),
                raw.size(),
            )
        };
        if encrypted {
            return Err(Expand::Encrypted(format!(
                "member {name} is encrypted and cannot be inspected"
            )));
        }
        // A "folder" with bytes is scanned like a file: unzip would write them somewhere.
        if is_dir && size == 0 {
            continue;
        }
        let mut f = zip.by_index(i).map_err(|e| match e {
            zip::result::ZipError::UnsupportedArchive(w) => {
                Expand::Unsupported(format!("member {name}: {w}"))
            }
            e => Expand::Corrupt(format!("member {name}: {e}")),
        })?;
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
    use tar::EntryType as T;
    let mut ar = tar::Archive::new(r);
    let mut out = Vec::new();
    let entries = ar.entries().map_err(|e| read_error(e, "tar"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(e, "tar entry"))?;
        let kind = entry.header().entry_type();
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "<unreadable name>".into());
        let want = entry.size();
        // Headers that only describe other entries (pax, GNU long names, volume labels,
        // dump-folder listings) are never extracted. Links, folders and devices carry no
        // bytes, unless they do: then the bytes are scanned. Every other type, known or not,
        // is a file, as GNU tar extracts an unknown type as a regular file.
        let metadata = matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) || matches!(kind.as_byte(), b'V' | b'D' | b'N');
        let no_content = matches!(
            kind,
            T::Directory | T::Symlink | T::Link | T::Char | T::Block | T::Fifo
        ) || (kind.as_byte() == 0 || kind.as_byte() == b'0')
            && name.ends_with('/');
        if metadata || (no_content && want == 0) {
            continue;
        }
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

/// A zstd decoder over any number of frames (skippable ones skipped), checking each frame's
/// checksum, with its window bounded.
struct Zstd<R: BufRead> {
    src: R,
    dec: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> Zstd<R> {
    fn new(src: R, max_window: u64) -> Self {
        let mut dec = ruzstd::decoding::FrameDecoder::new();
        dec.set_max_window_size(max_window);
        Self {
            src,
            dec,
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for Zstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError as F, ReadFrameHeaderError as H};
        let bad = |e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("zstd: {e}"))
        };
        loop {
            if !self.in_frame {
                if self.src.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.dec.reset(&mut self.src) {
                    Ok(()) => self.in_frame = true,
                    Err(F::ReadFrameHeaderError(H::SkipFrame { length, .. })) => {
                        let skipped = std::io::copy(
                            &mut (&mut self.src).take(u64::from(length)),
                            &mut std::io::sink(),
                        )?;
                        if skipped != u64::from(length) {
                            return Err(bad(&"skippable frame cut short"));
                        }
                    }
                    Err(e @ F::WindowSizeTooBig { .. }) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::OutOfMemory,
                            format!("zstd: {e}"),
                        ))
                    }
                    Err(e) => return Err(bad(&e)),
                }
                continue;
            }
            if self.dec.can_collect() > 0 {
                return self.dec.read(buf);
            }
            if self.dec.is_finished() {
                if let (Some(want), Some(got)) = (
                    self.dec.get_checksum_from_data(),
                    self.dec.get_calculated_checksum(),
                ) {
                    if want != got {
                        return Err(bad(&"checksum mismatch"));
                    }
                }
                self.in_frame = false;
                continue;
            }
            self.dec
                .decode_blocks(
                    &mut self.src,
                    ruzstd::decoding::BlockDecodingStrategy::UptoBlocks(1),
                )
                .map_err(|e| bad(&e))?;
        }
    }
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
            max_window: 64 << 20,
        }
    }

    #[test]
    fn members_are_written_under_numbered_names_with_their_digests() {
        let f = tar_of(&[
            ("../../etc/passwd", b"root".to_vec()),
            ("a/b.txt", b"hi".to_vec()),
        ]);
        assert_eq!(
            detect(f.path(), &limits()).unwrap(),
            [Found::Open(Format::Tar)]
        );
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

    #[test]
    fn unknown_tar_entry_types_are_files_and_v7_headers_are_tars() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for (name, kind, data) in [
            ("odd", tar::EntryType::new(b'Z'), &b"payload"[..]),
            ("dir/", tar::EntryType::Directory, &b""[..]),
            ("link", tar::EntryType::Symlink, &b""[..]),
            (
                "fat-link",
                tar::EntryType::Link,
                &b"bytes behind a link"[..],
            ),
        ] {
            // A v7 header: no magic, no version; only the checksum says it is a tar.
            let mut h = tar::Header::new_old();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(kind);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.finish().unwrap();
        drop(b);
        let bytes = std::fs::read(f.path()).unwrap();
        assert_ne!(&bytes[257..262], b"ustar");
        assert_eq!(
            detect(f.path(), &limits()).unwrap(),
            [Found::Open(Format::Tar)]
        );
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::new(bytes.len() as u64);
        let m = expand(f.path(), Format::Tar, dir.path(), &mut budget, &limits()).unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["odd", "fat-link"]);
        assert_eq!(std::fs::read(&m[0].path).unwrap(), b"payload");
        // One flipped byte and the checksum no longer holds: not a tar.
        let mut broken = bytes.clone();
        broken[0] ^= 1;
        std::fs::write(f.path(), &broken).unwrap();
        assert_eq!(detect(f.path(), &limits()).unwrap(), []);
    }

    fn zip_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut out);
        z.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn a_zip_is_found_by_its_central_directory_behind_any_prefix() {
        let mut bytes = b"#!/bin/sh\nexit 0\n".to_vec();
        bytes.extend(zip_of("inner.txt", b"hello"));
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &bytes).unwrap();
        assert_eq!(
            detect(f.path(), &limits()).unwrap(),
            [Found::Open(Format::Zip)]
        );
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::new(bytes.len() as u64);
        let m = expand(f.path(), Format::Zip, dir.path(), &mut budget, &limits()).unwrap();
        assert_eq!(m[0].name, "inner.txt");
        assert_eq!(std::fs::read(&m[0].path).unwrap(), b"hello");
        // A stray end-of-directory signature with nothing where it points is not a zip.
        let mut stray = vec![7u8; 1000];
        stray.extend(b"PK\x05\x06\0\0\0\0\x01\0\x01\0\x10\0\0\0\x20\0\0\0\0\0");
        std::fs::write(f.path(), &stray).unwrap();
        assert_eq!(detect(f.path(), &limits()).unwrap(), []);
    }

    #[test]
    fn recognised_containers_we_cannot_open_are_named() {
        let f = tempfile::NamedTempFile::new().unwrap();
        for (bytes, what) in [
            (&b"7z\xbc\xaf\x27\x1c\0\x04rest"[..], "7z archive"),
            (&b"!<arch>\nfile/           "[..], "ar archive (.a, .deb)"),
            (&b"\x04\x22\x4d\x18\x64\x40\xa7"[..], "lz4 stream"),
        ] {
            std::fs::write(f.path(), bytes).unwrap();
            assert_eq!(
                detect(f.path(), &limits()).unwrap(),
                [Found::Unsupported(what)]
            );
        }
        // Tables that merely start like a magic number are not containers.
        for text in [&b"070701,42,17\n070702,3,9\n"[..], b"\x1f\x9d\x00 binary"] {
            std::fs::write(f.path(), text).unwrap();
            assert_eq!(detect(f.path(), &limits()).unwrap(), []);
        }
        // Behind a self-extractor's stub too.
        let mut sfx = b"MZ\x90\0".to_vec();
        sfx.extend(vec![0u8; 5000]);
        sfx.extend(b"Rar!\x1a\x07\x01\0");
        std::fs::write(f.path(), &sfx).unwrap();
        assert_eq!(
            detect(f.path(), &limits()).unwrap(),
            [Found::Unsupported("RAR archive")]
        );
    }

    #[test]
    fn gzip_and_bzip2_streams_are_opened_and_a_tar_inside_is_read_directly() {
        let t = tar_of(&[("a.txt", b"inside".to_vec())]);
        let tar = std::fs::read(t.path()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(b"just text").unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (bytes, format, name, content) in [
            (
                gz.finish().unwrap(),
                Format::CompressedTar(Codec::Gzip),
                "a.txt",
                &b"inside"[..],
            ),
            (
                bz.finish().unwrap(),
                Format::Compressed(Codec::Bzip2),
                "data",
                &b"just text"[..],
            ),
        ] {
            std::fs::write(f.path(), &bytes).unwrap();
            assert_eq!(detect(f.path(), &limits()).unwrap(), [Found::Open(format)]);
            let mut budget = Budget::new(bytes.len() as u64);
            let m = expand(f.path(), format, dir.path(), &mut budget, &limits()).unwrap();
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].name, name);
            assert_eq!(std::fs::read(&m[0].path).unwrap(), content);
            // Cut in half, it is corrupt: never clean, never an error to retry.
            std::fs::write(f.path(), &bytes[..bytes.len() / 2]).unwrap();
            let mut budget = Budget::new(bytes.len() as u64);
            let got = expand(f.path(), format, dir.path(), &mut budget, &limits());
            assert!(
                matches!(got, Err(Expand::Corrupt(_))),
                "{format:?}: {got:?}"
            );
        }
    }
}
