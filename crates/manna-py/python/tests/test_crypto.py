"""Round trips, AAD, tampering, rotation, legacy Fernet, key sources, info."""

import base64
import datetime
import json

import pytest
from cryptography.fernet import Fernet, MultiFernet

import manna

AAD = "plaid_items.access_token"


def test_generate_key_is_base64_of_32_bytes():
    key = manna.generate_key()
    assert len(base64.b64decode(key)) == 32
    assert key != manna.generate_key()


def test_round_trip_str_and_bytes(keyring):
    token = keyring.encrypt("access-sandbox-123", AAD)
    assert token.startswith(f"mn1:{keyring.primary_key_id}:")
    assert keyring.decrypt(token, AAD) == "access-sandbox-123"
    assert keyring.decrypt_bytes(token, AAD) == b"access-sandbox-123"
    raw = bytes(range(256))
    token = keyring.encrypt(raw, AAD.encode())
    assert keyring.decrypt_bytes(token, AAD) == raw
    # a token given as bytes works too
    assert keyring.decrypt_bytes(token.encode(), AAD) == raw


def test_non_utf8_plaintext_needs_decrypt_bytes(keyring):
    token = keyring.encrypt(b"\xff\xfe")
    with pytest.raises(manna.DecryptionError, match="decrypt_bytes") as err:
        keyring.decrypt(token)
    assert err.value.kind == "not_utf8"


def test_aad_none_is_empty_and_str_is_utf8(keyring):
    token = keyring.encrypt("x")
    assert keyring.decrypt(token, b"") == "x"
    assert keyring.decrypt(token, "") == "x"
    token = keyring.encrypt("x", "tablé.colonne")
    assert keyring.decrypt(token, "tablé.colonne".encode("utf-8")) == "x"


def test_wrong_aad_refused(keyring):
    token = keyring.encrypt("secret", AAD)
    for wrong in ("users.email", None, AAD + " "):
        with pytest.raises(manna.DecryptionError) as err:
            keyring.decrypt(token, wrong)
        assert err.value.kind == "authentication"


def test_any_tampering_refused(keyring):
    token = keyring.encrypt("secret", AAD)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(len(token)):
        c = token[i]
        replacement = alphabet[(alphabet.index(c) + 1) % 64] if c in alphabet else "0"
        tampered = token[:i] + replacement + token[i + 1 :]
        with pytest.raises(manna.DecryptionError):
            keyring.decrypt(tampered, AAD)
    for cut in (1, 5, len(token) - 21):
        with pytest.raises(manna.DecryptionError):
            keyring.decrypt(token[:-cut], AAD)


def test_rotation_previous_key_decrypts_unknown_key_is_named(key):
    old = manna.Keyring(key)
    token = old.encrypt("v", AAD)
    new_key = manna.generate_key()
    rotated = manna.Keyring(new_key, previous=[key])
    assert rotated.decrypt(token, AAD) == "v"
    assert rotated.needs_reencryption(token)
    assert not rotated.needs_reencryption(rotated.encrypt("v", AAD))
    assert rotated.decrypt_only_key_ids == [old.primary_key_id]
    with pytest.raises(manna.DecryptionError) as err:
        manna.Keyring(new_key).decrypt(token, AAD)
    assert err.value.kind == "unknown_key"
    assert old.primary_key_id in str(err.value)


def test_fernet_tokens_from_cryptography_decrypt_in_order(key):
    first, second = Fernet.generate_key(), Fernet.generate_key()
    keyring = manna.Keyring(key, fernet=[first.decode(), second])
    from_first = Fernet(first).encrypt(b"legacy-1").decode()
    from_second = Fernet(second).encrypt(b"legacy-2")
    rotated = MultiFernet([Fernet(first), Fernet(second)]).rotate(from_second).decode()
    assert manna.inspect(from_first) == "fernet"
    # Fernet has no AAD: any AAD is ignored for Fernet tokens.
    assert keyring.decrypt(from_first, AAD) == "legacy-1"
    assert keyring.decrypt(from_second) == "legacy-2"
    assert keyring.decrypt(rotated, "anything") == "legacy-2"
    assert keyring.needs_reencryption(from_first)
    # and re-encrypting binds the value to its column
    token = keyring.encrypt(keyring.decrypt_bytes(from_first), AAD)
    assert keyring.decrypt(token, AAD) == "legacy-1"


def test_fernet_token_without_fernet_key(keyring):
    token = Fernet(Fernet.generate_key()).encrypt(b"legacy").decode()
    with pytest.raises(manna.DecryptionError, match="no Fernet key is configured") as err:
        keyring.decrypt(token)
    assert err.value.kind == "no_fernet_key"


def test_tampered_fernet_token_refused(key):
    fkey = Fernet.generate_key()
    token = Fernet(fkey).encrypt(b"legacy").decode()
    keyring = manna.Keyring(key, fernet=[fkey])
    tampered = token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
    with pytest.raises(manna.DecryptionError):
        keyring.decrypt(tampered)


def test_inspect():
    keyring = manna.Keyring(manna.generate_key())
    assert manna.inspect(keyring.encrypt("x")) == f"aes256gcm({keyring.primary_key_id})"
    assert manna.inspect("hello") == "plaintext"
    assert manna.inspect("mn1:0011223344556677:AAAA") == "unknown"
    assert manna.inspect(Fernet(Fernet.generate_key()).encrypt(b"x")) == "fernet"


def test_column_aad_is_the_rust_one():
    assert manna.column_aad("plaid_items", "access_token") == AAD


def test_module_functions_use_environment_keys_lazily(clean_env, key):
    with pytest.raises(manna.KeyConfigError, match="MANNA_ENCRYPTION_KEY_AES256"):
        manna.encrypt_aes256("x")
    fkey = Fernet.generate_key()
    clean_env.setenv("MANNA_ENCRYPTION_KEY_AES256", key)
    clean_env.setenv("MANNA_ENCRYPTION_KEY", fkey.decode())
    token = manna.encrypt_aes256("secret", AAD)
    assert manna.decrypt_aes256(token, AAD) == "secret"
    assert manna.decrypt_aes256_bytes(token, AAD) == b"secret"
    assert manna.decrypt_aes256(Fernet(fkey).encrypt(b"old")) == "old"
    assert manna.default_keyring().primary_key_id == manna.Keyring(key).primary_key_id
    # an explicit keyring wins over the default one
    other = manna.Keyring(manna.generate_key())
    assert manna.decrypt_aes256(manna.encrypt_aes256("o", keyring=other), keyring=other) == "o"


def test_from_env_previous_keys_and_fernet_until(clean_env, key):
    old = manna.generate_key()
    clean_env.setenv("MANNA_ENCRYPTION_KEY_AES256", key)
    clean_env.setenv("MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS", old)
    clean_env.setenv("MANNA_ENCRYPTION_KEY", Fernet.generate_key().decode())
    clean_env.setenv("MANNA_ENCRYPTION_FERNET_UNTIL", "2020-01-01T00:00:00Z")
    keyring = manna.Keyring.from_env()
    assert keyring.decrypt_only_key_ids == [manna.Keyring(old).primary_key_id]
    token = Fernet(Fernet.generate_key()).encrypt(b"x").decode()
    with pytest.raises(manna.DecryptionError) as err:
        keyring.decrypt(token)
    assert err.value.kind == "fernet_ended"


def test_from_file(tmp_path, key):
    old = manna.generate_key()
    path = tmp_path / "keys.toml"
    path.write_text(
        f'[[keys]]\nkey = "{key}"\nstatus = "primary"\n\n'
        f'[[keys]]\nkey = "{old}"\nstatus = "decrypt_only"\n'
    )
    path.chmod(0o600)
    keyring = manna.Keyring.from_file(path)
    assert keyring.primary_key_id == manna.Keyring(key).primary_key_id
    assert keyring.decrypt(manna.Keyring(old).encrypt("v", AAD), AAD) == "v"
    with pytest.raises(manna.KeyConfigError, match="cannot read key file"):
        manna.Keyring.from_file(tmp_path / "missing.toml")


def test_get_encryption_info_has_the_info_json_fields(clean_env, key):
    info = manna.get_encryption_info()
    assert info["initialized"] is False
    assert info["algorithm"] == "AES-256-GCM"
    fkey = Fernet.generate_key().decode()
    clean_env.setenv("MANNA_ENCRYPTION_KEY_AES256", key)
    clean_env.setenv("MANNA_ENCRYPTION_KEY", fkey)
    info = manna.get_encryption_info()
    keyring = manna.Keyring(key, fernet=[fkey])
    assert info["initialized"] is True
    assert info["primary_key_id"] == keyring.primary_key_id
    assert info["fernet_fallback"] is True
    assert info["fernet_key_ids"] == keyring.fernet_key_ids
    assert info["format_version"] == 1
    assert info["nonce_limit"] == 2**32
    assert info["warnings"], "Fernet fallback on must warn"
    for field in ("decrypt_only_key_ids", "fernet_until", "accept_plaintext", "keys"):
        assert field in info
    json.dumps(info)  # plain JSON types
    # a keyring's own info counts its encryptions
    keyring.encrypt("a")
    counts = {k["key_id"]: k["encryptions"] for k in keyring.info()["keys"]}
    assert counts[keyring.primary_key_id] == 1
    assert manna.get_encryption_info(keyring)["primary_key_id"] == keyring.primary_key_id


def test_invalid_env_key_is_a_config_error(clean_env):
    clean_env.setenv("MANNA_ENCRYPTION_KEY_AES256", "not-a-key")
    with pytest.raises(manna.KeyConfigError):
        manna.get_encryption_info()
    with pytest.raises(manna.KeyConfigError):
        manna.Keyring.from_env()


def test_exception_hierarchy():
    for cls in (manna.KeyConfigError, manna.DecryptionError, manna.EncryptionError):
        assert issubclass(cls, manna.MannaError)
    assert issubclass(manna.MannaError, Exception)
    assert manna.MannaError.__module__ == "manna"
