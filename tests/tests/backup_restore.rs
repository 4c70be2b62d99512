//! Backups of a real origin in a real restic repository: `restic check --read-data` accepts
//! what mhc-node wrote; a restore into a fresh directory starts an origin that serves the same
//! catalog, whose ledger verifies and whose balances are equal; a damaged pack makes `backup
//! verify` fail naming it; retention forgets and prunes by each kind's window on a clock the
//! test sets. The same in an S3 bucket of a real Ceph cluster (its RADOS gateway), with rot
//! in the object store itself named by `backup verify`.
//!
//! Needs `restic` on the PATH and Ceph's `ceph-mon`, `ceph-osd` and `radosgw` (`.ci/run`
//! installs Debian's).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mhc_config::{Backup, BackupRetention, BackupTarget, S3Location};
use mhc_node::{BackupKind, BackupRepo, S3Credentials};
use mhc_tests::ceph::Ceph;
use mhc_tests::{
    assert_success, installed_program, node_binary, wait_until, Cluster, NodeOptions, NodeProcess,
};

const PASSWORD: &str = "correct horse battery staple";
const SEGMENTS: usize = 12;
/// The bucket of the S3 tests.
const BUCKET: &str = "mhc-backups";

fn restic() -> PathBuf {
    installed_program("restic", "restic")
}

fn restic_run(repo: &Path, password_file: &Path, args: &[&str]) -> Output {
    restic_at(&Place::local(repo), password_file, args)
}

/// Where a repository is, as restic names it, and what restic needs in its environment to
/// reach it.
struct Place {
    repo: String,
    env: Vec<(String, String)>,
    target: BackupTarget,
}

impl Place {
    fn local(dir: &Path) -> Self {
        Place {
            repo: dir.to_str().unwrap().to_owned(),
            env: Vec::new(),
            target: BackupTarget::Local(dir.to_owned()),
        }
    }

    /// The folder `prefix` of the bucket `mhc-backups` at `ceph`'s gateway, with its user's
    /// credentials.
    fn s3(ceph: &Ceph, prefix: &str) -> Self {
        Place {
            repo: format!("s3:{}/{BUCKET}/{prefix}", ceph.url),
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), ceph.access_key.clone()),
                ("AWS_SECRET_ACCESS_KEY".into(), ceph.secret_key.clone()),
            ],
            target: BackupTarget::S3(S3Location {
                endpoint: ceph.url.clone(),
                bucket: BUCKET.into(),
                prefix: prefix.into(),
            }),
        }
    }

    fn credentials(&self) -> anyhow::Result<S3Credentials> {
        let var = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => Ok(S3Credentials::new(key, secret, None)),
            _ => anyhow::bail!("no S3 credentials"),
        }
    }

    fn with_env(&self, mut opts: NodeOptions) -> NodeOptions {
        for (k, v) in &self.env {
            opts = opts.env(k, v);
        }
        opts
    }
}

fn restic_at(place: &Place, password_file: &Path, args: &[&str]) -> Output {
    Command::new(restic())
        .arg("--repo")
        .arg(&place.repo)
        .envs(place.env.iter().map(|(k, v)| (k, v)))
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
fn origin_toml(backup: Option<(&str, &Path)>, schedule: bool) -> String {
    let mut toml = String::from(
        "[reports]\nreport_interval_s = 1\n\
         [plugins.royalty]\ncurrency = \"EUR\"\n\
         rates = { \"*\" = { per_second_micro = 1000000, per_play_micro = 5000000 } }\n\
         [plugins.ledger]\n",
    );
    if let Some((repo, password)) = backup {
        toml.push_str(&format!(
            "[backup]\nrepository = {repo:?}\npassword_file = {:?}\nschedule = {schedule}\n",
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

/// `backup restore --snapshot SNAPSHOT --to DIR` with `node`'s configuration.
fn restore_into(node: &NodeProcess, snapshot: &str, dir: &Path) -> Output {
    backup(
        node,
        &[
            "restore",
            "--snapshot",
            snapshot,
            "--to",
            dir.to_str().unwrap(),
        ],
    )
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

/// Two snapshots at `node`: a manual one, then a daily one, which is verified before the
/// command answers. Returns the first's id and `backup list --json` (the two, oldest first).
fn two_backups(node: &NodeProcess) -> (String, serde_json::Value) {
    let first = backup(node, &["now"]);
    assert_success(&first, "backup now");
    let first_id = stdout(&first).trim().to_owned();
    assert_eq!(first_id.len(), 64, "a snapshot id: {first_id:?}");
    let second = backup(node, &["now", "--kind", "daily"]);
    assert_success(&second, "backup now --kind daily");
    assert!(stderr(&second).contains("verified"), "{}", stderr(&second));
    let list = backup(node, &["list", "--json"]);
    assert_success(&list, "backup list");
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(list[0]["id"], first_id.as_str());
    (first_id, list)
}

/// `restic check --read-data` passes on the repository at `place`, whose `mhc` snapshots
/// are returned (`restic snapshots --json`), as many as `backup list` shows.
fn restic_checks(place: &Place, password: &Path) -> serde_json::Value {
    let check = restic_at(place, password, &["check", "--read-data"]);
    assert!(
        check.status.success(),
        "restic check --read-data of {}: {}\n{}",
        place.repo,
        stdout(&check),
        stderr(&check)
    );
    let snaps = restic_at(place, password, &["snapshots", "--json", "--tag", "mhc"]);
    assert_success(&snaps, "restic snapshots");
    let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(snaps.as_array().map(Vec::len), Some(2), "{snaps}");
    snaps
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
    let mut c = Cluster::new();
    let repo = c.path().join("repo");
    let password = write_password(c.path());
    let o = c.start_with(
        "origin",
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .extra(&origin_toml(
                Some((repo.to_str().unwrap(), &password)),
                false,
            )),
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

    let (first_id, list) = two_backups(c.node(o));
    let list = list.as_array().unwrap();
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
    let snaps = restic_checks(&Place::local(&repo), &password);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/mhc-backup"]));

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
    let restore = restore_into(c.node(o), &first_id, &restored_dir);
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
            .extra(&origin_toml(
                Some((second_repo.to_str().unwrap(), &password)),
                true,
            )),
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
    retention(dir.path(), &Place::local(&repo), || repo_data_bytes(&repo));
}

/// Six snapshots of different ages and kinds into the repository at `place`; retention on a
/// clock the test sets forgets the two no window keeps and prunes what only they held
/// (`data_bytes` tells how much the repository's packs take).
fn retention(dir: &Path, place: &Place, data_bytes: impl Fn() -> u64) {
    let password = write_password(dir);
    let settings = Backup {
        repository: Some(place.target.clone()),
        password_file: password.clone(),
        schedule: false,
        keep: BackupRetention::default(),
    };
    let open = |create| BackupRepo::open_with(&settings, create, || place.credentials()).unwrap();
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
        let src = source(dir, i as u64, 512 * 1024);
        let snap = open(true).snapshot(&src, kinds, now - age).unwrap();
        ids.push(snap.id);
    }
    let before = data_bytes();
    let forgotten = open(false).apply_retention(now).unwrap();
    let mut forgotten: Vec<String> = forgotten.into_iter().map(|s| s.id).collect();
    forgotten.sort();
    let mut expected = vec![ids[0].clone(), ids[1].clone()];
    expected.sort();
    assert_eq!(forgotten, expected);

    // What restic sees: the four kept, and a repository that checks.
    let snaps = restic_at(place, &password, &["snapshots", "--json"]);
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
    let check = restic_at(place, &password, &["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}\n{}",
        stdout(&check),
        stderr(&check)
    );
    // Pruned: the data only the forgotten two held is gone (2 × 512 KiB of random bytes,
    // compressed by nothing).
    let after = data_bytes();
    assert!(
        before - after >= 2 * 500 * 1024,
        "pruned {} bytes of {before}",
        before - after
    );
    // A second pass finds nothing more to forget.
    assert!(open(false).apply_retention(now).unwrap().is_empty());
}

#[test]
fn backups_in_an_s3_bucket_are_read_by_restic_restored_pruned_and_rot_in_the_store_is_named() {
    let ceph = Ceph::start();
    let place = Place::s3(&ceph, "origin-1");
    let mut c = Cluster::new();
    let password = write_password(c.path());
    let o = c.start_with(
        "origin",
        place.with_env(
            NodeOptions::new("origin")
                .heartbeat_ms(250)
                .extra(&origin_toml(Some((&place.repo, &password)), false)),
        ),
    );
    let dir = c.path().join("song-a");
    mhc_tests::write_synthetic_rendition(&dir, SEGMENTS, 20_000, 7);
    assert_success(
        &c.node(o).ingest_as("song-a", "Song A", "alice", &dir),
        "ingest",
    );
    watch(c.node(o), "song-a", "viewer-1");
    assert!(
        wait_until(Duration::from_secs(20), || ledger_size(c.node(o)) > 0),
        "plays in the ledger\n{}",
        c.node(o).log_tail()
    );

    // The bucket is created by the first backup.
    let (first_id, _) = two_backups(c.node(o));

    // restic reads the bucket with the same password and credentials.
    restic_checks(&place, &password);

    // Without credentials, or with a wrong secret, the CLI says what is wrong.
    let config = c.node(o).config_path.to_str().unwrap().to_owned();
    let without = Command::new(node_binary())
        .args(["backup", "list", "--config", &config])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(!without.status.success());
    assert!(
        stderr(&without).contains("AWS_ACCESS_KEY_ID"),
        "{}",
        stderr(&without)
    );
    let wrong = Command::new(node_binary())
        .args(["backup", "list", "--config", &config])
        .env("AWS_ACCESS_KEY_ID", &ceph.access_key)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("403") && stderr(&wrong).contains("AWS_SECRET_ACCESS_KEY"),
        "{}",
        stderr(&wrong)
    );

    // An offline restore from the bucket starts an origin that serves the same catalog.
    let catalog = c.node(o).get("/v1/content").json();
    let segment = c.node(o).get("/v1/content/song-a/seg/5.ts").body;
    c.node_mut(o).stop();
    let restored_dir = c.path().join("restored");
    let restore = restore_into(c.node(o), "latest", &restored_dir);
    assert_success(&restore, "backup restore from S3");
    let r = c.start_with(
        "restored",
        NodeOptions::new("origin")
            .heartbeat_ms(250)
            .extra(&origin_toml(None, false)),
    );
    assert_eq!(c.node(r).data_dir, restored_dir);
    assert_eq!(c.node(r).get("/v1/content").json(), catalog);
    assert_eq!(c.node(r).get("/v1/content/song-a/seg/5.ts").body, segment);
    c.node_mut(r).stop();

    // Rot inside the object store (a byte of the biggest pack flipped in RADOS, under the
    // gateway): `backup verify` fails and names the pack.
    let (object, pack_id) = biggest_pack_object(&ceph, "origin-1/data/");
    let local = ceph.path().join("pack");
    let local_arg = local.to_str().unwrap();
    assert_success(
        &ceph.rados(&["-p", DATA_POOL, "get", &object, local_arg]),
        "rados get",
    );
    let mut bytes = std::fs::read(&local).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&local, &bytes).unwrap();
    assert_success(
        &ceph.rados(&["-p", DATA_POOL, "put", &object, local_arg]),
        "rados put",
    );
    let damaged = backup(c.node(o), &["verify", "--snapshot", &first_id]);
    assert!(
        !damaged.status.success(),
        "verify of a rotten bucket passed"
    );
    assert!(
        stderr(&damaged).contains(&pack_id[..8]),
        "the error names pack {pack_id}: {}",
        stderr(&damaged)
    );

    // Retention in the bucket: forgotten snapshots' data is deleted from it.
    let retention_dir = c.path().join("retention");
    std::fs::create_dir_all(&retention_dir).unwrap();
    retention(&retention_dir, &Place::s3(&ceph, "retention"), || {
        bucket_bytes(&ceph)
    });
}

/// The pool the gateway keeps object data in.
const DATA_POOL: &str = "default.rgw.buckets.data";

/// The RADOS object holding the biggest pack under `prefix` of the bucket, and the pack's id.
fn biggest_pack_object(ceph: &Ceph, prefix: &str) -> (String, String) {
    let ls = ceph.rados(&["-p", DATA_POOL, "ls"]);
    assert_success(&ls, "rados ls");
    let mut best: Option<(u64, String)> = None;
    // The gateway names a head object `<bucket marker>_<key>`.
    for object in String::from_utf8_lossy(&ls.stdout)
        .lines()
        .filter(|l| l.contains(prefix))
    {
        let stat = ceph.rados(&["-p", DATA_POOL, "stat", object]);
        let text = String::from_utf8_lossy(&stat.stdout).into_owned();
        let size = text
            .rsplit_once("size ")
            .and_then(|(_, n)| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if best.as_ref().is_none_or(|(s, _)| size > *s) {
            best = Some((size, object.to_owned()));
        }
    }
    let (_, object) = best.unwrap_or_else(|| panic!("no pack under {prefix} in {DATA_POOL}"));
    let id = object.rsplit('/').next().unwrap().to_owned();
    (object, id)
}

/// What the bucket's objects take, as the gateway counts them.
fn bucket_bytes(ceph: &Ceph) -> u64 {
    let stats = ceph.radosgw_admin(&["bucket", "stats", "--bucket", BUCKET]);
    assert_success(&stats, "radosgw-admin bucket stats");
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    v["usage"]["rgw.main"]["size"].as_u64().unwrap_or(0)
}
