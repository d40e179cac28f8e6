//! The envelope around every stored record: a fixed header that says what the bytes are
//! and proves they are whole, then the rkyv bytes.
//!
//! ```text
//! offset 0  magic            4 bytes  b"LKSR"
//!        4  schema version   u16 LE   SCHEMA_VERSION
//!        6  reserved         u16      0
//!        8  payload length   u32 LE
//!       12  CRC32C(payload)  u32 LE
//!       16  payload          rkyv bytes, `length` of them
//! ```
//!
//! rkyv reads archived data in place and needs it aligned; the backend hands out bytes at
//! whatever address it likes, so `decode` copies the payload into an aligned buffer first.
//! rkyv's format (endianness, alignment, pointer width) is pinned by Cargo features.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{Error as RkyvError, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

pub const MAGIC: [u8; 4] = *b"LKSR";
/// Bump with any change to a type in `records.rs`.
pub const SCHEMA_VERSION: u16 = 7;
/// Versions this build reads. 4 added the event kind `Unmapped` and the channel view's
/// `unexplained` units to 3's layout; 5 added event kinds at the end of `EventKind`
/// (how a channel shows a sold-out SKU, and an order line's running totals) and nothing
/// else, so every version-4 record is a valid version-5 record. A version-4 build
/// refuses what 5 writes, as it must: it could not name the new kinds. 6 added one more
/// kind at the end (`PushedChange`, an acknowledged delta) and nothing else: versions 4
/// and 5 are valid version-6 records. 7 added one more at the end (`OrderPlacedTotal`,
/// an edit raising an open line) and nothing else.
pub const SCHEMA_VERSIONS_READ: std::ops::RangeInclusive<u16> = 4..=SCHEMA_VERSION;
pub const HEADER_BYTES: usize = 16;
/// No record comes near this; a larger length field means the header is damaged.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Why stored bytes could not be read back as a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer bytes than the header, or than the header's length field promises: a torn write.
    #[error("record is truncated: {have} bytes, {want} expected")]
    Truncated { have: usize, want: usize },
    /// The bytes are not a lockstep record at all.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// Written by another schema version of lockstep.
    #[error("schema version {found}, this build reads {} to {}", SCHEMA_VERSIONS_READ.start(), SCHEMA_VERSIONS_READ.end())]
    Version { found: u16 },
    /// The payload does not match its checksum: damaged on disk.
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    /// The checksum held but rkyv's validation did not: a bug, or a forged record.
    #[error("payload failed validation: {0}")]
    Invalid(String),
}

/// Serializes `value` into an envelope.
pub fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
{
    // Serializing our own plain records cannot fail (no custom serializers, no limits).
    let payload = rkyv::to_bytes::<RkyvError>(value).expect("records always serialize");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Checks an envelope and deserializes its record.
pub fn decode<T>(bytes: &[u8]) -> Result<T, EnvelopeError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, RkyvError>>
        + Deserialize<T, Strategy<Pool, RkyvError>>,
{
    let payload = checked_payload(bytes)?;
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<T, RkyvError>(&aligned).map_err(|e| EnvelopeError::Invalid(e.to_string()))
}

/// Checks an envelope and lends its archived record to `read` without deserializing it:
/// for reading a few records out of a large value (one record of a log chunk).
pub fn read_archived<T, R>(
    bytes: &[u8],
    read: impl FnOnce(&T::Archived) -> R,
) -> Result<R, EnvelopeError>
where
    T: Archive,
    T::Archived: rkyv::Portable + for<'a> CheckBytes<HighValidator<'a, RkyvError>>,
{
    let payload = checked_payload(bytes)?;
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let archived = rkyv::access::<T::Archived, RkyvError>(&aligned)
        .map_err(|e| EnvelopeError::Invalid(e.to_string()))?;
    Ok(read(archived))
}

/// Checks the header and checksum; returns the payload.
fn checked_payload(bytes: &[u8]) -> Result<&[u8], EnvelopeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(EnvelopeError::Truncated {
            have: bytes.len(),
            want: HEADER_BYTES,
        });
    }
    let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(EnvelopeError::BadMagic(magic));
    }
    let version = u16::from_le_bytes(bytes[4..6].try_into().expect("2 bytes"));
    if !SCHEMA_VERSIONS_READ.contains(&version) {
        return Err(EnvelopeError::Version { found: version });
    }
    let length = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let want = HEADER_BYTES + length.min(PAYLOAD_BYTES_MAX);
    if length > PAYLOAD_BYTES_MAX || bytes.len() < want {
        return Err(EnvelopeError::Truncated {
            have: bytes.len(),
            want,
        });
    }
    let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_BYTES..want];
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(EnvelopeError::Checksum { stored, computed });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::records::{DeltaRecord, LineRecord};

    #[test]
    fn round_trips_a_record() {
        let line = LineRecord {
            placed: Some(3),
            released: 1,
            shipped: 0,
            first_ts: -5,
        };
        assert_eq!(decode::<LineRecord>(&encode(&line)), Ok(line));
    }

    #[test]
    fn every_damage_is_caught() {
        let bytes = encode(&DeltaRecord { qty: 42 });
        let torn = &bytes[..bytes.len() - 1];
        assert!(matches!(
            decode::<DeltaRecord>(torn),
            Err(EnvelopeError::Truncated { .. })
        ));
        assert!(matches!(
            decode::<DeltaRecord>(&bytes[..10]),
            Err(EnvelopeError::Truncated { .. })
        ));

        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        assert!(matches!(
            decode::<DeltaRecord>(&flipped),
            Err(EnvelopeError::Checksum { .. })
        ));

        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(matches!(
            decode::<DeltaRecord>(&magic),
            Err(EnvelopeError::BadMagic(_))
        ));

        // Version 4's records are version 5's (5 only added enum variants at the end).
        let mut older = bytes.clone();
        older[4] = 4;
        assert!(decode::<DeltaRecord>(&older).is_ok());

        let mut version = bytes;
        version[4] = 99;
        assert_eq!(
            decode::<DeltaRecord>(&version),
            Err(EnvelopeError::Version { found: 99 })
        );
    }
}
