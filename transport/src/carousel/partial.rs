//! One object being reassembled: a RaptorQ decoder per source block, with memory accounting.

use std::collections::HashSet;
use std::iter;

use raptorq::{EncodingPacket, PayloadId, SourceBlockDecoder};

use super::packet::{Packet, PacketHeader};

/// Bytes charged per stored packet on top of its symbol: the symbol's `Vec` header and the
/// `EncodingPacket` around it in raptorq, and our own and raptorq's ESI hash-set entries.
/// An estimate on the high side, so the budget errs towards evicting early.
pub(crate) const PACKET_OVERHEAD: u64 = 96;

/// Bytes charged per source symbol of a block whose decoder exists: raptorq allocates an
/// `Option<Symbol>` (24 bytes) per source symbol up front.
pub(crate) const SLOT_OVERHEAD: u64 = 32;

/// Extra packets per block the peak estimate allows for: decoding normally succeeds with K
/// symbols, fails with probability about 1 % then, 0.01 % at K + 1 and so on (RFC 6330 §1),
/// so 16 more is ample.
const SPARE_PACKETS_PER_BLOCK: u64 = 16;

/// State of one source block.
#[derive(Debug)]
enum Block {
    /// No packet yet: nothing allocated.
    Waiting,
    /// Collecting symbols; `seen` holds the ESIs stored so far.
    Decoding {
        decoder: Box<SourceBlockDecoder>,
        seen: HashSet<u32>,
    },
    /// Decoded: `K × T` bytes, the last symbol of the object still zero-padded.
    Done(Vec<u8>),
}

/// What one packet did to the object.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// Its block is decoded or it repeats a symbol already stored: nothing changed.
    Duplicate,
    /// Stored (and perhaps completed its block).
    Stored,
    /// Completed the object: its bytes, not yet checked against the id.
    Complete(Vec<u8>),
}

/// An object being reassembled from packets that share one header (id, kind, length, OTI).
#[derive(Debug)]
pub(crate) struct PartialObject {
    header: PacketHeader,
    blocks: Vec<Block>,
    blocks_done: u8,
    packets: u64,
    charged: u64,
    /// Logical time of the last stored packet, for least-recently-updated eviction.
    pub(crate) touched: u64,
    pub(crate) last_cycle: u32,
    /// Cycle of the first stored packet.
    pub(crate) first_cycle: u32,
}

impl PartialObject {
    pub(crate) fn new(header: PacketHeader, now: u64) -> Self {
        PartialObject {
            header,
            blocks: (0..header.source_blocks())
                .map(|_| Block::Waiting)
                .collect(),
            blocks_done: 0,
            packets: 0,
            charged: 0,
            touched: now,
            last_cycle: header.cycle(),
            first_cycle: header.cycle(),
        }
    }

    /// An upper estimate of the bytes this object can hold at once: every block with its
    /// symbols, some spare packets, and its decoder's slots.
    pub(crate) fn peak_bytes(header: &PacketHeader) -> u64 {
        let t = u64::from(header.symbol_size());
        let blocks = u64::from(header.source_blocks());
        let kt = header.source_symbols();
        (kt + blocks * SPARE_PACKETS_PER_BLOCK) * (t + PACKET_OVERHEAD) + kt * SLOT_OVERHEAD
    }

    pub(crate) fn header(&self) -> &PacketHeader {
        &self.header
    }

    /// Bytes currently charged to this object.
    pub(crate) fn charged(&self) -> u64 {
        self.charged
    }

    /// Distinct packets stored so far, including those of decoded blocks.
    pub(crate) fn packets(&self) -> u64 {
        self.packets
    }

    pub(crate) fn blocks_done(&self) -> u8 {
        self.blocks_done
    }

    /// Adds one packet, which must have this object's header (the caller keys objects by it)
    /// and was validated by [`Packet::parse`], so nothing below can make raptorq panic: the SBN
    /// is below the block count, the symbol is exactly `T` bytes, and the ESI is 24 bits.
    pub(crate) fn accept(&mut self, packet: &Packet<'_>, now: u64) -> Accepted {
        let sbn = packet.sbn;
        let t = u64::from(self.header.symbol_size());
        let k = self.header.block_symbols(sbn);
        let block = &mut self.blocks[usize::from(sbn)];
        if let Block::Waiting = block {
            let oti = self.header.oti();
            let decoder = SourceBlockDecoder::new(sbn, &oti, u64::from(k) * t);
            *block = Block::Decoding {
                decoder: Box::new(decoder),
                seen: HashSet::new(),
            };
            self.charged += u64::from(k) * SLOT_OVERHEAD;
        }
        let Block::Decoding { decoder, seen } = block else {
            return Accepted::Duplicate;
        };
        if !seen.insert(packet.esi) {
            return Accepted::Duplicate;
        }
        self.packets += 1;
        self.touched = now;
        self.last_cycle = packet.header.cycle();
        self.charged += t + PACKET_OVERHEAD;
        let encoding = EncodingPacket::new(PayloadId::new(sbn, packet.esi), packet.symbol.to_vec());
        let Some(bytes) = decoder.decode(iter::once(encoding)) else {
            return Accepted::Stored;
        };
        let stored = seen.len() as u64;
        self.charged -= stored * (t + PACKET_OVERHEAD) + u64::from(k) * SLOT_OVERHEAD;
        self.charged += bytes.len() as u64;
        *block = Block::Done(bytes);
        self.blocks_done += 1;
        if usize::from(self.blocks_done) < self.blocks.len() {
            return Accepted::Stored;
        }
        let length = self.header.length() as usize;
        let mut out = Vec::with_capacity(length);
        for block in self.blocks.drain(..) {
            if let Block::Done(bytes) = block {
                out.extend_from_slice(&bytes);
            }
        }
        out.truncate(length);
        self.charged = 0;
        Accepted::Complete(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carousel::config::CarouselConfig;
    use crate::carousel::packet::DEFAULT_MAX_OBJECT_BYTES;
    use crate::carousel::sender::Carousel;
    use crate::carousel::ObjectKind;

    fn datagrams(bytes: Vec<u8>, max_block_symbols: u32) -> Vec<Vec<u8>> {
        let config = CarouselConfig {
            symbol_size: 256,
            max_block_symbols,
            max_object_bytes: 1_000_000,
            ..CarouselConfig::default()
        };
        let mut carousel = Carousel::new(config).unwrap();
        carousel.insert(ObjectKind::Segment, bytes).unwrap();
        carousel.next_cycle().collect()
    }

    #[test]
    fn completes_from_repair_symbols_and_accounts_memory() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        // 40 symbols in 3 blocks (14, 13, 13), 4 repairs each: drop one source per block.
        let all = datagrams(bytes.clone(), 16);
        assert_eq!(all.len(), 52);
        let first = Packet::parse(&all[0], DEFAULT_MAX_OBJECT_BYTES).unwrap();
        let mut object = PartialObject::new(first.header, 0);
        assert!(PartialObject::peak_bytes(&first.header) > 10_000);
        let mut result = None;
        for (i, datagram) in all.iter().enumerate() {
            if (3..6).contains(&i) {
                continue; // symbol 1 of each block
            }
            let packet = Packet::parse(datagram, DEFAULT_MAX_OBJECT_BYTES).unwrap();
            match object.accept(&packet, i as u64) {
                Accepted::Complete(out) => {
                    result = Some(out);
                    break;
                }
                Accepted::Stored => assert!(object.charged() > 0),
                Accepted::Duplicate => panic!("no duplicates sent"),
            }
        }
        assert_eq!(result.unwrap(), bytes);
        assert_eq!(object.charged(), 0);
        assert_eq!(object.blocks_done(), 3);
    }

    #[test]
    fn duplicates_are_not_stored_twice() {
        let all = datagrams(vec![9u8; 2000], 4096);
        let packet = Packet::parse(&all[0], DEFAULT_MAX_OBJECT_BYTES).unwrap();
        let mut object = PartialObject::new(packet.header, 0);
        assert!(matches!(object.accept(&packet, 1), Accepted::Stored));
        let charged = object.charged();
        assert!(matches!(object.accept(&packet, 2), Accepted::Duplicate));
        assert_eq!(object.charged(), charged);
        assert_eq!(object.packets(), 1);
        assert_eq!(object.touched, 1);
    }
}
