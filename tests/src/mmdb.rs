//! A small MaxMind DB (format 2.0) writer for tests: exact `.mmdb` fixtures without shipping data.
//!
//! [`MmdbWriter`] builds the three sections of the format
//! (<https://maxmind.github.io/MaxMind-DB/>):
//!
//! - the binary search tree, with 24-, 28- or 32-bit records (the smallest that fits unless
//!   [`MmdbWriter::record_size`] picks one). An IPv6 database (`ip_version` 6) holds IPv4 networks
//!   at `::a.b.c.d/(96 + len)`, where real databases keep them; no `::ffff:0:0/96` alias is
//!   written, so a reader that does not map IPv4-mapped addresses to IPv4 itself finds nothing;
//! - the 16-byte zero separator and the data section, with maps, UTF-8 strings, doubles, floats,
//!   unsigned and signed integers, booleans, arrays and bytes. A record shared by many networks is
//!   stored once, and repeated strings and maps inside records become pointers, as real databases
//!   do (so readers' pointer handling is exercised);
//! - `\xAB\xCD\xEFMaxMind.com` and the metadata map.
//!
//! Nested networks may be inserted in any order: the longer prefix wins for the addresses it
//! covers; inserting the same network again replaces its value.
//!
//! This file is also compiled into `mhc-node`'s unit tests through `#[path]` (the node cannot
//! depend on this crate without a cycle), so it uses only `std` and `ipnet`.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

/// The marker before the metadata map.
const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";
/// Zero bytes between the search tree and the data section.
const DATA_SEPARATOR_LEN: usize = 16;

// Data type numbers of the format. Types above 7 are "extended": encoded as type 0 plus a byte.
const TYPE_POINTER: u8 = 1;
const TYPE_STRING: u8 = 2;
const TYPE_DOUBLE: u8 = 3;
const TYPE_BYTES: u8 = 4;
const TYPE_UINT16: u8 = 5;
const TYPE_UINT32: u8 = 6;
const TYPE_MAP: u8 = 7;
const TYPE_INT32: u8 = 8;
const TYPE_UINT64: u8 = 9;
const TYPE_UINT128: u8 = 10;
const TYPE_ARRAY: u8 = 11;
const TYPE_BOOL: u8 = 14;
const TYPE_FLOAT: u8 = 15;

/// A value in the data section.
#[derive(Debug, Clone, PartialEq)]
pub enum MmdbValue {
    /// A map with string keys (type 7).
    Map(BTreeMap<String, MmdbValue>),
    /// A UTF-8 string (type 2).
    String(String),
    /// An IEEE 754 double (type 3).
    Double(f64),
    /// An IEEE 754 single (type 15).
    Float(f32),
    /// Raw bytes (type 4).
    Bytes(Vec<u8>),
    /// Unsigned 16-bit (type 5).
    U16(u16),
    /// Unsigned 32-bit (type 6).
    U32(u32),
    /// Unsigned 64-bit (type 9).
    U64(u64),
    /// Unsigned 128-bit (type 10).
    U128(u128),
    /// Signed 32-bit (type 8).
    I32(i32),
    /// A boolean (type 14).
    Bool(bool),
    /// An array (type 11).
    Array(Vec<MmdbValue>),
}

impl MmdbValue {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Self {
        Self::String(s.into())
    }

    /// A map from `(key, value)` pairs.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, MmdbValue)>) -> Self {
        Self::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<&str> for MmdbValue {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<f64> for MmdbValue {
    fn from(v: f64) -> Self {
        Self::Double(v)
    }
}

/// A GeoIP2/GeoLite2 City record with the fields routing reads (`country.iso_code`,
/// `continent.code`, `location.latitude`/`longitude`, `city.names.en`) plus the neighbours real
/// records carry (`geoname_id`s, `names`, `accuracy_radius`, `registered_country`,
/// `subdivisions`, with fixed values), so a reader has to skip fields it does not want.
pub fn geoip2_city(
    country_iso: &str,
    continent_code: &str,
    lat: f64,
    lon: f64,
    city: &str,
) -> MmdbValue {
    let names =
        |name: &str| MmdbValue::map([("en", MmdbValue::from(name)), ("de", MmdbValue::from(name))]);
    let country = MmdbValue::map([
        ("geoname_id", MmdbValue::U32(6_252_001)),
        ("iso_code", MmdbValue::from(country_iso)),
        ("names", names(country_iso)),
    ]);
    MmdbValue::map([
        (
            "city",
            MmdbValue::map([
                ("geoname_id", MmdbValue::U32(5_375_480)),
                ("names", names(city)),
            ]),
        ),
        (
            "continent",
            MmdbValue::map([
                ("code", MmdbValue::from(continent_code)),
                ("geoname_id", MmdbValue::U32(6_255_149)),
                ("names", names(continent_code)),
            ]),
        ),
        ("country", country.clone()),
        (
            "location",
            MmdbValue::map([
                ("accuracy_radius", MmdbValue::U16(1000)),
                ("latitude", MmdbValue::Double(lat)),
                ("longitude", MmdbValue::Double(lon)),
                ("time_zone", MmdbValue::from("America/Chicago")),
            ]),
        ),
        ("registered_country", country),
        (
            "subdivisions",
            MmdbValue::Array(vec![MmdbValue::map([
                ("iso_code", MmdbValue::from("CA")),
                ("names", names("California")),
            ])]),
        ),
    ])
}

/// A flat record as in the ip-location-db / DB-IP lite city databases: `country_code`, `state1`,
/// `city`, `latitude`, `longitude` (as floats, the type those files use), `postcode`, `timezone`.
pub fn dbip_flat(country_code: &str, lat: f64, lon: f64, city: &str) -> MmdbValue {
    MmdbValue::map([
        ("city", MmdbValue::from(city)),
        ("country_code", MmdbValue::from(country_code)),
        ("latitude", MmdbValue::Float(lat as f32)),
        ("longitude", MmdbValue::Float(lon as f32)),
        ("postcode", MmdbValue::from("")),
        ("state1", MmdbValue::from("State")),
        ("timezone", MmdbValue::from("UTC")),
    ])
}

/// Builds one `.mmdb` file in memory.
#[derive(Debug, Clone)]
pub struct MmdbWriter {
    database_type: String,
    ip_version: u16,
    record_size: Option<u16>,
    build_epoch: u64,
    description: String,
    entries: Vec<(IpNet, MmdbValue)>,
}

impl MmdbWriter {
    /// A writer for a database of `database_type` (metadata `database_type`, e.g.
    /// `"GeoLite2-City"`) whose search tree covers IPv4 only (`ip_version` 4) or IPv6 with IPv4 at
    /// `::/96` (`ip_version` 6).
    ///
    /// # Panics
    /// If `ip_version` is neither 4 nor 6.
    pub fn new(database_type: &str, ip_version: u8) -> Self {
        assert!(
            ip_version == 4 || ip_version == 6,
            "ip_version must be 4 or 6, not {ip_version}"
        );
        Self {
            database_type: database_type.to_owned(),
            ip_version: u16::from(ip_version),
            record_size: None,
            build_epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            description: format!("{database_type} written by mhc-tests"),
            entries: Vec::new(),
        }
    }

    /// Forces the search-tree record size (24, 28 or 32 bits) instead of the smallest that fits.
    ///
    /// # Panics
    /// If `bits` is not 24, 28 or 32.
    pub fn record_size(mut self, bits: u16) -> Self {
        assert!(
            matches!(bits, 24 | 28 | 32),
            "record size must be 24, 28 or 32, not {bits}"
        );
        self.record_size = Some(bits);
        self
    }

    /// Sets the metadata `build_epoch` (default: now).
    pub fn build_epoch(mut self, epoch: u64) -> Self {
        self.build_epoch = epoch;
        self
    }

    /// Maps every address of `net` to `value`, except those covered by a longer prefix.
    ///
    /// # Panics
    /// If `net` is an IPv6 network and the database is IPv4-only.
    pub fn insert(&mut self, net: IpNet, value: MmdbValue) -> &mut Self {
        assert!(
            self.ip_version == 6 || matches!(net, IpNet::V4(_)),
            "cannot insert the IPv6 network {net} into an IPv4-only database"
        );
        self.entries.push((net.trunc(), value));
        self
    }

    /// The whole database file.
    ///
    /// # Panics
    /// If the tree or data section is too large for 32-bit records (not a test-sized database).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut data = DataSection::default();
        let bit_count = if self.ip_version == 6 { 128 } else { 32 };
        let mut tree = Tree::default();
        // Shorter prefixes first: a longer one then splits the shorter one's record, so the
        // longer prefix wins whatever the insertion order. The sort is stable, so of two equal
        // networks the one inserted last wins.
        let mut entries: Vec<(u128, u8, &MmdbValue)> = self
            .entries
            .iter()
            .map(|(net, value)| {
                let (bits, len) = tree_position(*net, bit_count);
                (bits, len, value)
            })
            .collect();
        entries.sort_by_key(|&(_, len, _)| len);
        for (bits, len, value) in entries {
            let offset = data.add_record(value);
            tree.insert(bits, len, Record::Data(offset));
        }

        let node_count = tree.nodes.len();
        let max_record = node_count + DATA_SEPARATOR_LEN + data.bytes.len();
        let record_size = self.record_size.unwrap_or(match max_record {
            m if m < 1 << 24 => 24,
            m if m < 1 << 28 => 28,
            _ => 32,
        });
        assert!(
            (max_record as u64) < 1u64 << record_size,
            "{max_record} does not fit {record_size}-bit records"
        );

        let mut out =
            Vec::with_capacity(node_count * usize::from(record_size) / 4 + data.bytes.len() + 256);
        for node in &tree.nodes {
            let [left, right] = node.map(|r| match r {
                Record::Empty => node_count as u32,
                Record::Node(n) => n as u32,
                Record::Data(offset) => (node_count + DATA_SEPARATOR_LEN + offset) as u32,
            });
            write_node(&mut out, record_size, left, right);
        }
        out.extend_from_slice(&[0; DATA_SEPARATOR_LEN]);
        out.extend_from_slice(&data.bytes);
        out.extend_from_slice(METADATA_MARKER);
        let metadata = MmdbValue::map([
            ("binary_format_major_version", MmdbValue::U16(2)),
            ("binary_format_minor_version", MmdbValue::U16(0)),
            ("build_epoch", MmdbValue::U64(self.build_epoch)),
            (
                "database_type",
                MmdbValue::from(self.database_type.as_str()),
            ),
            (
                "description",
                MmdbValue::map([("en", MmdbValue::from(self.description.as_str()))]),
            ),
            ("ip_version", MmdbValue::U16(self.ip_version)),
            ("languages", MmdbValue::Array(vec![MmdbValue::from("en")])),
            ("node_count", MmdbValue::U32(node_count as u32)),
            ("record_size", MmdbValue::U16(record_size)),
        ]);
        encode_plain(&metadata, &mut out);
        out
    }
}

/// Where `net` sits in a tree of `bit_count` bits: its address as the high bits of a `u128`
/// and its prefix length in the tree.
fn tree_position(net: IpNet, bit_count: u32) -> (u128, u8) {
    match (net, bit_count) {
        // An IPv4 tree: the address in the top 32 bits, read first.
        (IpNet::V4(n), 32) => (u128::from(u32::from(n.network())) << 96, n.prefix_len()),
        // IPv4 in an IPv6 tree: `::a.b.c.d`, 96 zero bits then the address.
        (IpNet::V4(n), _) => (u128::from(u32::from(n.network())), 96 + n.prefix_len()),
        (IpNet::V6(n), _) => (u128::from(n.network()), n.prefix_len()),
    }
}

#[derive(Debug, Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// The search tree while it is built: node 0 is the root.
#[derive(Debug)]
struct Tree {
    nodes: Vec<[Record; 2]>,
}

impl Default for Tree {
    fn default() -> Self {
        Self {
            nodes: vec![[Record::Empty; 2]],
        }
    }
}

impl Tree {
    /// Sets the record of the `len`-bit prefix of `bits`, whose tree bit 0 is the top bit of
    /// the `u128` (see [`tree_position`]). Callers insert shorter prefixes first.
    fn insert(&mut self, bits: u128, len: u8, value: Record) {
        if len == 0 {
            self.nodes[0] = [value; 2];
            return;
        }
        let mut node = 0;
        for depth in 0..usize::from(len) {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth + 1 == usize::from(len) {
                self.nodes[node][bit] = value;
                return;
            }
            node = match self.nodes[node][bit] {
                Record::Node(next) => next,
                // A shorter prefix (inserted earlier) covers this one: split it so that both
                // halves keep its value until the walk below overrides one path.
                old @ (Record::Empty | Record::Data(_)) => {
                    self.nodes.push([old; 2]);
                    let next = self.nodes.len() - 1;
                    self.nodes[node][bit] = Record::Node(next);
                    next
                }
            };
        }
    }
}

/// Writes one node of two records in the layout of `record_size`.
fn write_node(out: &mut Vec<u8>, record_size: u16, left: u32, right: u32) {
    match record_size {
        24 => {
            out.extend_from_slice(&left.to_be_bytes()[1..]);
            out.extend_from_slice(&right.to_be_bytes()[1..]);
        }
        28 => {
            // [left bits 23..0][left bits 27..24 | right bits 27..24][right bits 23..0]
            out.extend_from_slice(&left.to_be_bytes()[1..]);
            out.push((((left >> 24) & 0x0F) << 4) as u8 | ((right >> 24) & 0x0F) as u8);
            out.extend_from_slice(&right.to_be_bytes()[1..]);
        }
        32 => {
            out.extend_from_slice(&left.to_be_bytes());
            out.extend_from_slice(&right.to_be_bytes());
        }
        _ => unreachable!("record size checked in MmdbWriter::record_size"),
    }
}

/// The data section and what it already holds, for sharing records and pointing at repeats.
#[derive(Debug, Default)]
struct DataSection {
    bytes: Vec<u8>,
    /// Plain encoding of each top-level record → its offset.
    records: HashMap<Vec<u8>, usize>,
    /// Plain encoding of each string or map written inside a record → its offset.
    values: HashMap<Vec<u8>, usize>,
}

impl DataSection {
    /// Appends `value` unless an equal record is already stored; returns its offset.
    fn add_record(&mut self, value: &MmdbValue) -> usize {
        let mut plain = Vec::new();
        encode_plain(value, &mut plain);
        if let Some(&offset) = self.records.get(&plain) {
            return offset;
        }
        let offset = self.bytes.len();
        // The top level is never a pointer: the search tree must point at a value.
        self.encode_value(value, false);
        self.records.insert(plain, offset);
        offset
    }

    /// Appends `value`, as a pointer to an earlier equal string or map when that is shorter.
    fn encode_value(&mut self, value: &MmdbValue, may_point: bool) {
        let shareable = matches!(value, MmdbValue::String(_) | MmdbValue::Map(_));
        if shareable && may_point {
            let mut plain = Vec::new();
            encode_plain(value, &mut plain);
            if let Some(&target) = self.values.get(&plain) {
                let mut pointer = Vec::new();
                encode_pointer(target, &mut pointer);
                if pointer.len() < plain.len() {
                    self.bytes.extend_from_slice(&pointer);
                    return;
                }
            }
            self.values.insert(plain, self.bytes.len());
        }
        match value {
            MmdbValue::Map(map) => {
                write_header(TYPE_MAP, map.len(), &mut self.bytes);
                for (key, v) in map {
                    self.encode_value(&MmdbValue::String(key.clone()), true);
                    self.encode_value(v, true);
                }
            }
            MmdbValue::Array(items) => {
                write_header(TYPE_ARRAY, items.len(), &mut self.bytes);
                for v in items {
                    self.encode_value(v, true);
                }
            }
            scalar => encode_plain(scalar, &mut self.bytes),
        }
    }
}

/// Encodes `value` without pointers (the form of the metadata, and the key for sharing).
fn encode_plain(value: &MmdbValue, out: &mut Vec<u8>) {
    match value {
        MmdbValue::Map(map) => {
            write_header(TYPE_MAP, map.len(), out);
            for (key, v) in map {
                write_header(TYPE_STRING, key.len(), out);
                out.extend_from_slice(key.as_bytes());
                encode_plain(v, out);
            }
        }
        MmdbValue::Array(items) => {
            write_header(TYPE_ARRAY, items.len(), out);
            for v in items {
                encode_plain(v, out);
            }
        }
        MmdbValue::String(s) => {
            write_header(TYPE_STRING, s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        MmdbValue::Bytes(b) => {
            write_header(TYPE_BYTES, b.len(), out);
            out.extend_from_slice(b);
        }
        MmdbValue::Double(v) => {
            write_header(TYPE_DOUBLE, 8, out);
            out.extend_from_slice(&v.to_be_bytes());
        }
        MmdbValue::Float(v) => {
            write_header(TYPE_FLOAT, 4, out);
            out.extend_from_slice(&v.to_be_bytes());
        }
        MmdbValue::U16(v) => write_uint(TYPE_UINT16, &v.to_be_bytes(), out),
        MmdbValue::U32(v) => write_uint(TYPE_UINT32, &v.to_be_bytes(), out),
        MmdbValue::U64(v) => write_uint(TYPE_UINT64, &v.to_be_bytes(), out),
        MmdbValue::U128(v) => write_uint(TYPE_UINT128, &v.to_be_bytes(), out),
        // Signed integers keep all four bytes so the sign bit is where readers expect it.
        MmdbValue::I32(v) => {
            write_header(TYPE_INT32, 4, out);
            out.extend_from_slice(&v.to_be_bytes());
        }
        // A boolean's value is its size field; it has no payload.
        MmdbValue::Bool(b) => write_header(TYPE_BOOL, usize::from(*b), out),
    }
}

/// An unsigned integer: big-endian with leading zero bytes dropped (zero has no payload).
fn write_uint(type_num: u8, be: &[u8], out: &mut Vec<u8>) {
    let skip = be.iter().take_while(|&&b| b == 0).count();
    write_header(type_num, be.len() - skip, out);
    out.extend_from_slice(&be[skip..]);
}

/// The control byte (type in the top 3 bits, or 0 and an extended-type byte) and the size.
fn write_header(type_num: u8, size: usize, out: &mut Vec<u8>) {
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, Vec::new()),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => {
            let rest = size - 65_821;
            assert!(
                rest < 1 << 24,
                "value of {size} bytes is too large for the format"
            );
            (31, (rest as u32).to_be_bytes()[1..].to_vec())
        }
    };
    if type_num <= 7 {
        out.push(type_num << 5 | size_bits);
    } else {
        out.push(size_bits);
        out.push(type_num - 7);
    }
    out.extend_from_slice(&extra);
}

/// A pointer to data-section offset `target`, in the shortest of the four forms.
fn encode_pointer(target: usize, out: &mut Vec<u8>) {
    let control = TYPE_POINTER << 5;
    match target {
        0..=2_047 => {
            out.push(control | (target >> 8) as u8);
            out.push(target as u8);
        }
        2_048..=526_335 => {
            let v = target - 2_048;
            out.push(control | 1 << 3 | (v >> 16) as u8);
            out.extend_from_slice(&(v as u32).to_be_bytes()[2..]);
        }
        526_336..=134_744_063 => {
            let v = target - 526_336;
            out.push(control | 2 << 3 | (v >> 24) as u8);
            out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
        }
        _ => {
            out.push(control | 3 << 3);
            out.extend_from_slice(&(target as u32).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use maxminddb::{path, Reader};
    use serde_json::{json, Value};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("network literal")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address literal")
    }

    fn tagged(tag: &str) -> MmdbValue {
        MmdbValue::map([("tag", MmdbValue::from(tag))])
    }

    /// The `/24` starting at `base + (i << 8)`.
    fn nth_24(base: u32, i: u32) -> IpNet {
        IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(base + (i << 8)), 24).expect("prefix"))
    }

    /// The `tag` of the record for `addr`, or `None` without a record.
    fn tag_of(reader: &Reader<Vec<u8>>, addr: &str) -> Option<String> {
        reader
            .lookup(ip(addr))
            .expect("lookup")
            .decode_path::<String>(&path!["tag"])
            .expect("decode")
    }

    fn record(reader: &Reader<Vec<u8>>, addr: &str) -> Value {
        reader
            .lookup(ip(addr))
            .expect("lookup")
            .decode()
            .expect("decode")
            .expect("record")
    }

    /// Opens and fully verifies the writer's output.
    fn open(w: &MmdbWriter) -> Reader<Vec<u8>> {
        let reader = Reader::from_source(w.to_bytes()).expect("writer output opens");
        reader.verify().expect("writer output verifies");
        reader
    }

    /// Length of the data section (between the separator and the metadata marker).
    fn data_section_len(bytes: &[u8]) -> usize {
        let reader = Reader::from_source(bytes.to_vec()).expect("opens");
        let md = reader.metadata();
        let tree = md.node_count as usize * usize::from(md.record_size) / 4;
        let marker = bytes
            .windows(METADATA_MARKER.len())
            .rposition(|w| w == METADATA_MARKER)
            .expect("marker");
        marker - tree - DATA_SEPARATOR_LEN
    }

    #[test]
    fn ipv4_database_round_trips_at_every_record_size() {
        for bits in [24, 28, 32] {
            let mut w = MmdbWriter::new("Test-V4", 4)
                .record_size(bits)
                .build_epoch(1_700_000_000);
            w.insert(net("1.2.3.0/24"), tagged("a"))
                .insert(net("8.8.8.0/24"), tagged("b"))
                .insert(net("200.0.0.0/5"), tagged("c"));
            let reader = open(&w);
            let md = reader.metadata();
            assert_eq!(md.record_size, bits);
            assert_eq!(md.ip_version, 4);
            assert_eq!(md.database_type, "Test-V4");
            assert_eq!(md.build_epoch, 1_700_000_000);
            assert_eq!(md.binary_format_major_version, 2);
            assert_eq!(md.languages, ["en"]);
            assert_eq!(tag_of(&reader, "1.2.3.4").as_deref(), Some("a"));
            assert_eq!(tag_of(&reader, "8.8.8.8").as_deref(), Some("b"));
            assert_eq!(tag_of(&reader, "203.1.2.3").as_deref(), Some("c"));
            assert_eq!(tag_of(&reader, "1.2.4.1"), None);
            assert_eq!(tag_of(&reader, "127.0.0.1"), None);
            let hit = reader.lookup(ip("1.2.3.200")).expect("lookup");
            assert_eq!(hit.network().expect("network").to_string(), "1.2.3.0/24");
        }
    }

    #[test]
    fn record_sizes_hold_large_node_numbers() {
        // Over 65,536 nodes: node numbers and data pointers use every byte of a 24-bit record.
        for bits in [24, 28, 32] {
            let mut w = MmdbWriter::new("Test-Large", 6).record_size(bits);
            for i in 0..70_000u32 {
                w.insert(nth_24(0x0B00_0000, i), tagged(&format!("n{i}")));
            }
            let reader = open(&w);
            assert!(reader.metadata().node_count > 65_536);
            assert_eq!(tag_of(&reader, "11.0.0.1").as_deref(), Some("n0"));
            assert_eq!(tag_of(&reader, "12.17.111.1").as_deref(), Some("n69999"));
        }
    }

    #[test]
    fn node_layouts_match_the_spec() {
        // The spec's 28-bit example: each record's top nibble shares the middle byte.
        let mut out = Vec::new();
        write_node(&mut out, 28, 0x0123_4567, 0x089A_BCDE);
        assert_eq!(out, [0x23, 0x45, 0x67, 0x18, 0x9A, 0xBC, 0xDE]);
        out.clear();
        write_node(&mut out, 24, 0x12_3456, 0xAB_CDEF);
        assert_eq!(out, [0x12, 0x34, 0x56, 0xAB, 0xCD, 0xEF]);
        out.clear();
        write_node(&mut out, 32, 0x1234_5678, 0x9ABC_DEF0);
        assert_eq!(out, [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0]);
    }

    #[test]
    fn ipv6_database_holds_ipv4_at_96_and_native_ipv6() {
        for bits in [24, 28, 32] {
            let mut w = MmdbWriter::new("Test-V6", 6).record_size(bits);
            w.insert(net("81.2.69.0/24"), tagged("v4"))
                .insert(net("2001:4860::/32"), tagged("v6"));
            let reader = open(&w);
            assert_eq!(reader.metadata().ip_version, 6);
            assert_eq!(tag_of(&reader, "81.2.69.142").as_deref(), Some("v4"));
            // IPv4 sits at ::/96, where the reader looks for IPv4 addresses.
            assert_eq!(tag_of(&reader, "::5102:458e").as_deref(), Some("v4"));
            assert_eq!(
                tag_of(&reader, "2001:4860:4860::8888").as_deref(),
                Some("v6")
            );
            assert_eq!(tag_of(&reader, "2001:4861::1"), None);
            // No ::ffff:0:0/96 alias is written.
            assert_eq!(tag_of(&reader, "::ffff:81.2.69.142"), None);
            let hit = reader.lookup(ip("81.2.69.142")).expect("lookup");
            assert_eq!(hit.network().expect("network").to_string(), "81.2.69.0/24");
            let hit = reader.lookup(ip("2001:4860:4860::8888")).expect("lookup");
            assert_eq!(
                hit.network().expect("network").to_string(),
                "2001:4860::/32"
            );
        }
    }

    #[test]
    fn ipv6_lookup_in_ipv4_database_is_invalid_input() {
        let mut w = MmdbWriter::new("Test-V4", 4);
        w.insert(net("1.0.0.0/8"), tagged("a"));
        let reader = open(&w);
        let err = reader
            .lookup(ip("2001:db8::1"))
            .expect_err("IPv6 in an IPv4 database");
        assert!(
            matches!(err, maxminddb::MaxMindDbError::InvalidInput { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn longer_prefix_wins_in_any_insertion_order() {
        let nets = [
            ("10.0.0.0/8", "outer"),
            ("10.1.0.0/16", "middle"),
            ("10.1.2.0/24", "inner"),
            ("10.1.2.3/32", "host"),
            ("0.0.0.0/0", "default"),
            ("2001:db8::/32", "v6-outer"),
            ("2001:db8:1::/48", "v6-inner"),
        ];
        let orders: [[usize; 7]; 3] = [
            [0, 1, 2, 3, 4, 5, 6],
            [6, 5, 4, 3, 2, 1, 0],
            [2, 6, 4, 0, 3, 5, 1],
        ];
        let expect = [
            ("10.200.0.1", Some("outer")),
            ("10.1.200.1", Some("middle")),
            ("10.1.2.200", Some("inner")),
            ("10.1.2.3", Some("host")),
            ("10.1.2.2", Some("inner")),
            ("10.1.2.4", Some("inner")),
            ("11.0.0.1", Some("default")),
            ("0.0.0.1", Some("default")),
            ("2001:db8:2::1", Some("v6-outer")),
            ("2001:db8:1::1", Some("v6-inner")),
            // The IPv4 default route covers ::/96 only.
            ("2001:db9::1", None),
        ];
        for order in orders {
            let mut w = MmdbWriter::new("Test-Nested", 6);
            for i in order {
                w.insert(net(nets[i].0), tagged(nets[i].1));
            }
            let reader = open(&w);
            for (addr, tag) in expect {
                assert_eq!(
                    tag_of(&reader, addr).as_deref(),
                    tag,
                    "{addr} in order {order:?}"
                );
            }
        }
    }

    #[test]
    fn whole_ipv4_space_in_an_ipv4_database() {
        let mut w = MmdbWriter::new("Test", 4);
        w.insert(net("0.0.0.0/0"), tagged("all"))
            .insert(net("128.0.0.0/1"), tagged("upper"));
        let reader = open(&w);
        assert_eq!(tag_of(&reader, "1.1.1.1").as_deref(), Some("all"));
        assert_eq!(tag_of(&reader, "255.255.255.255").as_deref(), Some("upper"));
    }

    #[test]
    fn reinserting_a_network_replaces_its_value() {
        let mut w = MmdbWriter::new("Test", 4);
        w.insert(net("192.0.2.0/24"), tagged("old"))
            .insert(net("192.0.2.0/24"), tagged("new"));
        assert_eq!(tag_of(&open(&w), "192.0.2.1").as_deref(), Some("new"));
    }

    #[test]
    fn shared_records_are_stored_once() {
        let city = geoip2_city("US", "NA", 37.751, -97.822, "Wichita");
        let mut one = MmdbWriter::new("Test-Shared", 6).build_epoch(1);
        one.insert(net("100.0.0.0/24"), city.clone());
        let mut many = MmdbWriter::new("Test-Shared", 6).build_epoch(1);
        for i in 0..200 {
            many.insert(nth_24(0x6400_0000, i), city.clone());
        }
        let reader = open(&many);
        let first = reader.lookup(ip("100.0.0.1")).expect("lookup");
        let last = reader.lookup(ip("100.0.199.254")).expect("lookup");
        assert!(first.has_data() && last.has_data());
        assert_eq!(
            first.offset(),
            last.offset(),
            "both networks point at one record"
        );
        assert_eq!(
            record(&reader, "100.0.0.1"),
            record(&reader, "100.0.199.254")
        );
        // Only tree nodes were added; the data section is the same.
        assert_eq!(
            data_section_len(&many.to_bytes()),
            data_section_len(&one.to_bytes())
        );
    }

    #[test]
    fn all_value_types_decode() {
        let long = "x".repeat(300);
        let longer = "y".repeat(70_000);
        let value = MmdbValue::map([
            ("map", MmdbValue::map([("k", MmdbValue::from("v"))])),
            ("string", MmdbValue::from("héllo")),
            ("double", MmdbValue::Double(-12.5)),
            ("float", MmdbValue::Float(1.25)),
            ("bytes", MmdbValue::Bytes(vec![1, 2, 3])),
            ("u16", MmdbValue::U16(65_535)),
            ("u32", MmdbValue::U32(0)),
            ("u64", MmdbValue::U64(u64::MAX)),
            ("u128", MmdbValue::U128(u128::MAX - 1)),
            ("i32", MmdbValue::I32(-7)),
            ("yes", MmdbValue::Bool(true)),
            ("no", MmdbValue::Bool(false)),
            (
                "array",
                MmdbValue::Array(vec![MmdbValue::U32(1), MmdbValue::U32(70_000)]),
            ),
            ("long", MmdbValue::from(long.as_str())),
            ("longer", MmdbValue::from(longer.as_str())),
        ]);
        let mut w = MmdbWriter::new("Test-Types", 4);
        w.insert(net("5.0.0.0/8"), value);
        let reader = open(&w);
        let hit = reader.lookup(ip("5.6.7.8")).expect("lookup");
        let get = |key: &str| -> Value {
            hit.decode_path(&[maxminddb::PathElement::Key(key)])
                .expect("decode")
                .expect("present")
        };
        assert_eq!(get("map"), json!({"k": "v"}));
        assert_eq!(get("string"), "héllo");
        assert_eq!(get("double"), -12.5);
        assert_eq!(get("float"), 1.25);
        assert_eq!(get("u16"), 65_535);
        assert_eq!(get("u32"), 0);
        assert_eq!(get("u64"), u64::MAX);
        assert_eq!(get("i32"), -7);
        assert_eq!(get("yes"), true);
        assert_eq!(get("no"), false);
        assert_eq!(get("array"), json!([1, 70_000]));
        assert_eq!(get("long"), long.as_str());
        assert_eq!(get("longer"), longer.as_str());
        let bytes: Option<&[u8]> = hit.decode_path(&path!["bytes"]).expect("decode");
        assert_eq!(bytes, Some(&[1u8, 2, 3][..]));
        let big: Option<u128> = hit.decode_path(&path!["u128"]).expect("decode");
        assert_eq!(big, Some(u128::MAX - 1));
    }

    #[test]
    fn repeated_values_become_pointers_that_readers_follow() {
        // A 600 kB record first, so that values written after it sit past the 526,336-byte
        // boundary and pointers to them need the 27-bit form; shorter forms point at the
        // values written before it.
        let mut w = MmdbWriter::new("Test-Pointers", 6);
        w.insert(
            net("1.0.0.0/24"),
            geoip2_city("DE", "EU", 52.52, 13.4, "Berlin"),
        );
        w.insert(
            net("2.0.0.0/24"),
            MmdbValue::map([("pad", MmdbValue::Bytes(vec![7; 600_000]))]),
        );
        for i in 0..3_000u32 {
            let city = format!("city-{i}");
            let lat = 48.0 + f64::from(i) / 10_000.0;
            w.insert(
                nth_24(0x0A00_0000, i),
                geoip2_city("FR", "EU", lat, 2.35, &city),
            );
        }
        let bytes = w.to_bytes();
        let plain_size: usize = 3_000 * {
            let mut v = Vec::new();
            encode_plain(&geoip2_city("FR", "EU", 48.0, 2.35, "city-0000"), &mut v);
            v.len()
        };
        assert!(
            data_section_len(&bytes) < 600_000 + plain_size / 2,
            "repeats are pointers"
        );
        let reader = open(&w);
        // 2999 = 11 * 256 + 183.
        let city: maxminddb::geoip2::City<'_> = reader
            .lookup(ip("10.11.183.9"))
            .expect("lookup")
            .decode()
            .expect("decode")
            .expect("record");
        assert_eq!(city.country.iso_code, Some("FR"));
        assert_eq!(city.registered_country.iso_code, Some("FR"));
        assert_eq!(city.continent.code, Some("EU"));
        assert_eq!(city.city.names.english, Some("city-2999"));
        assert_eq!(city.city.names.german, Some("city-2999"));
        assert_eq!(city.location.longitude, Some(2.35));
        assert_eq!(city.subdivisions[0].iso_code, Some("CA"));
        let berlin: maxminddb::geoip2::City<'_> = reader
            .lookup(ip("1.0.0.1"))
            .expect("lookup")
            .decode()
            .expect("decode")
            .expect("record");
        assert_eq!(berlin.city.names.english, Some("Berlin"));
    }

    #[test]
    fn pointer_forms_follow_the_spec() {
        // Decodes a pointer as section "Pointer - 1" of the spec describes.
        fn decode(p: &[u8]) -> usize {
            let ss = (p[0] >> 3) & 3;
            let vvv = usize::from(p[0] & 7);
            let be = |b: &[u8]| b.iter().fold(0usize, |acc, &x| acc << 8 | usize::from(x));
            match ss {
                0 => vvv << 8 | be(&p[1..2]),
                1 => (vvv << 16 | be(&p[1..3])) + 2_048,
                2 => (vvv << 24 | be(&p[1..4])) + 526_336,
                _ => be(&p[1..5]),
            }
        }
        for (target, len) in [
            (0, 2),
            (2_047, 2),
            (2_048, 3),
            (526_335, 3),
            (526_336, 4),
            (134_744_063, 4),
            (134_744_064, 5),
            (u32::MAX as usize, 5),
        ] {
            let mut p = Vec::new();
            encode_pointer(target, &mut p);
            assert_eq!(p.len(), len, "{target}");
            assert_eq!(p[0] >> 5, TYPE_POINTER);
            assert_eq!(decode(&p), target);
        }
    }

    #[test]
    fn flat_layout_helper_has_the_dbip_fields() {
        let mut w = MmdbWriter::new("DBIP-City-Lite", 4);
        w.insert(net("81.2.69.0/24"), dbip_flat("GB", 51.5, -0.09, "London"));
        let v = record(&open(&w), "81.2.69.142");
        assert_eq!(v["country_code"], "GB");
        assert_eq!(v["city"], "London");
        assert_eq!(v["state1"], "State");
        assert!((v["latitude"].as_f64().expect("number") - 51.5).abs() < 1e-4);
        assert!((v["longitude"].as_f64().expect("number") + 0.09).abs() < 1e-4);
    }

    #[test]
    fn empty_database_opens_and_finds_nothing() {
        let reader = open(&MmdbWriter::new("Test-Empty", 6));
        assert_eq!(tag_of(&reader, "1.1.1.1"), None);
        assert_eq!(tag_of(&reader, "::1"), None);
    }
}
