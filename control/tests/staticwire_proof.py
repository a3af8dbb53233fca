"""The proof of key possession of PROTOCOL.md section 3.1 for the Python tests (the web page's
browser test and the original client's protocol test): X25519 (RFC 7748, this module's own),
HKDF-SHA256 and HMAC-SHA256 from the standard library."""

import base64, hashlib, hmac, os, time


P25519 = 2**255 - 19


def x25519(k, u):
    """RFC 7748 X25519 of 32-byte scalar k and u-coordinate u ."""
    k = bytearray(k)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    k = int.from_bytes(k, "little")
    x1 = int.from_bytes(u, "little") & (2**255 - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        kt = (k >> t) & 1
        swap ^= kt
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = kt
        a, b = (x2 + z2) % P25519, (x2 - z2) % P25519
        aa, bb = a * a % P25519, b * b % P25519
        e = (aa - bb) % P25519
        c, d = (x3 + z3) % P25519, (x3 - z3) % P25519
        da, cb = d * a % P25519, c * b % P25519
        x3, z3 = (da + cb) ** 2 % P25519, x1 * (da - cb) ** 2 % P25519
        x2, z2 = aa * bb % P25519, e * (aa + 121665 * e) % P25519
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, P25519 - 2, P25519) % P25519).to_bytes(32, "little")


def proof(priv, method, path, body, proof_key):
    """The Authorization header of PROTOCOL.md section 3.1."""
    pub = x25519(priv, (9).to_bytes(32, "little"))
    server = base64.b64decode(proof_key)
    prk = hmac.new(b"StaticWire proof v1", x25519(priv, server), hashlib.sha256).digest()
    k = hmac.new(prk, pub + server + b"\x01", hashlib.sha256).digest()
    ts, nonce = int(time.time()), os.urandom(16)
    msg = f"{method}\n{path}\n{ts}\n{nonce.hex()}\n{hashlib.sha256(body).hexdigest()}"
    mac = hmac.new(k, msg.encode(), hashlib.sha256).digest()
    b = lambda x: base64.b64encode(x).decode()
    return f'StaticWire-Proof key="{b(pub)}", ts="{ts}", nonce="{b(nonce)}", mac="{b(mac)}"'


def pubkey(priv):
    """The X25519 public key of a 32-byte private key."""
    return x25519(priv, (9).to_bytes(32, "little"))


if __name__ == "__main__":
    # For shell scripts that call /v1 with curl (ops/test-packages.sh):
    #   staticwire_proof.py PRIVATE_B64 pub                    -> the public key, base64
    #   staticwire_proof.py PRIVATE_B64 METHOD TARGET BODY URL -> the Authorization value
    import json, sys, urllib.request
    priv = base64.b64decode(sys.argv[1])
    if sys.argv[2] == "pub":
        print(base64.b64encode(pubkey(priv)).decode())
    else:
        method, target, body, url = sys.argv[2:6]
        with urllib.request.urlopen(url + "/v1/terms", timeout=10) as r:
            proof_key = json.load(r)["proof_key"]
        print(proof(priv, method, target, body.encode(), proof_key))
