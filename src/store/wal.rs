//! The log's durable tail: the one write a batch waits for before it is acknowledged.
//!
//! A shard's batch used to be durable when fjall's journal was `fdatasync`ed. On ext4
//! that journal is a sparse file (fjall sizes it with `set_len`), so every sync also
//! allocated blocks and wrote the inode: three device writes per batch (data, inode,
//! cache flush), each one a VM exit on a virtual disk. Here a batch's chunk is written
//! once, into blocks written (with zeros) before they are used, with `O_DIRECT |
//! O_DSYNC`: one `pwrite` that returns when the data is on the device, with no page
//! cache, no writeback and no metadata to commit. The chunk also stays in memory
//! (`disk.rs`'s `Pending`), where readers see it, until a checkpoint writes it to fjall's
//! `log` partition and syncs fjall; from then on this file's records are redundant, and
//! writing starts again at its beginning (`reset`).
//!
//! ```text
//! a record, at a multiple of BLOCK bytes, padded with zeros to the next:
//! offset 0  magic                      4 bytes  b"LKSW"
//!        4  chunk length               u32 LE
//!        8  last sequence number       u64 LE   of the chunk's last record
//!       16  CRC32C(bytes 0..16, chunk) u32 LE
//!       20  reserved                   12 bytes 0
//!       32  chunk                      an envelope (`envelope.rs`) holding a LogChunk
//! ```
//!
//! **Reading back** (`open`) goes from the file's start and stops at the first record
//! that is not whole (bad magic, length or checksum: a torn write, never acknowledged,
//! or the zeros after the last record) or whose last sequence number is not above the
//! one before it. A `reset` zeroes the first block (durably), so nothing is read back
//! until a record is written there; the records left from before are older than any
//! written since (sequence numbers only grow), so the scan stops where the new ones end.
//!
//! **Growing**: the file starts at `GROW_BYTES` and grows by as much, zeros written and
//! synced before a record goes there, up to `MAX_BYTES`; the store checkpoints (and so
//! resets) instead of growing past it. A file system without `O_DIRECT` gets `O_DSYNC`
//! alone: the same guarantee through the page cache.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rkyv::util::AlignedVec;

use super::StoreError;

/// Records start at multiples of this, and `O_DIRECT` writes whole ones from memory
/// aligned to it (every block device's logical block size divides it).
pub const BLOCK: usize = 4096;
/// The file's first size and each step it grows by.
const GROW_BYTES: u64 = 1024 * 1024;
/// The file grows no further: once a batch would not fit, the store checkpoints first.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;
const MAGIC: [u8; 4] = *b"LKSW";
const HEADER: usize = 32;
/// A larger length field means a damaged header (a chunk is one batch's records).
const CHUNK_BYTES_MAX: usize = 256 * 1024 * 1024;

/// One shard's durable log tail (the file `wal` in the shard's directory).
pub struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes written (zeros at first) and synced: records go only inside them.
    size: u64,
    /// Where the next record goes.
    head: u64,
    /// The next record's buffer, block-aligned for `O_DIRECT`, reused.
    buf: AlignedVec<BLOCK>,
}

/// A record read back: the chunk's last sequence number and its envelope bytes.
pub type WalChunk = (u64, Vec<u8>);

impl Wal {
    /// The file of a shard's tail.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("wal")
    }

    /// Opens (creating) the tail in `dir` and reads back its chunks whose last sequence
    /// number is above `after` (the last one fjall's log holds), oldest first. The next
    /// record goes after the last of them, or at the start when there are none.
    pub fn open(dir: &Path, after: u64) -> Result<(Wal, Vec<WalChunk>), StoreError> {
        let path = Self::path_in(dir);
        let created = !path.exists();
        if created {
            File::create_new(&path)?;
        }
        let chunks = read_chunks(&path, after)?;
        let file = open_for_records(&path)?;
        let mut wal = Wal {
            size: file.metadata()?.len() / BLOCK as u64 * BLOCK as u64,
            file,
            path,
            head: 0,
            buf: AlignedVec::with_capacity(BLOCK),
        };
        if created {
            wal.grow_to(GROW_BYTES)?;
        }
        // The file's name must be durable as well as what goes in it (synced on every
        // open: a crash may have come between creating it and syncing its directory).
        File::open(dir)?.sync_all()?;
        wal.head = chunks.last().map_or(0, |(_, end)| *end);
        Ok((wal, chunks.into_iter().map(|(chunk, _)| chunk).collect()))
    }

    /// The chunks of an existing tail above `after`, for a store opened only to be read;
    /// nothing is written (no tail: none).
    pub fn read_only(dir: &Path, after: u64) -> Result<Vec<WalChunk>, StoreError> {
        let path = Self::path_in(dir);
        if !path.exists() {
            return Ok(Vec::new());
        }
        Ok(read_chunks(&path, after)?
            .into_iter()
            .map(|(chunk, _)| chunk)
            .collect())
    }

    /// Whether a chunk of `len` bytes can go in without a reset: inside the file or
    /// within what it may grow to. From the start, any chunk fits (the file grows).
    pub fn fits(&self, len: usize) -> bool {
        self.head == 0 || self.head + record_bytes(len) <= MAX_BYTES
    }

    /// Writes one chunk durably: when this returns, the chunk is on the device.
    pub fn append(&mut self, last_seq: u64, chunk: &[u8]) -> Result<(), StoreError> {
        let len = record_bytes(chunk.len());
        if self.head + len > self.size {
            let step = (self.head + len - self.size).div_ceil(GROW_BYTES) * GROW_BYTES;
            self.grow_to(self.size + step)?;
        }
        let header = header(chunk, last_seq)?;
        self.buf.clear();
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(chunk);
        self.buf.resize(len as usize, 0);
        self.file.write_all_at(&self.buf, self.head)?;
        self.head += len;
        // A large batch's buffer is not kept for the small ones after it.
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = AlignedVec::with_capacity(BLOCK);
        }
        Ok(())
    }

    /// Everything written so far is stored elsewhere (fjall, synced), or is to be
    /// forgotten (a refused batch's chunk): start again. The first block is zeroed,
    /// durably, so that until a new record is written there nothing is read back; the
    /// older records after it end the scan by their lower sequence numbers.
    pub fn reset(&mut self) -> Result<(), StoreError> {
        self.buf.clear();
        self.buf.resize(BLOCK, 0);
        self.file.write_all_at(&self.buf, 0)?;
        self.head = 0;
        Ok(())
    }

    /// Writes zeros up to `size` bytes and syncs them (the new length with them), so
    /// that records written there later change no metadata.
    fn grow_to(&mut self, size: u64) -> Result<(), StoreError> {
        // Zeros through the page cache (no alignment needed), then synced; the records'
        // direct writes that follow see them.
        let plain = OpenOptions::new().write(true).open(&self.path)?;
        let zeros = vec![0u8; GROW_BYTES as usize];
        let mut at = self.size;
        while at < size {
            let n = (size - at).min(GROW_BYTES) as usize;
            plain.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        plain.sync_data()?;
        self.size = size;
        Ok(())
    }
}

/// The bytes a record of a `len`-byte chunk takes: whole blocks.
fn record_bytes(len: usize) -> u64 {
    (HEADER + len).div_ceil(BLOCK) as u64 * BLOCK as u64
}

fn header(chunk: &[u8], last_seq: u64) -> Result<[u8; HEADER], StoreError> {
    let len = u32::try_from(chunk.len())
        .ok()
        .filter(|l| (*l as usize) <= CHUNK_BYTES_MAX)
        .ok_or_else(|| StoreError::Inconsistent {
            sku: String::new(),
            detail: format!("a batch's log chunk of {} bytes is too large", chunk.len()),
        })?;
    let mut out = [0u8; HEADER];
    out[0..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&len.to_le_bytes());
    out[8..16].copy_from_slice(&last_seq.to_le_bytes());
    let crc = checksum(&out, chunk);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// A record's CRC32C: of its header's first 16 bytes (magic, length, last sequence
/// number), then of its chunk.
fn checksum(header: &[u8; HEADER], chunk: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..16]), chunk)
}

/// The file opened for records: `O_DIRECT | O_DSYNC`, or `O_DSYNC` where the file
/// system refuses `O_DIRECT`.
fn open_for_records(path: &Path) -> Result<File, StoreError> {
    let open = |flags| {
        OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(path)
    };
    match open(libc::O_DIRECT | libc::O_DSYNC) {
        Ok(file) => Ok(file),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::info!(path = %path.display(), "no O_DIRECT here: the log tail is written with O_DSYNC alone");
            Ok(open(libc::O_DSYNC)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The whole records from the start, stopping at the first that is not, or that does
/// not follow the one before it; those above `after`, each with where it ends.
fn read_chunks(path: &Path, after: u64) -> Result<Vec<(WalChunk, u64)>, StoreError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut out = Vec::new();
    let mut at = 0u64;
    let mut previous = 0u64;
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= size {
        file.read_exact_at(&mut header, at)?;
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let last_seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let end = at + record_bytes(len);
        if header[0..4] != MAGIC || len > CHUNK_BYTES_MAX || end > size || last_seq <= previous {
            break;
        }
        let mut chunk = vec![0u8; len];
        file.read_exact_at(&mut chunk, at + HEADER as u64)?;
        let stored = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
        if checksum(&header, &chunk) != stored {
            break;
        }
        if last_seq > after {
            out.push(((last_seq, chunk), end));
        }
        previous = last_seq;
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(chunks: &[WalChunk]) -> Vec<u64> {
        chunks.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn chunks_come_back_in_order_and_only_those_past_after() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, none) = Wal::open(dir.path(), 0).unwrap();
        assert!(none.is_empty());
        wal.append(3, b"three").unwrap();
        wal.append(7, &vec![7u8; 3 * BLOCK]).unwrap(); // spans blocks
        wal.append(9, b"nine").unwrap();
        drop(wal);
        let (_, all) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(seqs(&all), vec![3, 7, 9]);
        assert_eq!(all[0].1, b"three");
        assert_eq!(all[1].1, vec![7u8; 3 * BLOCK]);
        assert_eq!(seqs(&Wal::read_only(dir.path(), 3).unwrap()), vec![7, 9]);
    }

    #[test]
    fn after_a_reset_the_older_records_are_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        for seq in 1..=5 {
            wal.append(seq, &[seq as u8; 100]).unwrap();
        }
        wal.reset().unwrap();
        assert!(
            Wal::read_only(dir.path(), 0).unwrap().is_empty(),
            "nothing until a new record"
        );
        wal.append(6, b"six").unwrap();
        drop(wal);
        // 5 was stored elsewhere before the reset: only 6 is past it.
        let (mut wal, tail) = Wal::open(dir.path(), 5).unwrap();
        assert_eq!(seqs(&tail), vec![6]);
        // Appends go after 6, not over it.
        wal.append(8, b"eight").unwrap();
        drop(wal);
        assert_eq!(seqs(&Wal::read_only(dir.path(), 5).unwrap()), vec![6, 8]);
    }

    #[test]
    fn a_damaged_record_ends_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(1, b"one").unwrap();
        wal.append(2, b"two").unwrap();
        wal.append(3, b"three").unwrap();
        drop(wal);
        // One byte of the second chunk changed, as a torn write would leave it.
        let file = OpenOptions::new()
            .write(true)
            .open(Wal::path_in(dir.path()))
            .unwrap();
        file.write_all_at(b"T", BLOCK as u64 + HEADER as u64)
            .unwrap();
        assert_eq!(seqs(&Wal::read_only(dir.path(), 0).unwrap()), vec![1]);
    }

    #[test]
    fn the_file_grows_for_a_large_chunk_and_never_past_a_reset_s_need() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let size = |d: &Path| std::fs::metadata(Wal::path_in(d)).unwrap().len();
        assert_eq!(size(dir.path()), GROW_BYTES);
        let big = vec![1u8; GROW_BYTES as usize + 10];
        wal.append(1, &big).unwrap();
        assert_eq!(size(dir.path()), 2 * GROW_BYTES);
        assert!(wal.fits(100));
        assert!(!wal.fits(MAX_BYTES as usize));
        assert_eq!(Wal::read_only(dir.path(), 0).unwrap()[0].1, big);
        wal.reset().unwrap();
        assert!(
            wal.fits(MAX_BYTES as usize),
            "from the start, the file grows"
        );
    }
}
