#!/usr/bin/env bash
# Ingest of a 1 GiB HLS folder (512 x 2 MiB TS segments) vs `cp -r` + `sync` of the same folder,
# one run, plus the daemon's peak RSS. Usage: bench/ingest.sh [SEGMENTS=512] [SEGMENT_BYTES=2097152]
source "$(dirname "$0")/lib.sh"
n=${1:-512} size=${2:-2097152}
build_release
work=$(mktemp -d)
trap 'stop_origin; rm -rf "$work"' EXIT
src=$work/src
make_ts_rendition "$src" "$n" "$size"
sync
total=$(du -sb "$src" | cut -f1)

now() { date +%s.%N; }
copy_once() { # prints seconds for cp -r + sync of the folder
  local t0 t1
  t0=$(now); cp -r "$src" "$work/copy"; sync; t1=$(now)
  rm -rf "$work/copy"; sync
  echo "$t1 - $t0" | bc -l
}
# Baseline before and after the ingest, so neither side alone pays for a cold cache or
# leftover writeback; the ratio uses their mean.
cp_before=$(copy_once)

start_origin "$work" 64 4
rss_before=$(awk '/VmRSS/ {print $2}' /proc/$origin_pid/status)
t0=$(now)
"$bin" ingest --data-dir "$origin_data" --content-id big --title big --artist bench "$src" >&2
t1=$(now)
ingest_s=$(echo "$t1 - $t0" | bc -l)
peak=$(awk '/VmHWM/ {print $2}' /proc/$origin_pid/status)
cp_after=$(copy_once)
cp_s=$(echo "($cp_before + $cp_after) / 2" | bc -l)
printf 'folder: %d segments, %.0f MiB\n' "$n" "$(echo "$total / 1048576" | bc -l)"
printf 'cp -r + sync : %.2f s (before %.2f, after %.2f)\n' "$cp_s" "$cp_before" "$cp_after"
printf 'mhc ingest   : %.2f s  (%.0f MiB/s, hashed, fsynced, signed, committed)\n' "$ingest_s" "$(echo "$total / 1048576 / $ingest_s" | bc -l)"
printf 'ratio ingest/(cp+sync): %.2f   (target <= 1.5)\n' "$(echo "$ingest_s / $cp_s" | bc -l)"
printf 'daemon RSS: %d kB before, peak %d kB  (target peak <= 200 MB)\n' "$rss_before" "$peak"
