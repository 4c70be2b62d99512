#!/usr/bin/env bash
# Backup of a 1 GiB origin (512 x 2 MiB segments; bench/ingest.sh's rendition) into a restic
# repository, first and second snapshot, against `restic backup` of the same data directory in
# the same run (Debian's restic, same machine, same disk); then `backup verify` and `backup
# restore` of it. Usage: bench/backup.sh [SEGMENTS=512] [SEGMENT_BYTES=2097152]
# MHC_BENCH_REPOSITORY=s3:http://host:port/bucket/prefix (with AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY set) puts both repositories in that S3 bucket instead, under
# prefix/mhc and prefix/restic.
source "$(dirname "$0")/lib.sh"
n=${1:-512} size=${2:-2097152}
command -v restic >/dev/null || { echo "needs restic (apt-get install restic)" >&2; exit 1; }
build_release
work=$(mktemp -d)
trap 'stop_origin; rm -rf "$work"' EXIT
echo "bench-password" > "$work/pass"
make_ts_rendition "$work/src" "$n" "$size"

now() { date +%s.%N; }
timed() { local t0 t1; t0=$(now); "$@" >&2; t1=$(now); echo "$t1 - $t0" | bc -l; }

base=${MHC_BENCH_REPOSITORY:-}
if [ -n "$base" ]; then
  mhc_repo=$base/mhc restic_repo=$base/restic
else
  mhc_repo=$work/mhc-repo restic_repo=$work/restic-repo
fi

start_origin "$work" 64 4 "[backup]
repository = \"$mhc_repo\"
password_file = \"$work/pass\"
schedule = false"
"$bin" ingest --data-dir "$origin_data" --content-id big --title big --artist bench "$work/src" >&2
sync
data_bytes=$(du -sb "$origin_data" | cut -f1)
mhc1=$(timed "$bin" backup now --config "$work/origin.toml")
mhc2=$(timed "$bin" backup now --config "$work/origin.toml")
stop_origin
sync
export RESTIC_PASSWORD_FILE=$work/pass
restic --no-cache -r "$restic_repo" init >/dev/null
restic1=$(timed restic --no-cache -q -r "$restic_repo" backup "$origin_data")
restic2=$(timed restic --no-cache -q -r "$restic_repo" backup "$origin_data")
verify=$(timed "$bin" backup verify --config "$work/origin.toml")
restore=$(timed "$bin" backup restore --config "$work/origin.toml" --snapshot latest --to "$work/restored")
restic_restore=$(timed restic --no-cache -q -r "$restic_repo" restore latest --target "$work/restic-restored")

printf 'origin data directory: %.0f MiB (%d segments)\n' "$(echo "$data_bytes / 1048576" | bc -l)" "$n"
printf '%-34s %8s %8s %7s\n' "" "mhc" "restic" "ratio"
row() { printf '%-34s %7.2fs %7.2fs %7.2f\n' "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)"; }
row "first snapshot" "$mhc1" "$restic1"
row "second snapshot (nothing changed)" "$mhc2" "$restic2"
row "restore (+ verify, for mhc)" "$restore" "$restic_restore"
printf '%-34s %7.2fs\n' "verify (read packs, restore, check)" "$verify"
if [ -z "$base" ]; then
  mhc_size=$(du -sb "$mhc_repo" | cut -f1)
  restic_size=$(du -sb "$restic_repo" | cut -f1)
  printf 'repository size: mhc %.0f MiB, restic %.0f MiB\n' "$(echo "$mhc_size / 1048576" | bc -l)" "$(echo "$restic_size / 1048576" | bc -l)"
else
  echo "repositories: $mhc_repo, $restic_repo"
fi
