#!/usr/bin/env python3
"""Protocol tests for the original StaticWire client's wire formats, against a real
staticwire-control: form-encoded POSTs to trailing-slash paths over real TLS pinned by the
certificate's SHA-256 fingerprint (requests + requests_toolbelt's FingerprintAdapter, as the
original client does), invoices decoded with the `bolt11` package, and GetConf output fed to the
real `wireguard_tools` package (WireguardConfig.from_dict).

usage: protocol_test.py CONTROL_BIN            run the suite (starts its own control)
       protocol_test.py --customer URL FPR CONTROL_BIN CONTROL_CFG OUT.conf
                                               rent with AddCredit, pay, write the wg-quick file
"""
import base64, json, os, socket, subprocess, sys, tempfile, time, urllib.request

import requests
import urllib3
from requests_toolbelt.adapters.fingerprint import FingerprintAdapter
from wireguard_tools import WireguardConfig, WireguardKey
from bolt11 import decode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from staticwire_proof import proof  # noqa: E402  (control/tests/staticwire_proof.py)

urllib3.disable_warnings()
FAILED = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILED.append(what)


class Client:
    """Speaks exactly like the original staticIP client."""

    def __init__(self, base, fingerprint, key=None):
        self.base = base
        self.session = requests.Session()
        self.session.mount(base, FingerprintAdapter(fingerprint))
        self.key = key or WireguardKey.generate()
        self.pub = str(self.key.public_key())

    def post(self, path, **data):
        r = self.session.post(self.base + path, data=data if data else None, verify=False, timeout=90)
        return r

    def api(self, path, **data):
        r = self.post(path, WireGuardPubKey=self.pub, **data)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def dev_pay(control, cfg, bolt11):
    subprocess.run([control, "-c", cfg, "dev-pay", bolt11], check=True, stdout=subprocess.DEVNULL)


def advance(http_base, seconds):
    req = urllib.request.Request(http_base + "/v1/dev/clock", data=json.dumps({"seconds": seconds}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).read()


def wg_quick_file(client, conf_dict):
    conf_dict = dict(conf_dict)
    conf_dict["private_key"] = str(client.key)
    return WireguardConfig.from_dict(conf_dict).to_wgconfig(wgquick_format=True)


def credit_matches(st, rate, fee):
    """The AutoPay client's own arithmetic: Credit = total_paid - ActivationFee - elapsed * Rate."""
    expected = st["total_paid"] - fee - (st["current_time"] - st["start_time"]) * rate
    return abs(expected - st["Credit"]) <= 20 * rate and abs(st["Credit"] / rate - st["TimeRemaining"]) <= 20


def suite(control, ipv6=False):
    tmp = tempfile.mkdtemp()
    https_port, http_port = free_port(), free_port()
    cfg = os.path.join(tmp, "control.toml")
    with open(cfg, "w") as f:
        f.write(f'listen = "127.0.0.1:{http_port}"\ndata_dir = "{tmp}"\ninvoice_poll_millis = 100\n'
                f'[compat]\nlisten = "127.0.0.1:{https_port}"\n'
                f'[[routers]]\nname = "compat"\nsocket = "{tmp}/none.sock"\nendpoint = "198.18.0.1:51820"\n'
                f'pools = ["203.0.113.0/28"]\n'
                + ('ipv6_pool = "2001:db8:100::/48"\n' if ipv6 else ''))
    proc = subprocess.Popen([control, "-c", cfg, "serve", "--dev-clock"], stderr=subprocess.DEVNULL)
    try:
        base, http_base = f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(http_base + "/healthz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        fpr = subprocess.run([control, "-c", cfg, "fingerprint"], check=True, capture_output=True, text=True).stdout.strip()
        check(len(fpr) == 64 and fpr == fpr.lower() and all(c in "0123456789abcdef" for c in fpr), "fingerprint is 64 lowercase hex")
        (run_ipv6 if ipv6 else run)(control, cfg, base, http_base, fpr)
    finally:
        proc.kill()
        proc.wait()


def run(control, cfg, base, http_base, fpr):
    # Transport: pinned TLS; a wrong pin fails; /v1/terms publishes the pin.
    terms = Client(base, fpr).session.get(base + "/v1/terms", verify=False).json()
    check(terms.get("tls_fingerprint") == fpr, "/v1/terms over HTTPS carries the fingerprint")
    try:
        Client(base, "00" * 32).post("/api/GetSellOfferTerms/")
        check(False, "a wrong fingerprint is refused")
    except requests.exceptions.SSLError:
        check(True, "a wrong fingerprint is refused")

    c = Client(base, fpr)
    check(c.post("/api/GetSellOfferTerms").status_code == 404, "paths need the trailing slash")
    check(c.post("/api/getsellofferterms/").status_code == 404, "paths are case-sensitive")
    check(c.session.get(base + "/api/rent/", verify=False).status_code != 200, "only POST")
    bad = c.post("/api/AddCredit/", WireGuardPubKey="AAAA", amount="5000").json()
    check(isinstance(bad.get("Error"), str), "a bad key is an Error object with HTTP 200")

    # ---- the 2023 release: RentNewIP, GetRentalStatus, GetConf, Renew ----
    m = Client(base, fpr)
    r = m.api("/api/rent/")
    check(r.get("InitialInvoice") is True and r["Invoice"].startswith("lnbcrt"), "rent: InitialInvoice and an lnbcrt invoice")
    check(decode(r["Invoice"]).amount_msat == 72_000_000, "rent: 72,000 sat (activation + first month)")
    st = m.api("/api/getstatus/")
    check(st["unpaid_invoice"] == r["Invoice"], "getstatus: unpaid_invoice is the open invoice")
    dev_pay(control, cfg, r["Invoice"])
    deadline = time.time() + 10
    while st["unpaid_invoice"] is not None and time.time() < deadline:
        time.sleep(1.25)  # the original client's polling period
        st = m.api("/api/getstatus/")
    check(st["unpaid_invoice"] is None and st["state"] == "active", "getstatus: unpaid_invoice null once paid")
    conf = m.api("/api/getconf/")
    check(set(conf) <= {"addresses", "dns", "mtu", "peers"} and set(conf["peers"][0]) <= {"public_key", "endpoint", "allowed_ips", "persistent_keepalive"},
          "getconf: only keys wireguard_tools accepts")
    text = wg_quick_file(m, conf)
    check(f"Address = {st['address']}/32" in text.replace("Address=", "Address = ") or st["address"] in text, "getconf: from_dict gives a wg-quick file with the address")
    paid_until = st["paid_until"]
    rn = m.api("/api/renew/")
    check(rn.get("InitialInvoice") is False and decode(rn["Invoice"]).amount_msat == 24_000_000, "renew: 24,000 sat for a month")
    dev_pay(control, cfg, rn["Invoice"])
    time.sleep(0.5)
    st = m.api("/api/getstatus/", InvoiceToWaitFor=rn["Invoice"])
    check(st["paid_until"] == paid_until + 30 * 86400, "renew: paid until one month later")
    advance(http_base, 61 * 86400)
    st = m.api("/api/getstatus/")
    check(st["state"] == "lapsed" and st["TimeRemaining"] < 0, "lapse: state lapsed, TimeRemaining negative")
    rn = m.api("/api/renew/")
    check(decode(rn["Invoice"]).amount_msat == 48_000_000, "lapse: renewing one month includes one month of back payment")

    # ---- the current release: GetSellOfferTerms, AddCredit, getstatus with credit ----
    a = Client(base, fpr)
    sot = a.post("/api/GetSellOfferTerms/").json()
    check(isinstance(sot["Rate"], float) and all(isinstance(sot[k], int) for k in
          ("ActivationFee", "MinimumInitialCredit", "MinRegularPaymentSize", "MaximumCredit")), "GetSellOfferTerms: float Rate, integer sat")
    rate, fee = sot["Rate"], sot["ActivationFee"]
    check(abs(rate * 86400 * 365.25 / 12 - 24000) < 1e-6, "Rate is 24,000 sat per 365.25/12-day month")
    check("Error" in a.api("/api/AddCredit/", amount=str(sot["MinimumInitialCredit"] - 1)), "AddCredit below MinimumInitialCredit is an Error")
    check("Error" in a.api("/api/AddCredit/", amount=str(sot["MaximumCredit"] + 1)), "AddCredit above MaximumCredit is an Error")
    check("Error" in a.api("/api/AddCredit/", amount="lots"), "a non-numeric amount is an Error")
    ac = a.api("/api/AddCredit/", amount="6000")
    check(ac["InitialInvoice"] is True and ac["AddedCredit"] == 6000 and ac["SellOfferTerms"] == sot, "AddCredit (new): fields and identical SellOfferTerms")
    check(decode(ac["Invoice"]).amount_msat == (fee + 6000) * 1000, "AddCredit (new): invoice is ActivationFee + amount")
    t0 = ac["Status"]["current_time"]
    dev_pay(control, cfg, ac["Invoice"])
    st = a.api("/api/getstatus/", InvoiceToWaitFor=ac["Invoice"])
    check(st["unpaid_invoice"] is None and st["start_time"] == t0, "start_time is the current_time of the first AddCredit answer")
    check(st["total_paid"] == fee + 6000 and st["NumberOfPayments"] == 1 and st["ActivationFee"] == fee, "total_paid, NumberOfPayments, ActivationFee")
    check(isinstance(st["current_time"], int) and st["Networks"] == [st["address"] + "/32"], "current_time integer, Networks the /32")
    check(credit_matches(st, rate, fee), "Credit and TimeRemaining as the AutoPay client computes them")
    top = a.api("/api/AddCredit/", amount="3000")
    check(top["InitialInvoice"] is False and "ActivationFee" not in top["SellOfferTerms"], "AddCredit (existing): no ActivationFee in SellOfferTerms")
    check(decode(top["Invoice"]).amount_msat == 3_000_000 and top["Status"]["NumberOfPayments"] == 1, "AddCredit (existing): invoice is the amount")
    dev_pay(control, cfg, top["Invoice"])
    st = a.api("/api/getstatus/", InvoiceToWaitFor=top["Invoice"])
    check(st["total_paid"] == fee + 9000 and st["NumberOfPayments"] == 2 and credit_matches(st, rate, fee), "top-up credited on the same ledger")
    check("Error" in a.api("/api/AddCredit/", amount=str(sot["MaximumCredit"])), "credit above MaximumCredit is an Error")
    # The same ledger seen through /v1.
    # /v1 needs the proof of key possession (PROTOCOL.md 3.1), made with the client's key.
    path = "/v1/rentals/" + a.pub.replace("+", "-").replace("/", "_")
    pk = a.session.get(base + "/v1/terms", verify=False).json()["proof_key"]
    auth = proof(base64.b64decode(str(a.key)), "GET", path, b"", pk)
    v1 = a.session.get(base + path, headers={"authorization": auth}, verify=False).json()
    check(v1["paid_until"] == st["start_time"] + round((st["total_paid"] - fee) / rate) or abs(v1["paid_until"] - (st["current_time"] + st["TimeRemaining"])) <= 1,
          "/v1 shows the same paid-until")
    # Lapse: 9,000 sat last about 11.4 days; 20 days on, about 6,800 sat are owed.
    advance(http_base, 20 * 86400)
    st = a.api("/api/getstatus/")
    check(st["state"] == "lapsed" and st["Credit"] < 0, "credit ran out: lapsed, negative Credit")
    owed = -st["Credit"]
    check("Error" in a.api("/api/AddCredit/", amount=str(max(sot["MinRegularPaymentSize"], int(owed) - 1))), "a top-up that does not cover the back payments is an Error")
    ok = a.api("/api/AddCredit/", amount=str(int(owed) + 1000))
    dev_pay(control, cfg, ok["Invoice"])
    st = a.api("/api/getstatus/", InvoiceToWaitFor=ok["Invoice"])
    check(st["state"] == "active" and st["TimeRemaining"] > 0, "back payments plus credit: active again")


def run_ipv6(control, cfg, base, http_base, fpr):
    """A host with an IPv6 pool: the original client's formats carry the /64 too."""
    c = Client(base, fpr)
    ac = c.api("/api/AddCredit/", amount="6000")
    dev_pay(control, cfg, ac["Invoice"])
    st = c.api("/api/getstatus/", InvoiceToWaitFor=ac["Invoice"])
    check(st["state"] == "active", "IPv6 host: AddCredit rental active")
    nets = st["Networks"]
    check(len(nets) == 2 and nets[0] == st["address"] + "/32" and nets[1].startswith("2001:db8:100:") and nets[1].endswith("/64"),
          "IPv6 host: Networks are the /32 and the /64")
    conf = c.api("/api/getconf/")
    check(set(conf) <= {"addresses", "dns", "mtu", "peers"}, "IPv6 host: getconf keys wireguard_tools accepts")
    text = wg_quick_file(c, conf)
    v6 = nets[1].split("/")[0] + "1/128"
    check(v6 in text and "::/0" in text and st["address"] + "/32" in text,
          "IPv6 host: from_dict gives a wg-quick file with both addresses and ::/0")


def customer(base, fpr, control, cfg, out):
    """One AddCredit rental paid through the dev backend; writes the wireguard_tools wg-quick file."""
    c = Client(base, fpr)
    ac = c.api("/api/AddCredit/", amount="6000")
    assert "Invoice" in ac, ac
    dev_pay(control, cfg, ac["Invoice"])
    st = c.api("/api/getstatus/", InvoiceToWaitFor=ac["Invoice"])
    assert st["unpaid_invoice"] is None, st
    with open(out, "w") as f:
        f.write(wg_quick_file(c, c.api("/api/getconf/")))
    os.chmod(out, 0o600)
    print(st["address"])


if __name__ == "__main__":
    if sys.argv[1] == "--customer":
        customer(*sys.argv[2:7])
    else:
        suite(sys.argv[1])
        suite(sys.argv[1], ipv6=True)
        print(f"\n{len(FAILED)} failed" if FAILED else "\nall protocol checks passed")
        sys.exit(1 if FAILED else 0)
