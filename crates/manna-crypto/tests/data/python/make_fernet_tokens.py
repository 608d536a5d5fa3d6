#!/usr/bin/env python3
"""Makes Fernet tokens with Python's `cryptography` for manna-crypto's tests.

Writes fernet_tokens.json next to this script:
  keys:   two Fernet keys (fixed, test-only) k1, k2 as Python prints them
  tokens: Fernet(k1).encrypt(...) of assorted plaintexts (empty, ASCII,
          UTF-8, binary, 1000 bytes), and MultiFernet([k2, k1]).rotate(...)
          of k1 tokens (re-encrypted under k2, original timestamp kept).
Plaintexts are stored base64 (standard alphabet) so binary values survive JSON.

Run:  python3 make_fernet_tokens.py   (needs `pip install cryptography`)
Tokens use random IVs and the current time, so each run writes different
tokens; the checked-in file is one run's output (see PROVENANCE).
"""
import base64
import json
import os
import sys

import cryptography
from cryptography.fernet import Fernet, MultiFernet

K1 = b"cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="  # the Fernet spec's test key
K2 = base64.urlsafe_b64encode(bytes(range(100, 132)))

PLAINTEXTS = [
    b"",
    b"access-sandbox-8f2c1e4a-5d6b-4c3e-9a7f-1b2c3d4e5f60",
    "søren ☃ 東京".encode("utf-8"),
    bytes(range(256)),
    b"x" * 1000,
]


def main() -> None:
    f1, f2 = Fernet(K1), Fernet(K2)
    multi = MultiFernet([f2, f1])
    cases = []
    for pt in PLAINTEXTS:
        tok = f1.encrypt(pt)
        cases.append({"how": "Fernet(k1).encrypt", "key": "k1", "token": tok.decode(),
                      "plaintext_b64": base64.b64encode(pt).decode()})
        rotated = multi.rotate(tok)
        assert f2.decrypt(rotated) == pt
        cases.append({"how": "MultiFernet([k2, k1]).rotate(Fernet(k1) token)", "key": "k2",
                      "token": rotated.decode(), "plaintext_b64": base64.b64encode(pt).decode()})
    out = {
        "generator": f"python {sys.version.split()[0]}, cryptography {cryptography.__version__}",
        "keys": {"k1": K1.decode(), "k2": K2.decode()},
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fernet_tokens.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=2)
        fh.write("\n")
    print(f"wrote {len(cases)} tokens to {path}")


if __name__ == "__main__":
    main()
