# Shared by the bench scripts (sourced, from the repository's root).

# The caller's voice: the two greeting prompts, one after the other, as a 16-bit WAV.
caller_wav() {
  python3 - "$1" <<'PY'
import sys, wave
out = wave.open(sys.argv[1], "wb"); out.setnchannels(1); out.setsampwidth(2); out.setframerate(8000)
for f in ("crates/media/prompts/you-have-reached.wav", "crates/media/prompts/leave-message.wav"):
    w = wave.open(f, "rb"); out.writeframes(w.readframes(w.getnframes()))
out.close()
PY
}

# CPU ticks (user + system) of a process so far.
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# The same, user and system apart: "USER SYSTEM".
ticks_split() { awk '{print $14, $15}' "/proc/$1/stat"; }

# Resident memory of a process (KiB).
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

# Context switches of each live thread of a process, one "TID NAME COUNT" a line
# (voluntary + involuntary). Two snapshots tell which threads a load wakes.
thread_switches() {
  for t in /proc/"$1"/task/*; do
    awk -v tid="${t##*/}" -v name="$(tr ' ' '_' < "$t/comm")" \
      '/ctxt_switches/{n+=$2} END{print tid, name, n}' "$t/status" 2>/dev/null
  done
}

# Per thread name, the switches between two thread_switches snapshots, per call: threads
# born during the load count from zero; threads that ended before the second are lost.
switches_by_name() { # BEFORE AFTER CALLS
  awk -v n="$3" 'FNR==NR{b[$1]=$3; next} {d[$2]+=$3-b[$1]}
    END{for(k in d) if(d[k]>0) printf "  %-18s %6.1f\n", k, d[k]/n}' "$1" "$2" | sort -k2 -rn
}
