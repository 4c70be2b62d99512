//! The carousel datagram: a fixed header, then one RaptorQ encoding packet.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "MHCB"
//!      4     1  format version (1)
//!      5     1  object kind (1 manifest, 2 segment, 3 bulletin)
//!      6    32  object id: BLAKE3 of the object's bytes
//!     38     8  object length, u64 big-endian
//!     46    12  RaptorQ object transmission information (RFC 6330 §3.3.2, §3.3.3)
//!     58     4  cycle number, u32 big-endian
//!     62     4  RaptorQ payload id: source block number u8, encoding symbol id u24
//!     66     T  one encoding symbol of exactly the OTI's symbol size T
//! ```
//!
//! Every field is checked here, before any byte reaches raptorq, because raptorq panics on
//! inconsistent input (an SBN past the last block, a symbol of the wrong length, an OTI that
//! breaks its asserts). A datagram that parses is safe to hand to a `SourceBlockDecoder`.

use std::fmt;

use raptorq::ObjectTransmissionInformation;

/// First four bytes of every carousel datagram.
pub const MAGIC: [u8; 4] = *b"MHCB";

/// The version of the header layout above; receivers reject any other.
pub const FORMAT_VERSION: u8 = 1;

/// Length of the fixed header, up to and excluding the RaptorQ payload id:
/// 4 magic + 1 version + 1 kind + 32 id + 8 length + 12 OTI + 4 cycle.
pub const HEADER_LEN: usize = 62;

/// Length of the RaptorQ payload id (SBN u8 + ESI u24) that precedes each symbol.
pub const PAYLOAD_ID_LEN: usize = 4;

/// The largest datagram the default settings produce.
///
/// 1280 bytes is the IPv6 minimum link MTU (RFC 8200 §5), so a datagram that fits it crosses
/// any IPv6 path (and any sane IPv4 one) without fragmentation: 1280 − 40 (IPv6 header) − 8
/// (UDP header) = 1232.
pub const MAX_DATAGRAM_LEN: usize = 1232;

/// Symbol alignment `Al` used by the sender (RFC 6330 §4.3 recommends 4 or 8; raptorq's own
/// defaults use 8, which lets its GF(256) loops work on whole words).
pub const SYMBOL_ALIGNMENT: u8 = 8;

/// Default symbol size `T`: the largest multiple of [`SYMBOL_ALIGNMENT`] for which a datagram
/// fits [`MAX_DATAGRAM_LEN`]: 1232 − 62 (header) − 4 (payload id) = 1166, rounded down to a
/// multiple of 8 = 1160. A full datagram is then 1226 bytes (1254 on the wire over IPv4,
/// 1274 over IPv6).
pub const DEFAULT_SYMBOL_SIZE: u16 = {
    let room = MAX_DATAGRAM_LEN - HEADER_LEN - PAYLOAD_ID_LEN;
    (room - room % SYMBOL_ALIGNMENT as usize) as u16
};

/// Smallest symbol size a receiver accepts.
///
/// The decoder allocates a slot per source symbol as soon as the first packet of a block
/// arrives, so tiny symbols would let one forged header reserve a lot of memory (a 64 MiB
/// object in 8-byte symbols is 8 Mi slots); 256 bytes keeps that under 1/10 of the object size
/// and is far below any real path MTU.
pub const MIN_SYMBOL_SIZE: u16 = 256;

/// Default bound on an object's length, on both sides: a segment or manifest is far smaller,
/// and a receiver buffers up to this much per object in progress.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 64 << 20;

/// `K'max` of RFC 6330 §5.1.2: the most source symbols one source block may have. raptorq
/// asserts it (and does not export the constant).
pub const MAX_SOURCE_SYMBOLS_PER_BLOCK: u32 = 56_403;

/// Largest ESI + 1: the encoding symbol id is 24 bits on the wire.
pub(crate) const ESI_LIMIT: u32 = 1 << 24;

/// The identity of a carousel object: the BLAKE3 hash of its bytes.
///
/// Receivers deliver an object only after checking its decoded bytes hash to this, so a
/// corrupted or forged reassembly is never delivered.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// The id of `bytes`: their BLAKE3 hash.
    pub fn of(bytes: &[u8]) -> ObjectId {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    /// Lowercase hex of the 32 bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// What an object is, so the receiving node knows how to verify and store it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ObjectKind {
    /// A signed content manifest.
    Manifest = 1,
    /// A media segment.
    Segment = 2,
    /// A signed bulletin.
    Bulletin = 3,
}

impl ObjectKind {
    /// The kind for a wire byte, or `None` for a byte this version does not know.
    pub fn from_u8(byte: u8) -> Option<ObjectKind> {
        match byte {
            1 => Some(ObjectKind::Manifest),
            2 => Some(ObjectKind::Segment),
            3 => Some(ObjectKind::Bulletin),
            _ => None,
        }
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Why a datagram is not a valid carousel packet. Every variant means the datagram was
/// dropped; none is fatal to the receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than a header and a payload id.
    #[error("datagram of {len} bytes is shorter than the {min}-byte minimum")]
    TooShort {
        /// Datagram length.
        len: usize,
        /// Header + payload id length.
        min: usize,
    },
    /// Does not start with [`MAGIC`]: not a carousel datagram at all.
    #[error("bad magic")]
    BadMagic,
    /// A format version this receiver does not speak.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// An object kind this receiver does not know.
    #[error("unknown object kind {0}")]
    UnknownKind(u8),
    /// Object length 0: the carousel carries no empty objects.
    #[error("empty object")]
    EmptyObject,
    /// Object longer than the receiver's limit.
    #[error("object of {length} bytes exceeds the {max}-byte limit")]
    ObjectTooLarge {
        /// Length in the header.
        length: u64,
        /// The receiver's `max_object_bytes`.
        max: u64,
    },
    /// The object transmission information is unusable or disagrees with the header.
    #[error("invalid transmission information: {reason}")]
    InvalidOti {
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The symbol is not exactly the OTI's symbol size.
    #[error("symbol of {got} bytes, expected {expected}")]
    SymbolLength {
        /// The OTI's symbol size.
        expected: usize,
        /// Bytes after the payload id.
        got: usize,
    },
    /// The source block number is not below the OTI's number of blocks.
    #[error("source block {sbn} out of range (object has {blocks})")]
    BlockOutOfRange {
        /// SBN in the payload id.
        sbn: u8,
        /// Number of source blocks in the OTI.
        blocks: u8,
    },
}

/// The validated header of a carousel datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketHeader {
    kind: ObjectKind,
    id: ObjectId,
    length: u64,
    oti: [u8; 12],
    cycle: u32,
}

impl PacketHeader {
    /// Parses and validates a whole datagram (header, payload id and symbol length) and
    /// returns its header.
    ///
    /// # Errors
    ///
    /// [`PacketError`] for any datagram that is not a well-formed carousel packet for an
    /// object of at most `max_object_bytes`. Never panics, whatever the input.
    pub fn parse(datagram: &[u8], max_object_bytes: u64) -> Result<PacketHeader, PacketError> {
        Packet::parse(datagram, max_object_bytes).map(|packet| packet.header)
    }

    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The object's id (BLAKE3 of its bytes).
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The object's length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The sender's cycle number when it sent this datagram.
    pub fn cycle(&self) -> u32 {
        self.cycle
    }

    /// Symbol size `T` in bytes.
    pub fn symbol_size(&self) -> u16 {
        self.oti().symbol_size()
    }

    /// Number of source blocks `Z`.
    pub fn source_blocks(&self) -> u8 {
        self.oti().source_blocks()
    }

    /// Total source symbols `Kt = ceil(length / T)`: about the fewest packets that can
    /// complete the object.
    pub fn source_symbols(&self) -> u64 {
        self.length.div_ceil(u64::from(self.symbol_size()))
    }

    /// The raw OTI bytes, as sent.
    pub(crate) fn oti_bytes(&self) -> [u8; 12] {
        self.oti
    }

    /// The OTI; built with `deserialize`, which (unlike `new`) asserts nothing.
    pub(crate) fn oti(&self) -> ObjectTransmissionInformation {
        ObjectTransmissionInformation::deserialize(&self.oti)
    }

    /// Source symbols in block `sbn` (RFC 6330 §4.4.1.2 partition of `Kt` into `Z` blocks:
    /// the first `ZL` blocks get `KL = ceil(Kt/Z)` symbols, the rest `KS = floor(Kt/Z)`).
    pub(crate) fn block_symbols(&self, sbn: u8) -> u32 {
        block_layout(self.source_symbols(), self.source_blocks()).symbols(sbn)
    }

    /// Writes the header of this object with cycle number `cycle` to `out`.
    pub(crate) fn write(
        out: &mut Vec<u8>,
        kind: ObjectKind,
        id: &ObjectId,
        oti: &ObjectTransmissionInformation,
        cycle: u32,
    ) {
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(kind.as_u8());
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&oti.transfer_length().to_be_bytes());
        out.extend_from_slice(&oti.serialize());
        out.extend_from_slice(&cycle.to_be_bytes());
    }
}

/// How `Kt` source symbols split into `Z` blocks (RFC 6330 §4.4.1.2).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockLayout {
    /// Symbols in each of the first `long_blocks` blocks.
    long: u32,
    /// Symbols in each remaining block (`long - 1`, or `long` when all are equal).
    short: u32,
    long_blocks: u32,
}

impl BlockLayout {
    pub(crate) fn symbols(&self, sbn: u8) -> u32 {
        if u32::from(sbn) < self.long_blocks {
            self.long
        } else {
            self.short
        }
    }

    /// Index of block `sbn`'s first symbol among all the object's source symbols.
    pub(crate) fn first_symbol(&self, sbn: u8) -> u64 {
        let sbn = u64::from(sbn);
        let long_blocks = u64::from(self.long_blocks);
        if sbn <= long_blocks {
            sbn * u64::from(self.long)
        } else {
            long_blocks * u64::from(self.long) + (sbn - long_blocks) * u64::from(self.short)
        }
    }
}

/// The partition of `kt` symbols into `z` blocks. `z` must be in `1..=kt`.
pub(crate) fn block_layout(kt: u64, z: u8) -> BlockLayout {
    let z = u64::from(z.max(1));
    let long = kt.div_ceil(z);
    let short = kt / z;
    let long_blocks = kt - short * z;
    BlockLayout {
        long: long as u32,
        short: short as u32,
        long_blocks: long_blocks as u32,
    }
}

/// A validated datagram, borrowing its symbol.
#[derive(Debug)]
pub(crate) struct Packet<'a> {
    pub(crate) header: PacketHeader,
    pub(crate) sbn: u8,
    pub(crate) esi: u32,
    pub(crate) symbol: &'a [u8],
}

impl<'a> Packet<'a> {
    /// See [`PacketHeader::parse`].
    pub(crate) fn parse(datagram: &'a [u8], max_object_bytes: u64) -> Result<Self, PacketError> {
        let min = HEADER_LEN + PAYLOAD_ID_LEN;
        if datagram.len() < min {
            return Err(PacketError::TooShort {
                len: datagram.len(),
                min,
            });
        }
        if datagram[0..4] != MAGIC {
            return Err(PacketError::BadMagic);
        }
        if datagram[4] != FORMAT_VERSION {
            return Err(PacketError::UnsupportedVersion(datagram[4]));
        }
        let kind = ObjectKind::from_u8(datagram[5]).ok_or(PacketError::UnknownKind(datagram[5]))?;
        let id = ObjectId(array(&datagram[6..38]));
        let length = u64::from_be_bytes(array(&datagram[38..46]));
        let oti_bytes: [u8; 12] = array(&datagram[46..58]);
        let cycle = u32::from_be_bytes(array(&datagram[58..62]));
        if length == 0 {
            return Err(PacketError::EmptyObject);
        }
        if length > max_object_bytes {
            return Err(PacketError::ObjectTooLarge {
                length,
                max: max_object_bytes,
            });
        }
        let header = PacketHeader {
            kind,
            id,
            length,
            oti: oti_bytes,
            cycle,
        };
        validate_oti(&header)?;

        let oti = header.oti();
        let sbn = datagram[HEADER_LEN];
        let esi = u32::from_be_bytes([
            0,
            datagram[HEADER_LEN + 1],
            datagram[HEADER_LEN + 2],
            datagram[HEADER_LEN + 3],
        ]);
        let symbol = &datagram[min..];
        let expected = usize::from(oti.symbol_size());
        if symbol.len() != expected {
            return Err(PacketError::SymbolLength {
                expected,
                got: symbol.len(),
            });
        }
        if sbn >= oti.source_blocks() {
            return Err(PacketError::BlockOutOfRange {
                sbn,
                blocks: oti.source_blocks(),
            });
        }
        Ok(Packet {
            header,
            sbn,
            esi,
            symbol,
        })
    }
}

/// Checks the OTI against the header and against every assert raptorq would hit.
fn validate_oti(header: &PacketHeader) -> Result<(), PacketError> {
    let invalid = |reason| Err(PacketError::InvalidOti { reason });
    let raw = header.oti;
    let oti = header.oti();
    // The transfer length is 40 bits on the wire; the header carries the full u64.
    if oti.transfer_length() != header.length {
        return invalid("transfer length differs from the object length");
    }
    if raw[5] != 0 {
        return invalid("reserved byte is not zero");
    }
    let symbol_size = oti.symbol_size();
    if symbol_size < MIN_SYMBOL_SIZE {
        return invalid("symbol size below the minimum");
    }
    let alignment = oti.symbol_alignment();
    if alignment == 0 || !symbol_size.is_multiple_of(u16::from(alignment)) {
        return invalid("symbol size is not a multiple of the alignment");
    }
    // The sender never splits symbols into sub-blocks (interleaving only helps when a whole
    // block does not fit the decoder's working memory); refusing them keeps raptorq's
    // sub-block arithmetic away from untrusted values.
    if oti.sub_blocks() != 1 {
        return invalid("sub-blocks are not supported");
    }
    let blocks = u64::from(oti.source_blocks());
    let kt = header.source_symbols();
    if blocks == 0 || blocks > kt {
        return invalid("number of source blocks outside 1..=source symbols");
    }
    if kt.div_ceil(blocks) > u64::from(MAX_SOURCE_SYMBOLS_PER_BLOCK) {
        return invalid("source block larger than RaptorQ's maximum");
    }
    Ok(())
}

/// Copies a slice of known length into an array (the slicing above fixes the length).
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oti(length: u64, symbol_size: u16, blocks: u8) -> ObjectTransmissionInformation {
        ObjectTransmissionInformation::new(length, symbol_size, blocks, 1, SYMBOL_ALIGNMENT)
    }

    fn datagram(length: u64, symbol_size: u16, blocks: u8, sbn: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let id = ObjectId([7; 32]);
        let oti = oti(length, symbol_size, blocks);
        PacketHeader::write(&mut out, ObjectKind::Segment, &id, &oti, 9);
        out.extend_from_slice(&[sbn, 0, 1, 2]);
        out.resize(out.len() + usize::from(symbol_size), 0xab);
        out
    }

    #[test]
    fn default_datagram_fits_the_ipv6_minimum_mtu() {
        assert_eq!(DEFAULT_SYMBOL_SIZE, 1160);
        let len = HEADER_LEN + PAYLOAD_ID_LEN + usize::from(DEFAULT_SYMBOL_SIZE);
        assert_eq!(len, 1226);
        assert!(len <= MAX_DATAGRAM_LEN);
        assert!(len + 40 + 8 <= 1280);
    }

    #[test]
    fn header_roundtrips() {
        let bytes = datagram(5000, 1160, 2, 1);
        assert_eq!(bytes.len(), 1226);
        let packet = Packet::parse(&bytes, DEFAULT_MAX_OBJECT_BYTES).unwrap();
        assert_eq!(packet.header.kind(), ObjectKind::Segment);
        assert_eq!(packet.header.id(), ObjectId([7; 32]));
        assert_eq!(packet.header.length(), 5000);
        assert_eq!(packet.header.cycle(), 9);
        assert_eq!(packet.header.symbol_size(), 1160);
        assert_eq!(packet.header.source_blocks(), 2);
        assert_eq!(packet.header.source_symbols(), 5);
        assert_eq!(packet.sbn, 1);
        assert_eq!(packet.esi, 0x0102);
        assert_eq!(packet.symbol.len(), 1160);
    }

    #[test]
    fn rejects_each_bad_field() {
        let good = datagram(5000, 1160, 2, 0);
        let max = DEFAULT_MAX_OBJECT_BYTES;
        let check = |bytes: &[u8], want: fn(&PacketError) -> bool| {
            let err = Packet::parse(bytes, max).unwrap_err();
            assert!(want(&err), "unexpected {err:?}");
        };
        check(&good[..65], |e| matches!(e, PacketError::TooShort { .. }));
        let mut b = good.clone();
        b[0] = b'X';
        check(&b, |e| *e == PacketError::BadMagic);
        let mut b = good.clone();
        b[4] = 2;
        check(&b, |e| *e == PacketError::UnsupportedVersion(2));
        let mut b = good.clone();
        b[5] = 4;
        check(&b, |e| *e == PacketError::UnknownKind(4));
        let mut b = good.clone();
        b[45] = 1; // the header length no longer equals the OTI's 5000
        check(&b, |e| matches!(e, PacketError::InvalidOti { .. }));
        let mut b = good.clone();
        b[51] = 1; // reserved OTI byte
        check(&b, |e| matches!(e, PacketError::InvalidOti { .. }));
        check(&good[..good.len() - 1], |e| {
            matches!(e, PacketError::SymbolLength { .. })
        });
        let b = datagram(5000, 1160, 2, 2);
        check(&b, |e| {
            *e == PacketError::BlockOutOfRange { sbn: 2, blocks: 2 }
        });
        let b = datagram(5000, 1160, 6, 0); // 6 blocks of 5 symbols
        check(&b, |e| matches!(e, PacketError::InvalidOti { .. }));
        let b = datagram(5000, 128, 1, 0);
        check(&b, |e| matches!(e, PacketError::InvalidOti { .. }));
        let b = datagram(max + 1, 1160, 255, 0);
        check(&b, |e| matches!(e, PacketError::ObjectTooLarge { .. }));
        let mut b = datagram(1, 1160, 1, 0);
        b[38..46].copy_from_slice(&0u64.to_be_bytes());
        check(&b, |e| *e == PacketError::EmptyObject);
    }

    #[test]
    fn block_layout_matches_rfc_partition() {
        // 10 symbols in 3 blocks: 4, 3, 3.
        let layout = block_layout(10, 3);
        assert_eq!(
            [layout.symbols(0), layout.symbols(1), layout.symbols(2)],
            [4, 3, 3]
        );
        assert_eq!(
            [
                layout.first_symbol(0),
                layout.first_symbol(1),
                layout.first_symbol(2)
            ],
            [0, 4, 7]
        );
        // 9 in 3: all equal.
        let layout = block_layout(9, 3);
        assert_eq!(layout.first_symbol(2), 6);
        assert_eq!(layout.symbols(2), 3);
    }

    #[test]
    fn object_id_formats_as_hex() {
        let id = ObjectId::of(b"abc");
        let hex = id.to_string();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("6437b3ac"));
        assert_eq!(format!("{id:?}"), format!("ObjectId({hex})"));
    }

    #[test]
    fn kinds_roundtrip() {
        for kind in [
            ObjectKind::Manifest,
            ObjectKind::Segment,
            ObjectKind::Bulletin,
        ] {
            assert_eq!(ObjectKind::from_u8(kind.as_u8()), Some(kind));
        }
        assert_eq!(ObjectKind::from_u8(0), None);
    }
}
