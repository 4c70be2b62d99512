//! DSR sales-report import of a 1,000,000-usage-line file, streamed: lines per second and peak
//! RSS, next to two baselines read in the same run from the same file: counting its lines
//! (`BufRead::read_line`, the I/O floor) and parsing it without importing (`DsrReader`).
//! A plain binary (`harness = false`): `cargo bench -p mhc-label --bench dsr`.
//! `DSR_BENCH_LINES` sets the usage lines (default 1,000,000).
//!
//! The catalogue: 10,000 tracks in 100 releases; the file reports each track in 100 of 200
//! territory summaries, one block per track.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::time::Instant;

use mhc_label::dsr::{DsrReader, DsrWriter, Head, Resource, Summary, SummaryKind, Usage};
use mhc_label::ids::{Gs1Prefix, IsrcRegistrant};
use mhc_label::release::{Release, Track};
use mhc_label::sales;
use mhc_label::store::{Allocation, Store};
use mhc_origin::royalty::{Royalty, RoyaltyConfig};

const RELEASES: usize = 100;
const TRACKS_PER_RELEASE: usize = 100;
const SUMMARIES: usize = 200;
const LABEL_PARTY: &str = "PADPIDA2007050901U";

/// Peak resident set size since the last [`reset_peak`], KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Current resident set size, KiB (`VmRSS`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak RSS to the current RSS (Linux: `5` into `clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let lines: usize = std::env::var("DSR_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("scratch dir");
    let db = sled::open(dir.path().join("db")).expect("sled");
    let store = Store::open(&db).expect("store");
    let royalty = Royalty::open(&db, RoyaltyConfig::default()).expect("royalty");

    // The catalogue: ISRCs issued to releases of artist-<r>.
    let registrant = IsrcRegistrant::new("USMHC").unwrap();
    let prefix = Gs1Prefix::new("0614141").unwrap();
    let mut isrcs = Vec::with_capacity(RELEASES * TRACKS_PER_RELEASE);
    for r in 0..RELEASES {
        let alloc = Allocation {
            registrant: &registrant,
            prefix: &prefix,
            year: 2026,
            upc: None,
            isrcs: vec![None; TRACKS_PER_RELEASE],
        };
        let release = store
            .create_release(&alloc, |id, upc, codes| Release {
                id,
                artist: format!("artist-{r}"),
                title: format!("Release {r}"),
                display_artist: format!("Artist {r}"),
                label: "MHC Records".into(),
                genre: "Electronic".into(),
                release_date: "2026-01-01".into(),
                territories: vec!["Worldwide".into()],
                p_line: "2026 MHC Records".into(),
                c_line: "2026 MHC Records".into(),
                upc,
                deals: Vec::new(),
                tracks: codes
                    .into_iter()
                    .enumerate()
                    .map(|(t, isrc)| Track {
                        content_id: format!("r{r}-t{t}"),
                        isrc,
                        title: format!("Track {t}"),
                        display_artist: format!("Artist {r}"),
                        duration_ms: 180_000,
                    })
                    .collect(),
                created_ms: 0,
            })
            .expect("release");
        isrcs.extend(release.tracks.into_iter().map(|t| t.isrc.to_string()));
    }

    // The report, streamed to a file.
    let path = dir.path().join("DSR_report.tsv");
    let started = Instant::now();
    {
        let out = BufWriter::new(File::create(&path).expect("report file"));
        let mut w = DsrWriter::new(out);
        w.head(&Head {
            message_version: "dsrf/1.4/1.2/1.2".into(),
            profile: "BasicAudioProfile".into(),
            profile_version: "1.2".into(),
            message_id: "BENCH-1".into(),
            message_created_date_time: "2027-01-05T10:00:00Z".into(),
            file_number: 1,
            number_of_files: 1,
            usage_start_date: "2026-12-01".into(),
            usage_end_date: "2026-12-31".into(),
            sender_party_id: "PADPIDA2015120100H".into(),
            sender_name: "Bench DSP".into(),
            recipient_party_id: Some(LABEL_PARTY.into()),
            recipient_name: Some("MHC Streaming".into()),
            ..Default::default()
        })
        .unwrap();
        let per_summary = (lines / SUMMARIES).max(1) as u64 * 10;
        for s in 0..SUMMARIES {
            w.summary(&Summary {
                kind: SummaryKind::Sy0202,
                summary_record_id: format!("S{s}"),
                commercial_model: "SubscriptionModel".into(),
                use_type: "OnDemandStream".into(),
                territory: format!(
                    "{}{}",
                    (b'A' + (s / 26) as u8) as char,
                    (b'A' + (s % 26) as u8) as char
                ),
                service_description: Some("Premium".into()),
                usages: per_summary,
                currency_of_reporting: "EUR".into(),
                net_revenue: "1000.00".parse().unwrap(),
                allocated_usages: vec![per_summary.to_string().parse().unwrap()],
                allocated_net_revenue: Some("250.00".parse().unwrap()),
                content_category: Some("Music".into()),
                ..Default::default()
            })
            .unwrap();
        }
        let per_track = (lines / isrcs.len()).max(1);
        let mut written = 0usize;
        'blocks: for (t, isrc) in isrcs.iter().cycle().enumerate() {
            let block = format!("B{t}");
            w.resource(&Resource {
                block_id: block.clone(),
                resource_reference: "R1".into(),
                dsp_resource_id: format!("sp-{t}"),
                isrc: vec![isrc.clone()],
                title: format!("Track {t}"),
                display_artist_name: "Artist".into(),
                resource_type: "SoundRecording".into(),
                ..Default::default()
            })
            .unwrap();
            for u in 0..per_track {
                w.usage(&Usage {
                    block_id: block.clone(),
                    summary_record_id: format!("S{}", (t + u * 2) % SUMMARIES),
                    sales_transaction_id: format!("T{t}-{u}"),
                    transacted_resource: Some("R1".into()),
                    usages: 10,
                    ..Default::default()
                })
                .unwrap();
                written += 1;
                if written >= lines {
                    break 'blocks;
                }
            }
        }
        w.finish().unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "report: {lines} usage lines, {} MiB, written in {:.2} s",
        size >> 20,
        started.elapsed().as_secs_f64()
    );

    // Baseline 1: count the lines.
    reset_peak();
    let base = rss_kib();
    let t = Instant::now();
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(&path).unwrap());
    let mut line = String::new();
    let mut count = 0u64;
    while reader.read_line(&mut line).unwrap() > 0 {
        count += 1;
        line.clear();
    }
    let read_s = t.elapsed().as_secs_f64();
    let read_peak = peak_rss_kib().saturating_sub(base);

    // Baseline 2: parse every record.
    reset_peak();
    let base = rss_kib();
    let t = Instant::now();
    let reader = DsrReader::open(BufReader::with_capacity(
        256 * 1024,
        File::open(&path).unwrap(),
    ))
    .unwrap();
    let mut records = 0u64;
    for r in reader {
        r.expect("the bench's report parses");
        records += 1;
    }
    let parse_s = t.elapsed().as_secs_f64();
    let parse_peak = peak_rss_kib().saturating_sub(base);

    // The import: parse, match, divide, credit, store.
    reset_peak();
    let base = rss_kib();
    let t = Instant::now();
    let import = sales::import(
        &store,
        &royalty,
        "benchdsp",
        LABEL_PARTY,
        BufReader::with_capacity(256 * 1024, File::open(&path).unwrap()),
    )
    .expect("import");
    let import_s = t.elapsed().as_secs_f64();
    let import_peak = peak_rss_kib().saturating_sub(base);
    assert_eq!(import.matched_lines as usize, lines);

    let per_s = |s: f64| count as f64 / s;
    println!(
        "{:<28} {:>12} {:>10} {:>16}",
        "phase", "lines/s", "ratio", "peak RSS +KiB"
    );
    println!(
        "{:<28} {:>12.0} {:>10} {:>16}",
        "read_line (baseline)",
        per_s(read_s),
        "1.00",
        read_peak
    );
    println!(
        "{:<28} {:>12.0} {:>10.2} {:>16}",
        "DsrReader parse",
        per_s(parse_s),
        read_s / parse_s,
        parse_peak
    );
    println!(
        "{:<28} {:>12.0} {:>10.2} {:>16}",
        "import (credit + store)",
        per_s(import_s),
        read_s / import_s,
        import_peak
    );
    println!(
        "{records} records; {} postings; file {} KiB; import peak RSS is {:.3}x the file",
        import.postings,
        size >> 10,
        import_peak as f64 / (size >> 10) as f64
    );
}
