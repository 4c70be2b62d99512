//! `GET /metrics` of a real origin with its plugins: the OpenMetrics text format Prometheus
//! negotiates, every family declared by `# HELP` and `# TYPE` and listed in the README, `# EOF`
//! last, and the plugins' event counters read from the plugin host at scrape time.

use std::time::Duration;

use mhc_tests::{assert_success, copy_sample, metric_families, wait_until, Cluster};

/// The metric names the README's metrics paragraph lists, as scraped: label lists dropped,
/// `{a,b}` alternatives expanded.
fn readme_metrics() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md beside the workspace");
    let start = readme
        .find("Metrics (`GET /metrics`")
        .expect("the README's metrics paragraph");
    let paragraph = &readme[start..];
    let paragraph = &paragraph[..paragraph.find("\n\n").unwrap_or(paragraph.len())];
    let mut names = Vec::new();
    // Every other piece between backticks is code.
    for code in paragraph.split('`').skip(1).step_by(2) {
        if !code.starts_with("mhc_") {
            continue;
        }
        let name = match code.rfind('{') {
            Some(i) if code.ends_with('}') => &code[..i],
            _ => code,
        };
        match (name.find('{'), name.find('}')) {
            (Some(open), Some(close)) => {
                for alternative in name[open + 1..close].split(',') {
                    names.push(format!(
                        "{}{alternative}{}",
                        &name[..open],
                        &name[close + 1..]
                    ));
                }
            }
            _ => names.push(name.to_owned()),
        }
    }
    names
}

#[test]
fn an_origin_serves_openmetrics_and_every_family_is_documented() {
    let mut c = Cluster::new();
    let o = c.start(
        "origin",
        "origin",
        "[plugins.royalty]\ncurrency = \"EUR\"\n[plugins.ledger]\n",
    );
    let sample = c.path().join("sample");
    copy_sample(&sample);
    assert_success(&c.node(o).ingest("sample", &sample), "ingest");
    let node = c.node(o);
    assert_eq!(node.get("/v1/content/sample/index.m3u8").status, 200);

    // The plugins were told about the publication; the host's counters are read at scrape.
    assert!(
        wait_until(Duration::from_secs(10), || {
            ["royalty", "ledger"].iter().all(|plugin| {
                node.metric(&format!(
                    "mhc_plugin_events_total{{plugin=\"{plugin}\",outcome=\"ok\"}}"
                ))
                .is_some_and(|n| n >= 1.0)
            })
        }),
        "plugin events never counted:\n{}",
        node.get("/metrics").text()
    );
    assert_eq!(
        node.metric("mhc_plugin_events_total{plugin=\"royalty\",outcome=\"panic\"}"),
        Some(0.0)
    );

    let r = node.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let families = metric_families(&r.text());
    let documented = readme_metrics();
    let scraped: Vec<String> = families
        .iter()
        .map(|(name, ty)| match ty.as_str() {
            "counter" => format!("{name}_total"),
            _ => name.clone(),
        })
        .collect();
    for name in &scraped {
        assert!(
            documented.contains(name),
            "{name} is scraped but not in the README's list"
        );
    }
    // What every origin exposes from its first scrape, whatever it has done.
    for name in [
        "mhc_build_info",
        "mhc_uptime_seconds",
        "mhc_http_requests_total",
        "mhc_http_request_duration_seconds",
        "mhc_store_ram_capacity_bytes",
        "mhc_ingests_total",
        "mhc_routing_decisions_total",
        "mhc_cluster_members",
        "mhc_mode",
        "mhc_mesh_sent_bytes_total",
        "mhc_downlink_objects_total",
        "mhc_reports_batches_total",
        "mhc_reports_outbox",
        "mhc_reports_received_total",
        "mhc_plugin_events_total",
    ] {
        assert!(scraped.iter().any(|s| s == name), "{name} missing");
    }
}
