"""docs/format.md is the whole spec: an independent Python implementation written
from it (`crates/manna-crypto/tests/data/format/envelope_v1.py`) agrees with the
page's tables, and the binding (the Rust implementation) agrees with both, on the
tables and on many damaged values."""
import random

import pytest

import manna
from conftest import REPO, independent_implementation

FORMAT_MD = REPO / "docs" / "format.md"


@pytest.fixture(scope="module")
def spec():
    return independent_implementation()


@pytest.fixture(scope="module")
def page():
    return FORMAT_MD.read_text(encoding="utf-8")


def test_independent_implementation_checks_every_table(spec):
    spec.check(str(FORMAT_MD))


def test_binding_classifies_as_the_table_says(spec, page):
    rows = spec.parse_table(page, "classification")
    assert len(rows) >= 20
    for expected, value in rows:
        assert manna.inspect(value) == expected, value


def test_binding_reads_key_spellings_as_the_table_says(spec, page):
    rows = spec.parse_table(page, "key-spellings")
    assert len(rows) >= 10
    for expected, spelling in rows:
        if expected == "invalid":
            with pytest.raises(manna.KeyConfigError):
                manna.Keyring(spelling)
        else:
            reference = spec.key_id(bytes.fromhex(expected))
            assert manna.Keyring(spelling).primary_key_id == reference, spelling


def damaged(value: str, rng: random.Random) -> str:
    """One random damage of the kinds storage and people do."""
    alphabet = "ABCgmn019az-_=+/:. \t\n\r\x00\x07\u00e9\u00a0"
    i = rng.randrange(len(value) + 1)
    kind = rng.randrange(7)
    if kind == 0 and value:  # replace a character
        i = min(i, len(value) - 1)
        return value[:i] + rng.choice(alphabet) + value[i + 1:]
    if kind == 1:  # insert one
        return value[:i] + rng.choice(alphabet) + value[i:]
    if kind == 2:  # truncate
        return value[:i]
    if kind == 3:  # surrounding whitespace, as CHAR(n) or a paste adds it
        return rng.choice(["", " ", "\n"]) + value + rng.choice([" ", "\n", "  "])
    if kind == 4:  # padding
        return value.rstrip("=") + "=" * rng.randrange(4)
    if kind == 5:  # another version
        return "mn" + str(rng.choice([0, 2, 10, 99, 123456789, 1234567890])) + value[3:]
    return value.swapcase() if rng.random() < 0.5 else value[:20] + value[20:].upper()


def test_binding_and_spec_agree_on_damaged_values(spec, page):
    seeds = [v for _, v in spec.parse_table(page, "classification")]
    seeds += [v["token"] for v in spec.parse_vectors(page) if v["form"] == "text"]
    rng = random.Random(20261130)
    checked = 0
    for _ in range(20000):
        value = rng.choice(seeds)
        for _ in range(rng.randrange(1, 3)):
            value = damaged(value, rng)
        assert manna.inspect(value) == spec.inspect(value), repr(value)
        checked += 1
    assert checked == 20000


def test_bytes_are_decrypted_as_bytes_never_through_lossy_text(spec, page):
    binary = [v for v in spec.parse_vectors(page) if v["form"] == "binary"]
    assert binary
    for v in binary:
        keyring = manna.Keyring(v["key_base64"])
        value = bytes.fromhex(v["value_hex"])
        aad = bytes.fromhex(v["aad_hex"])
        assert keyring.decrypt_bytes(value, aad) == bytes.fromhex(v["plaintext_hex"])
    # Non-UTF-8 bytes are `unknown` (§4), not plaintext, even where plaintext is accepted.
    lenient = manna.Keyring(manna.generate_key(), accept_plaintext=True)
    with pytest.raises(manna.DecryptionError) as err:
        lenient.decrypt_bytes(b"caf\xe9")
    assert err.value.kind == "unknown_format"
