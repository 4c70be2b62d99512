//! Tests of [`PluginHost`](super::PluginHost): delivery order, isolation of failing and
//! panicking plugins, retries and dead letters, de-duplication across restarts, publications,
//! admin routing. (A child module of `host`, in its own file to keep `host.rs` readable.)

use std::sync::atomic::AtomicU32;

use super::super::testutil::{published, Fixture};
use super::*;
use crate::report::tests::{node_key, play, report};

/// How a [`TestPlugin`] behaves on events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Record,
    Fail { retryable: bool },
    Panic,
}

/// Records what it sees; fails or panics on inbox events while `failures_left > 0`.
#[derive(Debug)]
struct TestPlugin {
    name: &'static str,
    mode: Mode,
    failures_left: AtomicU32,
    seen: Mutex<Vec<String>>,
}

impl TestPlugin {
    fn new(name: &'static str, mode: Mode, failures: u32) -> Arc<Self> {
        Arc::new(TestPlugin {
            name,
            mode,
            failures_left: AtomicU32::new(failures),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn seen(&self) -> Vec<String> {
        lock(&self.seen).clone()
    }
}

impl Plugin for TestPlugin {
    fn name(&self) -> &'static str {
        self.name
    }

    fn on_event(&self, ev: &CoreEvent<'_>) -> Result<(), PluginError> {
        let label = match ev {
            CoreEvent::PlayReport { report, event_seq } => {
                format!("report:{}:{event_seq}", report.batch.seq)
            }
            CoreEvent::ContentPublished(c) => format!("published:{}", c.content_id),
            CoreEvent::StateChanged { plugin } => format!("changed:{plugin}"),
            other => other.kind().to_string(),
        };
        let inbox_event = matches!(
            ev,
            CoreEvent::PlayReport { .. } | CoreEvent::ContentPublished(_)
        );
        if inbox_event && self.mode != Mode::Record {
            let left = self.failures_left.load(Ordering::SeqCst);
            if left > 0 {
                self.failures_left.store(left - 1, Ordering::SeqCst);
                match self.mode {
                    Mode::Panic => panic!("{} exploded on {label}", self.name),
                    Mode::Fail { retryable } => {
                        return Err(PluginError::Other {
                            message: format!("{} refused {label}", self.name),
                            retryable,
                        })
                    }
                    Mode::Record => unreachable!(),
                }
            }
        }
        lock(&self.seen).push(label);
        Ok(())
    }

    fn admin(&self, req: &AdminRequest) -> Option<Result<AdminResponse, PluginError>> {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "panic") => panic!("admin panic"),
            ("GET", "hello") => Some(Ok(AdminResponse::ok(&self.name))),
            ("POST", "poke") => Some(Ok(AdminResponse::ok(&"poked"))),
            ("POST", "fail") => Some(Err(PluginError::Conflict("no".into()))),
            _ => None,
        }
    }
}

fn host_with(f: &Fixture, plugins: Vec<Arc<dyn Plugin>>) -> PluginHost {
    PluginHost::with_plugins(&f.db, None, None, plugins).unwrap()
}

fn member(_: &[u8; 32]) -> bool {
    true
}

fn stats_of(host: &PluginHost, name: &str) -> PluginStats {
    host.stats().into_iter().find(|s| s.name == name).unwrap()
}

#[test]
fn a_failing_or_panicking_plugin_does_not_stop_the_others() {
    let f = Fixture::new();
    let panicker = TestPlugin::new("panicker", Mode::Panic, u32::MAX);
    let failer = TestPlugin::new("failer", Mode::Fail { retryable: false }, u32::MAX);
    let recorder = TestPlugin::new("recorder", Mode::Record, 0);
    let host = host_with(&f, vec![panicker.clone(), failer.clone(), recorder.clone()]);
    let outcome = host
        .ingest_report(report(1, 7, vec![play("song", "FR", 1_000, 0)]), member)
        .unwrap();
    assert_eq!(outcome, ReportOutcome::Accepted { event_seq: 1 });
    host.publish(published("song", 1, "a")).unwrap();
    let summary = host.tick(5);
    assert!(summary.failures.is_empty(), "{summary:?}");
    assert_eq!(
        recorder.seen(),
        ["tick", "report:7:1", "published:song", "tick"]
    );
    let p = stats_of(&host, "panicker");
    assert_eq!(
        (p.panics, p.errors, p.dead_letters, p.pending),
        (2, 0, 2, 0)
    );
    assert!(p.last_error.unwrap().contains("exploded"));
    let e = stats_of(&host, "failer");
    assert_eq!((e.errors, e.dead_letters, e.events), (2, 2, 2)); // 2 ticks delivered fine
    let r = stats_of(&host, "recorder");
    assert_eq!((r.events, r.errors, r.panics, r.cursor), (4, 0, 0, 2));
    let letters = host.dead_letters("panicker").unwrap();
    assert_eq!(letters[0].event, "play_report");
    assert!(letters[0].panicked);
    assert_eq!(letters[1].event, "content_published");

    // An admin panic is a 500, and the host still answers afterwards.
    let resp = host.admin("panicker", &AdminRequest::new("GET", "panic"));
    assert_eq!(resp.status, 500);
    assert_eq!(stats_of(&host, "panicker").panics, 3);
    let resp = host.admin("panicker", &AdminRequest::new("GET", "hello"));
    assert_eq!((resp.status, resp.text().trim()), (200, "\"panicker\""));
    assert_eq!(
        host.admin("nobody", &AdminRequest::new("GET", "x")).status,
        404
    );
    assert_eq!(
        host.admin("recorder", &AdminRequest::new("GET", "x"))
            .status,
        404
    );
    assert_eq!(
        host.admin("recorder", &AdminRequest::new("POST", "fail"))
            .status,
        409
    );
}

#[test]
fn a_retryable_error_holds_the_event_until_it_succeeds() {
    let f = Fixture::new();
    let flaky = TestPlugin::new("flaky", Mode::Fail { retryable: true }, 2);
    let recorder = TestPlugin::new("recorder", Mode::Record, 0);
    let host = host_with(&f, vec![flaky.clone(), recorder.clone()]);
    host.ingest_report(report(1, 1, vec![]), member).unwrap();
    host.ingest_report(report(1, 2, vec![]), member).unwrap();
    // Two failures of report 1 (one per delivery attempt), report 2 held behind it.
    let s = stats_of(&host, "flaky");
    assert_eq!(
        (s.errors, s.cursor, s.pending, s.dead_letters),
        (2, 0, 2, 0)
    );
    assert_eq!(recorder.seen(), ["tick", "report:1:1", "report:2:2"]);
    let summary = host.tick(1);
    assert!(summary.failures.is_empty(), "{summary:?}");
    assert_eq!(flaky.seen(), ["tick", "report:1:1", "report:2:2", "tick"]);
    assert_eq!(stats_of(&host, "flaky").pending, 0);
}

#[test]
fn dead_letters_can_be_retried_after_a_fix() {
    let f = Fixture::new();
    let picky = TestPlugin::new("picky", Mode::Fail { retryable: false }, 1);
    let host = host_with(&f, vec![picky.clone()]);
    host.ingest_report(report(1, 1, vec![]), member).unwrap();
    host.ingest_report(report(1, 2, vec![]), member).unwrap();
    assert_eq!(picky.seen(), ["tick", "report:2:2"]);
    assert_eq!(host.dead_letters("picky").unwrap().len(), 1);
    let summary = host.retry_dead_letters("picky").unwrap();
    assert_eq!((summary.delivered, summary.failures.len()), (1, 0));
    assert_eq!(picky.seen(), ["tick", "report:2:2", "report:1:1"]);
    assert!(host.dead_letters("picky").unwrap().is_empty());
    assert!(matches!(
        host.retry_dead_letters("nobody"),
        Err(PluginError::UnknownPlugin(_))
    ));
}

#[test]
fn reports_are_checked_and_deduplicated_across_restarts() {
    let f = Fixture::new();
    let recorder = TestPlugin::new("recorder", Mode::Record, 0);
    let host = host_with(&f, vec![recorder.clone()]);
    let r = report(1, 10, vec![play("song", "*", 5_000, 0)]);
    let nobody = |_: &[u8; 32]| false;
    assert!(matches!(
        host.ingest_report(r.clone(), nobody),
        Err(ReportError::NotMember(_))
    ));
    assert_eq!(
        host.ingest_report(r.clone(), member).unwrap(),
        ReportOutcome::Accepted { event_seq: 1 }
    );
    // A resend is a duplicate, even from a node that has left since.
    assert_eq!(
        host.ingest_report(r.clone(), nobody).unwrap(),
        ReportOutcome::Duplicate { event_seq: 1 }
    );
    let other = report(1, 10, vec![play("song", "*", 6_000, 0)]);
    assert!(matches!(
        host.ingest_report(other, member),
        Err(ReportError::SeqReused { seq: 10, .. })
    ));
    let mut forged = r.clone();
    forged.batch.seq = 11;
    assert!(matches!(
        host.ingest_report(forged, member),
        Err(ReportError::BadSignature { .. })
    ));
    // Same seq from another node is another report.
    assert_eq!(
        host.ingest_report(report(2, 10, vec![]), member).unwrap(),
        ReportOutcome::Accepted { event_seq: 2 }
    );
    assert_eq!(recorder.seen(), ["tick", "report:10:1", "report:10:2"]);
    drop(host);

    let f = f.reopen();
    let recorder = TestPlugin::new("recorder", Mode::Record, 0);
    let host = host_with(&f, vec![recorder.clone()]);
    assert_eq!(
        host.ingest_report(r, member).unwrap(),
        ReportOutcome::Duplicate { event_seq: 1 }
    );
    // Everything was delivered before the restart: nothing is delivered again.
    assert_eq!(recorder.seen(), ["tick"]);
    assert_eq!(host.last_event_seq().unwrap(), 2);
}

#[test]
fn a_plugin_enabled_later_receives_the_history() {
    let f = Fixture::new();
    let host = host_with(&f, vec![]);
    host.ingest_report(report(1, 1, vec![]), member).unwrap();
    host.publish(published("song", 1, "a")).unwrap();
    drop(host);
    let f = f.reopen();
    let late = TestPlugin::new("late", Mode::Record, 0);
    let _host = host_with(&f, vec![late.clone()]);
    assert_eq!(late.seen(), ["report:1:1", "published:song", "tick"]);
}

#[test]
fn publications_are_idempotent_and_validated() {
    let f = Fixture::new();
    let host = host_with(&f, vec![]);
    let p = published("song", 1, "a");
    assert_eq!(
        host.publish(p.clone()).unwrap(),
        PublishOutcome::Published { event_seq: 1 }
    );
    assert_eq!(
        host.publish(p.clone()).unwrap(),
        PublishOutcome::Unchanged { event_seq: 1 }
    );
    let mut changed = p.clone();
    changed.title = "Other".into();
    assert!(matches!(
        host.publish(changed),
        Err(PluginError::Conflict(_))
    ));
    for bad in [
        published("Song", 1, "a"),
        published("song", 2, ""),
        published("song", 2, " a"),
        published("song", 2, &"a".repeat(129)),
    ] {
        assert_eq!(host.publish(bad).unwrap_err().http_status(), 400);
    }
}

#[test]
fn admin_writes_notify_the_other_plugins() {
    let f = Fixture::new();
    let a = TestPlugin::new("a", Mode::Record, 0);
    let b = TestPlugin::new("b", Mode::Record, 0);
    let host = host_with(&f, vec![a.clone(), b.clone()]);
    host.admin("a", &AdminRequest::new("GET", "hello"));
    host.admin("a", &AdminRequest::new("POST", "fail"));
    assert_eq!(
        host.admin("a", &AdminRequest::new("POST", "poke")).status,
        200
    );
    assert_eq!(a.seen(), ["tick"]);
    assert_eq!(b.seen(), ["tick", "changed:a"]);
}

#[test]
fn plugin_names_must_be_unique_and_path_safe() {
    let f = Fixture::new();
    let twice: Vec<Arc<dyn Plugin>> = vec![
        TestPlugin::new("x", Mode::Record, 0),
        TestPlugin::new("x", Mode::Record, 0),
    ];
    assert!(matches!(
        PluginHost::with_plugins(&f.db, None, None, twice),
        Err(PluginError::Config { .. })
    ));
    let bad: Vec<Arc<dyn Plugin>> = vec![TestPlugin::new("a/b", Mode::Record, 0)];
    assert!(PluginHost::with_plugins(&f.db, None, None, bad).is_err());
    let host = host_with(&f, vec![TestPlugin::new("ok-1", Mode::Record, 0)]);
    assert_eq!(host.plugin_names(), ["ok-1"]);
    assert!(host.royalty().is_none() && host.ledger().is_none());
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PluginHost>();
}

#[test]
fn concurrent_ingestion_delivers_each_report_once_in_order() {
    let f = Fixture::new();
    let recorder = TestPlugin::new("recorder", Mode::Record, 0);
    let host = Arc::new(host_with(&f, vec![recorder.clone()]));
    let threads: Vec<_> = (1..=4u8)
        .map(|n| {
            let host = host.clone();
            std::thread::spawn(move || {
                for seq in 1..=10 {
                    let r = report(n, seq, vec![]);
                    host.ingest_report(r.clone(), member).unwrap();
                    // Every report is resent once, as after a lost acknowledgement.
                    assert!(matches!(
                        host.ingest_report(r, member).unwrap(),
                        ReportOutcome::Duplicate { .. }
                    ));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seen = recorder.seen();
    assert_eq!(seen.len(), 41);
    let seqs: Vec<u64> = seen[1..]
        .iter()
        .map(|s| s.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    let _ = node_key(1);
}

#[test]
fn plugins_config_reads_empty_tables_as_defaults() {
    let c: PluginsConfig = serde_json::from_str(r#"{"ledger": {}}"#).unwrap();
    assert_eq!(c.ledger, Some(LedgerPluginConfig::default()));
    assert!(c.royalty.is_none());
    let c: PluginsConfig = serde_json::from_str(r#"{"royalty": {}, "ledger": {}}"#).unwrap();
    assert_eq!(c.royalty, Some(RoyaltyConfig::default()));
    assert!(serde_json::from_str::<PluginsConfig>(r#"{"label": {}}"#).is_err());
    assert!(serde_json::from_str::<PluginsConfig>(r#"{"ledger": {"batch": 1}}"#).is_err());
    // A ledger without royalty opens and serves, with nothing to record.
    let f = Fixture::new();
    let config = PluginsConfig {
        royalty: None,
        ledger: Some(LedgerPluginConfig::default()),
    };
    let host = PluginHost::new(&f.db, f.key(), &config).unwrap();
    host.ingest_report(report(1, 1, vec![]), member).unwrap();
    assert_eq!(host.plugin_names(), ["ledger"]);
    let status = host.admin("ledger", &AdminRequest::new("GET", "status"));
    let v: serde_json::Value = status.json_body().unwrap();
    assert_eq!(
        (v["entries"].as_u64(), v["royalty_feed"].as_bool()),
        (Some(0), Some(false))
    );
    let bad = PluginsConfig {
        royalty: None,
        ledger: Some(LedgerPluginConfig {
            max_batch_entries: 0,
            anchor: None,
        }),
    };
    assert!(matches!(
        PluginHost::new(&f.db, f.key(), &bad),
        Err(PluginError::Config { .. })
    ));
}
