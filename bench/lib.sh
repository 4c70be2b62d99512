# Shared helpers of the bench scripts: build the release binary, start an origin on loopback,
# wait for it, and stop it on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${MHC_SHARED:-$root/../shared}
# MHC_NODE_BIN runs another build (an earlier commit's, for a before/after comparison in one
# session) instead of building this checkout's.
bin=${MHC_NODE_BIN:-$root/target/release/mhc-node}

build_release() {
  [ -n "${MHC_NODE_BIN:-}" ] && return 0
  (cd "$root" && cargo build --release --locked -p mhc-node >&2)
}

# wait_http DATA_DIR LOG: waits (10 s at most) for the node's runtime.json and prints its viewer
# address; shows the log and fails if the node did not come up.
wait_http() {
  local data=$1 log=$2 http=""
  for _ in $(seq 200); do
    [ -f "$data/runtime.json" ] && break
    sleep 0.05
  done
  http=$(sed -n 's/.*"http": "\(.*\)".*/\1/p' "$data/runtime.json" 2>/dev/null)
  [ -n "$http" ] || { cat "$log" >&2; exit 1; }
  echo "$http"
}

# enroll WORKDIR DATA_DIR ROLE: creates the node key in DATA_DIR and a certificate for it from
# the bench's operator (WORKDIR/operator.key, created on first use), as an operator would;
# prints the operator's public key for `trust.operators`.
# A build from before admission (MHC_NODE_BIN of an earlier commit) has no `enroll` and needs
# no certificate: its nodes get only the operator key.
enroll() {
  local work=$1 data=$2 role=$3 node operator
  if ! "$bin" help enroll >/dev/null 2>&1; then
    [ -f "$work/operator.key" ] || "$bin" operator-keygen --out "$work/operator.key" >/dev/null
    "$bin" id --key "$work/operator.key" 2>/dev/null | sed -n 's/^public_key: //p'
    return 0
  fi
  [ -f "$work/operator.key" ] || "$bin" operator-keygen --out "$work/operator.key" >/dev/null
  operator=$("$bin" id --key "$work/operator.key" 2>/dev/null | sed -n 's/^public_key: //p')
  node=$("$bin" id --data-dir "$data" 2>/dev/null | sed -n 's/^public_key: //p')
  "$bin" enroll --key "$work/operator.key" --node "$node" --role "$role" --region default \
    --http 127.0.0.1 --valid-days 30 --out "$data/node.cert" >/dev/null
  echo "$operator"
}

# start_origin WORKDIR MEMORY_MB DISK_GB [EXTRA_TOML] -> sets $origin_pid, $origin_http,
# $origin_data (EXTRA_TOML is appended to the config)
start_origin() {
  local work=$1 memory_mb=$2 disk_gb=$3 extra=${4:-} operator
  origin_data=$work/origin
  operator=$(enroll "$work" "$origin_data" origin)
  cat > "$work/origin.toml" <<TOML
role = "origin"
data_dir = "$origin_data"
[trust]
operators = ["$operator"]
[listen]
http = "127.0.0.1:0"
quic = "127.0.0.1:0"
p2p = "/ip4/127.0.0.1/tcp/0"
iroh = "127.0.0.1:0"
swim = "127.0.0.1:0"
[cache]
memory_mb = $memory_mb
disk_gb = $disk_gb
$extra
TOML
  RUST_LOG=warn "$bin" run --config "$work/origin.toml" 2> "$work/origin.log" &
  origin_pid=$!
  origin_http=$(wait_http "$origin_data" "$work/origin.log")
}

stop_origin() {
  [ -n "${origin_pid:-}" ] && kill "$origin_pid" 2>/dev/null && wait "$origin_pid" 2>/dev/null || true
}

# start_edge WORKDIR NAME MEMORY_MB DISK_GB [EXTRA_TOML] -> sets $edge_pid, $edge_http, $edge_data
# (fills from the origin started by start_origin, trusting its key; EXTRA_TOML is appended)
start_edge() {
  local work=$1 name=$2 memory_mb=$3 disk_gb=$4 extra=${5:-}
  edge_data=$work/$name
  local key peer quic operator
  operator=$(enroll "$work" "$edge_data" edge)
  key=$(sed -n 's/.*"public_key": "\(.*\)".*/\1/p' "$origin_data/runtime.json")
  peer=$(sed -n 's/.*"peer_id": "\(.*\)".*/\1/p' "$origin_data/runtime.json")
  quic=$(sed -n 's/.*"quic": "\(.*\)".*/\1/p' "$origin_data/runtime.json")
  cat > "$work/$name.toml" <<TOML
role = "edge"
data_dir = "$edge_data"
[listen]
http = "127.0.0.1:0"
quic = "127.0.0.1:0"
p2p = "/ip4/127.0.0.1/tcp/0"
iroh = "127.0.0.1:0"
swim = "127.0.0.1:0"
[trust]
publishers = ["$key"]
operators = ["$operator"]
[upstream]
parents = ["$peer@$quic"]
[cache]
memory_mb = $memory_mb
disk_gb = $disk_gb
$extra
TOML
  RUST_LOG=warn "$bin" run --config "$work/$name.toml" 2> "$work/$name.log" &
  edge_pid=$!
  edge_http=$(wait_http "$edge_data" "$work/$name.log")
  edge_pids="${edge_pids:-} $edge_pid"
}

stop_all() {
  for p in ${edge_pids:-}; do kill "$p" 2>/dev/null || true; done
  stop_origin
}

# make_ts_rendition DIR COUNT BYTES: a VOD playlist of COUNT random TS-named segments of BYTES.
make_ts_rendition() {
  local dir=$1 n=$2 size=$3
  mkdir -p "$dir"
  {
    printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n'
    for i in $(seq 0 $((n - 1))); do
      head -c "$size" /dev/urandom > "$dir/s$i.ts"
      printf '#EXTINF:2.000,\ns%d.ts\n' "$i"
    done
    printf '#EXT-X-ENDLIST\n'
  } > "$dir/index.m3u8"
}
