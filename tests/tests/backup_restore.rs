//! Backups of a real origin in a real restic repository: `restic check --read-data` accepts
//! what mhc-node wrote; a restore into a fresh directory starts an origin that serves the same
//! catalog, whose ledger verifies and whose balances are equal; a damaged pack makes `backup
//! verify` fail naming it; retention forgets and prunes by each kind's window on a clock the
//! test sets.
//!
//! Needs `restic` on the PATH (`.ci/run` installs Debian's).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mhc_config::{Backup, BackupRetention, BackupTarget};
use mhc_node::{BackupKind, BackupRepo};
use mhc_tests::{assert_success, installed_program, wait_until, Cluster, NodeOptions, NodeProcess};

const PASSWORD: &str = "correct horse battery staple";
const SEGMENTS: usize = 12;

fn restic() -> PathBuf {
    installed_program("restic", "restic")
}

fn restic_run(repo: &Path, password_file: &Path, args: &[&str]) -> Output {
    Command::new(restic())
        .arg("--repo")
        .arg(repo)
        .arg("--password-file")
        .arg(password_file)
        .arg("--no-cache")
        .args(args)
        .output()
        .expect("running restic")
}

fn write_password(dir: &Path) -> PathBuf {
    let path = dir.join("backup.pass");
    std::fs::write(&path, format!("{PASSWORD}\n")).unwrap();
    path
}

/// Origin settings: royalty (a flat rate everywhere) and the ledger; `backup` when given
/// (scheduled by the daemon when `schedule`).
fn origin_toml(backup: Option<(&Path, &Path)>, schedule: bool) -> String {
    let mut toml = String::from(
        "[reports]\nreport_interval_s = 1\n\
         [plugins.royalty]\ncurrency = \"EUR\"\n\
         rates = { \"*\" = { per_second_micro = 1000000, per_play_micro = 5000000 } }\n\
         [plugins.ledger]\n",
    );
    if let Some((repo, password)) = backup {
        toml.push_str(&format!(
            "[backup]\nrepository = {:?}\npassword_file = {:?}\nschedule = {schedule}\n",
            repo.to_str().unwrap(),
            password.to_str().unwrap()
        ));
    }
    toml
}

fn cli(node: &NodeProcess, args: &[&str]) -> Output {
    node.cli(args)
}

fn backup(node: &NodeProcess, args: &[&str]) -> Output {
    let config = node.config_path.to_str().unwrap().to_owned();
    let mut all = vec!["backup"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", &config]);
    cli(node, &all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn balances(node: &NodeProcess) -> serde_json::Value {
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let out = cli(
        node,
        &[
            "plugin",
            "--data-dir",
            &data_dir,
            "royalty",
            "GET",
            "balances",
        ],
    );
    assert_success(&out, "royalty balances");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ledger_size(node: &NodeProcess) -> u64 {
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let out = cli(
        node,
        &["plugin", "--data-dir", &data_dir, "ledger", "GET", "head"],
    );
    if !out.status.success() {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["size"].as_u64().unwrap_or(0)
}

fn watch(node: &NodeProcess, id: &str, agent: &str) {
    for i in 0..SEGMENTS {
        let r = node.request(
            "GET",
            &format!("/v1/content/{id}/seg/{i}.ts"),
            &[("User-Agent", agent)],
        );
        assert_eq!(r.status, 200, "{id} segment {i}");
    }
}

/// The biggest pack file of a repository.
fn biggest_pack(repo: &Path) -> PathBuf {
    let mut packs: Vec<(u64, PathBuf)> = Vec::new();
    for shard in std::fs::read_dir(repo.join("data")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let f = f.unwrap();
            packs.push((f.metadata().unwrap().len(), f.path()));
        }
    }
    packs.sort();
    packs.pop().expect("a pack").1
}

fn repo_data_bytes(repo: &Path) -> u64 {
    let mut total = 0;
    for shard in std::fs::read_dir(repo.join("data")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            total += f.unwrap().metadata().unwrap().len();
        }
    }
    total
}

#[test]
fn a_backup_passes_restic_check_restores_to_a_serving_origin_and_a_damaged_pack_is_named() {
    let restic = restic();
    let mut c = Cluster::new();
    let repo = c.path().join("repo");
    let password = write_password(c.path());
    let o = c.start_with(
        "origin",
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .extra(&origin_toml(Some((&repo, &password)), false)),
    );
    for (id, artist, seed) in [("song-a", "alice", 1), ("song-b", "bob", 2)] {
        let dir = c.path().join(id);
        mhc_tests::write_synthetic_rendition(&dir, SEGMENTS, 20_000, seed);
        assert_success(&c.node(o).ingest_as(id, id, artist, &dir), "ingest");
    }
    watch(c.node(o), "song-a", "viewer-1");
    watch(c.node(o), "song-b", "viewer-2");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let b = balances(c.node(o));
            b.as_array().is_some_and(|a| a.len() == 2) && ledger_size(c.node(o)) > 0
        }),
        "plays booked and in the ledger\n{}",
        c.node(o).log_tail()
    );

    // Two snapshots: the second adds almost nothing (the blobs are unchanged) and, being a
    // daily one, is verified before the command answers.
    let first = backup(c.node(o), &["now"]);
    assert_success(&first, "backup now");
    let first_id = stdout(&first).trim().to_owned();
    assert_eq!(first_id.len(), 64, "a snapshot id: {first_id:?}");
    let second = backup(c.node(o), &["now", "--kind", "daily"]);
    assert_success(&second, "backup now --kind daily");
    assert!(stderr(&second).contains("verified"), "{}", stderr(&second));

    let list = backup(c.node(o), &["list", "--json"]);
    assert_success(&list, "backup list");
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let (a, b) = (&list[0], &list[1]);
    assert_eq!(a["id"], first_id.as_str());
    assert_eq!(a["kinds"], serde_json::json!(["manual"]));
    assert_eq!(b["kinds"], serde_json::json!(["daily"]));
    let blob_bytes = 2 * SEGMENTS as u64 * 20_000;
    assert!(
        b["bytes_added"].as_u64().unwrap() < blob_bytes / 4,
        "the second snapshot re-added the blobs: {b}"
    );

    // The standard tool reads and checks every byte mhc-node wrote.
    let check = restic_run(&repo, &password, &["check", "--read-data"]);
    assert!(
        check.status.success(),
        "restic check --read-data: {}\n{}",
        stdout(&check),
        stderr(&check)
    );
    let snaps = restic_run(&repo, &password, &["snapshots", "--json", "--tag", "mhc"]);
    assert_success(&snaps, "restic snapshots");
    let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), list.len());
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/mhc-backup"]));
    let _ = restic;

    let verify = backup(c.node(o), &["verify", "--snapshot", &first_id[..10]]);
    assert_success(&verify, "backup verify");
    assert!(stdout(&verify).contains("ledger:"), "{}", stdout(&verify));

    // Restore the first snapshot into a fresh directory and start an origin from it, which
    // backs up by itself into a second repository: every kind is due at once, one snapshot.
    let before_balances = balances(c.node(o));
    let catalog = c.node(o).get("/v1/content").json();
    let segment = c.node(o).get("/v1/content/song-b/seg/3.ts").body;
    c.node_mut(o).stop();
    let restored_dir = c.path().join("restored");
    let restore = backup(
        c.node(o),
        &[
            "restore",
            "--snapshot",
            &first_id,
            "--to",
            restored_dir.to_str().unwrap(),
        ],
    );
    assert_success(&restore, "backup restore");
    assert!(
        stdout(&restore).contains("verified"),
        "{}",
        stdout(&restore)
    );
    let second_repo = c.path().join("repo-2");
    let r = c.start_with(
        "restored",
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .extra(&origin_toml(Some((&second_repo, &password)), true)),
    );
    let restored = c.node(r);
    assert_eq!(restored.data_dir, restored_dir);
    assert_eq!(
        restored.public_key,
        c.node(o).public_key,
        "the same node key"
    );
    assert_eq!(restored.get("/v1/content").json(), catalog);
    assert_eq!(restored.get("/v1/content/song-b/seg/3.ts").body, segment);
    // Plays booked after the first snapshot are not in it; the first snapshot holds the
    // balances of its time, which the restored origin answers exactly.
    let restored_balances = balances(restored);
    assert_eq!(restored_balances, before_balances);
    let data_dir = restored.data_dir.to_str().unwrap().to_owned();
    assert_success(
        &restored.cli(&["ledger", "verify", "--data-dir", &data_dir]),
        "ledger verify on the restored origin",
    );
    let scheduled = |kind: &str| {
        let metrics = restored.get("/metrics").text();
        let line = format!("mhc_backup_last_success_timestamp_seconds{{kind=\"{kind}\"}}");
        metrics.lines().any(|l| l.starts_with(&line))
    };
    assert!(
        wait_until(Duration::from_secs(60), || ["hourly", "daily", "weekly"]
            .iter()
            .all(|k| scheduled(k))),
        "the scheduler's first backup\n{}",
        restored.log_tail()
    );
    let metrics = restored.get("/metrics").text();
    let verified_at = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mhc_backup_verify_last_success_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(
        verified_at.is_some_and(|t| t > 1_700_000_000),
        "a daily backup is verified: {verified_at:?}"
    );
    let snaps = restic_run(&second_repo, &password, &["snapshots", "--json"]);
    assert_success(&snaps, "restic snapshots of the scheduled backup");
    let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    let mut tags: Vec<&str> = snaps[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["daily", "hourly", "mhc", "weekly"]);

    // A damaged pack: `backup verify` fails and names it.
    let pack = biggest_pack(&repo);
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&pack, &bytes).unwrap();
    let damaged = backup(c.node(o), &["verify", "--snapshot", &first_id]);
    assert!(
        !damaged.status.success(),
        "verify of a damaged repository passed"
    );
    let pack_id = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr(&damaged).contains(&pack_id[..8]),
        "the error names pack {pack_id}: {}",
        stderr(&damaged)
    );
}

/// A folder of `n` random bytes (unique to `seed`) and a small common file.
fn source(dir: &Path, seed: u64, n: usize) -> PathBuf {
    let path = dir.join(format!("src-{seed}"));
    std::fs::create_dir_all(&path).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
    std::fs::write(path.join("unique.bin"), bytes).unwrap();
    std::fs::write(path.join("common.txt"), "the same in every snapshot\n").unwrap();
    path
}

#[test]
fn retention_forgets_each_kind_after_its_window_and_prunes_what_only_they_held() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let password = write_password(dir.path());
    let settings = Backup {
        repository: Some(BackupTarget::Local(repo.clone())),
        password_file: password.clone(),
        schedule: false,
        keep: BackupRetention::default(),
    };
    const DAY: u64 = 86_400_000;
    let now = 1_800_000_000_000u64;
    // (age, kinds): the default windows keep hourly and daily 7 days, weekly 30.
    let plan: [(u64, &[BackupKind]); 6] = [
        (40 * DAY, &[BackupKind::Weekly]),
        (10 * DAY, &[BackupKind::Hourly, BackupKind::Daily]),
        (8 * DAY, &[BackupKind::Weekly]),
        (6 * DAY, &[BackupKind::Hourly]),
        (90 * DAY, &[BackupKind::Manual]),
        (
            DAY / 24,
            &[BackupKind::Hourly, BackupKind::Daily, BackupKind::Weekly],
        ),
    ];
    let mut ids = Vec::new();
    for (i, (age, kinds)) in plan.iter().enumerate() {
        let src = source(dir.path(), i as u64, 512 * 1024);
        let snap = BackupRepo::open(&settings, true)
            .unwrap()
            .snapshot(&src, kinds, now - age)
            .unwrap();
        ids.push(snap.id);
    }
    let before = repo_data_bytes(&repo);
    let forgotten = BackupRepo::open(&settings, false)
        .unwrap()
        .apply_retention(now)
        .unwrap();
    let mut forgotten: Vec<String> = forgotten.into_iter().map(|s| s.id).collect();
    forgotten.sort();
    let mut expected = vec![ids[0].clone(), ids[1].clone()];
    expected.sort();
    assert_eq!(forgotten, expected);

    // What restic sees: the four kept, and a repository that checks.
    let snaps = restic_run(&repo, &password, &["snapshots", "--json"]);
    assert_success(&snaps, "restic snapshots");
    let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    let mut kept: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    kept.sort();
    let mut want: Vec<String> = ids[2..].to_vec();
    want.sort();
    assert_eq!(kept, want);
    let check = restic_run(&repo, &password, &["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}\n{}",
        stdout(&check),
        stderr(&check)
    );
    // Pruned: the data only the forgotten two held is gone (2 × 512 KiB of random bytes,
    // compressed by nothing).
    let after = repo_data_bytes(&repo);
    assert!(
        before - after >= 2 * 500 * 1024,
        "pruned {} bytes of {before}",
        before - after
    );
    // A second pass finds nothing more to forget.
    assert!(BackupRepo::open(&settings, false)
        .unwrap()
        .apply_retention(now)
        .unwrap()
        .is_empty());
}
