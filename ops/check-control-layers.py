#!/usr/bin/env python3
"""The control's import graph: no cycle, and every import points down the layers.

Reads every `crate::` and `super::` path in control/src (test code left out: `*_tests.rs`,
`proptests.rs`, `testkit.rs`, `proving.rs` and `#[cfg(test)] mod tests` blocks), maps each to
the module it names, and checks the graph between modules. A module directory counts as one module, except
`metrics`, whose two halves sit in different layers. Run: python3 ops/check-control-layers.py
"""

import os
import re
import sys

SRC = os.environ.get(
    "CONTROL_SRC", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "control", "src")
)

# Lower number = lower layer. An import may point to its own layer or below, never above.
LAYERS = {
    # leaves
    "config": 0, "network": 0, "metrics::events": 0, "sql": 0, "clock": 0, "limits": 0,
    "ledger": 0, "secrets": 0, "datadir": 0,
    # stores and adapters
    "db": 1, "store": 1, "alloc": 1, "freespace": 1, "unpaid": 1, "writer": 1, "holds": 1, "lightning": 1, "feed": 1, "deadlines": 1, "lease": 1,
    "prefixes": 1, "backup": 1, "migrate": 1, "rdns": 1,
    # the service
    "service": 2,
    # the loop and the faces
    "run": 3, "metrics": 3, "http": 3, "compat": 3, "web": 3, "https": 3, "metrics::scrape": 3,
    # start-up: builds the service and serves it through the loop and the faces
    "app": 4,
    # the library root and the binary (the command line, messages, exit status)
    "lib": 5, "main": 5,
}
SPLIT = {"metrics"}  # directories whose files are separate modules
TEST_FILES = re.compile(r"(_tests|proptests|testkit|proving|uapi_fake)\.rs$")


def module_of(rel):
    """control/src-relative file path -> graph node."""
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts[0] in SPLIT and len(parts) > 1:
        return "::".join(parts[:2])
    return parts[0]


def strip_comments(text):
    """Line comments and doc comments name modules without importing them."""
    return re.sub(r"//[^\n]*", "", text)


def expand_groups(text):
    """`crate::{a, b::c}` -> `crate::a crate::b::c` (one level of braces)."""

    def one(m):
        return " ".join(f"{m.group(1)}::{p.strip()}" for p in m.group(2).split(",") if p.strip())

    return re.sub(r"\b(crate|super|staticwire_control)::\{([^{}]*)\}", one, text)


def strip_tests(text):
    m = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests\b", text, re.M)
    text = text[: m.start()] if m else text
    # `#[cfg(test)] mod foo;` declarations and single test-only items
    return re.sub(r"#\[cfg\(test\)\]\s*\n[^\n]*\n", "\n", text)


def main():
    files = {}
    for root, _, names in os.walk(SRC):
        for n in names:
            if n.endswith(".rs"):
                rel = os.path.relpath(os.path.join(root, n), SRC).replace(os.sep, "/")
                if not TEST_FILES.search(rel):
                    files[rel] = expand_groups(
                        strip_tests(strip_comments(open(os.path.join(root, n)).read()))
                    )
    nodes = {module_of(r) for r in files}
    edges = {}
    for rel, text in files.items():
        me = module_of(rel)
        mod_path = rel[:-3].split("/")
        if mod_path[-1] in ("mod", "lib", "main"):
            mod_path = mod_path[:-1]
        # `staticwire_control::` in main.rs is the library, i.e. `crate::` seen from outside.
        for m in re.finditer(r"\b(crate|super|staticwire_control)((?:::\w+)+)", text):
            segs = m.group(2).split("::")[1:]
            if m.group(1) == "super":
                segs = mod_path[:-1] + segs
            target = None
            for k in (2, 1):
                cand = "::".join(segs[:k])
                if len(segs) >= k and cand in nodes:
                    target = cand
                    break
            if target and target != me:
                edges.setdefault(me, set()).add(target)
    # cycles: Tarjan's strongly connected components
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    bad = 0
    for c in sccs:
        print("cycle:", " <-> ".join(c))
        bad += 1
    for v in sorted(nodes):
        if v not in LAYERS:
            print(f"{v}: not in a layer (add it to LAYERS)")
            bad += 1
    for v, ws in sorted(edges.items()):
        for w in sorted(ws):
            if LAYERS.get(w, -1) > LAYERS.get(v, 99):
                print(f"upward import: {v} (layer {LAYERS[v]}) -> {w} (layer {LAYERS[w]})")
                bad += 1
    if "-v" in sys.argv:
        for v, ws in sorted(edges.items(), key=lambda e: (LAYERS.get(e[0], 9), e[0])):
            print(f"{v} -> {', '.join(sorted(ws))}")
    n_edges = sum(len(w) for w in edges.values())
    print(f"{len(nodes)} modules, {n_edges} imports, {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
