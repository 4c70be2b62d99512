//! Errors: [`DsrError`] says on which line, and in which cell, a DSR cannot be read.

use std::fmt;

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
    pub(super) fn at(line: u64, problem: impl Into<String>) -> Self {
        Self {
            line,
            cell: None,
            problem: problem.into(),
        }
    }

    pub(super) fn in_cell(line: u64, cell: CellRef, problem: impl Into<String>) -> Self {
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

pub(super) fn cell_ref(
    record_type: &'static str,
    columns: &'static [&'static str],
    column: usize,
) -> CellRef {
    CellRef {
        record_type,
        column,
        name: columns[column - 1],
    }
}

/// A cell value quoted for an error message, cut short if long.
pub(super) fn shown(value: &str) -> String {
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
