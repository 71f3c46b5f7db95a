#!/usr/bin/env python3
"""Real peers in front of and behind Boxless, on loopback only, and the interop matrix.

  switch   Kamailio (Debian `kamailio`) as the operator's switch in front of the router:
           it record-routes, adds a Diversion and relays the call; in redirect mode it
           follows the router's 302 itself (uac_redirect), in proxy mode the router
           (router.record_route) relays it. SIPp calls the switch; the ACK and BYE follow
           the route set. Every message must be stored whole, for the Diversion's number.
  baresip  baresip (Debian `baresip`), a real softphone, leaves a message (its WAV file as
           the microphone) in both modes, then calls the link number from the SMS from
           the recipient's number and records what it hears: that must match the stored
           message. Offered codecs: PCMU, then G.722 first (wideband); and over TLS (the
           router and each server with sip.tls_listen, one self-signed certificate).
  sipp_tls SIPp over TLS (`-t l1`; Debian 13's sip-tester, built with TLS, installed by
           interop/sipp-tls.sh) leaves messages: in proxy mode through the record-routing
           router (its ACK and BYE on the same connection, by the route set); in redirect
           mode the 302 must name a server's TLS listener, and SIPp calls it there.

Prints one line per peer × mode × transport × codec with pass/fail and its figures, and
exits 1 when one fails. Usage:

  cargo build --release
  interop/sipp-tls.sh            # once: /opt/sipp-tls/sipp
  python3 interop/peers.py [--bin target/release/boxless] [--sipp-tls PATH]
                           [switch baresip sipp_tls]
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (  # noqa: E402
    ROOT, media_port, Fail, caller_pcap, check, free_port, http_get, ports, read_jsonl, run,
    start_smsc_and_serve, stop_all, wait_tcp, wait_until, write_config,
)

RECIPIENT = "+15551230002"
FORWARDED = "5551230002"
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
MATRIX = []
SIPP_TLS = ["/opt/sipp-tls/sipp"]


class System:
    """`boxless serve` (two servers) and the SMSC simulator."""

    def __init__(self, binary, work, mode, router_extra="", tls=False):
        self.bin, self.work, self.mode = binary, work, mode
        os.makedirs(work, exist_ok=True)
        self.p = ports("tls", "t1", "t2")
        sip, s1_tls, s2_tls = "", "", ""
        if tls:
            # SIP over TLS on the router and on each server, one self-signed certificate.
            self.crt = os.path.join(work, "sip.crt")
            self.key = key = os.path.join(work, "sip.key")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                            "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", key, "-out", self.crt],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sip = (f"[sip]\ntls_listen = \"127.0.0.1:{self.p['tls']}\"\n"
                   f"tls_cert = \"{self.crt}\"\ntls_key = \"{key}\"\n")
            s1_tls = f"tls_listen = \"127.0.0.1:{self.p['t1']}\"\n"
            s2_tls = f"tls_listen = \"127.0.0.1:{self.p['t2']}\"\n"
        self.sms_out = os.path.join(work, "sms.jsonl")
        self.procs = []
        self.cfg = write_config(work, self.p, rtp=41000, mode=mode, router=router_extra, top=sip,
                                sms="max_per_recipient_per_hour = 100000",
                                servers=(s1_tls, s2_tls))

    def start(self):
        self.procs = start_smsc_and_serve(
            self.bin, self.cfg, self.work, self.p, self.sms_out,
            lambda: http_get(self.p["http"], "/api/v1/servers")[2])
        return self

    def stop(self):
        stop_all(self.procs)

    def messages(self):
        code, _, body = http_get(self.p["http"], f"/api/v1/messages?recipient=%2B{RECIPIENT[1:]}")
        return body if code == 200 else []

    def sms(self):
        return read_jsonl(self.sms_out)

    def audio(self, m):
        """(rate, samples) of a stored message, as the API serves it (16-bit PCM WAV; the
        file itself may be G.711, which Python's `wave` cannot read)."""
        import urllib.request
        path = os.path.join(self.work, f"{m['id']}.wav")
        url = f"http://127.0.0.1:{self.p['http']}/api/v1/messages/{m['id']}/audio"
        with urllib.request.urlopen(url, timeout=5) as r, open(path, "wb") as f:
            f.write(r.read())
        return read_wav(path)


def read_wav(path):
    with wave.open(path) as w:
        raw = w.readframes(w.getnframes())
        rate, width, ch = w.getframerate(), w.getsampwidth(), w.getnchannels()
    samples = [int.from_bytes(raw[i:i + 2], "little", signed=True)
               for i in range(0, len(raw), 2 * ch)] if width == 2 else []
    return rate, samples


def to_8k(rate, samples):
    if rate == 8000:
        return samples
    step = rate // 8000
    return [sum(samples[i:i + step]) // step for i in range(0, len(samples) - step + 1, step)]


def best_correlation(a, b, max_lag):
    """Normalised correlation of `a` (the needle) within `b` at the best lag in ±max_lag:
    the lag found first on 20 ms energy envelopes, then refined sample by sample."""
    import math

    def corr(xs, ys, lag):
        if lag >= 0:
            ys = ys[lag:lag + len(xs)]
        else:
            xs, ys = xs[-lag:], ys[:len(xs) + lag]
        n = min(len(xs), len(ys))
        if n < 40:
            return 0.0
        xs, ys = xs[:n], ys[:n]
        sxy = sum(x * y for x, y in zip(xs, ys))
        sxx = sum(x * x for x in xs)
        syy = sum(y * y for y in ys)
        return sxy / math.sqrt(sxx * syy) if sxx and syy else 0.0

    def envelope(v):
        return [math.sqrt(sum(x * x for x in v[i:i + 160]) / 160) for i in range(0, len(v) - 159, 160)]

    ea, eb = envelope(a), envelope(b)
    frames = max_lag // 160
    # Zero-mean envelopes: silence against silence must not look like a match.
    ma, mb = sum(ea) / max(len(ea), 1), sum(eb) / max(len(eb), 1)
    ea, eb = [x - ma for x in ea], [x - mb for x in eb]
    coarse = max(range(-frames, frames + 1), key=lambda f: corr(ea, eb, f)) * 160
    best = max(range(coarse - 240, coarse + 241), key=lambda lag: corr(a, b, lag))
    return corr(a, b, best), best


def sipp(work, scenario, target, pcap, calls, extra=(), binary="sipp"):
    """Runs an `interop/sipp` scenario; returns (completed, failed, its directory)."""
    d = os.path.join(work, f"sipp-{scenario}-{time.monotonic_ns()}")
    os.makedirs(d)
    with open(os.path.join(d, "callers.csv"), "w") as f:
        f.write("SEQUENTIAL\n+15551230001;\n")
    sf, keys = os.path.join(ROOT, "interop/sipp", scenario), ["-key", "pcap", pcap]
    if binary != "sipp":
        # Debian 13's SIPp 3.7.3 (the TLS build) loses a `-key` value depending on the
        # options around it ("keyword not supplied"): its scenario gets the values
        # written in instead.
        extra, values = list(extra), {"pcap": pcap}
        while "-key" in extra:
            i = extra.index("-key")
            values[extra[i + 1]] = extra[i + 2]
            del extra[i:i + 3]
        with open(sf) as f:
            text = f.read()
        for k, v in values.items():
            text = text.replace(f"[{k}]", v)
        sf, keys = os.path.join(d, scenario), []
        with open(sf, "w") as f:
            f.write(text)
    argv = [binary, "-sf", sf, "-inf", "callers.csv",
            "-s", FORWARDED if scenario != "via-switch.xml" else "15557000000",
            "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port()),
            "-mp", str(media_port(43000, 400)), *keys,
            *extra, target, "-m", str(calls), "-r", "1", "-l", "5", "-timeout", "60s",
            "-nostdin", "-trace_stat", "-stf", "stat.csv", "-trace_err"]
    r = subprocess.run(argv, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=120)
    if not os.path.exists(os.path.join(d, "stat.csv")):
        raise Fail(f"{binary} {scenario} did not run: {r.stdout[-1500:]}")
    with open(os.path.join(d, "stat.csv")) as f:
        rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
    col = {n: i for i, n in enumerate(rows[0])}
    ok, failed = int(rows[-1][col["SuccessfulCall(C)"]]), int(rows[-1][col["FailedCall(C)"]])
    if failed and os.environ.get("PEERS_DEBUG"):
        print(r.stdout[-2000:])
    return ok, failed, d


def sipp_log(d):
    """The lines SIPp's `<log>` actions wrote (-trace_logs)."""
    lines = []
    for name in os.listdir(d):
        if name.endswith("_logs.log"):
            with open(os.path.join(d, name), errors="replace") as f:
                lines += [line.strip() for line in f if line.strip()]
    return lines


def stored_whole(s, n, want, voice):
    """Waits for `n` messages and their SMS; returns (passed, durations, correlations)."""
    wait_until(lambda: len(s.messages()) >= n and len(s.sms()) >= n, 20, "messages")
    msgs = s.messages()
    durations = sorted(m["duration_ms"] for m in msgs)
    corrs = []
    for m in msgs:
        rate, got = s.audio(m)
        corrs.append(best_correlation(voice, to_8k(rate, got), 1600)[0])
    passed = (len(msgs) == n and all(abs(d - want) <= 200 for d in durations)
              and all(c >= 0.9 for c in corrs))
    return passed, durations, corrs


def kamailio(work, port, router):
    with open(os.path.join(ROOT, "interop/kamailio/switch.cfg")) as f:
        cfg = f.read()
    for k, v in (("PORT", port), ("MPATH", KAMAILIO_MODULES), ("FORWARDED", FORWARDED),
                 ("ROUTER", router)):
        cfg = cfg.replace(f"@@{k}@@", str(v))
    path = os.path.join(work, "kamailio.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    log = open(os.path.join(work, "kamailio.log"), "ab")
    p = subprocess.Popen(["kamailio", "-f", path, "-DD", "-E", "-m", "64", "-M", "8",
                          "-P", os.path.join(work, "kamailio.pid"), "-Y", work],
                         stdout=log, stderr=log)
    wait_tcp(port)
    return p


def voice_ms(pcap_dir):
    _, v = read_wav(os.path.join(pcap_dir, "caller.wav"))
    return len(v) // 8, v


def switch(binary, work):
    for mode, extra in (("redirect", ""), ("proxy", "record_route = true")):
        w = os.path.join(work, f"switch-{mode}")
        s = System(binary, w, mode, extra).start()
        k = None
        try:
            port = free_port()
            k = kamailio(w, port, s.p["router"])
            pcap = caller_pcap(w)
            want, voice = voice_ms(w)
            ok, failed, _ = sipp(w, "via-switch.xml", f"127.0.0.1:{port}", pcap, 2)
            print(f"  {mode}: SIPp through Kamailio: {ok} completed, {failed} failed")
            whole, durations, corrs = stored_whole(s, 2, want, voice)
            print(f"  {mode}: stored {len(durations)} for {RECIPIENT} (the switch's Diversion): "
                  f"{durations} ms for {want} ms spoken, correlation "
                  + ", ".join(f"{c:.3f}" for c in corrs))
            with open(os.path.join(w, "kamailio.log"), errors="replace") as f:
                followed = f.read().count("following its Contact")
            print(f"  {mode}: 302s Kamailio followed: {followed}")
            passed = ok == 2 and failed == 0 and whole and (followed == 2) == (mode == "redirect")
            MATRIX.append(("Kamailio 5.6 + SIPp", mode + (" +RR" if extra else ""), "UDP",
                           "PCMU", passed, f"{ok}/2 calls, {durations} ms, corr "
                           + "/".join(f"{c:.2f}" for c in corrs)))
            check(passed, f"{mode}: calls through the switch stored whole")
        finally:
            if k and k.poll() is None:
                k.terminate()
                k.wait(timeout=10)
            s.stop()


def sipp_tls(binary, work):
    launcher = SIPP_TLS[0]
    if not os.access(launcher, os.X_OK):
        raise Fail(f"{launcher} is missing: run interop/sipp-tls.sh (SIPp built with TLS)")
    for mode, extra in (("redirect", ""), ("proxy", "record_route = true")):
        w = os.path.join(work, f"sipp-tls-{mode}")
        s = System(binary, w, mode, extra, tls=True).start()
        try:
            pcap = caller_pcap(w)
            want, voice = voice_ms(w)
            tls = ["-t", "l1", "-tls_cert", s.crt, "-tls_key", s.key, "-tls_ca", s.crt,
                   "-key", "recipient", FORWARDED, "-trace_logs"]
            router = f"127.0.0.1:{s.p['tls']}"
            ok, failed, d = sipp(w, "tls.xml", router, pcap, 2, tls, launcher)
            logged = sipp_log(d)
            if mode == "redirect":
                # SIPp cannot follow a 302 on a TLS call: each Contact is called as its own run.
                contacts = [line.split()[1:3] for line in logged if line.startswith("redirect ")]
                servers = {str(s.p["t1"]), str(s.p["t2"])}
                named_tls = len(contacts) == 2 and all(p in servers for _, p in contacts)
                print(f"  redirect: {ok} INVITEs over TLS to the router, {failed} failed; "
                      f"302 Contacts {[':'.join(c) for c in contacts]} (servers' TLS "
                      f"listeners {sorted(servers)})")
                for host, port in contacts:
                    ok2, failed2, _ = sipp(w, "tls.xml", f"{host}:{port}", pcap, 1, tls, launcher)
                    ok, failed = ok + ok2 - 1, failed + failed2
            else:
                rr = [line for line in logged if "transport=tls;lr" in line]
                named_tls = len(rr) == 2
                print(f"  proxy: {ok} calls over TLS through the router, {failed} failed; "
                      f"TLS Record-Route seen in {len(rr)} 200s")
            whole, durations, corrs = stored_whole(s, 2, want, voice)
            print(f"  {mode}: stored {durations} ms for {want} ms spoken, correlation "
                  + ", ".join(f"{c:.3f}" for c in corrs))
            passed = ok == 2 and failed == 0 and named_tls and whole
            MATRIX.append(("SIPp 3.7 -t l1", mode + (" +RR" if extra else ""), "TLS", "PCMU",
                           passed, f"{ok}/2 calls, {durations} ms, corr "
                           + "/".join(f"{c:.2f}" for c in corrs)))
            check(passed, f"{mode}: SIPp over TLS left whole messages")
        finally:
            s.stop()


def wav_file(path, lead_ms, samples, tail_ms, rate=8000):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * (rate * lead_ms // 1000))
        w.writeframes(b"".join(int(x).to_bytes(2, "little", signed=True) for x in samples))
        w.writeframes(b"\0\0" * (rate * tail_ms // 1000))


class Baresip:
    """One baresip user agent: `user` calls `target` playing `source`, records what it hears."""

    def __init__(self, work, name, user, codecs, cafile=None):
        self.dir = os.path.join(work, name)
        self.rec = os.path.join(self.dir, "rec")
        os.makedirs(self.rec, exist_ok=True)
        self.user = user
        modules = "".join(f"module {c}.so\n" for c in codecs)
        rtp = 44000 + free_port() % 200 * 10
        # Written again before each start with a fresh SIP port (`{sip}`).
        self.config = f"""poll_method epoll
sip_listen 127.0.0.1:{{sip}}
sip_trans_def udp
{f"sip_cafile {cafile}" if cafile else ""}
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{self.dir}/source.wav
rtp_ports {rtp}-{rtp + 9}
module_path /usr/lib/baresip/modules
module menu.so
{modules}module aufile.so
module alsa.so
module sndfile.so
module account.so
snd_path {self.rec}
"""
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write(f"<sip:{user}@127.0.0.1>;regint=0\n")

    def call(self, target, source, seconds):
        """Plays `source` (a WAV) to `target`; hangs up at its end. Returns (log, heard)."""
        shutil.copy(source, os.path.join(self.dir, "source.wav"))
        for f in os.listdir(self.rec):
            os.remove(os.path.join(self.rec, f))
        # -n 127.0.0.1: its SDP names loopback, the address its RTP comes from.
        argv = ["baresip", "-f", self.dir, "-n", "127.0.0.1", "-e", f"/dial {target}",
                "-t", str(seconds)]
        for attempt in (1, 2):
            with open(os.path.join(self.dir, "config"), "w") as f:
                f.write(self.config.replace("{sip}", str(sip_port())))
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=seconds + 20)
            with open(os.path.join(self.dir, f"baresip-{attempt}.log"), "w") as f:
                f.write(r.stdout)
            # Once in a while baresip 1.0 starts without placing the call at all (nothing
            # reaches the router), or finds a port of its taken meanwhile: that start is
            # repeated, once, on a new port; a call it placed never is.
            if "connecting to" in r.stdout or attempt == 2:
                break
            print(f"  baresip placed no call (log {self.dir}/baresip-1.log); starting it again")
        heard = [f for f in os.listdir(self.rec) if f.endswith("-dec.wav")]
        return r.stdout, (read_wav(os.path.join(self.rec, heard[0])) if heard else (8000, []))


def sip_port():
    """A port for baresip's SIP: it listens on UDP and TCP there and TLS on the next one."""
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as t:
                t.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two free ports in a row for baresip")


def codec_of(log):
    dec = [l for l in log.splitlines() if "Set audio decoder:" in l]
    return dec[-1].split("decoder:")[1].strip() if dec else "?"


def baresip(binary, work):
    _, spoken = read_wav(os.path.join(ROOT, "crates/media/prompts/you-have-reached.wav"))
    _, more = read_wav(os.path.join(ROOT, "crates/media/prompts/leave-message.wav"))
    spoken += more
    voice = os.path.join(work, "baresip-voice.wav")
    wav_file(voice, 1200, spoken, 800)   # after the greeting tone; a pause before hanging up
    # baresip 1.0's file source does not resample: a G.722 call reads a 16 kHz file.
    voice16 = os.path.join(work, "baresip-voice-16k.wav")
    wav_file(voice16, 1200, [x for s in spoken for x in (s, s)], 800, rate=16000)
    quiet = os.path.join(work, "baresip-quiet.wav")
    # The greeting, "message from" and the caller's number come before the message: the
    # recipient listens 22 s, long enough to hear it through and have it marked heard.
    wav_file(quiet, 22000, [], 0)
    quiet16 = os.path.join(work, "baresip-quiet-16k.wav")
    wav_file(quiet16, 22000, [], 0, rate=16000)
    runs = [(mode, extra, label, codecs, tls)
            for mode, extra in (("redirect", ""), ("proxy", "record_route = true"))
            for label, codecs, tls in (("PCMU", ["g711"], False),
                                       ("G.722 first", ["g722", "g711"], False),
                                       ("PCMU", ["g711"], True))]
    for mode, extra, label, codecs, tls in runs:
        transport = "TLS" if tls else "UDP"
        w = os.path.join(work, f"baresip-{mode}-{label.split()[0]}-{transport}")
        if True:
            s = System(binary, w, mode, extra, tls=tls).start()
            ca = s.crt if tls else None
            port, suffix = (s.p["tls"], ";transport=tls") if tls else (s.p["router"], "")
            try:
                wide = codecs[0] == "g722"
                caller = Baresip(w, "caller", "+15551230001", codecs, ca)
                log, _ = caller.call(f"sip:{RECIPIENT}@127.0.0.1:{port}{suffix}",
                                     voice16 if wide else voice, 15)
                wait_until(lambda: s.messages() and s.sms(), 20, "the message and its SMS")
                m = s.messages()[0]
                rate, stored = s.audio(m)
                stored8 = to_8k(rate, stored)
                c_dep, _ = best_correlation(to_8k(8000, spoken)[:16000], stored8, 12000)
                print(f"  {mode}, {transport}, {label}: deposit {codec_of(log)}: stored {m['duration_ms']} ms "
                      f"({rate} Hz), correlation with what baresip played {c_dep:.3f}")
                link = "+" + s.sms()[0]["source"]
                me = Baresip(w, "recipient", RECIPIENT, codecs, ca)
                log2, (hrate, heard) = me.call(f"sip:{link}@127.0.0.1:{port}{suffix}",
                                               quiet16 if wide else quiet, 22)
                c_ret, _ = best_correlation(stored8[:16000], to_8k(hrate, heard), 8000 * 14)
                try:
                    wait_until(lambda: s.messages()[0]["state"] == "heard", 5, "heard")
                except RuntimeError:
                    pass
                state = s.messages()[0]["state"]
                print(f"  {mode}, {transport}, {label}: retrieval {codec_of(log2)} from {RECIPIENT} to {link}: "
                      f"heard {len(heard) / hrate:.1f} s, correlation with the stored message "
                      f"{c_ret:.3f}, message {state}")
                passed = c_dep >= 0.8 and c_ret >= 0.8 and state == "heard"
                MATRIX.append(("baresip 1.0", mode + (" +RR" if extra else ""), transport,
                               f"{label} -> {codec_of(log)}", passed,
                               f"deposit corr {c_dep:.2f}, retrieval corr {c_ret:.2f}, {state}"))
                check(passed, f"{mode}, {transport}, {label}: baresip left a message and heard it back")
            finally:
                s.stop()


def main():
    def add_args(ap):
        ap.add_argument("--sipp-tls", default=SIPP_TLS[0], help="SIPp built with TLS")

    def one(name, a, work):
        SIPP_TLS[0] = os.path.abspath(a.sipp_tls)
        globals()[name](a.bin, work)

    try:
        run(__doc__, ["switch", "baresip", "sipp_tls"], one, add_args, prefix="boxless-peers-")
    finally:
        print("\ninterop matrix (peer | mode | transport | codec | result | figures)")
        for peer, mode, transport, codec, passed, figures in MATRIX:
            print(f"  {peer:<22} {mode:<12} {transport:<5} {codec:<6} "
                  f"{'pass' if passed else 'FAIL':<5} {figures}")


if __name__ == "__main__":
    main()
