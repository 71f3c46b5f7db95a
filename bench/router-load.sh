#!/usr/bin/env bash
# Router CPU per redirected call under SIPp load, beside Kamailio's dispatcher doing the
# same job in the same run (bench/baseline/: Kamailio 5.6, 4 workers, `-m 1024 -M 16`, the
# same SIPp scenario and command): CPU ticks of the whole `boxless serve` process (router,
# two idle messaging servers, HTTP API), and of Kamailio's processes, before and after.
# With --nats: the router alone as `boxless router`, status from two `boxless server`
# processes over a local nats-server, OPTIONS probes on; only the router's CPU counts.
# Usage: bench/router-load.sh [--nats] [RATE...]   (default: 5000 10000 20000; 10 s per rate)
#        BOXLESS=path/to/boxless runs that build instead of this tree's (A/B comparisons).
#        PROFILE=FILE records each rate with `perf record` (PERF_ARGS, default -g) into
#        FILE.RATE.
#        KAMAILIO=0 leaves Kamailio out.
# Needs: sip-tester, kamailio (and nats-server for --nats); loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
nats=0
if [ "${1:-}" = "--nats" ]; then nats=1; shift; fi
rates=("$@")
[ $# -eq 0 ] && rates=(5000 10000 20000)
scenario=bench/baseline/sipp-redirect-load.xml
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
# A process and its children (Kamailio's workers).
tree_ticks() { local t=0 p; for p in $1 $(pgrep -P $1); do t=$((t + $(ticks $p))); done; echo $t; }
kam=${KAMAILIO:-1}
if [ "$kam" = 1 ]; then
  printf '1 sip:127.0.0.1:25170 0 0\n1 sip:127.0.0.1:25172 0 0\n' > "$work/dispatcher.list"
  sed -e 's#ROUTER_PORT#25180#' -e "s#DISPATCHER_LIST#$work/dispatcher.list#" \
      bench/baseline/kamailio-redirect.cfg > "$work/kam.cfg"
  kamailio -f "$work/kam.cfg" -DD -E -m 1024 -M 16 > "$work/kam.log" 2>&1 & KP=$!
  pids+=($KP)
  sleep 2
fi
[ $nats = 1 ] && what="router CPU per call (NATS)" || what="boxless CPU per call"
# One SIPp run of 10 s at rate $2 against $1; prints "failed".
load() {
  (cd "$work" && sipp -sf "$OLDPWD/$scenario" -s +15551230002 -i 127.0.0.1 -p 25090 "$1" \
       -r "$2" -m "$(($2 * 10))" -l "$2" -buff_size 4194304 -timeout 40s -nostdin -trace_stat \
       -stf "k$2.csv" >/dev/null 2>&1) || true
  awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c}' "$work/k$2.csv"
  rm -f "$work/k$2.csv"
}
echo "| rate (calls/s) | calls | failed | $what | Kamailio failed | Kamailio CPU per call | ratio |"
echo "|---|---|---|---|---|---|---|"
for r in "${rates[@]}"; do
  n=$((r * 10))
  t0=$(ticks $BP)
  if [ -n "${PROFILE:-}" ]; then
    perf record ${PERF_ARGS:--g} -p $BP -o "$PROFILE.$r" > /dev/null 2>&1 & PP=$!
  fi
  failed=$(load 127.0.0.1:25160 "$r")
  t1=$(ticks $BP)
  if [ -n "${PROFILE:-}" ]; then kill -INT $PP 2>/dev/null || true; wait $PP 2>/dev/null || true; fi
  ours=$(awk -v t=$(( t1 - t0 )) -v n=$n 'BEGIN{printf "%.1f", t * 10000 / n}')
  kfailed=- theirs=- ratio=-
  if [ "$kam" = 1 ]; then
    k0=$(tree_ticks $KP)
    kfailed=$(load 127.0.0.1:25180 "$r")
    k1=$(tree_ticks $KP)
    theirs=$(awk -v t=$(( k1 - k0 )) -v n=$n 'BEGIN{printf "%.1f", t * 10000 / n}')
    ratio=$(awk -v a=$(( t1 - t0 )) -v b=$(( k1 - k0 )) 'BEGIN{ if (a > 0) printf "%.1fx", b / a; else print "-" }')
    theirs="$theirs µs"
  fi
  echo "| $r | $n | $failed | $ours µs | $kfailed | $theirs | $ratio |"
done
