//! Streaming SHA-256 + BLAKE3: the one hashing engine used by ingest, release and verification.
//!
//! Hashing is CPU work, so it never runs on the async threads: [`StreamHasher`] hands each
//! buffer to two blocking workers, one per digest, so both digests are computed in parallel
//! with each other and with the I/O that moves the same bytes. `sha2` picks the CPU's SHA
//! extensions at run time (cpufeatures) where they exist.
//!
//! Files at rest are hashed by [`hash_paths`] on a blocking thread: SHA-256 on one thread while
//! BLAKE3 runs on all cores over the memory-mapped file (rayon); callers hash many files in
//! parallel with rayon.

use crate::domain::HexDigest;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Buffers handed to the hashing workers together; shared, not copied.
pub type Batch = Arc<[Bytes]>;

/// Both digests of a byte stream, finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub sha256: HexDigest,
    pub blake3: HexDigest,
}

/// The running state of both digests over a prefix of a file. Cloning it is cheap, which is how
/// a chunk that fails its checksum is undone.
#[derive(Clone)]
pub struct HashState {
    pub size: u64,
    sha256: Sha256,
    blake3: blake3::Hasher,
}

impl Default for HashState {
    fn default() -> Self {
        Self::new()
    }
}

impl HashState {
    pub fn new() -> Self {
        Self {
            size: 0,
            sha256: Sha256::new(),
            blake3: blake3::Hasher::new(),
        }
    }

    /// Feeds bytes on the current thread. Use from blocking code only.
    pub fn update(&mut self, buf: &[u8]) {
        self.size += buf.len() as u64;
        self.sha256.update(buf);
        self.blake3.update(buf);
    }

    pub fn finish(&self) -> Digests {
        Digests {
            size: self.size,
            sha256: HexDigest::from_bytes(&self.sha256.clone().finalize().into()),
            blake3: HexDigest::from_bytes(self.blake3.finalize().as_bytes()),
        }
    }
}

/// Feeds a [`HashState`] from async code: each `update` is queued to two blocking workers.
/// The queues are bounded, so a slow hash slows the sender instead of growing memory.
pub struct StreamHasher {
    sha_tx: mpsc::Sender<Batch>,
    b3_tx: mpsc::Sender<Batch>,
    sha_job: tokio::task::JoinHandle<Sha256>,
    b3_job: tokio::task::JoinHandle<blake3::Hasher>,
    size: u64,
}

/// Batches queued per worker; with ~1 MiB batches this bounds the hasher's memory to a few MiB.
const QUEUE_DEPTH: usize = 8;

impl StreamHasher {
    pub fn resume(state: HashState) -> Self {
        let (sha_tx, mut sha_rx) = mpsc::channel::<Batch>(QUEUE_DEPTH);
        let (b3_tx, mut b3_rx) = mpsc::channel::<Batch>(QUEUE_DEPTH);
        let HashState {
            size,
            mut sha256,
            mut blake3,
        } = state;
        // Blocking workers: hashing a GiB takes a CPU-second, which must not stall the runtime.
        let sha_job = tokio::task::spawn_blocking(move || {
            while let Some(batch) = sha_rx.blocking_recv() {
                for b in batch.iter() {
                    sha256.update(b);
                }
            }
            sha256
        });
        let b3_job = tokio::task::spawn_blocking(move || {
            while let Some(batch) = b3_rx.blocking_recv() {
                for b in batch.iter() {
                    blake3.update(b);
                }
            }
            blake3
        });
        Self {
            sha_tx,
            b3_tx,
            sha_job,
            b3_job,
            size,
        }
    }

    pub async fn update(&mut self, buf: Bytes) {
        self.update_many(Arc::from([buf])).await;
    }

    /// Queues several buffers as one message: network frames are passed on as they came,
    /// without first copying them into one large buffer.
    pub async fn update_many(&mut self, batch: Batch) {
        self.size += batch.iter().map(|b| b.len() as u64).sum::<u64>();
        // A worker only stops when its receiver is dropped, which happens in `finish`.
        let _ = self.sha_tx.send(batch.clone()).await;
        let _ = self.b3_tx.send(batch).await;
    }

    /// Waits for both workers and returns the state over everything fed so far.
    pub async fn finish(self) -> std::io::Result<HashState> {
        drop(self.sha_tx);
        drop(self.b3_tx);
        let sha256 = self.sha_job.await.map_err(std::io::Error::other)?;
        let blake3 = self.b3_job.await.map_err(std::io::Error::other)?;
        Ok(HashState {
            size: self.size,
            sha256,
            blake3,
        })
    }
}

/// Hashes a whole reader on the current (blocking) thread, with a 1 MiB buffer.
pub fn hash_reader(mut r: impl std::io::Read) -> std::io::Result<Digests> {
    let mut st = HashState::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        st.update(&buf[..n]);
    }
    Ok(st.finish())
}

/// Files at or above this size get BLAKE3 across all cores, memory-mapped.
const RAYON_ABOVE: u64 = 4 << 20;

/// Feeds files, in order, to a SHA-256 with a 1 MiB buffer.
fn sha256_of(paths: &[std::path::PathBuf]) -> std::io::Result<Sha256> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in paths {
        let mut f = std::fs::File::open(p)?;
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h)
}

/// Feeds a file to BLAKE3: all cores over the memory-mapped file when it is large.
fn blake3_update(b3: &mut blake3::Hasher, path: &std::path::Path) -> std::io::Result<()> {
    if std::fs::metadata(path)?.len() >= RAYON_ABOVE {
        b3.update_mmap_rayon(path)?;
    } else {
        b3.update_reader(std::fs::File::open(path)?)?;
    }
    Ok(())
}

/// Both digests of `len` bytes at `offset` of one file (a packed archive member). A file that
/// ends early gives the digests of what is there (a short size tells the caller).
pub fn hash_range(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Digests> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut st = HashState::new();
    let mut left = f.take(len);
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    loop {
        let n = left.read(&mut buf)?;
        if n == 0 {
            break;
        }
        st.update(&buf[..n]);
    }
    Ok(st.finish())
}

/// Both digests of the concatenation of `paths` (a file's segments, or one released file).
pub fn hash_paths(paths: &[std::path::PathBuf]) -> std::io::Result<Digests> {
    if let [one] = paths {
        // The common case, one file: open once, size it from the open file (fstat), and hash
        // a small one in one read on this thread: a thread or a memory map per file would cost
        // more than the hashing.
        let mut f = std::fs::File::open(one)?;
        let len = f.metadata()?.len();
        if len < RAYON_ABOVE {
            let mut buf = Vec::with_capacity(len as usize + 1);
            std::io::Read::read_to_end(&mut f, &mut buf)?;
            let mut st = HashState::new();
            st.update(&buf);
            return Ok(st.finish());
        }
    }
    let mut size = 0u64;
    for p in paths {
        size += std::fs::metadata(p)?.len();
    }
    // SHA-256 on one thread while BLAKE3 uses the others.
    std::thread::scope(|s| {
        let sha = s.spawn(|| sha256_of(paths));
        let mut b3 = blake3::Hasher::new();
        for p in paths {
            blake3_update(&mut b3, p)?;
        }
        let sha = sha
            .join()
            .map_err(|_| std::io::Error::other("hash thread panicked"))??;
        Ok(Digests {
            size,
            sha256: HexDigest::from_bytes(&sha.finalize().into()),
            blake3: HexDigest::from_bytes(b3.finalize().as_bytes()),
        })
    })
}

/// One digest of a file at rest, for measuring each alone (`airlock hash --digest`).
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<HexDigest> {
    let h = sha256_of(&[path.to_owned()])?;
    Ok(HexDigest::from_bytes(&h.finalize().into()))
}

/// BLAKE3 of a file at rest.
pub fn blake3_file(path: &std::path::Path) -> std::io::Result<HexDigest> {
    let mut b3 = blake3::Hasher::new();
    blake3_update(&mut b3, path)?;
    Ok(HexDigest::from_bytes(b3.finalize().as_bytes()))
}

/// The per-chunk checksum of the tus checksum extension.
pub enum ChunkChecksum {
    Sha1(sha1::Sha1, Vec<u8>),
    Sha256(Sha256, Vec<u8>),
}

impl ChunkChecksum {
    pub fn update(&mut self, buf: &[u8]) {
        match self {
            ChunkChecksum::Sha1(h, _) => h.update(buf),
            ChunkChecksum::Sha256(h, _) => h.update(buf),
        }
    }

    /// Whether the bytes fed match the expected digest.
    pub fn matches(self) -> bool {
        match self {
            ChunkChecksum::Sha1(h, want) => h.finalize().as_slice() == want.as_slice(),
            ChunkChecksum::Sha256(h, want) => h.finalize().as_slice() == want.as_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streamed_in_pieces_equals_hashed_at_once() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = hash_reader(&data[..]).unwrap();
        let mut h = StreamHasher::resume(HashState::new());
        for chunk in data.chunks(100_003) {
            h.update(Bytes::copy_from_slice(chunk)).await;
        }
        let st = h.finish().await.unwrap();
        // Resume from a snapshot half-way, as a resumed upload does.
        let mut half = HashState::new();
        half.update(&data[..1_234_567]);
        let mut h2 = StreamHasher::resume(half);
        h2.update(Bytes::copy_from_slice(&data[1_234_567..])).await;
        assert_eq!(st.finish(), whole);
        assert_eq!(h2.finish().await.unwrap().finish(), whole);
        assert_eq!(
            whole.sha256.as_str(),
            hex::encode(Sha256::digest(&data)).as_str()
        );
        assert_eq!(whole.blake3.as_str(), blake3::hash(&data).to_hex().as_str());
    }
}
