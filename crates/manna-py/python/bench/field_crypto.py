#!/usr/bin/env python3
"""Per-field cost of the Python binding, printed like the Python application's
field-crypto loop on `cryptography` (`crypto_peer.py`, not in this repository;
see docs/performance.md: ns/op, same sizes and loop) so the two run side by side:

    python crates/manna-py/python/bench/field_crypto.py 64 100000
    python3 "$CRYPTO_PEER" 64 100000    # CRYPTO_PEER=/path/to/crypto_peer.py

Needs the binding installed in release mode (`pip install ./crates/manna-py`).
"""
import os
import sys
import time

import manna

size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
pt = os.urandom(size)
aad = b"plaid_items.access_token:42"
keyring = manna.Keyring(manna.generate_key(), fernet=[manna.generate_fernet_key()])


def bench(name, fn):
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    dt = (time.perf_counter() - t) / n * 1e9
    print(f"{name:28s} {dt:9.0f} ns/op")


token = keyring.encrypt(pt, aad)
bench("manna_encrypt", lambda: keyring.encrypt(pt, aad))
bench("manna_decrypt_bytes", lambda: keyring.decrypt_bytes(token, aad))
bench("manna_round_trip", lambda: keyring.decrypt_bytes(keyring.encrypt(pt, aad), aad))
