//! Reader: [`DsrReader`] streams the records of a DSR and checks the file's structure.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Chain, Cursor, Read};

use flate2::bufread::MultiGzDecoder;

use super::cells::cell_value;
use super::error::{cell_ref, shown, CellRef, DsrError};
use super::parse::parse_line;
use super::records::{
    DsrRecord, Foot, ResourceKind, Usage, FOOT_COLUMNS, OTHER_RECORD_TYPES, RE01_COLUMNS,
    RE02_COLUMNS,
};

/// The default bound on one line, in bytes (without its line end).
///
/// DSR Part 1 sets no line length. The longest record of the profile, `AS02.02` with its lists
/// of writers and publishers, runs to a few hundred bytes in practice, so 64 KiB leaves ample
/// room while keeping a file that is not a DSR (or has lost its line ends) from being buffered
/// whole. [`DsrReader::with_max_line_bytes`] changes it.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::dsr::testutil::{first_error, read_all, write_report, SAMPLE};

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
}
