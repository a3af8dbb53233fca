#!/usr/bin/env python3
"""Admission, read-out and memory of a WireGuard server at scale, through its UAPI socket.

usage: scale.py SOCKET PID N MODE    MODE: one-set | per-set
Admits N peers (random public keys, one IPv6 /128 each from 2001:db8::/32), then reads the whole
configuration back (get=1). Prints one line: key=value figures. Bounded: N peers, then stops.
"""
import os, socket, sys, time

sock_path, pid, n, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reply(s, buf=bytearray()):
    seen = 0  # search only what arrived since the last look: replies reach 150 MB
    while True:
        i = buf.find(b"\n\n", max(0, seen - 1))
        if i >= 0:
            r = bytes(buf[: i + 2])
            del buf[: i + 2]
            return r
        seen = len(buf)
        chunk = s.recv(1 << 20)
        if not chunk:
            raise SystemExit("server closed the UAPI socket")
        buf += chunk


def peer(i):
    return "public_key=%s\nallowed_ip=2001:db8:%x:%x::1/128\n" % (
        os.urandom(32).hex(), (i >> 16) & 0xFFFF, i & 0xFFFF)


def connect():
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock_path)
    return c


s = connect()


def request(payload):
    """One request; servers that answer one request per connection (boringtun-cli) get a new
    connection for the next."""
    global s
    for attempt in range(2):
        try:
            s.sendall(payload)
            return reply(s)
        except (BrokenPipeError, ConnectionResetError, SystemExit):
            if attempt:
                return b"errno=closed"
            s.close()
            s = connect()


assert b"errno=0" in request(b"set=1\nprivate_key=%s\nlisten_port=51820\n\n" % os.urandom(32).hex().encode())
rss_before = rss_mib()
errors = 0
if mode == "one-set":
    body = "".join(peer(i) for i in range(n))
    t0 = time.monotonic()
    r = request(b"set=1\n" + body.encode() + b"\n")
    admit = time.monotonic() - t0
    errors += b"errno=0" not in r
    del body
else:
    lines = [("set=1\n" + peer(i) + "\n").encode() for i in range(n)]
    t0 = time.monotonic()
    for req in lines:
        errors += b"errno=0" not in request(req)
    admit = time.monotonic() - t0
    del lines
time.sleep(1.0)
rss_after = rss_mib()
t0 = time.monotonic()
got = request(b"get=1\n\n")
get_s = time.monotonic() - t0
peers = got.count(b"public_key=")
print(f"peers={n} mode={mode} refused={errors} admit_s={admit:.2f} "
      f"per_peer_us={admit / n * 1e6:.1f} get_s={get_s:.2f} get_peers={peers} "
      f"rss_idle_mib={rss_before:.0f} rss_mib={rss_after:.0f} "
      f"bytes_per_peer={(rss_after - rss_before) * 1048576 / n:.0f}")
