#!/usr/bin/env python3
"""Notifications against real peers, on loopback only: what became of each SMS.

  receipts  The npm `smpp` SMSC simulator (interop/smsc/smsc.js) answers each recipient
            differently: DELIVRD after 1.5 s, UNDELIV, no receipt at all, a receipt before
            the submit_sm_resp, the same receipt twice, and one in text form only with the
            id in decimal (hex in the submit_sm_resp). `boxless call` leaves a message for
            each; the API must show `delivered` (with its latency), `undeliverable`,
            `accepted`, ... and each SMS was submitted once. A +33 recipient's SMS is in
            French (numbering.language_by_country).
  crash     kill -9 of `boxless serve` between an SMS's acceptance and its receipt (due
            6 s later), restart: the receipt, sent again by the SMSC on the new bind, is
            recorded (`delivered`) and nothing is sent twice.
  webhooks  `webhook.url` points at a local receiver that is down for the first 30 s: two
            messages are left (deposited, SMS delivered) and one deleted meanwhile; when
            it comes up every event arrives once, in order, each with a valid
            X-Boxless-Signature (HMAC-SHA256 of the body with the secret); then a new
            event arrives within a second.
  prefs     Router and two servers as processes over NATS with JetStream: an entry set
            through the router's API (notify_numbers) is used by both servers (each
            message's SMS to both numbers, the same link number); the other number's
            caller-ID hears the message without a code; it texts STOP (an MO deliver_sm):
            one confirmation, no more SMS to it (`opted_out`), messages still listed; START
            undoes it.
  shared_account
            Router and two `boxless server` processes over NATS sharing one SMPP account:
            the SMSC returns every receipt on the other server's bind (one even before the
            submit_sm_resp); each is handed over through NATS and every notice is
            `delivered`, each SMS sent once.
  fallback  Recipients' channels with sms.fallback_after_seconds = 10 and a real SMTP server
            (aiosmtpd, with AUTH): UNDELIV -> the e-mail at once; no receipt -> the e-mail
            after 10 s; DELIVRD -> no e-mail (`skipped`); a landline (the SMSC answers
            ESME_RINVDSTADR) -> no retry, the e-mail at once; an address the mail server
            refuses (550) -> the recipient's own webhook, signed. The e-mail names caller,
            length and link number, carries X-Boxless-Message-Id, and its WAV attachment
            matches the audio left (correlation >= 0.9).
  fallback_crash
            kill -9 of `boxless serve` while a notice waits for its fallback (SMS accepted,
            no receipt): after the restart the e-mail goes once, at its time; the SMS is
            not sent again.
  email_tls The e-mail channel over STARTTLS (the server requires it, AUTH only after it)
            and over SMTPS, the certificate checked against a test CA (SSL_CERT_FILE); a
            certificate from another CA: nothing sent, retried, the error says why.
  greetings Router and two servers as processes over NATS: a recipient's greeting (a
            44.1 kHz stereo WAV) put through the router's API is what callers hear on
            each server, both called 1 s after the PUT (correlated with the file); a busy
            greeting for a call forwarded with reason=user-busy; hostile uploads get
            400/413 and change nothing; DELETE brings the default back. Then SIPp calls a
            link number as the recipient, presses 5, speaks, #, hangs up: what it said is
            the greeting, in the router's API and for the next caller.
  french    A +33 recipient: the caller hears the French greeting (correlated with the
            committed French prompt, not the English one), the SMS is French, and the
            recipient calling the link number hears the French retrieval prompts.

Prints the figures; exits 1 when a check fails. Usage:

  cargo build --release
  python3 interop/notify.py [--bin target/release/boxless] [receipts crash prefs]
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import failover  # noqa: E402
from harness import (  # noqa: E402
    ROOT, caller_pcap, media_port, check, free_port, http_get, ports, read_jsonl, run, start_smsc_and_serve,
    stop_all, wait_tcp, wait_until, write_config,
)

CALLER = "+15551230001"
VOICE = os.path.join(ROOT, "crates/media/prompts/leave-message.wav")


class System:
    """`boxless serve` (two servers, redirect) and the SMSC simulator with receipt rules."""

    def __init__(self, binary, work, rules, extra="", sms="", greeting="tone"):
        self.bin, self.work = binary, work
        os.makedirs(work, exist_ok=True)
        self.p = ports()
        self.sms_out = os.path.join(work, "sms.jsonl")
        self.receipts_out = os.path.join(work, "sms.receipts.jsonl")
        self.rules = rules
        self.procs = []
        self.cfg = write_config(
            work, self.p, rtp=42000,
            sms=f"max_per_recipient_per_hour = 100000\ndelivery_receipts = true\n{sms}",
            greeting=greeting, extra=extra)

    def start(self, smsc=True):
        os.environ["SMSC_RECEIPTS"] = json.dumps(self.rules)
        if smsc:
            self.procs = start_smsc_and_serve(
                self.bin, self.cfg, self.work, self.p, self.sms_out,
                lambda: http_get(self.p["http"], "/api/v1/servers")[2])
        else:
            log = open(os.path.join(self.work, "serve.log"), "ab")
            self.procs.append(subprocess.Popen([self.bin, "serve", "--config", self.cfg],
                                               stdout=log, stderr=log, cwd=self.work))
            wait_tcp(self.p["http"])
        return self

    def kill_serve(self):
        serve = self.procs.pop()
        serve.send_signal(signal.SIGKILL)
        serve.wait(timeout=10)

    def stop(self):
        stop_all(self.procs)

    def call(self, to):
        return subprocess.run(
            [self.bin, "call", "--via", f"127.0.0.1:{self.p['router']}", "--from", CALLER,
             "--to", to, "--play", VOICE, "--play-at", "1.2", "--seconds", "4"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)

    def notice(self, to):
        """The SMS notification of the (one) message for `to`, or None."""
        code, _, body = http_get(self.p["http"], f"/api/v1/messages?recipient=%2B{to[1:]}")
        if code != 200 or not body:
            return None
        sms = [n for n in body[0]["notifications"] if n["channel"] == "sms"]
        return sms[0] if sms else None

    def metric(self, name):
        with open(os.devnull, "w"):
            import urllib.request
            text = urllib.request.urlopen(
                f"http://127.0.0.1:{self.p['http']}/metrics", timeout=5).read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))


def calls(system, numbers):
    results = {}

    def one(n):
        results[n] = system.call(n)
    threads = [threading.Thread(target=one, args=(n,)) for n in numbers]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join()
    for n, r in results.items():
        if r.returncode != 0:
            print(r.stdout[-1500:])
        check(r.returncode == 0, f"the call to {n} completed")


def ms_between(a, b):
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(b) - parse(a)).total_seconds() * 1000


def receipts(binary, work):
    rules = {
        "15551230002": "delivered:1500",
        "15551230003": "undeliv:500",
        "15551230004": "none",
        "15551230005": "early",
        "15551230006": "twice:300",
        "15551230007": "text:300",
        "33612345678": "delivered:300",
        "default": "none",
    }
    want = {"+15551230002": "delivered", "+15551230003": "undeliverable",
            "+15551230004": "accepted", "+15551230005": "delivered",
            "+15551230006": "delivered", "+15551230007": "delivered",
            "+33612345678": "delivered"}
    s = System(binary, os.path.join(work, "receipts"), rules).start()
    try:
        calls(s, list(want))
        settled = lambda: all(  # noqa: E731
            (n := s.notice(to)) and n["state"] == st for to, st in want.items())
        try:
            wait_until(settled, 30, "every notice in its state")
        except RuntimeError:
            pass
        time.sleep(1.0)   # a late second receipt or a resend would show now
        sms = read_jsonl(s.sms_out)
        sent = {}
        for m in sms:
            sent["+" + m["destination"]] = sent.get("+" + m["destination"], 0) + 1
        for to, st in want.items():
            n = s.notice(to) or {}
            rule = rules[to[1:]]
            lat = n.get("delivery_ms")
            print(f"  {to} ({rule}): {n.get('state')}"
                  + (f" {lat} ms after acceptance" if lat is not None else "")
                  + (f", last_error {n['last_error']!r}" if n.get("last_error") else "")
                  + f"; SMS submitted {sent.get(to, 0)}x, registered_delivery "
                  + str([m["registered_delivery"] for m in sms if m["destination"] == to[1:]]))
            check(n.get("state") == st, f"{to}: {st}")
            check(sent.get(to) == 1, f"{to}: one SMS")
        d = s.notice("+15551230002")
        check(1400 <= d["delivery_ms"] <= 3000, "DELIVRD after 1.5 s shows about 1.5 s")
        fr = [m["text"] for m in sms if m["destination"] == "33612345678"]
        print(f"  +33 recipient (numbering.language_by_country): {fr[0]!r}")
        check(fr[0].startswith("Message vocal de +15551230001"), "a +33 recipient's SMS is French")
        # Receipt to state: when the SMSC sent the receipt, when the state was recorded, when
        # the SMSC had its deliver_sm_resp (sent after the state is stored).
        rec = [r for r in read_jsonl(s.receipts_out) if r["destination"] == "15551230002"]
        iso = lambda ms: datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()  # noqa: E731
        lag = ms_between(iso(rec[0]["sent"]), d["final_at"])
        ack = rec[0]["t"] - rec[0]["sent"]
        print(f"  receipt sent -> state recorded: {lag:.0f} ms; -> deliver_sm_resp: {ack} ms")
        check(lag <= 1000, "a receipt settles its notice within a second")
        dup = s.metric("boxless_sms_receipts_duplicate_total")
        early = s.metric("boxless_sms_receipts_early_total")
        print(f"  duplicate receipts counted {dup:.0f}, early receipts kept {early:.0f}")
        check(dup >= 1, "the second receipt counted as a duplicate")
        check(early >= 1, "the early receipt was kept, then applied")
    finally:
        s.stop()


def crash(binary, work):
    to = "+15551230008"
    s = System(binary, os.path.join(work, "crash"), {"default": "delivered:6000"}).start()
    try:
        calls(s, [to])
        wait_until(lambda: (n := s.notice(to)) and n["state"] == "accepted", 20, "accepted")
        t_kill = time.monotonic()
        s.kill_serve()
        print("  serve killed (SIGKILL) with the SMS accepted, its receipt due 6 s after")
        time.sleep(1.0)
        s.start(smsc=False)
        wait_until(lambda: (n := s.notice(to)) and n["state"] == "delivered", 30, "delivered")
        n = s.notice(to)
        print(f"  after restart: {n['state']} {time.monotonic() - t_kill:.1f} s after the kill, "
              f"{n['delivery_ms']} ms after acceptance")
        time.sleep(2.0)
        sms = [m for m in read_jsonl(s.sms_out) if m["destination"] == to[1:]]
        rec = [r for r in read_jsonl(s.receipts_out) if r["destination"] == to[1:]]
        print(f"  SMS submitted {len(sms)}x; receipts acknowledged {len(rec)}x "
              f"(status {[r['status'] for r in rec]})")
        check(len(sms) == 1, "nothing sent twice")
        check(n["state"] == "delivered", "the receipt was recorded after the restart")
    finally:
        s.stop()


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks every signature."""

    def __init__(self, port, secret):
        import http.server
        import hashlib
        import hmac
        self.events, self.bad = [], 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(want, self.headers.get("X-Boxless-Signature", "")):
                    outer.bad += 1
                    self.send_response(401)
                else:
                    e = json.loads(body)
                    e["_t"] = time.time()
                    e["_key"] = self.headers.get("Idempotency-Key")
                    outer.events.append(e)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()


def over_nats(binary, work, name, receipts):
    """Router and two `boxless server` processes over NATS (`failover.System`), up, in
    `work/name`, the SMSC simulator answering by the `receipts` rules; and that folder."""
    os.environ["SMSC_RECEIPTS"] = json.dumps(receipts)
    w = os.path.join(work, name)
    os.makedirs(w, exist_ok=True)
    s = failover.System(binary, w)
    try:
        s.up()
    except BaseException:
        s.stop()
        raise
    return s, w


def shared_account(binary, work):
    """Router and two `boxless server` processes over NATS, one SMPP account: the SMSC
    returns each receipt on the other server's bind, one of them even before the
    submit_sm_resp; every notice must still reach `delivered`, each SMS sent once."""
    later, early = "+15551230002", "+15551230003"
    s, w = over_nats(binary, work, "shared-account", {later[1:]: "elsewhere:300",
                                                      early[1:]: "early-elsewhere",
                                                      "default": "none"})
    try:
        api = s.p["http"]
        servers = set()
        # Calls for one number until it has messages on both servers (the router's
        # choice follows load, so alternating numbers could pair each with one server).
        for to in (later, early):
            for k in range(8):
                r = phone(binary, s.p["router"], CALLER, to, "--play", VOICE,
                          "--play-at", "1.2", "--seconds", "3")
                check(r.returncode == 0, f"call {k + 1} to {to} completed")
                msgs = http(api, "GET", f"/api/v1/messages?recipient=%2B{to[1:]}")[1]
                servers |= {(m["recipient"], m["server"]) for m in msgs}
                if len({m["server"] for m in msgs}) == 2:
                    break
        check(len(servers) == 4, f"each number has messages on both servers: {sorted(servers)}")

        def states():
            out = []
            for n in (later, early):
                for m in http(api, "GET", f"/api/v1/messages?recipient=%2B{n[1:]}")[1]:
                    out.append((n, m["server"], m["notifications"][0]))
            return out
        try:
            wait_until(lambda: all(x[2]["state"] == "delivered" for x in states()), 30,
                       "every notice delivered")
        except RuntimeError:
            pass
        rec = {r["id"]: r for r in read_jsonl(os.path.join(w, "sms.receipts.jsonl"))}
        sms = read_jsonl(s.sms_out)
        by_id = {m["message_id"]: m for m in sms}
        elsewhere = [r for r in rec.values() if not r["on_submitter"]]
        print(f"  {len(sms)} SMS, {len(rec)} receipts, {len(elsewhere)} of them on the other "
              "server's bind")
        for n, server, x in states():
            print(f"  {n} on {server}: {x['state']}"
                  + (f", {x['delivery_ms']} ms after acceptance" if x.get("delivery_ms")
                     is not None else ""))
            check(x["state"] == "delivered", f"{n} on {server}: delivered")
        check(len(elsewhere) == len(rec) == len(sms), "every receipt came on the other bind")
        check(len(by_id) == len(sms)
              and len({(m["destination"], m["source"]) for m in sms}) == len(sms),
              "each SMS submitted once")
    finally:
        s.stop()


def secret_file(directory, name, value):
    """`value` (bytes) in a file only its owner reads, as boxless wants its secrets."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(value + b"\n")
    os.chmod(path, 0o600)
    return path


def webhooks(binary, work):
    w = os.path.join(work, "webhooks")
    os.makedirs(w, exist_ok=True)
    secret = b"whsec-" + os.urandom(16).hex().encode()
    key_file = secret_file(w, "webhook.secret", secret)
    port = free_port()
    s = System(binary, w, {"default": "delivered:200"},
               extra=f'[webhook]\nurl = "http://127.0.0.1:{port}/hooks/boxless"\n'
                     f'secret_file = "{key_file}"').start()
    rx = None
    try:
        t0 = time.monotonic()
        calls(s, ["+15551230002", "+15551230003"])
        wait_until(lambda: s.notice("+15551230002") and s.notice("+15551230003")
                   and s.notice("+15551230002")["state"] == "delivered"
                   and s.notice("+15551230003")["state"] == "delivered", 20, "delivered")
        code, msgs = http(s.p["http"], "GET", "/api/v1/messages?recipient=%2B15551230003")
        gone = msgs[0]["id"]
        code, _ = http(s.p["http"], "DELETE", f"/api/v1/messages/{gone}")
        check(code == 200, "a message deleted through the API")
        time.sleep(max(0.0, 30.0 - (time.monotonic() - t0)))
        print(f"  receiver down for {time.monotonic() - t0:.0f} s; now up")
        rx = Receiver(port, secret)
        wait_until(lambda: len(rx.events) >= 5, 60, "the five events")
        time.sleep(1.0)
        kinds = [(e["data"].get("message_id"), e["type"]) for e in rx.events]
        ids = [e["id"] for e in rx.events]
        print(f"  {len(rx.events)} events after the outage, {rx.bad} with a bad signature: "
              + ", ".join(f"{e['id']} {e['type']}" for e in rx.events))
        check(rx.bad == 0, "every signature valid")
        check(len(set(ids)) == len(ids) == 5, "each event once")
        check(all(e["_key"] == e["id"] for e in rx.events), "Idempotency-Key is the event id")
        for sid in ("ms1", "ms2"):
            mine = [int(i.split("-e")[1]) for i in ids if i.startswith(sid + "-")]
            check(mine == sorted(mine), f"{sid}'s events in order")
        per = {}
        for mid, kind in kinds:
            per.setdefault(mid, []).append(kind)
        for mid, ks in per.items():
            want = ["message.deposited", "notification.delivered"] + (
                ["message.deleted"] if mid == gone else [])
            check(ks == want, f"{mid}: {ks}")
        calls(s, ["+15551230004"])
        took = wait_until(lambda: any(e["type"] == "message.deposited" and
                                      e["data"]["recipient"] == "+15551230004"
                                      for e in rx.events), 10, "the next event")
        print(f"  receiver up: the next deposit's event arrived {took * 1000:.0f} ms after "
              f"the call ended")
        check(took < 1.0, "a new event goes within a second")
    finally:
        if rx:
            rx.stop()
        s.stop()


class Smtp:
    """aiosmtpd on 127.0.0.1 with AUTH (no TLS on loopback): keeps every e-mail with the
    time it arrived; refuses recipients at bounce.test for good (550)."""

    def __init__(self, port, user, password, tls=None, cert=None, key=None):
        """`tls`: None (plain), "starttls" (required before MAIL and AUTH) or "smtps"
        (implicit TLS), with `cert` and `key`."""
        import logging
        import ssl
        import warnings
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword
        # AUTH without TLS is what this loopback test wants; no warning per session.
        warnings.filterwarnings("ignore", module="aiosmtpd")
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self.mails = []
        outer = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if address.endswith("@bounce.test"):
                    return "550 5.1.1 no such mailbox"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                tls = server.transport.get_extra_info("ssl_object")
                outer.mails.append({"t": time.time(), "to": list(envelope.rcpt_tos),
                                    "auth": session.authenticated,
                                    "tls": tls.version() if tls else None,
                                    "data": envelope.original_content or envelope.content})
                return "250 OK"

        def auth(server, session, envelope, mechanism, data):
            ok = (isinstance(data, LoginPassword) and data.login == user.encode()
                  and data.password == password.encode())
            return AuthResult(success=ok)

        kw = {}
        if tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            kw = ({"tls_context": ctx, "require_starttls": True, "auth_require_tls": True}
                  if tls == "starttls" else {"ssl_context": ctx, "auth_require_tls": False})
        else:
            kw = {"auth_require_tls": False}
        self.c = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=auth,
                            auth_required=True, **kw)
        self.c.start()

    def to(self, addr):
        return [m for m in self.mails if addr in m["to"]]

    def stop(self):
        self.c.stop()


def fallback(binary, work):
    """sms -> email (-> webhook) per the recipients' entries, with fallback_after = 10 s."""
    import email
    from email import policy
    import io
    from peers import best_correlation, read_wav, to_8k
    w = os.path.join(work, "fallback")
    os.makedirs(w, exist_ok=True)
    secret = b"whsec-" + os.urandom(16).hex().encode()
    pw = "smtp-" + os.urandom(8).hex()
    secret_file(w, "webhook.secret", secret)
    secret_file(w, "smtp.password", pw.encode())
    smtp_port, hook_port = free_port(), free_port()
    after = 10
    rules = {"15551230003": "undeliv:500", "15551230004": "none",
             "15551230002": "delivered:300", "15551230010": "landline",
             "15551230011": "undeliv:300", "default": "none"}
    s = System(binary, w, rules, sms=f"fallback_after_seconds = {after}",
               extra=f'[email]\nsmtp = "smtp://127.0.0.1:{smtp_port}"\nuser = "boxless"\n'
                     f'password_file = "{w}/smtp.password"\nfrom = "voicemail@boxless.test"\n'
                     f'[webhook]\nsecret_file = "{w}/webhook.secret"\n').start()
    mta = Smtp(smtp_port, "boxless", pw)
    rx = Receiver(hook_port, secret)
    try:
        entries = {
            "+15551230003": ("undeliverable SMS", ["sms", "email"], "undeliv@example.net"),
            "+15551230004": ("no receipt at all", ["sms", "email"], "late@example.net"),
            "+15551230002": ("SMS delivered", ["sms", "email"], "never@example.net"),
            "+15551230010": ("a landline (SMSC: ESME_RINVDSTADR)", ["sms", "email"],
                             "landline@example.net"),
            "+15551230011": ("undeliverable SMS, then a bouncing address",
                             ["sms", "email", "webhook"], "gone@bounce.test"),
        }
        for n, (_, channels, addr) in entries.items():
            code, v = http(s.p["http"], "PUT", f"/api/v1/recipients/%2B{n[1:]}",
                           {"channels": channels, "email": addr,
                            "webhook_url": f"http://127.0.0.1:{hook_port}/me/{n[1:]}"})
            check(code == 200, f"{n}: entry taken ({v})")
        calls(s, list(entries))

        def notices(n):
            code, body = http(s.p["http"], "GET", f"/api/v1/messages?recipient=%2B{n[1:]}")
            return body[0] if code == 200 and body else None

        wait_until(lambda: len(mta.to("late@example.net")) == 1
                   and len(mta.to("undeliv@example.net")) == 1
                   and len(mta.to("landline@example.net")) == 1
                   and len(rx.events) == 1, after + 15, "the e-mails and the webhook notice")
        time.sleep(1.5)   # a duplicate or a needless e-mail would show now
        receipts = {r["destination"]: r for r in read_jsonl(s.receipts_out)}
        sms = read_jsonl(s.sms_out)
        for n, (what, channels, addr) in entries.items():
            m = notices(n)
            st = [(x["channel"], x["state"]) for x in m["notifications"]]
            mails = mta.to(addr)
            line = f"  {n} ({what}): {st}; e-mails {len(mails)}"
            sms_t = m["notifications"][0].get("accepted_at")
            if mails and n[1:] in receipts:
                line += (f", {(mails[0]['t'] * 1000 - receipts[n[1:]]['sent']):.0f} ms after "
                         "the SMSC sent the receipt")
            elif mails and sms_t:
                lag = mails[0]["t"] - datetime.fromisoformat(
                    sms_t.replace("Z", "+00:00")).timestamp()
                line += f", {lag:.2f} s after the SMS was accepted"
            elif mails:
                refused = [x for x in sms if x["destination"] == n[1:] and x.get("refused")]
                line += f", {(mails[0]['t'] * 1000 - refused[0]['t']):.0f} ms after the refusal"
            print(line)
        check([x["state"] for x in notices("+15551230002")["notifications"]]
              == ["delivered", "skipped"], "delivered SMS: the e-mail is skipped")
        check(not mta.to("never@example.net"), "no e-mail after a delivered SMS")
        for n, addr in (("+15551230003", "undeliv@example.net"),
                        ("+15551230004", "late@example.net"),
                        ("+15551230010", "landline@example.net")):
            check(len(mta.to(addr)) == 1, f"{n}: one e-mail")
            check(notices(n)["notifications"][1]["state"] == "accepted", f"{n}: e-mail accepted")
        lag = mta.to("undeliv@example.net")[0]["t"] * 1000 - receipts["15551230003"]["sent"]
        check(lag < after * 1000, "UNDELIV -> e-mail within fallback_after_seconds")
        late = notices("+15551230004")
        took = mta.to("late@example.net")[0]["t"] - datetime.fromisoformat(
            late["notifications"][0]["accepted_at"].replace("Z", "+00:00")).timestamp()
        check(after - 0.5 <= took <= after + 2.0, f"no receipt: e-mail after {after} s ({took:.2f})")
        ll = notices("+15551230010")["notifications"][0]
        print(f"  landline SMS: {ll['state']}, {ll['last_error']!r}, attempts {ll['attempts']}")
        check(ll["state"] == "undeliverable" and "RINVDSTADR" in (ll["last_error"] or "")
              and ll["attempts"] == 1, "a landline is not retried")
        # The e-mail itself.
        mail = email.message_from_bytes(mta.to("undeliv@example.net")[0]["data"],
                                        policy=policy.default)
        m = notices("+15551230003")
        body = mail.get_body(("plain",)).get_content()
        print(f"  e-mail: Subject {mail['Subject']!r}, X-Boxless-Message-Id "
              f"{mail['X-Boxless-Message-Id']}, Message-ID {mail['Message-ID']}, AUTH "
              f"{mta.to('undeliv@example.net')[0]['auth']}")
        print("  body: " + body.strip().replace("\n", " / "))
        check(mail["X-Boxless-Message-Id"] == m["id"], "the message id in a header")
        check(CALLER in mail["Subject"] and CALLER in body and m["link_number"] in body,
              "subject and body name the caller and the link number")
        secs = -(-m["duration_ms"] // 1000)
        check(f"{secs // 60}:{secs % 60:02d}" in mail["Subject"], "the subject gives the length")
        check(mta.to("undeliv@example.net")[0]["auth"], "SMTP AUTH used")
        wav = [p for p in mail.iter_attachments() if p.get_content_type() == "audio/wav"]
        check(len(wav) == 1, "the recording attached as audio/wav")
        rate, got = read_wav(io.BytesIO(wav[0].get_content()))
        _, voice = read_wav(VOICE)
        c, _ = best_correlation(voice, to_8k(rate, got), 16000)
        print(f"  attachment {wav[0].get_filename()}: {len(got) / rate:.2f} s at {rate} Hz, "
              f"correlation with the audio left {c:.3f}")
        check(c >= 0.9, "the attached WAV matches the audio left")
        # The bounce, then the recipient's own webhook.
        b = notices("+15551230011")
        st = [(x["channel"], x["state"], x["last_error"]) for x in b["notifications"]]
        print(f"  +15551230011: {st}")
        check([x[1] for x in st] == ["undeliverable", "undeliverable", "accepted"],
              "SMS undeliverable, e-mail bounced (550), webhook taken")
        e = rx.events[0]
        print(f"  webhook notice: {json.dumps({k: v for k, v in e.items() if k[0] != '_'})}, "
              f"{rx.bad} bad signatures")
        check(rx.bad == 0 and e["type"] == "message.notice" and e["link_number"]
              == b["link_number"], "the recipient's webhook got the signed notice")
    finally:
        rx.stop()
        mta.stop()
        s.stop()


def fallback_crash(binary, work):
    """kill -9 while a notice waits for its fallback: after the restart the e-mail goes
    once, at its time, and the SMS is not sent again."""
    w = os.path.join(work, "fallback-crash")
    os.makedirs(w, exist_ok=True)
    pw = "smtp-" + os.urandom(8).hex()
    pw_file = secret_file(w, "smtp.password", pw.encode())
    port, after, to, addr = free_port(), 6, "+15551230004", "late@example.net"
    s = System(binary, w, {"default": "none"}, sms=f"fallback_after_seconds = {after}",
               extra=f'[email]\nsmtp = "smtp://127.0.0.1:{port}"\nuser = "boxless"\n'
                     f'password_file = "{pw_file}"\n').start()
    mta = Smtp(port, "boxless", pw)
    try:
        code, v = http(s.p["http"], "PUT", f"/api/v1/recipients/%2B{to[1:]}",
                       {"channels": ["sms", "email"], "email": addr})
        check(code == 200, f"entry taken ({v})")
        calls(s, [to])
        wait_until(lambda: (n := s.notice(to)) and n["state"] == "accepted", 20, "accepted")
        accepted = datetime.fromisoformat(
            s.notice(to)["accepted_at"].replace("Z", "+00:00")).timestamp()
        s.kill_serve()
        print(f"  serve killed (SIGKILL) {time.time() - accepted:.1f} s after the SMS was "
              f"accepted, its e-mail due {after} s after the deposit")
        time.sleep(1.0)
        s.start(smsc=False)
        wait_until(lambda: mta.to(addr), after + 15, "the e-mail after the restart")
        time.sleep(2.0)
        took = mta.to(addr)[0]["t"] - accepted
        code, msgs = http(s.p["http"], "GET", f"/api/v1/messages?recipient=%2B{to[1:]}")
        st = [(x["channel"], x["state"]) for x in msgs[0]["notifications"]]
        sms = [m for m in read_jsonl(s.sms_out) if m["destination"] == to[1:]]
        print(f"  after the restart: {len(mta.to(addr))} e-mail, {took:.2f} s after the SMS "
              f"was accepted; SMS submitted {len(sms)}x; notices {st}")
        check(len(mta.to(addr)) == 1 and len(sms) == 1, "nothing lost, nothing sent twice")
        check(after - 0.5 <= took <= after + 2.5, "the e-mail at its time")
    finally:
        mta.stop()
        s.stop()


def email_tls(binary, work):
    """The e-mail channel over STARTTLS (required by the server, AUTH only after it) and
    over SMTPS, the server's certificate checked against the CA certificates in
    SSL_CERT_FILE (a test CA, as an operator's system store would hold a real one)."""
    w = os.path.join(work, "email-tls")
    os.makedirs(w, exist_ok=True)
    ca, ca_key = os.path.join(w, "ca.crt"), os.path.join(w, "ca.key")
    crt, key, csr = (os.path.join(w, n) for n in ("smtp.crt", "smtp.key", "smtp.csr"))
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=Boxless test CA",
                    "-keyout", ca_key, "-out", ca], **quiet)
    subprocess.run(["openssl", "req", "-new", *ec, "-subj", "/CN=127.0.0.1",
                    "-keyout", key, "-out", csr], **quiet)
    ext = os.path.join(w, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                    "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt], **quiet)
    pw = "smtp-" + os.urandom(8).hex()
    pw_file = secret_file(w, "smtp.password", pw.encode())
    other = os.path.join(w, "other-ca.crt")
    subprocess.run(["openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=Another CA",
                    "-keyout", os.path.join(w, "other-ca.key"), "-out", other], **quiet)
    try:
        for mode, scheme, trusted in (("starttls", "smtp", ca), ("smtps", "smtps", ca),
                                      ("smtps", "smtps", other)):
            os.environ["SSL_CERT_FILE"] = trusted
            port = free_port()
            mta = Smtp(port, "boxless", pw, tls=mode, cert=crt, key=key)
            s = System(binary, os.path.join(w, f"{mode}-{len(os.listdir(w))}"),
                       {"default": "none"},
                       extra=f'[email]\nsmtp = "{scheme}://127.0.0.1:{port}"\n'
                             f'user = "boxless"\npassword_file = "{pw_file}"\n'
                             'from = "voicemail@boxless.test"\n').start()
            try:
                to, addr = "+15551230002", f"{mode}@example.net"
                code, v = http(s.p["http"], "PUT", f"/api/v1/recipients/%2B{to[1:]}",
                               {"channels": ["email"], "email": addr})
                check(code == 200, f"entry taken ({v})")
                calls(s, [to])
                if trusted != ca:
                    time.sleep(3.0)
                    code, msgs = http(s.p["http"], "GET",
                                      f"/api/v1/messages?recipient=%2B{to[1:]}")
                    n = msgs[0]["notifications"][0]
                    print(f"  {scheme}:// with a certificate from an unknown CA: {n['state']}, "
                          f"{n['attempts']} attempts, last_error {n['last_error']!r}; "
                          f"e-mails {len(mta.to(addr))}")
                    check(not mta.to(addr) and n["state"] == "pending"
                          and "certificate" in (n["last_error"] or "").lower(),
                          "no e-mail to a server whose certificate is not trusted")
                    continue
                wait_until(lambda: mta.to(addr), 15, f"the e-mail over {mode}")
                m = mta.to(addr)[0]
                code, msgs = http(s.p["http"], "GET", f"/api/v1/messages?recipient=%2B{to[1:]}")
                n = msgs[0]["notifications"]
                print(f"  {scheme}:// ({mode}): e-mail over {m['tls']}, AUTH {m['auth']}; "
                      f"notices {[(x['channel'], x['state']) for x in n]}")
                check(m["tls"] and m["auth"], f"{mode}: TLS and AUTH")
                check([(x["channel"], x["state"]) for x in n] == [("email", "accepted")],
                      f"{mode}: the e-mail is the only notice, accepted")
            finally:
                s.stop()
                mta.stop()
    finally:
        os.environ.pop("SSL_CERT_FILE", None)


def heard_at(needle, hay, within):
    """Best normalised correlation of `needle` in `hay` starting within the first `within`
    samples: every 4th lag, then the best one refined sample by sample (no envelope step:
    speech from start to end of `hay` would mislead it)."""
    import math
    nn = math.sqrt(sum(x * x for x in needle)) or 1.0

    def at(lag):
        seg = hay[lag:lag + len(needle)]
        if len(seg) < len(needle):
            return 0.0
        ss = math.sqrt(sum(x * x for x in seg)) or 1.0
        return sum(a * b for a, b in zip(needle, seg)) / (nn * ss)

    coarse = max(range(0, within, 4), key=at)
    best = max(range(max(0, coarse - 4), coarse + 5), key=at)
    return at(best), best


def french(binary, work):
    """A +33 recipient (numbering.language_by_country): the caller hears the French
    greeting, the SMS is French, and the recipient calling the link number hears the
    French retrieval prompts."""
    from peers import read_wav
    w = os.path.join(work, "french")
    to = "+33612345678"
    s = System(binary, w, {"default": "delivered:200"}, greeting="digits").start()
    fr = lambda name: read_wav(os.path.join(  # noqa: E731
        ROOT, "crates/media/prompts/fr", name + ".wav"))[1]
    en = lambda name: read_wav(os.path.join(  # noqa: E731
        ROOT, "crates/media/prompts", name + ".wav"))[1]

    def hear(what, frm, to, prompt, *args):
        """Calls `to` from `frm` and records it: how well the French and the English
        `prompt` match what was heard, and where the French one was."""
        heard = os.path.join(w, f"{what}.wav")
        r = subprocess.run(
            [s.bin, "call", "--via", f"127.0.0.1:{s.p['router']}", "--from", frm, "--to", to,
             *args, "--record", heard],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        check(r.returncode == 0, f"the {what} call completed")
        _, got = read_wav(heard)
        c_fr, lag = heard_at(fr(prompt), got, 8000)
        return c_fr, lag, heard_at(en(prompt), got, 8000)[0]

    try:
        c_fr, lag, c_en = hear("deposit", CALLER, to, "you-have-reached", "--play", VOICE,
                               "--play-at", "9", "--seconds", "12")
        print(f"  the caller heard the greeting: French 'Vous êtes bien au' correlation "
              f"{c_fr:.3f} at {lag / 8:.0f} ms, English 'You have reached' {c_en:.3f}")
        check(c_fr >= 0.9 and c_en < 0.5, "the greeting is French")
        wait_until(lambda: (n := s.notice(to)) and n["state"] == "delivered", 20, "the SMS")
        text = [m["text"] for m in read_jsonl(s.sms_out) if m["destination"] == to[1:]][0]
        print(f"  SMS: {text!r}")
        check(text.startswith("Message vocal de " + CALLER), "the SMS is French")
        code, msgs = http(s.p["http"], "GET", f"/api/v1/messages?recipient=%2B{to[1:]}")
        link = msgs[0]["link_number"]
        c_fr, lag, c_en = hear("retrieval", to, link, "message-from", "--seconds", "6")
        print(f"  the recipient called {link}: French 'Message de' "
              f"correlation {c_fr:.3f} at {lag / 8:.0f} ms, English 'Message from' {c_en:.3f}")
        check(c_fr >= 0.9 and c_en < 0.5, "the retrieval prompts are French")
    finally:
        s.stop()


def http(port, method, path, body=None, wav=None):
    """(status, JSON answer); `body` goes as JSON, `wav` as the bytes of an audio/wav."""
    import urllib.error
    import urllib.request
    if wav is not None:
        data, ctype, timeout = wav, "audio/wav", 15
    else:
        data = json.dumps(body).encode() if body is not None else None
        ctype, timeout = "application/json", 5
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=data,
                                 headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def phone(binary, router, frm, to, *extra):
    return subprocess.run(
        [binary, "call", "--via", f"127.0.0.1:{router}", "--from", frm, "--to", to, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=90)


def prefs(binary, work):
    recipient, other = "+15551230002", "+15551230009"
    s, w = over_nats(binary, work, "prefs", {"default": "delivered:200"})
    try:
        api = s.p["http"]
        code, v = http(api, "PUT", f"/api/v1/recipients/%2B{recipient[1:]}",
                       {"notify_numbers": [other]})
        print(f"  PUT /api/v1/recipients/{recipient} through the router: {code} {v}")
        check(code == 200, "the router's API took the entry (into the JetStream bucket)")
        code, v = http(api, "PUT", f"/api/v1/recipients/%2B{recipient[1:]}",
                       {"channels": ["email"]})
        check(code == 400 and "email" in v["detail"], f"a bad entry is refused naming the field: {v}")
        time.sleep(1.0)   # the servers follow the bucket
        # Calls until both servers hold a message (the router spreads them).
        by_server = {}
        for k in range(12):
            r = phone(binary, s.p["router"], CALLER, recipient, "--play", VOICE,
                      "--play-at", "1.2", "--seconds", "3")
            check(r.returncode == 0, f"call {k + 1} completed")
            code, msgs = http(api, "GET", f"/api/v1/messages?recipient=%2B{recipient[1:]}")
            by_server = {m["server"]: m for m in msgs}
            if len(by_server) == 2 and k >= 1:
                break
        print(f"  {len(msgs)} messages, on servers {sorted(by_server)}")
        check(len(by_server) == 2, "messages on both servers")
        wait_until(lambda: len(read_jsonl(s.sms_out)) >= 2 * len(msgs), 20, "the SMS")
        sms = read_jsonl(s.sms_out)
        for m in msgs:
            link = m["link_number"][1:]
            to = sorted(x["destination"] for x in sms if x["source"] == link)
            print(f"  {m['id']}: SMS from its link number +{link} to {to}")
            check(to == sorted([other[1:], recipient[1:]]),
                  f"{m['server']} sent the SMS to both numbers")
        # The other number's caller-ID counts as the recipient's: no code asked.
        m = by_server["ms1"]
        r = phone(binary, s.p["router"], other, m["link_number"], "--seconds", "20")
        check(r.returncode == 0, "the call to the link number completed")
        state = lambda: next(x["state"] for x in http(  # noqa: E731
            api, "GET", f"/api/v1/messages?recipient=%2B{recipient[1:]}")[1] if x["id"] == m["id"])
        wait_until(lambda: state() == "heard", 5, "heard")
        print(f"  {other} called {m['link_number']}: message {state()} without a code")
        # STOP from the other number.
        mo = os.path.join(w, "sms.mo.jsonl")
        with open(mo, "a") as f:
            f.write(json.dumps({"from": other[1:], "to": m["link_number"][1:],
                                "text": "STOP"}) + "\n")
        confirm = lambda: [x for x in read_jsonl(s.sms_out)  # noqa: E731
                           if x["destination"] == other[1:] and "alerts by SMS" in x["text"]]
        wait_until(lambda: len(confirm()) == 1, 20, "the STOP confirmation")
        code, v = http(api, "GET", f"/api/v1/recipients/%2B{other[1:]}")
        print(f"  {other} texted STOP: confirmation {confirm()[0]['text']!r}; entry {v}")
        check(v["opted_out"] is True, "opted out, through the bucket")
        n_sms = len(read_jsonl(s.sms_out))
        r = phone(binary, s.p["router"], CALLER, recipient, "--play", VOICE,
                  "--play-at", "1.2", "--seconds", "3")
        check(r.returncode == 0, "a call after STOP completed")
        wait_until(lambda: len(read_jsonl(s.sms_out)) >= n_sms + 1, 20, "the SMS after STOP")
        time.sleep(2.0)
        new = read_jsonl(s.sms_out)[n_sms:]
        code, msgs = http(api, "GET", f"/api/v1/messages?recipient=%2B{recipient[1:]}")
        last = msgs[0]
        print(f"  after STOP: SMS to {[x['destination'] for x in new]}; the message's "
              f"notices {[(n['to'], n['state']) for n in last['notifications']]}; "
              f"{len(msgs)} messages listed")
        check([x["destination"] for x in new] == [recipient[1:]], "no SMS to the opted-out number")
        states = {n["to"]: n["state"] for n in last["notifications"]}
        check(states.get(other) == "opted_out", f"its notice to {other} is opted_out: {states}")
        with open(mo, "a") as f:
            f.write(json.dumps({"from": other[1:], "to": m["link_number"][1:],
                                "text": "start"}) + "\n")
        wait_until(lambda: len(confirm()) == 2, 20, "the START confirmation")
        code, v = http(api, "GET", f"/api/v1/recipients/%2B{other[1:]}")
        print(f"  {other} texted START: {confirm()[1]['text']!r}; opted_out {v['opted_out']}")
        check(v["opted_out"] is False, "opted back in")
    finally:
        s.stop()


def wav_bytes(samples, rate, channels):
    """16-bit PCM WAV of interleaved `samples`."""
    import io
    import wave
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(int(x).to_bytes(2, "little", signed=True) for x in samples))
    return b.getvalue()


def greetings(binary, work):
    from peers import read_wav
    recipient = "+15551230002"
    path = f"/api/v1/recipients/%2B{recipient[1:]}/greeting"
    _, mine = read_wav(os.path.join(ROOT, "crates/media/prompts/no-messages.wav"))
    _, busy = read_wav(os.path.join(ROOT, "crates/media/prompts/de/options.wav"))
    busy = busy[:4 * 8000]
    # 8 kHz to 44.1 kHz stereo by linear interpolation: the server takes any rate.
    up = []
    for i in range(len(mine) * 441 // 80):
        x = i * 80 / 441
        j = int(x)
        a, b = mine[j], mine[min(j + 1, len(mine) - 1)]
        v = round(a + (b - a) * (x - j))
        up += [v, v]
    s, w = over_nats(binary, work, "greetings", {"default": "delivered:200"})

    def call(server, name, *extra):
        """A call forwarded from the recipient to ms1 or ms2 directly; what it heard."""
        heard = os.path.join(w, f"{name}.wav")
        via = s.p["s1"] if server == "ms1" else s.p["s2"]
        r = subprocess.run(
            [binary, "call", "--via", f"127.0.0.1:{via}", "--from", CALLER, "--to", recipient,
             "--play", VOICE, "--play-at", "4.5", "--seconds", "6", "--record", heard, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        check(r.returncode == 0, f"the {name} call to {server} completed")
        return read_wav(heard)[1]

    def hears(heard, greeting):
        # 0.3 s from the greeting's middle, looked for in the first 2.5 s of the call.
        mid = len(greeting) // 2
        return heard_at(greeting[mid:mid + 2400], heard, 20000)[0]

    divert = ["--diversion", recipient]
    try:
        api = s.p["http"]
        # Hostile uploads, through the router (handed to a server): refused, nothing kept.
        for body, want, what in [(b"RIFF\0\0\0\0WAVEjunk", 400, "no fmt chunk"),
                                 (b"ID3\x03not a wav at all", 400, "not a WAV"),
                                 (wav_bytes(up, 44100, 2)[:5000], 400, "cut short"),
                                 (wav_bytes([0] * 16000, 8000, 1), 400, "silent"),
                                 (wav_bytes([100, -100] * 8000 * 31, 16000, 1), 413, "31 s")]:
            code, v = http(api, "PUT", path, wav=body)
            print(f"  PUT {what}: {code} {v['detail'] if v else ''}")
            check(code == want, f"{what}: {want}")
        code, _ = http(api, "GET", path)
        check(code == 404, "nothing kept")

        code, v = http(api, "PUT", path, wav=wav_bytes(up, 44100, 2))
        print(f"  PUT 44.1 kHz stereo through the router: {code} {v}")
        check(code == 200 and abs(v["seconds"] - len(mine) / 8000) < 0.05, "kept")
        time.sleep(1.0)
        heard = {}
        threads = [threading.Thread(target=lambda sid=sid: heard.__setitem__(
            sid, call(sid, f"after-put-{sid}", *divert))) for sid in ("ms1", "ms2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for sid in ("ms1", "ms2"):
            c = hears(heard[sid], mine)
            print(f"  {sid}, called {1.0:.1f} s after the PUT: the greeting at correlation {c:.3f}")
            check(c >= 0.8, f"the caller on {sid} heard the recipient's greeting")

        code, v = http(api, "PUT", path + "?for=busy", wav=wav_bytes(busy, 8000, 1))
        check(code == 200 and v["for"] == "busy", "the busy greeting kept")
        time.sleep(1.0)
        on_busy = call("ms2", "busy", "--header",
                       f"Diversion: <sip:{recipient}@127.0.0.1>;reason=user-busy")
        cb, cm = hears(on_busy, busy), hears(on_busy, mine)
        print(f"  forwarded on busy to ms2: busy greeting {cb:.3f}, no-answer one {cm:.3f}")
        check(cb >= 0.8 and cm < 0.5, "a call forwarded on busy hears the busy greeting")

        code, _ = http(api, "DELETE", path)
        check(code == 200, "DELETE through the router")
        time.sleep(1.0)
        c = hears(call("ms1", "after-delete", *divert), mine)
        print(f"  after DELETE, ms1: the old greeting at {c:.3f}")
        check(c < 0.5, "the default greeting is back")
        code, _ = http(api, "DELETE", path)
        check(code == 404, "a second DELETE: 404")

        # By phone, with SIPp: the recipient calls a link number from their own phone,
        # presses 5, speaks after the tone, #, hangs up (interop/sipp/greeting.xml).
        r = phone(binary, s.p["router"], CALLER, recipient, "--play", VOICE, "--play-at", "1.2",
                  "--seconds", "4")
        check(r.returncode == 0, "a message left, for its link number")
        code, msgs = http(api, "GET", f"/api/v1/messages?recipient=%2B{recipient[1:]}")
        link = msgs[0]["link_number"]
        pcap = caller_pcap(w)
        _, said = read_wav(os.path.join(w, "caller.wav"))
        sipp = subprocess.run(
            ["sipp", "-sf", os.path.join(ROOT, "interop/sipp/greeting.xml"), "-s", link,
             "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port()),
             "-mp", str(media_port(46000, 400)), "-key", "me", recipient[1:], "-key", "pcap", pcap,
             f"127.0.0.1:{s.p['router']}", "-m", "1", "-timeout", "60s", "-nostdin",
             "-trace_err"], cwd=w, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=90)
        check(sipp.returncode == 0, f"SIPp called {link} as {recipient}: 5, spoke, #, hung up")
        import urllib.request
        kept = []

        def fetched():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api}{path}", timeout=5) as a:
                    kept[:] = [a.read()]
                    return True
            except OSError:
                return False
        wait_until(fetched, 5, "the greeting recorded by phone, through the router's API")
        got = [int.from_bytes(kept[0][i:i + 2], "little", signed=True)
               for i in range(44, len(kept[0]) - 1, 2)]
        needle = said[4000:6400]
        c, lag = heard_at(needle, got, 24000)
        print(f"  SIPp's greeting: {len(got) / 8000:.1f} s kept, the caller's words at "
              f"{lag / 8000:.2f} s, correlation {c:.3f}")
        check(c >= 0.8, "what SIPp said is the greeting")
        c, _ = heard_at(needle, call("ms2", "after-phone", *divert), 24000)
        print(f"  the next caller, on ms2: correlation {c:.3f}")
        check(c >= 0.8, "the next caller hears the greeting recorded by phone")
    finally:
        s.stop()


def main():
    run(__doc__, ["receipts", "crash", "webhooks", "prefs", "shared_account", "fallback",
                  "fallback_crash", "email_tls", "greetings", "french"],
        lambda name, a, work: globals()[name](a.bin, work), prefix="boxless-notify-")


if __name__ == "__main__":
    main()
