#!/usr/bin/env python3
"""Speech with a reference text nobody here recorded, and the word error rate.

- `librivox(out, rate)`: Debian's `pocketsphinx-testdata` has five LibriVox recordings of
  *Sense and Sensibility* (16 kHz) with their reference texts: joined, 24.7 s of read
  speech, written as 8 kHz 16-bit mono (what a G.711 call carries) or at 16 kHz.
- `espeak(text, voice, out)`: `espeak-ng` speaking a text (French, German), 8 kHz.
- `wer(reference, hypothesis)`: word-level Levenshtein distance over the reference's
  length, both lower-cased, punctuation and accents folded, numbers as written.

  python3 interop/asr/speech.py librivox OUT.wav   # prints the reference
  python3 interop/asr/speech.py wer "ref" "hyp"
"""

import array
import math
import os
import re
import subprocess
import sys
import tempfile
import unicodedata
import wave

LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"


def read_wav(path):
    with wave.open(path) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        samples = array.array("h", w.readframes(w.getnframes()))
        return w.getframerate(), samples


def to_8k(rate, samples):
    """Down to 8 kHz: a 2:1 decimation after a short low-pass (a 16 kHz input), or as is."""
    if rate == 8000:
        return samples
    assert rate == 16000, rate
    taps = [-0.0106, 0.0, 0.0739, 0.1846, 0.2521, 0.1846, 0.0739, 0.0, -0.0106]
    n, half = len(samples), len(taps) // 2
    out = array.array("h")
    for i in range(0, n, 2):
        acc = 0.0
        for k, t in enumerate(taps):
            j = i + k - half
            if 0 <= j < n:
                acc += t * samples[j]
        out.append(max(-32768, min(32767, int(acc / 0.7479))))
    return out


def write_wav(path, samples, rate=8000):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def librivox(out, rate=8000):
    """Writes the joined LibriVox speech to `out` (8 kHz, or 16 kHz as recorded); returns
    its reference text."""
    texts = {}
    with open(os.path.join(LIBRIVOX, "transcription")) as f:
        for line in f:
            m = re.match(r"<s>(.*)</s>\s*\((.*)\)", line.strip())
            if m:
                texts[m.group(2)] = m.group(1).strip()
    with open(os.path.join(LIBRIVOX, "fileids")) as f:
        ids = [line.strip() for line in f if line.strip()]
    joined = array.array("h")
    gap = array.array("h", [0] * (rate * 3 // 10))  # 0.3 s between sentences
    for i in ids:
        got, samples = read_wav(os.path.join(LIBRIVOX, i + ".wav"))
        joined.extend(to_8k(got, samples) if rate == 8000 else samples)
        joined.extend(gap)
    write_wav(out, joined, rate)
    return " ".join(texts[i] for i in ids)


def espeak(text, voice, out, speed=150):
    """`espeak-ng -v voice` speaking `text`, written to `out` at 8 kHz."""
    with tempfile.TemporaryDirectory() as d:
        raw = os.path.join(d, "say.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text],
                       check=True, timeout=60)
        rate, samples = read_wav(raw)
    write_wav(out, resample_8k(rate, samples))


def resample_8k(rate, samples):
    """Any rate down to 8 kHz: a windowed-sinc low-pass at 3.6 kHz, read at each output
    instant (espeak-ng speaks at 22,050 Hz; picking samples would alias)."""
    if rate == 8000:
        return samples
    half, cut = 24, 3600 / rate
    taps = []
    for k in range(-half, half + 1):
        sinc = 2 * cut if k == 0 else math.sin(2 * math.pi * cut * k) / (math.pi * k)
        taps.append(sinc * (0.54 + 0.46 * math.cos(math.pi * k / half)))
    out = array.array("h")
    step, n = rate / 8000, len(samples)
    for i in range(int(n / step)):
        c = int(i * step)
        acc = 0.0
        for k, t in enumerate(taps, -half):
            j = c + k
            if 0 <= j < n:
                acc += t * samples[j]
        out.append(max(-32768, min(32767, int(acc))))
    return out


def words(text):
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[^a-z0-9' ]+", " ", text.replace("-", " "))
    out = [w.strip("'") for w in text.split() if w.strip("'")]
    # Titles as read aloud: "Mr." is what the reader said as "mister".
    return [SPOKEN.get(w, w) for w in out]


SPOKEN = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def wer(reference, hypothesis):
    r, h = words(reference), words(hypothesis)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / max(1, len(r))


if __name__ == "__main__":
    if sys.argv[1:2] == ["librivox"]:
        print(librivox(sys.argv[2]))
    elif sys.argv[1:2] == ["wer"]:
        print(f"{wer(sys.argv[2], sys.argv[3]):.3f}")
    else:
        sys.exit(__doc__)
