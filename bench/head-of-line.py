#!/usr/bin/env python3
"""Head-of-line: does a server's SIP wait while retrievals load their messages?

`boxless serve` (release build, SMS to the log) with one link number on ms1; SIPp leaves
N messages (default 200) for one recipient straight at ms1, so they all share that link
number. Then SIPp places K retrievals of it at once (default 50, the recipient's own
caller-ID: no code), each of which loads all N messages' audio, while this script sends
SIP OPTIONS to the same server every 5 ms and times each answer. Prints the OPTIONS
round trip (p50, p99, max) before and while the retrievals start, and how long the
retrievals took to be answered. Loopback only; every load is bounded.

  cargo build --release
  python3 bench/head-of-line.py [--bin target/release/boxless] [--messages 200] [--retrievals 50]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../interop"))
from harness import (  # noqa: E402
    ROOT, caller_pcap, free_port, http_get, ports, start_smsc_and_serve, stop_all,
    wait_until, write_config,
)

RECIPIENT = "+15551230002"
LINK = "+18005550100"


def sipp(work, name, scenario, target, calls, rate, keys, limit, wait=True):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "callers.csv"), "w") as f:
        f.write("SEQUENTIAL\n" + "".join(f"+1555{i:07d};\n" for i in range(calls)))
    argv = ["sipp", "-sf", os.path.join(ROOT, "interop/sipp", scenario), "-inf", "callers.csv",
            "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port()),
            "-mp", str(46000 + free_port() % 200 * 10), *keys, target,
            "-m", str(calls), "-r", str(rate), "-l", str(limit), "-timeout", "120s",
            "-nostdin", "-trace_err"]
    p = subprocess.Popen(argv, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if wait:
        p.wait(timeout=300)
    return p


def options_prober(server, stop, out):
    """OPTIONS every 5 ms until `stop`; each round trip in ms appended to `out`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    port = s.getsockname()[1]
    n = 0
    while not stop.is_set():
        n += 1
        cid = f"hol-{n}"
        msg = (f"OPTIONS sip:ping@127.0.0.1:{server} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKhol{n}\r\n"
               f"From: <sip:bench@127.0.0.1>;tag=b{n}\r\nTo: <sip:ping@127.0.0.1>\r\n"
               f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        t0 = time.perf_counter()
        s.sendto(msg.encode(), ("127.0.0.1", server))
        try:
            while True:
                data, _ = s.recvfrom(4096)
                if f"Call-ID: {cid}\r\n".encode() in data:
                    out.append((time.perf_counter() - t0) * 1000)
                    break
        except socket.timeout:
            out.append(2000.0)
        time.sleep(0.005)
    s.close()


def probing(server, during):
    """OPTIONS round trips (ms) to `server` while `during()` runs."""
    out, stop = [], threading.Event()
    th = threading.Thread(target=options_prober, args=(server, stop, out))
    th.start()
    try:
        during()
    finally:
        stop.set()
        th.join()
    return out


def summary(xs):
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return f"n={len(xs)} p50 {statistics.median(xs):.2f} ms, p99 {p99:.2f} ms, max {xs[-1]:.2f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/boxless"))
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--retrievals", type=int, default=50)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="boxless-hol-")
    p = ports()
    cfg = write_config(work, p, rtp=47000, links=(LINK, "+18005550150-+18005550199"),
                       sms="max_per_recipient_per_hour = 100000",
                       top="[sip]\nmax_invites_per_second_per_peer = 100000\n",
                       servers=("capacity = 400\n", ""))
    procs = start_smsc_and_serve(os.path.abspath(a.bin), cfg, work, p,
                                 os.path.join(work, "sms.jsonl"),
                                 lambda: http_get(p["http"], "/api/v1/servers")[2])
    try:
        ms1 = f"127.0.0.1:{p['s1']}"
        pcap = caller_pcap(work)
        t = time.monotonic()
        sipp(work, "deposits", "deposit.xml", ms1, a.messages, 25,
             ["-key", "pcap", pcap, "-key", "recipient", RECIPIENT[2:]], 100)

        def stored():
            code, _, body = http_get(p["http"], f"/api/v1/messages?recipient=%2B{RECIPIENT[1:]}")
            return len(body) if code == 200 else 0
        wait_until(lambda: stored() >= a.messages, 120, f"{a.messages} messages stored")
        code, _, body = http_get(p["http"], f"/api/v1/messages?recipient=%2B{RECIPIENT[1:]}")
        links = {m["link_number"] for m in body}
        print(f"{len(body)} messages stored in {time.monotonic() - t:.1f} s, link numbers {links}")

        idle = probing(p["s1"], lambda: time.sleep(2.0))
        print(f"OPTIONS, idle:                   {summary(idle)}")

        def retrievals():
            time.sleep(0.2)
            t = time.monotonic()
            r = sipp(work, "retrievals", "retrieval.xml", ms1, a.retrievals, a.retrievals,
                     ["-s", LINK, "-key", "me", RECIPIENT[1:]], a.retrievals, wait=False)
            # Every retrieval answered: the server counts each call in progress.
            wait_until(lambda: (http_get(p["http"], "/api/v1/servers")[2] or [{}])[0]
                       .get("active_calls", 0) >= a.retrievals, 120, "every retrieval answered")
            took[0] = time.monotonic() - t
            time.sleep(0.5)
            r.kill()
        took = [0.0]
        busy = probing(p["s1"], retrievals)
        print(f"OPTIONS, {a.retrievals} retrievals of {a.messages} messages starting: "
              f"{summary(busy)}")
        print(f"all {a.retrievals} retrievals in progress after {took[0]:.2f} s")
    finally:
        stop_all(procs)
        print(f"work directory: {work}")


if __name__ == "__main__":
    main()
