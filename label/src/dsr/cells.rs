//! Cells: splitting a line into cells, resolving escapes, and reading typed cells.

use super::decimal::{Decimal, DecimalError};
use super::error::{cell_ref, shown, DsrError};

/// Splits a line at the tabs that are not escaped.
pub(super) fn split_cells(line: &str) -> Vec<&str> {
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
///
/// [`DsrRecord::Other`]: super::DsrRecord::Other
pub(super) fn cell_value(raw: &str) -> String {
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

pub(super) fn is_isrc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[..2].iter().all(u8::is_ascii_alphabetic)
        && b[2..5].iter().all(u8::is_ascii_alphanumeric)
        && b[5..].iter().all(u8::is_ascii_digit)
}

pub(super) fn is_icpn(s: &str) -> bool {
    (12..=14).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn is_iswc(s: &str) -> bool {
    s.len() == 11 && s.starts_with('T') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn is_dpid(s: &str) -> bool {
    s.strip_prefix("PADPIDA")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

pub(super) fn is_namespaced(s: &str) -> bool {
    s.contains("::")
}

pub(super) fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (the schema's `ddex_IsoDate`).
pub(super) fn is_iso_date(s: &str) -> bool {
    let digits = |part: &str, n: usize| part.len() == n && part.bytes().all(|b| b.is_ascii_digit());
    let mut parts = s.split('-');
    let year = parts.next().is_some_and(|p| digits(p, 4));
    let rest: Vec<&str> = parts.collect();
    year && rest.len() <= 2 && rest.iter().all(|p| digits(p, 2))
}

/// The cells of one record, read by 1-based column number.
pub(super) struct Cells<'a> {
    pub(super) line: u64,
    pub(super) record_type: &'static str,
    pub(super) columns: &'static [&'static str],
    pub(super) raw: Vec<&'a str>,
}

impl Cells<'_> {
    pub(super) fn error(&self, column: usize, problem: impl Into<String>) -> DsrError {
        DsrError::in_cell(
            self.line,
            cell_ref(self.record_type, self.columns, column),
            problem,
        )
    }

    fn raw(&self, column: usize) -> &str {
        self.raw[column - 1]
    }

    pub(super) fn required<T>(&self, column: usize, value: Option<T>) -> Result<T, DsrError> {
        value.ok_or_else(|| self.error(column, "empty, but the column is mandatory"))
    }

    pub(super) fn list(&self, column: usize) -> Result<Vec<String>, DsrError> {
        let raw = self.raw(column);
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        unescape_values(raw)
            .map_err(|problem| self.error(column, format!("{}: {problem}", shown(raw))))
    }

    pub(super) fn opt_text(&self, column: usize) -> Result<Option<String>, DsrError> {
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

    pub(super) fn text(&self, column: usize) -> Result<String, DsrError> {
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

    pub(super) fn opt_text_if(
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

    pub(super) fn text_if(
        &self,
        column: usize,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Result<String, DsrError> {
        let value = self.opt_text_if(column, valid, what)?;
        self.required(column, value)
    }

    pub(super) fn list_if(
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

    pub(super) fn opt_count(&self, column: usize) -> Result<Option<u64>, DsrError> {
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

    pub(super) fn count(&self, column: usize) -> Result<u64, DsrError> {
        let value = self.opt_count(column)?;
        self.required(column, value)
    }

    fn parse_decimal(&self, column: usize, raw: &str) -> Result<Decimal, DsrError> {
        raw.parse()
            .map_err(|e: DecimalError| self.error(column, format!("{} {e}", shown(raw))))
    }

    pub(super) fn opt_decimal(&self, column: usize) -> Result<Option<Decimal>, DsrError> {
        match self.raw(column) {
            "" => Ok(None),
            raw => self.parse_decimal(column, raw).map(Some),
        }
    }

    pub(super) fn decimal(&self, column: usize) -> Result<Decimal, DsrError> {
        let value = self.opt_decimal(column)?;
        self.required(column, value)
    }

    pub(super) fn decimals(&self, column: usize) -> Result<Vec<Decimal>, DsrError> {
        let raw = self.raw(column);
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        raw.split('|')
            .map(|value| self.parse_decimal(column, value))
            .collect()
    }

    pub(super) fn opt_bool(&self, column: usize) -> Result<Option<bool>, DsrError> {
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

    pub(super) fn boolean(&self, column: usize) -> Result<bool, DsrError> {
        let value = self.opt_bool(column)?;
        self.required(column, value)
    }
}
