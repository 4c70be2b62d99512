//! Writer: [`DsrWriter`] writes a DSR record by record, for tests and benchmarks.

use std::fmt;
use std::io::{self, Write};

use super::decimal::Decimal;
use super::records::{
    DsrRecord, Head, Release, Resource, ResourceKind, Summary, SummaryKind, Usage, UsageKind,
    OTHER_RECORD_TYPES,
};

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
/// [`DsrReader`]: super::DsrReader
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsr::records::Foot;
    use crate::dsr::testutil::{read_all, sample_head, write_report, SAMPLE};

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
}
