"""The provider's public page in a real headless Chromium (selenium + chromedriver), against a
running staticwire-control with the dev Lightning backend. Run by ops/test-web.sh inside the
customer's network namespace; it walks the whole flow and fails loudly on any mismatch:

  terms -> rent (key made by WebCrypto) -> invoice (text, lightning: link, QR decoded by zbar)
  -> dev-pay -> configuration (text, download, QR decoded by zbar) -> status remembered in the
  browser -> clock past paid-until -> back payments shown -> renew -> dev-pay -> active again
  -> errors shown as words, in English and German -> a second rental with the vendored
  X25519 library (tweetnacl) on a phone-sized screen. Every request on a rental carries the
  proof of key possession (PROTOCOL.md 3.1); the status is asked by the private key.

Every request the page made (Chromium's own network log) and every request body the control
logged (STATICWIRE_LOG_BODIES=1) is checked for the private keys. Screenshots of every step at
phone and desktop sizes go to --shots.

Usage: browser_test.py --api URL --control-log FILE --dev-pay "CMD" --out DIR --shots DIR
Writes DIR/customer.conf (the configuration of the first rental) for the tunnel check.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from staticwire_proof import proof, x25519  # noqa: E402  (control/tests/staticwire_proof.py)
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
STEP_TIMEOUT = 20

args = None
network_log = []  # every request the browsers made: (url, headers, post data)
passed = 0


def check(cond, what, seen=None):
    """`seen`: what was found instead, printed only on a failure."""
    global passed
    if not cond:
        print(f"FAIL: {what}" + (f" (found: {seen!r})" if seen is not None else ""), file=sys.stderr)
        sys.exit(1)
    passed += 1
    print(f"ok: {what}")


def browser(secure_origin, download_dir):
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--no-first-run", "--disable-extensions", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--lang=en-US",
              "--window-size=1280,900"]:
        o.add_argument(a)
    if secure_origin:
        # Plain HTTP on a non-loopback address is not a secure context, so WebCrypto is
        # missing there; this flag makes the underlay address count as secure for the run
        # that tests the WebCrypto path (the other run tests the library fallback).
        o.add_argument(f"--unsafely-treat-insecure-origin-as-secure={args.api}")
    o.add_experimental_option("prefs", {
        "download.default_directory": download_dir,
        "download.prompt_for_download": False,
        "intl.accept_languages": "en-US,en",
    })
    o.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    d.set_page_load_timeout(STEP_TIMEOUT)
    d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": download_dir})
    return d


def drain_logs(d):
    for e in d.get_log("performance"):
        m = json.loads(e["message"])["message"]
        if m["method"] == "Network.requestWillBeSent":
            r = m["params"]["request"]
            network_log.append((r["url"], json.dumps(r.get("headers", {})), r.get("postData", "")))
    errors = [e["message"] for e in d.get_log("browser")
              # A failed request shows up here too: ok only where the test provoked it.
              if e["level"] == "SEVERE" and "/v1/rentals/not-a-key" not in e["message"]
              and "status of 429" not in e["message"]]
    check(not errors, f"no errors in the browser's console: {errors}")


def wait(d, cond, what, timeout=STEP_TIMEOUT):
    try:
        # The page replaces elements as it goes: a stale or missing one means "not yet".
        return WebDriverWait(d, timeout, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,
                                                 NoSuchElementException)).until(lambda _: cond())
    except Exception:
        shot(d, "failed")
        check(False, f"waited {timeout}s for: {what}")


def el(d, sel):
    return d.find_element(By.CSS_SELECTOR, sel)


def visible(d, sel):
    els = d.find_elements(By.CSS_SELECTOR, sel)
    return els and els[0].is_displayed()


def text(d, sel):
    return el(d, sel).get_attribute("textContent")


def shot(d, name):
    """A full-page PNG at both sizes, phone with a mobile viewport."""
    for size, (w, h) in SIZES.items():
        if size == "phone":
            d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                              {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": True})
        else:
            d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            d.set_window_size(w, h)
        time.sleep(0.2)
        m = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        png = d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": m["width"], "height": m["height"], "scale": 1}})
        with open(os.path.join(args.shots, f"{name}-{size}.png"), "wb") as f:
            f.write(base64.b64decode(png["data"]))
    d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    d.set_window_size(*SIZES["desktop"])


def phone_screen(d, sel, name):
    """What a phone shows with `sel` scrolled to the top (the README's pictures)."""
    w, h = SIZES["phone"]
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": True})
    d.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'start'})", sel)
    time.sleep(0.2)
    png = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    with open(os.path.join(args.shots, f"{name}.png"), "wb") as f:
        f.write(base64.b64decode(png["data"]))
    d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def zbar(d, canvas_sel):
    """Decodes the QR code a canvas shows, from its own pixels, with zbarimg.

    QR only: with every symbology on, zbarimg now and then also reads a linear barcode (EAN,
    interleaved 2 of 5) out of a row of the QR's modules and prints it as a second line."""
    url = d.execute_script("return document.querySelector(arguments[0]).toDataURL('image/png')", canvas_sel)
    with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
        f.write(base64.b64decode(url.split(",", 1)[1]))
    try:
        out = subprocess.run(["zbarimg", "--raw", "-q", "-Sdisable", "-Sqrcode.enable", f.name],
                             capture_output=True, timeout=30)
    finally:
        os.unlink(f.name)
    check(out.returncode == 0, f"zbarimg decodes {canvas_sel} (rc {out.returncode})")
    return out.stdout.decode()


def dev_pay(bolt11):
    subprocess.run(args.dev_pay.split() + [bolt11], check=True, capture_output=True, timeout=30)


def api(method, path, body=None, priv=None):
    """A request to the API; with `priv` (32 bytes) proven as that key's holder."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if priv is not None:
        with urllib.request.urlopen(args.api + "/v1/terms", timeout=10) as r:
            headers["authorization"] = proof(priv, method, path, data or b"", json.load(r)["proof_key"])
    req = urllib.request.Request(args.api + path, method=method, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def wg_pubkey(priv):
    return subprocess.run(["wg", "pubkey"], input=priv.encode(), capture_output=True,
                          check=True).stdout.decode().strip()


def rent_flow(d, name, keygen, keyboard=False, first_sat="72,000"):
    """Rent, pay and read the configuration; returns (public key, private key, config)."""
    if keyboard:
        ActionChains(d).send_keys(Keys.ENTER).perform()
    else:
        el(d, "#rent-btn").click()
    wait(d, lambda: visible(d, "#rent-invoice .invoice"), "invoice shown")
    check(d.find_element(By.TAG_NAME, "body").get_attribute("data-keygen") == keygen,
          f"key made by {keygen}")
    pub = text(d, "#rent-pub")
    check(re.fullmatch(r"[A-Za-z0-9+/]{43}=", pub) is not None, f"public key shown: {pub}")
    bolt11 = el(d, "#rent-invoice .bolt11").get_attribute("value")
    check(bolt11.startswith("lnbcrt"), "invoice shown as text")
    check(el(d, "#rent-invoice .pay").get_attribute("href") == "lightning:" + bolt11,
          "lightning: link")
    check(f"{first_sat} sat" in text(d, "#rent-invoice .amount"), f"invoice amount {first_sat} sat")
    qr = zbar(d, "#rent-invoice canvas").strip()
    check(qr.lower() == "lightning:" + bolt11, "invoice QR decodes to lightning:<invoice>", qr)
    check(text(d, "#rent-invoice .state") == "Waiting for your payment…", "waiting for payment")
    if first_sat == "72,000":
        invoice_checks(d, pub)
    shot(d, f"{name}-2-invoice")
    phone_screen(d, "#rent-key", f"{name}-screen-invoice")
    dev_pay(bolt11)
    wait(d, lambda: visible(d, "#rent-config"), "configuration shown after payment")
    check(text(d, "#rent-invoice .state") == "Paid. Thank you!", "paid")
    conf = text(d, "#config-text")
    m = re.search(r"^PrivateKey = ([A-Za-z0-9+/]{43}=)$", conf, re.M)
    check(m is not None, "configuration has the private key filled in")
    priv = m.group(1)
    check(wg_pubkey(priv) == pub, "wg pubkey(private key) is the rented public key")
    shown = text(d, "#rent-address")
    m = re.search(r"^Address = (.*)$", conf, re.M)
    check(m is not None and m.group(1).split(", ")[0] == shown.split("/")[0] + "/32",
          f"configuration has the address {shown}")
    v6 = text(d, "#rent-ipv6")
    check(v6.startswith("2001:db8:") and v6.endswith("/64"), f"IPv6 prefix shown: {v6}")
    check(v6.split("/")[0] in m.group(1), "configuration has the IPv6 address")
    qr = zbar(d, "#config-qr").rstrip("\n")
    check(qr == conf.rstrip("\n"), "configuration QR decodes to the configuration", qr)
    shot(d, f"{name}-3-config")
    phone_screen(d, "#rent-config", f"{name}-screen-config")
    return pub, priv, conf


BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_polymod(values):
    gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1ffffff) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def reencode(bolt11, hrp=None, timestamp=None):
    """The invoice with another human-readable part or timestamp and a valid checksum (the
    signature no longer matches: the page does not check it, staticip does)."""
    s = bolt11.lower()
    sep = s.rfind("1")
    h, data = s[:sep], [BECH32.index(c) for c in s[sep + 1:-6]]
    if hrp:
        h = hrp
    if timestamp is not None:
        data[:7] = [(timestamp >> (5 * (6 - i))) & 31 for i in range(7)]
    expand = [ord(c) >> 5 for c in h] + [0] + [ord(c) & 31 for c in h]
    chk = bech32_polymod(expand + data + [0] * 6) ^ 1
    return h + "1" + "".join(BECH32[d] for d in data) + "".join(
        BECH32[(chk >> 5 * (5 - i)) & 31] for i in range(6))


def payment_hash_of(bolt11):
    """The payment hash (tag p) of a BOLT11 invoice, hex."""
    s = bolt11.lower()
    data = [BECH32.index(c) for c in s[s.rfind("1") + 1:-6]][7:-104]
    while data:
        tag, n = data[0], data[1] * 32 + data[2]
        words, data = data[3:3 + n], data[3 + n:]
        if tag == 1:
            bits = "".join(format(w, "05b") for w in words)[:256]
            return int(bits, 2).to_bytes(32, "big").hex()
    raise ValueError("no payment hash")


def invoice_checks(d, pub):
    """The page's own BOLT11 checks, fed the real open invoice with one thing changed each.
    The invoice is the one the page shows (the test does not hold the key the browser made,
    so it cannot ask the server for it: PROTOCOL.md 3.1)."""
    bolt11 = el(d, "#rent-invoice .bolt11").get_attribute("value")
    inv = {"bolt11": bolt11, "payment_hash": payment_hash_of(bolt11), "amount_sat": 72000}
    check_ = lambda i, sat: d.execute_script("return window.staticwireCheckInvoice(arguments[0], arguments[1])", i, sat)
    check(check_(inv, 72000) is None, "the real invoice passes the page's checks")
    cases = [
        ({**inv, "amount_sat": 71000}, 71000, "it asks 72,000 sat, but the terms give 71,000 sat."),
        ({**inv, "bolt11": reencode(inv["bolt11"], hrp="lnbcrt710u")}, 72000,
         "it asks 71,000 sat, but the terms give 72,000 sat."),
        ({**inv, "bolt11": reencode(inv["bolt11"], hrp="lnbc720u")}, 72000,
         "it is for bitcoin, but the terms say regtest."),
        ({**inv, "payment_hash": "00" * 32}, 72000, "its payment hash is not the one the server named."),
        ({**inv, "bolt11": reencode(inv["bolt11"], timestamp=int(time.time()) - 7200)}, 72000,
         "it has already expired."),
        ({**inv, "bolt11": inv["bolt11"][:-1] + ("q" if inv["bolt11"][-1] != "q" else "p")}, 72000,
         "it is not a valid Lightning invoice (bad checksum)."),
    ]
    for bad, sat, why in cases:
        got = check_(bad, sat)
        check(got == why, f"the page refuses: {why} (got {got!r})")


def downloaded(dirname, fname):
    path = os.path.join(dirname, fname)
    deadline = time.time() + STEP_TIMEOUT
    while time.time() < deadline:
        if os.path.exists(path) and not os.path.exists(path + ".crdownload"):
            with open(path) as f:
                return f.read()
        time.sleep(0.1)
    return None


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--control-log", required=True)
    p.add_argument("--dev-pay", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--shots", required=True)
    args = p.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    downloads = tempfile.mkdtemp(prefix="swt-web-dl-")
    secrets = []

    # --- A: desktop, WebCrypto X25519 ---
    d = browser(secure_origin=True, download_dir=downloads)
    try:
        d.get(args.api + "/")
        wait(d, lambda: el(d, "body").get_attribute("data-ready") == "1", "page ready")
        terms = text(d, "#terms-list")
        check("72,000 sat (48,000 sat activation + 24,000 sat first month)" in terms,
              "terms: first payment")
        check("24,000 sat a month (30 days)" in terms, "terms: monthly rent")
        check("reserved for 2 months" in terms, "terms: reservation")
        check("/31 (2), /30 (4), /29 (8) addresses" in terms, "terms: address blocks")
        check("a routed /64 with every rental, included" in terms, "terms: IPv6")
        rows = [r.get_attribute("textContent") for r in d.find_elements(By.CSS_SELECTOR, "#hosts tbody tr")]
        free_before = int(re.search(r"51820(\d+)/64$", rows[0]).group(1))
        check(rows[0].startswith("198.18.0.1:51820") and free_before > 0,
              f"hosts with free capacity: {rows}")
        shot(d, "a-1-terms")
        el(d, "#remember").click()
        pub, priv, conf = rent_flow(d, "a", "webcrypto")
        secrets.append(priv)
        with open(os.path.join(args.out, "customer.conf"), "w") as f:
            f.write(conf)
        el(d, "#config-download").click()
        check(downloaded(downloads, "staticwire.conf") == conf, "download is the configuration")
        storage = d.execute_script("return JSON.stringify(localStorage) + document.cookie")
        check(d.execute_script("return localStorage.getItem('staticwire.private_key')") == priv
              and pub not in storage, "remembering (asked) keeps the private key, to prove with")
        drain_logs(d)

        # --- B: the remembered rental; lapse, back payments, renewal ---
        d.get(args.api + "/")
        wait(d, lambda: el(d, "#status").get_attribute("data-state") == "active",
             "remembered rental's status shown")
        check(text(d, "#remembered-key") == pub, "the remembered key is shown")
        check("Paid until" in text(d, "#status-list"), "paid-until shown")
        rows = [r.get_attribute("textContent") for r in d.find_elements(By.CSS_SELECTOR, "#hosts tbody tr")]
        check(rows[0].endswith(f"{free_before - 1}/64"), f"one address fewer free: {rows}")
        shot(d, "b-1-status")
        api("POST", "/v1/dev/clock", {"seconds": 31 * 86400})
        d.get(args.api + "/")
        wait(d, lambda: el(d, "#status").get_attribute("data-state") == "lapsed", "lapsed")
        check(visible(d, "#backpay") and "1 month(s) owed (24,000 sat)" in text(d, "#backpay"),
              "back payments shown")
        check("48,000 sat" in text(d, "#status-list"), "due now: back month + one month")
        shot(d, "b-2-lapsed")
        months = el(d, "#months")
        months.clear()
        months.send_keys("1")
        el(d, "#renew-form button").click()
        wait(d, lambda: visible(d, "#renew-invoice .invoice"), "renewal invoice shown")
        check("48,000 sat for 2 month(s) of rent" in text(d, "#renew-invoice .amount"),
              "renewal invoice includes the back payment")
        bolt11 = el(d, "#renew-invoice .bolt11").get_attribute("value")
        qr = zbar(d, "#renew-invoice canvas").strip()
        check(qr.lower() == "lightning:" + bolt11, "renewal QR decodes", qr)
        shot(d, "b-3-renewal-invoice")
        dev_pay(bolt11)
        wait(d, lambda: el(d, "#status").get_attribute("data-state") == "active", "active again")
        check(not visible(d, "#backpay"), "no back payments left")
        shot(d, "b-4-renewed")
        # An invoice left unpaid past its expiry.
        el(d, "#renew-form button").click()
        wait(d, lambda: el(d, "#renew-invoice .invoice").get_attribute("data-state") is None
             and visible(d, "#renew-invoice canvas"), "a second renewal invoice shown")
        api("POST", "/v1/dev/clock", {"seconds": 2 * 3600})
        wait(d, lambda: el(d, "#renew-invoice .invoice").get_attribute("data-state") == "expired",
             "the unpaid invoice expires")
        check(text(d, "#renew-invoice .state").startswith("This invoice expired unpaid."),
              "expiry shown as words")
        shot(d, "b-5-expired")

        # --- C: errors as words; the German page ---
        el(d, "#forget").click()
        check(d.execute_script("return localStorage.getItem('staticwire.private_key')") is None,
              "forget removes the key")
        box = el(d, "#pubkey")
        box.clear()
        box.send_keys("not-a-key")
        el(d, "#status-form button").click()
        wait(d, lambda: visible(d, "#status-error"), "error shown")
        err = text(d, "#status-error")
        check(err.startswith("That is neither a WireGuard private key") and "{" not in err,
              f"API error as words: {err}")
        Select(el(d, "#lang")).select_by_value("de")
        wait(d, lambda: text(d, "#rent-h") == "Adresse mieten", "German page")
        el(d, "#status-form button").click()
        wait(d, lambda: text(d, "#status-error").startswith("Das ist weder ein privater"),
             "error in German")
        check("72.000 sat" in text(d, "#terms-list"), "German number format")
        shot(d, "c-1-error-de")
        Select(el(d, "#lang")).select_by_value("en")
        drain_logs(d)
    finally:
        d.quit()

    # --- D: a phone without WebCrypto X25519 (plain HTTP, not a secure context) ---
    d = browser(secure_origin=False, download_dir=downloads)
    try:
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        d.get(args.api + "/")
        wait(d, lambda: el(d, "body").get_attribute("data-ready") == "1", "page ready")
        check(visible(d, "#insecure"), "plain-HTTP warning shown")
        check(d.execute_script("return document.documentElement.scrollWidth") <= SIZES["phone"][0],
              "nothing wider than a phone's screen")
        # Every control has a label (or a name), every picture a text.
        unlabelled = d.execute_script("""
            return [...document.querySelectorAll('input, select, textarea, button, a, canvas')]
              .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label')
                             || e.textContent.trim() || e.closest('label')))
              .map(e => e.outerHTML.slice(0, 80));""")
        check(unlabelled == [], f"every control and picture is named: {unlabelled}")
        # A block of four addresses, then keyboard only: Tab to the rent button, Enter.
        Select(el(d, "#prefix")).select_by_value("30")
        check(el(d, "#prefix").get_attribute("value") == "30", "a /30 chosen")
        for _ in range(40):
            if d.switch_to.active_element.get_attribute("id") == "rent-btn":
                break
            ActionChains(d).send_keys(Keys.TAB).perform()
        check(d.switch_to.active_element.get_attribute("id") == "rent-btn",
              "the rent button is reached with Tab")
        pub2, priv2, conf2 = rent_flow(d, "d", "tweetnacl", keyboard=True, first_sat="144,000")
        check(re.search(r"^# Routed to you: 203\.0\.113\.\d+/30, 2001:db8:", conf2, re.M)
              is not None, "the /30 and its IPv6 prefix in the configuration")
        check(text(d, "#rent-address").endswith("/30"), "the /30 shown")
        secrets.append(priv2)
        check(pub2 != pub, "a second key")
        # The first rental's status by its pasted configuration file (nothing remembered here):
        # its private key proves the rental, and is not sent.
        check(d.execute_script("return localStorage.getItem('staticwire.private_key')") is None,
              "nothing remembered unless asked")
        box = el(d, "#pubkey")
        box.clear()
        # As pasted: typing its newlines would press Enter.
        d.execute_script("arguments[0].value = arguments[1]", box, conf)
        el(d, "#status-form button").click()
        wait(d, lambda: el(d, "#status").get_attribute("data-state") == "active",
             "status by a pasted configuration file")
        addr1 = re.search(r"^Address = ([0-9.]+)/32", conf, re.M).group(1)
        check(addr1 in text(d, "#status-list"), f"the pasted key's address {addr1}")
        shot(d, "d-4-pasted-status")
        # This client holds an unpaid /32 and asks for a /30 (max_unpaid_per_client = 4 addresses): the
        # page says so in words.
        other = os.urandom(32)
        other_pub = base64.b64encode(x25519(other, (9).to_bytes(32, "little"))).decode()
        api("POST", "/v1/rentals", {"public_key": other_pub}, priv=other)
        el(d, "#rent-btn").click()
        wait(d, lambda: visible(d, "#rent-error"), "rent refused")
        err = text(d, "#rent-error")
        check(err.startswith("Your address already holds too many unpaid rentals") and "{" not in err,
              f"429 as words: {err}")
        shot(d, "d-5-too-many-unpaid")
        drain_logs(d)
    finally:
        d.quit()

    # --- the private keys never left the browsers ---
    check(len(network_log) > 20, f"{len(network_log)} requests in the browsers' network logs")
    check(any(pub in u or pub in b for u, _, b in network_log), "the public key was sent")
    elsewhere = [u for u, _, _ in network_log if not u.startswith((args.api + "/", "data:", "blob:"))]
    check(elsewhere == [], f"nothing loaded from anywhere but the provider: {elsewhere}")
    with open(args.control_log) as f:
        logged = f.read()
    check(logged.count("staticwire_request") > 20, "the control logged the requests")
    check(f'"public_key":"{pub}"' in logged and f'"public_key":"{pub2}"' in logged,
          "the control logged the rent bodies with the public keys")
    for s in secrets:
        raw = base64.b64decode(s)
        forms = {s, s.replace("+", "-").replace("/", "_"), s.rstrip("="), raw.hex(),
                 urllib.request.quote(s, safe="")}
        check(not any(f in u or f in h or f in b for f in forms for u, h, b in network_log),
              "no request the page made carried the private key (browser's network log)")
        check(not any(f in logged for f in forms),
              "no request the control received carried the private key (control's log)")
    print(f"{passed} passed, 0 failed")


if __name__ == "__main__":
    main()
