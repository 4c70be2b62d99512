//! Ingest of one HLS rendition from a folder into an (unsigned) manifest.
//!
//! The folder is what ffmpeg's hls muxer writes: one media playlist, an optional fMP4 init
//! segment and the media segments. Ingest checks the whole folder before it imports anything, then
//! streams every file through a [`BlobSink`] (which hashes while it copies, so no file is ever held
//! in memory), and builds the manifest from what the sink measured — the bytes that are in the
//! store, not what the folder claimed.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use mhc_manifest::{
    parse_media_playlist, ContentId, Hash32, HlsParams, InitSegment, Manifest, MediaKind,
    MediaPlaylist, SegmentFormat, SegmentInfo,
};

use crate::IngestError;

/// Largest playlist file read, in bytes. ffmpeg writes about 40 bytes per segment, so this
/// covers the manifest crate's segment limit with room to spare.
const MAX_PLAYLIST_BYTES: u64 = 16 * 1024 * 1024;

/// Largest single segment accepted, in bytes. A 10 s segment at 50 Mbit/s is 62.5 MB; segments
/// are served from RAM whole, so an unbounded one would be a memory hazard on every node.
pub const MAX_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

/// Where ingested bytes go: a content-addressed store that hashes while it copies.
pub trait BlobSink {
    /// Copies `input` (an opened rendition file) into the store, returning its BLAKE3 hash and
    /// size. The sink never opens paths itself: ingest opens every file (see
    /// [`open_rendition_file`]) so that what is published is what the folder holds.
    ///
    /// # Errors
    /// I/O errors reading `input` or writing the store; more than `max_bytes`.
    fn import(&mut self, input: &mut dyn Read, max_bytes: u64) -> std::io::Result<ImportedBlob>;
}

/// What a [`BlobSink`] measured of one imported file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedBlob {
    /// BLAKE3 of the file's bytes.
    pub hash: Hash32,
    /// Length in bytes.
    pub size: u64,
}

/// What to publish and from where.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    /// Content id (slug) the rendition is published under.
    pub content_id: ContentId,
    /// Human title.
    pub title: String,
    /// Artist id the royalties go to.
    pub artist_id: String,
    /// Audio or video; inferred from the segment format when `None` (AAC → audio).
    pub media_kind: Option<MediaKind>,
    /// RFC 6381 codecs string for the master playlist, if known (e.g. `avc1.64001e,mp4a.40.2`).
    pub codecs: Option<String>,
    /// The rendition folder, or its media playlist file.
    pub source: PathBuf,
}

/// A rendition checked on disk: every file the manifest will name, in order.
#[derive(Debug)]
struct Rendition {
    /// The folder the files are in (none may be reached through a link out of it).
    dir: PathBuf,
    playlist: MediaPlaylist,
    format: SegmentFormat,
    init: Option<PathBuf>,
    segments: Vec<PathBuf>,
}

/// Reads the rendition at `req.source`, imports every file through `sink`, and returns the
/// manifest (version `version`, not yet signed).
///
/// Nothing is imported unless the whole folder checks out first: a missing or unreadable
/// segment is reported before any byte is copied.
///
/// # Errors
/// [`IngestError`] naming the file or playlist line that is wrong.
pub fn ingest_rendition(
    req: &IngestRequest,
    version: u64,
    sink: &mut dyn BlobSink,
) -> Result<Manifest, IngestError> {
    let rendition = check_rendition(&req.source)?;

    let init = match &rendition.init {
        Some(path) => {
            let blob = import(sink, &rendition.dir, path)?;
            Some(InitSegment {
                size: blob.size,
                hash: blob.hash,
            })
        }
        None => None,
    };
    let mut segments = Vec::with_capacity(rendition.segments.len());
    for (path, entry) in rendition.segments.iter().zip(&rendition.playlist.segments) {
        let blob = import(sink, &rendition.dir, path)?;
        segments.push(SegmentInfo {
            duration_ms: entry.duration_ms,
            size: blob.size,
            hash: blob.hash,
        });
    }

    let (bandwidth_bps, average_bandwidth_bps) = bandwidths(&segments);
    let media_kind = req.media_kind.unwrap_or(match rendition.format {
        SegmentFormat::Aac => MediaKind::Audio,
        SegmentFormat::Ts | SegmentFormat::Fmp4 => MediaKind::Video,
    });
    let target_duration_s = segments
        .iter()
        .map(|s| s.duration_ms.div_ceil(1000))
        .max()
        .unwrap_or(1)
        .max(rendition.playlist.target_duration_s)
        .max(1);
    let hls = HlsParams {
        target_duration_s,
        segment_format: rendition.format,
        codecs: req.codecs.clone(),
        bandwidth_bps,
        average_bandwidth_bps,
        init,
    };
    Manifest::new(
        req.content_id.clone(),
        version,
        req.title.clone(),
        req.artist_id.clone(),
        media_kind,
        hls,
        segments,
    )
    .map_err(IngestError::Manifest)
}

fn import(sink: &mut dyn BlobSink, dir: &Path, path: &Path) -> Result<ImportedBlob, IngestError> {
    let (mut file, _) = open_rendition_file(dir, path)?;
    let blob = sink
        .import(&mut file, MAX_SEGMENT_BYTES)
        .map_err(|source| IngestError::Io {
            path: path.to_owned(),
            source,
        })?;
    if blob.size == 0 {
        return Err(IngestError::EmptyFile(path.to_owned()));
    }
    Ok(blob)
}

/// Peak and average bits per second, as the `BANDWIDTH` and `AVERAGE-BANDWIDTH` attributes of a
/// master playlist define them (RFC 8216 §4.3.4.2): peak over single segments, average over all.
fn bandwidths(segments: &[SegmentInfo]) -> (u64, u64) {
    let mut peak = 0u64;
    let (mut bytes, mut ms) = (0u64, 0u64);
    for s in segments {
        let duration_ms = u64::from(s.duration_ms.max(1));
        peak = peak.max(s.size.saturating_mul(8000) / duration_ms);
        bytes = bytes.saturating_add(s.size);
        ms = ms.saturating_add(duration_ms);
    }
    let average = bytes.saturating_mul(8000).checked_div(ms).unwrap_or(0);
    (peak, average)
}

fn check_rendition(source: &Path) -> Result<Rendition, IngestError> {
    let (dir, playlist_path) = locate_playlist(source)?;
    let (file, meta) = open_rendition_file(&dir, &playlist_path)?;
    if meta.len() > MAX_PLAYLIST_BYTES {
        return Err(IngestError::Rendition {
            path: playlist_path,
            problem: format!("playlist is larger than {MAX_PLAYLIST_BYTES} bytes"),
        });
    }
    let mut text = String::new();
    file.take(MAX_PLAYLIST_BYTES)
        .read_to_string(&mut text)
        .map_err(|source| IngestError::Io {
            path: playlist_path.clone(),
            source,
        })?;
    let playlist = parse_media_playlist(&text).map_err(|source| IngestError::Playlist {
        path: playlist_path.clone(),
        source,
    })?;
    let problem = |problem: String| IngestError::Rendition {
        path: playlist_path.clone(),
        problem,
    };
    if !playlist.end_list {
        return Err(problem(
            "playlist has no #EXT-X-ENDLIST: only finished (VOD) renditions can be published"
                .into(),
        ));
    }
    if playlist.segments.is_empty() {
        return Err(problem("playlist lists no segments".into()));
    }

    let mut format = None;
    for seg in &playlist.segments {
        let ext = Path::new(&seg.uri)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let this = match (ext.as_str(), playlist.map_uri.is_some()) {
            (_, true) => SegmentFormat::Fmp4,
            ("ts", false) => SegmentFormat::Ts,
            ("aac", false) => SegmentFormat::Aac,
            _ => {
                return Err(problem(format!(
                    "segment {:?}: unsupported segment type (expected .ts, .aac, or fMP4 with \
                     #EXT-X-MAP)",
                    seg.uri
                )))
            }
        };
        match format {
            None => format = Some(this),
            Some(f) if f != this => {
                return Err(problem(format!(
                    "segment {:?}: mixes segment types in one rendition",
                    seg.uri
                )))
            }
            Some(_) => {}
        }
    }
    let format = format.expect("at least one segment");

    let init = match &playlist.map_uri {
        Some(uri) => Some(resolve_local(&dir, uri).map_err(problem)?),
        None => None,
    };
    let mut segments = Vec::with_capacity(playlist.segments.len());
    for seg in &playlist.segments {
        segments.push(resolve_local(&dir, &seg.uri).map_err(problem)?);
    }
    // Fail before importing anything: every file must be a readable regular file in the folder.
    for path in init.iter().chain(&segments) {
        let (_, meta) = open_rendition_file(&dir, path)?;
        if meta.len() > MAX_SEGMENT_BYTES {
            return Err(IngestError::Rendition {
                path: path.clone(),
                problem: format!("larger than the {MAX_SEGMENT_BYTES}-byte segment limit"),
            });
        }
    }
    Ok(Rendition {
        dir,
        playlist,
        format,
        init,
        segments,
    })
}

/// Opens a file of the rendition in `dir` for reading, refusing anything but a regular file
/// reached without a symbolic link: a folder whose `seg0.ts` links to the node key (or whose
/// subfolder links to `/etc`) would otherwise publish that file to the world, and a FIFO or a
/// device would hang or never end. The final component is opened with `O_NOFOLLOW` (and
/// `O_NONBLOCK`, so that opening a FIFO does not wait for a writer), and the type checked on
/// the opened file, not on the path.
///
/// # Errors
/// [`IngestError::Rendition`] naming the path for a link or a special file; I/O errors.
pub fn open_rendition_file(
    dir: &Path,
    path: &Path,
) -> Result<(fs::File, fs::Metadata), IngestError> {
    let refuse = |problem: &str| IngestError::Rendition {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let io = |source| IngestError::Io {
        path: path.to_owned(),
        source,
    };
    // Folders between `dir` and the file: none may be a link.
    if let Ok(rel) = path.strip_prefix(dir) {
        let mut at = dir.to_owned();
        let mut parts = rel.components().peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                break;
            }
            at.push(part);
            if fs::symlink_metadata(&at)
                .map_err(io)?
                .file_type()
                .is_symlink()
            {
                return Err(refuse(
                    "lies under a symbolic link; ingest publishes only files inside the folder",
                ));
            }
        }
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refuse("is a symbolic link; ingest publishes only files inside the folder")
            } else {
                io(e)
            }
        })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a FIFO, device, socket or folder cannot be published)",
        ));
    }
    Ok((file, meta))
}

/// Finds the media playlist: `source` itself if it is a file, else the one `.m3u8` in the folder
/// (or `index.m3u8` when there are several).
fn locate_playlist(source: &Path) -> Result<(PathBuf, PathBuf), IngestError> {
    let meta = fs::metadata(source).map_err(|e| IngestError::Io {
        path: source.to_owned(),
        source: e,
    })?;
    if meta.is_file() {
        let dir = source.parent().unwrap_or(Path::new(".")).to_owned();
        return Ok((dir, source.to_owned()));
    }
    let mut playlists = Vec::new();
    let entries = fs::read_dir(source).map_err(|e| IngestError::Io {
        path: source.to_owned(),
        source: e,
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| IngestError::Io {
            path: source.to_owned(),
            source: e,
        })?;
        let path = entry.path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("m3u8"))
        {
            playlists.push(path);
        }
    }
    playlists.sort();
    let chosen = match playlists.len() {
        0 => None,
        1 => playlists.pop(),
        _ => playlists
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == "index.m3u8"))
            .cloned(),
    };
    match chosen {
        Some(p) => Ok((source.to_owned(), p)),
        None => Err(IngestError::Rendition {
            path: source.to_owned(),
            problem: if playlists.is_empty() {
                "no .m3u8 media playlist in this folder".into()
            } else {
                "several .m3u8 playlists and none is index.m3u8: give the playlist file".into()
            },
        }),
    }
}

/// Resolves a playlist URI to a file inside `dir`. Remote URLs, absolute paths and `..` are
/// refused: ingest publishes what is in the folder, nothing else on the machine.
fn resolve_local(dir: &Path, uri: &str) -> Result<PathBuf, String> {
    if uri.contains("://") || uri.starts_with("data:") {
        return Err(format!(
            "{uri:?}: only files inside the rendition folder can be ingested"
        ));
    }
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let rel = Path::new(path);
    if path.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "{uri:?}: segment paths must be relative and stay inside the rendition folder"
        ));
    }
    Ok(dir.join(rel))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A sink that keeps what it imported in memory, for tests of the folder logic.
    #[derive(Default)]
    struct MemSink {
        blobs: HashMap<Hash32, Vec<u8>>,
        imports: usize,
    }

    impl BlobSink for MemSink {
        fn import(
            &mut self,
            input: &mut dyn Read,
            max_bytes: u64,
        ) -> std::io::Result<ImportedBlob> {
            let mut bytes = Vec::new();
            input.take(max_bytes + 1).read_to_end(&mut bytes)?;
            let hash = *blake3::hash(&bytes).as_bytes();
            let size = bytes.len() as u64;
            self.blobs.insert(hash, bytes);
            self.imports += 1;
            Ok(ImportedBlob { hash, size })
        }
    }

    fn request(dir: &Path) -> IngestRequest {
        IngestRequest {
            content_id: ContentId::new("song-1").unwrap(),
            title: "Song".into(),
            artist_id: "artist-1".into(),
            media_kind: None,
            codecs: None,
            source: dir.to_owned(),
        }
    }

    fn write_ts_rendition(dir: &Path, n: usize) {
        let mut pl = String::from(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n",
        );
        for i in 0..n {
            pl.push_str(&format!("#EXTINF:2.000000,\nseg{i}.ts\n"));
            fs::write(
                dir.join(format!("seg{i}.ts")),
                vec![i as u8 + 1; 188 * (i + 1)],
            )
            .unwrap();
        }
        pl.push_str("#EXT-X-ENDLIST\n");
        fs::write(dir.join("index.m3u8"), pl).unwrap();
    }

    #[test]
    fn ts_rendition_becomes_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        write_ts_rendition(dir.path(), 3);
        let mut sink = MemSink::default();
        let m = ingest_rendition(&request(dir.path()), 1, &mut sink).unwrap();
        assert_eq!(m.segments.len(), 3);
        assert_eq!(m.hls.segment_format, SegmentFormat::Ts);
        assert_eq!(m.media_kind, MediaKind::Video);
        assert_eq!(m.segments[2].size, 188 * 3);
        assert_eq!(
            m.segments[1].hash,
            *blake3::hash(&vec![2u8; 376]).as_bytes()
        );
        assert_eq!(sink.imports, 3);
        // Peak: 564 bytes in 2 s.
        assert_eq!(m.hls.bandwidth_bps, 564 * 8 / 2);
    }

    #[test]
    fn missing_segment_imports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write_ts_rendition(dir.path(), 3);
        fs::remove_file(dir.path().join("seg2.ts")).unwrap();
        let mut sink = MemSink::default();
        let err = ingest_rendition(&request(dir.path()), 1, &mut sink).unwrap_err();
        assert!(err.to_string().contains("seg2.ts"), "{err}");
        assert_eq!(sink.imports, 0);
    }

    #[test]
    fn unfinished_or_escaping_playlists_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("index.m3u8"),
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n",
        )
        .unwrap();
        let err = ingest_rendition(&request(dir.path()), 1, &mut MemSink::default()).unwrap_err();
        assert!(err.to_string().contains("ENDLIST"), "{err}");

        for uri in ["../etc/passwd.ts", "/etc/x.ts", "http://example.com/a.ts"] {
            fs::write(
                dir.path().join("index.m3u8"),
                format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{uri}\n#EXT-X-ENDLIST\n"),
            )
            .unwrap();
            let err =
                ingest_rendition(&request(dir.path()), 1, &mut MemSink::default()).unwrap_err();
            assert!(err.to_string().contains(uri), "{err}");
        }
    }

    #[test]
    fn links_and_special_files_are_refused_before_anything_is_imported() {
        let secret = tempfile::tempdir().unwrap();
        fs::write(secret.path().join("node.key"), [7u8; 32]).unwrap();
        type Spoil<'a> = &'a dyn Fn(&Path);
        let cases: [(&str, Spoil<'_>); 3] = [
            ("symbolic link", &|dir| {
                fs::remove_file(dir.join("seg1.ts")).unwrap();
                std::os::unix::fs::symlink(secret.path().join("node.key"), dir.join("seg1.ts"))
                    .unwrap();
            }),
            ("symbolic link", &|dir| {
                // The file is real, the folder it is in is a link out of the rendition.
                fs::write(secret.path().join("seg1.ts"), [1u8; 188]).unwrap();
                std::os::unix::fs::symlink(secret.path(), dir.join("sub")).unwrap();
                let pl = fs::read_to_string(dir.join("index.m3u8")).unwrap();
                fs::write(dir.join("index.m3u8"), pl.replace("seg1.ts", "sub/seg1.ts")).unwrap();
            }),
            ("not a regular file", &|dir| {
                fs::remove_file(dir.join("seg1.ts")).unwrap();
                let made = std::process::Command::new("mkfifo")
                    .arg(dir.join("seg1.ts"))
                    .status()
                    .unwrap();
                assert!(made.success(), "mkfifo");
            }),
        ];
        for (expected, spoil) in cases {
            let dir = tempfile::tempdir().unwrap();
            write_ts_rendition(dir.path(), 3);
            spoil(dir.path());
            let mut sink = MemSink::default();
            let err = ingest_rendition(&request(dir.path()), 1, &mut sink).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert!(err.to_string().contains("seg1.ts"), "{err}");
            assert_eq!(sink.imports, 0, "nothing imported before the check");
        }
    }

    #[test]
    fn empty_folder_and_empty_segment() {
        let dir = tempfile::tempdir().unwrap();
        let err = ingest_rendition(&request(dir.path()), 1, &mut MemSink::default()).unwrap_err();
        assert!(err.to_string().contains("no .m3u8"), "{err}");
        write_ts_rendition(dir.path(), 2);
        fs::write(dir.path().join("seg1.ts"), b"").unwrap();
        let err = ingest_rendition(&request(dir.path()), 1, &mut MemSink::default()).unwrap_err();
        assert!(err.to_string().contains("seg1.ts"), "{err}");
    }
}
