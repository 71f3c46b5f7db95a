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
