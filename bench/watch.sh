#!/usr/bin/env bash
# The watch page's cost, in headless Chromium against a local origin holding the sample:
#  - time to first frame of /watch/sample with verification and with ?verify=0 (the same page
#    without it), RUNS of each, interleaved; medians and their ratio;
#  - BLAKE3 throughput inside the page (the hasher it uses: hash-wasm, WebAssembly), and both
#    candidate implementations (hash-wasm and @noble/hashes' pure-JS blake3) in Node's V8, the
#    engine Chromium runs, so their ratio carries over.
# Needs Node.js, Debian's chromium and `npm ci` in tests/browser and web/ (scripts/test does).
# Usage: bench/watch.sh [RUNS=7]
source "$(dirname "$0")/lib.sh"
runs=${1:-7}
build_release
work=$(mktemp -d)
trap 'stop_origin; rm -rf "$work"' EXIT
start_origin "$work" 64 1
"$bin" ingest --data-dir "$origin_data" --content-id sample --title sample --artist bench \
  "$root/node/sample" >&2

page() { node "$root/tests/browser/page.mjs" "$1" "$2" 40; }
field() { python3 -c "import json,sys; v=json.load(sys.stdin)['watch']; print($1)"; }
url="http://$origin_http/watch/sample"
verified=() plain=()
for _ in $(seq "$runs"); do
  verified+=("$(page "$url" 'watch && watch.firstFrameMs !== null' | field "round(v['firstFrameMs'])")")
  plain+=("$(page "$url?verify=0" 'watch && watch.firstFrameMs !== null' | field "round(v['firstFrameMs'])")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mv=$(median "${verified[@]}") mp=$(median "${plain[@]}")
in_page=$(page "$url?bench=1" 'watch && watch.bench' | field "round(v['bench']['blake3MBs'])")

cat > "$root/web/.bench-blake3.mjs" <<'JS'
import { blake3 } from '@noble/hashes/blake3.js';
import { createBLAKE3 } from 'hash-wasm';
const data = new Uint8Array(32 << 20).map((_, i) => (i * 2654435761) >>> 24);
const h = await createBLAKE3();
const wasm = (d) => { h.init(); h.update(d); return h.digest('binary'); };
const rate = (f) => { f(data); const t0 = performance.now(); let n = 0;
  while (performance.now() - t0 < 2000) { f(data); n++; }
  return (n * data.length) / 1e6 / ((performance.now() - t0) / 1000); };
const [w, n] = [rate(wasm), rate(blake3)];
console.log(`${Math.round(w)} ${Math.round(n)}`);
JS
read -r node_wasm node_noble < <(cd "$root/web" && node .bench-blake3.mjs; rm -f .bench-blake3.mjs)

echo "time to first frame, median of $runs (ms): verified $mv, unverified $mp, ratio $(echo "$mv / $mp" | bc -l | cut -c1-5)"
echo "  verified:   ${verified[*]}"
echo "  unverified: ${plain[*]}"
echo "BLAKE3 in the page (hash-wasm): $in_page MB/s"
echo "BLAKE3 in Node's V8: hash-wasm $node_wasm MB/s, @noble/hashes $node_noble MB/s, ratio $(echo "$node_wasm / $node_noble" | bc -l | cut -c1-5)"
