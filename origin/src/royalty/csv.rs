//! A strict CSV reader (on the `csv` crate) and a small writer, both RFC 4180 in spirit.
//!
//! The reader is for files a person or a DSP produced, so it refuses anything ambiguous instead
//! of guessing, and every error names the line (1-based, counting the header) and, where it can,
//! the column (1-based, with its name):
//! - fields separated by `,`; lines end in LF or CRLF; a UTF-8 byte-order mark is skipped;
//! - a field may be quoted with `"`, with `""` for a literal quote; a quoted field may not span
//!   lines (statement rows never need one, and it keeps line numbers honest);
//! - a quote inside an unquoted field, text after a closing quote, a blank line other than the
//!   final newline, or a row with the wrong number of fields is an error;
//! - a line longer than [`MAX_LINE_BYTES`], or more records than the caller allows, is an error
//!   before anything is parsed or stored, so hostile input cannot grow memory beyond its own
//!   size.
//!
//! The `csv` crate splits and unquotes the fields. It is lenient where this format is strict
//! (it reads `x"y` and `"1"x` as text, lets quoted fields span lines, skips blank lines), so each
//! record is then checked against its raw bytes: they must be exactly the strict encoding of the
//! fields the crate read.
//!
//! The writer quotes only when needed and writes LF line endings. Text cells meant for people
//! (names, memos) go through [`text_cell`], which defuses spreadsheet formula injection.

use std::borrow::Cow;

/// Longest accepted line, in bytes, terminator included. A statement row is well under 512
/// bytes (ids of at most 64 and 128 bytes, short numbers); the bound keeps one hostile line
/// (say 16 MiB of commas, each a field the parser would index) from costing memory many times
/// its size.
pub const MAX_LINE_BYTES: usize = 4096;

/// The UTF-8 byte-order mark some spreadsheet programs write first.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Why a CSV file was refused. Line and column are 1-based; line 1 is the header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// The line as a whole is wrong (wrong field count, blank line, not UTF-8, bad header).
    #[error("line {line}: {problem}")]
    Line {
        /// The line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// One field is wrong.
    #[error("line {line}, column {column} ({name}): {problem}")]
    Field {
        /// The line number.
        line: usize,
        /// The column number.
        column: usize,
        /// The column's name from the format's header.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

impl CsvError {
    /// An error in field `column` (1-based) of `line`, named after `columns[column - 1]`.
    pub(crate) fn field(
        line: usize,
        column: usize,
        columns: &[&str],
        problem: impl Into<String>,
    ) -> Self {
        CsvError::Field {
            line,
            column,
            name: columns
                .get(column.wrapping_sub(1))
                .copied()
                .unwrap_or("extra")
                .to_string(),
            problem: problem.into(),
        }
    }

    /// The line the error is on.
    pub fn line(&self) -> usize {
        match self {
            CsvError::Line { line, .. } | CsvError::Field { line, .. } => *line,
        }
    }

    /// The column the error is in, if it is about one field.
    pub fn column(&self) -> Option<usize> {
        match self {
            CsvError::Line { .. } => None,
            CsvError::Field { column, .. } => Some(*column),
        }
    }
}

/// One parsed row and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// 1-based line number.
    pub line: usize,
    /// The unquoted fields, exactly `columns.len()` of them.
    pub fields: Vec<String>,
}

/// Parses `bytes` into records of exactly `columns.len()` fields each, header included (the
/// first record), at most `max_records` of them. Column names are used only in error messages.
pub(crate) fn parse_records(
    bytes: &[u8],
    columns: &[&str],
    max_records: usize,
) -> Result<Vec<Record>, CsvError> {
    let body = bytes.strip_prefix(BOM).unwrap_or(bytes);
    check_line_lengths(body)?;
    // Only LF ends a record: a CR is data to the crate, so a stray one is seen (and refused)
    // below, and the CR of a CRLF ending is taken off here.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(body);
    let mut raw_record = csv::ByteRecord::new();
    let mut records = Vec::new();
    // Every accepted record is one line, so record n is on line n.
    let mut line = 1;
    loop {
        let start = offset(reader.position());
        let more = reader
            .read_byte_record(&mut raw_record)
            .map_err(|e| CsvError::Line {
                line,
                problem: e.to_string(),
            })?;
        let end = offset(reader.position());
        let raw = &body[start..end];
        // The crate skips empty lines silently; they show as a leading LF in what it consumed.
        if raw.first() == Some(&b'\n') {
            return Err(CsvError::Line {
                line,
                problem: "blank line".to_string(),
            });
        }
        if !more {
            break;
        }
        if records.len() == max_records {
            return Err(CsvError::Line {
                line,
                problem: format!("more than {max_records} records"),
            });
        }
        records.push(check_record(raw, &raw_record, line, columns)?);
        line += 1;
    }
    Ok(records)
}

/// A reader position as an index into the input (it never passes the input's length).
fn offset(position: &csv::Position) -> usize {
    usize::try_from(position.byte()).unwrap_or(usize::MAX)
}

/// Refuses the first line longer than [`MAX_LINE_BYTES`].
fn check_line_lengths(body: &[u8]) -> Result<(), CsvError> {
    let mut line = 1;
    let mut rest = body;
    while !rest.is_empty() {
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        if len > MAX_LINE_BYTES {
            return Err(CsvError::Line {
                line,
                problem: format!("longer than {MAX_LINE_BYTES} bytes"),
            });
        }
        rest = &rest[len..];
        line += 1;
    }
    Ok(())
}

/// Checks one record the crate read from `raw` (its bytes, terminator included) and returns its
/// fields: UTF-8, no CR or LF inside a field, the quoting strict, `columns.len()` fields.
fn check_record(
    raw: &[u8],
    record: &csv::ByteRecord,
    line: usize,
    columns: &[&str],
) -> Result<Record, CsvError> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let crlf = raw.ends_with(b"\r");
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.is_empty() {
        return Err(CsvError::Line {
            line,
            problem: "blank line".to_string(),
        });
    }
    let mut fields = Vec::with_capacity(record.len());
    for (index, field) in record.iter().enumerate() {
        let field = std::str::from_utf8(field).map_err(|_| CsvError::Line {
            line,
            problem: "not valid UTF-8".to_string(),
        })?;
        // The crate keeps the CR of a CRLF ending as data of the last field.
        let last = index + 1 == record.len();
        let field = match field.strip_suffix('\r') {
            Some(stripped) if crlf && last => stripped,
            _ => field,
        };
        fields.push(field.to_string());
    }
    check_quoting(raw, &fields)
        .map_err(|(index, problem)| CsvError::field(line, index + 1, columns, problem))?;
    if fields.len() != columns.len() {
        return Err(CsvError::Line {
            line,
            problem: format!("expected {} fields, found {}", columns.len(), fields.len()),
        });
    }
    Ok(Record { line, fields })
}

/// Checks that `raw` (one line without its ending) is exactly the strict encoding of `fields`:
/// each field either unquoted and free of quotes, or in quotes with inner quotes doubled, and no
/// CR or LF in any. On failure, the index of the first bad field and what is wrong.
fn check_quoting(raw: &[u8], fields: &[String]) -> Result<(), (usize, &'static str)> {
    let mut rest = raw;
    for (index, field) in fields.iter().enumerate() {
        if field.contains('\n') {
            return Err((
                index,
                "unterminated quoted field (fields may not span lines)",
            ));
        }
        if field.contains('\r') {
            return Err((index, "carriage return inside a field"));
        }
        if rest.first() == Some(&b'"') {
            let quoted = format!("\"{}\"", field.replace('"', "\"\""));
            let after = rest.strip_prefix(quoted.as_bytes());
            rest = match after {
                Some(after) if after.is_empty() || after[0] == b',' => after,
                // The crate ends an unterminated quoted field at the end of the input.
                _ if rest.iter().filter(|&&b| b == b'"').count() % 2 == 1 => {
                    return Err((
                        index,
                        "unterminated quoted field (fields may not span lines)",
                    ))
                }
                _ => return Err((index, "text after the closing quote")),
            };
        } else {
            if field.contains('"') {
                return Err((index, "quote inside an unquoted field"));
            }
            // The crate read the field from exactly these bytes.
            rest = &rest[field.len().min(rest.len())..];
        }
        rest = rest.strip_prefix(b",").unwrap_or(rest);
    }
    Ok(())
}

/// Quotes `field` if it contains a separator, quote, line break or surrounding space.
pub(crate) fn escape(field: &str) -> Cow<'_, str> {
    let needs_quotes =
        field.contains([',', '"', '\r', '\n']) || field.starts_with(' ') || field.ends_with(' ');
    if needs_quotes {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

/// A text cell for a file people open in a spreadsheet: a leading `=`, `+`, `-`, `@`, tab or
/// carriage return would make the spreadsheet evaluate the cell as a formula, so such text is
/// prefixed with `'` (OWASP's advice for CSV injection). Numbers are written as they are.
pub(crate) fn text_cell(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    }
}

/// Builds a CSV document row by row.
#[derive(Debug, Default)]
pub(crate) struct CsvWriter {
    out: String,
}

impl CsvWriter {
    /// A writer that has written `header`.
    pub fn with_header(header: &[&str]) -> Self {
        let mut w = CsvWriter::default();
        w.row(header);
        w
    }

    /// Writes one row; fields are escaped here, so pass them unquoted.
    pub fn row<S: AsRef<str>>(&mut self, fields: &[S]) {
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(&escape(field.as_ref()));
        }
        self.out.push('\n');
    }

    /// The document written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: &[&str] = &["a", "b", "c"];

    fn fields(text: &str) -> Vec<Vec<String>> {
        parse_records(text.as_bytes(), COLS, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.fields)
            .collect()
    }

    #[test]
    fn plain_and_quoted_fields() {
        assert_eq!(
            fields("a,b,c\n1,\"x,y\",\"say \"\"hi\"\"\"\r\n,,\n"),
            vec![
                vec!["a", "b", "c"],
                vec!["1", "x,y", "say \"hi\""],
                vec!["", "", ""]
            ]
        );
        // BOM skipped, no final newline needed, empty quoted field.
        assert_eq!(
            fields("\u{feff}a,b,c\n1,\"\",3"),
            vec![vec!["a", "b", "c"], vec!["1", "", "3"]]
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = |text: &str| parse_records(text.as_bytes(), COLS, 100).unwrap_err();
        let e = err("a,b,c\n1,2\n");
        assert_eq!((e.line(), e.column()), (2, None));
        assert!(e.to_string().contains("expected 3 fields, found 2"), "{e}");

        let e = err("a,b,c\n1,2,3\n\n4,5,6\n");
        assert_eq!(e.to_string(), "line 3: blank line");

        let e = err("a,b,c\n1,x\"y,3\n");
        assert_eq!(
            e.to_string(),
            "line 2, column 2 (b): quote inside an unquoted field"
        );

        let e = err("a,b,c\n1,2,\"3\n4\"\n");
        assert_eq!((e.line(), e.column()), (2, Some(3)));
        assert!(e.to_string().contains("unterminated"), "{e}");

        let e = err("a,b,c\n\"1\"x,2,3\n");
        assert_eq!((e.line(), e.column()), (2, Some(1)));

        let e = err("a,b,c\n1,2,3,4\n");
        assert!(e.to_string().contains("found 4"), "{e}");

        let e = err("a,b,c\n1,2\r,3\n");
        assert_eq!((e.line(), e.column()), (2, Some(2)));

        let e = parse_records(b"a,b,c\n1,2,3\n\xff,2,3\n", COLS, 100).unwrap_err();
        assert_eq!(e.to_string(), "line 3: not valid UTF-8");

        assert_eq!(
            CsvError::field(1, 9, COLS, "x").to_string(),
            "line 1, column 9 (extra): x"
        );
    }

    #[test]
    fn blank_lines_and_limits_are_refused_with_their_line() {
        let err = |text: &str, max| parse_records(text.as_bytes(), COLS, max).unwrap_err();
        assert_eq!(err("\na,b,c\n", 9).to_string(), "line 1: blank line");
        assert_eq!(err("a,b,c\n\n", 9).to_string(), "line 2: blank line");
        assert_eq!(err("a,b,c\r\n\r\n", 9).to_string(), "line 2: blank line");
        assert_eq!(
            err("a,b,c\n1,2,3\n", 1).to_string(),
            "line 2: more than 1 records"
        );
        let long = format!("a,b,c\n1,2,{}\n", "x".repeat(MAX_LINE_BYTES));
        assert_eq!(err(&long, 9).to_string(), "line 2: longer than 4096 bytes");
        let e = err("a,b,c\n1,\"2,3\n", 9);
        assert_eq!((e.line(), e.column()), (2, Some(2)), "{e}");
        assert!(e.to_string().contains("unterminated"), "{e}");
        // CRLF endings, quoted last fields and a line of exactly the limit are fine.
        let exact = format!("a,b,{}\n", "x".repeat(MAX_LINE_BYTES - 5));
        assert_eq!(fields(&exact)[0][2].len(), MAX_LINE_BYTES - 5);
        assert_eq!(
            fields("a,b,\"c\"\r\n1,2,\"\"\r\n"),
            vec![vec!["a", "b", "c"], vec!["1", "2", ""]]
        );
    }

    #[test]
    fn writer_round_trips_through_the_reader() {
        let mut w = CsvWriter::with_header(COLS);
        w.row(&["plain", "with,comma", "with \"quote\""]);
        w.row(&[" padded ", "", "line\nbreak"]);
        let out = w.finish();
        assert!(out.starts_with("a,b,c\nplain,\"with,comma\",\"with \"\"quote\"\"\"\n"));
        // Line breaks are quoted by the writer; the strict reader refuses them, as documented.
        let first_two: String = out.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            fields(&first_two)[1],
            vec!["plain", "with,comma", "with \"quote\""]
        );
    }

    #[test]
    fn text_cells_defuse_formulas() {
        assert_eq!(text_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(text_cell("-Wumpscut-"), "'-Wumpscut-");
        assert_eq!(text_cell("@sum"), "'@sum");
        assert_eq!(text_cell("Band"), "Band");
    }
}
