#!/usr/bin/env bash
# Records the default greeting prompts once with espeak-ng and converts them to
# 8 kHz mono 16-bit PCM WAV with sox. The WAV files are committed; run this again only to
# change a prompt:  apt-get install -y espeak-ng sox && tools/make-prompts.sh
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/crates/media/prompts"
mkdir -p "$out"
say() { # name text
  espeak-ng -v en-us -s 150 -w "$out/$1.raw.wav" "$2"
  # Leading and trailing silence trimmed so that digits run together naturally.
  sox "$out/$1.raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$out/$1.wav" \
    silence 1 0.02 1% reverse silence 1 0.02 1% reverse norm -3 pad 0 0.05
  rm -f "$out/$1.raw.wav"
}
say you-have-reached "You have reached"
say leave-message "Please leave a message after the tone."
for d in 0 1 2 3 4 5 6 7 8 9; do say "digit-$d" "$d"; done
# Retrieval.
say message-from "Message from"
say unknown-caller "an unknown number"
say received "received"
say at "at"
say enter-code "Please enter the access code from your text message."
say wrong-code "That code is not right."
say locked-out "Too many wrong codes. Please try again later."
say no-messages "There are no messages for you on this number."
say options "To hear the message again, press 1. To delete it, press 7. To save it, press 9. For the next message, press pound."
say deleted "Message deleted."
say saved "Message saved."
say no-more "No more messages."
say goodbye "Goodbye."
for n in $(seq 0 59); do say "number-$n" "$n"; done
months=(January February March April May June July August September October November December)
for i in $(seq 1 12); do say "month-$i" "${months[$((i - 1))]}"; done
