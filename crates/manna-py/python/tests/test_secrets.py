"""No key and no plaintext in any exception text or repr."""

import base64

import pytest
from cryptography.fernet import Fernet

import manna

PLAINTEXT = "tok-very-secret-plaintext-4242"


def assert_clean(text, *secrets):
    for secret in secrets:
        assert secret not in text, "a secret leaked into a message"


def test_repr_shows_key_ids_only(key):
    fkey = Fernet.generate_key().decode()
    old = manna.generate_key()
    keyring = manna.Keyring(key, previous=[old], fernet=[fkey])
    text = repr(keyring) + str(keyring)
    assert keyring.primary_key_id in text
    assert keyring.decrypt_only_key_ids[0] in text
    assert keyring.fernet_key_ids[0] in text
    assert_clean(text, key, old, fkey, key.rstrip("="), old.rstrip("="), fkey.rstrip("="))


def test_decryption_errors_hold_no_plaintext_or_key(key):
    keyring = manna.Keyring(key)
    token = keyring.encrypt(PLAINTEXT, "a.b")
    failures = []
    for args in ((token, "a.c"), (token[:-2] + "AA", "a.b"), (token[:30], "a.b"), (PLAINTEXT, None)):
        with pytest.raises(manna.DecryptionError) as err:
            keyring.decrypt(*args)
        failures.append(err.value)
    with pytest.raises(manna.DecryptionError) as err:
        manna.Keyring(manna.generate_key()).decrypt(token, "a.b")
    failures.append(err.value)
    for failure in failures:
        text = str(failure) + repr(failure) + repr(failure.args)
        assert_clean(text, PLAINTEXT, key)
        assert isinstance(failure.kind, str)


def test_invalid_keys_are_not_echoed(clean_env, tmp_path):
    bad = [
        base64.b64encode(b"k" * 31).decode(),  # wrong length
        "c2VjcmV0LWtleS1tYXRlcmlhbA-!!",  # not base64
        Fernet.generate_key().decode() + ",zzzz",
    ]
    for value in bad:
        with pytest.raises(manna.KeyConfigError) as err:
            manna.Keyring(value)
        assert_clean(str(err.value), value)
        clean_env.setenv("MANNA_ENCRYPTION_KEY_AES256", value)
        with pytest.raises(manna.KeyConfigError) as err:
            manna.Keyring.from_env()
        assert_clean(str(err.value), value)
        with pytest.raises(manna.KeyConfigError) as err:
            manna.Keyring(manna.generate_key(), fernet=[value])
        assert_clean(str(err.value), value)
        path = tmp_path / "keys.toml"
        path.write_text(f'[[keys]]\nkey = "{value}"\nstatus = "primary"\n')
        with pytest.raises(manna.KeyConfigError) as err:
            manna.Keyring.from_file(path)
        assert_clean(str(err.value), value)


def test_key_in_wrong_place_is_not_echoed(clean_env, key):
    # a key pasted into the fernet_until setting
    clean_env.setenv("MANNA_ENCRYPTION_KEY_AES256", key)
    clean_env.setenv("MANNA_ENCRYPTION_FERNET_UNTIL", key)
    with pytest.raises(manna.KeyConfigError) as err:
        manna.Keyring.from_env()
    assert "MANNA_ENCRYPTION_FERNET_UNTIL" in str(err.value)
    assert_clean(str(err.value), key)
