//! One object, RaptorQ-encoded once and kept ready to emit any of its symbols.

use std::fmt;

use bytes::Bytes;
use raptorq::{ObjectTransmissionInformation, SourceBlockEncoder};

use super::config::{CarouselConfig, CarouselError};
use super::cursor::Slot;
use super::packet::{
    block_layout, BlockLayout, ObjectId, ObjectKind, PacketHeader, ESI_LIMIT, SYMBOL_ALIGNMENT,
};

/// An object's bytes with their RaptorQ source-block encoders, built once by
/// [`EncodedObject::encode`] and reused by every cycle.
///
/// Encoding costs CPU in proportion to the object's size (see the `carousel` benchmark), so a
/// caller holding the [`crate::carousel::Carousel`] behind a lock can encode outside it (for
/// instance in `tokio::task::spawn_blocking`) and add the result with
/// [`crate::carousel::Carousel::insert_encoded`].
///
/// Memory: the encoders keep a copy of the source symbols plus the intermediate symbols, so an
/// encoded object costs about twice its length on top of `bytes`.
pub struct EncodedObject {
    id: ObjectId,
    bytes: Bytes,
    oti: ObjectTransmissionInformation,
    layout: BlockLayout,
    encoders: Vec<SourceBlockEncoder>,
}

impl EncodedObject {
    /// Splits `bytes` into source blocks of at most `config.max_block_symbols` symbols of
    /// `config.symbol_size` bytes and precomputes each block's intermediate symbols.
    ///
    /// # Errors
    ///
    /// [`CarouselError::EmptyObject`] for zero bytes (an empty object has no symbols to send;
    /// the receiver rejects length 0 too), [`CarouselError::ObjectTooLarge`] above
    /// `config.max_object_bytes`, [`CarouselError::Config`] for an invalid `config`.
    pub fn encode(bytes: Bytes, config: &CarouselConfig) -> Result<EncodedObject, CarouselError> {
        config.validate()?;
        let length = bytes.len() as u64;
        if length == 0 {
            return Err(CarouselError::EmptyObject);
        }
        if length > config.max_object_bytes {
            return Err(CarouselError::ObjectTooLarge {
                length,
                max: config.max_object_bytes,
            });
        }
        let symbol_size = config.symbol_size;
        let kt = length.div_ceil(u64::from(symbol_size));
        // `validate` checked that `max_object_bytes` needs at most 255 blocks.
        let blocks = kt.div_ceil(u64::from(config.max_block_symbols)) as u8;
        // Cannot assert: length ≤ max_object_bytes ≤ raptorq's transfer limit, T is a multiple
        // of the alignment, and ceil(Kt / Z) ≤ max_block_symbols ≤ K'max.
        let oti =
            ObjectTransmissionInformation::new(length, symbol_size, blocks, 1, SYMBOL_ALIGNMENT);
        let layout = block_layout(kt, blocks);
        let t = usize::from(symbol_size);
        let encoders = (0..blocks)
            .map(|sbn| {
                let start = layout.first_symbol(sbn) as usize * t;
                let end = start + layout.symbols(sbn) as usize * t;
                if end <= bytes.len() {
                    SourceBlockEncoder::new(sbn, &oti, &bytes[start..end])
                } else {
                    // The last block's last symbol is zero-padded (RFC 6330 §4.4.1.2).
                    let mut padded = bytes[start..].to_vec();
                    padded.resize(end - start, 0);
                    SourceBlockEncoder::new(sbn, &oti, &padded)
                }
            })
            .collect();
        Ok(EncodedObject {
            id: ObjectId::of(&bytes),
            bytes,
            oti,
            layout,
            encoders,
        })
    }

    /// The object's id: BLAKE3 of its bytes.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The object's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Symbol size `T` in bytes.
    pub fn symbol_size(&self) -> u16 {
        self.oti.symbol_size()
    }

    /// Number of source blocks `Z`.
    pub fn source_blocks(&self) -> u8 {
        self.oti.source_blocks()
    }

    /// Total source symbols `Kt`.
    pub fn source_symbols(&self) -> u64 {
        self.bytes.len().div_ceil(usize::from(self.symbol_size())) as u64
    }

    pub(crate) fn layout(&self) -> BlockLayout {
        self.layout
    }

    /// Repair symbols block `sbn` gets per cycle: `ceil(K × percent / 100)`, at least one when
    /// `percent > 0`.
    pub(crate) fn repairs_per_cycle(&self, sbn: u8, percent: u32) -> u32 {
        repairs_for(self.layout.symbols(sbn), percent)
    }

    /// The first repair id a block may use this cycle, given where the previous cycle's repair
    /// symbols ended: `next`, unless `count` more would run past the 24-bit ESI space, in
    /// which case the sequence starts over at 0 (after ~16 M / count cycles, long enough that
    /// a receiver has no use for symbols that old).
    pub(crate) fn repair_start(&self, sbn: u8, next: u32, count: u32) -> u32 {
        let k = self.layout.symbols(sbn);
        if u64::from(k) + u64::from(next) + u64::from(count) > u64::from(ESI_LIMIT) {
            0
        } else {
            next
        }
    }

    /// Appends the datagram for `slot` to `out`; `repair_start[sbn]` is the block's first
    /// repair id in this cycle.
    pub(crate) fn write_datagram(
        &self,
        kind: ObjectKind,
        cycle: u32,
        slot: Slot,
        repair_start: &[u32],
        out: &mut Vec<u8>,
    ) {
        PacketHeader::write(out, kind, &self.id, &self.oti, cycle);
        let t = usize::from(self.symbol_size());
        match slot {
            Slot::Source { sbn, esi } => {
                out.extend_from_slice(&payload_id(sbn, esi));
                let start = (self.layout.first_symbol(sbn) as usize + esi as usize) * t;
                let end = (start + t).min(self.bytes.len());
                out.extend_from_slice(&self.bytes[start..end]);
                out.resize(out.len() + (start + t - end), 0);
            }
            Slot::Repair { sbn, index } => {
                let encoder = &self.encoders[usize::from(sbn)];
                let first = repair_start[usize::from(sbn)] + index;
                // `repair_start` kept K + first < 2^24, the bound of raptorq's PayloadId assert.
                for packet in encoder.repair_packets(first, 1) {
                    out.extend_from_slice(&packet.payload_id().serialize());
                    out.extend_from_slice(packet.data());
                }
            }
        }
    }
}

/// See [`EncodedObject::repairs_per_cycle`].
pub(crate) fn repairs_for(source_symbols: u32, percent: u32) -> u32 {
    if percent == 0 {
        return 0;
    }
    let n = (u64::from(source_symbols) * u64::from(percent)).div_ceil(100);
    n.max(1) as u32
}

fn payload_id(sbn: u8, esi: u32) -> [u8; 4] {
    let esi = esi.to_be_bytes();
    [sbn, esi[1], esi[2], esi[3]]
}

impl fmt::Debug for EncodedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedObject")
            .field("id", &self.id)
            .field("length", &self.bytes.len())
            .field("symbol_size", &self.symbol_size())
            .field("source_blocks", &self.source_blocks())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carousel::packet::{Packet, DEFAULT_MAX_OBJECT_BYTES};

    fn config(max_block_symbols: u32) -> CarouselConfig {
        CarouselConfig {
            symbol_size: 256,
            max_block_symbols,
            max_object_bytes: 200_000,
            ..CarouselConfig::default()
        }
    }

    #[test]
    fn splits_into_blocks() {
        let bytes = Bytes::from(vec![5u8; 256 * 10 + 1]);
        let object = EncodedObject::encode(bytes, &config(4)).unwrap();
        assert_eq!(object.source_symbols(), 11);
        assert_eq!(object.source_blocks(), 3); // 4 + 4 + 3
        assert_eq!(object.layout().symbols(2), 3);
    }

    #[test]
    fn source_datagram_carries_the_padded_symbol() {
        let bytes = Bytes::from((0..300u32).map(|i| i as u8).collect::<Vec<u8>>());
        let object = EncodedObject::encode(bytes.clone(), &config(4096)).unwrap();
        let mut out = Vec::new();
        let slot = Slot::Source { sbn: 0, esi: 1 };
        object.write_datagram(ObjectKind::Bulletin, 3, slot, &[0], &mut out);
        let packet = Packet::parse(&out, DEFAULT_MAX_OBJECT_BYTES).unwrap();
        assert_eq!(packet.esi, 1);
        assert_eq!(&packet.symbol[..44], &bytes[256..]);
        assert!(packet.symbol[44..].iter().all(|&b| b == 0));
    }

    #[test]
    fn repair_datagram_uses_the_cycle_offset() {
        let object = EncodedObject::encode(Bytes::from(vec![1u8; 1000]), &config(4096)).unwrap();
        let mut out = Vec::new();
        let slot = Slot::Repair { sbn: 0, index: 2 };
        object.write_datagram(ObjectKind::Segment, 0, slot, &[10], &mut out);
        let packet = Packet::parse(&out, DEFAULT_MAX_OBJECT_BYTES).unwrap();
        // K = 4 source symbols, so repair id 12 is ESI 16.
        assert_eq!(packet.esi, 16);
    }

    #[test]
    fn repair_counts_round_up() {
        assert_eq!(repairs_for(100, 0), 0);
        assert_eq!(repairs_for(1, 1), 1);
        assert_eq!(repairs_for(100, 25), 25);
        assert_eq!(repairs_for(101, 25), 26);
    }

    #[test]
    fn repair_ids_wrap_before_the_esi_limit() {
        let object = EncodedObject::encode(Bytes::from(vec![1u8; 1000]), &config(4096)).unwrap();
        assert_eq!(object.repair_start(0, 100, 10), 100);
        assert_eq!(
            object.repair_start(0, ESI_LIMIT - 4 - 10, 10),
            ESI_LIMIT - 14
        );
        assert_eq!(object.repair_start(0, ESI_LIMIT - 4 - 9, 10), 0);
    }

    #[test]
    fn rejects_empty_and_oversized() {
        let err = EncodedObject::encode(Bytes::new(), &config(4096)).unwrap_err();
        assert!(matches!(err, CarouselError::EmptyObject));
        let small = CarouselConfig {
            max_object_bytes: 10,
            ..config(4096)
        };
        let err = EncodedObject::encode(Bytes::from(vec![0u8; 11]), &small).unwrap_err();
        assert!(matches!(err, CarouselError::ObjectTooLarge { .. }));
    }
}
