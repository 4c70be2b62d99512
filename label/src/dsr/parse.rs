//! Parsing one line into a [`DsrRecord`], each cell checked against its column.

use super::cells::{
    is_currency, is_dpid, is_icpn, is_iso_date, is_isrc, is_iswc, is_namespaced, split_cells, Cells,
};
use super::error::{shown, DsrError};
use super::records::{
    DsrRecord, Foot, Head, Release, Resource, ResourceKind, Summary, SummaryKind, Usage, UsageKind,
    AS0101_COLUMNS, AS0202_COLUMNS, FOOT_COLUMNS, HEAD_COLUMNS, OTHER_RECORD_TYPES, PROFILE,
    PROFILE_VERSION, RE01_COLUMNS, SRB_RECORD_TYPES, SU01_COLUMNS, SU02_COLUMNS, SY0101_COLUMNS,
    SY0202_COLUMNS,
};

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
pub(super) fn parse_line(line_number: u64, bytes: &[u8]) -> Result<DsrRecord, DsrError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsr::decimal::Decimal;
    use crate::dsr::testutil::{dec, first_error, read_all, SAMPLE};

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
}
