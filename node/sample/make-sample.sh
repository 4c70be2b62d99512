#!/usr/bin/env bash
# Regenerates the sample stream that `mhc-node demo` ingests (embedded into the binary).
# 8 s of test pattern + 440 Hz tone, H.264 + AAC, 2 s fMP4 segments; this ffmpeg build's output is
# byte-identical from run to run, so the committed files only change if the settings below do.
set -euo pipefail
cd "$(dirname "$0")"
rm -f index.m3u8 init.mp4 seg_*.m4s
ffmpeg -v error -y \
  -f lavfi -i testsrc2=size=426x240:rate=25:duration=8 \
  -f lavfi -i sine=frequency=440:sample_rate=48000:duration=8 \
  -c:v libx264 -preset veryfast -pix_fmt yuv420p -b:v 250k -maxrate 300k -bufsize 600k \
  -g 50 -keyint_min 50 -sc_threshold 0 -c:a aac -b:a 64k -shortest \
  -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_type fmp4 \
  -hls_fmp4_init_filename init.mp4 -hls_segment_filename 'seg_%03d.m4s' index.m3u8
