//! Exports: a self-contained JSON document that verifies offline ([`verify_export`]), and CSV for
//! accountants.
//!
//! The JSON layout is documented on [`Ledger::export_json`].

use std::io::{BufWriter, Write};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::anchor::{AnchorRecord, AnchorState, ExportedAnchor};
use super::entry::{EntryKind, LedgerEntry, ENTRY_FORMAT_VERSION};
use super::error::{LedgerError, VerifyError};
use super::head::{hex_array, SignedTreeHead};
use super::log::Ledger;
use super::merkle::{self, Hash};
use super::verify::{check_head_order, parse_public_key, FullCheck, VerifyReport};
use crate::utc::format_utc_millis;

/// The `format` field of a JSON export.
pub const EXPORT_FORMAT: &str = "mhc-ledger-export";
/// The `version` field of a JSON export this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;

/// Which entries an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportScope {
    /// The whole log and every signed head: the verifier recomputes every head.
    All,
    /// The entries recorded in `from_ms..to_ms` (Unix milliseconds, end excluded), each with an
    /// inclusion proof against the latest head, which is the only head included.
    TimeRange {
        /// Start, included.
        from_ms: u64,
        /// End, excluded.
        to_ms: u64,
    },
}

/// One entry as it appears in a JSON export: the entry's fields, its leaf hash as stored in the
/// log, and (time-range exports) its inclusion proof against the export's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEntry {
    /// See [`LedgerEntry::index`].
    pub index: u64,
    /// See [`LedgerEntry::time_ms`].
    pub time_ms: u64,
    /// See [`LedgerEntry::kind`].
    pub kind: EntryKind,
    /// See [`LedgerEntry::account`].
    pub account: String,
    /// See [`LedgerEntry::amount_minor`].
    pub amount_minor: i64,
    /// See [`LedgerEntry::currency`].
    pub currency: String,
    /// See [`LedgerEntry::source`].
    pub source: String,
    /// See [`LedgerEntry::reference`].
    pub reference: String,
    /// See [`LedgerEntry::memo`].
    pub memo: String,
    /// The leaf hash the log holds for this entry (hex).
    #[serde(with = "hex_array")]
    pub leaf_hash: Hash,
    /// Inclusion proof against the export's head (hex hashes); time-range exports only.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_list")]
    pub proof: Option<Vec<Hash>>,
}

impl ExportedEntry {
    fn new(entry: LedgerEntry, leaf_hash: Hash, proof: Option<Vec<Hash>>) -> Self {
        Self {
            index: entry.index,
            time_ms: entry.time_ms,
            kind: entry.kind,
            account: entry.account,
            amount_minor: entry.amount_minor,
            currency: entry.currency,
            source: entry.source,
            reference: entry.reference,
            memo: entry.memo,
            leaf_hash,
            proof,
        }
    }

    /// The ledger entry (its leaf bytes are recomputed canonically from these fields).
    pub fn to_entry(&self) -> LedgerEntry {
        LedgerEntry {
            index: self.index,
            time_ms: self.time_ms,
            kind: self.kind,
            account: self.account.clone(),
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            source: self.source.clone(),
            reference: self.reference.clone(),
            memo: self.memo.clone(),
        }
    }

    /// Validates the entry and checks that its recomputed leaf hash is the exported one.
    fn check(&self) -> Result<(LedgerEntry, Hash), VerifyError> {
        let entry = self.to_entry();
        entry
            .validate()
            .map_err(|source| VerifyError::EntryCorrupt {
                index: self.index,
                source,
            })?;
        let leaf = entry.leaf_hash();
        if leaf != self.leaf_hash {
            return Err(VerifyError::EntryMismatch { index: self.index });
        }
        Ok((entry, leaf))
    }
}

/// The whole JSON document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportDocument {
    format: String,
    version: u32,
    entry_format: u8,
    public_key: String,
    scope: ExportScope,
    first_index: u64,
    end_index: u64,
    tree_size: u64,
    entries: Vec<ExportedEntry>,
    heads: Vec<SignedTreeHead>,
    /// Confirmed anchors (absent from exports of a ledger that is not anchored).
    #[serde(default)]
    anchors: Vec<ExportedAnchor>,
}

/// What a verifier of anchors needs from an export (checked first with [`verify_export`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportAnchors {
    /// The export's tree size.
    pub tree_size: u64,
    /// The export's signed heads.
    pub heads: Vec<SignedTreeHead>,
    /// Its anchors.
    pub anchors: Vec<ExportedAnchor>,
}

/// Reads the anchors of a JSON export, with the heads they are checked against. Verify the
/// export itself with [`verify_export`] first: this only parses.
///
/// # Errors
/// [`VerifyError::Malformed`] when the document does not parse.
pub fn export_anchors(json_bytes: &[u8]) -> Result<ExportAnchors, VerifyError> {
    let doc: ExportDocument =
        serde_json::from_slice(json_bytes).map_err(|e| malformed(e.to_string()))?;
    Ok(ExportAnchors {
        tree_size: doc.tree_size,
        heads: doc.heads,
        anchors: doc.anchors,
    })
}

impl Ledger {
    /// Writes a JSON export of `scope` to `out` and returns how many entries it holds. Entries are
    /// streamed from the store.
    ///
    /// The JSON is laid out one entry per line, so that when a changed byte makes the document fail
    /// to parse, the parser's line number still names the entry:
    ///
    /// ```text
    /// {"format":"mhc-ledger-export","version":1,"entry_format":1,"public_key":"…","scope":{…},"first_index":0,"end_index":2,"tree_size":2,
    /// "entries":[
    /// {"index":0,"time_ms":…,"kind":"credit",…,"leaf_hash":"…"},
    /// {"index":1,…}
    /// ],
    /// "heads":[
    /// {"size":2,"root":"…","time_ms":…,"signature":"…"}
    /// ]}
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::Io`] when writing fails; [`LedgerError::Db`] or [`LedgerError::Corrupt`]
    /// when the store cannot be read.
    pub fn export_json<W: Write>(&self, scope: ExportScope, out: W) -> Result<u64, LedgerError> {
        self.export_json_with_anchors(scope, &[], out)
    }

    /// [`export_json`](Self::export_json), followed by an `"anchors"` array of the confirmed
    /// anchors among `anchors` that the export's tree covers, each with its consistency proof to
    /// the export's tree size (one per line, after `"heads"`; absent when there are none).
    ///
    /// # Errors
    /// As [`export_json`](Self::export_json).
    pub fn export_json_with_anchors<W: Write>(
        &self,
        scope: ExportScope,
        anchors: &[AnchorRecord],
        out: W,
    ) -> Result<u64, LedgerError> {
        let mut out = BufWriter::new(out);
        let latest = self.latest_head();
        let tree_size = latest.map_or(0, |h| h.size);
        let (range, heads) = match scope {
            ExportScope::All => (0..tree_size, self.heads()?),
            ExportScope::TimeRange { from_ms, to_ms } => (
                self.index_range_for_time(from_ms, to_ms)?,
                latest.into_iter().collect(),
            ),
        };
        write!(
            out,
            "{{\"format\":{},\"version\":{EXPORT_VERSION},\"entry_format\":{ENTRY_FORMAT_VERSION},\
             \"public_key\":\"{}\",\"scope\":{},\"first_index\":{},\"end_index\":{},\
             \"tree_size\":{tree_size},\n\"entries\":[",
            json(&EXPORT_FORMAT)?,
            hex::encode(self.public_key()),
            json(&scope)?,
            range.start,
            range.end,
        )?;
        let mut written = 0u64;
        self.for_each_stored(range, |entry, leaf| {
            let proof = match scope {
                ExportScope::All => None,
                ExportScope::TimeRange { .. } => {
                    Some(self.inclusion_proof(entry.index, tree_size)?)
                }
            };
            let line = json(&ExportedEntry::new(entry, leaf, proof))?;
            let sep = if written == 0 { "\n" } else { ",\n" };
            write!(out, "{sep}{line}")?;
            written += 1;
            Ok(())
        })?;
        out.write_all(b"\n],\n\"heads\":[")?;
        for (i, head) in heads.iter().enumerate() {
            let sep = if i == 0 { "\n" } else { ",\n" };
            write!(out, "{sep}{}", json(head)?)?;
        }
        out.write_all(b"\n]")?;
        let mut first = true;
        for a in anchors {
            let (Some(tx_hash), Some(block)) = (&a.tx_hash, a.block) else {
                continue;
            };
            if a.state != AnchorState::Confirmed || a.tree_size > tree_size {
                continue;
            }
            let proof = self.consistency_proof(a.tree_size, tree_size)?;
            let exported = ExportedAnchor {
                tree_size: a.tree_size,
                root: a.root,
                head_digest: a.head_digest,
                chain_id: a.chain_id,
                address: a.address.clone(),
                tx_hash: tx_hash.clone(),
                block,
                consistency: proof.iter().map(hex::encode).collect(),
            };
            let sep = if first { ",\n\"anchors\":[\n" } else { ",\n" };
            write!(out, "{sep}{}", json(&exported)?)?;
            first = false;
        }
        if !first {
            out.write_all(b"\n]")?;
        }
        out.write_all(b"}\n")?;
        out.flush()?;
        Ok(written)
    }

    /// Writes the entries of `scope` as CSV for accountants and returns how many rows (besides
    /// the header) it wrote.
    ///
    /// Columns: `index, time_ms, time_utc, kind, account, amount_minor, amount, currency, source,
    /// reference, memo`. `amount_minor` is the integer in minor units; `amount` is the same value
    /// as an exact decimal string by the currency's exponent (never a float). Text fields that a
    /// spreadsheet would run as a formula (starting with `=`, `+`, `-` or `@`) are prefixed with
    /// `'`; fields are quoted per RFC 4180 when needed.
    ///
    /// # Errors
    /// [`LedgerError::Io`] when writing fails; [`LedgerError::Db`] or [`LedgerError::Corrupt`]
    /// when the store cannot be read.
    pub fn export_csv<W: Write>(&self, scope: ExportScope, out: W) -> Result<u64, LedgerError> {
        let mut out = BufWriter::new(out);
        let range = match scope {
            ExportScope::All => 0..self.len(),
            ExportScope::TimeRange { from_ms, to_ms } => {
                self.index_range_for_time(from_ms, to_ms)?
            }
        };
        out.write_all(
            b"index,time_ms,time_utc,kind,account,amount_minor,amount,currency,source,reference,memo\r\n",
        )?;
        let mut rows = 0u64;
        self.for_each_stored(range, |e, _| {
            write!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}\r\n",
                e.index,
                e.time_ms,
                format_utc_millis(e.time_ms),
                e.kind.as_str(),
                csv_text(&e.account),
                e.amount_minor,
                e.amount_decimal(),
                e.currency,
                csv_text(&e.source),
                csv_text(&e.reference),
                csv_text(&e.memo),
            )?;
            rows += 1;
            Ok(())
        })?;
        out.flush()?;
        Ok(rows)
    }
}

/// Verifies a JSON export offline, with no store: for an `all` export, recomputes the tree from
/// the entries and checks every head's root and signature; for a `time_range` export, checks each
/// entry's inclusion proof against the export's (latest) head and its signature. In both, each
/// entry's recomputed leaf hash must equal the exported one, so a changed entry is named.
///
/// `expected_public_key` pins the log's key; without it the key in the document is trusted, which
/// only proves the export is internally consistent.
///
/// # Errors
/// The first problem, naming the first bad entry or head (see [`VerifyError`]); a document that
/// does not parse is [`VerifyError::Malformed`] with the entry on the offending line.
pub fn verify_export(
    json_bytes: &[u8],
    expected_public_key: Option<[u8; 32]>,
) -> Result<VerifyReport, VerifyError> {
    let doc: ExportDocument =
        serde_json::from_slice(json_bytes).map_err(|e| VerifyError::Malformed {
            // Column 0 is the newline ending the previous line (an unterminated string there).
            entry: entry_on_line(json_bytes, e.line() - usize::from(e.column() == 0)),
            detail: e.to_string(),
        })?;
    if doc.format != EXPORT_FORMAT || doc.version != EXPORT_VERSION {
        return Err(VerifyError::UnsupportedFormat {
            format: doc.format,
            version: doc.version,
        });
    }
    if doc.entry_format != ENTRY_FORMAT_VERSION {
        return Err(malformed(format!(
            "entry format {} is not {ENTRY_FORMAT_VERSION}",
            doc.entry_format
        )));
    }
    let key = parse_public_key(&doc.public_key)?;
    if let Some(expected) = expected_public_key {
        if expected != key.to_bytes() {
            return Err(VerifyError::WrongKey {
                expected: hex::encode(expected),
                found: doc.public_key,
            });
        }
    }
    if doc.first_index > doc.end_index || doc.end_index > doc.tree_size {
        return Err(malformed(format!(
            "entries {}..{} do not fit a tree of {}",
            doc.first_index, doc.end_index, doc.tree_size
        )));
    }
    check_contiguous(&doc)?;
    match doc.scope {
        ExportScope::All => verify_full(&doc, key),
        ExportScope::TimeRange { from_ms, to_ms } => verify_range(&doc, key, from_ms..to_ms),
    }
}

/// Checks one entry line of a time-range export on its own: its fields against its leaf hash, and
/// its inclusion proof against `head`, whose signature is checked with `public_key`. This is "one
/// entry verifies offline": cut the line out of the export, keep the head.
///
/// # Errors
/// [`VerifyError::Malformed`] when the line does not parse or has no proof,
/// [`VerifyError::BadPublicKey`] / [`VerifyError::BadSignature`] for the head, and the entry
/// errors of [`verify_export`].
pub fn verify_exported_entry(
    entry_json: &str,
    head: &SignedTreeHead,
    public_key: &[u8; 32],
) -> Result<LedgerEntry, VerifyError> {
    let key = VerifyingKey::from_bytes(public_key)
        .map_err(|_| VerifyError::BadPublicKey(hex::encode(public_key)))?;
    head.verify(&key)
        .map_err(|_| VerifyError::BadSignature { size: head.size })?;
    let line = entry_json.trim().trim_end_matches(',');
    let exported: ExportedEntry =
        serde_json::from_str(line).map_err(|e| malformed(e.to_string()))?;
    let (entry, leaf) = exported.check()?;
    let proof = exported
        .proof
        .as_deref()
        .ok_or_else(|| VerifyError::Malformed {
            entry: Some(exported.index),
            detail: "no inclusion proof".into(),
        })?;
    merkle::verify_inclusion(&leaf, entry.index, head.size, proof, &head.root).map_err(
        |source| VerifyError::InclusionFailed {
            index: entry.index,
            source,
        },
    )?;
    Ok(entry)
}

fn malformed(detail: String) -> VerifyError {
    VerifyError::Malformed {
        entry: None,
        detail,
    }
}

/// Entries must run `first_index..end_index` with no gap, duplicate or extra.
fn check_contiguous(doc: &ExportDocument) -> Result<(), VerifyError> {
    let mut expected = doc.first_index;
    for e in &doc.entries {
        if expected == doc.end_index {
            return Err(VerifyError::Malformed {
                entry: Some(e.index),
                detail: format!("entries beyond the declared end {}", doc.end_index),
            });
        }
        if e.index > expected {
            return Err(VerifyError::MissingEntry { index: expected });
        }
        if e.index < expected {
            return Err(VerifyError::EntryOutOfPlace {
                index: expected,
                claimed: e.index,
            });
        }
        expected += 1;
    }
    if expected != doc.end_index {
        return Err(VerifyError::MissingEntry { index: expected });
    }
    Ok(())
}

fn verify_full(doc: &ExportDocument, key: VerifyingKey) -> Result<VerifyReport, VerifyError> {
    if doc.first_index != 0 || doc.end_index != doc.tree_size {
        return Err(malformed(format!(
            "a full export must hold entries 0..{}, not {}..{}",
            doc.tree_size, doc.first_index, doc.end_index
        )));
    }
    let mut check = FullCheck::new(key, &doc.heads)?;
    for e in &doc.entries {
        let (entry, leaf) = e.check()?;
        check.entry(e.index, &entry, leaf, None)?;
    }
    check.finish()
}

fn verify_range(
    doc: &ExportDocument,
    key: VerifyingKey,
    time: std::ops::Range<u64>,
) -> Result<VerifyReport, VerifyError> {
    check_head_order(&doc.heads)?;
    let head = match doc.heads.as_slice() {
        [] if doc.tree_size == 0 => None,
        [head] if head.size == doc.tree_size => Some(*head),
        _ => {
            return Err(malformed(format!(
                "a time-range export carries exactly the head of size {}",
                doc.tree_size
            )))
        }
    };
    if let Some(head) = head {
        head.verify(&key)
            .map_err(|_| VerifyError::BadSignature { size: head.size })?;
    }
    let mut last_time_ms = 0;
    for e in &doc.entries {
        let (entry, leaf) = e.check()?;
        if !time.contains(&entry.time_ms) {
            return Err(VerifyError::OutOfRange { index: entry.index });
        }
        if entry.time_ms < last_time_ms {
            return Err(VerifyError::TimeOrder { index: entry.index });
        }
        last_time_ms = entry.time_ms;
        let proof = e.proof.as_deref().ok_or_else(|| VerifyError::Malformed {
            entry: Some(e.index),
            detail: "no inclusion proof".into(),
        })?;
        // check_contiguous and the header check put every index below tree_size, so a head exists.
        let head = head.expect("entries imply a head");
        merkle::verify_inclusion(&leaf, entry.index, head.size, proof, &head.root).map_err(
            |source| VerifyError::InclusionFailed {
                index: entry.index,
                source,
            },
        )?;
    }
    Ok(VerifyReport {
        public_key: key.to_bytes(),
        entries: doc.first_index..doc.end_index,
        heads: doc.heads.len(),
        latest: head,
    })
}

/// The entry whose line `line` (1-based, from the JSON parser) is, if it is inside the entries
/// array. Each entry line starts with `{"index":N`; when the damage is in that very prefix, the
/// entry after the previous line is meant (or, for the first line, the header's `first_index`).
fn entry_on_line(text: &[u8], line: usize) -> Option<u64> {
    let mut lines = text.split(|&b| b == b'\n');
    let header = lines.next()?;
    // The index the next entry line should have.
    let mut next = number_after(header, b"\"first_index\":");
    if line <= 2 || lines.next()? != b"\"entries\":[" {
        return None;
    }
    for (n, raw) in lines.enumerate() {
        if raw.starts_with(b"]") {
            return None;
        }
        let here = number_after(raw, b"{\"index\":").or(next);
        if n + 3 >= line {
            return here;
        }
        next = here.map(|i| i + 1);
    }
    None
}

/// The decimal number right after the first occurrence of `key` in `line`, if it is followed by
/// a comma (true of `first_index` in the header and `index` in an entry line).
fn number_after(line: &[u8], key: &[u8]) -> Option<u64> {
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &line[at..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // Only a well-formed number followed by a comma is trusted; a leading zero or a stray byte
    // after the digits is the damage itself.
    if digits == 0 || (digits > 1 && rest[0] == b'0') || rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, LedgerError> {
    serde_json::to_string(value).map_err(|e| LedgerError::Io(e.into()))
}

/// A text field for CSV: formula-neutralized, then quoted when it holds a comma or a quote.
fn csv_text(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Serde for an optional list of hashes as hex strings.
mod hex_list {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use super::Hash;

    pub(super) fn serialize<S: Serializer>(
        list: &Option<Vec<Hash>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let hexes: Option<Vec<String>> = list.as_ref().map(|l| l.iter().map(hex::encode).collect());
        serde::Serialize::serialize(&hexes, serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<Hash>>, D::Error> {
        let Some(hexes) = Option::<Vec<String>>::deserialize(deserializer)? else {
            return Ok(None);
        };
        hexes
            .iter()
            .map(|h| super::hex_array::decode::<32>(h).map_err(D::Error::custom))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::super::log::tests::{db, filled, key, T0};
    use super::super::NewEntry;
    use super::*;

    fn export(ledger: &Ledger, scope: ExportScope) -> Vec<u8> {
        let mut out = Vec::new();
        ledger.export_json(scope, &mut out).unwrap();
        out
    }

    /// Byte offsets of the line of entry `index` (without its newline).
    fn entry_line(doc: &[u8], index: u64) -> std::ops::Range<usize> {
        let needle = format!("\n{{\"index\":{index},");
        let start = doc
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap()
            + 1;
        let len = doc[start..].iter().position(|&b| b == b'\n').unwrap();
        start..start + len
    }

    #[test]
    fn full_export_verifies_offline() {
        let (_dir, db) = db();
        let ledger = filled(&db, &[3, 4, 10]);
        let doc = export(&ledger, ExportScope::All);
        let report = verify_export(&doc, Some(ledger.public_key())).unwrap();
        assert_eq!(report.entries, 0..17);
        assert_eq!(report.heads, 3);
        assert_eq!(report.latest, ledger.latest_head());
        assert_eq!(report.public_key, ledger.public_key());
        assert!(verify_export(&doc, None).is_ok());
        assert!(matches!(
            verify_export(&doc, Some([9; 32])),
            Err(VerifyError::WrongKey { .. })
        ));
        // One entry per line, between the header and the heads.
        let text = std::str::from_utf8(&doc).unwrap();
        assert_eq!(text.lines().count(), 1 + 1 + 17 + 2 + 3 + 1);
        let empty_db = sled::Config::new().temporary(true).open().unwrap();
        let empty = Ledger::open(&empty_db, key()).unwrap();
        let report = verify_export(&export(&empty, ExportScope::All), None).unwrap();
        assert_eq!((report.entries, report.heads), (0..0, 0));
    }

    #[test]
    fn time_range_export_carries_proofs() {
        let (_dir, db) = db();
        // Batches at T0, T0+1000, T0+2000, T0+3000.
        let ledger = filled(&db, &[5, 7, 2, 9]);
        let scope = ExportScope::TimeRange {
            from_ms: T0 + 1000,
            to_ms: T0 + 3000,
        };
        let doc = export(&ledger, scope);
        let report = verify_export(&doc, Some(ledger.public_key())).unwrap();
        assert_eq!(report.entries, 5..14);
        assert_eq!(report.heads, 1);
        let head = ledger.latest_head().unwrap();
        assert_eq!(report.latest, Some(head));
        // Any single line verifies on its own with the head.
        let text = std::str::from_utf8(&doc).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("{\"index\":9,"))
            .unwrap();
        let entry = verify_exported_entry(line, &head, &ledger.public_key()).unwrap();
        assert_eq!(entry, ledger.entry(9).unwrap());
        let changed = line.replace("\"memo\":\"entry 9\"", "\"memo\":\"entry 8\"");
        assert!(matches!(
            verify_exported_entry(&changed, &head, &ledger.public_key()),
            Err(VerifyError::EntryMismatch { index: 9 })
        ));
        let mut other_head = head;
        other_head.root[0] ^= 1;
        assert!(matches!(
            verify_exported_entry(line, &other_head, &ledger.public_key()),
            Err(VerifyError::BadSignature { .. })
        ));
        // An empty range still carries the signed head.
        let none = ExportScope::TimeRange {
            from_ms: 0,
            to_ms: T0,
        };
        let report = verify_export(&export(&ledger, none), None).unwrap();
        assert_eq!((report.entries.is_empty(), report.heads), (true, 1));
    }

    /// Every byte of an entry's line, changed two ways, makes verification fail naming that
    /// entry, in both kinds of export.
    #[test]
    fn any_changed_byte_names_the_entry() {
        let (_dir, db) = db();
        let ledger = filled(&db, &[4, 6, 5]);
        let full = export(&ledger, ExportScope::All);
        let range = export(
            &ledger,
            ExportScope::TimeRange {
                from_ms: T0 + 1000,
                to_ms: T0 + 2000,
            },
        );
        for (doc, index) in [
            (&full, 0),
            (&full, 7),
            (&full, 14),
            (&range, 4),
            (&range, 8),
        ] {
            let line = entry_line(doc, index);
            // The newline ending the line belongs to it too.
            for pos in line.start..=line.end {
                for change in [0x01u8, 0x20] {
                    let mut bad = doc.clone();
                    bad[pos] ^= change;
                    let err = verify_export(&bad, Some(ledger.public_key()))
                        .expect_err(&format!("entry {index} byte {}", pos - line.start));
                    assert_eq!(
                        err.entry(),
                        Some(index),
                        "entry {index} byte {} ({:?}): {err}",
                        pos - line.start,
                        doc[pos] as char
                    );
                }
            }
        }
    }

    #[test]
    fn changed_heads_and_header_fail() {
        let (_dir, db) = db();
        let ledger = filled(&db, &[4, 6]);
        let doc = String::from_utf8(export(&ledger, ExportScope::All)).unwrap();
        let head = ledger.latest_head().unwrap();
        let root_hex = hex::encode(head.root);
        let mut flipped = root_hex.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let bad = doc.replace(&root_hex, std::str::from_utf8(&flipped).unwrap());
        assert!(matches!(
            verify_export(bad.as_bytes(), None),
            Err(VerifyError::BadSignature { size: 10 })
        ));
        let bad = doc.replace(&root_hex, &root_hex.to_uppercase());
        assert!(matches!(
            verify_export(bad.as_bytes(), None),
            Err(VerifyError::Malformed { entry: None, .. })
        ));
        let bad = doc.replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            verify_export(bad.as_bytes(), None),
            Err(VerifyError::UnsupportedFormat { version: 2, .. })
        ));
        let bad = doc.replace("\"end_index\":10", "\"end_index\":9");
        assert!(verify_export(bad.as_bytes(), None).is_err());
        // Dropping the last batch's head leaves its entries unsigned.
        let cut = doc.find(",\n{\"size\":10").unwrap();
        let bad = format!("{}\n]}}\n", &doc[..cut]);
        assert!(matches!(
            verify_export(bad.as_bytes(), None),
            Err(VerifyError::UnsignedEntries { signed: 4, len: 10 })
        ));
        // Dropping an entry line.
        let text: Vec<&str> = doc
            .lines()
            .filter(|l| !l.starts_with("{\"index\":3,"))
            .collect();
        assert!(matches!(
            verify_export(text.join("\n").as_bytes(), None),
            Err(VerifyError::MissingEntry { index: 3 })
        ));
    }

    #[test]
    fn export_of_a_damaged_store_names_the_entry() {
        let (_dir, db) = db();
        let ledger = filled(&db, &[4, 6]);
        let mut forged = ledger.entry(5).unwrap();
        forged.memo = "rewritten".into();
        db.open_tree(super::super::ENTRIES_TREE)
            .unwrap()
            .insert(5u64.to_be_bytes(), forged.leaf_bytes())
            .unwrap();
        let doc = export(&ledger, ExportScope::All);
        assert!(matches!(
            verify_export(&doc, None),
            Err(VerifyError::EntryMismatch { index: 5 })
        ));
    }

    #[test]
    fn csv_for_accountants() {
        let (_dir, db) = db();
        let mut ledger = Ledger::open(&db, key()).unwrap();
        ledger
            .append_batch_at(
                vec![
                    NewEntry::new(EntryKind::Credit, "artist-1", 1_234, "EUR", "plays")
                        .with_memo("March, \"live\" plays"),
                    NewEntry::new(EntryKind::Payout, "=cmd|calc", -500, "JPY", "bank")
                        .with_reference("po-1"),
                    NewEntry::new(EntryKind::Adjustment, "artist-2", -5, "KWD", "tip"),
                ],
                T0 + 123,
            )
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(ledger.export_csv(ExportScope::All, &mut out).unwrap(), 3);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "index,time_ms,time_utc,kind,account,amount_minor,amount,currency,source,reference,memo"
        );
        assert_eq!(
            lines[1],
            "0,1700000000123,2023-11-14T22:13:20.123Z,credit,artist-1,1234,12.34,EUR,plays,,\
             \"March, \"\"live\"\" plays\""
        );
        assert_eq!(
            lines[2],
            "1,1700000000123,2023-11-14T22:13:20.123Z,payout,'=cmd|calc,-500,-500,JPY,bank,po-1,"
        );
        assert_eq!(
            lines[3],
            "2,1700000000123,2023-11-14T22:13:20.123Z,adjustment,artist-2,-5,-0.005,KWD,tip,,"
        );
        assert_eq!(lines[4], "");
        let mut out = Vec::new();
        let none = ExportScope::TimeRange {
            from_ms: 0,
            to_ms: T0,
        };
        assert_eq!(ledger.export_csv(none, &mut out).unwrap(), 0);
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_utc_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            format_utc_millis(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            format_utc_millis(4_102_444_800_000),
            "2100-01-01T00:00:00.000Z"
        );
    }
}
