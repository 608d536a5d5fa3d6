"""Tokens cross languages both ways.

- Rust → Python: the test vectors of docs/format.md (made and checked by
  the Rust test `manna-crypto/tests/it/format_vectors.rs`) decrypt here.
- Python → independent Python: tokens made by the binding decrypt with the
  implementation written from docs/format.md alone
  (`crates/manna-crypto/tests/data/format/envelope_v1.py`, on `cryptography`).
- Python ↔ Rust CLI: with `MANNA_CLI` set to a command running the CLI
  (`.ci/run` sets `cargo run --quiet -p xtask --`), tokens made by the
  binding decrypt with the CLI's `decrypt`, and the CLI's `encrypt` tokens
  decrypt here. Without it those two tests fail, saying how to set it.
"""

import base64
import os
import re
import subprocess

import pytest

import manna
from conftest import REPO, independent_implementation, manna_cli

AAD = "plaid_items.access_token"


def format_vectors():
    text = (REPO / "docs" / "format.md").read_text()
    blocks = re.findall(r"```text\n(vector .*?)```", text, re.S)
    vectors = []
    for block in blocks:
        fields = {}
        for line in block.strip().splitlines():
            name, _, value = line.partition("=")
            fields[name.strip()] = value.strip()
        vectors.append(fields)
    assert len(vectors) >= 4, "docs/format.md lost its test vectors"
    return vectors


def test_rust_format_vectors_decrypt_in_python():
    checked = 0
    for v in format_vectors():
        if v["form"] != "text":
            continue
        keyring = manna.Keyring(v["key_base64"])
        assert keyring.primary_key_id == v["key_id"]
        aad = bytes.fromhex(v["aad_hex"])
        assert keyring.decrypt_bytes(v["token"], aad) == bytes.fromhex(v["plaintext_hex"])
        assert manna.inspect(v["token"]) == f"aes256gcm({v['key_id']})"
        checked += 1
    assert checked >= 3


def test_binding_tokens_decrypt_with_the_independent_implementation():
    envelope_v1 = independent_implementation()
    key = manna.generate_key()
    keyring = manna.Keyring(key)
    raw_key = base64.b64decode(key)
    assert envelope_v1.key_id(raw_key) == keyring.primary_key_id
    for plaintext in (b"", b"access-sandbox-123", os.urandom(1000)):
        token = keyring.encrypt(plaintext, AAD)
        assert envelope_v1.open_text([raw_key], token, AAD.encode()) == plaintext
    # and the other way: the independent implementation's tokens decrypt here
    token = envelope_v1.seal(raw_key, os.urandom(12), AAD.encode(), b"from-python")
    assert keyring.decrypt(token, AAD) == "from-python"


def run_cli(args, key, stdin):
    env = dict(os.environ, MANNA_ENCRYPTION_KEY_AES256=key)
    done = subprocess.run(manna_cli() + args, input=stdin, capture_output=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def test_binding_tokens_decrypt_with_the_rust_cli():
    key = manna.generate_key()
    token = manna.Keyring(key).encrypt(b"made-in-python\x00\xff", AAD)
    assert run_cli(["decrypt", "--aad", AAD], key, token.encode()) == b"made-in-python\x00\xff"


def test_rust_cli_tokens_decrypt_in_python():
    key = manna.generate_key()
    token = run_cli(["encrypt", "--aad", AAD], key, b"made-in-rust").decode().strip()
    assert manna.inspect(token) == f"aes256gcm({manna.Keyring(key).primary_key_id})"
    assert manna.Keyring(key).decrypt(token, AAD) == "made-in-rust"
    with pytest.raises(manna.DecryptionError):
        manna.Keyring(key).decrypt(token, "users.email")
