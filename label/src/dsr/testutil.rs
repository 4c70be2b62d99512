//! Test helpers shared by the unit tests of the DSR modules: a hand-written sample report and
//! a generator of large ones.

use std::io::Write;

use super::decimal::Decimal;
use super::error::DsrError;
use super::reader::DsrReader;
use super::records::{
    DsrRecord, Head, Release, Resource, Summary, SummaryKind, Usage, PROFILE, PROFILE_VERSION,
};
use super::writer::DsrWriter;

/// A small report written by hand in the schema's column orders: HEAD, a comment, an
/// SY02.02 and an SY01.01, one block with RE01, AS02.02, AS01.01, two SU02 and an SU01,
/// and FOOT.
pub(super) const SAMPLE: &str = concat!(
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

pub(super) fn read_all(bytes: &[u8]) -> Result<Vec<DsrRecord>, DsrError> {
    DsrReader::new(bytes).collect()
}

pub(super) fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// The first error reading `text`, displayed.
pub(super) fn first_error(text: &str) -> String {
    match read_all(text.as_bytes()) {
        Ok(_) => panic!("read without error"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn sample_head() -> Head {
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

pub(super) fn sample_summary() -> Summary {
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
pub(super) fn write_report<W: Write>(
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
