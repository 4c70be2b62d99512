//! DDEX DSR flat files: the sales and usage reports DSPs send the label, in the Basic Audio
//! Profile 1.2. [`DsrReader`] parses one as a stream of typed [`DsrRecord`]s; [`DsrWriter`]
//! writes one (for tests and benchmarks); [`DsrFileName`] reads the file naming convention.
//!
//! A DSR is UTF-8 text, one record per line, cells separated by tabs. The first cell is the
//! record type; the others follow that type's `xs:sequence` in DDEX's `BasicAudioProfile.xsd`
//! (the column lists below are copied from it; column 1 is `RecordType`). A file is `HEAD`, one
//! or more summary records (`SY01.01`, `SY02.02`, ...), blocks of `RE01`, `AS01.01`/`AS02.02`
//! and `SU01`/`SU02` records that share a `BlockId`, and `FOOT`.
//!
//! - Usage records (`SU01`, `SU02`) carry no territory, commercial model or currency: they name
//!   their summary record (`SummaryRecordId`, which has those) and the release or resource of
//!   their block (`TransactedRelease`/`TransactedResource`, block-local references to an `RE..`
//!   or `AS..` record). The reader checks that each reference resolves.
//! - Money and every other `xs:decimal` cell is an exact [`Decimal`] (nano-units, never `f64`);
//!   counts are `u64`.
//! - A cell of a repeated element holds its values separated by `|`; inside a value `\` escapes
//!   a tab, a `|` or a `\` (DSR Part 1, "Communicating Delimiters"). An unescaped `|` in a
//!   single-valued cell is an error there, and here.
//! - Lines starting with `#` are for humans (column headings; DSR Part 1 "Records to be
//!   Ignored"). They are yielded as [`DsrRecord::Comment`], and count in `FOOT`'s line count.
//!
//! The reader holds one line at a time (at most [`MAX_LINE_BYTES`] unless told otherwise), the
//! ids of the summary records and the references of the current block: nothing grows with the
//! number of lines. It checks the structure as it reads (HEAD first, summaries before blocks,
//! the order inside a block, FOOT last with counts that match what was read), so a truncated or
//! garbled report is an error rather than a short report.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufRead, BufReader, Chain, Cursor, Read, Write};
use std::str::FromStr;

use flate2::bufread::MultiGzDecoder;

/// The default bound on one line, in bytes (without its line end).
///
/// DSR Part 1 sets no line length. The longest record of the profile, `AS02.02` with its lists
/// of writers and publishers, runs to a few hundred bytes in practice, so 64 KiB leaves ample
/// room while keeping a file that is not a DSR (or has lost its line ends) from being buffered
/// whole. [`DsrReader::with_max_line_bytes`] changes it.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The profile this module reads (`HEAD` column 3, `Profile`).
pub const PROFILE: &str = "BasicAudioProfile";

/// The version of the profile whose column lists this module implements (`HEAD` column 4).
pub const PROFILE_VERSION: &str = "1.2";

// The columns of the modelled record types, in the order of their `xs:sequence` in
// BasicAudioProfile.xsd 1.2 (generated from the schema, not typed in).
const HEAD_COLUMNS: &[&str] = &[
    "RecordType",
    "MessageVersion",
    "Profile",
    "ProfileVersion",
    "MessageId",
    "MessageCreatedDateTime",
    "FileNumber",
    "NumberOfFiles",
    "UsageStartDate",
    "UsageEndDate",
    "SenderPartyId",
    "SenderName",
    "ServiceDescription",
    "RecipientPartyId",
    "RecipientName",
    "RepresentedRepertoire",
];
const SY0101_COLUMNS: &[&str] = &[
    "RecordType",
    "SummaryRecordId",
    "DistributionChannel",
    "DistributionChannelDPID",
    "CommercialModel",
    "UseType",
    "Territory",
    "ServiceDescription",
    "Usages",
    "Subscribers",
    "CurrencyOfReporting",
    "NetRevenue",
    "IndirectNetRevenue",
    "CurrencyOfTransaction",
    "ExchangeRate",
];
const SY0202_COLUMNS: &[&str] = &[
    "RecordType",
    "SummaryRecordId",
    "DistributionChannel",
    "DistributionChannelDPID",
    "CommercialModel",
    "UseType",
    "Territory",
    "ServiceDescription",
    "Usages",
    "Users",
    "CurrencyOfReporting",
    "NetRevenue",
    "RightsController",
    "RightsControllerPartyId",
    "AllocatedUsages",
    "AllocatedRevenue",
    "AllocatedNetRevenue",
    "RightsType",
    "ContentCategory",
    "CurrencyOfTransaction",
    "ExchangeRate",
    "RightsTypePercentage",
];
const RE01_COLUMNS: &[&str] = &[
    "RecordType",
    "BlockId",
    "ReleaseReference",
    "DspReleaseId",
    "ProprietaryReleaseId",
    "CatalogNumber",
    "ICPN",
    "DisplayArtistName",
    "DisplayArtistPartyId",
    "Title",
    "SubTitle",
    "ReleaseType",
    "Label",
    "PLine",
    "DataProvider",
];
const AS0101_COLUMNS: &[&str] = &[
    "RecordType",
    "BlockId",
    "ResourceReference",
    "DspResourceId",
    "ISRC",
    "Title",
    "SubTitle",
    "DisplayArtistName",
    "DisplayArtistPartyId",
    "Duration",
    "ResourceType",
    "IsMasterRecording",
];
const AS0202_COLUMNS: &[&str] = &[
    "RecordType",
    "BlockId",
    "ResourceReference",
    "DspResourceId",
    "ISRC",
    "Title",
    "SubTitle",
    "DisplayArtistName",
    "DisplayArtistPartyId",
    "Duration",
    "ResourceType",
    "ISWC",
    "ComposerAuthor",
    "ComposerAuthorPartyId",
    "Arranger",
    "ArrangerPartyId",
    "MusicPublisher",
    "MusicPublisherPartyId",
    "WorkContributor",
    "WorkContributorPartyId",
    "ProprietaryWorkId",
    "IsMasterRecording",
];
const SU01_COLUMNS: &[&str] = &[
    "RecordType",
    "BlockId",
    "SummaryRecordId",
    "SalesTransactionId",
    "TransactedRelease",
    "TransactedResource",
    "IsRoyaltyBearing",
    "SalesUpgrade",
    "Usages",
    "Returns",
    "PriceConsumerPaidExcSalesTax",
    "PromotionalActivity",
];
const SU02_COLUMNS: &[&str] = &[
    "RecordType",
    "BlockId",
    "SummaryRecordId",
    "SalesTransactionId",
    "TransactedRelease",
    "TransactedResource",
    "IsRoyaltyBearing",
    "NumberOfStreams",
    "PriceConsumerPaidExcSalesTax",
    "PromotionalActivity",
];
const FOOT_COLUMNS: &[&str] = &[
    "RecordType",
    "NumberOfLinesInFile",
    "NumberOfLinesInReport",
    "NumberOfSummaryRecords",
    "NumberOfBlocksInFile",
    "NumberOfBlocksInReport",
];

/// `RE02` is read as [`DsrRecord::Other`]; its `ReleaseReference` (column 3) is still one
/// that usage records may name.
const RE02_COLUMNS: &[&str] = &[
    "RecordType",
    "BlockId",
    "ReleaseReference",
    "DspSubReleaseId",
    "ProprietarySubReleaseId",
    "UsedResources",
];

/// The record types of the profile read as [`DsrRecord::Other`]: their number of columns
/// (with `RecordType`) and whether they are summary records (else block records, whose column
/// 2 is `BlockId`).
const OTHER_RECORD_TYPES: &[(&str, usize, bool)] = &[
    ("SY04.01", 20, true),
    ("SY05.02", 25, true),
    ("MW01.01", 16, false),
    ("RE02", 6, false),
];

/// Record types the schema defines only for the single-record-block variant
/// (`BasicAudioProfileSRB`), which this reader does not read.
const SRB_RECORD_TYPES: &[&str] = &["SR01", "SR02", "SRFO", "SY06.02"];

// ---------------------------------------------------------------------------------------------
// Errors

/// The cell an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRef {
    /// The record type, e.g. `SU02`.
    pub record_type: &'static str,
    /// 1-based, `RecordType` being column 1 (the numbering of the DSR standard).
    pub column: usize,
    /// The column's element name in the schema, e.g. `NumberOfStreams`.
    pub name: &'static str,
}

/// A DSR that cannot be read: where, and what is wrong.
///
/// Displays as `line 12 (SU01 column 9 Usages): "x" is not a non-negative integer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsrError {
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
    /// The cell at fault, when one is.
    pub cell: Option<CellRef>,
    /// What is wrong.
    pub problem: String,
}

impl DsrError {
    fn at(line: u64, problem: impl Into<String>) -> Self {
        Self {
            line,
            cell: None,
            problem: problem.into(),
        }
    }

    fn in_cell(line: u64, cell: CellRef, problem: impl Into<String>) -> Self {
        Self {
            line,
            cell: Some(cell),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for DsrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(cell) = &self.cell {
            write!(
                f,
                " ({} column {} {})",
                cell.record_type, cell.column, cell.name
            )?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for DsrError {}

fn cell_ref(record_type: &'static str, columns: &'static [&'static str], column: usize) -> CellRef {
    CellRef {
        record_type,
        column,
        name: columns[column - 1],
    }
}

/// A cell value quoted for an error message, cut short if long.
fn shown(value: &str) -> String {
    const MAX: usize = 80;
    if value.len() <= MAX {
        return format!("{value:?}");
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &value[..end])
}

// ---------------------------------------------------------------------------------------------
// Decimal

/// An exact decimal number, as nano-units (the value × 10⁹): money, exchange rates and the
/// other `xs:decimal` cells.
///
/// DSR Part 1 leaves the precision to sender and recipient; nine fractional digits is more
/// than any DSP sends, and a value with more is refused rather than rounded. The range
/// (±1.7 × 10²⁹) is beyond any revenue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal {
    nanos: i128,
}

/// Why a string is not a [`Decimal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct DecimalError {
    problem: &'static str,
}

impl Decimal {
    /// Zero.
    pub const ZERO: Self = Self { nanos: 0 };

    /// The number of fractional digits kept.
    pub const SCALE: u32 = 9;

    const ONE: i128 = 1_000_000_000;

    /// The decimal that is `nanos` × 10⁻⁹.
    pub const fn from_nanos(nanos: i128) -> Self {
        Self { nanos }
    }

    /// The value × 10⁹.
    pub const fn nanos(self) -> i128 {
        self.nanos
    }

    /// The sum, or `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.nanos.checked_add(other.nanos).map(Self::from_nanos)
    }

    /// The difference, or `None` on overflow.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.nanos.checked_sub(other.nanos).map(Self::from_nanos)
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;

    /// Parses `xs:decimal` syntax: an optional sign, digits, an optional `.` and at most nine
    /// fractional digits (`5`, `5.`, `5.0`, `-0.25`, `.5`). No exponent, no separators.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let not_decimal = DecimalError {
            problem: "is not a decimal number",
        };
        let (negative, unsigned) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return Err(not_decimal);
        }
        if frac.len() > Self::SCALE as usize {
            return Err(DecimalError {
                problem: "has more than 9 fractional digits",
            });
        }
        let out_of_range = DecimalError {
            problem: "is out of range",
        };
        let mut nanos: i128 = 0;
        for digit in int.bytes() {
            nanos = nanos
                .checked_mul(10)
                .and_then(|n| n.checked_add(i128::from(digit - b'0')))
                .ok_or(out_of_range)?;
        }
        nanos = nanos.checked_mul(Self::ONE).ok_or(out_of_range)?;
        let mut unit = Self::ONE;
        for digit in frac.bytes() {
            unit /= 10;
            nanos += i128::from(digit - b'0') * unit;
        }
        Ok(Self::from_nanos(if negative { -nanos } else { nanos }))
    }
}

impl fmt::Display for Decimal {
    /// The shortest exact form: `1.5`, `0`, `-0.000000001` (DSR Part 1 wants zero as `0`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let one = Self::ONE.unsigned_abs();
        let (int, frac) = (abs / one, abs % one);
        if frac == 0 {
            return write!(f, "{sign}{int}");
        }
        let digits = format!("{frac:09}");
        write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// One line of a DSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DsrRecord {
    /// `HEAD`, the first record.
    Head(Head),
    /// `SY01.01` or `SY02.02`: the totals of one sales context.
    Summary(Summary),
    /// `RE01`: the head release of a block.
    Release(Release),
    /// `AS01.01` or `AS02.02`: a sound recording or video of a block.
    Resource(Resource),
    /// `SU01` or `SU02`: the usage of a release or resource of the block, in the context of a
    /// summary record.
    Usage(Usage),
    /// `FOOT`, the last record.
    Foot(Foot),
    /// A record type of the profile that is not modelled: `SY04.01`, `SY05.02`, `MW01.01` or
    /// `RE02`. The reader has checked its number of cells and its place in the file.
    Other {
        /// The record type, e.g. `RE02`.
        record_type: String,
        /// The cells after `RecordType` as they are in the file: escapes kept and repeated
        /// values not split.
        cells: Vec<String>,
    },
    /// A line starting with `#`, which the standard has ingestors ignore (column headings).
    Comment {
        /// The whole line, `#` included.
        text: String,
    },
}

impl DsrRecord {
    /// The record type as the file spells it (`#` for a comment).
    pub fn record_type(&self) -> &str {
        match self {
            Self::Head(_) => "HEAD",
            Self::Summary(s) => s.kind.record_type(),
            Self::Release(_) => "RE01",
            Self::Resource(r) => r.kind.record_type(),
            Self::Usage(u) => u.kind.record_type(),
            Self::Foot(_) => "FOOT",
            Self::Other { record_type, .. } => record_type,
            Self::Comment { .. } => "#",
        }
    }
}

/// `HEAD`: who reports to whom, for which period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// Column 2 `MessageVersion`, `dsrf/` + the versions of DSR Parts 1, 2 and 8.
    pub message_version: String,
    /// Column 3 `Profile`, always [`PROFILE`].
    pub profile: String,
    /// Column 4 `ProfileVersion`, always [`PROFILE_VERSION`].
    pub profile_version: String,
    /// Column 5 `MessageId`, unique per sender.
    pub message_id: String,
    /// Column 6 `MessageCreatedDateTime`, ISO 8601 as given.
    pub message_created_date_time: String,
    /// Column 7 `FileNumber`, from 1.
    pub file_number: u64,
    /// Column 8 `NumberOfFiles` of the report.
    pub number_of_files: u64,
    /// Column 9 `UsageStartDate`, `YYYY[-MM[-DD]]`.
    pub usage_start_date: String,
    /// Column 10 `UsageEndDate`, `YYYY[-MM[-DD]]`.
    pub usage_end_date: String,
    /// Column 11 `SenderPartyId`, the DSP's DDEX Party ID (`PADPIDA…`).
    pub sender_party_id: String,
    /// Column 12 `SenderName`.
    pub sender_name: String,
    /// Column 13 `ServiceDescription`.
    pub service_description: Option<String>,
    /// Column 14 `RecipientPartyId` (`PADPIDA…`); absent when the report has several
    /// recipients.
    pub recipient_party_id: Option<String>,
    /// Column 15 `RecipientName`.
    pub recipient_name: Option<String>,
    /// Column 16 `RepresentedRepertoire` (repeated).
    pub represented_repertoire: Vec<String>,
}

/// Which summary record type a [`Summary`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SummaryKind {
    /// `SY01.01`, basic summary (15 columns).
    Sy0101,
    /// `SY02.02`, summary with the rights controller's allocation (22 columns).
    #[default]
    Sy0202,
}

impl SummaryKind {
    /// `SY01.01` or `SY02.02`.
    pub fn record_type(self) -> &'static str {
        match self {
            Self::Sy0101 => "SY01.01",
            Self::Sy0202 => "SY02.02",
        }
    }

    fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Sy0101 => SY0101_COLUMNS,
            Self::Sy0202 => SY0202_COLUMNS,
        }
    }
}

/// `SY01.01` or `SY02.02`: the totals of one sales context (commercial model, use type,
/// territory, service), which the usage records add up to.
///
/// Columns 1–9, 11 and 12 are common to both; the others exist in one type only (noted per
/// field) and are `None`/empty for the other one, and ignored by [`DsrWriter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The record type.
    pub kind: SummaryKind,
    /// Column 2 `SummaryRecordId`, which usage records name.
    pub summary_record_id: String,
    /// Column 3 `DistributionChannel`.
    pub distribution_channel: Option<String>,
    /// Column 4 `DistributionChannelDPID` (`PADPIDA…`).
    pub distribution_channel_dpid: Option<String>,
    /// Column 5 `CommercialModel` (AVS `CommercialModelType`, e.g. `SubscriptionModel`).
    pub commercial_model: String,
    /// Column 6 `UseType` (AVS, e.g. `OnDemandStream`).
    pub use_type: String,
    /// Column 7 `Territory` (ISO 3166-1 alpha-2 or a TIS code, as given).
    pub territory: String,
    /// Column 8 `ServiceDescription`; mandatory in `SY02.02`.
    pub service_description: Option<String>,
    /// Column 9 `Usages`.
    pub usages: u64,
    /// `SY01.01` column 10 `Subscribers` (an `xs:decimal` there).
    pub subscribers: Option<Decimal>,
    /// `SY02.02` column 10 `Users`.
    pub users: Option<u64>,
    /// Column 11 `CurrencyOfReporting` (ISO 4217) of the revenue columns.
    pub currency_of_reporting: String,
    /// Column 12 `NetRevenue` of the DSP for this context.
    pub net_revenue: Decimal,
    /// `SY01.01` column 13 `IndirectNetRevenue`.
    pub indirect_net_revenue: Option<Decimal>,
    /// `SY02.02` column 13 `RightsController`.
    pub rights_controller: Option<String>,
    /// `SY02.02` column 14 `RightsControllerPartyId` (`ns::id`).
    pub rights_controller_party_id: Option<String>,
    /// `SY02.02` column 15 `AllocatedUsages` (repeated).
    pub allocated_usages: Vec<Decimal>,
    /// `SY02.02` column 16 `AllocatedRevenue` (repeated): the amount payable to the rights
    /// controller.
    pub allocated_revenue: Vec<Decimal>,
    /// `SY02.02` column 17 `AllocatedNetRevenue`.
    pub allocated_net_revenue: Option<Decimal>,
    /// `SY02.02` column 18 `RightsType` (AVS `RightsCoverage`).
    pub rights_type: Option<String>,
    /// `SY02.02` column 19 `ContentCategory` (mandatory there).
    pub content_category: Option<String>,
    /// `SY01.01` column 14, `SY02.02` column 20 `CurrencyOfTransaction` (ISO 4217).
    pub currency_of_transaction: Option<String>,
    /// `SY01.01` column 15, `SY02.02` column 21 `ExchangeRate` from the currency of
    /// transaction into the currency of reporting.
    pub exchange_rate: Option<Decimal>,
    /// `SY02.02` column 22 `RightsTypePercentage`.
    pub rights_type_percentage: Option<Decimal>,
}

/// `RE01`: the head release of a block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    /// Column 2 `BlockId`.
    pub block_id: String,
    /// Column 3 `ReleaseReference`, unique in the block; usage records name it in
    /// `TransactedRelease`.
    pub release_reference: String,
    /// Column 4 `DspReleaseId`, the DSP's own id.
    pub dsp_release_id: String,
    /// Column 5 `ProprietaryReleaseId` (repeated, `ns::id`).
    pub proprietary_release_id: Vec<String>,
    /// Column 6 `CatalogNumber`.
    pub catalog_number: Option<String>,
    /// Column 7 `ICPN` (UPC or EAN, 12 to 14 digits).
    pub icpn: Option<String>,
    /// Column 8 `DisplayArtistName`.
    pub display_artist_name: String,
    /// Column 9 `DisplayArtistPartyId` (`ns::id`).
    pub display_artist_party_id: Option<String>,
    /// Column 10 `Title`.
    pub title: String,
    /// Column 11 `SubTitle`.
    pub sub_title: Option<String>,
    /// Column 12 `ReleaseType` (AVS, e.g. `Album`).
    pub release_type: Option<String>,
    /// Column 13 `Label`.
    pub label: Option<String>,
    /// Column 14 `PLine`.
    pub p_line: Option<String>,
    /// Column 15 `DataProvider`.
    pub data_provider: Option<String>,
}

/// Which resource record type a [`Resource`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `AS01.01`, without musical work data (12 columns; may be followed by `MW01.01`s).
    As0101,
    /// `AS02.02`, with the work's writers and publishers (22 columns).
    #[default]
    As0202,
}

impl ResourceKind {
    /// `AS01.01` or `AS02.02`.
    pub fn record_type(self) -> &'static str {
        match self {
            Self::As0101 => "AS01.01",
            Self::As0202 => "AS02.02",
        }
    }

    fn columns(self) -> &'static [&'static str] {
        match self {
            Self::As0101 => AS0101_COLUMNS,
            Self::As0202 => AS0202_COLUMNS,
        }
    }
}

/// `AS01.01` or `AS02.02`: a sound recording or video used in a block.
///
/// Columns 1–11 are common; `AS01.01` ends with `IsMasterRecording` (column 12), `AS02.02`
/// has the musical work in columns 12–21 (empty for `AS01.01`) and `IsMasterRecording` in 22.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// The record type.
    pub kind: ResourceKind,
    /// Column 2 `BlockId`.
    pub block_id: String,
    /// Column 3 `ResourceReference`, unique in the block; usage records name it in
    /// `TransactedResource`.
    pub resource_reference: String,
    /// Column 4 `DspResourceId`, the DSP's own id.
    pub dsp_resource_id: String,
    /// Column 5 `ISRC` (repeated).
    pub isrc: Vec<String>,
    /// Column 6 `Title`.
    pub title: String,
    /// Column 7 `SubTitle`.
    pub sub_title: Option<String>,
    /// Column 8 `DisplayArtistName`.
    pub display_artist_name: String,
    /// Column 9 `DisplayArtistPartyId` (`ns::id`).
    pub display_artist_party_id: Option<String>,
    /// Column 10 `Duration`, `xs:duration` as given (`PT3M25S`).
    pub duration: Option<String>,
    /// Column 11 `ResourceType` (AVS, e.g. `SoundRecording`).
    pub resource_type: String,
    /// `AS02.02` column 12 `ISWC`.
    pub iswc: Option<String>,
    /// `AS02.02` column 13 `ComposerAuthor` (repeated).
    pub composer_author: Vec<String>,
    /// `AS02.02` column 14 `ComposerAuthorPartyId` (repeated, `ns::id`, in the order of the
    /// names; an empty value for a writer without one).
    pub composer_author_party_id: Vec<String>,
    /// `AS02.02` column 15 `Arranger` (repeated).
    pub arranger: Vec<String>,
    /// `AS02.02` column 16 `ArrangerPartyId` (repeated).
    pub arranger_party_id: Vec<String>,
    /// `AS02.02` column 17 `MusicPublisher` (repeated).
    pub music_publisher: Vec<String>,
    /// `AS02.02` column 18 `MusicPublisherPartyId` (repeated).
    pub music_publisher_party_id: Vec<String>,
    /// `AS02.02` column 19 `WorkContributor` (repeated).
    pub work_contributor: Vec<String>,
    /// `AS02.02` column 20 `WorkContributorPartyId` (repeated).
    pub work_contributor_party_id: Vec<String>,
    /// `AS02.02` column 21 `ProprietaryWorkId` (`ns::id`).
    pub proprietary_work_id: Option<String>,
    /// `AS01.01` column 12, `AS02.02` column 22 `IsMasterRecording`.
    pub is_master_recording: Option<bool>,
}

/// Which usage record type a [`Usage`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UsageKind {
    /// `SU01`, sales (downloads): usages, returns, upgrade flag (12 columns).
    Su01,
    /// `SU02`, streams (10 columns).
    #[default]
    Su02,
}

impl UsageKind {
    /// `SU01` or `SU02`.
    pub fn record_type(self) -> &'static str {
        match self {
            Self::Su01 => "SU01",
            Self::Su02 => "SU02",
        }
    }

    fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Su01 => SU01_COLUMNS,
            Self::Su02 => SU02_COLUMNS,
        }
    }
}

/// `SU01` or `SU02`: how often a release or resource of the block was used in the sales
/// context of a summary record.
///
/// The territory, commercial model, use type and currency are those of the summary record
/// named by `summary_record_id`; the ISRC and DSP id are those of the `AS..` record named by
/// `transacted_resource` (or the `RE..` record named by `transacted_release`). Exactly one of
/// the two references is set. Columns 1–7 are common.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// The record type.
    pub kind: UsageKind,
    /// Column 2 `BlockId`.
    pub block_id: String,
    /// Column 3 `SummaryRecordId` of the summary record this usage details.
    pub summary_record_id: String,
    /// Column 4 `SalesTransactionId`, the DSP's id of the transaction.
    pub sales_transaction_id: String,
    /// Column 5 `TransactedRelease`: a `ReleaseReference` of the block.
    pub transacted_release: Option<String>,
    /// Column 6 `TransactedResource`: a `ResourceReference` of the block.
    pub transacted_resource: Option<String>,
    /// Column 7 `IsRoyaltyBearing` (mandatory in `SU01`).
    pub is_royalty_bearing: Option<bool>,
    /// `SU01` column 8 `SalesUpgrade` (mandatory there).
    pub sales_upgrade: Option<bool>,
    /// `SU01` column 9 `Usages`, or `SU02` column 8 `NumberOfStreams`.
    pub usages: u64,
    /// `SU01` column 10 `Returns` (mandatory there).
    pub returns: Option<u64>,
    /// `SU01` column 11, `SU02` column 9 `PriceConsumerPaidExcSalesTax`, per transaction, in
    /// the summary record's currency.
    pub price_consumer_paid_exc_sales_tax: Option<Decimal>,
    /// `SU01` column 12, `SU02` column 10 `PromotionalActivity`.
    pub promotional_activity: Option<String>,
}

/// `FOOT`: what the file holds, for the completeness check (which the reader does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Foot {
    /// Column 2 `NumberOfLinesInFile`, every line including HEAD, FOOT and comments.
    pub number_of_lines_in_file: u64,
    /// Column 3 `NumberOfLinesInReport`, over all files (mandatory in the last one).
    pub number_of_lines_in_report: Option<u64>,
    /// Column 4 `NumberOfSummaryRecords`.
    pub number_of_summary_records: u64,
    /// Column 5 `NumberOfBlocksInFile`.
    pub number_of_blocks_in_file: u64,
    /// Column 6 `NumberOfBlocksInReport`, over all files (mandatory in the last one).
    pub number_of_blocks_in_report: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Cells

/// Splits a line at the tabs that are not escaped.
fn split_cells(line: &str) -> Vec<&str> {
    let bytes = line.as_bytes();
    let mut cells = Vec::with_capacity(24);
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\t' => {
                cells.push(&line[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    cells.push(&line[start.min(line.len())..]);
    cells
}

/// A raw cell of a record read as [`DsrRecord::Other`], unescaped as one value.
fn cell_value(raw: &str) -> String {
    unescape_values(raw).map_or_else(|_| raw.to_owned(), |values| values.join("|"))
}

/// The values of a non-empty cell: split at unescaped `|`, escapes resolved.
fn unescape_values(raw: &str) -> Result<Vec<String>, &'static str> {
    if !raw.contains(['\\', '|']) {
        return Ok(vec![raw.to_owned()]);
    }
    let mut values = Vec::new();
    let mut value = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | '|' | '\t')) => value.push(escaped),
                Some(_) => return Err("a backslash may only escape a tab, \"|\" or \"\\\""),
                None => return Err("ends in a lone backslash"),
            },
            '|' => values.push(std::mem::take(&mut value)),
            _ => value.push(c),
        }
    }
    values.push(value);
    Ok(values)
}

fn is_isrc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[..2].iter().all(u8::is_ascii_alphabetic)
        && b[2..5].iter().all(u8::is_ascii_alphanumeric)
        && b[5..].iter().all(u8::is_ascii_digit)
}

fn is_icpn(s: &str) -> bool {
    (12..=14).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_iswc(s: &str) -> bool {
    s.len() == 11 && s.starts_with('T') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

fn is_dpid(s: &str) -> bool {
    s.strip_prefix("PADPIDA")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn is_namespaced(s: &str) -> bool {
    s.contains("::")
}

fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (the schema's `ddex_IsoDate`).
fn is_iso_date(s: &str) -> bool {
    let digits = |part: &str, n: usize| part.len() == n && part.bytes().all(|b| b.is_ascii_digit());
    let mut parts = s.split('-');
    let year = parts.next().is_some_and(|p| digits(p, 4));
    let rest: Vec<&str> = parts.collect();
    year && rest.len() <= 2 && rest.iter().all(|p| digits(p, 2))
}

/// The cells of one record, read by 1-based column number.
struct Cells<'a> {
    line: u64,
    record_type: &'static str,
    columns: &'static [&'static str],
    raw: Vec<&'a str>,
}

impl Cells<'_> {
    fn error(&self, column: usize, problem: impl Into<String>) -> DsrError {
        DsrError::in_cell(
            self.line,
            cell_ref(self.record_type, self.columns, column),
            problem,
        )
    }

    fn raw(&self, column: usize) -> &str {
        self.raw[column - 1]
    }

    fn required<T>(&self, column: usize, value: Option<T>) -> Result<T, DsrError> {
        value.ok_or_else(|| self.error(column, "empty, but the column is mandatory"))
    }

    fn list(&self, column: usize) -> Result<Vec<String>, DsrError> {
        let raw = self.raw(column);
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        unescape_values(raw)
            .map_err(|problem| self.error(column, format!("{}: {problem}", shown(raw))))
    }

    fn opt_text(&self, column: usize) -> Result<Option<String>, DsrError> {
        let mut values = self.list(column)?;
        if values.len() > 1 {
            return Err(self.error(
                column,
                format!(
                    "{}: an unescaped \"|\" in a single-valued cell",
                    shown(self.raw(column))
                ),
            ));
        }
        Ok(values.pop())
    }

    fn text(&self, column: usize) -> Result<String, DsrError> {
        let value = self.opt_text(column)?;
        self.required(column, value)
    }

    fn check(
        &self,
        column: usize,
        value: &str,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Result<(), DsrError> {
        if valid(value) {
            Ok(())
        } else {
            Err(self.error(column, format!("{} is not {what}", shown(value))))
        }
    }

    fn opt_text_if(
        &self,
        column: usize,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Result<Option<String>, DsrError> {
        let value = self.opt_text(column)?;
        if let Some(value) = &value {
            self.check(column, value, valid, what)?;
        }
        Ok(value)
    }

    fn text_if(
        &self,
        column: usize,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Result<String, DsrError> {
        let value = self.opt_text_if(column, valid, what)?;
        self.required(column, value)
    }

    fn list_if(
        &self,
        column: usize,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Result<Vec<String>, DsrError> {
        let values = self.list(column)?;
        // An empty value keeps the positions of a parallel list (names and their ids).
        for value in values.iter().filter(|v| !v.is_empty()) {
            self.check(column, value, valid, what)?;
        }
        Ok(values)
    }

    fn opt_count(&self, column: usize) -> Result<Option<u64>, DsrError> {
        let raw = self.raw(column);
        if raw.is_empty() {
            return Ok(None);
        }
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error(
                column,
                format!("{} is not a non-negative integer", shown(raw)),
            ));
        }
        raw.parse()
            .map(Some)
            .map_err(|_| self.error(column, format!("{} is too large", shown(raw))))
    }

    fn count(&self, column: usize) -> Result<u64, DsrError> {
        let value = self.opt_count(column)?;
        self.required(column, value)
    }

    fn parse_decimal(&self, column: usize, raw: &str) -> Result<Decimal, DsrError> {
        raw.parse()
            .map_err(|e: DecimalError| self.error(column, format!("{} {e}", shown(raw))))
    }

    fn opt_decimal(&self, column: usize) -> Result<Option<Decimal>, DsrError> {
        match self.raw(column) {
            "" => Ok(None),
            raw => self.parse_decimal(column, raw).map(Some),
        }
    }

    fn decimal(&self, column: usize) -> Result<Decimal, DsrError> {
        let value = self.opt_decimal(column)?;
        self.required(column, value)
    }

    fn decimals(&self, column: usize) -> Result<Vec<Decimal>, DsrError> {
        let raw = self.raw(column);
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        raw.split('|')
            .map(|value| self.parse_decimal(column, value))
            .collect()
    }

    fn opt_bool(&self, column: usize) -> Result<Option<bool>, DsrError> {
        let raw = self.raw(column);
        // xs:boolean is `true`, `false`, `1` or `0`; DSPs also capitalise.
        if raw.is_empty() {
            Ok(None)
        } else if raw.eq_ignore_ascii_case("true") || raw == "1" {
            Ok(Some(true))
        } else if raw.eq_ignore_ascii_case("false") || raw == "0" {
            Ok(Some(false))
        } else {
            Err(self.error(
                column,
                format!("{} is not a boolean (true or false)", shown(raw)),
            ))
        }
    }

    fn boolean(&self, column: usize) -> Result<bool, DsrError> {
        let value = self.opt_bool(column)?;
        self.required(column, value)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing one line

const DPID: &str = "a DDEX Party ID (PADPIDA…)";
const NAMESPACED: &str = "a namespaced id (ns::id)";
const CURRENCY: &str = "an ISO 4217 currency code";
const DATE: &str = "a date YYYY[-MM[-DD]]";

fn parse_head(c: &Cells<'_>) -> Result<Head, DsrError> {
    let message_version = c.text(2)?;
    if !message_version.starts_with("dsrf/") {
        return Err(c.error(
            2,
            format!("{} does not start with \"dsrf/\"", shown(&message_version)),
        ));
    }
    let profile = c.text(3)?;
    if profile != PROFILE {
        return Err(c.error(
            3,
            format!(
                "{}: only the {PROFILE} (multiple-record blocks) is read",
                shown(&profile)
            ),
        ));
    }
    let profile_version = c.text(4)?;
    if profile_version != PROFILE_VERSION {
        return Err(c.error(
            4,
            format!(
                "{}: the columns read here are those of version {PROFILE_VERSION}",
                shown(&profile_version)
            ),
        ));
    }
    let file_number = c.count(7)?;
    let number_of_files = c.count(8)?;
    if file_number == 0 || file_number > number_of_files {
        return Err(c.error(
            7,
            format!("{file_number} is not between 1 and NumberOfFiles ({number_of_files})"),
        ));
    }
    Ok(Head {
        message_version,
        profile,
        profile_version,
        message_id: c.text(5)?,
        message_created_date_time: c.text(6)?,
        file_number,
        number_of_files,
        usage_start_date: c.text_if(9, is_iso_date, DATE)?,
        usage_end_date: c.text_if(10, is_iso_date, DATE)?,
        sender_party_id: c.text_if(11, is_dpid, DPID)?,
        sender_name: c.text(12)?,
        service_description: c.opt_text(13)?,
        recipient_party_id: c.opt_text_if(14, is_dpid, DPID)?,
        recipient_name: c.opt_text(15)?,
        represented_repertoire: c.list(16)?,
    })
}

fn parse_summary(c: &Cells<'_>, kind: SummaryKind) -> Result<Summary, DsrError> {
    let common = Summary {
        kind,
        summary_record_id: c.text(2)?,
        distribution_channel: c.opt_text(3)?,
        distribution_channel_dpid: c.opt_text_if(4, is_dpid, DPID)?,
        commercial_model: c.text(5)?,
        use_type: c.text(6)?,
        territory: c.text(7)?,
        service_description: c.opt_text(8)?,
        usages: c.count(9)?,
        currency_of_reporting: c.text_if(11, is_currency, CURRENCY)?,
        net_revenue: c.decimal(12)?,
        ..Summary::default()
    };
    Ok(match kind {
        SummaryKind::Sy0101 => Summary {
            subscribers: c.opt_decimal(10)?,
            indirect_net_revenue: c.opt_decimal(13)?,
            currency_of_transaction: c.opt_text_if(14, is_currency, CURRENCY)?,
            exchange_rate: c.opt_decimal(15)?,
            ..common
        },
        SummaryKind::Sy0202 => Summary {
            service_description: Some(c.required(8, common.service_description.clone())?),
            users: c.opt_count(10)?,
            rights_controller: c.opt_text(13)?,
            rights_controller_party_id: c.opt_text_if(14, is_namespaced, NAMESPACED)?,
            allocated_usages: c.decimals(15)?,
            allocated_revenue: c.decimals(16)?,
            allocated_net_revenue: c.opt_decimal(17)?,
            rights_type: c.opt_text(18)?,
            content_category: Some(c.text(19)?),
            currency_of_transaction: c.opt_text_if(20, is_currency, CURRENCY)?,
            exchange_rate: c.opt_decimal(21)?,
            rights_type_percentage: c.opt_decimal(22)?,
            ..common
        },
    })
}

fn parse_release(c: &Cells<'_>) -> Result<Release, DsrError> {
    Ok(Release {
        block_id: c.text(2)?,
        release_reference: c.text(3)?,
        dsp_release_id: c.text(4)?,
        proprietary_release_id: c.list_if(5, is_namespaced, NAMESPACED)?,
        catalog_number: c.opt_text(6)?,
        icpn: c.opt_text_if(7, is_icpn, "an ICPN (12 to 14 digits)")?,
        display_artist_name: c.text(8)?,
        display_artist_party_id: c.opt_text_if(9, is_namespaced, NAMESPACED)?,
        title: c.text(10)?,
        sub_title: c.opt_text(11)?,
        release_type: c.opt_text(12)?,
        label: c.opt_text(13)?,
        p_line: c.opt_text(14)?,
        data_provider: c.opt_text(15)?,
    })
}

fn parse_resource(c: &Cells<'_>, kind: ResourceKind) -> Result<Resource, DsrError> {
    let common = Resource {
        kind,
        block_id: c.text(2)?,
        resource_reference: c.text(3)?,
        dsp_resource_id: c.text(4)?,
        isrc: c.list_if(5, is_isrc, "an ISRC (CCXXXYYNNNNN)")?,
        title: c.text(6)?,
        sub_title: c.opt_text(7)?,
        display_artist_name: c.text(8)?,
        display_artist_party_id: c.opt_text_if(9, is_namespaced, NAMESPACED)?,
        duration: c.opt_text(10)?,
        resource_type: c.text(11)?,
        ..Resource::default()
    };
    Ok(match kind {
        ResourceKind::As0101 => Resource {
            is_master_recording: c.opt_bool(12)?,
            ..common
        },
        ResourceKind::As0202 => Resource {
            iswc: c.opt_text_if(12, is_iswc, "an ISWC (T + 10 digits)")?,
            composer_author: c.list(13)?,
            composer_author_party_id: c.list_if(14, is_namespaced, NAMESPACED)?,
            arranger: c.list(15)?,
            arranger_party_id: c.list_if(16, is_namespaced, NAMESPACED)?,
            music_publisher: c.list(17)?,
            music_publisher_party_id: c.list_if(18, is_namespaced, NAMESPACED)?,
            work_contributor: c.list(19)?,
            work_contributor_party_id: c.list_if(20, is_namespaced, NAMESPACED)?,
            proprietary_work_id: c.opt_text_if(21, is_namespaced, NAMESPACED)?,
            is_master_recording: c.opt_bool(22)?,
            ..common
        },
    })
}

fn parse_usage(c: &Cells<'_>, kind: UsageKind) -> Result<Usage, DsrError> {
    let transacted_release = c.opt_text(5)?;
    let transacted_resource = c.opt_text(6)?;
    match (&transacted_release, &transacted_resource) {
        (None, None) => {
            return Err(c.error(5, "empty, and so is TransactedResource: one must be given"))
        }
        (Some(_), Some(_)) => {
            return Err(c.error(6, "given, and so is TransactedRelease: only one may be"))
        }
        _ => {}
    }
    let common = Usage {
        kind,
        block_id: c.text(2)?,
        summary_record_id: c.text(3)?,
        sales_transaction_id: c.text(4)?,
        transacted_release,
        transacted_resource,
        ..Usage::default()
    };
    Ok(match kind {
        UsageKind::Su01 => Usage {
            is_royalty_bearing: Some(c.boolean(7)?),
            sales_upgrade: Some(c.boolean(8)?),
            usages: c.count(9)?,
            returns: Some(c.count(10)?),
            price_consumer_paid_exc_sales_tax: c.opt_decimal(11)?,
            promotional_activity: c.opt_text(12)?,
            ..common
        },
        UsageKind::Su02 => Usage {
            is_royalty_bearing: c.opt_bool(7)?,
            usages: c.count(8)?,
            price_consumer_paid_exc_sales_tax: c.opt_decimal(9)?,
            promotional_activity: c.opt_text(10)?,
            ..common
        },
    })
}

fn parse_foot(c: &Cells<'_>) -> Result<Foot, DsrError> {
    Ok(Foot {
        number_of_lines_in_file: c.count(2)?,
        number_of_lines_in_report: c.opt_count(3)?,
        number_of_summary_records: c.count(4)?,
        number_of_blocks_in_file: c.count(5)?,
        number_of_blocks_in_report: c.opt_count(6)?,
    })
}

/// Parses one line (without its line end) into a record.
fn parse_line(line_number: u64, bytes: &[u8]) -> Result<DsrRecord, DsrError> {
    let line = std::str::from_utf8(bytes).map_err(|e| {
        DsrError::at(
            line_number,
            format!("not UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
        )
    })?;
    if line.is_empty() {
        return Err(DsrError::at(
            line_number,
            "empty line (a DSR has no empty records)",
        ));
    }
    if line.starts_with('#') {
        return Ok(DsrRecord::Comment {
            text: line.to_owned(),
        });
    }
    let raw = split_cells(line);
    let record_type = raw[0];
    if let Some(&(_, width, _)) = OTHER_RECORD_TYPES
        .iter()
        .find(|(t, _, _)| *t == record_type)
    {
        if raw.len() != width {
            return Err(DsrError::at(
                line_number,
                format!(
                    "{record_type} record has {} cells, the profile defines {width}",
                    raw.len()
                ),
            ));
        }
        return Ok(DsrRecord::Other {
            record_type: record_type.to_owned(),
            cells: raw[1..].iter().map(|&cell| cell.to_owned()).collect(),
        });
    }
    if SRB_RECORD_TYPES.contains(&record_type) {
        return Err(DsrError::at(
            line_number,
            format!(
                "record type {record_type:?} belongs to the single-record-block variant \
                 (BasicAudioProfileSRB), which is not read"
            ),
        ));
    }
    let (record_type, columns): (&'static str, &'static [&'static str]) = match record_type {
        "HEAD" => ("HEAD", HEAD_COLUMNS),
        "SY01.01" => ("SY01.01", SY0101_COLUMNS),
        "SY02.02" => ("SY02.02", SY0202_COLUMNS),
        "RE01" => ("RE01", RE01_COLUMNS),
        "AS01.01" => ("AS01.01", AS0101_COLUMNS),
        "AS02.02" => ("AS02.02", AS0202_COLUMNS),
        "SU01" => ("SU01", SU01_COLUMNS),
        "SU02" => ("SU02", SU02_COLUMNS),
        "FOOT" => ("FOOT", FOOT_COLUMNS),
        other => {
            return Err(DsrError::at(
                line_number,
                format!("unknown record type {}", shown(other)),
            ))
        }
    };
    if raw.len() != columns.len() {
        let missing = match columns.get(raw.len()) {
            Some(name) if raw.len() < columns.len() => {
                format!(", the first missing one is column {} {name}", raw.len() + 1)
            }
            _ => String::new(),
        };
        return Err(DsrError::at(
            line_number,
            format!(
                "{record_type} record has {} cells, the profile defines {}{missing}",
                raw.len(),
                columns.len()
            ),
        ));
    }
    let cells = Cells {
        line: line_number,
        record_type,
        columns,
        raw,
    };
    Ok(match record_type {
        "HEAD" => DsrRecord::Head(parse_head(&cells)?),
        "SY01.01" => DsrRecord::Summary(parse_summary(&cells, SummaryKind::Sy0101)?),
        "SY02.02" => DsrRecord::Summary(parse_summary(&cells, SummaryKind::Sy0202)?),
        "RE01" => DsrRecord::Release(parse_release(&cells)?),
        "AS01.01" => DsrRecord::Resource(parse_resource(&cells, ResourceKind::As0101)?),
        "AS02.02" => DsrRecord::Resource(parse_resource(&cells, ResourceKind::As0202)?),
        "SU01" => DsrRecord::Usage(parse_usage(&cells, UsageKind::Su01)?),
        "SU02" => DsrRecord::Usage(parse_usage(&cells, UsageKind::Su02)?),
        _ => DsrRecord::Foot(parse_foot(&cells)?),
    })
}

// ---------------------------------------------------------------------------------------------
// Reader

/// Where the reader is in the file's structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but comments read yet.
    BeforeHead,
    /// HEAD read; summary records may follow.
    Summaries,
    /// The first block has begun.
    Blocks,
    /// FOOT read: the file must end.
    Ended,
}

/// How far the current block has got, in the order of the schema's `BasicAudioProfileBlock`:
/// `RE01?`, then (`AS01.01 MW01.01*` | `AS02.02`)+, then `RE02*`, then (`SU01` | `SU02`)+.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    #[default]
    Start,
    Release,
    Resources,
    SubReleases,
    Usages,
}

/// The current block: its id, stage and the references usage records may name. Cleared at
/// each new block, so it holds one block's worth at most.
#[derive(Debug, Default)]
struct Block {
    active: bool,
    id: String,
    stage: Stage,
    /// Whether an `MW01.01` may follow (the last resource record was `AS01.01` or `MW01.01`).
    works_allowed: bool,
    releases: HashSet<String>,
    resources: HashSet<String>,
}

/// A streaming reader of a DSR flat file (Basic Audio Profile 1.2): an iterator of records,
/// one line at a time.
///
/// It yields every line (comments too), checks each cell against the schema's column lists,
/// and checks the file's structure as it goes; at the end it has checked FOOT's counts against
/// what it read. The first error ends the iteration: a report with a bad line is rejected
/// whole, since its totals could not be reconciled anyway.
///
/// # Examples
///
/// ```no_run
/// use mhc_label::dsr::{DsrReader, DsrRecord};
///
/// let file = std::fs::File::open("DSR_PADPIDA2024010101M_PADPIDA2011072101T_Premium_2024-03_DE_1of1_20240402T100000.tsv.gz")?;
/// let mut streams = 0;
/// for record in DsrReader::open(std::io::BufReader::new(file))? {
///     if let DsrRecord::Usage(usage) = record? {
///         streams += usage.usages;
///     }
/// }
/// println!("{streams} streams");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DsrReader<R> {
    inner: R,
    buf: Vec<u8>,
    max_line_bytes: usize,
    line: u64,
    phase: Phase,
    done: bool,
    /// Whether HEAD says the report is this one file (then FOOT's report totals are checked).
    single_file: bool,
    /// The ids of the summary records: a handful per report (one per sales context).
    summary_ids: HashSet<String>,
    blocks: u64,
    block: Block,
}

impl<R: BufRead> DsrReader<R> {
    /// A reader of uncompressed DSR text; [`DsrReader::open`] also takes gzip.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            max_line_bytes: MAX_LINE_BYTES,
            line: 0,
            phase: Phase::BeforeHead,
            done: false,
            single_file: false,
            summary_ids: HashSet::new(),
            blocks: 0,
            block: Block::default(),
        }
    }

    /// Sets the bound on one line (default [`MAX_LINE_BYTES`]); a longer line is an error,
    /// found without reading the line whole.
    pub fn with_max_line_bytes(mut self, max_line_bytes: usize) -> Self {
        self.max_line_bytes = max_line_bytes;
        self
    }

    /// The number of lines read so far (the line of the last record yielded).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Reads the next line into `buf`; `false` at the end of the input.
    fn read_line(&mut self) -> Result<bool, DsrError> {
        self.buf.clear();
        let mut started = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let line = if started { self.line } else { self.line + 1 };
                    return Err(DsrError::at(line, format!("reading: {e}")));
                }
            };
            if available.is_empty() {
                return Ok(started);
            }
            if !started {
                started = true;
                self.line += 1;
            }
            let (take, found) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (end, true),
                None => (available.len(), false),
            };
            if self.buf.len() + take > self.max_line_bytes {
                return Err(DsrError::at(
                    self.line,
                    format!(
                        "longer than {} bytes (is this a DSR flat file?)",
                        self.max_line_bytes
                    ),
                ));
            }
            self.buf.extend_from_slice(&available[..take]);
            self.inner.consume(take + usize::from(found));
            if found {
                return Ok(true);
            }
        }
    }

    fn next_record(&mut self) -> Result<Option<DsrRecord>, DsrError> {
        if !self.read_line()? {
            self.at_end()?;
            return Ok(None);
        }
        let mut bytes = &self.buf[..];
        if self.line == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let record = parse_line(self.line, bytes)?;
        self.admit(&record)?;
        Ok(Some(record))
    }

    fn at_end(&self) -> Result<(), DsrError> {
        match self.phase {
            Phase::Ended => Ok(()),
            _ if self.line == 0 => Err(DsrError::at(1, "empty file: no HEAD record")),
            _ => Err(DsrError::at(
                self.line,
                "the file ends without a FOOT record (truncated?)",
            )),
        }
    }

    fn structure_error(&self, problem: impl Into<String>) -> DsrError {
        DsrError::at(self.line, problem)
    }

    /// Checks a record's place in the file and its references, and keeps count for FOOT.
    fn admit(&mut self, record: &DsrRecord) -> Result<(), DsrError> {
        let what = match record {
            DsrRecord::Comment { .. } => "a comment".to_owned(),
            _ => format!("{} record", record.record_type()),
        };
        if self.phase == Phase::Ended {
            return Err(
                self.structure_error(format!("{what} after FOOT (FOOT must be the last record)"))
            );
        }
        match record {
            DsrRecord::Comment { .. } => Ok(()),
            DsrRecord::Head(head) => {
                if self.phase != Phase::BeforeHead {
                    return Err(self.structure_error("a second HEAD record"));
                }
                self.phase = Phase::Summaries;
                self.single_file = head.number_of_files == 1;
                Ok(())
            }
            _ if self.phase == Phase::BeforeHead => Err(self.structure_error(format!(
                "{what} before HEAD (HEAD must be the first record)"
            ))),
            DsrRecord::Summary(summary) => {
                let cell = cell_ref(summary.kind.record_type(), summary.kind.columns(), 2);
                self.admit_summary(&summary.summary_record_id, cell)
            }
            DsrRecord::Other { record_type, cells } => self.admit_other(record_type, cells),
            DsrRecord::Release(release) => {
                self.enter_block(&release.block_id)?;
                self.advance(Stage::Release, "RE01", false)?;
                let cell = cell_ref("RE01", RE01_COLUMNS, 3);
                self.add_reference(true, &release.release_reference, cell)
            }
            DsrRecord::Resource(resource) => {
                let kind = resource.kind;
                self.enter_block(&resource.block_id)?;
                self.advance(
                    Stage::Resources,
                    kind.record_type(),
                    kind == ResourceKind::As0101,
                )?;
                let cell = cell_ref(kind.record_type(), kind.columns(), 3);
                self.add_reference(false, &resource.resource_reference, cell)
            }
            DsrRecord::Usage(usage) => self.admit_usage(usage),
            DsrRecord::Foot(foot) => self.admit_foot(foot),
        }
    }

    /// Admits an `SY04.01`, `SY05.02`, `MW01.01` or `RE02` record.
    fn admit_other(&mut self, record_type: &str, cells: &[String]) -> Result<(), DsrError> {
        let known = OTHER_RECORD_TYPES
            .iter()
            .find(|(t, _, _)| *t == record_type);
        let (Some(&(record_type, _, summary)), Some(first)) = (known, cells.first()) else {
            return Err(self.structure_error(format!(
                "{} is not a record type of the profile",
                shown(record_type)
            )));
        };
        // Column 2: the SummaryRecordId of a summary record, the BlockId of a block record.
        let first = cell_value(first);
        if summary {
            let cell = CellRef {
                record_type,
                column: 2,
                name: "SummaryRecordId",
            };
            return self.admit_summary(&first, cell);
        }
        self.enter_block(&first)?;
        if record_type != "RE02" {
            return self.advance(Stage::Resources, record_type, false);
        }
        self.advance(Stage::SubReleases, record_type, false)?;
        let reference = cell_value(cells.get(1).map_or("", String::as_str));
        self.add_reference(true, &reference, cell_ref("RE02", RE02_COLUMNS, 3))
    }

    fn admit_summary(&mut self, id: &str, cell: CellRef) -> Result<(), DsrError> {
        if self.phase == Phase::Blocks {
            return Err(self.structure_error(
                "summary record after the first block (summary records come before all blocks)",
            ));
        }
        if !self.summary_ids.insert(id.to_owned()) {
            return Err(DsrError::in_cell(
                self.line,
                cell,
                format!("{} is the id of an earlier summary record", shown(id)),
            ));
        }
        Ok(())
    }

    /// Starts a new block when the block id changes (closing the previous one).
    fn enter_block(&mut self, block_id: &str) -> Result<(), DsrError> {
        if self.phase == Phase::Summaries {
            if self.summary_ids.is_empty() {
                return Err(self.structure_error("a block before any summary record"));
            }
            self.phase = Phase::Blocks;
        }
        if self.block.active && self.block.id == block_id {
            return Ok(());
        }
        self.close_block()?;
        self.block.active = true;
        self.block.id.clear();
        self.block.id.push_str(block_id);
        self.block.stage = Stage::Start;
        self.block.works_allowed = false;
        self.block.releases.clear();
        self.block.resources.clear();
        self.blocks += 1;
        Ok(())
    }

    fn close_block(&mut self) -> Result<(), DsrError> {
        if !self.block.active {
            return Ok(());
        }
        self.block.active = false;
        let missing = match self.block.stage {
            Stage::Usages => return Ok(()),
            Stage::Start | Stage::Release => "resource (AS01.01 or AS02.02)",
            Stage::Resources | Stage::SubReleases => "usage (SU01 or SU02)",
        };
        Err(self.structure_error(format!(
            "block {} ended before this line without a {missing} record",
            shown(&self.block.id)
        )))
    }

    /// Moves the current block to `stage`, refusing records out of the schema's order.
    fn advance(&mut self, stage: Stage, record_type: &str, as0101: bool) -> Result<(), DsrError> {
        let block = &mut self.block;
        let in_order = match stage {
            Stage::Release => block.stage == Stage::Start,
            // MW01.01 arrives as a `Resources` record with `as0101` false: see `admit_other`.
            Stage::Resources if record_type == "MW01.01" => {
                block.stage == Stage::Resources && block.works_allowed
            }
            Stage::Resources => block.stage <= Stage::Resources,
            Stage::SubReleases => matches!(block.stage, Stage::Resources | Stage::SubReleases),
            Stage::Usages => block.stage >= Stage::Resources,
            Stage::Start => false,
        };
        if !in_order {
            let block_id = shown(&block.id);
            return Err(self.structure_error(format!(
                "{record_type} record out of order in block {block_id} (a block is RE01, then \
                 AS01.01 with its MW01.01s or AS02.02, then RE02, then SU01/SU02)"
            )));
        }
        block.stage = stage;
        if stage == Stage::Resources && record_type != "MW01.01" {
            block.works_allowed = as0101;
        }
        Ok(())
    }

    /// Records a release or resource reference of the current block, which must be new.
    fn add_reference(
        &mut self,
        release: bool,
        reference: &str,
        cell: CellRef,
    ) -> Result<(), DsrError> {
        let set = if release {
            &mut self.block.releases
        } else {
            &mut self.block.resources
        };
        if set.insert(reference.to_owned()) {
            return Ok(());
        }
        Err(DsrError::in_cell(
            self.line,
            cell,
            format!(
                "{} is already used in block {}",
                shown(reference),
                shown(&self.block.id)
            ),
        ))
    }

    fn admit_usage(&mut self, usage: &Usage) -> Result<(), DsrError> {
        let (record_type, columns) = (usage.kind.record_type(), usage.kind.columns());
        self.enter_block(&usage.block_id)?;
        self.advance(Stage::Usages, record_type, false)?;
        if !self.summary_ids.contains(&usage.summary_record_id) {
            return Err(DsrError::in_cell(
                self.line,
                cell_ref(record_type, columns, 3),
                format!(
                    "{} names no summary record",
                    shown(&usage.summary_record_id)
                ),
            ));
        }
        let (column, reference, known) =
            match (&usage.transacted_release, &usage.transacted_resource) {
                (Some(release), _) => (5, release, self.block.releases.contains(release)),
                (None, Some(resource)) => (6, resource, self.block.resources.contains(resource)),
                (None, None) => return Ok(()), // refused by `parse_usage`
            };
        if known {
            return Ok(());
        }
        Err(DsrError::in_cell(
            self.line,
            cell_ref(record_type, columns, column),
            format!(
                "{} names no {} record of block {}",
                shown(reference),
                if column == 5 { "release" } else { "resource" },
                shown(&self.block.id)
            ),
        ))
    }

    fn admit_foot(&mut self, foot: &Foot) -> Result<(), DsrError> {
        if self.summary_ids.is_empty() {
            return Err(self.structure_error("FOOT without any summary record"));
        }
        self.close_block()?;
        self.phase = Phase::Ended;
        let mut checks = vec![
            (2, foot.number_of_lines_in_file, self.line, "lines"),
            (
                4,
                foot.number_of_summary_records,
                self.summary_ids.len() as u64,
                "summary records",
            ),
            (5, foot.number_of_blocks_in_file, self.blocks, "blocks"),
        ];
        if self.single_file {
            if let Some(lines) = foot.number_of_lines_in_report {
                checks.push((3, lines, self.line, "lines"));
            }
            if let Some(blocks) = foot.number_of_blocks_in_report {
                checks.push((6, blocks, self.blocks, "blocks"));
            }
        }
        for (column, said, counted, what) in checks {
            if said != counted {
                return Err(DsrError::in_cell(
                    self.line,
                    cell_ref("FOOT", FOOT_COLUMNS, column),
                    format!("says {said} {what}, the file has {counted}"),
                ));
            }
        }
        Ok(())
    }
}

impl<R: BufRead> Iterator for DsrReader<R> {
    type Item = Result<DsrRecord, DsrError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<R: BufRead> std::iter::FusedIterator for DsrReader<R> {}

type Prefixed<R> = Chain<Cursor<Vec<u8>>, R>;

#[derive(Debug)]
enum Input<R> {
    Plain(Prefixed<R>),
    Gzip(BufReader<MultiGzDecoder<Prefixed<R>>>),
}

/// The input of a reader made by [`DsrReader::open`]: the bytes as given, or gunzipped.
#[derive(Debug)]
pub struct DsrInput<R>(Input<R>);

impl<R> DsrInput<R> {
    /// Whether the input is gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        matches!(self.0, Input::Gzip(_))
    }
}

impl<R: BufRead> Read for DsrInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Input::Plain(r) => r.read(buf),
            Input::Gzip(r) => r.read(buf),
        }
    }
}

impl<R: BufRead> BufRead for DsrInput<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match &mut self.0 {
            Input::Plain(r) => r.fill_buf(),
            Input::Gzip(r) => r.fill_buf(),
        }
    }

    fn consume(&mut self, amount: usize) {
        match &mut self.0 {
            Input::Plain(r) => r.consume(amount),
            Input::Gzip(r) => r.consume(amount),
        }
    }
}

impl<R: BufRead> DsrReader<DsrInput<R>> {
    /// A reader of a DSR file as stored: gzip-compressed (`.tsv.gz`, recognised by its magic
    /// bytes `1f 8b`, whatever the name says) or not.
    ///
    /// # Errors
    /// Reading the first two bytes failed.
    pub fn open(mut inner: R) -> Result<Self, DsrError> {
        let mut magic = Vec::with_capacity(2);
        (&mut inner)
            .take(2)
            .read_to_end(&mut magic)
            .map_err(|e| DsrError::at(1, format!("reading: {e}")))?;
        let gzip = magic == [0x1f, 0x8b];
        let input = Cursor::new(magic).chain(inner);
        Ok(Self::new(DsrInput(if gzip {
            Input::Gzip(BufReader::new(MultiGzDecoder::new(input)))
        } else {
            Input::Plain(input)
        })))
    }
}

// ---------------------------------------------------------------------------------------------
// Writer

/// One line being written: cells appended with their escapes.
struct LineBuf<'a> {
    out: &'a mut String,
    /// Why the line cannot be written, if it cannot.
    invalid: Option<&'static str>,
}

impl<'a> LineBuf<'a> {
    fn new(out: &'a mut String, record_type: &str) -> Self {
        out.clear();
        out.push_str(record_type);
        Self { out, invalid: None }
    }

    fn escaped(&mut self, value: &str) {
        for c in value.chars() {
            match c {
                '\\' | '\t' | '|' => {
                    self.out.push('\\');
                    self.out.push(c);
                }
                '\n' | '\r' => self.invalid = Some("a value contains a line break"),
                _ => self.out.push(c),
            }
        }
    }

    fn text(&mut self, value: &str) {
        self.out.push('\t');
        self.escaped(value);
    }

    fn opt(&mut self, value: Option<&str>) {
        self.text(value.unwrap_or(""));
    }

    fn list(&mut self, values: &[String]) {
        if let [only] = values {
            if only.is_empty() {
                // It would read back as no value at all.
                self.invalid = Some("a list holds a single empty value");
            }
        }
        self.out.push('\t');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.out.push('|');
            }
            self.escaped(value);
        }
    }

    fn display(&mut self, value: Option<impl fmt::Display>) {
        self.out.push('\t');
        if let Some(value) = value {
            use fmt::Write as _;
            let _ = write!(self.out, "{value}");
        }
    }

    fn decimals(&mut self, values: &[Decimal]) {
        self.out.push('\t');
        for (i, value) in values.iter().enumerate() {
            use fmt::Write as _;
            let _ = write!(self.out, "{}{value}", if i > 0 { "|" } else { "" });
        }
    }

    fn finish(self) -> io::Result<()> {
        if let Some(problem) = self.invalid {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, problem));
        }
        self.out.push('\n');
        Ok(())
    }
}

/// Writes a DSR flat file (Basic Audio Profile 1.2) record by record, in the columns of the
/// schema, and ends it with a `FOOT` that counts what was written. For tests and benchmarks:
/// it writes what it is given, in the order given; [`DsrReader`] is the one that checks.
///
/// It holds one line at a time, so it streams reports of any size; wrap a file in a
/// [`io::BufWriter`] (or a gzip encoder).
///
/// # Examples
///
/// ```
/// use mhc_label::dsr::{DsrReader, DsrWriter, Head, Resource, Summary, Usage};
///
/// let mut writer = DsrWriter::new(Vec::new());
/// writer.head(&Head {
///     message_version: "dsrf/1.4/1.2/1.2".into(),
///     profile: "BasicAudioProfile".into(),
///     profile_version: "1.2".into(),
///     message_id: "M1".into(),
///     message_created_date_time: "2024-04-02T10:00:00Z".into(),
///     file_number: 1,
///     number_of_files: 1,
///     usage_start_date: "2024-03-01".into(),
///     usage_end_date: "2024-03-31".into(),
///     sender_party_id: "PADPIDA2011072101T".into(),
///     sender_name: "ExampleDSP".into(),
///     ..Head::default()
/// })?;
/// writer.summary(&Summary {
///     summary_record_id: "S1".into(),
///     commercial_model: "SubscriptionModel".into(),
///     use_type: "OnDemandStream".into(),
///     territory: "DE".into(),
///     service_description: Some("Premium".into()),
///     usages: 7,
///     currency_of_reporting: "EUR".into(),
///     net_revenue: "0.021".parse()?,
///     content_category: Some("Music".into()),
///     ..Summary::default()
/// })?;
/// writer.resource(&Resource {
///     block_id: "B1".into(),
///     resource_reference: "R1".into(),
///     dsp_resource_id: "t1".into(),
///     isrc: vec!["DEA122400001".into()],
///     title: "Dawn".into(),
///     display_artist_name: "The Examples".into(),
///     resource_type: "SoundRecording".into(),
///     ..Resource::default()
/// })?;
/// writer.usage(&Usage {
///     block_id: "B1".into(),
///     summary_record_id: "S1".into(),
///     sales_transaction_id: "T1".into(),
///     transacted_resource: Some("R1".into()),
///     usages: 7,
///     ..Usage::default()
/// })?;
/// let bytes = writer.finish()?;
/// let records = DsrReader::new(&bytes[..]).collect::<Result<Vec<_>, _>>()?;
/// assert_eq!(records.len(), 5); // with the FOOT that `finish` wrote
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DsrWriter<W: Write> {
    out: W,
    line: String,
    lines: u64,
    summaries: u64,
    blocks: u64,
    block_id: Option<String>,
}

impl<W: Write> DsrWriter<W> {
    /// A writer to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: String::new(),
            lines: 0,
            summaries: 0,
            blocks: 0,
            block_id: None,
        }
    }

    /// The number of lines written so far.
    pub fn lines_written(&self) -> u64 {
        self.lines
    }

    fn emit(&mut self) -> io::Result<()> {
        self.out.write_all(self.line.as_bytes())?;
        self.lines += 1;
        Ok(())
    }

    fn count_block(&mut self, block_id: &str) {
        if self.block_id.as_deref() != Some(block_id) {
            self.blocks += 1;
            self.block_id = Some(block_id.to_owned());
        }
    }

    /// Writes any record but `FOOT`, which [`DsrWriter::finish`] writes.
    ///
    /// # Errors
    /// Writing failed, a value holds a line break, or the record is a `FOOT`.
    pub fn write(&mut self, record: &DsrRecord) -> io::Result<()> {
        match record {
            DsrRecord::Head(head) => self.head(head),
            DsrRecord::Summary(summary) => self.summary(summary),
            DsrRecord::Release(release) => self.release(release),
            DsrRecord::Resource(resource) => self.resource(resource),
            DsrRecord::Usage(usage) => self.usage(usage),
            DsrRecord::Other { record_type, cells } => self.other(record_type, cells),
            DsrRecord::Comment { text } => self.comment(text),
            DsrRecord::Foot(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "FOOT is written by DsrWriter::finish",
            )),
        }
    }

    /// Writes `HEAD`.
    ///
    /// # Errors
    /// Writing failed, or a value holds a line break.
    pub fn head(&mut self, h: &Head) -> io::Result<()> {
        let mut l = LineBuf::new(&mut self.line, "HEAD");
        l.text(&h.message_version);
        l.text(&h.profile);
        l.text(&h.profile_version);
        l.text(&h.message_id);
        l.text(&h.message_created_date_time);
        l.display(Some(h.file_number));
        l.display(Some(h.number_of_files));
        l.text(&h.usage_start_date);
        l.text(&h.usage_end_date);
        l.text(&h.sender_party_id);
        l.text(&h.sender_name);
        l.opt(h.service_description.as_deref());
        l.opt(h.recipient_party_id.as_deref());
        l.opt(h.recipient_name.as_deref());
        l.list(&h.represented_repertoire);
        l.finish()?;
        self.emit()
    }

    /// Writes `SY01.01` or `SY02.02`, as `s.kind` says.
    ///
    /// # Errors
    /// Writing failed, or a value holds a line break.
    pub fn summary(&mut self, s: &Summary) -> io::Result<()> {
        let mut l = LineBuf::new(&mut self.line, s.kind.record_type());
        l.text(&s.summary_record_id);
        l.opt(s.distribution_channel.as_deref());
        l.opt(s.distribution_channel_dpid.as_deref());
        l.text(&s.commercial_model);
        l.text(&s.use_type);
        l.text(&s.territory);
        l.opt(s.service_description.as_deref());
        l.display(Some(s.usages));
        match s.kind {
            SummaryKind::Sy0101 => {
                l.display(s.subscribers);
                l.text(&s.currency_of_reporting);
                l.display(Some(s.net_revenue));
                l.display(s.indirect_net_revenue);
                l.opt(s.currency_of_transaction.as_deref());
                l.display(s.exchange_rate);
            }
            SummaryKind::Sy0202 => {
                l.display(s.users);
                l.text(&s.currency_of_reporting);
                l.display(Some(s.net_revenue));
                l.opt(s.rights_controller.as_deref());
                l.opt(s.rights_controller_party_id.as_deref());
                l.decimals(&s.allocated_usages);
                l.decimals(&s.allocated_revenue);
                l.display(s.allocated_net_revenue);
                l.opt(s.rights_type.as_deref());
                l.opt(s.content_category.as_deref());
                l.opt(s.currency_of_transaction.as_deref());
                l.display(s.exchange_rate);
                l.display(s.rights_type_percentage);
            }
        }
        l.finish()?;
        self.summaries += 1;
        self.emit()
    }

    /// Writes `RE01`.
    ///
    /// # Errors
    /// Writing failed, or a value holds a line break.
    pub fn release(&mut self, r: &Release) -> io::Result<()> {
        let mut l = LineBuf::new(&mut self.line, "RE01");
        l.text(&r.block_id);
        l.text(&r.release_reference);
        l.text(&r.dsp_release_id);
        l.list(&r.proprietary_release_id);
        l.opt(r.catalog_number.as_deref());
        l.opt(r.icpn.as_deref());
        l.text(&r.display_artist_name);
        l.opt(r.display_artist_party_id.as_deref());
        l.text(&r.title);
        l.opt(r.sub_title.as_deref());
        l.opt(r.release_type.as_deref());
        l.opt(r.label.as_deref());
        l.opt(r.p_line.as_deref());
        l.opt(r.data_provider.as_deref());
        l.finish()?;
        self.count_block(&r.block_id);
        self.emit()
    }

    /// Writes `AS01.01` or `AS02.02`, as `r.kind` says.
    ///
    /// # Errors
    /// Writing failed, or a value holds a line break.
    pub fn resource(&mut self, r: &Resource) -> io::Result<()> {
        let mut l = LineBuf::new(&mut self.line, r.kind.record_type());
        l.text(&r.block_id);
        l.text(&r.resource_reference);
        l.text(&r.dsp_resource_id);
        l.list(&r.isrc);
        l.text(&r.title);
        l.opt(r.sub_title.as_deref());
        l.text(&r.display_artist_name);
        l.opt(r.display_artist_party_id.as_deref());
        l.opt(r.duration.as_deref());
        l.text(&r.resource_type);
        if r.kind == ResourceKind::As0202 {
            l.opt(r.iswc.as_deref());
            l.list(&r.composer_author);
            l.list(&r.composer_author_party_id);
            l.list(&r.arranger);
            l.list(&r.arranger_party_id);
            l.list(&r.music_publisher);
            l.list(&r.music_publisher_party_id);
            l.list(&r.work_contributor);
            l.list(&r.work_contributor_party_id);
            l.opt(r.proprietary_work_id.as_deref());
        }
        l.display(r.is_master_recording);
        l.finish()?;
        self.count_block(&r.block_id);
        self.emit()
    }

    /// Writes `SU01` or `SU02`, as `u.kind` says.
    ///
    /// # Errors
    /// Writing failed, or a value holds a line break.
    pub fn usage(&mut self, u: &Usage) -> io::Result<()> {
        let mut l = LineBuf::new(&mut self.line, u.kind.record_type());
        l.text(&u.block_id);
        l.text(&u.summary_record_id);
        l.text(&u.sales_transaction_id);
        l.opt(u.transacted_release.as_deref());
        l.opt(u.transacted_resource.as_deref());
        l.display(u.is_royalty_bearing);
        if u.kind == UsageKind::Su01 {
            l.display(u.sales_upgrade);
            l.display(Some(u.usages));
            l.display(u.returns);
        } else {
            l.display(Some(u.usages));
        }
        l.display(u.price_consumer_paid_exc_sales_tax);
        l.opt(u.promotional_activity.as_deref());
        l.finish()?;
        self.count_block(&u.block_id);
        self.emit()
    }

    /// Writes a record type that is not modelled, its cells as they are (already escaped, as
    /// [`DsrRecord::Other`] holds them).
    ///
    /// # Errors
    /// Writing failed, or a cell holds a line break.
    pub fn other(&mut self, record_type: &str, cells: &[String]) -> io::Result<()> {
        if cells.iter().any(|cell| cell.contains(['\n', '\r'])) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cell contains a line break",
            ));
        }
        self.line.clear();
        self.line.push_str(record_type);
        for cell in cells {
            self.line.push('\t');
            self.line.push_str(cell);
        }
        self.line.push('\n');
        match OTHER_RECORD_TYPES
            .iter()
            .find(|(t, _, _)| *t == record_type)
        {
            Some((_, _, true)) => self.summaries += 1,
            Some((_, _, false)) => self.count_block(cells.first().map_or("", String::as_str)),
            None => {}
        }
        self.emit()
    }

    /// Writes a comment line; `text` must start with `#`.
    ///
    /// # Errors
    /// Writing failed, or `text` does not start with `#` or holds a line break.
    pub fn comment(&mut self, text: &str) -> io::Result<()> {
        if !text.starts_with('#') || text.contains(['\n', '\r']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a comment is one line starting with #",
            ));
        }
        self.line.clear();
        self.line.push_str(text);
        self.line.push('\n');
        self.emit()
    }

    /// Writes the `FOOT` of a single-file report (counting itself), flushes, and returns the
    /// output.
    ///
    /// # Errors
    /// Writing or flushing failed.
    pub fn finish(mut self) -> io::Result<W> {
        let lines = self.lines + 1;
        let mut l = LineBuf::new(&mut self.line, "FOOT");
        l.display(Some(lines));
        l.display(Some(lines));
        l.display(Some(self.summaries));
        l.display(Some(self.blocks));
        l.display(Some(self.blocks));
        l.finish()?;
        self.emit()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

// ---------------------------------------------------------------------------------------------
// File names

/// A DSR file name that does not follow the naming convention.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DSR file name {name:?}: {problem}")]
pub struct FileNameError {
    /// The name as given.
    pub name: String,
    /// What is wrong.
    pub problem: String,
}

/// The parts of a DSR file name (DSR Part 1, "File Naming Convention"):
/// `DSR_MessageRecipient_MessageSender_ServiceDescription_Period_Territory_XofY_Created.tsv`,
/// optionally `.gz`. The recipient (the label) comes first; the recipient, the territory and
/// `XofY` may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsrFileName {
    /// The recipient's name or DDEX Party ID; empty for a report to several recipients.
    pub recipient: String,
    /// The sender's (the DSP's) name or DDEX Party ID.
    pub sender: String,
    /// The service, e.g. `Premium` (tiers joined by dashes).
    pub service_description: String,
    /// The reporting period: `2024`, `2024-03`, `2024-Q1`, `2024-03-01--2024-03-31`, ...
    pub period: String,
    /// The territory, e.g. `DE`, or what sender and recipient agreed.
    pub territory: String,
    /// `x` of `XofY`: this file's number, when given.
    pub file_number: Option<u64>,
    /// `y` of `XofY`: the number of files of the report, when given.
    pub number_of_files: Option<u64>,
    /// When the report was created, `YYYYMMDDThhmmss` (basic ISO 8601, no zone).
    pub created: String,
    /// Whether the name ends in `.gz`.
    pub gzip: bool,
}

impl DsrFileName {
    /// Parses a file name (without directories).
    ///
    /// # Errors
    /// [`FileNameError`] naming the part that does not fit.
    pub fn parse(name: &str) -> Result<Self, FileNameError> {
        let error = |problem: String| FileNameError {
            name: name.to_owned(),
            problem,
        };
        let (stem, gzip) = if let Some(stem) = name.strip_suffix(".tsv.gz") {
            (stem, true)
        } else if let Some(stem) = name.strip_suffix(".tsv") {
            (stem, false)
        } else {
            return Err(error("does not end in .tsv or .tsv.gz".into()));
        };
        let parts: Vec<&str> = stem.split('_').collect();
        let [prefix, recipient, sender, service, period, territory, x_of_y, created] = parts[..]
        else {
            return Err(error(format!(
                "has {} parts separated by \"_\", DSR_Recipient_Sender_Service_Period_\
                 Territory_XofY_Created has 8",
                parts.len()
            )));
        };
        if prefix != "DSR" {
            return Err(error("does not start with DSR_".into()));
        }
        for (part, what) in [(sender, "sender"), (service, "service"), (period, "period")] {
            if part.is_empty() {
                return Err(error(format!("the {what} is empty")));
            }
        }
        let (file_number, number_of_files) = if x_of_y.is_empty() {
            (None, None)
        } else {
            let parsed = x_of_y
                .split_once("of")
                .and_then(|(x, y)| Some((x.parse::<u64>().ok()?, y.parse::<u64>().ok()?)))
                .filter(|&(x, y)| x >= 1 && x <= y);
            let (x, y) = parsed.ok_or_else(|| error(format!("{x_of_y:?} is not XofY")))?;
            (Some(x), Some(y))
        };
        let b = created.as_bytes();
        let basic_iso = b.len() >= 15
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit);
        if !basic_iso {
            return Err(error(format!("{created:?} is not YYYYMMDDThhmmss")));
        }
        Ok(Self {
            recipient: recipient.to_owned(),
            sender: sender.to_owned(),
            service_description: service.to_owned(),
            period: period.to_owned(),
            territory: territory.to_owned(),
            file_number,
            number_of_files,
            created: created.to_owned(),
            gzip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small report written by hand in the schema's column orders: HEAD, a comment, an
    /// SY02.02 and an SY01.01, one block with RE01, AS02.02, AS01.01, two SU02 and an SU01,
    /// and FOOT.
    const SAMPLE: &str = concat!(
        // HEAD: RecordType MessageVersion Profile ProfileVersion MessageId
        // MessageCreatedDateTime FileNumber NumberOfFiles UsageStartDate UsageEndDate
        // SenderPartyId SenderName ServiceDescription RecipientPartyId RecipientName
        // RepresentedRepertoire
        "HEAD\tdsrf/1.4/1.2/1.2\tBasicAudioProfile\t1.2\tMSG-0001\t2024-04-02T10:00:00Z\t1\t1\t",
        "2024-03-01\t2024-03-31\tPADPIDA2011072101T\tExampleDSP\tPremium\tPADPIDA2024010101M\t",
        "MHC Records\t\n",
        "#SU02\tBlockId\tSummaryRecordId\tSalesTransactionId\tTransactedRelease\t",
        "TransactedResource\tIsRoyaltyBearing\tNumberOfStreams\tPriceConsumerPaidExcSalesTax\t",
        "PromotionalActivity\n",
        // SY02.02: SummaryRecordId DistributionChannel DistributionChannelDPID CommercialModel
        // UseType Territory ServiceDescription Usages Users CurrencyOfReporting NetRevenue
        // RightsController RightsControllerPartyId AllocatedUsages AllocatedRevenue
        // AllocatedNetRevenue RightsType ContentCategory CurrencyOfTransaction ExchangeRate
        // RightsTypePercentage
        "SY02.02\tS1\t\t\tSubscriptionModel\tOnDemandStream\tDE\tPremium\t1500\t800\tEUR\t",
        "6.123456789\tMHC Records\tDPID::PADPIDA2024010101M\t1500\t3.06|0.5\t3.56\t",
        "MakeAvailableRight\tMusic\tEUR\t1\t\n",
        // SY01.01: SummaryRecordId DistributionChannel DistributionChannelDPID CommercialModel
        // UseType Territory ServiceDescription Usages Subscribers CurrencyOfReporting
        // NetRevenue IndirectNetRevenue CurrencyOfTransaction ExchangeRate
        "SY01.01\tS2\t\t\tPayAsYouGoModel\tPermanentDownload\tDE\t\t100\t\tEUR\t99.\t\tUSD\t",
        "0.9215\n",
        // RE01: BlockId ReleaseReference DspReleaseId ProprietaryReleaseId CatalogNumber ICPN
        // DisplayArtistName DisplayArtistPartyId Title SubTitle ReleaseType Label PLine
        // DataProvider
        "RE01\tB1\tREL1\tdsp-rel-1\tMHC::rel-42\tCAT-1\t123456789012\tThe Examples\t\t",
        "First Light\t\tAlbum\tMHC Records\t2024 MHC Records\t\n",
        // AS02.02: BlockId ResourceReference DspResourceId ISRC Title SubTitle
        // DisplayArtistName DisplayArtistPartyId Duration ResourceType ISWC ComposerAuthor
        // ComposerAuthorPartyId Arranger ArrangerPartyId MusicPublisher MusicPublisherPartyId
        // WorkContributor WorkContributorPartyId ProprietaryWorkId IsMasterRecording
        "AS02.02\tB1\tRES1\tdsp-trk-1\tDEA122400001|DEA122400099\tDawn \\| Dusk\t\t",
        "The Examples\t\tPT3M25S\tSoundRecording\tT1234567890\tAnn Example|Bob Example\t",
        "|ISNI::0000000081266409\t\t\t\t\t\t\t\ttrue\n",
        // AS01.01: BlockId ResourceReference DspResourceId ISRC Title SubTitle
        // DisplayArtistName DisplayArtistPartyId Duration ResourceType IsMasterRecording
        "AS01.01\tB1\tRES2\tdsp-trk-2\tDEA122400002\tNoon\t\tThe Examples\t\tPT2M\t",
        "SoundRecording\t\n",
        // SU02: BlockId SummaryRecordId SalesTransactionId TransactedRelease
        // TransactedResource IsRoyaltyBearing NumberOfStreams PriceConsumerPaidExcSalesTax
        // PromotionalActivity
        "SU02\tB1\tS1\tTX1\t\tRES1\ttrue\t1000\t\t\n",
        "SU02\tB1\tS1\tTX2\t\tRES2\t\t500\t0.00\t\n",
        // SU01: BlockId SummaryRecordId SalesTransactionId TransactedRelease
        // TransactedResource IsRoyaltyBearing SalesUpgrade Usages Returns
        // PriceConsumerPaidExcSalesTax PromotionalActivity
        "SU01\tB1\tS2\tTX3\tREL1\t\tfalse\tfalse\t100\t0\t0.99\t\n",
        // FOOT: NumberOfLinesInFile NumberOfLinesInReport NumberOfSummaryRecords
        // NumberOfBlocksInFile NumberOfBlocksInReport
        "FOOT\t11\t11\t2\t1\t1\n",
    );

    fn read_all(bytes: &[u8]) -> Result<Vec<DsrRecord>, DsrError> {
        DsrReader::new(bytes).collect()
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// The first error reading `text`, displayed.
    fn first_error(text: &str) -> String {
        match read_all(text.as_bytes()) {
            Ok(_) => panic!("read without error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reads_the_hand_written_sample() {
        let records = read_all(SAMPLE.as_bytes()).unwrap();
        assert_eq!(records.len(), 11);
        let DsrRecord::Head(head) = &records[0] else {
            panic!("{:?}", records[0])
        };
        assert_eq!(head.message_id, "MSG-0001");
        assert_eq!(head.sender_party_id, "PADPIDA2011072101T");
        assert_eq!(head.sender_name, "ExampleDSP");
        assert_eq!(
            head.recipient_party_id.as_deref(),
            Some("PADPIDA2024010101M")
        );
        assert_eq!(head.recipient_name.as_deref(), Some("MHC Records"));
        assert_eq!(
            (head.usage_start_date.as_str(), head.usage_end_date.as_str()),
            ("2024-03-01", "2024-03-31")
        );
        assert_eq!((head.file_number, head.number_of_files), (1, 1));
        assert!(head.represented_repertoire.is_empty());
        assert!(
            matches!(&records[1], DsrRecord::Comment { text } if text.starts_with("#SU02\tBlockId"))
        );

        let DsrRecord::Summary(sy02) = &records[2] else {
            panic!("{:?}", records[2])
        };
        assert_eq!(sy02.kind, SummaryKind::Sy0202);
        assert_eq!(sy02.summary_record_id, "S1");
        assert_eq!(sy02.commercial_model, "SubscriptionModel");
        assert_eq!(sy02.use_type, "OnDemandStream");
        assert_eq!(sy02.territory, "DE");
        assert_eq!((sy02.usages, sy02.users), (1500, Some(800)));
        assert_eq!(sy02.currency_of_reporting, "EUR");
        assert_eq!(sy02.net_revenue.nanos(), 6_123_456_789);
        assert_eq!(sy02.allocated_usages, vec![dec("1500")]);
        assert_eq!(sy02.allocated_revenue, vec![dec("3.06"), dec("0.5")]);
        assert_eq!(sy02.allocated_net_revenue, Some(dec("3.56")));
        assert_eq!(sy02.content_category.as_deref(), Some("Music"));
        assert_eq!(sy02.exchange_rate, Some(dec("1")));
        assert_eq!(sy02.rights_type_percentage, None);

        let DsrRecord::Summary(sy01) = &records[3] else {
            panic!("{:?}", records[3])
        };
        assert_eq!(sy01.kind, SummaryKind::Sy0101);
        assert_eq!(sy01.net_revenue, dec("99"));
        assert_eq!(sy01.service_description, None);
        assert_eq!(sy01.currency_of_transaction.as_deref(), Some("USD"));
        assert_eq!(sy01.exchange_rate.unwrap().nanos(), 921_500_000);

        assert_eq!(
            records[4],
            DsrRecord::Release(Release {
                block_id: "B1".into(),
                release_reference: "REL1".into(),
                dsp_release_id: "dsp-rel-1".into(),
                proprietary_release_id: vec!["MHC::rel-42".into()],
                catalog_number: Some("CAT-1".into()),
                icpn: Some("123456789012".into()),
                display_artist_name: "The Examples".into(),
                display_artist_party_id: None,
                title: "First Light".into(),
                sub_title: None,
                release_type: Some("Album".into()),
                label: Some("MHC Records".into()),
                p_line: Some("2024 MHC Records".into()),
                data_provider: None,
            })
        );

        let DsrRecord::Resource(as02) = &records[5] else {
            panic!("{:?}", records[5])
        };
        assert_eq!(as02.kind, ResourceKind::As0202);
        assert_eq!(as02.isrc, vec!["DEA122400001", "DEA122400099"]);
        assert_eq!(
            as02.title, "Dawn | Dusk",
            "an escaped pipe is part of the value"
        );
        assert_eq!(as02.duration.as_deref(), Some("PT3M25S"));
        assert_eq!(as02.iswc.as_deref(), Some("T1234567890"));
        assert_eq!(as02.composer_author, vec!["Ann Example", "Bob Example"]);
        assert_eq!(
            as02.composer_author_party_id,
            vec!["", "ISNI::0000000081266409"]
        );
        assert!(as02.arranger.is_empty());
        assert_eq!(as02.is_master_recording, Some(true));

        let DsrRecord::Resource(as01) = &records[6] else {
            panic!("{:?}", records[6])
        };
        assert_eq!(as01.kind, ResourceKind::As0101);
        assert_eq!(
            (
                as01.resource_reference.as_str(),
                as01.dsp_resource_id.as_str()
            ),
            ("RES2", "dsp-trk-2")
        );
        assert_eq!(as01.isrc, vec!["DEA122400002"]);
        assert_eq!(as01.is_master_recording, None);

        assert_eq!(
            records[7],
            DsrRecord::Usage(Usage {
                kind: UsageKind::Su02,
                block_id: "B1".into(),
                summary_record_id: "S1".into(),
                sales_transaction_id: "TX1".into(),
                transacted_release: None,
                transacted_resource: Some("RES1".into()),
                is_royalty_bearing: Some(true),
                sales_upgrade: None,
                usages: 1000,
                returns: None,
                price_consumer_paid_exc_sales_tax: None,
                promotional_activity: None,
            })
        );
        let DsrRecord::Usage(su02) = &records[8] else {
            panic!("{:?}", records[8])
        };
        assert_eq!(
            (su02.usages, su02.price_consumer_paid_exc_sales_tax),
            (500, Some(Decimal::ZERO))
        );
        assert_eq!(
            records[9],
            DsrRecord::Usage(Usage {
                kind: UsageKind::Su01,
                block_id: "B1".into(),
                summary_record_id: "S2".into(),
                sales_transaction_id: "TX3".into(),
                transacted_release: Some("REL1".into()),
                transacted_resource: None,
                is_royalty_bearing: Some(false),
                sales_upgrade: Some(false),
                usages: 100,
                returns: Some(0),
                price_consumer_paid_exc_sales_tax: Some(dec("0.99")),
                promotional_activity: None,
            })
        );
        assert_eq!(
            records[10],
            DsrRecord::Foot(Foot {
                number_of_lines_in_file: 11,
                number_of_lines_in_report: Some(11),
                number_of_summary_records: 2,
                number_of_blocks_in_file: 1,
                number_of_blocks_in_report: Some(1),
            })
        );
    }

    #[test]
    fn gzip_is_recognised_by_its_magic_bytes() {
        use flate2::write::GzEncoder;
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(SAMPLE.as_bytes()).unwrap();
        let compressed = gz.finish().unwrap();

        let reader = DsrReader::open(&compressed[..]).unwrap();
        assert!(reader.inner.is_gzip());
        let from_gzip: Vec<DsrRecord> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(from_gzip, read_all(SAMPLE.as_bytes()).unwrap());

        let plain = DsrReader::open(SAMPLE.as_bytes()).unwrap();
        assert!(!plain.inner.is_gzip());
        assert_eq!(plain.count(), 11);

        // A damaged stream is an error, not a short report.
        let truncated = &compressed[..compressed.len() / 2];
        let last = DsrReader::open(truncated).unwrap().last().unwrap();
        assert!(last.is_err(), "{last:?}");
    }

    #[test]
    fn crlf_and_a_byte_order_mark_are_accepted() {
        let crlf = format!("\u{feff}{}", SAMPLE.replace('\n', "\r\n"));
        assert_eq!(
            read_all(crlf.as_bytes()).unwrap(),
            read_all(SAMPLE.as_bytes()).unwrap()
        );
    }

    #[test]
    fn errors_name_the_line_and_the_column() {
        let bad_count = SAMPLE.replace("\tRES1\ttrue\t1000\t", "\tRES1\ttrue\tx\t");
        assert_eq!(
            first_error(&bad_count),
            "line 8 (SU02 column 8 NumberOfStreams): \"x\" is not a non-negative integer"
        );
        let bad_usages = SAMPLE.replace("\tfalse\tfalse\t100\t", "\tfalse\tfalse\t-1\t");
        assert_eq!(
            first_error(&bad_usages),
            "line 10 (SU01 column 9 Usages): \"-1\" is not a non-negative integer"
        );
        let too_precise = SAMPLE.replace("6.123456789", "6.1234567891");
        assert_eq!(
            first_error(&too_precise),
            "line 3 (SY02.02 column 12 NetRevenue): \"6.1234567891\" has more than 9 fractional digits"
        );
        let float = SAMPLE.replace("6.123456789", "6.1e3");
        assert_eq!(
            first_error(&float),
            "line 3 (SY02.02 column 12 NetRevenue): \"6.1e3\" is not a decimal number"
        );
        let bad_isrc = SAMPLE.replace("DEA122400099", "DE-A12-24-00099");
        assert_eq!(
            first_error(&bad_isrc),
            "line 6 (AS02.02 column 5 ISRC): \"DE-A12-24-00099\" is not an ISRC (CCXXXYYNNNNN)"
        );
        let unescaped = SAMPLE.replace("Dawn \\| Dusk", "Dawn | Dusk");
        assert_eq!(
            first_error(&unescaped),
            "line 6 (AS02.02 column 6 Title): \"Dawn | Dusk\": an unescaped \"|\" in a single-valued cell"
        );
        let missing = SAMPLE.replace("\tFirst Light\t", "\t\t");
        assert_eq!(
            first_error(&missing),
            "line 5 (RE01 column 10 Title): empty, but the column is mandatory"
        );
        let short = SAMPLE.replace("\t2024 MHC Records\t\n", "\t2024 MHC Records\n");
        assert_eq!(
            first_error(&short),
            "line 5: RE01 record has 14 cells, the profile defines 15, the first missing one is \
             column 15 DataProvider"
        );
        let unknown = SAMPLE.replace("SU01\t", "ZZ01\t");
        assert_eq!(
            first_error(&unknown),
            "line 10: unknown record type \"ZZ01\""
        );
        let srb = SAMPLE.replace("SU01\t", "SR02\t");
        assert!(first_error(&srb)
            .starts_with("line 10: record type \"SR02\" belongs to the single-record-block"));
        let dangling = SAMPLE.replace("\tTX2\t\tRES2\t", "\tTX2\t\tRES9\t");
        assert_eq!(
            first_error(&dangling),
            "line 9 (SU02 column 6 TransactedResource): \"RES9\" names no resource record of block \"B1\""
        );
        let no_summary = SAMPLE.replace("\tS2\tTX3\t", "\tS3\tTX3\t");
        assert_eq!(
            first_error(&no_summary),
            "line 10 (SU01 column 3 SummaryRecordId): \"S3\" names no summary record"
        );
        let both = SAMPLE.replace("\tTX3\tREL1\t\t", "\tTX3\tREL1\tRES1\t");
        assert_eq!(
            first_error(&both),
            "line 10 (SU01 column 6 TransactedResource): given, and so is TransactedRelease: only one may be"
        );
    }

    #[test]
    fn the_structure_and_the_footer_are_checked() {
        let wrong_count = SAMPLE.replace("FOOT\t11\t", "FOOT\t12\t");
        assert_eq!(
            first_error(&wrong_count),
            "line 11 (FOOT column 2 NumberOfLinesInFile): says 12 lines, the file has 11"
        );
        let truncated = &SAMPLE[..SAMPLE.find("FOOT").unwrap()];
        assert_eq!(
            first_error(truncated),
            "line 10: the file ends without a FOOT record (truncated?)"
        );
        let after_foot = format!("{SAMPLE}#trailing\n");
        assert_eq!(
            first_error(&after_foot),
            "line 12: a comment after FOOT (FOOT must be the last record)"
        );
        let no_head = &SAMPLE[SAMPLE.find('\n').unwrap() + 1..];
        assert_eq!(
            first_error(no_head),
            "line 2: SY02.02 record before HEAD (HEAD must be the first record)"
        );
        let empty_line = SAMPLE.replacen("\nRE01", "\n\nRE01", 1);
        assert_eq!(
            first_error(&empty_line),
            "line 5: empty line (a DSR has no empty records)"
        );
        // The usage records moved before the resources they name.
        let lines: Vec<&str> = SAMPLE.lines().collect();
        let reordered = [&lines[..5], &lines[7..10], &lines[5..7], &lines[10..]]
            .concat()
            .join("\n");
        assert!(
            first_error(&reordered).starts_with("line 6: SU02 record out of order in block \"B1\"")
        );
        assert_eq!(first_error(""), "line 1: empty file: no HEAD record");
        // Nothing is yielded after an error.
        let mut reader = DsrReader::new(wrong_count.as_bytes());
        assert!(reader.by_ref().any(|r| r.is_err()));
        assert!(reader.next().is_none());
    }

    #[test]
    fn an_overlong_line_is_refused_without_reading_it_whole() {
        // An endless line: reading it whole would never finish.
        let endless = io::BufReader::new(io::repeat(b'a'));
        let mut reader = DsrReader::new(endless).with_max_line_bytes(1024);
        let error = reader.next().unwrap().unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 1: longer than 1024 bytes (is this a DSR flat file?)"
        );
        assert!(reader.next().is_none());
        assert!(
            reader.buf.capacity() <= 2 * 1024 + 8 * 1024,
            "{}",
            reader.buf.capacity()
        );

        let long_title = SAMPLE.replace("First Light", &"x".repeat(1000));
        let mut reader = DsrReader::new(long_title.as_bytes()).with_max_line_bytes(512);
        let error = reader.find_map(Result::err).unwrap();
        assert_eq!(error.line, 5);
    }

    #[test]
    fn decimals_are_exact() {
        for (text, nanos) in [
            ("5", 5_000_000_000),
            ("5.", 5_000_000_000),
            ("5.0", 5_000_000_000),
            ("+1.25", 1_250_000_000),
            ("-0.5", -500_000_000),
            (".5", 500_000_000),
            ("0.000000001", 1),
            ("-0", 0),
            (
                "123456789012345678901.123456789",
                123_456_789_012_345_678_901_123_456_789,
            ),
        ] {
            assert_eq!(dec(text).nanos(), nanos, "{text}");
        }
        for text in [
            "",
            "-",
            ".",
            "1.2.3",
            "1e3",
            "1,5",
            " 1",
            "0x10",
            "0.0000000001",
        ] {
            assert!(text.parse::<Decimal>().is_err(), "{text:?}");
        }
        assert!("1".repeat(40).parse::<Decimal>().is_err());
        for (nanos, text) in [
            (0, "0"),
            (1_500_000_000, "1.5"),
            (-1, "-0.000000001"),
            (6_123_456_789, "6.123456789"),
            (-42_000_000_000, "-42"),
        ] {
            assert_eq!(Decimal::from_nanos(nanos).to_string(), text);
            assert_eq!(dec(text).nanos(), nanos);
        }
        assert_eq!(dec("0.1").checked_add(dec("0.2")), Some(dec("0.3")));
        assert_eq!(
            Decimal::from_nanos(i128::MAX).checked_add(dec("0.000000001")),
            None
        );
    }

    fn sample_head() -> Head {
        Head {
            message_version: "dsrf/1.4/1.2/1.2".into(),
            profile: PROFILE.into(),
            profile_version: PROFILE_VERSION.into(),
            message_id: "MSG-7".into(),
            message_created_date_time: "2024-04-02T10:00:00Z".into(),
            file_number: 1,
            number_of_files: 1,
            usage_start_date: "2024-03".into(),
            usage_end_date: "2024-03".into(),
            sender_party_id: "PADPIDA2011072101T".into(),
            sender_name: "Example\tDSP".into(),
            service_description: Some("Premium".into()),
            recipient_party_id: Some("PADPIDA2024010101M".into()),
            recipient_name: Some("MHC Records".into()),
            represented_repertoire: vec!["MHC|Classics".into(), "Back\\slash".into()],
        }
    }

    fn sample_summary() -> Summary {
        Summary {
            kind: SummaryKind::Sy0202,
            summary_record_id: "S1".into(),
            commercial_model: "SubscriptionModel".into(),
            use_type: "OnDemandStream".into(),
            territory: "DE".into(),
            service_description: Some("Premium".into()),
            usages: 0,
            users: Some(3),
            currency_of_reporting: "EUR".into(),
            net_revenue: dec("1234.5"),
            allocated_revenue: vec![dec("1"), dec("-0.25")],
            content_category: Some("Music".into()),
            ..Summary::default()
        }
    }

    /// Writes a report of `blocks` blocks of one RE01, one AS02.02 and `streams` SU02 records
    /// each, and returns what it wrote (but FOOT) for comparison when `keep` is set.
    fn write_report<W: Write>(
        out: W,
        blocks: u64,
        streams: u64,
        keep: bool,
    ) -> (W, Vec<DsrRecord>) {
        let mut kept = Vec::new();
        let mut writer = DsrWriter::new(out);
        let mut put = |writer: &mut DsrWriter<W>, record: DsrRecord| {
            writer.write(&record).unwrap();
            if keep {
                kept.push(record);
            }
        };
        put(&mut writer, DsrRecord::Head(sample_head()));
        put(&mut writer, DsrRecord::Summary(sample_summary()));
        for b in 0..blocks {
            let block_id = format!("B{b}");
            put(
                &mut writer,
                DsrRecord::Release(Release {
                    block_id: block_id.clone(),
                    release_reference: "1".into(),
                    dsp_release_id: format!("rel-{b}"),
                    icpn: Some(format!("{:012}", b)),
                    display_artist_name: "The Examples".into(),
                    title: format!("Album {b}"),
                    ..Release::default()
                }),
            );
            put(
                &mut writer,
                DsrRecord::Resource(Resource {
                    block_id: block_id.clone(),
                    resource_reference: "1".into(),
                    dsp_resource_id: format!("trk-{b}"),
                    isrc: vec![format!("DEA12{:07}", b % 10_000_000)],
                    title: format!("Track {b} | live"),
                    display_artist_name: "The Examples".into(),
                    duration: Some("PT3M".into()),
                    resource_type: "SoundRecording".into(),
                    composer_author: vec!["Ann".into(), "Bob".into()],
                    composer_author_party_id: vec!["".into(), "ISNI::0000000081266409".into()],
                    ..Resource::default()
                }),
            );
            for s in 0..streams {
                put(
                    &mut writer,
                    DsrRecord::Usage(Usage {
                        block_id: block_id.clone(),
                        summary_record_id: "S1".into(),
                        sales_transaction_id: format!("T{b}-{s}"),
                        transacted_resource: Some("1".into()),
                        usages: s + 1,
                        price_consumer_paid_exc_sales_tax: (s % 2 == 0)
                            .then(|| Decimal::from_nanos(i128::from(s) * 1_000)),
                        ..Usage::default()
                    }),
                );
            }
        }
        (writer.finish().unwrap(), kept)
    }

    #[test]
    fn what_the_writer_writes_the_reader_reads() {
        let (bytes, written) = write_report(Vec::new(), 3, 4, true);
        let mut read = read_all(&bytes).unwrap();
        let foot = read.pop().unwrap();
        assert_eq!(read, written);
        assert_eq!(
            foot,
            DsrRecord::Foot(Foot {
                number_of_lines_in_file: 2 + 3 * 6 + 1,
                number_of_lines_in_report: Some(2 + 3 * 6 + 1),
                number_of_summary_records: 1,
                number_of_blocks_in_file: 3,
                number_of_blocks_in_report: Some(3),
            })
        );

        // The hand-written sample survives a round trip byte for byte.
        let mut writer = DsrWriter::new(Vec::new());
        for record in read_all(SAMPLE.as_bytes()).unwrap() {
            if !matches!(record, DsrRecord::Foot(_)) {
                writer.write(&record).unwrap();
            }
        }
        let rewritten = String::from_utf8(writer.finish().unwrap()).unwrap();
        // Decimals come back in their shortest form.
        let canonical = SAMPLE
            .replace("\t99.\t", "\t99\t")
            .replace("\t500\t0.00\t", "\t500\t0\t");
        assert_eq!(rewritten, canonical);

        // A value the format cannot hold is refused, not written.
        let mut writer = DsrWriter::new(Vec::new());
        let head = Head {
            sender_name: "two\nlines".into(),
            ..sample_head()
        };
        assert!(writer.head(&head).is_err());
        assert!(writer.write(&DsrRecord::Foot(Foot::default())).is_err());
    }

    #[test]
    fn other_record_types_of_the_profile_are_passed_through() {
        let mw = "MW01.01\tB1\tw1\tT1234567890\tA Work\t\tAnn|Bob\t\t\t\t\t\t\t\t\t\n";
        let re02 = "RE02\tB1\tSUB1\tdsp-sub-1\t\tRES1\n";
        let text = SAMPLE
            .replace("SU02\tB1\tS1\tTX1", &format!("{re02}SU02\tB1\tS1\tTX1"))
            .replace("\tSoundRecording\t\n", &format!("\tSoundRecording\t\n{mw}"))
            .replace("\tTX3\tREL1\t", "\tTX3\tSUB1\t")
            .replace("FOOT\t11\t11\t", "FOOT\t13\t13\t");
        let records = read_all(text.as_bytes()).unwrap();
        let others: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                DsrRecord::Other { record_type, cells } => {
                    Some((record_type.as_str(), cells.len()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(others, vec![("MW01.01", 15), ("RE02", 5)]);

        // MW01.01 follows AS01.01 only.
        let misplaced = text.replace(&format!("\tSoundRecording\t\n{mw}"), "\tSoundRecording\t\n");
        let misplaced = misplaced.replace("\ttrue\n", &format!("\ttrue\n{mw}"));
        assert!(first_error(&misplaced).contains("MW01.01 record out of order in block \"B1\""));
    }

    #[test]
    fn a_large_report_streams_through_a_bounded_reader() {
        // 1,000 blocks of RE01 + AS02.02 + 98 SU02: 100,003 lines.
        let (bytes, _) = write_report(Vec::new(), 1_000, 98, false);
        let mut reader = DsrReader::new(&bytes[..]);
        let (mut usages, mut streams) = (0u64, 0u64);
        while let Some(record) = reader.next() {
            if let DsrRecord::Usage(usage) = record.unwrap() {
                usages += 1;
                streams += usage.usages;
            }
            // Nothing accumulates: one line, one block's references, the summary ids.
            assert!(reader_is_bounded(&reader));
        }
        assert_eq!(reader.line(), 100_003);
        assert_eq!(usages, 98_000);
        assert_eq!(streams, 1_000 * (98 * 99 / 2));
    }

    fn reader_is_bounded<R>(reader: &DsrReader<R>) -> bool {
        reader.buf.capacity() <= 4 * 1024
            && reader.block.releases.len() <= 1
            && reader.block.resources.len() <= 1
            && reader.summary_ids.len() <= 1
    }

    #[test]
    #[ignore = "stress: a million usage lines through a pipe (run by name)"]
    fn a_million_usage_lines_stream_from_writer_to_reader() {
        let (pipe_reader, pipe_writer) = io::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            write_report(io::BufWriter::new(pipe_writer), 10_000, 100, false);
        });
        let mut reader = DsrReader::new(io::BufReader::new(pipe_reader));
        let mut usages = 0u64;
        for record in reader.by_ref() {
            if let DsrRecord::Usage(_) = record.unwrap() {
                usages += 1;
            }
        }
        writer.join().unwrap();
        assert_eq!(usages, 1_000_000);
        assert!(reader_is_bounded(&reader));
    }

    #[test]
    fn file_names_follow_the_convention() {
        let name = DsrFileName::parse(
            "DSR_PADPIDA2024010101M_PADPIDA2011072101T_Premium_2024-03_DE_1of2_20240402T100000.tsv.gz",
        )
        .unwrap();
        assert_eq!(
            name,
            DsrFileName {
                recipient: "PADPIDA2024010101M".into(),
                sender: "PADPIDA2011072101T".into(),
                service_description: "Premium".into(),
                period: "2024-03".into(),
                territory: "DE".into(),
                file_number: Some(1),
                number_of_files: Some(2),
                created: "20240402T100000".into(),
                gzip: true,
            }
        );
        let single =
            DsrFileName::parse("DSR__ExampleDSP_AdSupport_2024-Q1___20240402T100000.tsv").unwrap();
        assert_eq!(
            (single.recipient.as_str(), single.file_number, single.gzip),
            ("", None, false)
        );
        for bad in [
            "DSR_A_B_C_2024_DE_1of1_20240402T100000.csv",
            "DSR_A_B_C_2024_DE_20240402T100000.tsv",
            "XYZ_A_B_C_2024_DE_1of1_20240402T100000.tsv",
            "DSR_A_B_C_2024_DE_3of2_20240402T100000.tsv",
            "DSR_A_B_C_2024_DE_1of1_2024-04-02.tsv",
        ] {
            assert!(DsrFileName::parse(bad).is_err(), "{bad}");
        }
    }
}
