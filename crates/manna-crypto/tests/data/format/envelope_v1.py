#!/usr/bin/env python3
"""An independent Python implementation of manna's envelope format v1,
written from docs/format.md alone, with Python's `cryptography` AESGCM.

  python3 envelope_v1.py generate          print the test-vector blocks for docs/format.md
  python3 envelope_v1.py check [FORMAT_MD] recompute and decrypt every vector in docs/format.md
                                           (default: ../../../../../docs/format.md from here)
  python3 envelope_v1.py decrypt KEY_B64 AAD TOKEN   decrypt a text envelope (cross-language check)

Needs `pip install cryptography`.
"""
import base64
import hashlib
import hmac
import os
import re
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ID_LABEL = b"manna-crypto/v1/aes256gcm-key-id"


def key_id(key: bytes) -> str:
    return hmac.new(key, ID_LABEL, hashlib.sha256).digest()[:8].hex()


def header(key: bytes, binary: bool = False) -> bytes:
    return b"mn1:" + key_id(key).encode("ascii") + (b"." if binary else b":")


def seal(key: bytes, nonce: bytes, aad: bytes, plaintext: bytes, binary: bool = False):
    h = header(key, binary)
    body = nonce + AESGCM(key).encrypt(nonce, plaintext, h + aad)  # ciphertext || tag
    if binary:
        return h + body
    return (h + base64.urlsafe_b64encode(body).rstrip(b"=")).decode("ascii")


def open_text(keys, token: str, aad: bytes) -> bytes:
    m = re.fullmatch(r"mn1:([0-9a-f]{16}):([A-Za-z0-9_-]+)", token)
    if not m:
        raise ValueError("not an envelope v1 text token")
    by_id = {key_id(k): k for k in keys}
    key = by_id.get(m.group(1))
    if key is None:
        raise KeyError(f"unknown key id {m.group(1)}")
    b64 = m.group(2)
    body = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    if len(body) < 28:
        raise ValueError("too short")
    nonce, ct_tag = body[:12], body[12:]
    return AESGCM(key).decrypt(nonce, ct_tag, token[:21].encode("ascii") + aad)


def open_binary(keys, value: bytes, aad: bytes) -> bytes:
    if len(value) < 21 + 28 or value[:4] != b"mn1:" or value[20:21] != b".":
        raise ValueError("not an envelope v1 binary value")
    by_id = {key_id(k): k for k in keys}
    key = by_id[value[4:20].decode("ascii")]
    return AESGCM(key).decrypt(value[21:33], value[33:], value[:21] + aad)


VECTORS = [
    # (name, key, nonce, aad, plaintext, binary)
    ("empty plaintext, empty AAD", bytes(range(32)), bytes(range(12)), b"", b"", False),
    ("column AAD", bytes(range(32)), bytes(range(1, 13)),
     b"plaid_items.access_token", b"access-sandbox-123", False),
    ("row AAD, binary plaintext", hashlib.sha256(b"manna format vector key 2").digest(),
     b"\xff" * 12, b"users.ssn:42", bytes(range(256))[:100], False),
    ("binary form of the column-AAD vector", bytes(range(32)), bytes(range(1, 13)),
     b"plaid_items.access_token", b"access-sandbox-123", True),
]


def generate() -> None:
    for i, (name, key, nonce, aad, pt, binary) in enumerate(VECTORS, 1):
        out = seal(key, nonce, aad, pt, binary)
        print("```text")
        print(f"vector        = {i} ({name})")
        print(f"form          = {'binary' if binary else 'text'}")
        print(f"key_hex       = {key.hex()}")
        print(f"key_base64    = {base64.b64encode(key).decode()}")
        print(f"key_id        = {key_id(key)}")
        print(f"nonce_hex     = {nonce.hex()}")
        print(f"aad_hex       = {aad.hex()}")
        print(f"plaintext_hex = {pt.hex()}")
        print(f"gcm_aad_hex   = {(header(key, binary) + aad).hex()}")
        if binary:
            print(f"value_hex     = {out.hex()}")
        else:
            print(f"token         = {out}")
        print("```")
        print()


def parse_vectors(text: str):
    vectors = []
    for block in re.findall(r"```text\n(vector .*?)```", text, re.S):
        fields = {}
        for line in block.strip().splitlines():
            k, _, v = line.partition("=")
            fields[k.strip()] = v.strip()
        vectors.append(fields)
    return vectors


def check(path: str) -> None:
    with open(path) as fh:
        vectors = parse_vectors(fh.read())
    assert len(vectors) >= 4, f"expected at least 4 vectors in {path}, found {len(vectors)}"
    for v in vectors:
        key = bytes.fromhex(v["key_hex"])
        assert base64.b64decode(v["key_base64"]) == key, v["vector"]
        assert key_id(key) == v["key_id"], v["vector"]
        nonce, aad, pt = (bytes.fromhex(v[k]) for k in ("nonce_hex", "aad_hex", "plaintext_hex"))
        binary = v["form"] == "binary"
        assert (header(key, binary) + aad).hex() == v["gcm_aad_hex"], v["vector"]
        if binary:
            value = bytes.fromhex(v["value_hex"])
            assert seal(key, nonce, aad, pt, True) == value, v["vector"]
            assert open_binary([key], value, aad) == pt, v["vector"]
        else:
            assert seal(key, nonce, aad, pt) == v["token"], v["vector"]
            assert open_text([key], v["token"], aad) == pt, v["vector"]
            try:
                open_text([key], v["token"], aad + b"x")
                raise AssertionError("wrong AAD accepted")
            except Exception as e:  # InvalidTag
                assert type(e).__name__ == "InvalidTag", e
    print(f"{len(vectors)} vectors in {path}: OK")


def main() -> None:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "check"
    if cmd == "generate":
        generate()
    elif cmd == "check":
        here = os.path.dirname(os.path.abspath(__file__))
        default = os.path.join(here, "..", "..", "..", "..", "..", "docs", "format.md")
        check(sys.argv[2] if len(sys.argv) > 2 else os.path.normpath(default))
    elif cmd == "decrypt":
        key = base64.b64decode(sys.argv[2].replace("-", "+").replace("_", "/") + "==")[:32]
        sys.stdout.buffer.write(open_text([key], sys.argv[4], sys.argv[3].encode()))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
