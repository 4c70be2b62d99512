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

mod cells;
mod decimal;
mod error;
mod file_name;
mod parse;
mod reader;
mod records;
#[cfg(test)]
mod testutil;
mod writer;

pub use decimal::{Decimal, DecimalError};
pub use error::{CellRef, DsrError};
pub use file_name::{DsrFileName, FileNameError};
pub use reader::{DsrInput, DsrReader, MAX_LINE_BYTES};
pub use records::{
    DsrRecord, Foot, Head, Release, Resource, ResourceKind, Summary, SummaryKind, Usage, UsageKind,
    PROFILE, PROFILE_VERSION,
};
pub use writer::DsrWriter;
