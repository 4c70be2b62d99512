//! The broadcast carousel: a one-way UDP plane that repeats a set of objects (manifests,
//! segments, bulletins) forever, protected by RaptorQ forward error correction (RFC 6330).
//!
//! A receiver never talks back. It completes an object from any large enough mix of source and
//! repair symbols, whichever cycle they come from: every cycle carries fresh repair symbols, so
//! a receiver that lost too much in one cycle completes in the next.
//!
//! Split like quinn-proto / quinn:
//! - Wire format: [`PacketHeader`] (a fixed 62-byte header, then one RaptorQ encoding packet),
//!   [`ObjectId`] (the BLAKE3 hash of the object) and [`ObjectKind`].
//! - Sender, without I/O: [`Carousel`] holds the objects ([`EncodedObject`], encoded once) and
//!   hands out one [`Cycle`] of datagrams at a time; [`Pacer`] is the token bucket that spaces
//!   them at a bit rate, driven by a caller-supplied clock.
//! - Receiver, without I/O: [`Assembler`] turns datagrams into [`Event`]s, with bounded memory,
//!   and reports [`Progress`] of the objects still incomplete.
//! - Sockets (tokio): [`run_sender`] / [`bind_sender`] and [`run_receiver`] / [`bind_receiver`],
//!   addressed by a [`UdpUrl`] (`udp://host:port`, unicast or multicast).
//! - Test and benchmark tools: [`LossyRelay`] (a UDP relay that drops and reorders datagrams,
//!   seeded through `fastrand`).

mod config;
mod config_error;
mod cursor;
mod object;
mod pacer;
mod packet;
mod partial;
mod receiver;
mod relay;
mod sender;
mod udp;

pub use config::{CarouselConfig, CarouselError, DEFAULT_MAX_BLOCK_SYMBOLS};
pub use config_error::ConfigError;
pub use object::EncodedObject;
pub use pacer::{Pacer, UDP_IPV4_OVERHEAD};
pub use packet::{
    ObjectId, ObjectKind, PacketError, PacketHeader, DEFAULT_MAX_OBJECT_BYTES, DEFAULT_SYMBOL_SIZE,
    FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_DATAGRAM_LEN, MAX_SOURCE_SYMBOLS_PER_BLOCK,
    MIN_SYMBOL_SIZE, PAYLOAD_ID_LEN, SYMBOL_ALIGNMENT,
};
pub use receiver::{Assembler, AssemblerConfig, AssemblerStats, Event, Progress, ReceiveError};
pub use relay::{LossyRelay, RelayConfig, RelayStats};
pub use sender::{Carousel, Cycle};
pub use udp::{
    bind_receiver, bind_sender, run_receiver, run_sender, SenderOptions, SenderStats, UdpError,
    UdpUrl,
};
