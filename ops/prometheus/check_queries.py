#!/usr/bin/env python3
"""Runs every expression of the Grafana dashboard and of the alert rules against a live
Prometheus through its query API (used by ops/test-ops.sh).

  check_queries.py PROM_URL DASHBOARD_JSON RULES_YML [--alerts-only] [--firing ALERT ...]

Every dashboard expression must return at least one series. Every alert expression must run,
and every metric it names must have series (but for FEATURE_METRICS, which exist only with an
optional feature configured; an alert's condition is false on a healthy host, so its full
expression is only required to return series for the alerts named after --firing, which the
caller has made true). With --alerts-only (after stopping a target, whose
series go stale) only the alert expressions are run. Exits 1 with the list of failures."""
import json
import re
import sys
import urllib.parse
import urllib.request

RATE_INTERVAL = "30s"  # what $__rate_interval becomes at the test's 1 s scrape interval

# Metrics that exist only when an optional feature is configured, and why they may have no
# series in a run without it. Their alerts' expressions still run (and promtool's rule tests
# cover their logic with series of their own).
FEATURE_METRICS = {
    "staticwire_control_rdns_out_of_sync": "a gauge per reverse zone: [rdns] is off in this run",
}


def query(url, expr):
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def dashboard_exprs(path):
    out = []
    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
            walk(p.get("panels", []))
    walk(json.load(open(path))["panels"])
    return out


def rule_exprs(path):
    """(alert, expr) from the rules file: a small reader for its own layout (no PyYAML)."""
    out, alert, lines = [], None, open(path).read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- alert: (\S+)", line)
        if m:
            alert = m.group(1)
        m = re.match(r"(\s*)expr: (.*)", line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|", ">"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i].strip())
                    i += 1
                out.append((alert, " ".join(body)))
                continue
            out.append((alert, rest))
        i += 1
    return out


METRIC = re.compile(r"\b((?:staticwire|wireguard)_[a-z0-9_]+|up)\b(?=\s*[{\[)]|\s*(?:==|/|<|>|$))")


def main():
    url, dash, rules = sys.argv[1:4]
    firing = set(sys.argv[sys.argv.index("--firing") + 1:]) if "--firing" in sys.argv else set()
    failures = []
    exprs = dashboard_exprs(dash)
    for title, expr in ([] if "--alerts-only" in sys.argv else exprs):
        e = expr.replace("$__rate_interval", RATE_INTERVAL)
        try:
            n = len(query(url, e))
        except Exception as err:  # noqa: BLE001 - report every failure, not the first
            failures.append(f"dashboard {title!r}: {err}")
            continue
        print(f"  {n:3d} series  dashboard {title}: {e}")
        if n == 0:
            failures.append(f"dashboard {title!r}: no series for {e}")
    alerts = rule_exprs(rules)
    seen = set()
    for alert, expr in alerts:
        seen.add(alert)
        try:
            n = len(query(url, expr))
        except Exception as err:  # noqa: BLE001
            failures.append(f"alert {alert}: {err}")
            continue
        names = sorted(set(METRIC.findall(expr)))
        if not names:
            failures.append(f"alert {alert}: no metric found in {expr}")
        for name in ([] if "--alerts-only" in sys.argv else names):
            sel = 'up{job=~"staticwire-.*"}' if name == "up" else name
            if not query(url, sel):
                if name in FEATURE_METRICS:
                    print(f"        (alert {alert}: {name} has no series: {FEATURE_METRICS[name]})")
                    continue
                failures.append(f"alert {alert}: metric {name} has no series")
        print(f"  {n:3d} series  alert {alert} ({', '.join(names)})")
        if alert in firing and n == 0:
            failures.append(f"alert {alert}: made true by the test, but its expression returned nothing")
    for a in firing - seen:
        failures.append(f"alert {a} is not in {rules}")
    if len(exprs) < 10 or len(alerts) < 9:
        failures.append(f"only {len(exprs)} dashboard and {len(alerts)} alert expressions found")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"  all {len(exprs)} dashboard and {len(alerts)} alert expressions answered")


if __name__ == "__main__":
    main()
