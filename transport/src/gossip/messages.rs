//! Control-plane messages carried by gossipsub: heartbeats (`mhc/health/1`) and content
//! announcements (`mhc/content/1`).
//!
//! Each message is `[format byte] ‖ postcard(body)`, sealed in an envelope signed by the
//! sender's node key ([`super::envelope`]), and the body names the peer it claims to be from,
//! which must equal that signer. Decoding is bounded and canonical: what decodes re-encodes to the same
//! bytes.

use serde::{Deserialize, Serialize};

use super::cert::MAX_CERTIFICATE_BYTES;
pub use super::roles::{Mode, WireRole};

/// Topic of heartbeats.
pub const HEALTH_TOPIC: &str = "mhc/health/1";
/// Topic of content announcements.
pub const CONTENT_TOPIC: &str = "mhc/content/1";
/// Topic of emergency commands (used by the emergency plane).
pub const EMERGENCY_TOPIC: &str = "mhc/emergency/1";

/// Format byte of every control-plane message of this version (3: heartbeats carry the
/// sender's node certificate; 4: and the digest of the revocations it knows; 5: and an
/// origin's write standing).
pub const MESSAGE_FORMAT: u8 = 5;
/// Largest control-plane message accepted, in bytes. A heartbeat at every bound (128 content
/// entries of maximal id length with their mesh roots, 16 roots being replicated, 32 play
/// counts, a certificate of [`MAX_CERTIFICATE_BYTES`]) is about 23 KiB; gossipsub's transport
/// limit is set just above this, so anything bigger never reaches the decoder.
pub const MAX_MESSAGE_BYTES: usize = 28 * 1024;
/// Most content entries a heartbeat lists (the rest are announced on `mhc/content/1`).
pub const MAX_HEARTBEAT_CONTENTS: usize = 128;
/// Most mesh roots a heartbeat lists as being replicated (a mesh node replicates a few at once).
pub const MAX_HEARTBEAT_REPLICATING: usize = 16;
/// Most play counts a heartbeat carries (the sender's top contents).
pub const MAX_HEARTBEAT_PLAYS: usize = 32;
/// Most libp2p addresses a heartbeat lists.
pub const MAX_P2P_ADDRS: usize = 8;
/// Longest free-text field (region, version string, address).
pub const MAX_TEXT_BYTES: usize = 128;

/// Why a control-plane message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Unknown format byte (or empty).
    #[error("unknown message format {0:?}")]
    Format(Option<u8>),
    /// postcard could not decode it, or it had trailing / non-canonical bytes.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A field is out of its bounds.
    #[error("field out of bounds: {0}")]
    Bounds(&'static str),
}

/// Addresses of every plane of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PlaneAddrs {
    /// Viewer plane, `ip:port`.
    pub http: String,
    /// QUIC data plane, `ip:port`.
    pub quic: String,
    /// iroh mesh plane, `ip:port`.
    pub iroh: String,
    /// libp2p multiaddrs (without the `/p2p/` suffix).
    pub p2p: Vec<String>,
    /// Membership and failure detection (SWIM over UDP), `ip:port`; empty when it has none.
    pub swim: String,
}

/// Load figures of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Load {
    /// Viewer connections open.
    pub connections: u32,
    /// Body bytes per second sent to viewers over the last 10 s.
    pub bytes_out_per_s: u64,
    /// Disk tier fill, in thousandths of its capacity.
    pub cache_fill_permille: u16,
}

/// One held content version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldContent {
    /// Content id.
    pub id: String,
    /// Latest version held.
    pub version: u64,
    /// Root of the version's iroh-blobs HashSeq when the holder provides it on the mesh plane
    /// (all zeros when it does not).
    pub mesh_root: [u8; 32],
    /// Total bytes of the version's init and media segments.
    pub bytes: u64,
}

/// How often a content was played at the sender recently (playlist requests in the last
/// window), so mesh nodes can replicate what their region watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayCount {
    /// Content id.
    pub id: String,
    /// Plays in the sender's recent window.
    pub plays: u32,
}

/// A member's periodic, signed statement of who and how it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's peer id (bytes); must equal the gossipsub signer.
    pub peer_id: Vec<u8>,
    /// Grows by one at every start of the sender (persisted), so a restart is recognised.
    pub incarnation: u64,
    /// Grows by one per heartbeat within an incarnation.
    pub seq: u64,
    /// Sender's wall clock, ms since the Unix epoch (informational; never used for ordering).
    pub sent_at_ms: u64,
    /// Role.
    pub role: WireRole,
    /// Region label.
    pub region: String,
    /// `(lat, lon)` in degrees, if configured.
    pub location: Option<(f64, f64)>,
    /// Addresses of every plane.
    pub addrs: PlaneAddrs,
    /// Serving mode.
    pub mode: Mode,
    /// Load.
    pub load: Load,
    /// Content held (bounded; `contents_total` says how many there are in all).
    pub contents: Vec<HeldContent>,
    /// Number of content ids held in all.
    pub contents_total: u32,
    /// Software version.
    pub software: String,
    /// Heartbeat period of the sender, ms (receivers judge its silence by its own period).
    pub interval_ms: u32,
    /// Mesh HashSeq roots the sender is replicating now (bounded): peers replicating the same
    /// content share the work of fetching it from its holders.
    pub replicating: Vec<[u8; 32]>,
    /// The sender's most played contents (bounded).
    pub plays: Vec<PlayCount>,
    /// Sequence number of the last emergency command the sender applied (0: none); a peer
    /// that is behind is sent the command again.
    pub emergency_seq: u64,
    /// Whether the sender receives the satellite downlink (it serves in emergency mode).
    pub downlink: bool,
    /// The sender's node certificate ([`super::cert::SignedCertificate::encode`]); empty when it has none,
    /// and then it is no member.
    pub certificate: Vec<u8>,
    /// [`super::revocation::digest`] of the node keys the sender knows are revoked: a peer
    /// whose own digest differs sends its revocations again, so a node that was away catches up.
    pub revoked: [u8; 32],
    /// How many node keys the sender knows are revoked (the members with the longer list
    /// send it).
    pub revoked_count: u32,
    /// An origin's standing in its election (`[ha]`): whether it accepts writes now, and in
    /// which epoch. Edges send their reports to the origin that accepts them, in the highest
    /// epoch. Other roles send the default.
    pub writes: OriginWrites,
}

/// Whether an origin accepts writes (ingest, play reports), and its election's epoch (0: a
/// lone origin, or not an origin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginWrites {
    /// It is a lone origin or a primary whose lease is certainly held.
    pub accepts: bool,
    /// The epoch it writes in, or the epoch of the primary it knows.
    pub epoch: u64,
}

/// An origin's announcement that a content version was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentAnnouncement {
    /// The announcing peer (bytes); must equal the gossipsub signer.
    pub peer_id: Vec<u8>,
    /// Content id.
    pub id: String,
    /// Version.
    pub version: u64,
    /// BLAKE3 of the encoded signed manifest.
    pub manifest_hash: [u8; 32],
    /// Publisher public key that signed the manifest.
    pub publisher: [u8; 32],
    /// Root of the version's iroh-blobs HashSeq (manifest, init, segments).
    pub mesh_root: [u8; 32],
    /// Sender's wall clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
}

/// Encodes a message with its format byte.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![MESSAGE_FORMAT];
    out.extend(postcard::to_allocvec(msg).expect("control-plane messages serialise"));
    out
}

/// Decodes a message, enforcing size, format and canonical encoding.
///
/// # Errors
/// [`MessageError`].
pub fn decode<T: Serialize + for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, MessageError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge(bytes.len()));
    }
    match bytes.first() {
        Some(&MESSAGE_FORMAT) => {}
        other => return Err(MessageError::Format(other.copied())),
    }
    let (msg, rest): (T, &[u8]) = postcard::take_from_bytes(&bytes[1..])
        .map_err(|e| MessageError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MessageError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    if postcard::to_allocvec(&msg).map_err(|e| MessageError::Malformed(e.to_string()))?[..]
        != bytes[1..]
    {
        return Err(MessageError::Malformed("non-canonical encoding".into()));
    }
    Ok(msg)
}

impl Heartbeat {
    /// Checks the bounds a decoder cannot express.
    ///
    /// # Errors
    /// [`MessageError::Bounds`] naming the field.
    pub fn check_bounds(&self) -> Result<(), MessageError> {
        let text_ok = |s: &str| s.len() <= MAX_TEXT_BYTES;
        if self.peer_id.len() > 64 {
            return Err(MessageError::Bounds("peer_id"));
        }
        if !text_ok(&self.region) || !text_ok(&self.software) {
            return Err(MessageError::Bounds("region/software"));
        }
        if !text_ok(&self.addrs.http)
            || !text_ok(&self.addrs.quic)
            || !text_ok(&self.addrs.iroh)
            || !text_ok(&self.addrs.swim)
        {
            return Err(MessageError::Bounds("addrs"));
        }
        if self.addrs.p2p.len() > MAX_P2P_ADDRS || !self.addrs.p2p.iter().all(|a| text_ok(a)) {
            return Err(MessageError::Bounds("addrs.p2p"));
        }
        if self.contents.len() > MAX_HEARTBEAT_CONTENTS
            || !self.contents.iter().all(|c| c.id.len() <= 64)
        {
            return Err(MessageError::Bounds("contents"));
        }
        if self.replicating.len() > MAX_HEARTBEAT_REPLICATING {
            return Err(MessageError::Bounds("replicating"));
        }
        if self.plays.len() > MAX_HEARTBEAT_PLAYS || !self.plays.iter().all(|p| p.id.len() <= 64) {
            return Err(MessageError::Bounds("plays"));
        }
        if let Some((lat, lon)) = self.location {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(MessageError::Bounds("location"));
            }
        }
        if !(50..=3_600_000).contains(&self.interval_ms) {
            return Err(MessageError::Bounds("interval_ms"));
        }
        if self.certificate.len() > MAX_CERTIFICATE_BYTES {
            return Err(MessageError::Bounds("certificate"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            peer_id: vec![1, 2, 3],
            incarnation: 4,
            seq: 5,
            sent_at_ms: 6,
            role: WireRole::Edge,
            region: "eu-west".into(),
            location: Some((52.37, 4.9)),
            addrs: PlaneAddrs {
                http: "10.0.0.1:8080".into(),
                quic: "10.0.0.1:4433".into(),
                iroh: "10.0.0.1:4434".into(),
                p2p: vec!["/ip4/10.0.0.1/tcp/4001".into()],
                swim: "10.0.0.1:4435".into(),
            },
            mode: Mode::Normal,
            load: Load {
                connections: 3,
                bytes_out_per_s: 1000,
                cache_fill_permille: 10,
            },
            contents: vec![HeldContent {
                id: "song".into(),
                version: 2,
                mesh_root: [0; 32],
                bytes: 0,
            }],
            contents_total: 1,
            software: "0.1.0".into(),
            interval_ms: 1000,
            replicating: Vec::new(),
            plays: Vec::new(),
            emergency_seq: 0,
            downlink: false,
            certificate: Vec::new(),
            revoked: [0; 32],
            revoked_count: 0,
            writes: OriginWrites::default(),
        }
    }

    #[test]
    fn roundtrip_and_refusals() {
        let hb = heartbeat();
        let bytes = encode(&hb);
        assert_eq!(decode::<Heartbeat>(&bytes).unwrap(), hb);
        assert_eq!(decode::<Heartbeat>(&[]), Err(MessageError::Format(None)));
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(
            decode::<Heartbeat>(&other),
            Err(MessageError::Format(Some(9)))
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<Heartbeat>(&trailing),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Heartbeat>(&vec![1u8; MAX_MESSAGE_BYTES + 1]),
            Err(MessageError::TooLarge(_))
        ));
        // Every truncation and every single-byte flip: an error or a different valid message,
        // never a panic.
        for i in 0..bytes.len() {
            let _ = decode::<Heartbeat>(&bytes[..i]);
            let mut flipped = bytes.clone();
            flipped[i] ^= 0xff;
            let _ = decode::<Heartbeat>(&flipped);
        }
    }

    #[test]
    fn bounds() {
        let mut hb = heartbeat();
        assert!(hb.check_bounds().is_ok());
        hb.contents = (0..=MAX_HEARTBEAT_CONTENTS)
            .map(|i| HeldContent {
                id: format!("c{i}"),
                version: 1,
                mesh_root: [0; 32],
                bytes: 0,
            })
            .collect();
        assert_eq!(hb.check_bounds(), Err(MessageError::Bounds("contents")));
        let mut hb = heartbeat();
        hb.location = Some((91.0, 0.0));
        assert_eq!(hb.check_bounds(), Err(MessageError::Bounds("location")));
        let mut hb = heartbeat();
        hb.interval_ms = 0;
        assert_eq!(hb.check_bounds(), Err(MessageError::Bounds("interval_ms")));
    }
}
