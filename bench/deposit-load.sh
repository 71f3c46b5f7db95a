#!/usr/bin/env bash
# Whole-flow figures of the deposit path, on loopback:
#  - CPU per call (and the context switches behind it, per thread) and memory per active
#    call with ~50 concurrent SIPp calls (PCMU audio),
#  - SMS latency after hang-up: `boxless call` returns on the 200 to its BYE; the time until
#    the SMSC simulator (npm smpp) records the SMS.
# Usage: bench/deposit-load.sh [CALLS] [RATE]   (default 100 calls at 10/s, ~55 concurrent)
#   DATA=DIR puts the servers' store under DIR (default: the temporary directory), to
#   measure on the file system an operator's data_dir would be on.
#   BOXLESS=path/to/boxless runs that build instead of this tree's (A/B comparisons).
#   PROFILE=FILE also records the SIPp phase with `perf record -g` into FILE (perf.data).
# Needs: sip-tester, nodejs + `npm ci` in interop/smsc, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
calls=${1:-100}
rate=${2:-10}
work=$(mktemp -d)
trap 'kill $BP $SP 2>/dev/null || true; rm -rf "$work" "${DATA:-$work}/data-$$"' EXIT
bin=${BOXLESS:-./target/release/boxless}
[ -n "${BOXLESS:-}" ] || cargo build --release -q
cat > "$work/b.toml" <<TOML
data_dir = "${DATA:-$work}/data-$$"
[router]
listen = "127.0.0.1:25260"
[http]
listen = "127.0.0.1:28180"
[sms]
transport = "smpp"
address = "127.0.0.1:22775"
max_per_recipient_per_hour = 100000   # every call is for one number
[messages]
greeting = "tone"
[[servers]]
id = "ms1"
listen = "127.0.0.1:25270"
http = "127.0.0.1:28181"
rtp_ports = "40000-40999"
capacity = 200
link_numbers = ["+18005550100-+18005550199"]
[[servers]]
id = "ms2"
listen = "127.0.0.1:25272"
http = "127.0.0.1:28182"
rtp_ports = "41000-41999"
capacity = 200
link_numbers = ["+18005550200-+18005550299"]
TOML
node interop/smsc/smsc.js 22775 "$work/sms.jsonl" > /dev/null 2>&1 & SP=$!
RUST_LOG=warn "$bin" serve --config "$work/b.toml" > "$work/serve.log" 2>&1 & BP=$!
sleep 1
caller_wav "$work/caller.wav"
python3 interop/make_pcap.py "$work/caller.wav" "$work/caller.pcap"
base=$(rss $BP)
t0=$(ticks $BP); s0=($(ticks_split $BP)); thread_switches $BP > "$work/sw0.txt"
( while kill -0 $BP 2>/dev/null; do rss $BP; sleep 0.1; done ) > "$work/rss.txt" & RP=$!
# CPU time as the scheduler counts it (ns, every thread), beside the coarse ticks.
perf stat -e task-clock,context-switches -p $BP -x, -o "$work/cpu.csv" > /dev/null 2>&1 & CP=$!
if [ -n "${PROFILE:-}" ]; then
  perf record ${PERF_ARGS:--g} -F 999 -p $BP -o "$PROFILE" > /dev/null 2>&1 & PP=$!
fi
printf 'SEQUENTIAL\n+15551230001;\n' > "$work/callers.csv"
(cd "$work" && sipp -sf "$OLDPWD/interop/sipp/deposit.xml" -inf "$work/callers.csv" -s 15551230002 -i 127.0.0.1 -mi 127.0.0.1 -p 25290 -mp 26000 \
   -key pcap "$work/caller.pcap" -key recipient 5551230002 127.0.0.1:25260 \
   -m "$calls" -r "$rate" -l 200 -timeout 120s -nostdin -trace_stat -fd 1 -stf s.csv > /dev/null 2>&1) || true
t1=$(ticks $BP); s1=($(ticks_split $BP)); thread_switches $BP > "$work/sw1.txt"
kill $RP 2>/dev/null || true
kill -INT $CP 2>/dev/null || true; wait $CP 2>/dev/null || true
if [ -n "${PROFILE:-}" ]; then kill -INT $PP 2>/dev/null || true; wait $PP 2>/dev/null || true; fi
peak=$(sort -n "$work/rss.txt" | tail -1)
failed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c}' "$work/s.csv")
maxconc=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="CurrentCall") c=i} NR>1{if($c>m)m=$c} END{print m}' "$work/s.csv")
sleep 3
sms=$(wc -l < "$work/sms.jsonl")
echo "calls: $calls at $rate/s, failed: $failed, peak concurrent (SIPp): $maxconc, SMS: $sms"
echo "CPU per call: $(( (t1 - t0) * 10000 / calls )) µs (whole process, $(( t1 - t0 )) ticks: user $(( s1[0] - s0[0] )), system $(( s1[1] - s0[1] )))"
echo "CPU per call (perf stat task-clock): $(awk -F, -v n="$calls" '/task-clock/{printf "%d", $1 * 1000 / n}' "$work/cpu.csv") µs"
# Each switch wakes a thread whose caches have gone cold since its last turn: at a dozen
# calls a second, what a call costs on a VM follows this count (bench/RESULTS.md).
echo "context switches per call: $(awk -F, -v n="$calls" '/context-switches/{printf "%.0f", $1 / n}' "$work/cpu.csv")"
echo "context switches per call by thread (live at the end):"
switches_by_name "$work/sw0.txt" "$work/sw1.txt" "$calls"
echo "RSS: idle ${base} KiB, peak ${peak} KiB -> $(( (peak - base) / (maxconc > 0 ? maxconc : 1) )) KiB per active call"
# SMS latency: 10 sequential calls with the test phone.
lat=()
for i in $(seq 1 10); do
  before=$(wc -l < "$work/sms.jsonl")
  t_hang=$("$bin" call --via 127.0.0.1:25260 --from 5551230001 --to 5551230003 \
     --diversion 5551230003 --play "$work/caller.wav" --play-at 0.6 \
     | sed -n 's/^BYE -> 200 (sent at \([0-9]*\)\.\([0-9]*\) s.*/\1\2/p')
  while [ "$(wc -l < "$work/sms.jsonl")" -le "$before" ]; do sleep 0.002; done
  t_sms=$(tail -1 "$work/sms.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["t"])')
  lat+=($(( t_sms - t_hang )))
done
echo "SMS latency from the caller's BYE to the SMSC (ms, 10 calls): ${lat[*]}"
