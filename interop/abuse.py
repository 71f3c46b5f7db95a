#!/usr/bin/env python3
"""The abuse suite: attacks on the trust boundary with real peers, on loopback only.

Starts the npm `smpp` SMSC simulator and `boxless serve` (redirect mode, two servers)
trusting 127.0.0.1/32 only, with sms.allowed_prefixes = ["+1"], a small hourly SMS
limit, a small wrong-code limit per link number, and the API behind tokens over HTTPS
(a self-signed certificate made with openssl). Then, each with its figures:

  untrusted  SIPp from 127.0.0.3: every INVITE gets 403; no message, no SMS.
  pump       SIPp short calls forwarded from foreign numbers (+234, +370, +44 7…), then
             many to one +1 number: no SMS to a blocked prefix; at most the limit (plus
             one digest, due an hour later) to the one number.
  forgedbye  SIPp sends, mid-recording, a BYE with the right Call-ID and a wrong tag:
             481, and the message is stored whole when the caller's real BYE comes.
  brute      SIPp guesses codes on a link number with a new caller-ID per call: the link
             locks after max_wrong_codes_per_link; the right code (`boxless call`, from
             another caller-ID) is then refused; the recipient's own number still works.
  http       curl over HTTPS: no token / wrong token 401, read token GET 200, read token
             DELETE 403, admin DELETE 404 (no such message), /healthz open.
  nats       nats-server with authorization: a server with a wrong password is refused
             (the router shows it down), one with the right password joins.

Exits 1 when a check fails. Usage:

  cargo build --release
  python3 interop/abuse.py [--bin target/release/boxless] [untrusted pump forgedbye brute http nats]
"""

import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (  # noqa: E402
    ROOT, media_port, Procs, caller_pcap, check, free_port, ports, read_jsonl, run, start_smsc_and_serve,
    stop_all,
    wait_until, write_config,
)

LIMIT_PER_HOUR = 4            # for the cluster: both servers count together
WRONG_CODES_PER_LINK = 4
RECIPIENT = "+15551230002"
SIPP = os.path.join(ROOT, "interop/sipp")
TIMEOUT = "60s"


def sh(argv, cwd, limit=180):
    return subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=limit, text=True)


class Serve:
    """`boxless serve` with the trust boundary set tight, the SMSC simulator, tokens."""

    def __init__(self, binary, work):
        self.bin, self.work = binary, work
        self.p = ports()
        self.sms_out = os.path.join(work, "sms.jsonl")
        self.procs = []
        self.crt, self.key = os.path.join(work, "api.crt"), os.path.join(work, "api.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=boxless",
                        "-addext", "subjectAltName=IP:127.0.0.1",
                        "-addext", "basicConstraints=critical,CA:FALSE",
                        "-keyout", self.key, "-out", self.crt],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.admin, admin_lines = self.token("ops", "admin")
        self.read, read_lines = self.token("dash", "read")
        self.cfg = write_config(
            work, self.p, rtp=39000, mode="redirect", router="redirect_contacts = 1",
            top='[sip]\ntrusted_peers = ["127.0.0.1/32"]\n',
            http=f'auth = "token"\ntls_cert = "{self.crt}"\ntls_key = "{self.key}"\n'
                 f"{admin_lines}\n{read_lines}",
            sms=f'allowed_prefixes = ["+1"]\nmax_per_recipient_per_hour = {LIMIT_PER_HOUR}',
            extra=f"[retrieval]\nmax_wrong_codes_per_link = {WRONG_CODES_PER_LINK}")
        self.ctx = ssl.create_default_context(cafile=self.crt)

    def token(self, name, scope):
        out = subprocess.run([self.bin, "token", "new", "--name", name, "--scope", scope],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        token = re.search(r"^token: (\S+)$", out, re.M).group(1)
        lines = out[out.index("[[http.tokens]]"):].strip()
        return token, lines

    def start(self):
        self.procs = start_smsc_and_serve(self.bin, self.cfg, self.work, self.p, self.sms_out,
                                          lambda: self.api("/api/v1/servers")[1])

    def stop(self):
        stop_all(self.procs)

    def api(self, path, token=None, method="GET"):
        """(status, parsed JSON or text) over HTTPS."""
        req = urllib.request.Request(f"https://127.0.0.1:{self.p['http']}{path}", method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin}")
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ctx) as r:
                body = r.read().decode()
                return r.status, (json.loads(body) if body.startswith(("[", "{")) else body)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name, label=""):
        _, text = self.api("/metrics", self.read)
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and label in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def sms(self):
        return read_jsonl(self.sms_out)

    def sipp(self, scenario, args, calls, rate, ip="127.0.0.1", csv=None, limit=1):
        work = os.path.join(self.work, f"sipp-{scenario}-{time.monotonic_ns()}")
        os.makedirs(work)
        argv = ["sipp", "-sf", os.path.join(SIPP, scenario), "-i", ip, "-mi", ip,
                "-p", str(free_port()), "-mp", str(media_port(40000, 400))]
        if csv:
            with open(os.path.join(work, "in.csv"), "w") as f:
                f.write("SEQUENTIAL\n" + "".join(";".join(row) + ";\n" for row in csv))
            argv += ["-inf", "in.csv"]
        argv += args + [f"127.0.0.1:{self.p['router']}", "-m", str(calls), "-r", str(rate),
                        "-l", str(limit), "-timeout", TIMEOUT, "-nostdin", "-trace_stat",
                        "-stf", "stat.csv", "-trace_err"]
        r = sh(argv, work, limit=240)
        if os.environ.get("ABUSE_DEBUG"):  # SIPp's own account of a run that went wrong
            print(r.stdout[-2000:])
            for f in os.listdir(work):
                if f.endswith("errors.log"):
                    with open(os.path.join(work, f)) as e:
                        print(e.read()[-3000:])
        with open(os.path.join(work, "stat.csv")) as f:
            rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
        col = {n: i for i, n in enumerate(rows[0])}
        return int(rows[-1][col["SuccessfulCall(C)"]]), int(rows[-1][col["FailedCall(C)"]])


def untrusted(s):
    before = len(s.sms())
    ok, failed = s.sipp("refused.xml", ["-s", RECIPIENT[1:]], 20, 10, ip="127.0.0.3", limit=20)
    print(f"  SIPp from 127.0.0.3: 20 INVITEs, {ok} answered 403, {failed} otherwise")
    check(ok == 20 and failed == 0, "every INVITE from an untrusted source got 403")
    time.sleep(1.0)
    check(len(s.sms()) == before, "no SMS for them")
    code, listed = s.api("/api/v1/messages")
    check(code == 200 and not any(m["recipient"].startswith("+234") for m in listed),
          "no message for them")
    print(f"  refused (untrusted) counted: {s.metric('boxless_sip_refused_total', 'untrusted'):.0f}")


def pump(s):
    foreign = ["+23480000001", "+37060000001", "+447700900001", "+23480000002"]
    rows = [(f"+1555444{i:04d}", foreign[i % len(foreign)]) for i in range(20)]
    ok, failed = s.sipp("short-call.xml", ["-s", RECIPIENT[1:]], len(rows), 5, csv=rows, limit=5)
    one = "+15557770001"
    rows2 = [(f"+1555445{i:04d}", one) for i in range(20)]
    ok2, failed2 = s.sipp("short-call.xml", ["-s", RECIPIENT[1:]], len(rows2), 5, csv=rows2, limit=5)
    print(f"  SIPp short calls: {ok}/{ok + failed} forwarded from foreign numbers, "
          f"{ok2}/{ok2 + failed2} to {one}")
    check(ok + ok2 == 40, "every short call completed")
    time.sleep(3.0)
    sms = s.sms()
    to_foreign = [m for m in sms if not m["destination"].startswith("1")]
    to_one = [m for m in sms if m["destination"] == one[1:]]
    blocked = s.metric("boxless_sms_blocked_total")
    merged = s.metric("boxless_sms_merged_total")
    print(f"  SMS: {len(to_foreign)} to foreign numbers, {len(to_one)} to {one}; "
          f"blocked {blocked:.0f}, merged {merged:.0f}")
    check(not to_foreign, "zero SMS to blocked prefixes")
    check(1 <= len(to_one) <= LIMIT_PER_HOUR, f"at most the limit ({LIMIT_PER_HOUR}) to one number")
    check(blocked >= 20, "every foreign notice counted as blocked")
    check(merged >= 20 - LIMIT_PER_HOUR, "the rest merged into a digest")


def forged_bye(s):
    pcap = caller_pcap(s.work)
    callers = [(f"+1555446{i:04d}",) for i in range(3)]
    before = {m["id"] for m in s.api(f"/api/v1/messages?recipient=%2B{RECIPIENT[1:]}")[1]}
    ok, failed = s.sipp("forged-bye.xml", ["-s", RECIPIENT[1:], "-key", "pcap", pcap,
                                           "-key", "recipient", RECIPIENT[2:]],
                        len(callers), 1, csv=callers, limit=3)
    print(f"  SIPp: {ok} calls got 481 for the forged BYE and 200 for their own, {failed} failed")
    check(ok == 3 and failed == 0, "every forged BYE got 481, every real one 200")
    new = [m for m in s.api(f"/api/v1/messages?recipient=%2B{RECIPIENT[1:]}")[1]
           if m["id"] not in before]
    durations = sorted(m["duration_ms"] for m in new)
    print(f"  stored: {len(new)} messages, {durations} ms")
    # The forged BYE came 1.5 s into the caller's 3 s of speech: a recording it had ended
    # would hold at most that.
    check(len(new) == 3 and all(d >= 2500 for d in durations),
          "the recordings went on past the forged BYE (≥ 2.5 s each)")


def brute(s):
    pcap = caller_pcap(s.work)
    ok, _ = s.sipp("deposit.xml", ["-s", RECIPIENT[1:], "-key", "pcap", pcap,
                                   "-key", "recipient", RECIPIENT[2:]],
                   1, 1, csv=[("+15551230001",)])
    check(ok == 1, "a message left")
    time.sleep(1.5)
    note = [m for m in s.sms() if m["destination"] == RECIPIENT[1:]][-1]
    link = "+" + note["source"]
    code = re.search(r"Code (\d{6})", note["text"]).group(1)
    mid = next(m["id"] for m in s.api(f"/api/v1/messages?recipient=%2B{RECIPIENT[1:]}")[1]
               if m["link_number"] == link)
    wrong0 = s.metric("boxless_wrong_access_codes_total")
    guessers = [(f"+1555447{i:04d}",) for i in range(WRONG_CODES_PER_LINK + 2)]
    s.sipp("brute.xml", ["-s", link], len(guessers), 1, csv=guessers, limit=1)
    wrong = s.metric("boxless_wrong_access_codes_total") - wrong0
    locks = s.metric("boxless_link_lockouts_total")
    print(f"  SIPp: {len(guessers)} calls to {link}, one caller-ID each, code 123456: "
          f"{wrong:.0f} wrong codes counted, lockouts {locks:.0f}")
    check(wrong == WRONG_CODES_PER_LINK, f"locked after {WRONG_CODES_PER_LINK} wrong codes")
    check(locks >= 1, "the link number is locked")

    def call(caller, dtmf=None):
        argv = [s.bin, "call", "--via", f"127.0.0.1:{s.p['router']}", "--from", caller,
                "--to", link, "--seconds", "20"]
        if dtmf:
            argv += ["--dtmf", dtmf, "--dtmf-at", "2"]
        sh(argv, s.work, limit=60)
        return s.api(f"/api/v1/messages/{mid}")[1].get("state")

    state = call("+15558880000", code)
    print(f"  the right code from another caller-ID after the lock: message {state}")
    check(state in ("new", "notified"), "the right code is refused too")
    state = call(RECIPIENT)
    print(f"  the recipient's own number: message {state}")
    check(state == "heard", "the recipient's trusted caller-ID still opens it")


def http(s):
    base = f"https://127.0.0.1:{s.p['http']}"

    def curl(path, token=None, method="GET"):
        argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", s.crt,
                "-X", method, base + path]
        if token:
            argv += ["-H", f"Authorization: Bearer {token}"]
        return sh(argv, s.work, limit=20).stdout.strip()

    got = {
        "GET /api/v1/messages, no token": curl("/api/v1/messages"),
        "GET /api/v1/messages, wrong token": curl("/api/v1/messages", "0" * 64),
        "GET /api/v1/messages, read token": curl("/api/v1/messages", s.read),
        "DELETE /api/v1/messages/ms1-0, read token": curl("/api/v1/messages/ms1-0", s.read, "DELETE"),
        "DELETE /api/v1/messages/ms1-0, admin token": curl("/api/v1/messages/ms1-0", s.admin, "DELETE"),
        "GET /healthz, no token": curl("/healthz"),
    }
    for k, v in got.items():
        print(f"  curl {k}: {v}")
    check(list(got.values()) == ["401", "401", "200", "403", "404", "200"],
          "401/401/200/403/404/200 over HTTPS")


def nats(binary, work):
    p = ports("nats")
    for name, pw in (("good.pw", "right-password"), ("bad.pw", "wrong-password")):
        # Secret files readable by their owner only: boxless refuses others.
        fd = os.open(os.path.join(work, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pw + "\n")
    cfg = {}
    for name, pw in (("good", "good.pw"), ("bad", "bad.pw")):
        cfg[name] = write_config(
            work, p, rtp=41000, rtp_span=100, links=("+18005550100", "+18005550101"),
            name=f"{name}.toml",
            extra=(f'[control]\nbackend = "nats"\nurl = "nats://127.0.0.1:{p["nats"]}"\n'
                   f'user = "boxless"\npassword_file = "{work}/{pw}"'))
    procs = Procs(work)
    try:
        procs.start("nats", ["nats-server", "-a", "127.0.0.1", "-p", str(p["nats"]),
                             "--user", "boxless", "--pass", "right-password"], p["nats"])
        procs.start("ms1", [binary, "server", "--config", cfg["good"], "--id", "ms1"], p["h1"])
        procs.start("ms2", [binary, "server", "--config", cfg["bad"], "--id", "ms2"], p["h2"])
        procs.start("router", [binary, "router", "--config", cfg["good"]], p["http"])

        def states():
            with urllib.request.urlopen(f"http://127.0.0.1:{p['http']}/api/v1/servers", timeout=2) as r:
                return {x["id"]: x["state"] for x in json.load(r)}
        took = wait_until(lambda: states().get("ms1") == "up", 10, "ms1 (right password) up")
        time.sleep(4.0)  # longer than the status TTL
        st = states()
        with open(os.path.join(work, "ms2.log")) as f:
            refused = "authorization violation" in f.read()
        print(f"  right password: ms1 {st['ms1']} after {took:.2f} s; wrong password: ms2 {st['ms2']}, "
              f"NATS said authorization violation: {refused}")
        check(st["ms1"] == "up" and st["ms2"] == "down", "the wrong password is refused, the right one joins")
        check(refused, "the refused server says why")
    finally:
        procs.kill()


def main():
    # One `boxless serve` serves every run but `nats`, which starts its own processes.
    serve = []

    def one(name, a, work):
        if name == "nats":
            return nats(a.bin, work)
        if not serve:
            serve.append(Serve(a.bin, work))
            serve[0].start()
        {"untrusted": untrusted, "pump": pump, "forgedbye": forged_bye,
         "brute": brute, "http": http}[name](serve[0])

    try:
        run(__doc__, ["untrusted", "pump", "forgedbye", "brute", "http", "nats"], one,
            prefix="boxless-abuse-")
    finally:
        if serve:
            serve[0].stop()


if __name__ == "__main__":
    main()
