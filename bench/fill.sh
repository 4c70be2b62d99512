#!/usr/bin/env bash
# QUIC fill of a 1 GiB content origin → edge (verified, stored) vs a plain quinn bulk transfer
# of the same number of bytes on the same machine, in one run; then time to first byte of a
# cold segment through a fresh edge, and of the same segment hot.
# Usage: bench/fill.sh [SEGMENTS=512] [SEGMENT_BYTES=2097152] [CONCURRENCY=8]
source "$(dirname "$0")/lib.sh"
n=${1:-512} size=${2:-2097152} conc=${3:-8}
build_release
(cd "$root" && cargo build --release --locked -p mhc-tests --bin quinn-bulk >&2)
work=$(mktemp -d)
trap 'stop_all; rm -rf "$work"' EXIT
src=$work/src
make_ts_rendition "$src" "$n" "$size"
start_origin "$work" 256 8
"$bin" ingest --data-dir "$origin_data" --content-id big --title big --artist bench "$src" >&2
rm -rf "$src"
start_edge "$work" edge1 64 8
mib=$(( n * size / 1048576 ))
base=$("$root/target/release/quinn-bulk" "$mib" "$conc")
# The same transfer between two processes, the server sending, as an origin answers an edge.
"$root/target/release/quinn-bulk" serve "$mib" "$conc" > "$work/quinn-serve" &
serve_pid=$!
for _ in $(seq 200); do [ -s "$work/quinn-serve" ] && break; sleep 0.05; done
base2=$("$root/target/release/quinn-bulk" fetch "$(head -1 "$work/quinn-serve")" "$mib" "$conc")
wait "$serve_pid"
# Plain quinn plus only the hashing and storing any verified fill must do (the node's own disk
# tier at both ends): the ceiling of a verified fill on this machine.
floor=$("$root/target/release/quinn-bulk" floor "$mib" "$conc")
fill=$("$bin" prefetch --data-dir "$edge_data" --concurrency "$conc" big)
echo "$base   (one process)"
echo "$base2   (two processes, server sends)"
echo "$floor"
echo "mhc fill  : $fill"
rate() { sed -n 's/.*= \([0-9]*\) MB\/s/\1/p'; }
b=$(echo "$base" | rate)
b2=$(echo "$base2" | rate)
fl=$(echo "$floor" | rate)
f=$(echo "$fill" | sed -n 's/.*(\([0-9]*\) MB\/s)/\1/p')
awk -v f="$f" -v b="$b" -v b2="$b2" -v fl="$fl" 'BEGIN {
  printf "ratio fill/plain quinn: %.2f of one process, %.2f of two   (target >= 0.8)\n", f/b, f/b2
  printf "ratio floor/plain quinn: %.2f; fill/floor: %.2f\n", fl/b, f/fl }'

start_edge "$work" edge2 64 8
seg=$((n / 2))
cold=$(curl -s -o /dev/null -w '%{time_starttransfer}' "http://$edge_http/v1/content/big/seg/$seg.ts")
hot=$(curl -s -o /dev/null -w '%{time_starttransfer}' "http://$edge_http/v1/content/big/seg/$seg.ts")
origin_direct=$(curl -s -o /dev/null -w '%{time_starttransfer}' "http://$origin_http/v1/content/big/seg/$((seg + 1)).ts")
awk -v c="$cold" -v h="$hot" -v o="$origin_direct" -v s="$size" 'BEGIN {
  printf "time to first byte, %d-byte segment: cold through a fresh edge %.1f ms, hot %.2f ms (origin direct, from its disk: %.1f ms)\n", s, c*1000, h*1000, o*1000 }'
