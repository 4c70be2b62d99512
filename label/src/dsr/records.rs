//! Records: the record types of the profile, as typed structs, and their column lists.

use super::decimal::Decimal;

/// The profile this module reads (`HEAD` column 3, `Profile`).
pub const PROFILE: &str = "BasicAudioProfile";

/// The version of the profile whose column lists this module implements (`HEAD` column 4).
pub const PROFILE_VERSION: &str = "1.2";

// The columns of the modelled record types, in the order of their `xs:sequence` in
// BasicAudioProfile.xsd 1.2 (generated from the schema, not typed in).
pub(super) const HEAD_COLUMNS: &[&str] = &[
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
pub(super) const SY0101_COLUMNS: &[&str] = &[
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
pub(super) const SY0202_COLUMNS: &[&str] = &[
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
pub(super) const RE01_COLUMNS: &[&str] = &[
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
pub(super) const AS0101_COLUMNS: &[&str] = &[
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
pub(super) const AS0202_COLUMNS: &[&str] = &[
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
pub(super) const SU01_COLUMNS: &[&str] = &[
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
pub(super) const SU02_COLUMNS: &[&str] = &[
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
pub(super) const FOOT_COLUMNS: &[&str] = &[
    "RecordType",
    "NumberOfLinesInFile",
    "NumberOfLinesInReport",
    "NumberOfSummaryRecords",
    "NumberOfBlocksInFile",
    "NumberOfBlocksInReport",
];

/// `RE02` is read as [`DsrRecord::Other`]; its `ReleaseReference` (column 3) is still one
/// that usage records may name.
pub(super) const RE02_COLUMNS: &[&str] = &[
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
pub(super) const OTHER_RECORD_TYPES: &[(&str, usize, bool)] = &[
    ("SY04.01", 20, true),
    ("SY05.02", 25, true),
    ("MW01.01", 16, false),
    ("RE02", 6, false),
];

/// Record types the schema defines only for the single-record-block variant
/// (`BasicAudioProfileSRB`), which this reader does not read.
pub(super) const SRB_RECORD_TYPES: &[&str] = &["SR01", "SR02", "SRFO", "SY06.02"];

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

    pub(super) fn columns(self) -> &'static [&'static str] {
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
///
/// [`DsrWriter`]: super::DsrWriter
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

    pub(super) fn columns(self) -> &'static [&'static str] {
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

    pub(super) fn columns(self) -> &'static [&'static str] {
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
