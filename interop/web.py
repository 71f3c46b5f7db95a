#!/usr/bin/env python3
"""Web playback in a real browser, on loopback only.

SIPp leaves a message through the router of `boxless serve` (web.base_url set); the npm
`smpp` SMSC simulator receives its SMS; headless Chromium (Debian `chromium`, driven by
Debian's `chromedriver` through Selenium: no browser download) opens the link the SMS
carries and:

  - finds the caller and the length the API gives, on a 360 px wide phone screen and on
    a desktop one (a screenshot of each is written to --out);
  - plays the audio: the <audio> element reaches its end, its duration is the message's,
    and the message is then `heard`;
  - "Your greeting": uploads a WAV file through the page's form (the API then has it,
    the page plays it at its length), a file that is not a WAV gets the page that says
    why and changes nothing, Remove takes it away (the API says 404), and a greeting
    recorded in the page (MediaRecorder on Chromium's fake microphone) is kept;
  - presses Save (the API says `saved`), then Delete and its confirmation (`deleted`),
    after which the link gets the 404 page;
  - opens a forged token: 404, the same page;
  - opens /status: the servers' table and the chart;
  - and, without the browser, validates the API's OpenAPI document
    (`GET /api/v1/openapi.json`) with openapi-spec-validator.

It also measures, without the browser: the page's weight, the time to first byte of the
page and of the audio (median of 20), and in the browser the time from play() to audio
playing. Prints the figures; exits 1 when a check fails. Usage:

  cargo build --release
  target/interop-venv/bin/python interop/web.py [--bin target/release/boxless] [--out DIR]
"""

import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (  # noqa: E402
    ROOT, media_port, Fail, caller_pcap, check, free_port, http_get, ports, read_jsonl, start_smsc_and_serve,
    stop_all, wait_until, write_config,
)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

RECIPIENT = "+15551230002"
CALLER = "+15551230001"


def openapi(port):
    """The API's own description validates as OpenAPI (openapi-spec-validator)."""
    from openapi_spec_validator import validate
    code, _, doc = http_get(port, "/api/v1/openapi.json")
    check(code == 200 and isinstance(doc, dict), "GET /api/v1/openapi.json answers JSON")
    try:
        validate(doc)
    except Exception as e:  # the validator's own error types
        raise Fail(f"the OpenAPI document does not validate: {e}") from e
    check(True, f"the OpenAPI {doc['openapi']} document ({len(doc['paths'])} paths) validates")


def sipp_deposit(work, router):
    """One SIPp call (interop/sipp/deposit.xml) leaving the caller's voice for RECIPIENT."""
    d = os.path.join(work, "sipp")
    os.makedirs(d)
    with open(os.path.join(d, "callers.csv"), "w") as f:
        f.write(f"SEQUENTIAL\n{CALLER};\n")
    pcap = caller_pcap(d)
    argv = ["sipp", "-sf", os.path.join(ROOT, "interop/sipp/deposit.xml"), "-inf", "callers.csv",
            "-s", RECIPIENT[1:], "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port()),
            "-mp", str(media_port(45000, 400)), "-key", "pcap", pcap,
            "-key", "recipient", RECIPIENT[2:], f"127.0.0.1:{router}", "-m", "1", "-r", "1",
            "-timeout", "60s", "-nostdin", "-trace_stat", "-stf", "stat.csv", "-trace_err"]
    r = subprocess.run(argv, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=120)
    with open(os.path.join(d, "stat.csv")) as f:
        rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
    col = {n: i for i, n in enumerate(rows[0])}
    ok = int(rows[-1][col["SuccessfulCall(C)"]])
    if ok != 1:
        print(r.stdout[-1500:])
    check(ok == 1, "SIPp left a message through the router")


def timed_get(port, path, n=20):
    """(median time to first byte in ms, body) of `n` GETs, each on a new connection."""
    ttfb, body = [], b""
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        ttfb.append((time.perf_counter() - t0) * 1000)
        body = r.read()
        status = r.status
        c.close()
    return statistics.median(ttfb), status, body


def browser(width, height, mobile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--autoplay-policy=no-user-gesture-required", "--mute-audio",
              "--no-first-run", "--disable-background-networking",
              # A microphone for the greeting recorded on the page: Chromium's fake
              # device (a beep every second), allowed without asking.
              "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--window-size={width},{height}"):
        opts.add_argument(a)
    if mobile:
        opts.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0,
                              "touch": True},
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 "
                         "(KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36"})
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    d = webdriver.Chrome(options=opts, service=service)
    d.set_page_load_timeout(20)
    d.set_script_timeout(90)
    return d


def message(port):
    code, _, body = http_get(port, f"/api/v1/messages?recipient=%2B{RECIPIENT[1:]}")
    return body[0] if code == 200 and body else None


def fetch(port, path):
    """(status, body bytes) of GET `path` (not read as text: it may be audio)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def status_of(port, path):
    return fetch(port, path)[0]


def present(driver, element_id, limit=10):
    """True once the page shows `element_id` (a form's answer loads after click returns)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if driver.find_elements(By.ID, element_id):
            return True
        time.sleep(0.05)
    return False


def greeting(phone, port, work):
    """The page's "Your greeting": upload, a refused file, remove."""
    api = f"/api/v1/recipients/%2B{RECIPIENT[1:]}/greeting"
    url = phone.current_url
    check(phone.find_elements(By.ID, "greeting-none"), "no greeting of their own yet")
    check(status_of(port, api) == 404, "the API has none")
    bad = os.path.join(work, "not-a-greeting.wav")
    with open(bad, "wb") as f:
        f.write(b"ID3 this is an mp3, not a WAV " * 10)
    phone.find_element(By.ID, "greeting-file").send_keys(bad)
    phone.find_element(By.ID, "greeting-upload").click()
    check(present(phone, "greeting-refused"), "a file that is not a WAV: the page "
          f"says why ({phone.find_element(By.TAG_NAME, 'p').text!r})")
    check(status_of(port, api) == 404, "and nothing changed")
    phone.get(url)
    check(present(phone, "greeting-file"), "back on the page")
    wav = os.path.join(ROOT, "crates/media/prompts/no-messages.wav")
    phone.find_element(By.ID, "greeting-file").send_keys(wav)
    phone.find_element(By.ID, "greeting-upload").click()
    check(present(phone, "greeting-player"), "uploaded: the page shows the greeting")
    check(status_of(port, api) == 200, "the API has it")
    loaded = phone.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const a = document.getElementById('greeting-player');
        a.addEventListener('loadedmetadata', () => done({duration: a.duration}));
        a.addEventListener('error', () => done({error: String(a.error && a.error.code)}));
        a.preload = 'metadata'; a.load();
    """)
    check("error" not in loaded and abs(loaded["duration"] - 2.545) < 0.05,
          f"the page plays it at its length ({loaded})")
    phone.find_element(By.ID, "greeting-remove").click()
    check(present(phone, "greeting-none"), "removed: the page says the standard "
          "greeting plays")
    check(status_of(port, api) == 404, "the API has none again")
    # Recorded in the browser (script: MediaRecorder on Chromium's fake microphone).
    phone.find_element(By.ID, "greeting-record").click()
    time.sleep(3.0)
    phone.find_element(By.ID, "greeting-record").click()
    check(present(phone, "greeting-player", 20), "recorded in the browser: the page shows it")
    code, body = fetch(port, api)
    secs = (len(body) - 44) / 2 / 8000
    print(f"  recorded in the browser: {secs:.2f} s kept")
    check(code == 200 and 2.0 <= secs <= 4.0, "the API has what the browser recorded")
    phone.find_element(By.ID, "greeting-remove").click()
    check(present(phone, "greeting-none"), "and removed again")


def length_text(ms):
    s = -(-ms // 1000)
    return f"{s // 60}:{s % 60:02d}"


def playback(binary, work, out):
    p = ports()
    cfg = write_config(work, p, rtp=44000, sms="",
                       top=f'[web]\nbase_url = "http://127.0.0.1:{p["http"]}"\n')
    sms_out = os.path.join(work, "sms.jsonl")
    procs = start_smsc_and_serve(binary, cfg, work, p, sms_out,
                                 lambda: http_get(p["http"], "/api/v1/servers")[2])
    drivers = []
    try:
        openapi(p["http"])
        sipp_deposit(work, p["router"])
        wait_until(lambda: read_jsonl(sms_out), 15, "the SMS")
        text = read_jsonl(sms_out)[0]["text"]
        print(f"  SMS ({len(text)} characters): {text}")
        m = re.search(r"(http://127\.0\.0\.1:\d+)(/m/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{20})", text)
        check(m is not None, "the SMS carries the message's web link")
        url, path = m.group(1) + m.group(2), m.group(2)
        check(len(text) <= 160, f"the SMS with the link is one SMS ({len(text)} characters)")
        msg = message(p["http"])
        dur = msg["duration_ms"]

        # Weight and time to first byte, without a browser.
        ttfb_page, status, page = timed_get(p["http"], path)
        check(status == 200, "the page answers 200")
        ttfb_audio, status, audio = timed_get(p["http"], path + "/audio?via=page")
        check(status == 200 and audio[:4] == b"RIFF", "the audio answers a WAV")
        check(len(page) < 30 * 1024, f"page weight {len(page)} bytes (< 30 KB, nothing else "
                                     "to load: no external asset)")
        check(not re.search(rb"(src|href)=\"https?://", page), "no external asset")
        print(f"  figures: page {len(page)} B, TTFB page {ttfb_page:.2f} ms, "
              f"TTFB audio {ttfb_audio:.2f} ms ({len(audio)} B, median of 20)")

        # The phone.
        phone = browser(360, 780, True)
        drivers.append(phone)
        t0 = time.perf_counter()
        phone.get(url)
        load_ms = (time.perf_counter() - t0) * 1000
        check(phone.find_element(By.ID, "caller").text == CALLER, f"the page names {CALLER}")
        check(phone.find_element(By.ID, "length").text == length_text(dur),
              f"the page says {length_text(dur)} ({dur} ms in the API)")
        width = phone.execute_script("return document.documentElement.scrollWidth")
        check(width <= 360, f"legible at 360 px: no sideways scrolling (content {width} px)")
        phone.save_screenshot(os.path.join(out, "web-phone.png"))
        played = phone.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const a = document.getElementById('player');
            const t0 = performance.now(); let playing = null;
            a.addEventListener('playing', () => { if (playing === null) playing = performance.now() - t0; });
            a.addEventListener('ended', () => done({ended: a.ended, duration: a.duration,
                playing_ms: playing, wall_ms: performance.now() - t0}));
            a.addEventListener('error', () => done({error: String(a.error && a.error.code)}));
            a.play().catch(e => done({error: String(e)}));
        """)
        check("error" not in played, f"the audio plays ({played})")
        check(played["ended"], "the media element reaches its end")
        check(abs(played["duration"] * 1000 - dur) <= 50,
              f"its duration {played['duration']:.3f} s is the message's ({dur} ms)")
        print(f"  figures: page load in the browser {load_ms:.0f} ms, play() to playing "
              f"{played['playing_ms']:.1f} ms, played to the end in {played['wall_ms']:.0f} ms")
        wait_until(lambda: message(p["http"])["state"] == "heard", 5, "heard")
        check(True, "played to the end: the API says `heard`")
        greeting(phone, p["http"], work)
        phone.find_element(By.ID, "save").click()
        wait_until(lambda: message(p["http"])["state"] == "saved", 5, "saved")
        check("status" == phone.find_element(By.CSS_SELECTOR, "p.done").get_attribute("role"),
              "Save: the API says `saved`, the page says so")

        # The desktop, before Delete.
        desk = browser(1280, 800, False)
        drivers.append(desk)
        desk.get(url)
        check(desk.find_element(By.ID, "caller").text == CALLER, "the desktop page too")
        desk.save_screenshot(os.path.join(out, "web-desktop.png"))

        phone.find_element(By.ID, "delete").click()
        check(message(p["http"])["state"] == "saved", "Delete asks first: still `saved`")
        phone.save_screenshot(os.path.join(out, "web-delete.png"))
        phone.find_element(By.ID, "confirm").click()
        wait_until(lambda: message(p["http"])["state"] == "deleted", 5, "deleted")
        check(phone.find_element(By.ID, "deleted") is not None,
              "confirmed: the API says `deleted`")
        code, _, gone = http_get(p["http"], path)
        check(code == 404, "the deleted message's link: 404")

        # A forged token: the same 404 page.
        forged = path[:-4] + ("AAAA" if not path.endswith("AAAA") else "BBBB")
        code, _, body = http_get(p["http"], forged)
        check(code == 404 and body == gone, "a forged token: 404, the same page")
        phone.get(m.group(1) + forged)
        check("not found" in phone.title.lower(), f"the browser shows it ({phone.title})")
        # Same time: a wrong token and a deleted message's (medians of 20).
        t_forged, _, _ = timed_get(p["http"], forged)
        t_gone, _, _ = timed_get(p["http"], path)
        print(f"  figures: 404 TTFB forged {t_forged:.2f} ms, deleted {t_gone:.2f} ms")

        # The operator's page.
        desk.get(f"http://127.0.0.1:{p['http']}/status")
        check(len(desk.find_elements(By.CSS_SELECTOR, "tbody tr")) == 2, "/status: two servers")
        check(desk.find_element(By.TAG_NAME, "h2").text.startswith("Last hour: deposits 1"),
              "/status counts the deposit")
        check(len(desk.find_elements(By.CSS_SELECTOR, "svg rect")) >= 1, "/status draws it")
        desk.save_screenshot(os.path.join(out, "status.png"))
    finally:
        for d in drivers:
            try:
                d.quit()
            except Exception:  # noqa: BLE001
                pass
        stop_all(procs)


def main():
    def add_args(ap):
        ap.add_argument("--out", default=os.path.join(ROOT, "target/web-test"))

    def one(_name, a, work):
        os.makedirs(a.out, exist_ok=True)
        playback(a.bin, work, a.out)
        print(f"  screenshots in {a.out}")

    harness.run(__doc__, ["playback"], one, add_args, prefix="boxless-web-")


if __name__ == "__main__":
    main()
