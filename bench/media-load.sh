#!/usr/bin/env bash
# Media at scale, on loopback, one `boxless serve` and SIPp on the same machine:
#  1. RECORDINGS concurrent messages of SECONDS each (PCMU, SIPp's RTP engine looping a
#     voice: interop/sipp/record.xml), straight at server ms1: failed calls, messages
#     stored and their lengths, Boxless's CPU (cores) and RSS growth per call while all of
#     them are up, disk per minute of audio;
#  2. PLAYBACKS concurrent link-number calls listening to those messages (listen.xml)
#     for SECONDS: the inter-packet gap of every 20 ms step of what the server sent,
#     captured with tshark (p50/p99/max), and Boxless's CPU while they play.
# Usage: bench/media-load.sh [RECORDINGS] [SECONDS] [PLAYBACKS]   (default 1000 30 300)
#        BOXLESS=path/to/boxless runs that build instead of this tree's (A/B comparisons).
#        MIXED=K records K more messages while the playbacks play (mixed load: the
#        recordings' drains and the playbacks' frames on the same call threads).
# Needs: sip-tester (with RTPSTREAM, as Debian's), tshark, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
n=${1:-1000}
secs=${2:-30}
m=${3:-300}
rate=${RATE:-100}
work=$(mktemp -d); echo "work: $work"
trap 'kill $BP $RP $CP 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
BP= RP= CP=
bin=${BOXLESS:-./target/release/boxless}
[ -n "${BOXLESS:-}" ] || cargo build --release -q
cat > "$work/b.toml" <<TOML
data_dir = "$work/data"
[router]
listen = "127.0.0.1:25360"
[http]
listen = "127.0.0.1:28280"
[sms]
transport = "log"
max_per_recipient_per_hour = 1000000   # every call is for one number
[retrieval]
access_code = "never"
[messages]
greeting = "tone"
[[servers]]
id = "ms1"
listen = "127.0.0.1:25370"
http = "127.0.0.1:28281"
rtp_ports = "40000-45999"
capacity = 4000
link_numbers = ["+18005550100-+18005550399"]
TOML
RUST_LOG=warn "$bin" serve --config "$work/b.toml" > "$work/serve.log" 2>&1 & BP=$!
sleep 1
caller_wav "$work/caller.wav"
python3 interop/make_pcap.py "$work/caller.wav" "$work/caller.ulaw"

hz=$(getconf CLK_TCK)
# Samples: time, Boxless RSS (KiB), Boxless CPU ticks, calls up (the server's own count),
# SIPp's CPU ticks (its work is the same every run: a gauge of the host's speed).
sample() {
  while kill -0 $BP 2>/dev/null; do
    up=$(curl -s http://127.0.0.1:28280/api/v1/servers | python3 -c 'import json,sys; print(sum(s.get("active_calls",0) for s in json.load(sys.stdin)))' 2>/dev/null || echo 0)
    sp=$(pgrep -x sipp | head -1)
    echo "$(date +%s.%N) $(rss $BP) $(ticks $BP) $up $( [ -n "$sp" ] && ticks "$sp" 2>/dev/null || echo 0)"
    sleep 0.5
  done
}
# SIPp callers leaving messages (record.xml) at ms1: COUNT calls of MS each from SIP port
# SPORT and media ports from MPORT, given up after TIMEOUT s; more SIPp options after.
record() {
  local sport=$1 mport=$2 count=$3 ms=$4 timeout=$5; shift 5
  (cd "$work" && sipp -sf "$OLDPWD/interop/sipp/record.xml" -s 15551230002 -i 127.0.0.1 -mi 127.0.0.1 \
     -p "$sport" -mp "$mport" -key recipient 5551230002 \
     -d "$ms" -m "$count" -r "$rate" -l $(( count + 100 )) -timeout "${timeout}s" \
     -nostdin "$@" 127.0.0.1:25370 > /dev/null 2>&1)
}
idle=$(rss $BP)
sample > "$work/samples.txt" & RP=$!
record 25390 50000 "$n" $(( secs * 1000 )) $(( secs + 120 )) -trace_stat -fd 1 -stf rec.csv || true
sleep 3
kill $RP 2>/dev/null || true; RP=
failed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c}' "$work/rec.csv")
python3 - "$work" "$n" "$secs" "$idle" "$hz" "$failed" <<'PY'
import glob, os, sqlite3, sys
work, n, secs, idle, hz, failed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rows = [l.split() for l in open(f"{work}/samples.txt")]
rows = [(float(t), int(r), int(c), int(u), int(s)) for t, r, c, u, s in rows if u.isdigit()]
peak_up = max(r[3] for r in rows)
# The plateau: every sample with at least 98 % of the peak up.
plat = [r for r in rows if r[3] >= peak_up * 0.98]
span = max(plat[-1][0] - plat[0][0], 1e-9)
cores = (plat[-1][2] - plat[0][2]) / hz / span
sipp_cores = (plat[-1][4] - plat[0][4]) / hz / span
peak_rss = max(r[1] for r in rows)
db = sqlite3.connect(f"{work}/data/ms1/messages.sqlite")
count, lo, hi = db.execute("SELECT count(*), min(duration_ms), max(duration_ms) FROM messages").fetchone()
off = db.execute("SELECT count(*) FROM messages WHERE abs(duration_ms - ?) > 1000", (secs * 1000,)).fetchone()[0]
total_ms = db.execute("SELECT sum(duration_ms) FROM messages").fetchone()[0] or 1
disk = sum(os.path.getsize(p) for p in glob.glob(f"{work}/data/ms1/audio/*/*/*.wav"))
print(f"recordings: {n} x {secs} s, failed (SIPp): {failed}, peak up at once: {peak_up}")
print(f"stored: {count}, length {lo}..{hi} ms, off by more than 1 s: {off}")
print(f"Boxless CPU with {peak_up} up ({span:.0f} s): {cores:.3f} cores")
print(f"SIPp CPU meanwhile (the same work every run: the host's speed): {sipp_cores:.3f} cores; Boxless/SIPp {cores / max(sipp_cores, 1e-9):.3f}")
print(f"RSS: idle {idle} KiB, peak {peak_rss} KiB -> {(peak_rss - idle) / max(peak_up, 1):.1f} KiB per call")
print(f"disk: {disk / (total_ms / 60000) / 1000:.0f} kB per minute of audio")
PY

if [ "$m" -gt 0 ]; then
  link=$(python3 -c "import sqlite3,sys; print('+%d' % sqlite3.connect(sys.argv[1]).execute('SELECT link_number FROM messages LIMIT 1').fetchone()[0])" "$work/data/ms1/messages.sqlite")
  tshark -i lo -q -w "$work/play.pcap" -F pcap -f "udp and src portrange 40000-45999" > /dev/null 2>&1 & CP=$!
  sleep 2
  MP=
  if [ "${MIXED:-0}" -gt 0 ]; then
    # Their greetings are captured too (the server's own 20 ms playout, same as a message's).
    record 25392 52000 "$MIXED" $(( secs * 1000 + 10000 )) $(( secs + 130 )) & MP=$!
    sleep $(( MIXED / rate + 1 ))
  fi
  sample > "$work/play-samples.txt" & RP=$!
  (cd "$work" && sipp -sf "$OLDPWD/interop/sipp/listen.xml" -s "$link" -i 127.0.0.1 -mi 127.0.0.1 \
     -p 25391 -mp 56000 -key me 15551230002 \
     -d $(( secs * 1000 )) -m "$m" -r "$rate" -l $(( m + 50 )) -timeout $(( secs + 60 ))s \
     -nostdin -trace_stat -fd 1 -stf play.csv 127.0.0.1:25370 > /dev/null 2>&1) || true
  kill $RP 2>/dev/null || true; RP=
  # Boxless's CPU while (nearly) all of them play: 20 ms frames out, the keys' drains.
  python3 - "$work/play-samples.txt" "$hz" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
rows = [(float(t), int(c), int(u), int(s)) for t, r, c, u, s in rows if u.isdigit()]
peak = max((r[2] for r in rows), default=0)
plat = [r for r in rows if peak and r[2] >= peak * 0.98]
if len(plat) > 1:
    span = plat[-1][0] - plat[0][0]
    cores = (plat[-1][1] - plat[0][1]) / int(sys.argv[2]) / span
    sipp = (plat[-1][3] - plat[0][3]) / int(sys.argv[2]) / span
    print(f"Boxless CPU with {peak} playing ({span:.0f} s): {cores:.3f} cores; SIPp {sipp:.3f}; Boxless/SIPp {cores / max(sipp, 1e-9):.3f}")
PY
  [ -z "$MP" ] || { wait $MP || true; echo "mixed: $MIXED recordings up alongside the playbacks"; }
  sleep 1
  kill -INT $CP 2>/dev/null || true; wait $CP 2>/dev/null || true; CP=
  pfailed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c}' "$work/play.csv")
  tshark -r "$work/play.pcap" -o rtp.heuristic_rtp:TRUE -T fields -e frame.time_epoch \
    -e udp.dstport -e rtp.ssrc -e rtp.timestamp 2>/dev/null > "$work/play.txt"
  python3 - "$work/play.txt" "$m" "$pfailed" <<'PY'
import sys
streams = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 4:
        streams.setdefault((f[1], f[2]), []).append((float(f[0]), int(f[3])))
gaps = []
for pkts in streams.values():
    for (t0, ts0), (t1, ts1) in zip(pkts, pkts[1:]):
        if (ts1 - ts0) & 0xFFFFFFFF == 160:  # the next 20 ms frame: the sender meant 20 ms
            gaps.append((t1 - t0) * 1000)
gaps.sort()
q = lambda p: gaps[min(len(gaps) - 1, int(len(gaps) * p))]
print(f"playbacks: {sys.argv[2]}, failed (SIPp): {sys.argv[3]}, streams captured: {len(streams)}, 20 ms steps: {len(gaps)}")
print(f"inter-packet gap: p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, p99.9 {q(0.999):.2f} ms, max {gaps[-1]:.2f} ms")
PY
fi
