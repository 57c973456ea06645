//! Packing many small files into tar batches: which files go together, and the tar stream
//! itself, each member preceded by a PAX record `AIRLOCK.sha256` with its hex SHA-256 so the
//! server compares the provider's digest as it does for a tus `sha256`.
//!
//! A batch is held in memory whole (at most `max_bytes` of content plus headers): it is sent
//! again whole if it is not acknowledged, and its members' digests are known before their
//! headers are written.

use sha2::Digest;
use std::io::Read;

/// Groups consecutive items (by their sizes) into batches of at most `max_files` files and
/// `max_bytes` bytes; an item bigger than `max_bytes` gets a batch of its own. Returns the
/// index ranges.
pub fn plan(sizes: &[u64], max_files: usize, max_bytes: u64) -> Vec<std::ops::Range<usize>> {
    plan_ramped(sizes, max_files, max_files, max_bytes)
}

/// As [`plan`], but the first batch holds at most `first_files` files and each next one
/// twice as many, up to `max_files`: the first batches are read, sent and confirmed quickly,
/// so the server has work (and the user sees files arrive) while the larger ones are read.
pub fn plan_ramped(
    sizes: &[u64],
    first_files: usize,
    max_files: usize,
    max_bytes: u64,
) -> Vec<std::ops::Range<usize>> {
    let max_files = max_files.max(1);
    let mut cap = first_files.clamp(1, max_files);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, &s) in sizes.iter().enumerate() {
        let full = i - start >= cap || (i > start && bytes + s > max_bytes);
        if full {
            out.push(start..i);
            start = i;
            bytes = 0;
            cap = (cap * 2).min(max_files);
        }
        bytes += s;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// One member read from disk, with the digests of exactly the bytes packed. (`Bytes`: a
/// batch handed to the packing thread, or a member sent again alone, is not copied.)
#[derive(Debug, Clone)]
pub struct Member {
    pub remote: String,
    pub data: bytes::Bytes,
    pub sha256: String,
    pub blake3: String,
}

impl Member {
    /// Reads `local` whole, hashing it.
    pub fn read(local: &std::path::Path, remote: &str, size_hint: u64) -> std::io::Result<Self> {
        let mut data = Vec::with_capacity(size_hint as usize);
        std::fs::File::open(local)?.read_to_end(&mut data)?;
        Ok(Self::new(remote, data))
    }

    pub fn new(remote: &str, data: Vec<u8>) -> Self {
        Self {
            remote: remote.to_owned(),
            sha256: hex::encode(sha2::Sha256::digest(&data)),
            blake3: blake3::hash(&data).to_hex().to_string(),
            data: data.into(),
        }
    }
}

/// The PAX record naming a member's SHA-256.
pub const PAX_SHA256: &str = "AIRLOCK.sha256";

/// A tar stream of `members`: regular files, mode 0644, the given mtime.
pub fn build(members: &[Member], mtime: u64) -> std::io::Result<Vec<u8>> {
    let total: usize = members.iter().map(|m| m.data.len() + 1536).sum();
    let mut b = tar::Builder::new(Vec::with_capacity(total + 1024));
    for m in members {
        b.append_pax_extensions([(PAX_SHA256, m.sha256.as_bytes())])?;
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(m.data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        // Long names go as GNU long-name entries (the tar crate's way); readers take either.
        b.append_data(&mut h, &m.remote, m.data.as_ref())?;
    }
    b.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_close_at_the_file_count_and_the_byte_budget() {
        assert_eq!(plan(&[1; 5], 2, 100), vec![0..2, 2..4, 4..5]);
        assert_eq!(plan(&[40, 40, 40, 10], 10, 100), vec![0..2, 2..4]);
        // Too big for any batch: alone, never dropped.
        assert_eq!(plan(&[500, 1, 1], 10, 100), vec![0..1, 1..3]);
        assert!(plan(&[], 10, 100).is_empty());
        let sizes: Vec<u64> = (0..2500).map(|i| i % 7).collect();
        let p = plan(&sizes, 1000, 1 << 20);
        assert_eq!(p.iter().map(|r| r.len()).sum::<usize>(), 2500);
        assert!(p.iter().all(|r| r.len() <= 1000));
    }

    #[test]
    fn ramped_batches_double_up_to_the_cap() {
        let p = plan_ramped(&[1; 40], 2, 8, 100);
        let lens: Vec<usize> = p.iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![2, 4, 8, 8, 8, 8, 2]);
        assert_eq!(p.first().unwrap().start, 0);
        assert!(p.windows(2).all(|w| w[0].end == w[1].start));
        // The byte budget still closes a batch early.
        assert_eq!(
            plan_ramped(&[60, 60, 60], 1, 8, 100),
            vec![0..1, 1..2, 2..3]
        );
    }

    #[test]
    fn the_tar_holds_every_member_with_its_digest_record() {
        let long = format!("{}/{}", "d".repeat(80), "n".repeat(60));
        let members = vec![
            Member::new("a/one.txt", b"one".to_vec()),
            Member::new(&long, vec![7u8; 10_000]),
            Member::new("empty", Vec::new()),
        ];
        let tar_bytes = build(&members, 1_700_000_000).unwrap();
        let mut ar = tar::Archive::new(tar_bytes.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_str().unwrap().to_owned();
            let pax: Vec<(String, String)> = e
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|x| {
                    let x = x.unwrap();
                    (x.key().unwrap().to_owned(), x.value().unwrap().to_owned())
                })
                .collect();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let sha = hex::encode(sha2::Sha256::digest(&data));
            assert!(
                pax.contains(&(PAX_SHA256.to_owned(), sha.clone())),
                "{pax:?}"
            );
            seen.push((path, sha));
        }
        let want: Vec<_> = members
            .iter()
            .map(|m| (m.remote.clone(), m.sha256.clone()))
            .collect();
        assert_eq!(seen, want);
    }
}
