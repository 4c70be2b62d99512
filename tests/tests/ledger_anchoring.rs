//! The ledger anchored on a real chain (anvil, started by the test): plays through an edge
//! become ledger entries, whose signed heads are anchored in self-transactions that anyone can
//! read over plain JSON-RPC; the chain frozen for three intervals changes nothing for the ledger,
//! and only the latest head is anchored when it is back; `ledger verify --anchors` and the
//! offline `ledger verify --export … --rpc-url …` pass, and name the anchor that fails when an
//! export's transaction is altered or the log is rewritten after anchoring.

use std::path::Path;
use std::time::Duration;

use mhc_origin::ledger::{
    anchor_payload, export_anchors, EntryKind, Ledger, NewEntry, SignedTreeHead,
};
use mhc_tests::anvil::Anvil;
use mhc_tests::{assert_success, wait_until, Cluster, NodeOptions, NodeProcess};

const INTERVAL_S: u64 = 2;
const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";

fn origin_toml(c: &Cluster, anvil: &Anvil) -> String {
    let key = c.path().join("anchor.key");
    anvil.write_key(0, &key);
    format!(
        "[http]\nadmin_token = \"{ADMIN_TOKEN}\"\n[reports]\nreport_interval_s = 1\n\
         [plugins.royalty]\ncurrency = \"EUR\"\n\
         rates = {{ \"*\" = {{ per_second_micro = 1000000, per_play_micro = 0 }} }}\n\
         [plugins.ledger]\n\
         [plugins.ledger.anchor]\nrpc_url = \"{}\"\nchain_id = 31337\nkey = {:?}\n\
         interval_s = {INTERVAL_S}\nconfirmations = 2\n",
        anvil.url,
        key.to_str().unwrap()
    )
}

fn cli(node: &NodeProcess, args: &[&str]) -> std::process::Output {
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--data-dir", &data_dir]);
    node.cli(&all)
}

/// `ledger anchors --json`.
fn anchors(node: &NodeProcess) -> Vec<serde_json::Value> {
    let out = cli(node, &["ledger", "anchors", "--json"]);
    assert_success(&out, "ledger anchors --json");
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("a JSON array")
}

fn confirmed_sizes(node: &NodeProcess) -> Vec<u64> {
    anchors(node)
        .iter()
        .filter(|a| a["state"] == "confirmed")
        .map(|a| a["tree_size"].as_u64().unwrap())
        .collect()
}

/// The origin's signed heads.
fn heads(node: &NodeProcess) -> Vec<SignedTreeHead> {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let r = node.request(
        "GET",
        "/admin/plugins/ledger/heads",
        &[("Authorization", &bearer)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn latest_size(node: &NodeProcess) -> u64 {
    heads(node).last().map_or(0, |h| h.size)
}

/// The ledger's size once play reports stopped arriving (unchanged for three seconds).
fn settled_size(node: &NodeProcess) -> u64 {
    let mut last = latest_size(node);
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = latest_size(node);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Plays `segments` segments of `id` through `edge` as a new viewer.
fn watch(edge: &NodeProcess, id: &str, viewer: usize, segments: usize) {
    let agent = format!("viewer-{viewer}");
    for i in 0..segments {
        let r = edge.request(
            "GET",
            &format!("/v1/content/{id}/seg/{i}.ts"),
            &[("User-Agent", &agent)],
        );
        assert_eq!(r.status, 200);
    }
}

#[test]
fn heads_are_anchored_verified_and_survive_an_outage() {
    let anvil = Anvil::start(Some(1));
    let mut c = Cluster::new();
    let extra = origin_toml(&c, &anvil);
    let o = c.start_with(
        "origin",
        NodeOptions::new("origin").heartbeat_ms(250).extra(&extra),
    );
    let dir = c.path().join("song");
    mhc_tests::write_synthetic_rendition(&dir, 10, 5_000, 3);
    assert_success(
        &c.node(o).ingest_as("song", "Song", "alice", &dir),
        "ingest",
    );
    let edge = NodeOptions::new("edge")
        .heartbeat_ms(250)
        .bootstrap(&c.node(o).p2p)
        .extra(&format!(
            "[trust]\npublishers = [\"{}\"]\n[reports]\nreport_interval_s = 1\n",
            c.node(o).public_key.as_deref().unwrap()
        ));
    let e = c.start_with("edge", edge);
    assert!(wait_until(Duration::from_secs(10), || c
        .node(e)
        .alive_members()
        >= 1));

    // Plays → royalty → ledger entries → an anchor, confirmed within two intervals of the head
    // (plus the two blocks of its confirmations).
    watch(c.node(e), "song", 0, 10);
    assert!(
        wait_until(Duration::from_secs(20), || latest_size(c.node(o)) > 0),
        "no ledger entries\n{}",
        c.node(o).log_tail()
    );
    let settled = settled_size(c.node(o));
    let head = *heads(c.node(o)).iter().find(|h| h.size == settled).unwrap();
    assert!(
        wait_until(Duration::from_secs(2 * INTERVAL_S + 10), || {
            confirmed_sizes(c.node(o)).contains(&head.size)
        }),
        "head of size {} not anchored: {:?}\n{}",
        head.size,
        anchors(c.node(o)),
        c.node(o).log_tail()
    );

    // Anyone reads it over plain JSON-RPC: a self-transaction of the anchor account whose
    // input is exactly MHC1 ‖ size ‖ root ‖ BLAKE3(signed head).
    let first = anchors(c.node(o))
        .into_iter()
        .find(|a| a["tree_size"] == head.size && a["state"] == "confirmed")
        .unwrap();
    assert_eq!(first["root"], hex::encode(head.root));
    let tx = anvil.rpc(
        "eth_getTransactionByHash",
        serde_json::json!([first["tx_hash"]]),
    );
    let anchor_account = anvil.addresses[0].to_lowercase();
    assert_eq!(tx["from"].as_str().unwrap().to_lowercase(), anchor_account);
    assert_eq!(tx["to"].as_str().unwrap().to_lowercase(), anchor_account);
    assert_eq!(
        tx["input"].as_str().unwrap(),
        format!("0x{}", hex::encode(anchor_payload(&head)))
    );
    assert_eq!(
        Anvil::quantity(&tx["blockNumber"]) as u64,
        first["block"].as_u64().unwrap()
    );
    assert_success(
        &cli(c.node(o), &["ledger", "verify", "--anchors"]),
        "ledger verify --anchors",
    );
    assert!(c.node(o).metric("mhc_ledger_anchor_last_size").is_some());

    // The chain frozen for three intervals: the ledger keeps appending locally.
    let before = confirmed_sizes(c.node(o));
    anvil.freeze();
    let frozen_at = latest_size(c.node(o));
    for viewer in 1..=3 {
        watch(c.node(e), "song", viewer, 4);
        std::thread::sleep(Duration::from_secs(INTERVAL_S));
    }
    assert!(
        wait_until(Duration::from_secs(10), || latest_size(c.node(o))
            > frozen_at),
        "the ledger stopped with the chain"
    );
    let grown = settled_size(c.node(o));
    assert!(
        wait_until(Duration::from_secs(15), || c
            .node(o)
            .metric("mhc_ledger_anchor_rpc_errors_total")
            .unwrap_or(0.0)
            > 0.0),
        "no RPC errors counted while the chain was frozen"
    );
    assert_eq!(
        confirmed_sizes(c.node(o)),
        before,
        "nothing confirmed while frozen"
    );
    anvil.thaw();
    // No more plays: the latest head is what must be anchored now, once.
    assert!(
        wait_until(Duration::from_secs(6 * INTERVAL_S + 30), || {
            confirmed_sizes(c.node(o)).contains(&grown)
        }),
        "the latest head ({grown}) was not anchored after the outage: {:?}\n{}",
        anchors(c.node(o)),
        c.node(o).log_tail()
    );
    let sizes = confirmed_sizes(c.node(o));
    assert!(
        sizes.windows(2).all(|w| w[0] < w[1]),
        "a head anchored twice, or out of order: {sizes:?}"
    );
    let intermediate = sizes
        .iter()
        .filter(|s| **s > frozen_at && **s < grown)
        .count();
    assert!(
        intermediate <= 1,
        "the heads of the outage were anchored one by one: {sizes:?}"
    );
    // One transaction per confirmed anchor left the account: nothing was sent twice.
    let nonce = Anvil::quantity(&anvil.rpc(
        "eth_getTransactionCount",
        serde_json::json!([anvil.addresses[0], "latest"]),
    ));
    assert_eq!(nonce as usize, sizes.len(), "{:?}", anchors(c.node(o)));
    assert_success(
        &cli(c.node(o), &["ledger", "verify", "--anchors"]),
        "ledger verify --anchors after the outage",
    );

    // Offline, from an export, by anyone with the public key and a JSON-RPC endpoint.
    let export = c.path().join("ledger.json");
    assert_success(
        &cli(
            c.node(o),
            &["ledger", "export", "--out", export.to_str().unwrap()],
        ),
        "ledger export",
    );
    let bytes = std::fs::read(&export).unwrap();
    assert_eq!(export_anchors(&bytes).unwrap().anchors.len(), sizes.len());
    let key = c.node(o).public_key.clone().unwrap();
    let verify_offline = |path: &Path| {
        c.node(o).cli(&[
            "ledger",
            "verify",
            "--export",
            path.to_str().unwrap(),
            "--public-key",
            &key,
            "--rpc-url",
            &anvil.url,
        ])
    };
    assert_success(&verify_offline(&export), "offline verify with anchors");

    // An anchor whose transaction is altered in the export: named.
    let doc = export_anchors(&bytes).unwrap();
    let (a, b) = (&doc.anchors[0], &doc.anchors[1]);
    let altered = String::from_utf8(bytes.clone())
        .unwrap()
        .replacen(&a.tx_hash, &b.tx_hash, 1);
    let altered_path = c.path().join("altered.json");
    std::fs::write(&altered_path, altered).unwrap();
    let out = verify_offline(&altered_path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("anchor of tree size {}", a.tree_size)),
        "{stderr}"
    );

    // The log rewritten after anchoring (one amount changed, every head re-signed with the
    // origin's own key): the export verifies on its own, the anchors name the rewrite.
    let rewritten = rewrite(&bytes, &c.node(o).data_dir.join("node.key"));
    let rewritten_path = c.path().join("rewritten.json");
    std::fs::write(&rewritten_path, rewritten).unwrap();
    let out = c.node(o).cli(&[
        "ledger",
        "verify",
        "--export",
        rewritten_path.to_str().unwrap(),
        "--public-key",
        &key,
    ]);
    assert_success(&out, "the rewritten export verifies without anchors");
    let out = verify_offline(&rewritten_path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a rewritten log passed");
    assert!(
        stderr.contains(&format!("anchor of tree size {}", doc.anchors[0].tree_size))
            && stderr.contains("rewritten"),
        "{stderr}"
    );
    eprintln!(
        "anchors: {:?}\nthe rewritten log: {stderr}",
        anchors(c.node(o))
    );
}

/// The export's log rebuilt with entry 0's amount raised by one, in the same batches at the
/// same times, re-signed with the origin's key, carrying the original anchors.
fn rewrite(export: &[u8], key_file: &Path) -> Vec<u8> {
    // The node key file: the raw 32-byte seed, or it as hex.
    let bytes = std::fs::read(key_file).unwrap();
    let mut seed = [0u8; 32];
    if bytes.len() == 32 {
        seed.copy_from_slice(&bytes);
    } else {
        hex::decode_to_slice(String::from_utf8(bytes).unwrap().trim(), &mut seed).unwrap();
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let doc: serde_json::Value = serde_json::from_slice(export).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let mut ledger = Ledger::open(&db, key).unwrap();
    let entries = doc["entries"].as_array().unwrap();
    let mut at = 0usize;
    for head in doc["heads"].as_array().unwrap() {
        let size = head["size"].as_u64().unwrap() as usize;
        let batch = entries[at..size]
            .iter()
            .map(|e| {
                let kind: EntryKind = serde_json::from_value(e["kind"].clone()).unwrap();
                let mut amount = e["amount_minor"].as_i64().unwrap();
                if e["index"] == 0 {
                    amount += 1;
                }
                NewEntry::new(
                    kind,
                    e["account"].as_str().unwrap(),
                    amount,
                    e["currency"].as_str().unwrap(),
                    e["source"].as_str().unwrap(),
                )
                .with_reference(e["reference"].as_str().unwrap())
                .with_memo(e["memo"].as_str().unwrap_or_default())
            })
            .collect();
        ledger
            .append_batch_at(batch, head["time_ms"].as_u64().unwrap())
            .unwrap();
        at = size;
    }
    let mut out = Vec::new();
    ledger
        .export_json(mhc_origin::ledger::ExportScope::All, &mut out)
        .unwrap();
    // The original anchors, spliced in where the export ends.
    let original = String::from_utf8(export.to_vec()).unwrap();
    let anchors = &original[original.find(",\n\"anchors\"").unwrap()..original.rfind('}').unwrap()];
    let mut rewritten = String::from_utf8(out).unwrap();
    let end = rewritten.rfind('}').unwrap();
    rewritten.insert_str(end, anchors);
    rewritten.into_bytes()
}

/// An anchor that the chain does not mine is replaced, after a while, by the same transaction
/// at higher fees with the same nonce; only one of them is ever mined and confirmed.
#[test]
fn a_stuck_anchor_is_replaced_by_a_fee_bump_of_the_same_nonce() {
    // No blocks until the test mines them: the anchor waits in the pool.
    let anvil = Anvil::start(None);
    let mut c = Cluster::new();
    let extra = origin_toml(&c, &anvil);
    let o = c.start_with("origin", NodeOptions::new("origin").extra(&extra));
    let data_dir = c.node(o).data_dir.to_str().unwrap().to_owned();
    let body = c.path().join("tip.json");
    std::fs::write(
        &body,
        r#"{"reference":"t1","artist_id":"a","amount":{"minor":100,"currency":"EUR"},"from":""}"#,
    )
    .unwrap();
    let account = c.path().join("account.json");
    std::fs::write(
        &account,
        r#"{"artist_id":"a","name":"A","tax_country":"SE","payout_method":{"stripe":{"account_id":"acct_1"}}}"#,
    )
    .unwrap();
    for (target, file) in [("accounts", &account), ("tips", &body)] {
        assert_success(
            &c.node(o).cli(&[
                "plugin",
                "--data-dir",
                &data_dir,
                "royalty",
                "POST",
                target,
                "--body",
                file.to_str().unwrap(),
            ]),
            target,
        );
    }
    let states = |node: &NodeProcess| -> Vec<String> {
        anchors(node)
            .iter()
            .map(|a| a["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || states(c.node(o))
            == ["submitted"]),
        "{:?}\n{}",
        anchors(c.node(o)),
        c.node(o).log_tail()
    );
    // Stuck for longer than the bump delay (30 s at least).
    assert!(
        wait_until(Duration::from_secs(60), || states(c.node(o))
            .contains(&"replaced".to_string())),
        "no fee bump: {:?}",
        anchors(c.node(o))
    );
    assert!(wait_until(Duration::from_secs(10), || anvil
        .pending_transactions()
        == 1));
    for _ in 0..3 {
        anvil.mine();
    }
    assert!(
        wait_until(Duration::from_secs(15), || states(c.node(o))
            .contains(&"confirmed".to_string())),
        "{:?}",
        anchors(c.node(o))
    );
    let all = anchors(c.node(o));
    let confirmed: Vec<_> = all.iter().filter(|a| a["state"] == "confirmed").collect();
    assert_eq!(confirmed.len(), 1, "{all:?}");
    assert!(all
        .iter()
        .all(|a| a["tree_size"] == confirmed[0]["tree_size"]));
    // The mined one is the bump: the chain's copy has the higher fee the records say.
    let out = c.node(o).cli(&[
        "plugin",
        "--data-dir",
        &data_dir,
        "ledger",
        "GET",
        "anchors?full",
    ]);
    assert_success(&out, "anchors?full");
    let full: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let fee_of = |state: &str| {
        full.iter()
            .filter(|a| a["state"] == state)
            .map(|a| a["max_fee_per_gas"].as_u64().unwrap())
            .max()
            .unwrap()
    };
    assert!(fee_of("confirmed") > fee_of("replaced"), "{full:?}");
    assert!(
        full.iter().all(|a| a["nonce"] == full[0]["nonce"]),
        "{full:?}"
    );
    let tx = anvil.rpc(
        "eth_getTransactionByHash",
        serde_json::json!([confirmed[0]["tx_hash"]]),
    );
    assert_eq!(
        Anvil::quantity(&tx["maxFeePerGas"]),
        u128::from(fee_of("confirmed"))
    );
    let nonce = Anvil::quantity(&anvil.rpc(
        "eth_getTransactionCount",
        serde_json::json!([anvil.addresses[0], "latest"]),
    ));
    assert_eq!(nonce, 1, "one transaction mined for the anchor");
    assert_success(
        &cli(c.node(o), &["ledger", "verify", "--anchors"]),
        "ledger verify --anchors",
    );
}
