//! What the label needs of the origin's catalog and blob store, as a trait the node implements
//! (the plugin does not reach into the node's stores).
//!
//! A track's delivered file is its rendition's init segment (if any) followed by its media
//! segments: for the containers HLS uses that concatenation is itself a playable file
//! (fragmented MP4, an ADTS stream, an MPEG-TS stream).

use std::fmt::Debug;
use std::io::{self, Read};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// One published content as the label sees it (its latest version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackMedia {
    /// Content id.
    pub content_id: String,
    /// Published version.
    pub version: u64,
    /// The artist id it was published under.
    pub artist_id: String,
    /// Title.
    pub title: String,
    /// Whether it is audio only (video content is not delivered as a sound recording).
    pub audio_only: bool,
    /// Total duration, ms.
    pub duration_ms: u64,
    /// The HLS CODECS string.
    pub codecs: String,
    /// Peak bandwidth, bit/s.
    pub bandwidth_bps: u64,
    /// File extension of the delivered file (`m4a`, `aac`, `ts`, `mp4`).
    pub extension: &'static str,
    /// The parts in order (init segment first): BLAKE3 hash and size.
    pub parts: Vec<([u8; 32], u64)>,
}

impl TrackMedia {
    /// The delivered file's size.
    pub fn size(&self) -> u64 {
        self.parts.iter().map(|(_, s)| s).sum()
    }
}

/// The origin's catalog and verified blob store.
pub trait MediaLibrary: Send + Sync + Debug {
    /// The latest published version of a content, or `None` if it is not published here.
    fn track(&self, content_id: &str) -> Option<TrackMedia>;

    /// Opens a verified blob by its BLAKE3 hash.
    ///
    /// # Errors
    /// The blob is missing or unreadable.
    fn open_blob(&self, hash: &[u8; 32]) -> io::Result<Box<dyn Read + Send>>;
}

/// Reads a track's file part after part, checking each part's BLAKE3 and size as it goes, so
/// that nothing unverified is delivered: a part that does not match fails the read.
#[derive(Debug)]
pub struct TrackReader {
    library: Arc<dyn MediaLibrary>,
    parts: Vec<([u8; 32], u64)>,
    current: Option<OpenPart>,
    next: usize,
}

/// The part being read: its file, the hash so far, the bytes so far.
struct OpenPart(Box<dyn Read + Send>, blake3::Hasher, u64);

impl Debug for OpenPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenPart({} bytes read)", self.2)
    }
}

impl TrackReader {
    /// A reader over `track`'s parts.
    pub fn new(library: Arc<dyn MediaLibrary>, track: &TrackMedia) -> Self {
        Self {
            library,
            parts: track.parts.clone(),
            current: None,
            next: 0,
        }
    }
}

impl Read for TrackReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let part = match self.current.as_mut() {
                Some(part) => part,
                None => {
                    let Some((hash, _)) = self.parts.get(self.next) else {
                        return Ok(0);
                    };
                    let file = self.library.open_blob(hash)?;
                    self.current
                        .insert(OpenPart(file, blake3::Hasher::new(), 0))
                }
            };
            let n = part.0.read(buf)?;
            if n > 0 {
                part.1.update(&buf[..n]);
                part.2 += n as u64;
                return Ok(n);
            }
            let (hash, size) = self.parts[self.next];
            if *part.1.finalize().as_bytes() != hash || part.2 != size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} does not match its manifest ({} bytes read, {size} expected)",
                        hex::encode(hash),
                        part.2
                    ),
                ));
            }
            self.current = None;
            self.next += 1;
        }
    }
}

/// SHA-256 and size of a track's file, read (and verified) from the store.
///
/// # Errors
/// A part is missing, unreadable or does not match its hash.
pub fn file_digest(
    library: &Arc<dyn MediaLibrary>,
    track: &TrackMedia,
) -> io::Result<([u8; 32], u64)> {
    let mut reader = TrackReader::new(Arc::clone(library), track);
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        total += n as u64;
    }
    Ok((sha.finalize().into(), total))
}
