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
import json
import re
import sys
import unicodedata

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ID_LABEL = b"manna-crypto/v1/aes256gcm-key-id"
FERNET_ID_LABEL = b"manna-crypto/v1/fernet-key-id"


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


def parse_key(text: str) -> bytes:
    """A key string (AES or Fernet) to its 32 bytes, by the steps of §1."""
    s = text.strip(" \t\n\f\r").rstrip("=").replace("-", "+").replace("_", "/")
    if not re.fullmatch(r"[A-Za-z0-9+/]*", s) or len(s) % 4 == 1:
        raise ValueError("invalid base64")
    raw = base64.b64decode(s + "=" * (-len(s) % 4))
    if base64.b64encode(raw).decode("ascii").rstrip("=") != s:
        raise ValueError("not canonical")
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes, not 32")
    return raw


def b64url_canonical(s: str):
    """Canonical unpadded base64url to bytes, or None."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", s) or len(s) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    return raw if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") == s else None


def fernet_length(n: int) -> bool:
    return n >= 73 and (n - 57) % 16 == 0


def damaged(value: str) -> bool:
    """The first three bullets of §4 rule 3, counted in UTF-8 bytes."""
    b = value.encode("utf-8")
    if value.startswith("gAAAAA"):
        return True
    if len(b) > 21 and b[20:21] in (b":", b".") and re.fullmatch(rb"[0-9a-fA-F]{16}", b[4:20]):
        return True
    odd = len(re.sub(rb"[A-Za-z0-9_=-]", b"", b))
    stripped = len(b.rstrip(b"="))
    padded = any(fernet_length(n) and 4 * -(-n // 3) == len(b) for n in range(len(b) * 3 // 4 + 1))
    unpadded = stripped % 4 != 1 and fernet_length(stripped * 3 // 4)
    return odd <= 1 and (padded or unpadded)


def inspect(value: str) -> str:
    """The format of a text value, by the rules of §4, in their order."""
    m = re.match(r"mn([0-9]{1,9}):", value)
    if m:  # rule 1
        t = re.fullmatch(r"mn1:([0-9a-f]{16}):(.*)", value, re.S)
        if m.group(1) == "1" and t:
            body = b64url_canonical(t.group(2))
            if body is not None and len(body) >= 28:
                return f"aes256gcm({t.group(1)})"
        return "unknown"
    if value.startswith("gAAAA"):  # rule 2
        raw = b64url_canonical(value.rstrip("="))
        if raw is not None and raw[0] == 0x80 and fernet_length(len(raw)):
            return "fernet"
    if damaged(value):  # rule 3
        return "unknown"
    trimmed = value.strip(" \t\n\f\r")
    if trimmed != value and (re.match(r"mn[0-9]{1,9}:", trimmed) or damaged(trimmed)
                             or inspect(trimmed) == "fernet"):
        return "unknown"
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value):  # rule 4
        return "unknown"
    return "plaintext"  # rule 5


def parse_table(text: str, name: str):
    """The (expected, value) lines of a docs/format.md table block."""
    m = re.search(r"```text\n" + re.escape(name) + r"\n(.*?)```", text, re.S)
    assert m, f"no {name} table"
    rows = []
    for line in m.group(1).splitlines():
        if line.strip():
            expected, _, value = line.partition(" ")
            rows.append((expected, json.loads(value)))
    return rows


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
    ("UTF-8 text AAD, as `--aad Zürich`", bytes(range(32)), bytes(range(2, 14)),
     "Zürich".encode("utf-8"), b"gr\xc3\xbcezi", False),
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
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    vectors = parse_vectors(text)
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
    spellings = parse_table(text, "key-spellings")
    for expected, spelling in spellings:
        try:
            got = parse_key(spelling).hex()
        except ValueError:
            got = "invalid"
        assert got == expected, (spelling, got)
    classification = parse_table(text, "classification")
    for expected, value in classification:
        assert inspect(value) == expected, (value, inspect(value))
    fernet_id = hmac.new(bytes(range(32)), FERNET_ID_LABEL, hashlib.sha256).digest()[:8].hex()
    assert f"it is\n`{fernet_id}`" in text, fernet_id
    print(f"{len(vectors)} vectors, {len(spellings)} key spellings and "
          f"{len(classification)} classifications in {path}: OK")


def main() -> None:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "check"
    if cmd == "generate":
        generate()
    elif cmd == "check":
        here = os.path.dirname(os.path.abspath(__file__))
        default = os.path.join(here, "..", "..", "..", "..", "..", "docs", "format.md")
        check(sys.argv[2] if len(sys.argv) > 2 else os.path.normpath(default))
    elif cmd == "decrypt":
        key = parse_key(sys.argv[2])
        sys.stdout.buffer.write(open_text([key], sys.argv[4], sys.argv[3].encode()))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
