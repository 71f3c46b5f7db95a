#!/usr/bin/env python3
"""Failover under steady SIPp load, with real peers, on 127.0.0.1 only.

Starts nats-server, the npm `smpp` SMSC simulator, `boxless router` (proxy mode) and two
`boxless server` processes, drives SIPp (deposit.xml, one distinct caller number per call)
at a steady rate through the router, and does one thing to the system mid-load:

  kill   kill -9 of server ms1, restarted a few seconds later
  drain  SIGTERM of server ms2 (must exit 0), restarted afterwards
  nats   nats-server stopped and, after longer than the status TTL, started again
  routers  two routers behind Kamailio's dispatcher (the operator's switch, the load goes
           to Kamailio); kill -9 of one router

Then it checks, per scenario:
  - kill:  the router marks ms1 down within two TTLs; every failed call was answered by
           ms1 (connected to it when it died); the restarted ms1 is `up` again.
  - drain: no call fails; ms2 is seen `draining`, exits 0 and rejoins when restarted.
  - nats:  no call fails; the router reports degraded health while NATS is away and
           healthy again once it is back.
  - routers: calls go on through the other router; the failed calls are at most those
           in flight on the killed one (dispatched to it, no final answer yet: from
           Kamailio's log).
  - all:   every call SIPp completed has its message listed by the router's API (which
           asks every server) and an SMS at the SMSC naming its caller, none twice.

It prints the figures (detection, rejoin, failed calls, router CPU per call) and exits
1 when a check fails. Usage:

  cargo build --release
  python3 interop/failover.py [--bin target/release/boxless] [--rate 10] [--seconds 20] \
      [kill] [drain] [nats] [routers]
"""

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

from harness import (
    ROOT, media_port, Fail, Procs, caller_pcap, cpu_ns, free_port, http_get, ports, run,
    server_state, wait_until, write_config,
)

TTL_S = 3
RECIPIENT = "+15551230002"
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"


class System:
    """Every process of one scenario; stops them all on exit."""

    def __init__(self, binary, work):
        self.bin = binary
        self.work = work
        self.procs = Procs(work)
        self.p = ports("nats")
        self.sms_out = os.path.join(work, "sms.jsonl")
        self.cfg = write_config(
            work, self.p, rtp=36000, rtp_span=1000, mode="proxy",
            links=("+18005550000-+18005550999", "+18005551000-+18005551999"),
            # Every call is for one number: lift the hourly SMS limit (interop/abuse.py
            # tests it).
            sms="max_per_recipient_per_hour = 100000",
            extra=f"""[control]
backend = "nats"
url = "nats://127.0.0.1:{self.p['nats']}"
ttl_seconds = {TTL_S}""")

    def start(self, name, argv, port=None, env=None):
        return self.procs.start(name, argv, port, env)

    def nats(self):
        # JetStream holds the recipients' preferences (a key-value bucket).
        return self.start("nats", ["nats-server", "-a", "127.0.0.1", "-p", str(self.p["nats"]),
                                   "-js", "-sd", os.path.join(self.work, "jetstream")],
                          self.p["nats"])

    def smsc(self):
        return self.start("smsc", ["node", os.path.join(ROOT, "interop/smsc/smsc.js"),
                                   str(self.p["smsc"]), self.sms_out], self.p["smsc"])

    def router(self):
        return self.start("router", [self.bin, "router", "--config", self.cfg], self.p["http"])

    def server(self, sid):
        port = self.p["h1"] if sid == "ms1" else self.p["h2"]
        return self.start(sid, [self.bin, "server", "--config", self.cfg, "--id", sid], port)

    def up(self):
        self.nats()
        self.smsc()
        self.server("ms1")
        self.server("ms2")
        self.router()
        for sid in ("ms1", "ms2"):
            wait_until(lambda s=sid: (server_state(self.p["http"], s) or {}).get("state") == "up",
                       10, f"{sid} up at the router")

    def stop(self):
        self.procs.kill()


class Load:
    """SIPp at a steady rate through the router; one distinct caller per call."""

    def __init__(self, system, rate, seconds, target=None):
        self.s = system
        self.target = target or f"127.0.0.1:{system.p['router']}"
        self.calls = rate * seconds
        self.rate = rate
        self.callers = [f"+1555{3000000 + i}" for i in range(self.calls)]
        self.dir = os.path.join(system.work, "sipp")
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "callers.csv"), "w") as f:
            f.write("SEQUENTIAL\n" + "".join(f"{c};\n" for c in self.callers))
        self.pcap = caller_pcap(self.dir)

    def start(self):
        argv = ["sipp", "-sf", os.path.join(ROOT, "interop/sipp/deposit.xml"),
                "-inf", "callers.csv", "-s", RECIPIENT[1:], "-i", "127.0.0.1",
                "-mi", "127.0.0.1", "-p", str(free_port()), "-mp", str(media_port(38000, 500)),
                "-key", "pcap", self.pcap, "-key", "recipient", RECIPIENT[2:],
                self.target, "-m", str(self.calls), "-r", str(self.rate),
                "-l", "200", "-max_non_invite_retrans", "3", "-timeout", "180s", "-nostdin",
                "-trace_stat", "-stf", "stat.csv", "-trace_calldebug", "-trace_err"]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def wait(self):
        self.proc.wait(timeout=300)
        self.elapsed = time.monotonic() - self.t0

    def stats(self):
        with open(os.path.join(self.dir, "stat.csv")) as f:
            rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
        head, last = rows[0], rows[-1]
        col = {name: i for i, name in enumerate(head)}
        return int(last[col["SuccessfulCall(C)"]]), int(last[col["FailedCall(C)"]])

    def failed_calls(self):
        """{caller: server port that answered it (None if never answered)} of every failed
        call, from SIPp's call debug log (the ACK carries X-Answered-By)."""
        out = {}
        for name in os.listdir(self.dir):
            if not name.endswith("calldebug.log"):
                continue
            with open(os.path.join(self.dir, name), errors="replace") as f:
                text = f.read()
            # One block per failed call.
            for block in text.split("Call debugging information for call")[1:]:
                callers = re.findall(r"From: <sip:(\+\d+)@", block)
                if not callers:
                    continue
                port = re.search(r"X-Answered-By: sip:[^@]*@127\.0\.0\.1:(\d+)", block)
                out[callers[0]] = int(port.group(1)) if port else None
        return out


def second_router(system):
    """Router B: the same servers and NATS, its own SIP and HTTP ports. Returns its port."""
    p = dict(system.p, router=free_port(), http=free_port())
    with open(system.cfg) as f:
        cfg = f.read()
    cfg = cfg.replace(f'listen = "127.0.0.1:{system.p["router"]}"',
                      f'listen = "127.0.0.1:{p["router"]}"', 1)
    cfg = cfg.replace(f'listen = "127.0.0.1:{system.p["http"]}"',
                      f'listen = "127.0.0.1:{p["http"]}"', 1)
    path = os.path.join(system.work, "router-b.toml")
    with open(path, "w") as f:
        f.write(cfg)
    system.start("router-b", [system.bin, "router", "--config", path], p["http"])
    return p["router"], p["http"]


def kamailio_dispatcher(system, routers):
    """Kamailio with the dispatcher over `routers` (SIP ports); returns its port."""
    port = free_port()
    listing = os.path.join(system.work, "dispatcher.list")
    with open(listing, "w") as f:
        f.write("".join(f"1 sip:127.0.0.1:{r}\n" for r in routers))
    with open(os.path.join(ROOT, "interop/kamailio/dispatcher.cfg")) as f:
        cfg = f.read()
    for k, v in (("PORT", port), ("MPATH", KAMAILIO_MODULES), ("LIST", listing)):
        cfg = cfg.replace(f"@@{k}@@", str(v))
    path = os.path.join(system.work, "kamailio.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    k = system.start("kamailio", ["kamailio", "-f", path, "-DD", "-E", "-m", "64", "-M", "8",
                                  "-P", os.path.join(system.work, "kamailio.pid"),
                                  "-Y", system.work])
    # UDP only: up once it logs its first probe of the routers, or dead on a bad config.
    log = os.path.join(system.work, "kamailio.log")

    def probing():
        if k.poll() is not None:
            raise Fail(f"Kamailio exited {k.returncode}: see {log}")
        with open(log, errors="replace") as f:
            return "Listening on" in f.read()
    wait_until(probing, 10, "Kamailio up")
    time.sleep(1.5)
    return port


def in_flight(system, router_port, at):
    """Calls Kamailio had sent to the router on `router_port` by `at` (epoch s) with no
    final answer from it by then: what its death could fail."""
    sent, answered = {}, set()
    with open(os.path.join(system.work, "kamailio.log"), errors="replace") as f:
        for line in f:
            m = re.search(r"switch: dispatch (\S+) to sip:127\.0\.0\.1:(\d+) at ([\d.]+)", line)
            if m and int(m.group(2)) == router_port and float(m.group(3)) <= at:
                sent[m.group(1)] = float(m.group(3))
            m = re.search(r"switch: final \d+ for (\S+) from 127\.0\.0\.1:(\d+) at ([\d.]+)", line)
            if m and int(m.group(2)) == router_port and float(m.group(3)) <= at:
                answered.add(m.group(1))
    return len([c for c in sent if c not in answered])


def check_messages(system, load, failed, wait_s=30.0):
    """Every completed call's message is listed and notified once; returns problems."""
    done = [c for c in load.callers if c not in failed]
    problems = []
    listed = set()

    def all_listed():
        code, headers, body = http_get(system.p["http"], f"/api/v1/messages?recipient=%2B{RECIPIENT[1:]}",
                                       timeout=5.0)
        if code != 200:
            return False
        listed.clear()
        listed.update(m["caller"] for m in body)
        return all(c in listed for c in done) and "boxless-missing-servers" not in {
            k.lower() for k in headers}

    def all_notified():
        return all(c in sms_callers(system) for c in done)

    try:
        wait_until(all_listed, wait_s, "every completed call's message listed")
    except RuntimeError:
        missing = [c for c in done if c not in listed]
        problems.append(f"{len(missing)} completed calls have no message: {missing[:5]}")
    try:
        wait_until(all_notified, wait_s, "every completed call notified")
    except RuntimeError:
        got = sms_callers(system)
        missing = [c for c in done if c not in got]
        problems.append(f"{len(missing)} completed calls have no SMS: {missing[:5]}")
    counts = {}
    for c in sms_callers(system, unique=False):
        counts[c] = counts.get(c, 0) + 1
    twice = [c for c, n in counts.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} callers got two SMS: {twice[:5]}")
    return problems, len(done), len(listed)


def sms_callers(system, unique=True):
    out = []
    try:
        with open(system.sms_out) as f:
            for line in f:
                m = re.search(r"\+1555\d{7}", json.loads(line)["text"])
                if m:
                    out.append(m.group(0))
    except OSError:
        pass
    return set(out) if unique else out


def watch(cond, stop):
    """Polls `cond()` every 20 ms in a thread; returns a list that gets the first time
    (seconds since the watch started) at which it held."""
    seen = []
    t0 = time.monotonic()

    def run():
        while not stop.is_set():
            if cond():
                seen.append(time.monotonic() - t0)
                return
            time.sleep(0.02)

    threading.Thread(target=run, daemon=True).start()
    return seen


def scenario(name, binary, rate, seconds):
    work = tempfile.mkdtemp(prefix=f"boxless-failover-{name}-")
    system = System(binary, work)
    figures = {}
    problems = []
    try:
        system.up()
        target = None
        if name == "routers":
            router_b, http_b = second_router(system)
            for sid in ("ms1", "ms2"):
                wait_until(lambda s=sid: (server_state(http_b, s) or {}).get("state") == "up",
                           10, f"{sid} up at router B")
            switch = kamailio_dispatcher(system, [system.p["router"], router_b])
            target = f"127.0.0.1:{switch}"
        load = Load(system, rate, seconds, target)
        router_pid = system.procs["router"].pid
        # Router CPU: idle (probes, NATS) over 2 s, then under load until the event, with
        # nothing else asking the router anything.
        c = cpu_ns(router_pid)
        time.sleep(2)
        idle_us_per_s = (cpu_ns(router_pid) - c) / 1000 / 2
        cpu0 = cpu_ns(router_pid)
        load.start()
        time.sleep(seconds * 0.4)
        busy = time.monotonic() - load.t0
        per_call = (cpu_ns(router_pid) - cpu0) / 1000 / (busy * rate)
        figures["router CPU per call (proxy mode, NATS and probes included)"] = (
            f"{per_call:.0f} µs; idle {idle_us_per_s / 1000:.1f} ms/s, i.e. "
            f"{idle_us_per_s / rate:.0f} µs per call at {rate}/s")
        http = system.p["http"]
        stop = threading.Event()
        if name == "kill":
            active = (server_state(system.p["h1"], "ms1") or {}).get("active_calls")
            system.procs["ms1"].kill()
            seen = watch(lambda: (server_state(http, "ms1") or {}).get("state") == "down", stop)
            time.sleep(2 * TTL_S)
            figures["ms1 calls in progress at the kill"] = active
            if not seen:
                problems.append(f"router still chose ms1 {2 * TTL_S} s (two TTLs) after kill -9")
            else:
                figures["detection (kill -9 -> router marks ms1 down)"] = f"{seen[0]:.2f} s"
            t = time.monotonic()
            system.server("ms1")
            rejoin = wait_until(lambda: (server_state(http, "ms1") or {}).get("state") == "up",
                                3 * TTL_S, "restarted ms1 up at the router")
            figures["rejoin (restart -> router marks ms1 up)"] = f"{time.monotonic() - t:.2f} s"
            figures["  of which after ms1's API answered"] = f"{rejoin:.2f} s"
        elif name == "drain":
            proc = system.procs["ms2"]
            active = (server_state(system.p["h2"], "ms2") or {}).get("active_calls")
            t_term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            seen = watch(lambda: (server_state(http, "ms2") or {}).get("state") in ("draining", "down"),
                         stop)
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                code = None
            figures["ms2 calls in progress at SIGTERM"] = active
            figures["ms2 exit status after SIGTERM"] = f"{code}, {time.monotonic() - t_term:.2f} s later"
            if not active:
                problems.append("ms2 had no call in progress at SIGTERM: nothing was drained")
            if code != 0:
                problems.append(f"ms2 exited {code} after SIGTERM, not 0")
            if seen:
                figures["router saw ms2 draining"] = f"{seen[0]:.2f} s after SIGTERM"
            else:
                problems.append("the router never saw ms2 draining")
            t = time.monotonic()
            system.server("ms2")
            wait_until(lambda: (server_state(http, "ms2") or {}).get("state") == "up",
                       3 * TTL_S, "restarted ms2 up at the router")
            figures["rejoin (restart -> router marks ms2 up)"] = f"{time.monotonic() - t:.2f} s"
        elif name == "routers":
            killed_at = time.time()
            system.procs["router"].kill()
            system.procs["router"].wait()
            time.sleep(1.5)
            figures["calls in flight on router A at its kill -9"] = in_flight(
                system, system.p["router"], killed_at)
            # The router's API is gone with it: router B's answers from here on.
            system.p["http"] = http_b
        elif name == "nats":
            outage = TTL_S + 2
            system.procs["nats"].terminate()
            system.procs["nats"].wait()
            seen = watch(lambda: (http_get(http, "/api/v1/health")[2] or {}).get("status") == "degraded",
                         stop)
            time.sleep(outage)
            if seen:
                figures["router reported degraded health"] = f"{seen[0]:.2f} s after NATS stopped"
            else:
                problems.append("the router never reported degraded health while NATS was down")
            code, _, body = http_get(http, "/healthz")
            if code != 200:
                problems.append(f"/healthz answered {code} during the NATS outage, not 200")
            t = time.monotonic()
            system.nats()
            wait_until(
                lambda: (http_get(http, "/api/v1/health")[2] or {}).get("status") == "ok",
                15, "router healthy again after NATS returned")
            figures["NATS outage"] = f"{outage} s (TTL {TTL_S} s)"
            figures["recovery (NATS back -> router healthy)"] = f"{time.monotonic() - t:.2f} s"
            for sid in ("ms1", "ms2"):
                wait_until(lambda s=sid: (server_state(http, s) or {}).get("state") == "up",
                           2 * TTL_S, f"{sid} up after NATS returned")
        stop.set()
        load.wait()
        ok, failed_n = load.stats()
        failed = load.failed_calls()
        figures["calls: completed / failed"] = f"{ok} / {failed_n} of {load.calls} at {rate}/s"
        if len(failed) != failed_n:
            problems.append(f"SIPp counted {failed_n} failed calls, its debug log names {len(failed)}")
        if name == "kill":
            others = {c: p for c, p in failed.items() if p != system.p["s1"]}
            if others:
                problems.append(f"{len(others)} failed calls were not on the killed server: "
                                f"{list(others.items())[:5]}")
        elif name == "routers":
            flight = figures["calls in flight on router A at its kill -9"]
            if failed_n > flight:
                problems.append(f"{failed_n} calls failed, more than the {flight} in flight "
                                f"on the killed router: {list(failed.items())[:5]}")
            with open(os.path.join(system.work, "kamailio.log"), errors="replace") as f:
                text = f.read()
            figures["calls Kamailio sent on to router B after A timed out"] = text.count(
                "switch: failover")
        elif failed_n:
            problems.append(f"{failed_n} calls failed: {list(failed.items())[:5]}")
        more, completed, listed = check_messages(system, load, failed)
        problems += more
        figures["messages listed / SMS callers for completed calls"] = (
            f"{listed} / {len(sms_callers(system))} (completed {completed})")
    except Exception as e:  # a scenario that cannot run is a failure with its reason
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        system.stop()
    print(f"== {name}  (logs in {work})")
    for k, v in figures.items():
        print(f"   {k}: {v}")
    for p in problems:
        print(f"   FAIL: {p}")
    return not problems


def main():
    def add_args(ap):
        ap.add_argument("--rate", type=int, default=10, help="calls per second")
        ap.add_argument("--seconds", type=int, default=20, help="seconds of new calls")

    def one(name, a, _work):
        if not scenario(name, a.bin, a.rate, a.seconds):
            raise Fail(f"{name}: see above")

    run(__doc__, ["kill", "drain", "nats", "routers"], one, add_args, prefix="boxless-failover-")


if __name__ == "__main__":
    main()
