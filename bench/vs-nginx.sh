#!/usr/bin/env bash
# Cache-hot serving of 2 MiB segments, 64 connections, loopback: mhc-node vs nginx configured as
# a CDN operator would (../shared/bench/nginx.conf.in: sendfile, tcp_nopush, no access log),
# same bytes, same wrk load, one run, over HTTP and then HTTPS (TLS 1.3, HTTP/1.1, one
# self-signed certificate for both). For each server: req/s, MB/s, p99 and the CPU seconds
# (user + system, from /proc, every process and thread of the server) per GB served during the
# run; then mhc/nginx ratios for each.
#
# Usage: bench/vs-nginx.sh [SECONDS=10] [CONNS=64]   Needs: nginx, wrk, openssl.
#        VIA_EDGE=1 bench/vs-nginx.sh ...   serves through an edge that filled from the origin.
#        HTTPS=0 bench/vs-nginx.sh ...      HTTP only.
# nginx's HTTPS gets `ssl_conf_command Options KTLS` when the kernel offers the TLS ULP
# (/proc/sys/net/ipv4/tcp_available_ulp lists "tls"); the script says which case it measured.
source "$(dirname "$0")/lib.sh"
secs=${1:-10} conns=${2:-64} count=32 size=2097152
build_release
work=$(mktemp -d)
nginx_dirs=()
stop_nginx() {
  local d
  for d in "${nginx_dirs[@]}"; do nginx -p "$d" -c "$d/nginx.conf" -s stop 2>/dev/null || true; done
}
trap 'stop_nginx; stop_all; rm -rf "$work"' EXIT
# nginx's workers run as www-data: let them read the segments.
chmod 755 "$work"
seg=$work/bench
"$shared/bench/make-segments.sh" "$seg" "$count" "$size"
# Make the folder an fMP4 rendition (.m4s segments need an init segment and #EXT-X-MAP).
head -c 1024 /dev/urandom > "$seg/init.mp4"
{
  printf '#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n'
  printf '#EXT-X-MAP:URI="init.mp4"\n'
  for i in $(seq 0 $((count - 1))); do printf '#EXTINF:2.000,\ns%d.m4s\n' "$i"; done
  printf '#EXT-X-ENDLIST\n'
} > "$seg/index.m3u8"

# The certificate both servers use over HTTPS.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"
https_extra=""
if [ "${HTTPS:-1}" = 1 ]; then
  https_extra=$(printf '[http]\ntls_cert = "%s"\ntls_key = "%s"\n' "$work/cert.pem" "$work/key.pem")
fi

start_origin "$work" 512 2
"$bin" ingest --data-dir "$origin_data" --content-id bench --title bench --artist bench "$seg" >&2
stop_origin
if [ "${HTTPS:-1}" = 1 ]; then
  # Restarted with an HTTPS listener beside the HTTP one.
  sed -i 's|^iroh = .*|&\nhttps = "127.0.0.1:0"|' "$work/origin.toml"
  printf '%s\n' "$https_extra" >> "$work/origin.toml"
fi
rm -f "$origin_data/runtime.json"
RUST_LOG=warn "$bin" run --config "$work/origin.toml" 2> "$work/origin.log" &
origin_pid=$!
origin_http=$(wait_http "$origin_data" "$work/origin.log")
serve_data=$origin_data serve_http=$origin_http serve_pid=$origin_pid
if [ "${VIA_EDGE:-0}" = 1 ]; then
  start_edge "$work" edge 512 2
  "$bin" prefetch --data-dir "$edge_data" bench >&2
  if [ "${HTTPS:-1}" = 1 ]; then
    kill "$edge_pid"; wait "$edge_pid" 2>/dev/null || true
    sed -i 's|^iroh = .*|&\nhttps = "127.0.0.1:0"|' "$work/edge.toml"
    printf '%s\n' "$https_extra" >> "$work/edge.toml"
    rm -f "$edge_data/runtime.json"
    RUST_LOG=warn "$bin" run --config "$work/edge.toml" 2> "$work/edge.log" &
    edge_pid=$! edge_pids=$edge_pid
    edge_http=$(wait_http "$edge_data" "$work/edge.log")
  fi
  serve_data=$edge_data serve_http=$edge_http serve_pid=$edge_pid
fi
serve_https=$(sed -n 's/.*"https": "\(.*\)".*/\1/p' "$serve_data/runtime.json")
# Warm the RAM tier: every segment once.
for i in $(seq 0 $((count - 1))); do
  curl -sf -o /dev/null "http://$serve_http/v1/content/bench/seg/$i.m4s"
done

ktls=0
grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null && ktls=1
# start_nginx NAME TLS(0|1) -> sets $ngx_port, $ngx_dir
start_nginx() {
  local name=$1 tls=$2 listen
  ngx_dir=$work/nginx-$name
  mkdir -p "$ngx_dir/tmp"
  ngx_port=$((20000 + RANDOM % 20000))
  listen=$ngx_port
  [ "$tls" = 1 ] && listen="$ngx_port ssl"
  sed -e "s|@ROOT@|$work|; s|@PORT@|$listen|; s|@DIR@|$ngx_dir|g" \
    "$shared/bench/nginx.conf.in" > "$ngx_dir/nginx.conf"
  if [ "$tls" = 1 ]; then
    local conf="    ssl_certificate $work/cert.pem;\n    ssl_certificate_key $work/key.pem;"
    conf="$conf\n    ssl_protocols TLSv1.3;"
    [ "$ktls" = 1 ] && conf="$conf\n    ssl_conf_command Options KTLS;"
    sed -i "s|root $work;|&\n$conf|" "$ngx_dir/nginx.conf"
  fi
  nginx -p "$ngx_dir" -c "$ngx_dir/nginx.conf"
  nginx_dirs+=("$ngx_dir")
  sleep 0.5
}
nginx_pids() { # DIR -> the master and its workers
  local master
  master=$(cat "$1/nginx.pid")
  echo "$master" $(pgrep -P "$master")
}

# cpu_ticks PID...: user + system clock ticks the processes (all threads) have used so far.
cpu_ticks() {
  local pid total=0
  for pid in "$@"; do
    # Fields after "pid (comm) ": state is $1, utime $12, stime $13.
    total=$((total + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# measure LABEL URL PATH_PREFIX PID...: one wrk run; prints
# "LABEL req/s MB/s p99_ms non2xx cpu_s cpu_s_per_GB" and appends it to $work/results.
measure() {
  local label=$1 url=$2 prefix=$3 before after out
  shift 3
  before=$(cpu_ticks "$@")
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$shared/bench/segments.lua" "$url" \
    -- "$prefix" "$count" .m4s 2>&1)
  after=$(cpu_ticks "$@")
  echo "$out" | awk -v label="$label" -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    -v size="$size" -v secs="$secs" '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
      return v
    }
    /requests in/ {reqs = $1}
    /Requests\/sec/ {rps = $2}
    /^ +99%/ {p99 = ms($2)}
    /Non-2xx/ {bad = $NF}
    END {
      gb = reqs * size / 1e9; cpu = ticks / hz
      printf "%s %.0f %.0f %.2f %d %.2f %.3f\n", label, rps, reqs * size / 1e6 / secs, p99,
        bad, cpu, (gb > 0 ? cpu / gb : 0)
    }' | tee -a "$work/results"
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; ${secs}s per run," \
  "$conns connections, $count segments of $size bytes, cache-hot"
echo "columns: server req/s MB/s p99_ms non-2xx cpu_s cpu_s_per_GB"
start_nginx http 0
measure nginx-http "http://127.0.0.1:$ngx_port" "/bench/s" $(nginx_pids "$ngx_dir")
measure mhc-http "http://$serve_http" /v1/content/bench/seg/ "$serve_pid"
if [ "${HTTPS:-1}" = 1 ]; then
  for i in $(seq 0 $((count - 1))); do
    curl -sf --cacert "$work/cert.pem" -o /dev/null "https://$serve_https/v1/content/bench/seg/$i.m4s"
  done
  start_nginx https 1
  if [ "$ktls" = 1 ]; then
    echo "HTTPS: the kernel offers kTLS; nginx asks for it (ssl_conf_command Options KTLS)," \
      "which takes effect where its OpenSSL was built with kTLS"
  else
    echo "HTTPS: this kernel has no TLS ULP (tcp_available_ulp: $(cat /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null)):" \
      "both servers encrypt in user space"
  fi
  measure nginx-https "https://127.0.0.1:$ngx_port" "/bench/s" $(nginx_pids "$ngx_dir")
  measure mhc-https "https://$serve_https" /v1/content/bench/seg/ "$serve_pid"
fi
awk '{rps[$1] = $2; p99[$1] = $4; cpu[$1] = $7}
  END {
    split("http https", kinds, " ")
    for (k = 1; k <= 2; k++) {
      m = "mhc-" kinds[k]; n = "nginx-" kinds[k]
      if (!(m in rps) || rps[n] == 0 || p99[n] == 0 || cpu[n] == 0) continue
      printf "%s mhc/nginx: req/s %.2fx (goal >= 1.0), p99 %.2fx (goal <= 1.0), CPU s per GB %.2fx (goal <= 1.0)\n",
        toupper(kinds[k]), rps[m] / rps[n], p99[m] / p99[n], cpu[m] / cpu[n]
    }
  }' "$work/results"
metric() { curl -sf "http://$serve_http/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
echo "mhc-node body bytes sent: $(metric mhc_http_response_body_bytes_total)," \
  "of which from verified files by sendfile: $(metric mhc_http_file_body_bytes_total)"
echo "mhc-node peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$serve_pid/status)"
