#!/usr/bin/env bash
# Router CPU per redirected call under SIPp load, measured exactly as ../shared/bench/README.md
# measures Kamailio's dispatcher: same SIPp scenario and command, CPU ticks of the whole
# `boxless serve` process (router, two idle messaging servers, HTTP API) before and after.
# With --nats: the router alone as `boxless router`, status from two `boxless server`
# processes over a local nats-server, OPTIONS probes on; only the router's CPU counts.
# Usage: bench/router-load.sh [--nats] [RATE...]   (default: 5000 10000 20000; 10 s per rate)
#        BOXLESS=path/to/boxless runs that build instead of this tree's (A/B comparisons).
# Needs: sip-tester (and nats-server for --nats); loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
nats=0
if [ "${1:-}" = "--nats" ]; then nats=1; shift; fi
rates=("$@")
[ $# -eq 0 ] && rates=(5000 10000 20000)
scenario=../shared/bench/sipp-redirect-load.xml
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
bin=${BOXLESS:-./target/release/boxless}
[ -n "${BOXLESS:-}" ] || cargo build --release -q
sed -e 's#^data_dir = .*#data_dir = "'"$work"'/data"#' \
    -e 's#^listen = "127.0.0.1:5060"#listen = "127.0.0.1:25160"#' \
    -e 's#^listen = "127.0.0.1:8080"#listen = "127.0.0.1:28080"#' \
    -e 's#^url = .*#url = "nats://127.0.0.1:24222"#' \
    config/default.toml > "$work/bench.toml"
# SIPp is one peer sending far above the default flood guard (500 INVITEs/s per peer):
# raise it so that the guard counts every call, as in production, without refusing them.
sed -i 's#^max_invites_per_second_per_peer = .*#max_invites_per_second_per_peer = 1000000#' "$work/bench.toml"
grep -q '^max_invites_per_second_per_peer = 1000000' "$work/bench.toml"
if [ $nats = 1 ]; then
  sed -i 's#^backend = "local"#backend = "nats"#' "$work/bench.toml"
  nats-server -a 127.0.0.1 -p 24222 > "$work/nats.log" 2>&1 & pids+=($!)
  sleep 0.5
  for id in ms1 ms2; do
    RUST_LOG=warn "$bin" server --config "$work/bench.toml" --id $id > "$work/$id.log" 2>&1 & pids+=($!)
  done
  RUST_LOG=warn "$bin" router --config "$work/bench.toml" > "$work/router.log" 2>&1 & BP=$!
else
  RUST_LOG=warn "$bin" serve --config "$work/bench.toml" > "$work/serve.log" 2>&1 & BP=$!
fi
pids+=($BP)
sleep 2
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
[ $nats = 1 ] && what="router CPU per call (NATS)" || what="boxless CPU per call"
echo "| rate (calls/s) | calls | failed | $what |"
echo "|---|---|---|---|"
for r in "${rates[@]}"; do
  n=$((r * 10))
  t0=$(ticks $BP)
  (cd "$work" && sipp -sf "$OLDPWD/$scenario" -s +15551230002 -i 127.0.0.1 -p 25090 127.0.0.1:25160 \
       -r "$r" -m "$n" -l "$r" -buff_size 4194304 -timeout 40s -nostdin -trace_stat -stf "k$r.csv" \
       >/dev/null 2>&1) || true
  t1=$(ticks $BP)
  failed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c}' "$work/k$r.csv")
  echo "| $r | $n | $failed | $(( (t1 - t0) * 10000 / n )) µs |"
done
