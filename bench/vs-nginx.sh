#!/usr/bin/env bash
# Cache-hot serving of 2 MiB segments, 64 connections, loopback: mhc-node vs nginx (sendfile),
# same bytes, same wrk load, one run (../shared/bench/vs-nginx.sh does the side-by-side).
# Usage: bench/vs-nginx.sh [SECONDS=10] [CONNS=64]   Needs: nginx, wrk.
#        VIA_EDGE=1 bench/vs-nginx.sh ...   serves through an edge that filled from the origin.
source "$(dirname "$0")/lib.sh"
secs=${1:-10} conns=${2:-64} count=32
build_release
work=$(mktemp -d)
trap 'stop_all; rm -rf "$work"' EXIT
# nginx's workers run as www-data: let them read the segments.
chmod 755 "$work"
seg=$work/bench
"$shared/bench/make-segments.sh" "$seg" "$count" 2097152
# Make the folder an fMP4 rendition (.m4s segments need an init segment and #EXT-X-MAP).
head -c 1024 /dev/urandom > "$seg/init.mp4"
{
  printf '#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n'
  printf '#EXT-X-MAP:URI="init.mp4"\n'
  for i in $(seq 0 $((count - 1))); do printf '#EXTINF:2.000,\ns%d.m4s\n' "$i"; done
  printf '#EXT-X-ENDLIST\n'
} > "$seg/index.m3u8"
start_origin "$work" 512 2
"$bin" ingest --data-dir "$origin_data" --content-id bench --title bench --artist bench "$seg" >&2
serve_http=$origin_http serve_pid=$origin_pid
if [ "${VIA_EDGE:-0}" = 1 ]; then
  start_edge "$work" edge 512 2
  "$bin" prefetch --data-dir "$edge_data" bench >&2
  serve_http=$edge_http serve_pid=$edge_pid
fi
# Warm the RAM tier: every segment once.
for i in $(seq 0 $((count - 1))); do curl -sf -o /dev/null "http://$serve_http/v1/content/bench/seg/$i.m4s"; done
"$shared/bench/vs-nginx.sh" "$seg" "http://$serve_http" /v1/content/bench/seg/ "$count" .m4s "$conns" "$secs"
echo "mhc-node peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$serve_pid/status)"
