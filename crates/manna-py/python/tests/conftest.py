"""Shared fixtures. The tests use the installed `manna` package (built from
this crate by maturin) and Python's `cryptography` as the legacy peer."""

import importlib.util
import os
import pathlib
import shlex

import pytest

import manna

ENV_VARS = (
    "MANNA_ENCRYPTION_KEY_AES256",
    "MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS",
    "MANNA_ENCRYPTION_KEY",
    "MANNA_ENCRYPTION_FERNET_UNTIL",
)

#: The repository root (tests read docs/format.md and the independent
#: Python implementation of the format from it).
REPO = pathlib.Path(__file__).resolve().parents[4]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Every test starts with no manna key in the environment and no cached
    default keyring, and leaves none behind."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    manna.set_default_keyring(None)
    yield monkeypatch
    manna.set_default_keyring(None)


@pytest.fixture
def key():
    return manna.generate_key()


@pytest.fixture
def keyring(key):
    return manna.Keyring(key)


def manna_cli():
    """The command that runs this checkout's ``manna`` CLI, as a list: from
    ``MANNA_CLI`` (``cargo xtask test`` sets ``cargo run --quiet -p xtask --``;
    a built binary's path works too). Without it the calling test fails,
    saying how to set it: a cross-language test never passes by skipping."""
    command = os.environ.get("MANNA_CLI")
    if not command:
        pytest.fail("MANNA_CLI is not set (e.g. MANNA_CLI='cargo run --quiet -p xtask --'); "
                    "`cargo xtask test` sets it")
    return shlex.split(command)


def independent_implementation():
    """The envelope codec written from docs/format.md alone, on Python's
    `cryptography` (crates/manna-crypto/tests/data/format/envelope_v1.py)."""
    path = REPO / "crates" / "manna-crypto" / "tests" / "data" / "format" / "envelope_v1.py"
    spec = importlib.util.spec_from_file_location("envelope_v1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
