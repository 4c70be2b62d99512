//! A strict CSV reader and a small writer, both RFC 4180 in spirit.
//!
//! The reader is for files a person or a DSP produced, so it refuses anything ambiguous instead
//! of guessing, and every error names the line (1-based, counting the header) and, where it can,
//! the column (1-based, with its name):
//! - fields separated by `,`; lines end in LF or CRLF; a UTF-8 byte-order mark is skipped;
//! - a field may be quoted with `"`, with `""` for a literal quote; a quoted field may not span
//!   lines (statement rows never need one, and it keeps line numbers honest);
//! - a quote inside an unquoted field, text after a closing quote, a blank line other than the
//!   final newline, or a row with the wrong number of fields is an error.
//!
//! The writer quotes only when needed and writes LF line endings. Text cells meant for people
//! (names, memos) go through [`text_cell`], which defuses spreadsheet formula injection.

use std::borrow::Cow;

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
/// first record). Column names are used only in error messages.
pub(crate) fn parse_records(bytes: &[u8], columns: &[&str]) -> Result<Vec<Record>, CsvError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        // Report the line the first invalid byte is on.
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        CsvError::Line {
            line,
            problem: "not valid UTF-8".to_string(),
        }
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // A final newline leaves one empty piece; that is the normal end of file, not a blank line.
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut records = Vec::with_capacity(lines.len());
    for (index, raw) in lines.into_iter().enumerate() {
        let line = index + 1;
        let content = raw.strip_suffix('\r').unwrap_or(raw);
        if content.is_empty() {
            return Err(CsvError::Line {
                line,
                problem: "blank line".to_string(),
            });
        }
        let fields = parse_line(content, line, columns)?;
        if fields.len() != columns.len() {
            return Err(CsvError::Line {
                line,
                problem: format!("expected {} fields, found {}", columns.len(), fields.len()),
            });
        }
        records.push(Record { line, fields });
    }
    Ok(records)
}

/// Splits one line (without its line ending) into unquoted fields.
fn parse_line(content: &str, line: usize, columns: &[&str]) -> Result<Vec<String>, CsvError> {
    let mut fields = Vec::new();
    let mut chars = content.chars().peekable();
    loop {
        let column = fields.len() + 1;
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some('\r') => {
                        return Err(CsvError::field(
                            line,
                            column,
                            columns,
                            "carriage return inside a field",
                        ))
                    }
                    Some(c) => field.push(c),
                    None => {
                        return Err(CsvError::field(
                            line,
                            column,
                            columns,
                            "unterminated quoted field (fields may not span lines)",
                        ))
                    }
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(CsvError::field(
                        line,
                        column,
                        columns,
                        format!("unexpected {c:?} after closing quote"),
                    ))
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => {
                        return Err(CsvError::field(
                            line,
                            column,
                            columns,
                            "quote inside an unquoted field",
                        ))
                    }
                    Some('\r') => {
                        return Err(CsvError::field(
                            line,
                            column,
                            columns,
                            "carriage return inside a field",
                        ))
                    }
                    Some(c) => field.push(c),
                }
            }
        }
    }
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
        parse_records(text.as_bytes(), COLS)
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
        let err = |text: &str| parse_records(text.as_bytes(), COLS).unwrap_err();
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

        let e = parse_records(b"a,b,c\n1,2,3\n\xff,2,3\n", COLS).unwrap_err();
        assert_eq!(e.to_string(), "line 3: not valid UTF-8");

        assert_eq!(
            CsvError::field(1, 9, COLS, "x").to_string(),
            "line 1, column 9 (extra): x"
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
