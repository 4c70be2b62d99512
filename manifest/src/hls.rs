//! HLS media playlists (RFC 8216): parsing what ffmpeg's hls muxer writes (mpegts and fMP4)
//! and rendering the playlist a node serves for a [`Manifest`].

use std::fmt::Write as _;

use crate::manifest::{Manifest, SegmentFormat, MAX_SEGMENTS};

/// Maximum length in bytes of one playlist line accepted by [`parse_media_playlist`].
pub const MAX_PLAYLIST_LINE_BYTES: usize = 4096;

/// Relative URI of the fMP4 init segment in rendered playlists.
pub const INIT_SEGMENT_URI: &str = "init.mp4";

/// Why a media playlist was rejected; every variant with a `line` names a 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaylistError {
    /// The first line is not `#EXTM3U`.
    #[error("line 1: playlist must start with #EXTM3U")]
    MissingHeader,
    /// A line exceeds [`MAX_PLAYLIST_LINE_BYTES`].
    #[error("line {line}: line is {len} bytes long; at most {MAX_PLAYLIST_LINE_BYTES} allowed")]
    LineTooLong {
        /// Line number.
        line: usize,
        /// Line length in bytes.
        len: usize,
    },
    /// The input is a master (multivariant) playlist.
    #[error("line {line}: this is a master playlist; give one rendition's media playlist")]
    MasterPlaylist {
        /// Line number of the first master-playlist tag.
        line: usize,
    },
    /// A URI line without a preceding `#EXTINF`.
    #[error("line {line}: segment URI {uri:?} is not preceded by #EXTINF")]
    UriWithoutExtinf {
        /// Line number of the URI.
        line: usize,
        /// The URI.
        uri: String,
    },
    /// An `#EXTINF` not followed by a URI line.
    #[error("line {line}: #EXTINF is not followed by a segment URI")]
    ExtinfWithoutUri {
        /// Line number of the `#EXTINF`.
        line: usize,
    },
    /// A tag value that does not parse.
    #[error("line {line}: invalid {tag} value {value:?}: {reason}")]
    InvalidValue {
        /// Line number.
        line: usize,
        /// The tag name, e.g. `#EXTINF`.
        tag: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A malformed attribute list (`#EXT-X-MAP`, `#EXT-X-KEY`).
    #[error("line {line}: malformed {tag} attribute list: {reason}")]
    BadAttributes {
        /// Line number.
        line: usize,
        /// The tag name.
        tag: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A valid HLS feature that mhc does not support.
    #[error("line {line}: unsupported: {feature}")]
    Unsupported {
        /// Line number.
        line: usize,
        /// The feature.
        feature: String,
    },
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("line {line}: more than {MAX_SEGMENTS} segments")]
    TooManySegments {
        /// Line number of the first segment over the limit.
        line: usize,
    },
    /// No `#EXT-X-TARGETDURATION` tag.
    #[error("playlist has no #EXT-X-TARGETDURATION tag")]
    MissingTargetDuration,
}

/// `#EXT-X-PLAYLIST-TYPE` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlaylistType {
    /// `VOD`: the playlist never changes.
    Vod,
    /// `EVENT`: segments may only be appended.
    Event,
}

/// One `#EXTINF` entry of a media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistSegment {
    /// The segment URI exactly as written (usually relative to the playlist).
    pub uri: String,
    /// `#EXTINF` duration rounded to the nearest millisecond.
    pub duration_ms: u32,
    /// `#EXTINF` title (text after the comma; often empty).
    pub title: String,
}

/// A parsed HLS media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// `#EXT-X-VERSION`, if present.
    pub version: Option<u8>,
    /// `#EXT-X-TARGETDURATION` in seconds.
    pub target_duration_s: u32,
    /// `#EXT-X-MEDIA-SEQUENCE` (0 if absent).
    pub media_sequence: u64,
    /// `#EXT-X-PLAYLIST-TYPE`, if present.
    pub playlist_type: Option<PlaylistType>,
    /// Whether `#EXT-X-INDEPENDENT-SEGMENTS` is present.
    pub independent_segments: bool,
    /// `URI` of `#EXT-X-MAP` (the fMP4 init segment), if present.
    pub map_uri: Option<String>,
    /// Segments in order.
    pub segments: Vec<PlaylistSegment>,
    /// Whether `#EXT-X-ENDLIST` is present.
    pub end_list: bool,
}

/// Tags that only occur in master playlists.
const MASTER_TAGS: [&str; 3] = [
    "#EXT-X-STREAM-INF",
    "#EXT-X-I-FRAME-STREAM-INF",
    "#EXT-X-MEDIA",
];

/// Parses an HLS media playlist.
///
/// Unknown tags and comments are ignored. Never panics.
///
/// # Errors
///
/// [`PlaylistError`] naming the offending line: missing `#EXTM3U`, master playlist, URI
/// without `#EXTINF` or vice versa, malformed values, byte ranges, encryption, several
/// init segments, lines over [`MAX_PLAYLIST_LINE_BYTES`], more than [`MAX_SEGMENTS`]
/// segments, or no `#EXT-X-TARGETDURATION`.
pub fn parse_media_playlist(text: &str) -> Result<MediaPlaylist, PlaylistError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split('\n').enumerate().map(|(i, l)| (i + 1, l));

    match lines.next() {
        Some((1, first)) if first.len() <= MAX_PLAYLIST_LINE_BYTES && first.trim() == "#EXTM3U" => {
        }
        _ => return Err(PlaylistError::MissingHeader),
    }

    let mut version = None;
    let mut target_duration_s = None;
    let mut media_sequence = 0;
    let mut playlist_type = None;
    let mut independent_segments = false;
    let mut map_uri: Option<String> = None;
    let mut segments = Vec::new();
    let mut end_list = false;
    // (line of the #EXTINF, duration, title) waiting for its URI.
    let mut pending: Option<(usize, u32, String)> = None;

    for (line_no, raw) in lines {
        if raw.len() > MAX_PLAYLIST_LINE_BYTES {
            return Err(PlaylistError::LineTooLong {
                line: line_no,
                len: raw.len(),
            });
        }
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            let Some((_, duration_ms, title)) = pending.take() else {
                return Err(PlaylistError::UriWithoutExtinf {
                    line: line_no,
                    uri: line.to_owned(),
                });
            };
            if segments.len() >= MAX_SEGMENTS {
                return Err(PlaylistError::TooManySegments { line: line_no });
            }
            segments.push(PlaylistSegment {
                uri: line.to_owned(),
                duration_ms,
                title,
            });
            continue;
        }
        if !line.starts_with("#EXT") {
            continue; // comment
        }
        let (tag, value) = match line.split_once(':') {
            Some((tag, value)) => (tag, Some(value)),
            None => (line, None),
        };
        if MASTER_TAGS.contains(&tag) {
            return Err(PlaylistError::MasterPlaylist { line: line_no });
        }
        let invalid = |tag: &'static str, reason: &'static str| PlaylistError::InvalidValue {
            line: line_no,
            tag,
            value: value.unwrap_or_default().to_owned(),
            reason,
        };
        let unsupported = |feature: &str| PlaylistError::Unsupported {
            line: line_no,
            feature: feature.to_owned(),
        };
        match tag {
            "#EXTINF" => {
                if let Some((first, _, _)) = pending {
                    return Err(PlaylistError::ExtinfWithoutUri { line: first });
                }
                let value = value.ok_or_else(|| invalid("#EXTINF", "missing duration"))?;
                let (duration, title) = value.split_once(',').unwrap_or((value, ""));
                let duration_ms = parse_duration_ms(duration.trim()).ok_or_else(|| {
                    invalid(
                        "#EXTINF",
                        "expected a non-negative decimal number of seconds below 4294967",
                    )
                })?;
                pending = Some((line_no, duration_ms, title.to_owned()));
            }
            "#EXT-X-VERSION" => {
                version = Some(
                    parse_int(value)
                        .ok_or_else(|| invalid("#EXT-X-VERSION", "expected an integer 0..=255"))?,
                );
            }
            "#EXT-X-TARGETDURATION" => {
                target_duration_s = Some(
                    parse_int(value)
                        .ok_or_else(|| invalid("#EXT-X-TARGETDURATION", "expected an integer"))?,
                );
            }
            "#EXT-X-MEDIA-SEQUENCE" => {
                media_sequence = parse_int(value)
                    .ok_or_else(|| invalid("#EXT-X-MEDIA-SEQUENCE", "expected an integer"))?;
            }
            "#EXT-X-PLAYLIST-TYPE" => {
                playlist_type = Some(match value.map(str::trim) {
                    Some("VOD") => PlaylistType::Vod,
                    Some("EVENT") => PlaylistType::Event,
                    _ => return Err(invalid("#EXT-X-PLAYLIST-TYPE", "expected VOD or EVENT")),
                });
            }
            "#EXT-X-INDEPENDENT-SEGMENTS" => independent_segments = true,
            "#EXT-X-ENDLIST" => end_list = true,
            "#EXT-X-BYTERANGE" => {
                return Err(unsupported("byte-range segments (#EXT-X-BYTERANGE)"));
            }
            "#EXT-X-KEY" => {
                let attrs = parse_attributes(value.unwrap_or_default()).map_err(|reason| {
                    PlaylistError::BadAttributes {
                        line: line_no,
                        tag: "#EXT-X-KEY",
                        reason,
                    }
                })?;
                match find_attr(&attrs, "METHOD") {
                    Some("NONE") => {}
                    Some(method) => {
                        return Err(unsupported(&format!(
                            "encrypted segments (#EXT-X-KEY METHOD={method})"
                        )));
                    }
                    None => {
                        return Err(PlaylistError::BadAttributes {
                            line: line_no,
                            tag: "#EXT-X-KEY",
                            reason: "missing METHOD",
                        });
                    }
                }
            }
            "#EXT-X-MAP" => {
                let bad = |reason| PlaylistError::BadAttributes {
                    line: line_no,
                    tag: "#EXT-X-MAP",
                    reason,
                };
                let attrs = parse_attributes(value.unwrap_or_default()).map_err(bad)?;
                if find_attr(&attrs, "BYTERANGE").is_some() {
                    return Err(unsupported(
                        "byte-range init segment (#EXT-X-MAP BYTERANGE)",
                    ));
                }
                let uri = find_attr(&attrs, "URI").ok_or_else(|| bad("missing URI"))?;
                if uri.is_empty() {
                    return Err(bad("empty URI"));
                }
                match &map_uri {
                    Some(existing) if existing != uri => {
                        return Err(unsupported(&format!(
                            "a second init segment #EXT-X-MAP URI {uri:?} (first was {existing:?})"
                        )));
                    }
                    Some(_) => {}
                    None if !segments.is_empty() || pending.is_some() => {
                        return Err(unsupported("#EXT-X-MAP after the first segment"));
                    }
                    None => map_uri = Some(uri.to_owned()),
                }
            }
            _ => {} // unknown or irrelevant tag
        }
    }

    if let Some((line, _, _)) = pending {
        return Err(PlaylistError::ExtinfWithoutUri { line });
    }
    Ok(MediaPlaylist {
        version,
        target_duration_s: target_duration_s.ok_or(PlaylistError::MissingTargetDuration)?,
        media_sequence,
        playlist_type,
        independent_segments,
        map_uri,
        segments,
        end_list,
    })
}

/// Parses a decimal-integer tag value.
fn parse_int<T: std::str::FromStr>(value: Option<&str>) -> Option<T> {
    let v = value?.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Parses `<digits>[.<digits>]` seconds to milliseconds, rounding half up, without floats.
fn parse_duration_ms(s: &str) -> Option<u32> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty()
        || !all_digits(int)
        || !all_digits(frac)
        || (s.contains('.') && frac.is_empty())
    {
        return None;
    }
    let mut ms: u64 = 0;
    for b in int.bytes() {
        ms = ms.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if ms > u64::from(u32::MAX) {
            return None;
        }
    }
    ms *= 1000;
    let mut digits = frac.bytes().map(|b| u64::from(b - b'0'));
    let mut scale = 100;
    for _ in 0..3 {
        ms += digits.next().unwrap_or(0) * scale;
        scale /= 10;
    }
    if digits.next().is_some_and(|d| d >= 5) {
        ms += 1;
    }
    u32::try_from(ms).ok()
}

/// Parses an attribute list `NAME=value,NAME="quoted, value",...`.
fn parse_attributes(s: &str) -> Result<Vec<(&str, &str)>, &'static str> {
    let mut attrs = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or("attribute without '='")?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("attribute name must be A-Z, 0-9 or '-'");
        }
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').ok_or("unterminated quoted string")?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            let value = &after[..end];
            if value.is_empty() || value.contains('"') {
                return Err("empty or malformed attribute value");
            }
            (value, &after[end..])
        };
        attrs.push((name, value));
        rest = match after.strip_prefix(',') {
            Some(next) if !next.is_empty() => next,
            Some(_) => return Err("trailing comma"),
            None if after.is_empty() => after,
            None => return Err("expected ',' after attribute value"),
        };
    }
    Ok(attrs)
}

fn find_attr<'a>(attrs: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    attrs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// URI of segment `index` in a rendered playlist, relative to the playlist, naming the version.
pub fn segment_uri(index: usize, format: SegmentFormat, version: u64) -> String {
    format!("seg/{index}.{}?v={version}", format.extension())
}

/// URI of the init segment in a rendered playlist, relative to the playlist, naming the version.
pub fn init_uri(version: u64) -> String {
    format!("{INIT_SEGMENT_URI}?v={version}")
}

/// Renders the VOD media playlist a node serves for `manifest`, with relative URIs
/// ([`INIT_SEGMENT_URI`], [`segment_uri`]) so it works on any node.
///
/// Every URI carries `?v={version}`: segment URLs are cached as immutable, and segment `n` of
/// version 2 is different bytes from segment `n` of version 1, so the version is part of the
/// name. A player that started on version 1 keeps getting version 1 after a republish.
pub fn render_media_playlist(manifest: &Manifest) -> String {
    let hls = &manifest.hls;
    let mut out = String::with_capacity(160 + manifest.segments.len() * 32);
    let version = if hls.init.is_some() { 7 } else { 3 };
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{}\n\
         #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        hls.target_duration_s
    );
    if hls.init.is_some() {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_uri(manifest.version));
    }
    for (i, seg) in manifest.segments.iter().enumerate() {
        let _ = write!(
            out,
            "#EXTINF:{}.{:03},\n{}\n",
            seg.duration_ms / 1000,
            seg.duration_ms % 1000,
            segment_uri(i, hls.segment_format, manifest.version)
        );
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ContentId;
    use crate::manifest::{HlsParams, InitSegment, MediaKind, SegmentInfo};

    const FFMPEG_TS: &str = "#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXTINF:4.000000,
seg_000.ts
#EXTINF:4.000000,
seg_001.ts
#EXTINF:3.960000,
seg_002.ts
#EXTINF:1.234567,
seg_003.ts
#EXT-X-ENDLIST
";

    const FFMPEG_FMP4: &str = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init.mp4\"
#EXTINF:2.000000,
seg_000.m4s
#EXTINF:2.000000,
seg_001.m4s
#EXTINF:0.512000,
seg_002.m4s
#EXT-X-ENDLIST
";

    fn manifest(format: SegmentFormat, durations: &[u32]) -> Manifest {
        let init = format.has_init().then_some(InitSegment {
            size: 700,
            hash: [1; 32],
        });
        Manifest::new(
            ContentId::new("clip").unwrap(),
            1,
            "Clip",
            "artist",
            MediaKind::Video,
            HlsParams {
                target_duration_s: 4,
                segment_format: format,
                codecs: None,
                bandwidth_bps: 1,
                average_bandwidth_bps: 1,
                init,
            },
            durations
                .iter()
                .enumerate()
                .map(|(i, &d)| SegmentInfo {
                    duration_ms: d,
                    size: 10,
                    hash: [i as u8; 32],
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn parses_ffmpeg_ts() {
        let p = parse_media_playlist(FFMPEG_TS).unwrap();
        assert_eq!(p.version, Some(3));
        assert_eq!(p.target_duration_s, 4);
        assert_eq!(p.media_sequence, 0);
        assert_eq!(p.playlist_type, Some(PlaylistType::Vod));
        assert!(!p.independent_segments);
        assert_eq!(p.map_uri, None);
        assert!(p.end_list);
        let durations: Vec<_> = p.segments.iter().map(|s| s.duration_ms).collect();
        assert_eq!(durations, [4000, 4000, 3960, 1235]);
        assert_eq!(p.segments[2].uri, "seg_002.ts");
        assert_eq!(p.segments[2].title, "");
    }

    #[test]
    fn parses_ffmpeg_fmp4() {
        let p = parse_media_playlist(FFMPEG_FMP4).unwrap();
        assert_eq!(p.version, Some(7));
        assert_eq!(p.target_duration_s, 2);
        assert!(p.independent_segments);
        assert_eq!(p.map_uri.as_deref(), Some("init.mp4"));
        assert_eq!(p.segments.len(), 3);
        assert_eq!(p.segments[2].duration_ms, 512);
        assert_eq!(p.segments[0].uri, "seg_000.m4s");
    }

    #[test]
    fn crlf_bom_comments_and_unknown_tags() {
        let text = format!(
            "\u{feff}{}",
            FFMPEG_FMP4
                .replace(
                    "#EXT-X-PLAYLIST-TYPE:VOD\n",
                    "#EXT-X-PLAYLIST-TYPE:EVENT\n# a comment\n#EXT-X-ALLOW-CACHE:YES\n\n"
                )
                .replace(
                    "seg_001.m4s\n",
                    "seg_001.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init.mp4\"\n"
                )
                .replace(
                    "#EXTINF:0.512000,\n",
                    "#EXTINF:0.512000,Last, part\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:00Z\n"
                )
                .replace('\n', "\r\n")
        );
        let p = parse_media_playlist(&text).unwrap();
        assert_eq!(p.playlist_type, Some(PlaylistType::Event));
        assert_eq!(p.segments.len(), 3);
        assert_eq!(p.segments[2].title, "Last, part");
        assert_eq!(p.segments[2].uri, "seg_002.m4s");
        assert_eq!(p.map_uri.as_deref(), Some("init.mp4"));
        assert!(p.end_list);
    }

    #[test]
    fn key_method_none_and_no_comma_extinf() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXT-X-KEY:METHOD=NONE\n#EXTINF:5\na.ts\n";
        let p = parse_media_playlist(text).unwrap();
        assert_eq!(p.segments[0].duration_ms, 5000);
        assert!(!p.end_list);
        assert_eq!(p.version, None);
        assert_eq!(p.playlist_type, None);
    }

    #[test]
    fn render_parse_roundtrip() {
        for (format, version) in [
            (SegmentFormat::Ts, 3),
            (SegmentFormat::Fmp4, 7),
            (SegmentFormat::Aac, 3),
        ] {
            let durations = [4000, 3999, 1, 2500, 0, 4100];
            let m = manifest(format, &durations);
            let text = render_media_playlist(&m);
            let p = parse_media_playlist(&text).unwrap();
            assert_eq!(p.version, Some(version));
            assert_eq!(p.target_duration_s, 4);
            assert_eq!(p.media_sequence, 0);
            assert_eq!(p.playlist_type, Some(PlaylistType::Vod));
            assert!(p.independent_segments);
            assert!(p.end_list);
            assert_eq!(p.map_uri, format.has_init().then(|| init_uri(m.version)));
            let got: Vec<_> = p.segments.iter().map(|s| s.duration_ms).collect();
            assert_eq!(got, durations);
            for (i, s) in p.segments.iter().enumerate() {
                assert_eq!(s.uri, format!("seg/{i}.{}?v=1", format.extension()));
                assert_eq!(s.uri, segment_uri(i, format, m.version));
            }
        }
    }

    #[test]
    fn render_exact_text() {
        let m = manifest(SegmentFormat::Fmp4, &[2000, 1500]);
        assert_eq!(
            render_media_playlist(&m),
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4?v=1\"\n\
             #EXTINF:2.000,\nseg/0.m4s?v=1\n#EXTINF:1.500,\nseg/1.m4s?v=1\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn duration_parsing() {
        let cases = [
            ("2", Some(2000)),
            ("2.0", Some(2000)),
            ("2.000000", Some(2000)),
            ("3.96", Some(3960)),
            ("0.0004", Some(0)),
            ("0.0005", Some(1)),
            ("0.00049999999", Some(0)),
            ("1.9995", Some(2000)),
            ("10.1234999", Some(10123)),
            ("0004.5", Some(4500)),
            ("4294967.295", Some(u32::MAX)),
            ("4294967.2955", None),
            ("4294968", None),
            ("99999999999999999999999", None),
            ("", None),
            (".5", None),
            ("2.", None),
            ("-1", None),
            ("+1", None),
            ("1e3", None),
            ("1.2.3", None),
            (" 1", None),
            ("１", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration_ms(s), want, "{s:?}");
        }
    }

    #[test]
    fn attribute_parsing() {
        assert_eq!(
            parse_attributes(r#"METHOD=AES-128,URI="k,ey",IV=0x1"#).unwrap(),
            [("METHOD", "AES-128"), ("URI", "k,ey"), ("IV", "0x1")]
        );
        assert_eq!(parse_attributes("").unwrap(), []);
        for bad in [
            "URI",
            "uri=\"a\"",
            "URI=\"a",
            "URI=\"a\"x",
            "URI=\"a\",",
            "=a",
            "A=",
            "A=b\"c",
        ] {
            assert!(parse_attributes(bad).is_err(), "{bad:?}");
        }
    }

    fn err(text: &str) -> PlaylistError {
        parse_media_playlist(text).unwrap_err()
    }

    const HEAD: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n";

    #[test]
    fn error_cases() {
        assert_eq!(err(""), PlaylistError::MissingHeader);
        assert_eq!(err("\u{feff}"), PlaylistError::MissingHeader);
        assert_eq!(
            err("#EXT-X-VERSION:3\n#EXTM3U\n"),
            PlaylistError::MissingHeader
        );
        assert_eq!(err("EXTM3U\n"), PlaylistError::MissingHeader);

        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nlow/index.m3u8\n";
        let e = err(master);
        assert_eq!(e, PlaylistError::MasterPlaylist { line: 2 });
        assert_eq!(
            e.to_string(),
            "line 2: this is a master playlist; give one rendition's media playlist"
        );

        assert_eq!(
            err(&format!("{HEAD}a.ts\n")),
            PlaylistError::UriWithoutExtinf {
                line: 3,
                uri: "a.ts".into()
            }
        );
        assert_eq!(
            err(&format!("{HEAD}#EXTINF:1,\n")),
            PlaylistError::ExtinfWithoutUri { line: 3 }
        );
        assert_eq!(
            err(&format!("{HEAD}#EXTINF:1,\n#EXTINF:1,\na.ts\n")),
            PlaylistError::ExtinfWithoutUri { line: 3 }
        );
        assert!(matches!(
            err(&format!("{HEAD}#EXTINF:abc,\na.ts\n")),
            PlaylistError::InvalidValue {
                line: 3,
                tag: "#EXTINF",
                ..
            }
        ));
        assert!(matches!(
            err(&format!("{HEAD}#EXTINF\na.ts\n")),
            PlaylistError::InvalidValue {
                line: 3,
                tag: "#EXTINF",
                ..
            }
        ));
        assert!(matches!(
            err("#EXTM3U\n#EXT-X-TARGETDURATION:x\n"),
            PlaylistError::InvalidValue {
                line: 2,
                tag: "#EXT-X-TARGETDURATION",
                ..
            }
        ));
        assert!(matches!(
            err(&format!("{HEAD}#EXT-X-VERSION:300\n")),
            PlaylistError::InvalidValue {
                line: 3,
                tag: "#EXT-X-VERSION",
                ..
            }
        ));
        assert!(matches!(
            err(&format!("{HEAD}#EXT-X-MEDIA-SEQUENCE:-1\n")),
            PlaylistError::InvalidValue {
                line: 3,
                tag: "#EXT-X-MEDIA-SEQUENCE",
                ..
            }
        ));
        assert!(matches!(
            err(&format!("{HEAD}#EXT-X-PLAYLIST-TYPE:LIVE\n")),
            PlaylistError::InvalidValue {
                line: 3,
                tag: "#EXT-X-PLAYLIST-TYPE",
                ..
            }
        ));
        assert!(matches!(
            err(&format!("{HEAD}#EXTINF:1,\n#EXT-X-BYTERANGE:100@0\na.ts\n")),
            PlaylistError::Unsupported { line: 4, .. }
        ));
        let e = err(&format!("{HEAD}#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n"));
        assert!(matches!(e, PlaylistError::Unsupported { line: 3, .. }));
        assert!(e.to_string().contains("encrypted"), "{e}");
        assert!(matches!(
            err(&format!("{HEAD}#EXT-X-KEY:URI=\"k\"\n")),
            PlaylistError::BadAttributes {
                line: 3,
                tag: "#EXT-X-KEY",
                ..
            }
        ));
        assert!(matches!(
            err(&format!(
                "{HEAD}#EXT-X-MAP:URI=\"i.mp4\",BYTERANGE=\"10@0\"\n"
            )),
            PlaylistError::Unsupported { line: 3, .. }
        ));
        assert!(matches!(
            err(&format!("{HEAD}#EXT-X-MAP:URI=\"i.mp4\n")),
            PlaylistError::BadAttributes {
                line: 3,
                tag: "#EXT-X-MAP",
                ..
            }
        ));
        assert!(matches!(
            err(&format!("{HEAD}#EXT-X-MAP:BYTES=1\n")),
            PlaylistError::BadAttributes { line: 3, .. }
        ));
        assert!(matches!(
            err(&format!("{HEAD}#EXT-X-MAP:URI=\"\"\n")),
            PlaylistError::BadAttributes { line: 3, .. }
        ));
        assert!(matches!(
            err(&format!(
                "{HEAD}#EXT-X-MAP:URI=\"a.mp4\"\n#EXTINF:1,\na.m4s\n#EXT-X-MAP:URI=\"b.mp4\"\n"
            )),
            PlaylistError::Unsupported { line: 6, .. }
        ));
        assert!(matches!(
            err(&format!(
                "{HEAD}#EXTINF:1,\na.m4s\n#EXT-X-MAP:URI=\"b.mp4\"\n"
            )),
            PlaylistError::Unsupported { line: 5, .. }
        ));
        assert_eq!(
            err("#EXTM3U\n#EXTINF:1,\na.ts\n"),
            PlaylistError::MissingTargetDuration
        );
        let long = format!(
            "{HEAD}#EXTINF:1,\n{}\n",
            "a".repeat(MAX_PLAYLIST_LINE_BYTES + 1)
        );
        assert_eq!(
            err(&long),
            PlaylistError::LineTooLong {
                line: 4,
                len: MAX_PLAYLIST_LINE_BYTES + 1
            }
        );
        let long_first = format!("#EXTM3U{}\n", " ".repeat(MAX_PLAYLIST_LINE_BYTES));
        assert_eq!(err(&long_first), PlaylistError::MissingHeader);
    }

    #[test]
    fn segment_limit() {
        let mut text = String::from(HEAD);
        for i in 0..MAX_SEGMENTS {
            let _ = write!(text, "#EXTINF:1,\n{i}.ts\n");
        }
        assert_eq!(
            parse_media_playlist(&text).unwrap().segments.len(),
            MAX_SEGMENTS
        );
        text.push_str("#EXTINF:1,\nlast.ts\n");
        assert_eq!(
            err(&text),
            PlaylistError::TooManySegments {
                line: 2 + 2 * MAX_SEGMENTS + 2
            }
        );
    }

    #[test]
    fn garbled_inputs_never_panic() {
        let samples = [
            FFMPEG_TS.to_owned(),
            FFMPEG_FMP4.to_owned(),
            render_media_playlist(&manifest(SegmentFormat::Fmp4, &[1000, 2000])),
            format!("\u{feff}{}", FFMPEG_TS.replace('\n', "\r\n")),
        ];
        let noise = [
            '#', ':', ',', '"', '=', '.', '\n', '\r', '0', '9', 'é', '\u{feff}', ' ', '-', 'A',
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for sample in &samples {
            let boundaries: Vec<usize> = sample
                .char_indices()
                .map(|(i, _)| i)
                .chain([sample.len()])
                .collect();
            // Every truncation.
            for &cut in &boundaries {
                let _ = parse_media_playlist(&sample[..cut]);
                let _ = parse_media_playlist(&sample[cut..]);
            }
            // Every single-character replacement, deletion and insertion.
            for w in boundaries.windows(2) {
                let (a, b) = (w[0], w[1]);
                for c in noise {
                    let replaced = format!("{}{c}{}", &sample[..a], &sample[b..]);
                    let _ = parse_media_playlist(&replaced);
                    let inserted = format!("{}{c}{}", &sample[..a], &sample[a..]);
                    let _ = parse_media_playlist(&inserted);
                }
                let deleted = format!("{}{}", &sample[..a], &sample[b..]);
                let _ = parse_media_playlist(&deleted);
            }
            // Random multi-character garbling.
            let chars: Vec<char> = sample.chars().collect();
            for _ in 0..2000 {
                let mut v = chars.clone();
                for _ in 0..(next() % 8 + 1) {
                    let pos = (next() as usize) % v.len();
                    match next() % 3 {
                        0 => v[pos] = noise[(next() as usize) % noise.len()],
                        1 => {
                            v.remove(pos);
                            if v.is_empty() {
                                break;
                            }
                        }
                        _ => v.insert(pos, noise[(next() as usize) % noise.len()]),
                    }
                }
                let s: String = v.into_iter().collect();
                let _ = parse_media_playlist(&s);
            }
        }
    }
}
