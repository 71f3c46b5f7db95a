"""What every interop script shares, so that scenarios differ and starting and waiting do
not: free ports, waiting for a port or a condition, the checks, the processes a scenario
starts (stopped on its way out), the config of a router and two servers, the caller's
voice for SIPp, and the runner that runs the named scenarios and reports them.

Every process listens on 127.0.0.1; every wait is bounded.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import wave

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The ports of a system: router, HTTP API, SMSC simulator, two servers' SIP and HTTP.
PORTS = ("router", "http", "smsc", "s1", "s2", "h1", "h2")


class Fail(Exception):
    """A check of an interop script failed."""


# What a failed scenario raises: a check, a wait that timed out, a process that did not
# answer, what a reply lacked.
FAILURES = (Fail, RuntimeError, subprocess.TimeoutExpired, StopIteration, KeyError)


def check(cond, what):
    if not cond:
        raise Fail(what)
    print(f"  ok: {what}")


# Listening ports come from below the kernel's ephemeral range (32768-60999 here): a port
# the kernel hands out for `bind(0)` is one it also hands to outgoing connections, and
# one of those (a NATS client, SIPp, an HTTP check) took a port between its choice and
# the server's bind (`Address already in use`). The RTP ranges the scripts use start at
# 20000.
LISTEN_PORTS = range(10000, 20000)
_given = set()


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 (the SIP ports take both), never
    handed out before by this process."""
    import random
    for _ in range(1000):
        port = random.choice(LISTEN_PORTS)
        if port in _given:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {LISTEN_PORTS}")


def ports(*extra):
    """A free port for each of PORTS and of `extra`, by name."""
    return {k: free_port() for k in PORTS + extra}


def media_port(base, span):
    """An even port in [base, base + 2 * span) whose four UDP ports (SIPp's audio and video,
    each with RTCP) are free now: SIPp gives up on a call whose media socket is taken."""
    for _ in range(200):
        port = base + free_port() % span * 2
        socks = []
        try:
            for q in range(port, port + 4):
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(u)
                u.bind(("127.0.0.1", q))
            return port
        except OSError:
            continue
        finally:
            for u in socks:
                u.close()
    raise RuntimeError(f"no four free UDP ports from {base}")


def wait_tcp(port, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"127.0.0.1:{port} did not come up within {limit} s")


def wait_until(cond, limit, what):
    """Seconds until `cond()` held; RuntimeError naming `what` after `limit` s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {limit} s waiting for: {what}")


def http_get(port, path, timeout=2.0):
    """(status, headers, parsed JSON or text); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            body = r.read().decode()
            try:
                body = json.loads(body)
            except ValueError:
                pass
            return r.status, dict(r.headers), body
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
    except OSError:
        return 0, {}, None


def server_state(http, sid):
    """Server `sid` as the API on port `http` lists it, or None."""
    code, _, body = http_get(http, "/api/v1/servers", timeout=1.0)
    if code != 200:
        return None
    for s in body:
        if s["id"] == sid:
            return s
    return None


def cpu_ns(pid):
    """CPU time of every thread of `pid` so far, in ns (schedstat: ns precision)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def read_jsonl(path):
    """Every JSON line of `path` (the SMSC simulator's record); [] before it exists."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def caller_pcap(work):
    """The caller's voice (two committed prompts) as a PCMU pcap for SIPp."""
    prompts = os.path.join(ROOT, "crates/media/prompts")
    frames = b""
    for name in ("you-have-reached.wav", "leave-message.wav"):
        with wave.open(os.path.join(prompts, name)) as w:
            params = w.getparams()
            frames += w.readframes(w.getnframes())
    wav = os.path.join(work, "caller.wav")
    with wave.open(wav, "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    pcap = os.path.join(work, "caller.pcap")
    subprocess.run([sys.executable, os.path.join(ROOT, "interop/make_pcap.py"), wav, pcap],
                   check=True)
    return pcap


def write_config(work, p, *, rtp, rtp_span=500, links=("+18005550100-+18005550149",
                                                        "+18005550150-+18005550199"),
                 mode=None, router="", top="", http="", sms="", messages="", extra="",
                 servers=("", ""), greeting="tone", name="boxless.toml"):
    """`work/boxless.toml` for a router and two servers (ms1, ms2) on the ports in `p`, the
    SMS to the simulator on p["smsc"], the `greeting` and 5 s of silence; each keyword
    adds lines to its table (`top`: whole tables before `[http]`, `extra`: after
    `[messages]`; `servers`: to ms1's and ms2's entries). RTP ports: `rtp_span` from `rtp`
    for ms1, then as many for ms2. Returns its path, `work/name`."""
    mode = f'mode = "{mode}"\n' if mode else ""
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(f"""data_dir = "{work}/data"
[router]
listen = "127.0.0.1:{p['router']}"
{mode}{router}
{top}[http]
listen = "127.0.0.1:{p['http']}"
{http}
[sms]
transport = "smpp"
address = "127.0.0.1:{p['smsc']}"
retry_initial_ms = 200
retry_max_ms = 2000
{sms}
[messages]
greeting = "{greeting}"
silence_seconds = 5
{messages}
{extra}
""")
        for i, sid in enumerate(("ms1", "ms2")):
            first = rtp + i * rtp_span
            f.write(f"""[[servers]]
id = "{sid}"
listen = "127.0.0.1:{p[f's{i + 1}']}"
{servers[i]}http = "127.0.0.1:{p[f'h{i + 1}']}"
rtp_ports = "{first}-{first + rtp_span - 1}"
link_numbers = ["{links[i]}"]
""")
    return path


def nats_cluster(procs, work, base, sync="default", prefix=()):
    """Three nats-server nodes (`nats-server` on the PATH) with JetStream, clustered, their
    data under `base` (`sync`: "always" fsyncs every write; `prefix`: a command each runs
    under, such as `nice`); their client URLs (one string, comma-separated, as `[control]
    url` takes them) and data directories."""
    client = [free_port() for _ in range(3)]
    route = [free_port() for _ in range(3)]
    routes = ", ".join(f"nats-route://127.0.0.1:{r}" for r in route)
    dirs = []
    for i in range(3):
        d = os.path.join(base, f"nats{i}")
        os.makedirs(d)
        conf = os.path.join(work, f"nats{i}.conf")
        sync_line = "  sync_interval: always\n" if sync == "always" else ""
        with open(conf, "w") as f:
            f.write(f"""server_name: n{i}
listen: 127.0.0.1:{client[i]}
jetstream {{
  store_dir: "{d}"
{sync_line}}}
cluster {{
  name: boxless
  listen: 127.0.0.1:{route[i]}
  routes: [{routes}]
}}
""")
        procs.start(f"nats{i}", [*prefix, "nats-server", "-c", conf], client[i])
        dirs.append(d)
    return ",".join(f"nats://127.0.0.1:{c}" for c in client), dirs


class Procs:
    """The processes of one scenario, by name, with their logs in `work`; stopped newest
    first (SIGTERM, then SIGKILL after 10 s)."""

    def __init__(self, work):
        self.work = work
        self.by_name = {}

    def start(self, name, argv, port=None, env=None):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        # Its own process group, so that stopping it stops its children too (Kamailio's
        # workers outlive a SIGKILL of their parent otherwise).
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=self.work,
                                start_new_session=True)
        proc.own_group = True
        self.by_name[name] = proc
        if port:
            wait_tcp(port)
        return proc

    def __getitem__(self, name):
        return self.by_name[name]

    def pop(self, name):
        return self.by_name.pop(name)

    def stop(self):
        stop_all(list(self.by_name.values()))
        self.by_name.clear()

    def kill(self):
        """SIGKILL to every process: nothing left to drain, nothing to wait for."""
        for proc in self.by_name.values():
            signal_all(proc, signal.SIGKILL)
            proc.wait()
        self.by_name.clear()


def signal_all(proc, sig):
    """`sig` to `proc`, and to its whole process group when Procs started it in its own."""
    try:
        if getattr(proc, "own_group", False):
            os.killpg(proc.pid, sig)
        elif proc.poll() is None:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(procs):
    """SIGTERM, then SIGKILL after 10 s; newest first."""
    for proc in reversed(procs):
        if proc.poll() is None:
            signal_all(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                signal_all(proc, signal.SIGKILL)
                proc.wait()
        else:
            # Exited; what it started may not have.
            signal_all(proc, signal.SIGKILL)


def start_smsc_and_serve(binary, cfg, work, p, sms_out, servers):
    """The SMSC simulator on p["smsc"] and `boxless serve` with `cfg`, logs in `work`; waits
    for the API on p["http"] and until `servers()` lists every server up. Returns the
    processes, smsc first; on a failed start they are stopped before the error is raised."""
    procs = Procs(work)
    try:
        procs.start("smsc", ["node", os.path.join(ROOT, "interop/smsc/smsc.js"), str(p["smsc"]),
                             sms_out], p["smsc"])
        procs.start("serve", [binary, "serve", "--config", cfg], p["http"])
        wait_until(lambda: all(s["state"] == "up" for s in servers() or []), 10,
                   "both servers up")
    except BaseException:
        procs.stop()
        raise
    return list(procs.by_name.values())


def parse_args(doc, scenarios, add_args=None):
    """The scripts' command line: `--bin` (made absolute: processes start in their own
    work directories), what `add_args(parser)` adds, and the scenarios to run (default:
    all of `scenarios`)."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/boxless"))
    if add_args:
        add_args(ap)
    ap.add_argument("scenarios", nargs="*", default=list(scenarios),
                    help=f"any of: {' '.join(scenarios)} (default: all)")
    a = ap.parse_args()
    unknown = [s for s in a.scenarios if s not in scenarios]
    if unknown:
        ap.error(f"unknown scenarios {unknown}; choose from {list(scenarios)}")
    a.bin = os.path.abspath(a.bin)
    return a


@contextlib.contextmanager
def bench_dir(prefix):
    """A bench's temporary directory and the caller's voice in it (`bench/lib.sh`
    caller_wav): yields (root, voice); removed on the way out unless KEEP=1."""
    root = tempfile.mkdtemp(prefix=prefix)
    try:
        voice = os.path.join(root, "caller.wav")
        subprocess.run(["bash", "-c", f"source bench/lib.sh && caller_wav {voice}"], cwd=ROOT,
                       check=True)
        yield root, voice
    finally:
        if os.environ.get("KEEP"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(doc, scenarios, run_one, add_args=None, prefix="boxless-interop-"):
    """The scripts' `main`: `parse_args`, then each scenario as `run_one(name, args,
    work)` in one work directory; a scenario fails by raising. Prints `N passed, M
    failed`, keeps the work directory when one failed and exits 1 then."""
    a = parse_args(doc, scenarios, add_args)
    work = tempfile.mkdtemp(prefix=prefix)
    failed = []
    for name in a.scenarios:
        print(f"== {name}")
        try:
            run_one(name, a, work)
        except FAILURES as e:
            print(f"  FAIL: {e!r}")
            failed.append(name)
    report(a.scenarios, failed, work)


def report(scenarios, failed, work):
    """Prints `N passed, M failed`; keeps `work` and exits 1 when one failed."""
    print(f"{len(scenarios) - len(failed)} passed, {len(failed)} failed")
    if failed:
        print(f"failed: {failed}; work directory kept: {work}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
