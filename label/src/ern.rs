//! DDEX ERN 4.3 `NewReleaseMessage`s: one per release and DSP, for an insert, an update or a
//! takedown, written with quick-xml and valid against the ERN 4.3 schema (the tests validate
//! every message they build with libxml2).
//!
//! The model here is what the message needs, already resolved (identifiers assigned, files
//! hashed); [`ErnMessage::to_xml`] only writes it.

use std::borrow::Cow;
use std::fmt::Write as _;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

/// What a message says about the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// First delivery of the release to this DSP.
    Insert,
    /// A changed release sent again in full (ERN 4 has no partial updates: a later message
    /// for the same release supersedes the earlier one).
    Update,
    /// The release is withdrawn: its deals end (each deal is sent again with an `EndDateTime`;
    /// ERN 4 has no `TakeDown` flag).
    Takedown,
}

/// A party as the message header names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// DDEX Party ID, `PADPIDA` + 14 alphanumerics.
    pub party_id: String,
    /// The party's name.
    pub name: String,
}

/// One message for one release to one DSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErnMessage {
    /// Unique per message.
    pub message_id: String,
    /// The same for every message about one release to one DSP.
    pub thread_id: String,
    /// `YYYY-MM-DDThh:mm:ssZ`.
    pub created: String,
    /// The label (the platform).
    pub sender: Party,
    /// The DSP.
    pub recipient: Party,
    /// Insert, update or takedown.
    pub kind: MessageKind,
    /// The release.
    pub release: ErnRelease,
}

/// A release as the message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErnRelease {
    /// The platform's id of the release (a `ProprietaryId` in the sender's namespace).
    pub release_id: String,
    /// The release's ICPN (UPC-A, 12 digits, or EAN-13).
    pub icpn: String,
    /// Title.
    pub title: String,
    /// Display artist name.
    pub display_artist: String,
    /// Label name.
    pub label_name: String,
    /// Genre text.
    pub genre: String,
    /// Original release date, `YYYY-MM-DD`; deals start on it.
    pub release_date: String,
    /// ℗ line: year and text.
    pub p_line: (u16, String),
    /// © line: year and text.
    pub c_line: (u16, String),
    /// ISO 3166-1 alpha-2 codes, or the single value `Worldwide`.
    pub territories: Vec<String>,
    /// Commercial terms, one deal each.
    pub deals: Vec<ErnDeal>,
    /// Tracks in order.
    pub tracks: Vec<ErnTrack>,
}

/// One deal: a commercial model, the uses it allows, an optional wholesale price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErnDeal {
    /// AVS `CommercialModelType`, e.g. `SubscriptionModel`, `AdvertisementSupportedModel`,
    /// `PayAsYouGoModel`.
    pub commercial_model: String,
    /// AVS `UseType`s, e.g. `OnDemandStream`, `PermanentDownload`.
    pub use_types: Vec<String>,
    /// Wholesale price per release: decimal amount (e.g. `"7.99"`) and ISO 4217 currency.
    pub price: Option<(String, String)>,
}

/// One track (a sound recording) and its delivered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErnTrack {
    /// ISRC, 12 characters without hyphens.
    pub isrc: String,
    /// Title.
    pub title: String,
    /// Display artist name.
    pub display_artist: String,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// The file delivered beside the message.
    pub file: ErnFile,
}

/// A delivered resource file and the technical details the manifest knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErnFile {
    /// Path relative to the message, e.g. `resources/USMHC2600001.m4a`.
    pub uri: String,
    /// SHA-256 of the file, lowercase hex.
    pub sha256_hex: String,
    /// Size in bytes.
    pub size: u64,
    /// AVS `AudioCodecType` (`AAC`, `MP3`, `FLAC`, ...), or `None` when the manifest's codec
    /// has no AVS name.
    pub codec: Option<String>,
    /// Average bitrate in kbit/s, from the manifest's bandwidth.
    pub bitrate_kbps: Option<u32>,
}

/// The ERN 4.3 namespace (the root element is qualified, every other element is not: the
/// schema's `elementFormDefault` is `unqualified`).
const ERN_NAMESPACE: &str = "http://ddex.net/xml/ern/43";
/// Where the schema lives; recipients validate against their own copy.
const SCHEMA_LOCATION: &str =
    "http://ddex.net/xml/ern/43 http://ddex.net/xml/ern/43/release-notification.xsd";
/// The version of the Allowed Value Sets the message's codes come from. The attribute is a
/// free `xs:string` in the schema; `3` is the version `allowed-value-sets.xsd` of ERN 4.3
/// declares (`<xs:documentation source="AvsVersionId">3</...>`) and what DDEX's samples send.
const AVS_VERSION_ID: &str = "3";
/// The release profile: `Audio` covers audio albums and singles alike (the other audio
/// profile, `SimpleAudioSingle`, is for one-resource releases typed `SingleResourceRelease`).
const RELEASE_PROFILE: &str = "Audio";
/// The one release of the message.
const RELEASE_REFERENCE: &str = "R0";
/// The label's party; artists are `P1`, `P2`, ... in order of first appearance.
const LABEL_PARTY_REFERENCE: &str = "PLabel";
/// The model carries no parental advisory: say so rather than claim `NotExplicit`.
const PARENTAL_WARNING: &str = "NoAdviceAvailable";

impl ErnMessage {
    /// Writes the message as a DDEX ERN 4.3 NewReleaseMessage (UTF-8, with the XML declaration).
    ///
    /// Layout: `MessageHeader`; a `PartyList` with one party per display artist (`P1`, ...)
    /// and one for the label (`PLabel`); a `ResourceList` with one `SoundRecording` per track
    /// (`A1`, ... with technical details `T1`, ...); a `ReleaseList` with the one `Release`
    /// `R0` whose `ResourceGroup` lists the tracks in order; and, when there are deals, a
    /// `DealList` with one `ReleaseDeal` for `R0` holding one `Deal` per [`ErnDeal`].
    ///
    /// An update is the same message again (ERN 4 has no partial updates). ERN 4 has no
    /// `TakeDown` flag any more (ERN 3 had one): a takedown sends the deals again with an end,
    /// `ValidityPeriod` `EndDateTime` = [`ErnMessage::created`], so that each deal the DSP holds
    /// for the release, territory and use ends now (a release without deals has nothing to end:
    /// its message has no `DealList` at all, whatever the kind).
    pub fn to_xml(&self) -> String {
        let artists = ArtistParties::of(&self.release);
        let mut x = Xml::new();
        x.el_with(
            "ern:NewReleaseMessage",
            &[
                ("xmlns:ern", ERN_NAMESPACE),
                ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
                ("xsi:schemaLocation", SCHEMA_LOCATION),
                ("ReleaseProfileVersionId", RELEASE_PROFILE),
                ("LanguageAndScriptCode", "en"),
                ("AvsVersionId", AVS_VERSION_ID),
            ],
            |x| {
                self.write_header(x);
                write_party_list(x, &self.release, &artists);
                x.el("ResourceList", |x| {
                    for (index, track) in self.release.tracks.iter().enumerate() {
                        write_sound_recording(x, &self.release, track, index + 1, &artists);
                    }
                });
                x.el("ReleaseList", |x| self.write_release(x, &artists));
                // The DealList is optional (a message without deals is a metadata-only
                // delivery), but a ReleaseDeal needs at least one Deal.
                if !self.release.deals.is_empty() {
                    x.el("DealList", |x| self.write_deals(x));
                }
            },
        );
        x.finish()
    }

    fn write_header(&self, x: &mut Xml) {
        x.el("MessageHeader", |x| {
            x.leaf("MessageThreadId", &self.thread_id);
            x.leaf("MessageId", &self.message_id);
            write_messaging_party(x, "MessageSender", &self.sender);
            write_messaging_party(x, "MessageRecipient", &self.recipient);
            x.leaf("MessageCreatedDateTime", &self.created);
            x.leaf("MessageControlType", "LiveMessage");
        });
    }

    fn write_release(&self, x: &mut Xml, artists: &ArtistParties<'_>) {
        let release = &self.release;
        x.el("Release", |x| {
            x.leaf("ReleaseReference", RELEASE_REFERENCE);
            let release_type = if release.tracks.len() > 1 {
                "Album"
            } else {
                "Single"
            };
            x.leaf("ReleaseType", release_type);
            x.el("ReleaseId", |x| {
                x.leaf("ICPN", &release.icpn);
                x.leaf_with(
                    "ProprietaryId",
                    &[("Namespace", self.sender.party_id.as_str())],
                    &release.release_id,
                );
            });
            write_titles_and_artist(x, &release.title, &release.display_artist, artists);
            x.leaf("ReleaseLabelReference", LABEL_PARTY_REFERENCE);
            write_p_line(x, &release.p_line);
            x.el("CLine", |x| {
                x.leaf("Year", &release.c_line.0.to_string());
                x.leaf("CLineText", &release.c_line.1);
            });
            let total_ms = release.tracks.iter().map(|t| t.duration_ms).sum();
            x.leaf("Duration", &iso8601_duration(total_ms));
            x.el("Genre", |x| x.leaf("GenreText", &release.genre));
            // Both dates, the same day: the model's date is the first availability of this
            // release in its current form (ReleaseDate) and of its collection of tracks
            // (OriginalReleaseDate); DSPs differ in which one they display.
            x.leaf("ReleaseDate", &release.release_date);
            x.leaf("OriginalReleaseDate", &release.release_date);
            x.leaf("ParentalWarningType", PARENTAL_WARNING);
            x.el("ResourceGroup", |x| {
                // One group: the release has a single component (disc).
                x.leaf("SequenceNumber", "1");
                for index in 1..=release.tracks.len() {
                    x.el("ResourceGroupContentItem", |x| {
                        x.leaf("SequenceNumber", &index.to_string());
                        x.leaf("ReleaseResourceReference", &format!("A{index}"));
                    });
                }
            });
        });
    }

    fn write_deals(&self, x: &mut Xml) {
        let release = &self.release;
        x.el("ReleaseDeal", |x| {
            x.leaf("DealReleaseReference", RELEASE_REFERENCE);
            for deal in &release.deals {
                x.el("Deal", |x| {
                    x.el("DealTerms", |x| {
                        // `Worldwide` is one of the schema's territory codes.
                        for territory in &release.territories {
                            x.leaf("TerritoryCode", territory);
                        }
                        self.write_validity_period(x);
                        x.leaf("CommercialModelType", &deal.commercial_model);
                        for use_type in &deal.use_types {
                            x.leaf("UseType", use_type);
                        }
                        if let Some((amount, currency)) = &deal.price {
                            x.el("PriceInformation", |x| {
                                x.leaf_with(
                                    "WholesalePricePerUnit",
                                    &[("CurrencyCode", currency.as_str())],
                                    amount,
                                );
                            });
                        }
                    });
                });
            }
        });
    }

    /// The deal's period. The schema's `ValidityPeriod` is a choice between a `StartDate`
    /// (+ `EndDate`) pair and a `StartDateTime` (+ `EndDateTime`) pair, never a mix.
    fn write_validity_period(&self, x: &mut Xml) {
        let release_date = &self.release.release_date;
        x.el("ValidityPeriod", |x| match self.kind {
            // Open-ended from the release date (a deal without an end is valid until further
            // notice), as a date: the release goes live at midnight local time everywhere.
            MessageKind::Insert | MessageKind::Update => x.leaf("StartDate", release_date),
            // The end needs a time (dates are inclusive: an EndDate of today would keep the
            // release live until midnight), so the start is the same local midnight as a
            // time. Taken down before its release date, the deal never opens: it starts and
            // ends now (StartDateTime must not be later than EndDateTime).
            MessageKind::Takedown => {
                let before_release = self
                    .created
                    .get(..10)
                    .is_some_and(|day| day < release_date.as_str());
                let start = if before_release {
                    self.created.clone()
                } else {
                    format!("{release_date}T00:00:00")
                };
                x.leaf("StartDateTime", &start);
                x.leaf("EndDateTime", &self.created);
            }
        });
    }
}

/// The artist parties of a release: each distinct display artist name, the release's first.
struct ArtistParties<'a> {
    names: Vec<&'a str>,
}

impl<'a> ArtistParties<'a> {
    fn of(release: &'a ErnRelease) -> Self {
        let mut names = vec![release.display_artist.as_str()];
        for track in &release.tracks {
            if !names.contains(&track.display_artist.as_str()) {
                names.push(&track.display_artist);
            }
        }
        ArtistParties { names }
    }

    /// `P1`, `P2`, ...: the PartyReference of an artist of the release.
    fn reference(&self, name: &str) -> String {
        let index = self
            .names
            .iter()
            .position(|n| *n == name)
            .expect("every display artist of the release has a party");
        format!("P{}", index + 1)
    }
}

fn write_messaging_party(x: &mut Xml, element: &str, party: &Party) {
    x.el(element, |x| {
        x.leaf("PartyId", &party.party_id);
        x.el("PartyName", |x| x.leaf("FullName", &party.name));
    });
}

fn write_party_list(x: &mut Xml, release: &ErnRelease, artists: &ArtistParties<'_>) {
    x.el("PartyList", |x| {
        for name in &artists.names {
            write_party(x, &artists.reference(name), name);
        }
        write_party(x, LABEL_PARTY_REFERENCE, &release.label_name);
    });
}

fn write_party(x: &mut Xml, reference: &str, name: &str) {
    x.el("Party", |x| {
        x.leaf("PartyReference", reference);
        x.el("PartyName", |x| x.leaf("FullName", name));
    });
}

/// The titles and the display artist, in the order both SoundRecording and Release want them
/// (the text forms first, then the structured ones).
fn write_titles_and_artist(x: &mut Xml, title: &str, artist: &str, artists: &ArtistParties<'_>) {
    x.leaf("DisplayTitleText", title);
    x.el("DisplayTitle", |x| x.leaf("TitleText", title));
    x.leaf("DisplayArtistName", artist);
    x.el_with("DisplayArtist", &[("SequenceNumber", "1")], |x| {
        x.leaf("ArtistPartyReference", &artists.reference(artist));
        x.leaf("DisplayArtistRole", "MainArtist");
    });
}

/// A PLine: the year, and the line's text as given (DDEX's samples write the whole line,
/// year included, e.g. `2015 Parlophone Records Limited`).
fn write_p_line(x: &mut Xml, (year, text): &(u16, String)) {
    x.el("PLine", |x| {
        x.leaf("Year", &year.to_string());
        x.leaf("PLineText", text);
    });
}

fn write_sound_recording(
    x: &mut Xml,
    release: &ErnRelease,
    track: &ErnTrack,
    index: usize,
    artists: &ArtistParties<'_>,
) {
    x.el("SoundRecording", |x| {
        x.leaf("ResourceReference", &format!("A{index}"));
        x.leaf("Type", "MusicalWorkSoundRecording");
        x.el("SoundRecordingEdition", |x| {
            x.el("ResourceId", |x| x.leaf("ISRC", &track.isrc));
            // The model has one ℗ line, the release's; it is each recording's too.
            write_p_line(x, &release.p_line);
            x.el("TechnicalDetails", |x| {
                x.leaf("TechnicalResourceDetailsReference", &format!("T{index}"));
                write_delivery_file(x, &track.file);
            });
        });
        write_titles_and_artist(x, &track.title, &track.display_artist, artists);
        x.leaf("Duration", &iso8601_duration(track.duration_ms));
        x.leaf("ParentalWarningType", PARENTAL_WARNING);
    });
}

fn write_delivery_file(x: &mut Xml, file: &ErnFile) {
    x.el("DeliveryFile", |x| {
        x.leaf("Type", "AudioFile");
        if let Some(codec) = &file.codec {
            x.leaf("AudioCodecType", codec);
        }
        if let Some(kbps) = file.bitrate_kbps {
            // kbps is the schema's default unit; said anyway.
            x.leaf_with("BitRate", &[("UnitOfMeasure", "kbps")], &kbps.to_string());
        }
        x.el("File", |x| {
            x.leaf("URI", &file.uri);
            x.el("HashSum", |x| {
                x.leaf("Algorithm", "SHA-256");
                x.leaf("HashSumValue", &file.sha256_hex);
            });
            x.leaf("FileSize", &kilobytes(file.size));
        });
    });
}

/// A size for `FileSize`, which the schema defines "in kilobytes" (an `xs:decimal`): SI
/// kilobytes, 1000 bytes, so the decimal is exact and the byte count recoverable.
fn kilobytes(bytes: u64) -> String {
    let (whole, rest) = (bytes / 1000, bytes % 1000);
    if rest == 0 {
        whole.to_string()
    } else {
        let fraction = format!("{rest:03}");
        format!("{whole}.{}", fraction.trim_end_matches('0'))
    }
}

/// An ISO 8601 duration (`xs:duration`) in the shape DDEX documents, `PT[[hH]mM]s[.fff]S`:
/// 263583 ms is `PT4M23.583S`, 60000 ms `PT1M0S`, 3723000 ms `PT1H2M3S`, 0 ms `PT0S`.
pub fn iso8601_duration(ms: u64) -> String {
    let hours = ms / 3_600_000;
    let minutes = ms / 60_000 % 60;
    let seconds = ms / 1000 % 60;
    let millis = ms % 1000;
    let mut out = String::from("PT");
    if hours > 0 {
        let _ = write!(out, "{hours}H");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}M");
    }
    let _ = write!(out, "{seconds}");
    if millis > 0 {
        let fraction = format!("{millis:03}");
        let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
    }
    out.push('S');
    out
}

/// The AVS `AudioCodecType` of the audio in an HLS `CODECS` attribute (RFC 6381 codec
/// strings, comma-separated), or `None` when it names no audio codec the AVS lists.
///
/// Entries that are not a known audio codec (video codecs such as `avc1.64001f`, subtitles)
/// are skipped; the first audio codec decides. Opus, AC-3 and ALAC have no AVS value (the
/// AVS has `DolbyDigitalPlus` for E-AC-3 and `AC-4`, but nothing for plain AC-3).
pub fn avs_audio_codec(codecs: &str) -> Option<&'static str> {
    codecs
        .split(',')
        .find_map(|codec| audio_codec(codec.trim()))
}

fn audio_codec(codec: &str) -> Option<&'static str> {
    let codec = codec.to_ascii_lowercase();
    // `mp4a.OO[.A]`: OO is the MP4 object type indication (hex); for 40 (MPEG-4 audio) A is
    // the MPEG-4 audio object type (decimal).
    if let Some(rest) = codec.strip_prefix("mp4a.") {
        let (oti, object_type) = match rest.split_once('.') {
            Some((oti, object_type)) => (oti, object_type.parse::<u8>().ok()),
            None => (rest, None),
        };
        return match (oti, object_type) {
            // AAC Main, LC, SSR, LTP, SBR (HE-AAC), Scalable; ER AAC LC, LTP, Scalable, LD;
            // PS (HE-AAC v2); ER AAC ELD.
            ("40", Some(1..=6 | 17 | 19 | 20 | 23 | 29 | 39)) => Some("AAC"),
            // MPEG-1/2 audio layers I, II, III carried as MPEG-4 audio object types.
            ("40", Some(32)) => Some("MP"),
            ("40", Some(33)) => Some("MP2"),
            ("40", Some(34)) => Some("MP3"),
            // MPEG-2 AAC Main, LC, SSR.
            ("66" | "67" | "68", _) => Some("AAC"),
            // MPEG-2 and MPEG-1 audio: MP3 in practice (as browsers read them).
            ("69" | "6b", _) => Some("MP3"),
            // E-AC-3 (0xA5, AC-3, has no AVS value).
            ("a6", _) => Some("DolbyDigitalPlus"),
            _ => None,
        };
    }
    // Other codec strings may carry parameters after a dot (`ac-4.02.01.01`, `mhm1.0x0d`).
    match codec.split('.').next().unwrap_or_default() {
        "flac" => Some("FLAC"),
        // `ec+3`: E-AC-3 with joint object coding (Dolby Atmos).
        "ec-3" | "ec+3" => Some("DolbyDigitalPlus"),
        "ac-4" => Some("AC-4"),
        "mha1" | "mha2" | "mhm1" | "mhm2" => Some("MPEG-H_3D"),
        "vorbis" => Some("Vorbis"),
        "mp3" => Some("MP3"),
        _ => None,
    }
}

/// Drops the characters XML 1.0 cannot carry at all, escaped or not (C0 controls but tab,
/// line feed and carriage return; U+FFFE and U+FFFF): a stray control character in a title
/// must not make the whole message ill-formed.
fn xml_chars(text: &str) -> Cow<'_, str> {
    fn allowed(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
    }
    if text.chars().all(allowed) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|c| allowed(*c)).collect())
    }
}

/// A small layer over quick-xml's event writer: elements open and close in one call, so the
/// nesting in [`ErnMessage::to_xml`] mirrors the document's. Text and attribute values are
/// escaped by quick-xml (`BytesText::new`, `(&str, &str)` attributes).
struct Xml {
    writer: Writer<Vec<u8>>,
}

impl Xml {
    fn new() -> Self {
        let mut xml = Xml {
            writer: Writer::new_with_indent(Vec::new(), b' ', 2),
        };
        xml.event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        xml
    }

    fn event(&mut self, event: Event<'_>) {
        self.writer
            .write_event(event)
            .expect("writing to a Vec<u8> cannot fail");
    }

    fn start(&mut self, name: &str, attributes: &[(&str, &str)]) {
        let mut start = BytesStart::new(name);
        for (key, value) in attributes {
            start.push_attribute((*key, xml_chars(value).as_ref()));
        }
        self.event(Event::Start(start));
    }

    /// `<name>` + what `body` writes + `</name>`.
    fn el(&mut self, name: &str, body: impl FnOnce(&mut Self)) {
        self.el_with(name, &[], body);
    }

    fn el_with(&mut self, name: &str, attributes: &[(&str, &str)], body: impl FnOnce(&mut Self)) {
        self.start(name, attributes);
        body(self);
        self.event(Event::End(BytesEnd::new(name)));
    }

    /// `<name>text</name>`.
    fn leaf(&mut self, name: &str, text: &str) {
        self.leaf_with(name, &[], text);
    }

    fn leaf_with(&mut self, name: &str, attributes: &[(&str, &str)], text: &str) {
        self.start(name, attributes);
        self.event(Event::Text(BytesText::new(&xml_chars(text))));
        self.event(Event::End(BytesEnd::new(name)));
    }

    fn finish(self) -> String {
        let mut xml = String::from_utf8(self.writer.into_inner())
            .expect("quick-xml writes the UTF-8 it is given");
        xml.push('\n');
        xml
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The ERN 4.3 schema directory: `$MHC_SHARED/ddex/ern43` when MHC_SHARED is set, else
    /// the `shared` folder beside the checkout.
    fn schema_dir() -> PathBuf {
        let dir = match std::env::var_os("MHC_SHARED") {
            Some(shared) => Path::new(&shared).join("ddex/ern43"),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ddex/ern43"),
        };
        let schema = dir.join("release-notification.xsd");
        assert!(
            schema.is_file(),
            "the DDEX ERN 4.3 schema is not at {} (looked there because MHC_SHARED is {}); \
             the `shared` folder must sit beside the checkout (shared/ddex/ern43/ holding \
             release-notification.xsd and allowed-value-sets.xsd), or MHC_SHARED must name it",
            schema.display(),
            match std::env::var("MHC_SHARED") {
                Ok(shared) => format!("set to {shared:?}"),
                Err(_) => "not set".to_owned(),
            },
        );
        dir
    }

    /// Runs xmllint with `args` on `xml` (written to a temporary file); its output.
    fn xmllint(xml: &str, args: &[&str]) -> std::process::Output {
        let mut file = tempfile::Builder::new()
            .suffix(".xml")
            .tempfile()
            .expect("temporary file");
        file.write_all(xml.as_bytes()).expect("write the message");
        Command::new("xmllint")
            .arg("--nonet")
            .args(args)
            .arg(file.path())
            .output()
            .expect("xmllint runs (Debian/Ubuntu: apt-get install libxml2-utils)")
    }

    /// Panics with xmllint's complaints unless `xml` is valid against the ERN 4.3 schema.
    fn validate(xml: &str) {
        let schema = schema_dir().join("release-notification.xsd");
        let out = xmllint(
            xml,
            &["--noout", "--schema", schema.to_str().expect("UTF-8 path")],
        );
        assert!(
            out.status.success(),
            "not valid ERN 4.3:\n{}\n--- message ---\n{xml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The string value of an XPath expression over `xml`, as libxml2 parses it.
    fn xpath(xml: &str, expression: &str) -> String {
        let out = xmllint(xml, &["--xpath", &format!("string({expression})")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut value = String::from_utf8(out.stdout).expect("UTF-8");
        // xmllint ends what it prints with a line feed.
        if value.ends_with('\n') {
            value.pop();
        }
        value
    }

    fn track(n: usize) -> ErnTrack {
        ErnTrack {
            isrc: format!("USMHC26{n:05}"),
            title: format!("Track {n}"),
            display_artist: "The Examples".to_owned(),
            duration_ms: 180_000 + 1_234 * n as u64,
            file: ErnFile {
                uri: format!("resources/USMHC26{n:05}.m4a"),
                sha256_hex: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                    .to_owned(),
                size: 7_340_123,
                codec: Some("AAC".to_owned()),
                bitrate_kbps: Some(256),
            },
        }
    }

    fn message(kind: MessageKind, tracks: usize) -> ErnMessage {
        ErnMessage {
            message_id: "MHC-20260301-0001".to_owned(),
            thread_id: "MHC-R1-SPOTIFY".to_owned(),
            created: "2026-03-01T12:30:00Z".to_owned(),
            sender: Party {
                party_id: "PADPIDA2026010101M".to_owned(),
                name: "Mhc Records".to_owned(),
            },
            recipient: Party {
                party_id: "PADPIDA2011072101T".to_owned(),
                name: "Spotify".to_owned(),
            },
            kind,
            release: ErnRelease {
                release_id: "r-0001".to_owned(),
                icpn: "0123456789012".to_owned(),
                title: "Examples".to_owned(),
                display_artist: "The Examples".to_owned(),
                label_name: "Mhc Records".to_owned(),
                genre: "Electronic".to_owned(),
                release_date: "2026-03-13".to_owned(),
                p_line: (2026, "2026 Mhc Records".to_owned()),
                c_line: (2025, "2025 Mhc Records".to_owned()),
                territories: vec!["Worldwide".to_owned()],
                deals: vec![ErnDeal {
                    commercial_model: "SubscriptionModel".to_owned(),
                    use_types: vec![
                        "OnDemandStream".to_owned(),
                        "NonInteractiveStream".to_owned(),
                    ],
                    price: None,
                }],
                tracks: (1..=tracks).map(track).collect(),
            },
        }
    }

    #[test]
    fn two_track_album_insert_is_valid() {
        let xml = message(MessageKind::Insert, 2).to_xml();
        validate(&xml);
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ern:NewReleaseMessage")
        );
        assert!(
            xml.contains("\n  <MessageHeader>\n    <MessageThreadId>"),
            "2-space indent"
        );
        assert!(xml.contains("AvsVersionId=\"3\""));
        assert!(xml.contains("<ReleaseType>Album</ReleaseType>"));
        assert_eq!(xml.matches("<SoundRecording>").count(), 2);
        assert_eq!(xpath(&xml, "//SoundRecording[2]/ResourceReference"), "A2");
        assert_eq!(
            xpath(
                &xml,
                "//ResourceGroupContentItem[2]/ReleaseResourceReference"
            ),
            "A2"
        );
        assert_eq!(
            xpath(&xml, "//Release/ReleaseId/ProprietaryId/@Namespace"),
            "PADPIDA2026010101M"
        );
        assert_eq!(xpath(&xml, "//Release/Duration"), "PT6M3.702S");
        assert_eq!(xpath(&xml, "//SoundRecording[1]/Duration"), "PT3M1.234S");
        assert_eq!(xpath(&xml, "//File/HashSum/Algorithm"), "SHA-256");
        assert_eq!(xpath(&xml, "//File/FileSize"), "7340.123");
        assert_eq!(xpath(&xml, "//DeliveryFile/BitRate/@UnitOfMeasure"), "kbps");
        assert_eq!(xpath(&xml, "//Release/PLine/PLineText"), "2026 Mhc Records");
        assert_eq!(xpath(&xml, "//Release/CLine/Year"), "2025");
        assert_eq!(xpath(&xml, "//SoundRecording[2]//PLine/Year"), "2026");
        assert_eq!(xpath(&xml, "//ValidityPeriod/StartDate"), "2026-03-13");
        assert!(!xml.contains("EndDate"));
    }

    #[test]
    fn one_track_single_is_valid() {
        let xml = message(MessageKind::Insert, 1).to_xml();
        validate(&xml);
        assert!(xml.contains("<ReleaseType>Single</ReleaseType>"));
        assert!(xml.contains("ReleaseProfileVersionId=\"Audio\""));
    }

    #[test]
    fn update_is_the_full_message_again() {
        let insert = message(MessageKind::Insert, 2);
        let update = message(MessageKind::Update, 2);
        let xml = update.to_xml();
        validate(&xml);
        assert_eq!(xml, insert.to_xml());
    }

    #[test]
    fn takedown_ends_the_deals_and_is_valid() {
        let mut takedown = message(MessageKind::Takedown, 2);
        takedown.created = "2026-06-01T08:00:00Z".to_owned();
        let xml = takedown.to_xml();
        validate(&xml);
        assert_eq!(
            xpath(&xml, "//ValidityPeriod/StartDateTime"),
            "2026-03-13T00:00:00"
        );
        assert_eq!(
            xpath(&xml, "//ValidityPeriod/EndDateTime"),
            "2026-06-01T08:00:00Z"
        );
        assert!(!xml.contains("<StartDate>"));
        // The release itself is still described in full.
        assert_eq!(xml.matches("<SoundRecording>").count(), 2);
    }

    #[test]
    fn takedown_before_the_release_date_never_opens_the_deal() {
        let mut takedown = message(MessageKind::Takedown, 1);
        takedown.created = "2026-03-10T08:00:00Z".to_owned();
        let xml = takedown.to_xml();
        validate(&xml);
        assert_eq!(
            xpath(&xml, "//ValidityPeriod/StartDateTime"),
            "2026-03-10T08:00:00Z"
        );
        assert_eq!(
            xpath(&xml, "//ValidityPeriod/EndDateTime"),
            "2026-03-10T08:00:00Z"
        );
    }

    #[test]
    fn track_without_codec_or_bitrate_is_valid() {
        let mut msg = message(MessageKind::Insert, 2);
        msg.release.tracks[0].file.codec = None;
        msg.release.tracks[0].file.bitrate_kbps = None;
        msg.release.tracks[1].file.size = 4_000;
        let xml = msg.to_xml();
        validate(&xml);
        assert_eq!(xml.matches("<AudioCodecType>").count(), 1);
        assert_eq!(xml.matches("<BitRate ").count(), 1);
        assert_eq!(xpath(&xml, "//SoundRecording[2]//FileSize"), "4");
    }

    #[test]
    fn special_characters_are_escaped_and_round_trip() {
        let nasty = "Beyoncé & <Friends> \"Live\" 'Mix'";
        let mut msg = message(MessageKind::Insert, 2);
        msg.release.title = nasty.to_owned();
        msg.release.display_artist = nasty.to_owned();
        msg.release.label_name = "Labél & Co <Ltd>".to_owned();
        msg.release.genre = "R&B".to_owned();
        msg.release.release_id = "id<&>\"'".to_owned();
        msg.release.tracks[1].title = "Ça & ça — 日本語 <3".to_owned();
        msg.release.tracks[0].display_artist = nasty.to_owned();
        msg.release.tracks[1].display_artist = nasty.to_owned();
        // A control character XML cannot carry at all is dropped, not written.
        msg.release.tracks[0].title = "Bell\u{7} Track".to_owned();
        let xml = msg.to_xml();
        validate(&xml);
        assert!(
            xml.contains("Beyoncé &amp; &lt;Friends&gt;"),
            "escaped, UTF-8 kept"
        );
        assert!(!xml.contains("<Friends>"));
        assert_eq!(xpath(&xml, "//Release/DisplayTitleText"), nasty);
        assert_eq!(xpath(&xml, "//Release/DisplayArtistName"), nasty);
        assert_eq!(xpath(&xml, "//Release/ReleaseId/ProprietaryId"), "id<&>\"'");
        assert_eq!(xpath(&xml, "//Genre/GenreText"), "R&B");
        assert_eq!(
            xpath(&xml, "//SoundRecording[2]/DisplayTitle/TitleText"),
            "Ça & ça — 日本語 <3"
        );
        assert_eq!(
            xpath(&xml, "//SoundRecording[1]/DisplayTitleText"),
            "Bell Track"
        );
        assert_eq!(
            xpath(&xml, "//Party[PartyReference='PLabel']/PartyName/FullName"),
            "Labél & Co <Ltd>"
        );
        // One artist party, shared by the release and both tracks.
        assert_eq!(xml.matches("<PartyReference>").count(), 2);
    }

    #[test]
    fn attribute_values_are_escaped() {
        let mut msg = message(MessageKind::Insert, 1);
        // Not a valid DPID (so not schema-valid), but it must stay well-formed XML.
        msg.sender.party_id = "PADPIDA\"<&>'\t".to_owned();
        let xml = msg.to_xml();
        let out = xmllint(&xml, &["--noout"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            xpath(&xml, "//Release/ReleaseId/ProprietaryId/@Namespace"),
            "PADPIDA\"<&>'\t"
        );
    }

    #[test]
    fn territories_and_deals_are_valid() {
        let mut msg = message(MessageKind::Insert, 2);
        msg.release.territories = ["FR", "DE", "US"].map(str::to_owned).to_vec();
        msg.release.deals = vec![
            ErnDeal {
                commercial_model: "SubscriptionModel".to_owned(),
                use_types: vec![
                    "OnDemandStream".to_owned(),
                    "NonInteractiveStream".to_owned(),
                ],
                price: None,
            },
            ErnDeal {
                commercial_model: "AdvertisementSupportedModel".to_owned(),
                use_types: vec!["OnDemandStream".to_owned()],
                price: None,
            },
            ErnDeal {
                commercial_model: "PayAsYouGoModel".to_owned(),
                use_types: vec!["PermanentDownload".to_owned()],
                price: Some(("0.99".to_owned(), "EUR".to_owned())),
            },
        ];
        let xml = msg.to_xml();
        validate(&xml);
        assert_eq!(xml.matches("<Deal>").count(), 3);
        assert_eq!(xml.matches("<TerritoryCode>").count(), 9);
        assert_eq!(xml.matches("<PriceInformation>").count(), 1);
        assert!(xml
            .contains("<WholesalePricePerUnit CurrencyCode=\"EUR\">0.99</WholesalePricePerUnit>"));
        assert_eq!(
            xpath(&xml, "//Deal[3]/DealTerms/CommercialModelType"),
            "PayAsYouGoModel"
        );

        let mut takedown = msg;
        takedown.kind = MessageKind::Takedown;
        let xml = takedown.to_xml();
        validate(&xml);
        assert_eq!(xml.matches("<EndDateTime>").count(), 3);
    }

    #[test]
    fn a_message_without_deals_is_valid() {
        let mut msg = message(MessageKind::Insert, 1);
        msg.release.deals.clear();
        let xml = msg.to_xml();
        validate(&xml);
        assert!(!xml.contains("DealList"));
    }

    #[test]
    fn tracks_by_other_artists_get_their_own_parties() {
        let mut msg = message(MessageKind::Insert, 3);
        msg.release.tracks[1].display_artist = "Guest feat. The Examples".to_owned();
        let xml = msg.to_xml();
        validate(&xml);
        assert_eq!(xml.matches("<Party>").count(), 3);
        assert_eq!(
            xpath(&xml, "//SoundRecording[2]//ArtistPartyReference"),
            "P2"
        );
        assert_eq!(
            xpath(&xml, "//SoundRecording[3]//ArtistPartyReference"),
            "P1"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(iso8601_duration(263_583), "PT4M23.583S");
        assert_eq!(iso8601_duration(60_000), "PT1M0S");
        assert_eq!(iso8601_duration(0), "PT0S");
        assert_eq!(iso8601_duration(999), "PT0.999S");
        assert_eq!(iso8601_duration(5_500), "PT5.5S");
        assert_eq!(iso8601_duration(123_450), "PT2M3.45S");
        assert_eq!(iso8601_duration(3_723_000), "PT1H2M3S");
        assert_eq!(iso8601_duration(3_600_000), "PT1H0M0S");
        assert_eq!(iso8601_duration(36_000_010), "PT10H0M0.01S");
    }

    #[test]
    fn file_sizes_in_kilobytes() {
        assert_eq!(kilobytes(0), "0");
        assert_eq!(kilobytes(999), "0.999");
        assert_eq!(kilobytes(1_000), "1");
        assert_eq!(kilobytes(7_340_120), "7340.12");
    }

    #[test]
    fn audio_codecs() {
        assert_eq!(avs_audio_codec("mp4a.40.2"), Some("AAC"));
        assert_eq!(avs_audio_codec("mp4a.40.5"), Some("AAC"));
        assert_eq!(avs_audio_codec("mp4a.40.29"), Some("AAC"));
        assert_eq!(avs_audio_codec("mp4a.67"), Some("AAC"));
        assert_eq!(avs_audio_codec("mp4a.40.34"), Some("MP3"));
        assert_eq!(avs_audio_codec("mp4a.6B"), Some("MP3"));
        assert_eq!(avs_audio_codec("mp4a.6b"), Some("MP3"));
        assert_eq!(avs_audio_codec("mp4a.69"), Some("MP3"));
        assert_eq!(avs_audio_codec("fLaC"), Some("FLAC"));
        assert_eq!(avs_audio_codec("ec-3"), Some("DolbyDigitalPlus"));
        assert_eq!(avs_audio_codec("mp4a.a6"), Some("DolbyDigitalPlus"));
        assert_eq!(avs_audio_codec("ac-4.02.01.01"), Some("AC-4"));
        assert_eq!(avs_audio_codec("mhm1.0x0D"), Some("MPEG-H_3D"));
        assert_eq!(avs_audio_codec("opus"), None);
        assert_eq!(avs_audio_codec("Opus"), None);
        assert_eq!(avs_audio_codec("ac-3"), None);
        assert_eq!(avs_audio_codec("mp4a.a5"), None);
        assert_eq!(avs_audio_codec("alac"), None);
        assert_eq!(
            avs_audio_codec("mp4a.40.42"),
            None,
            "USAC is not ISO 13818-7 AAC"
        );
        assert_eq!(avs_audio_codec("mp4a.40"), None);
        assert_eq!(avs_audio_codec(""), None);
        // Video codecs in the list are skipped, wherever they are.
        assert_eq!(avs_audio_codec("avc1.64001f,mp4a.40.2"), Some("AAC"));
        assert_eq!(avs_audio_codec("mp4a.40.2, avc1.4d401e"), Some("AAC"));
        assert_eq!(avs_audio_codec("hvc1.2.4.L123.B0, fLaC"), Some("FLAC"));
        assert_eq!(avs_audio_codec("avc1.64001f"), None);
        assert_eq!(avs_audio_codec("avc1.64001f,opus"), None);
        // Every value it can answer is in the AVS AudioCodecType list.
        let avs = std::fs::read_to_string(schema_dir().join("allowed-value-sets.xsd"))
            .expect("allowed-value-sets.xsd");
        let start = avs
            .find("<xs:simpleType name=\"AudioCodecType\">")
            .expect("AudioCodecType");
        let end = start + avs[start..].find("</xs:simpleType>").expect("its end");
        for codec in [
            "AAC",
            "MP",
            "MP2",
            "MP3",
            "FLAC",
            "DolbyDigitalPlus",
            "AC-4",
            "MPEG-H_3D",
            "Vorbis",
        ] {
            assert!(
                avs[start..end].contains(&format!("<xs:enumeration value=\"{codec}\">")),
                "{codec} is not an AVS AudioCodecType"
            );
        }
    }
}
