#!/usr/bin/env bash
# Cache-hot serving of 2 MiB segments, 64 connections, loopback: mhc-node vs nginx (sendfile),
# same bytes, same wrk load, one run (../shared/bench/vs-nginx.sh does the side-by-side).
# Usage: bench/vs-nginx.sh [SECONDS=10] [CONNS=64]   Needs: nginx, wrk (and openssl for HTTPS).
#        VIA_EDGE=1 bench/vs-nginx.sh ...   serves through an edge that filled from the origin.
#        HTTPS=1 bench/vs-nginx.sh ...      also both over TLS (HTTP/1.1, one self-signed
#                                           certificate for both; nginx with ssl_certificate).
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
[ "${HTTPS:-0}" = 1 ] || exit 0

# The same over TLS: the node restarted with listen.https, nginx with the same certificate.
echo "--- HTTPS (TLS 1.3, HTTP/1.1, same certificate)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"
stop_all
sed -i 's|^iroh = .*|&\nhttps = "127.0.0.1:0"|' "$work/origin.toml"
printf '[http]\ntls_cert = "%s"\ntls_key = "%s"\n' "$work/cert.pem" "$work/key.pem" >> "$work/origin.toml"
rm -f "$origin_data/runtime.json"
RUST_LOG=warn "$bin" run --config "$work/origin.toml" 2> "$work/origin.log" &
origin_pid=$!
wait_http "$origin_data" "$work/origin.log" >/dev/null
https=$(sed -n 's/.*"https": "\(.*\)".*/\1/p' "$origin_data/runtime.json")
for i in $(seq 0 $((count - 1))); do
  curl -sf --cacert "$work/cert.pem" -o /dev/null "https://$https/v1/content/bench/seg/$i.m4s"
done
ngx=$work/nginx-tls
mkdir -p "$ngx/tmp"
port=$((20000 + RANDOM % 20000))
sed -e "s|@ROOT@|$work|; s|@PORT@|$port ssl|; s|@DIR@|$ngx|g" \
  -e "s|root $work;|&\n    ssl_certificate $work/cert.pem;\n    ssl_certificate_key $work/key.pem;\n    ssl_protocols TLSv1.3;|" \
  "$shared/bench/nginx.conf.in" > "$ngx/nginx.conf"
nginx -p "$ngx" -c "$ngx/nginx.conf"
trap 'nginx -p "$ngx" -c "$ngx/nginx.conf" -s stop 2>/dev/null || true; stop_all; rm -rf "$work"' EXIT
sleep 0.5
run() { # url prefix -> "req/s MB/s p99"
  wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$shared/bench/segments.lua" "$1" -- "$2" "$count" .m4s 2>&1 |
    awk '/Requests\/sec/ {rps=$2} /Transfer\/sec/ {t=$2} /^ +99%/ {p=$2} /Non-2xx/ {bad=$NF}
         END {printf "%s req/s  %s/s  p99 %s  non-2xx %s\n", rps, t, p, (bad==""?0:bad)}'
}
n=$(run "https://127.0.0.1:$port" "/bench/s")
o=$(run "https://$https" /v1/content/bench/seg/)
echo "nginx : $n"
echo "other : $o"
awk -v a="$(echo "$o" | awk '{print $1}')" -v b="$(echo "$n" | awk '{print $1}')" \
  'BEGIN {printf "ratio other/nginx over HTTPS (req/s): %.2f\n", a/b}'
echo "mhc-node peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$origin_pid/status)"
