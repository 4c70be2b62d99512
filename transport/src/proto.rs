//! The node-to-node fetch protocol, without I/O.
//!
//! One bidirectional QUIC stream carries one request and its response:
//!
//! ```text
//! client → server   u32 BE length ‖ postcard(RequestFrame { version, request })   then FIN
//! server → client   u32 BE length ‖ postcard(ResponseHeader)
//!                   exactly ResponseHeader::body_len() raw body bytes               then FIN
//! ```
//!
//! Everything here is plain data and byte slices, so the limits are tested without sockets
//! (the same split as quinn-proto / quinn). The socket layer reads through a [`FrameDecoder`],
//! at most [`FrameDecoder::needed`] bytes at a time, so a header never swallows body bytes.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::gossip::cert::MAX_CERTIFICATE_BYTES;

/// TLS application protocol of the node data plane.
///
/// A new incompatible wire format gets a new ALPN (`mhc/2`), so old and new nodes fail at the
/// handshake with a clear error instead of misreading each other's frames.
pub const ALPN: &[u8] = b"mhc/1";

/// First byte of every request frame.
///
/// Lets a server answer a request of a future minor revision with
/// [`ProtoError::UnsupportedVersion`] instead of a generic decode error.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest request frame payload, in bytes; a longer length prefix closes the stream.
///
/// The largest valid request is under 100 bytes (a 64-byte content id and three varints); 4 KiB
/// leaves room for new fields while a server never buffers more than a page per stream.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Largest response header payload, in bytes.
///
/// The largest valid header today is a segment header with a full proof:
/// 64 × 32 + 32 + 10 ≈ 2.1 KiB. 64 KiB leaves room for growth while bounding what a hostile
/// peer can make a client buffer before the body.
pub const MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;

/// Longest content id, in bytes; matches the manifest slug `[a-z0-9][a-z0-9_-]{0,63}`.
pub const MAX_CONTENT_ID_BYTES: usize = 64;

/// Longest human-readable text (`NotFound::reason`, `Error::message`), in bytes.
///
/// Enough for a sentence and an id; these strings end up in logs, so they stay short.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Largest encoded play report carried by [`Request::PutPlayReport`]: the request frame's
/// bound less room for the frame's own fields. Nodes split their reports into batches that fit.
pub const MAX_PLAY_REPORT_BYTES: usize = MAX_REQUEST_BYTES - 64;

/// Most sibling hashes in a Merkle proof: a tree of depth 64 has more leaves than any content
/// can have segments.
pub const MAX_PROOF_HASHES: usize = 64;

/// Size of the big-endian length prefix in front of every frame.
const LEN_PREFIX_BYTES: usize = 4;

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The newest signed manifest of `content_id` whose version is at least `min_version`.
    ///
    /// Answered with [`ResponseHeader::Manifest`] and the encoded signed manifest as body.
    GetManifest {
        /// Content id (slug, at most [`MAX_CONTENT_ID_BYTES`]).
        content_id: String,
        /// Oldest acceptable version; `0` asks for whatever the peer has.
        min_version: u64,
    },
    /// Media segment `index` of manifest `version`.
    ///
    /// Answered with [`ResponseHeader::Segment`] carrying the Merkle proof of that segment.
    GetSegment {
        /// Content id (slug, at most [`MAX_CONTENT_ID_BYTES`]).
        content_id: String,
        /// Manifest version the index refers to.
        version: u64,
        /// Zero-based segment index in that manifest.
        index: u32,
    },
    /// The initialization segment (`EXT-X-MAP`) of manifest `version`.
    ///
    /// Answered with [`ResponseHeader::Segment`] whose proof is empty: the init segment is
    /// checked against the hash in the manifest, not against the Merkle root.
    GetInit {
        /// Content id (slug, at most [`MAX_CONTENT_ID_BYTES`]).
        content_id: String,
        /// Manifest version the init segment belongs to.
        version: u64,
    },
    /// A signed batch of play reports for the origin's royalty accounting (an encoded
    /// `SignedPlayReport`, at most [`MAX_PLAY_REPORT_BYTES`]).
    ///
    /// Answered with [`ResponseHeader::ReportAck`] once the origin stored it durably (or
    /// already had it), [`ResponseHeader::Busy`] when it should be sent again later, or
    /// [`ResponseHeader::Error`] when it will never be accepted.
    PutPlayReport {
        /// The encoded signed report.
        report: Vec<u8>,
    },
    /// The first request on a connection: the client's node certificate (an encoded
    /// `SignedCertificate`, at most [`MAX_CERTIFICATE_BYTES`]; empty for none). Until a peer
    /// proved it is enrolled, it is answered nothing else.
    ///
    /// Answered with [`ResponseHeader::Hello`] carrying the server's certificate. (Last, so
    /// the older variants keep their wire numbers.)
    Hello {
        /// The client's encoded node certificate.
        certificate: Vec<u8>,
    },
    /// A standby origin following the primary's replication log of `epoch`: the entries after
    /// position `after`, waiting up to `wait_ms` for one when there is none yet. Asking for
    /// the entries after `after` also says the standby holds everything up to `after`
    /// durably (the primary acknowledges writes only once its standbys do).
    ///
    /// Answered with [`ResponseHeader::Entries`], or [`ResponseHeader::NotFound`] when the
    /// entries are no longer kept (start from a snapshot) or the epoch is not the server's.
    Replicate {
        /// The epoch of the primary the standby follows.
        epoch: u64,
        /// The last position the standby applied and flushed.
        after: u64,
        /// Longest wait for a new entry, milliseconds (at most [`MAX_REPLICATE_WAIT_MS`]).
        wait_ms: u32,
    },
    /// A page of the primary's replicated trees, in (tree, key) order from just after
    /// `(tree, after_key)` (empty `tree`: from the start): what a standby that cannot resume
    /// from the log starts from.
    ///
    /// Answered with [`ResponseHeader::SnapshotPage`].
    Snapshot {
        /// The epoch of the primary the standby follows.
        epoch: u64,
        /// The tree of the last pair received (empty: none yet).
        tree: Vec<u8>,
        /// The key of the last pair received.
        after_key: Vec<u8>,
    },
}

/// Longest long-poll of a [`Request::Replicate`], milliseconds.
pub const MAX_REPLICATE_WAIT_MS: u32 = 10_000;

/// Longest tree name or key in a [`Request::Snapshot`] cursor, in bytes.
pub const MAX_SNAPSHOT_CURSOR_BYTES: usize = 1024;

impl Request {
    /// The content this request is about (`None` for a play report).
    pub fn content_id(&self) -> Option<&str> {
        match self {
            Request::GetManifest { content_id, .. }
            | Request::GetSegment { content_id, .. }
            | Request::GetInit { content_id, .. } => Some(content_id),
            Request::PutPlayReport { .. }
            | Request::Hello { .. }
            | Request::Replicate { .. }
            | Request::Snapshot { .. } => None,
        }
    }

    fn validate(&self) -> Result<(), ProtoError> {
        match self {
            Request::PutPlayReport { report } => {
                check_len("report", report.len(), MAX_PLAY_REPORT_BYTES)
            }
            Request::Hello { certificate } => {
                check_len("certificate", certificate.len(), MAX_CERTIFICATE_BYTES)
            }
            Request::Replicate { wait_ms, .. } => {
                check_len("wait_ms", *wait_ms as usize, MAX_REPLICATE_WAIT_MS as usize)
            }
            Request::Snapshot {
                tree, after_key, ..
            } => {
                check_len("tree", tree.len(), MAX_SNAPSHOT_CURSOR_BYTES)?;
                check_len("after_key", after_key.len(), MAX_SNAPSHOT_CURSOR_BYTES)
            }
            _ => check_len(
                "content_id",
                self.content_id().map_or(0, str::len),
                MAX_CONTENT_ID_BYTES,
            ),
        }
    }
}

/// What travels on the wire: the version byte goes first so it can be read before the rest is
/// understood (postcard encodes a `u8` as one raw byte).
#[derive(Deserialize)]
struct RequestFrame {
    version: u8,
    request: Request,
}

/// Encoding twin of [`RequestFrame`]: serde writes `&Request` exactly like `Request`, so the
/// request is not cloned to be sent.
#[derive(Serialize)]
struct RequestFrameRef<'a> {
    version: u8,
    request: &'a Request,
}

/// The header of a response; the body (if any) follows it raw on the same stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseHeader {
    /// A signed manifest follows: `body_len` bytes of its encoding.
    Manifest {
        /// Version of the manifest in the body (at least the requested `min_version`).
        version: u64,
        /// Length of the encoded signed manifest that follows.
        body_len: u64,
    },
    /// A segment follows: `size` bytes whose BLAKE3 must equal `hash`.
    Segment {
        /// BLAKE3 of the segment bytes, as listed in the manifest.
        hash: [u8; 32],
        /// Length of the segment bytes that follow.
        size: u64,
        /// Merkle siblings from the leaf up to the signed root (at most [`MAX_PROOF_HASHES`]);
        /// empty for an init segment.
        #[serde(deserialize_with = "deserialize_proof")]
        proof: Vec<[u8; 32]>,
    },
    /// The peer does not have what was asked; no body.
    NotFound {
        /// Why, for logs (at most [`MAX_TEXT_BYTES`]).
        reason: String,
    },
    /// The peer is overloaded; ask again later or elsewhere. No body.
    Busy {
        /// Suggested wait before asking this peer again, in milliseconds.
        retry_after_ms: u32,
    },
    /// The peer could not serve the request (including a request it could not parse); no body.
    Error {
        /// What went wrong, for logs (at most [`MAX_TEXT_BYTES`]).
        message: String,
    },
    /// The origin stored a play report durably (or had it already); the node may delete it.
    /// No body. (Last, so the older variants keep their wire numbers.)
    ReportAck {
        /// The report's sequence number.
        seq: u64,
        /// Whether it was a resend of a report already stored.
        duplicate: bool,
    },
    /// The answer to [`Request::Hello`]: the server's node certificate (empty for none). No
    /// body. (Last, so the older variants keep their wire numbers.)
    Hello {
        /// The server's encoded node certificate.
        certificate: Vec<u8>,
    },
    /// The server does not admit the client: its [`Request::Hello`] carried no certificate a
    /// trusted operator signed for its key, or it sent no hello on this connection (or the
    /// server forgot it, or its certificate expired or was revoked). No body. A client whose
    /// certificate is good says hello again on a new connection.
    NotAdmitted {
        /// Why, for logs (at most [`MAX_TEXT_BYTES`]).
        reason: String,
    },
    /// The answer to [`Request::Replicate`]: `body_len` bytes of encoded log entries follow
    /// (none when the wait ended without one).
    Entries {
        /// The epoch they were written in.
        epoch: u64,
        /// The primary's newest position when it answered.
        last: u64,
        /// Length of the encoded entries that follow.
        body_len: u64,
    },
    /// The answer to [`Request::Snapshot`]: `body_len` bytes of encoded (tree, key, value)
    /// triples follow.
    SnapshotPage {
        /// The epoch of the primary that read it.
        epoch: u64,
        /// The log position when the page was read: a standby that loads a whole snapshot
        /// resumes the log after the position of its first page (replaying entries the pages
        /// already hold is harmless: each sets or removes a whole value).
        at: u64,
        /// Whether this is the last page.
        done: bool,
        /// Length of the encoded pairs that follow.
        body_len: u64,
    },
}

impl ResponseHeader {
    /// Number of raw body bytes that follow this header on the stream.
    pub fn body_len(&self) -> u64 {
        match self {
            ResponseHeader::Manifest { body_len, .. } => *body_len,
            ResponseHeader::Segment { size, .. } => *size,
            ResponseHeader::Entries { body_len, .. }
            | ResponseHeader::SnapshotPage { body_len, .. } => *body_len,
            ResponseHeader::NotFound { .. }
            | ResponseHeader::ReportAck { .. }
            | ResponseHeader::Busy { .. }
            | ResponseHeader::Error { .. }
            | ResponseHeader::Hello { .. }
            | ResponseHeader::NotAdmitted { .. } => 0,
        }
    }

    /// A [`ResponseHeader::NotFound`], with `reason` cut to [`MAX_TEXT_BYTES`] at a character
    /// boundary so the header always encodes.
    pub fn not_found(reason: impl Into<String>) -> Self {
        ResponseHeader::NotFound {
            reason: truncate_text(reason.into()),
        }
    }

    /// A [`ResponseHeader::Error`], with `message` cut to [`MAX_TEXT_BYTES`] at a character
    /// boundary so the header always encodes.
    pub fn error(message: impl Into<String>) -> Self {
        ResponseHeader::Error {
            message: truncate_text(message.into()),
        }
    }

    /// A [`ResponseHeader::NotAdmitted`], with `reason` cut to [`MAX_TEXT_BYTES`] at a
    /// character boundary so the header always encodes.
    pub fn not_admitted(reason: impl Into<String>) -> Self {
        ResponseHeader::NotAdmitted {
            reason: truncate_text(reason.into()),
        }
    }

    fn validate(&self) -> Result<(), ProtoError> {
        match self {
            ResponseHeader::Segment { proof, .. } => {
                check_len("proof", proof.len(), MAX_PROOF_HASHES)
            }
            ResponseHeader::NotFound { reason } => {
                check_len("reason", reason.len(), MAX_TEXT_BYTES)
            }
            ResponseHeader::Error { message } => {
                check_len("message", message.len(), MAX_TEXT_BYTES)
            }
            ResponseHeader::NotAdmitted { reason } => {
                check_len("reason", reason.len(), MAX_TEXT_BYTES)
            }
            ResponseHeader::Hello { certificate } => {
                check_len("certificate", certificate.len(), MAX_CERTIFICATE_BYTES)
            }
            ResponseHeader::Manifest { .. }
            | ResponseHeader::ReportAck { .. }
            | ResponseHeader::Busy { .. }
            | ResponseHeader::Entries { .. }
            | ResponseHeader::SnapshotPage { .. } => Ok(()),
        }
    }
}

/// Why bytes could not be encoded to or decoded from a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The length prefix announces a frame larger than this kind of frame may be.
    ///
    /// Detected from the 4-byte prefix alone, before anything is buffered.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced payload length.
        len: u64,
        /// Limit for this kind of frame.
        max: usize,
    },
    /// A field is longer than the protocol allows.
    #[error("{field} is {len} bytes or items, more than the {max} allowed")]
    FieldTooLong {
        /// Name of the field.
        field: &'static str,
        /// Its length (bytes for strings, items for lists).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not a valid postcard encoding of the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The request was written for a protocol version this node does not speak.
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The stream ended before a complete frame or body arrived.
    #[error("stream ended {missing} bytes short")]
    Truncated {
        /// Bytes still expected (for a frame: of the prefix or of the announced payload).
        missing: u64,
    },
    /// Bytes arrived after the end of a frame or body, where the stream should have ended.
    #[error("unexpected bytes after the end of the frame")]
    TrailingBytes,
}

/// A message that travels as one length-prefixed frame: [`Request`] or [`ResponseHeader`].
///
/// Sealed: the set of frames is the protocol.
pub trait Frame: Sized + sealed::Sealed {
    /// Largest payload accepted for this frame, in bytes.
    const MAX_BYTES: usize;

    /// Decodes and validates one payload (without the length prefix).
    #[doc(hidden)]
    fn decode_payload(payload: &[u8]) -> Result<Self, ProtoError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Request {}
    impl Sealed for super::ResponseHeader {}
}

impl Frame for Request {
    const MAX_BYTES: usize = MAX_REQUEST_BYTES;

    fn decode_payload(payload: &[u8]) -> Result<Self, ProtoError> {
        // Check the version before postcard sees the rest: a future version may change it.
        match payload.first() {
            Some(&PROTOCOL_VERSION) => {}
            Some(&other) => return Err(ProtoError::UnsupportedVersion(other)),
            None => return Err(ProtoError::Malformed("empty frame".into())),
        }
        let frame: RequestFrame = decode_exact(payload)?;
        debug_assert_eq!(frame.version, PROTOCOL_VERSION);
        frame.request.validate()?;
        Ok(frame.request)
    }
}

impl Frame for ResponseHeader {
    const MAX_BYTES: usize = MAX_RESPONSE_HEADER_BYTES;

    fn decode_payload(payload: &[u8]) -> Result<Self, ProtoError> {
        let header: ResponseHeader = decode_exact(payload)?;
        header.validate()?;
        Ok(header)
    }
}

/// Encodes `request` as a complete frame (length prefix included), ready to write to a stream.
///
/// # Errors
///
/// [`ProtoError::FieldTooLong`] if the content id is longer than [`MAX_CONTENT_ID_BYTES`]: the
/// peer would reject it, so it is refused here.
pub fn encode_request(request: &Request) -> Result<Vec<u8>, ProtoError> {
    request.validate()?;
    encode_frame(
        &RequestFrameRef {
            version: PROTOCOL_VERSION,
            request,
        },
        MAX_REQUEST_BYTES,
    )
}

/// Encodes `header` as a complete frame (length prefix included); the body is written after it.
///
/// # Errors
///
/// [`ProtoError::FieldTooLong`] if the proof, reason or message exceeds its limit (use
/// [`ResponseHeader::not_found`] and [`ResponseHeader::error`], which truncate).
pub fn encode_response_header(header: &ResponseHeader) -> Result<Vec<u8>, ProtoError> {
    header.validate()?;
    encode_frame(header, MAX_RESPONSE_HEADER_BYTES)
}

fn encode_frame<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, ProtoError> {
    // Serialize behind a placeholder prefix so the frame is built in one allocation.
    let mut out = postcard::to_extend(value, vec![0u8; LEN_PREFIX_BYTES])
        .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let len = out.len() - LEN_PREFIX_BYTES;
    if len > max {
        return Err(ProtoError::TooLarge {
            len: len as u64,
            max,
        });
    }
    // `max` is far below u32::MAX, so the cast cannot truncate.
    out[..LEN_PREFIX_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes `payload` as exactly one `T`: bytes left over inside a frame are a malformed frame,
/// not something to ignore (they would hide an encoder bug or a smuggling attempt).
fn decode_exact<'de, T: Deserialize<'de>>(payload: &'de [u8]) -> Result<T, ProtoError> {
    let (value, rest) =
        postcard::take_from_bytes(payload).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} unread bytes inside the frame",
            rest.len()
        )));
    }
    Ok(value)
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), ProtoError> {
    if len > max {
        return Err(ProtoError::FieldTooLong { field, len, max });
    }
    Ok(())
}

fn truncate_text(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Deserializes a proof without trusting its length prefix for the allocation.
///
/// serde's default `Vec` visitor pre-allocates up to 1 MiB from the claimed length; a proof is
/// at most [`MAX_PROOF_HASHES`] hashes, so reserve no more than that and let validation reject
/// a longer list (whose items must then really be in the frame, which is itself bounded).
fn deserialize_proof<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
    struct ProofVisitor;

    impl<'de> Visitor<'de> for ProofVisitor {
        type Value = Vec<[u8; 32]>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of 32-byte hashes")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut proof = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PROOF_HASHES));
            while let Some(hash) = seq.next_element()? {
                proof.push(hash);
            }
            Ok(proof)
        }
    }

    d.deserialize_seq(ProofVisitor)
}

/// Accumulates the bytes of one frame, however they are split, and decodes it.
///
/// The length prefix is checked against `T::MAX_BYTES` as soon as its 4 bytes are in, before
/// any payload is buffered. One decoder reads one frame: the protocol has one frame per stream
/// direction, and pushing bytes past its end is [`ProtoError::TrailingBytes`]. Read at most
/// [`needed`](Self::needed) bytes from the stream per push to stop exactly at the frame's end
/// (a response body follows its header).
///
/// After an error the decoder stays failed and returns the same error.
///
/// ```
/// use mhc_transport::{encode_request, FrameDecoder, Request};
///
/// let req = Request::GetInit { content_id: "song".into(), version: 3 };
/// let bytes = encode_request(&req)?;
/// let mut decoder = FrameDecoder::<Request>::new();
/// let (a, b) = bytes.split_at(3);
/// assert_eq!(decoder.push(a)?, None);
/// assert_eq!(decoder.push(b)?, Some(req));
/// # Ok::<(), mhc_transport::ProtoError>(())
/// ```
pub struct FrameDecoder<T> {
    state: DecodeState,
    _frame: PhantomData<fn() -> T>,
}

#[derive(Debug)]
enum DecodeState {
    Prefix {
        buf: [u8; LEN_PREFIX_BYTES],
        have: usize,
    },
    Payload {
        buf: Vec<u8>,
        len: usize,
    },
    Done,
    Failed(ProtoError),
}

impl<T> fmt::Debug for FrameDecoder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("frame", &std::any::type_name::<T>())
            .field("state", &self.state)
            .finish()
    }
}

impl<T: Frame> Default for FrameDecoder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Frame> FrameDecoder<T> {
    /// A decoder waiting for the first byte of a frame.
    pub fn new() -> Self {
        Self {
            state: DecodeState::Prefix {
                buf: [0; LEN_PREFIX_BYTES],
                have: 0,
            },
            _frame: PhantomData,
        }
    }

    /// How many more bytes the current frame needs at least; `0` once decoded or failed.
    ///
    /// Before the prefix is complete this is what is left of the prefix; after, what is left of
    /// the payload. Reading no more than this never consumes bytes past the frame.
    pub fn needed(&self) -> usize {
        match &self.state {
            DecodeState::Prefix { have, .. } => LEN_PREFIX_BYTES - have,
            DecodeState::Payload { buf, len } => len - buf.len(),
            DecodeState::Done | DecodeState::Failed(_) => 0,
        }
    }

    /// Adds bytes; returns the frame once it is complete.
    ///
    /// # Errors
    ///
    /// [`ProtoError::TooLarge`] as soon as the prefix exceeds `T::MAX_BYTES`;
    /// [`ProtoError::Malformed`], [`ProtoError::UnsupportedVersion`] or
    /// [`ProtoError::FieldTooLong`] when the complete payload is invalid;
    /// [`ProtoError::TrailingBytes`] if `data` extends past the end of the frame, or any bytes
    /// are pushed after it.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Option<T>, ProtoError> {
        let result = self.push_inner(&mut data);
        if let Err(err) = &result {
            self.state = DecodeState::Failed(err.clone());
        }
        result
    }

    fn push_inner(&mut self, data: &mut &[u8]) -> Result<Option<T>, ProtoError> {
        loop {
            match &mut self.state {
                DecodeState::Failed(err) => return Err(err.clone()),
                DecodeState::Done => {
                    return if data.is_empty() {
                        Ok(None)
                    } else {
                        Err(ProtoError::TrailingBytes)
                    };
                }
                DecodeState::Prefix { buf, have } => {
                    let take = (LEN_PREFIX_BYTES - *have).min(data.len());
                    buf[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    *data = &data[take..];
                    if *have < LEN_PREFIX_BYTES {
                        return Ok(None);
                    }
                    let len = u32::from_be_bytes(*buf) as usize;
                    if len > T::MAX_BYTES {
                        return Err(ProtoError::TooLarge {
                            len: len as u64,
                            max: T::MAX_BYTES,
                        });
                    }
                    if len == 0 {
                        // Every message encodes to at least one byte (the enum tag).
                        return Err(ProtoError::Malformed("empty frame".into()));
                    }
                    // Bounded by T::MAX_BYTES just above.
                    self.state = DecodeState::Payload {
                        buf: Vec::with_capacity(len),
                        len,
                    };
                }
                DecodeState::Payload { buf, len } => {
                    let take = (*len - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    *data = &data[take..];
                    if buf.len() < *len {
                        return Ok(None);
                    }
                    let value = T::decode_payload(buf)?;
                    self.state = DecodeState::Done;
                    if !data.is_empty() {
                        return Err(ProtoError::TrailingBytes);
                    }
                    return Ok(Some(value));
                }
            }
        }
    }

    /// Whether a complete frame has been decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.state, DecodeState::Done)
    }

    /// Declares the end of the stream.
    ///
    /// # Errors
    ///
    /// [`ProtoError::Truncated`] if the frame is incomplete (including when no byte came at
    /// all), or the earlier error if the decoder failed.
    pub fn finish(&self) -> Result<(), ProtoError> {
        match &self.state {
            DecodeState::Done => Ok(()),
            DecodeState::Failed(err) => Err(err.clone()),
            DecodeState::Prefix { .. } | DecodeState::Payload { .. } => {
                Err(ProtoError::Truncated {
                    missing: self.needed() as u64,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_requests() -> Vec<Request> {
        vec![
            Request::GetManifest {
                content_id: "my-song".into(),
                min_version: 0,
            },
            Request::GetSegment {
                content_id: "a".repeat(MAX_CONTENT_ID_BYTES),
                version: u64::MAX,
                index: u32::MAX,
            },
            Request::GetInit {
                content_id: "video_1".into(),
                version: 7,
            },
            Request::PutPlayReport {
                report: vec![3; MAX_PLAY_REPORT_BYTES],
            },
            Request::Hello {
                certificate: vec![5; MAX_CERTIFICATE_BYTES],
            },
            Request::Hello {
                certificate: Vec::new(),
            },
        ]
    }

    fn all_headers() -> Vec<ResponseHeader> {
        vec![
            ResponseHeader::Manifest {
                version: 9,
                body_len: 1234,
            },
            ResponseHeader::Segment {
                hash: [7; 32],
                size: 6_000_000,
                proof: (0..MAX_PROOF_HASHES as u8).map(|i| [i; 32]).collect(),
            },
            ResponseHeader::Segment {
                hash: [1; 32],
                size: 0,
                proof: vec![],
            },
            ResponseHeader::not_found("no such content"),
            ResponseHeader::Busy {
                retry_after_ms: 250,
            },
            ResponseHeader::error("disk on fire"),
            ResponseHeader::ReportAck {
                seq: 4,
                duplicate: true,
            },
            ResponseHeader::Hello {
                certificate: vec![6; MAX_CERTIFICATE_BYTES],
            },
            ResponseHeader::not_admitted("no certificate"),
        ]
    }

    fn decode_all<T: Frame>(bytes: &[u8]) -> Result<Option<T>, ProtoError> {
        FrameDecoder::<T>::new().push(bytes)
    }

    #[test]
    fn requests_roundtrip() -> Result<(), ProtoError> {
        for req in all_requests() {
            let bytes = encode_request(&req)?;
            assert!(bytes.len() - LEN_PREFIX_BYTES <= MAX_REQUEST_BYTES);
            assert_eq!(decode_all::<Request>(&bytes)?, Some(req));
        }
        Ok(())
    }

    #[test]
    fn headers_roundtrip() -> Result<(), ProtoError> {
        for header in all_headers() {
            let bytes = encode_response_header(&header)?;
            assert_eq!(decode_all::<ResponseHeader>(&bytes)?, Some(header));
        }
        Ok(())
    }

    /// The wire format is a contract between nodes of different builds: pin it.
    #[test]
    fn request_wire_format_is_stable() -> Result<(), ProtoError> {
        let req = Request::GetSegment {
            content_id: "a".into(),
            version: 1,
            index: 2,
        };
        // len 6 ‖ version 1 ‖ variant 1 ‖ str len 1 ‖ 'a' ‖ varint 1 ‖ varint 2
        assert_eq!(encode_request(&req)?, [0, 0, 0, 6, 1, 1, 1, b'a', 1, 2]);
        let busy = ResponseHeader::Busy {
            retry_after_ms: 300,
        };
        // len 3 ‖ variant 3 ‖ varint 300 = [0xac, 0x02]
        assert_eq!(encode_response_header(&busy)?, [0, 0, 0, 3, 3, 0xac, 0x02]);
        Ok(())
    }

    #[test]
    fn byte_at_a_time() -> Result<(), ProtoError> {
        for header in all_headers() {
            let bytes = encode_response_header(&header)?;
            let mut decoder = FrameDecoder::<ResponseHeader>::new();
            let mut decoded = None;
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(decoder.needed() > 0, decoded.is_none());
                let out = decoder.push(std::slice::from_ref(b))?;
                assert_eq!(out.is_some(), i == bytes.len() - 1);
                decoded = decoded.or(out);
            }
            assert_eq!(decoded, Some(header));
            assert!(decoder.is_done());
            assert_eq!(decoder.needed(), 0);
            decoder.finish()?;
            assert_eq!(decoder.push(&[])?, None);
        }
        Ok(())
    }

    #[test]
    fn needed_never_overreads() -> Result<(), ProtoError> {
        // What the socket layer does: read at most `needed()` from a stream that continues
        // with body bytes, and stop exactly at the end of the header.
        let header = ResponseHeader::Manifest {
            version: 1,
            body_len: 3,
        };
        let mut stream = encode_response_header(&header)?;
        stream.extend_from_slice(b"abc");
        let mut decoder = FrameDecoder::<ResponseHeader>::new();
        let mut pos = 0;
        let decoded = loop {
            let n = decoder.needed().min(2);
            if let Some(h) = decoder.push(&stream[pos..pos + n])? {
                pos += n;
                break h;
            }
            pos += n;
        };
        assert_eq!(decoded, header);
        assert_eq!(&stream[pos..], b"abc");
        Ok(())
    }

    #[test]
    fn oversize_prefix_rejected_before_payload() {
        let mut decoder = FrameDecoder::<Request>::new();
        let len = (MAX_REQUEST_BYTES as u32 + 1).to_be_bytes();
        assert_eq!(
            decoder.push(&len),
            Err(ProtoError::TooLarge {
                len: MAX_REQUEST_BYTES as u64 + 1,
                max: MAX_REQUEST_BYTES
            })
        );
        // Stays failed.
        assert!(matches!(
            decoder.push(&[1]),
            Err(ProtoError::TooLarge { .. })
        ));
        assert_eq!(decoder.needed(), 0);

        let mut decoder = FrameDecoder::<ResponseHeader>::new();
        assert!(matches!(
            decoder.push(&u32::MAX.to_be_bytes()),
            Err(ProtoError::TooLarge { .. })
        ));
        // A request-sized limit does not apply to headers.
        let mut decoder = FrameDecoder::<ResponseHeader>::new();
        assert_eq!(decoder.push(&len), Ok(None));
    }

    #[test]
    fn empty_frame_is_malformed() {
        assert!(matches!(
            decode_all::<Request>(&[0, 0, 0, 0]),
            Err(ProtoError::Malformed(_))
        ));
        assert!(matches!(
            decode_all::<ResponseHeader>(&[0, 0, 0, 0]),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn unsupported_version() -> Result<(), ProtoError> {
        let mut bytes = encode_request(&all_requests()[0])?;
        bytes[LEN_PREFIX_BYTES] = 2;
        assert_eq!(
            decode_all::<Request>(&bytes),
            Err(ProtoError::UnsupportedVersion(2))
        );
        // Even if the rest of a future frame is unintelligible.
        assert_eq!(
            decode_all::<Request>(&[0, 0, 0, 3, 9, 0xff, 0xff]),
            Err(ProtoError::UnsupportedVersion(9))
        );
        Ok(())
    }

    #[test]
    fn long_fields_rejected_on_both_sides() -> Result<(), ProtoError> {
        let long = Request::GetInit {
            content_id: "x".repeat(MAX_CONTENT_ID_BYTES + 1),
            version: 1,
        };
        assert!(matches!(
            encode_request(&long),
            Err(ProtoError::FieldTooLong {
                field: "content_id",
                ..
            })
        ));
        // A peer that does not validate: build the frame by hand.
        let raw = encode_frame(
            &RequestFrameRef {
                version: PROTOCOL_VERSION,
                request: &long,
            },
            MAX_REQUEST_BYTES,
        )?;
        assert!(matches!(
            decode_all::<Request>(&raw),
            Err(ProtoError::FieldTooLong {
                field: "content_id",
                ..
            })
        ));

        let long_proof = ResponseHeader::Segment {
            hash: [0; 32],
            size: 1,
            proof: vec![[0; 32]; MAX_PROOF_HASHES + 1],
        };
        assert!(matches!(
            encode_response_header(&long_proof),
            Err(ProtoError::FieldTooLong { field: "proof", .. })
        ));
        let raw = encode_frame(&long_proof, MAX_RESPONSE_HEADER_BYTES)?;
        assert!(matches!(
            decode_all::<ResponseHeader>(&raw),
            Err(ProtoError::FieldTooLong { field: "proof", .. })
        ));

        let long_hello = Request::Hello {
            certificate: vec![0; MAX_CERTIFICATE_BYTES + 1],
        };
        let raw = encode_frame(
            &RequestFrameRef {
                version: PROTOCOL_VERSION,
                request: &long_hello,
            },
            MAX_REQUEST_BYTES,
        )?;
        assert!(matches!(
            decode_all::<Request>(&raw),
            Err(ProtoError::FieldTooLong {
                field: "certificate",
                ..
            })
        ));

        let long_text = ResponseHeader::Error {
            message: "e".repeat(MAX_TEXT_BYTES + 1),
        };
        let raw = encode_frame(&long_text, MAX_RESPONSE_HEADER_BYTES)?;
        assert!(matches!(
            decode_all::<ResponseHeader>(&raw),
            Err(ProtoError::FieldTooLong {
                field: "message",
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn constructors_truncate_at_char_boundary() -> Result<(), ProtoError> {
        // 'é' is two bytes, so MAX_TEXT_BYTES falls inside a character at an odd offset.
        let text = format!("x{}", "é".repeat(MAX_TEXT_BYTES));
        let ResponseHeader::Error { message } = ResponseHeader::error(text) else {
            unreachable!()
        };
        assert_eq!(message.len(), MAX_TEXT_BYTES - 1);
        encode_response_header(&ResponseHeader::not_found("é".repeat(2000)))?;
        Ok(())
    }

    #[test]
    fn huge_claimed_proof_length_does_not_allocate() {
        // Segment variant (1), hash, size 0, then a proof length varint of 2^32 and no items.
        let mut payload = vec![1];
        payload.extend_from_slice(&[0; 32]);
        payload.push(0);
        payload.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10]);
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        assert!(matches!(
            decode_all::<ResponseHeader>(&frame),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn unread_bytes_inside_frame_are_malformed() -> Result<(), ProtoError> {
        let mut bytes = encode_request(&all_requests()[2])?;
        bytes.push(0);
        let len = (bytes.len() - LEN_PREFIX_BYTES) as u32;
        bytes[..LEN_PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode_all::<Request>(&bytes),
            Err(ProtoError::Malformed(_))
        ));
        Ok(())
    }

    #[test]
    fn trailing_bytes_after_frame() -> Result<(), ProtoError> {
        let mut bytes = encode_request(&all_requests()[0])?;
        bytes.push(0);
        assert_eq!(
            decode_all::<Request>(&bytes),
            Err(ProtoError::TrailingBytes)
        );

        let bytes = encode_request(&all_requests()[0])?;
        let mut decoder = FrameDecoder::<Request>::new();
        assert!(decoder.push(&bytes)?.is_some());
        assert_eq!(decoder.push(&[0]), Err(ProtoError::TrailingBytes));
        Ok(())
    }

    #[test]
    fn every_truncation_is_reported() -> Result<(), ProtoError> {
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for req in all_requests() {
            frames.push(encode_request(&req)?);
        }
        for (i, frame) in frames.iter().enumerate() {
            for cut in 0..frame.len() {
                let mut decoder = FrameDecoder::<Request>::new();
                assert_eq!(decoder.push(&frame[..cut])?, None, "frame {i} cut {cut}");
                assert_eq!(
                    decoder.finish(),
                    Err(ProtoError::Truncated {
                        missing: decoder.needed() as u64
                    })
                );
                assert!(decoder.needed() > 0);
            }
        }
        for header in all_headers() {
            let frame = encode_response_header(&header)?;
            for cut in 0..frame.len() {
                let mut decoder = FrameDecoder::<ResponseHeader>::new();
                assert_eq!(decoder.push(&frame[..cut])?, None);
                assert!(matches!(
                    decoder.finish(),
                    Err(ProtoError::Truncated { .. })
                ));
            }
        }
        Ok(())
    }

    /// A payload cut short but given a matching length prefix: postcard runs out of input.
    #[test]
    fn every_short_payload_is_an_error_not_a_panic() -> Result<(), ProtoError> {
        for header in all_headers() {
            let frame = encode_response_header(&header)?;
            let payload = &frame[LEN_PREFIX_BYTES..];
            for cut in 1..payload.len() {
                let mut short = (cut as u32).to_be_bytes().to_vec();
                short.extend_from_slice(&payload[..cut]);
                assert!(decode_all::<ResponseHeader>(&short).is_err());
            }
        }
        Ok(())
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_1234_abcd_0001);
        for round in 0..20_000 {
            let len = rng.usize(..if round % 2 == 0 { 16 } else { 300 });
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Half the time, a plausible prefix so the payload decoder is exercised too.
            if round % 2 == 1 && len >= LEN_PREFIX_BYTES {
                let plen = (len - LEN_PREFIX_BYTES) as u32;
                bytes[..LEN_PREFIX_BYTES].copy_from_slice(&plen.to_be_bytes());
                if round % 4 == 1 && len > LEN_PREFIX_BYTES {
                    bytes[LEN_PREFIX_BYTES] = PROTOCOL_VERSION;
                }
            }
            // Random split points.
            let mut req = FrameDecoder::<Request>::new();
            let mut hdr = FrameDecoder::<ResponseHeader>::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len());
                let _ = req.push(&rest[..n]);
                let _ = hdr.push(&rest[..n]);
                rest = &rest[n..];
            }
            let _ = req.finish();
            let _ = hdr.finish();
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic() -> Result<(), ProtoError> {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut frames = Vec::new();
        for req in all_requests() {
            frames.push(encode_request(&req)?);
        }
        for header in all_headers() {
            frames.push(encode_response_header(&header)?);
        }
        for _ in 0..20_000 {
            let mut frame = frames[rng.usize(..frames.len())].clone();
            for _ in 0..rng.usize(1..=3) {
                let at = rng.usize(LEN_PREFIX_BYTES..frame.len());
                frame[at] = rng.u8(..);
            }
            let _ = decode_all::<Request>(&frame);
            let _ = decode_all::<ResponseHeader>(&frame);
        }
        Ok(())
    }

    #[test]
    fn body_len_per_variant() {
        let lens: Vec<u64> = all_headers().iter().map(ResponseHeader::body_len).collect();
        assert_eq!(lens, [1234, 6_000_000, 0, 0, 0, 0, 0, 0, 0]);
    }
}
