//! Ledger anchoring on a real chain: gas per anchor against the calldata floor and a plain
//! transfer measured on the same chain, anchors (and gas) per hour at `interval_s = 300`, and the
//! time from a signed head to its confirmed anchor.
//!
//! Usage: `cargo run -p mhc-tests --bin anchor-bench -- [ANCHORS] [INTERVAL_S]` (default 8
//! anchors, 2 s; a debug build: the figures are the chain's, not the CPU's). Starts anvil (1 s blocks, `.ci/run` installs it under
//! `tests/chain/`) and an origin with `[plugins.ledger.anchor]` (`confirmations = 2`), grows the
//! ledger with a tip every interval and reads every anchor's receipt over JSON-RPC.

use std::time::{Duration, Instant};

use mhc_origin::ledger::{anchor_payload, SignedTreeHead};
use mhc_tests::anvil::Anvil;
use mhc_tests::{assert_success, Cluster, NodeOptions, NodeProcess};

fn plugin(
    node: &NodeProcess,
    name: &str,
    method: &str,
    target: &str,
    body: Option<&str>,
) -> Vec<u8> {
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let file = node.data_dir.join("bench-body.json");
    let file_arg = file.to_str().unwrap().to_owned();
    let mut args = vec!["plugin", "--data-dir", &data_dir, name, method, target];
    if let Some(body) = body {
        std::fs::write(&file, body).unwrap();
        args.extend(["--body", &file_arg]);
    }
    let out = node.cli(&args);
    assert_success(&out, target);
    out.stdout
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let anchors: usize = args.next().map_or(8, |a| a.parse().expect("ANCHORS"));
    let interval_s: u64 = args.next().map_or(2, |a| a.parse().expect("INTERVAL_S"));
    let anvil = Anvil::start(Some(1));
    let mut c = Cluster::new();
    let key = c.path().join("anchor.key");
    anvil.write_key(0, &key);
    let extra = format!(
        "[plugins.royalty]\ncurrency = \"EUR\"\n[plugins.ledger]\n[plugins.ledger.anchor]\n\
         rpc_url = \"{}\"\nchain_id = 31337\nkey = {:?}\ninterval_s = {interval_s}\nconfirmations = 2\n",
        anvil.url,
        key.to_str().unwrap()
    );
    let o = c.start_with("origin", NodeOptions::new("origin").extra(&extra));
    let node = c.node(o);
    plugin(
        node,
        "royalty",
        "POST",
        "accounts",
        Some(
            r#"{"artist_id":"a","name":"A","tax_country":"SE","payout_method":{"stripe":{"account_id":"acct_1"}}}"#,
        ),
    );

    // The baseline on the same chain: a plain transfer with no input (21,000 gas).
    let plain = anvil.rpc(
        "eth_sendTransaction",
        serde_json::json!([{"from": anvil.addresses[1], "to": anvil.addresses[2], "value": "0x1"}]),
    );
    let started = Instant::now();
    let mut tip = 0;
    let mut records: Vec<serde_json::Value> = Vec::new();
    while records.iter().filter(|r| r["state"] == "confirmed").count() < anchors {
        assert!(
            started.elapsed() < Duration::from_secs(60 + anchors as u64 * interval_s * 4),
            "anchors too slow"
        );
        tip += 1;
        plugin(
            node,
            "royalty",
            "POST",
            "tips",
            Some(&format!(
                r#"{{"reference":"t{tip}","artist_id":"a","amount":{{"minor":100,"currency":"EUR"}},"from":""}}"#
            )),
        );
        std::thread::sleep(Duration::from_secs(interval_s));
        records =
            serde_json::from_slice(&plugin(node, "ledger", "GET", "anchors?full", None)).unwrap();
    }
    let heads: Vec<SignedTreeHead> =
        serde_json::from_slice(&plugin(node, "ledger", "GET", "heads", None)).unwrap();
    let plain_gas = Anvil::quantity(
        &anvil.rpc("eth_getTransactionReceipt", serde_json::json!([plain]))["gasUsed"],
    ) as f64;

    let (mut gas, mut to_confirmed, mut to_submitted) = (Vec::new(), Vec::new(), Vec::new());
    let mut floor = 0.0;
    for r in records.iter().filter(|r| r["state"] == "confirmed") {
        let size = r["tree_size"].as_u64().unwrap();
        let head = heads
            .iter()
            .find(|h| h.size == size)
            .expect("the anchored head");
        let receipt = anvil.rpc(
            "eth_getTransactionReceipt",
            serde_json::json!([r["tx_hash"]]),
        );
        gas.push(Anvil::quantity(&receipt["gasUsed"]) as f64);
        // Calldata cost of the exact input: the standard rate and EIP-7623's floor, whichever
        // is higher, on top of the 21,000 of any transaction.
        let payload = anchor_payload(head);
        let zeros = payload.iter().filter(|b| **b == 0).count() as f64;
        let nonzero = payload.len() as f64 - zeros;
        floor = 21_000.0 + (4.0 * zeros + 16.0 * nonzero).max(10.0 * (zeros + 4.0 * nonzero));
        let head_ms = head.time_ms as f64;
        to_submitted.push((r["submitted_ms"].as_f64().unwrap() - head_ms) / 1000.0);
        to_confirmed.push((r["confirmed_ms"].as_f64().unwrap() - head_ms) / 1000.0);
    }
    let n = gas.len();
    let gas_median = median(&mut gas);
    let per_hour = 3600 / 300;
    println!(
        "anchors confirmed: {n} (interval_s = {interval_s}, anvil 1 s blocks, confirmations = 2)"
    );
    println!(
        "gas per anchor: median {gas_median:.0}; calldata floor of the 76-byte input {floor:.0} ({:.3}x); plain transfer {plain_gas:.0} ({:.3}x)",
        gas_median / floor,
        gas_median / plain_gas
    );
    println!(
        "at interval_s = 300 with the log growing: {per_hour} anchors/hour, {:.0} gas/hour",
        per_hour as f64 * gas_median
    );
    println!(
        "head -> anchor broadcast: median {:.2} s, max {:.2} s",
        median(&mut to_submitted),
        to_submitted.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "head -> anchor confirmed: median {:.2} s, max {:.2} s (bounded by interval_s + confirmations x block time = {} s)",
        median(&mut to_confirmed),
        to_confirmed.iter().copied().fold(0.0, f64::max),
        interval_s + 2
    );
}
