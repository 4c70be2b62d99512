//! Carousel datagrams arrive from anyone who can reach a downlink's UDP port: parsing arbitrary
//! bytes must never panic, and whatever parses must agree with the bytes it came from (the
//! fixed header layout) and with the receiver's size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mhc_transport::carousel::{
    ObjectKind, PacketError, PacketHeader, FORMAT_VERSION, HEADER_LEN, MAGIC, PAYLOAD_ID_LEN,
};

fuzz_target!(|input: (u32, &[u8])| {
    let (max_object_bytes, datagram) = input;
    let max_object_bytes = u64::from(max_object_bytes);
    let Ok(header) = PacketHeader::parse(datagram, max_object_bytes) else {
        return;
    };
    // Deterministic: the same bytes give the same header.
    assert_eq!(PacketHeader::parse(datagram, max_object_bytes), Ok(header));

    // The fixed layout: magic, version, kind, id, length, OTI, cycle, then the payload id and
    // exactly one symbol.
    assert_eq!(datagram[..4], MAGIC);
    assert_eq!(datagram[4], FORMAT_VERSION);
    assert_eq!(header.kind().as_u8(), datagram[5]);
    assert_eq!(ObjectKind::from_u8(datagram[5]), Some(header.kind()));
    assert_eq!(header.id().0[..], datagram[6..38]);
    let length = u64::from_be_bytes(datagram[38..46].try_into().unwrap());
    assert_eq!(header.length(), length);
    let cycle = u32::from_be_bytes(datagram[58..62].try_into().unwrap());
    assert_eq!(header.cycle(), cycle);
    assert_eq!(
        datagram.len(),
        HEADER_LEN + PAYLOAD_ID_LEN + usize::from(header.symbol_size())
    );

    // Within the limits it was parsed under.
    assert!(length > 0 && length <= max_object_bytes);
    assert!(header.source_blocks() >= 1);
    assert_eq!(
        header.source_symbols(),
        length.div_ceil(u64::from(header.symbol_size()))
    );
    // A receiver with a smaller limit refuses it, by that rule and no other.
    assert_eq!(
        PacketHeader::parse(datagram, length - 1),
        Err(PacketError::ObjectTooLarge {
            length,
            max: length - 1,
        })
    );
});
