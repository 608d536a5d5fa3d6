"""manna: secrets in SQL columns, AES-256-GCM envelopes (``mn1:<key id>:…``),
legacy Fernet reading and key rotation — the Python binding of the Rust crate
``manna-crypto`` (one implementation of the format, not two).

Keys come from the same environment variables as the Rust services
(``MANNA_ENCRYPTION_KEY_AES256``, ``MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS``,
``MANNA_ENCRYPTION_KEY``, ``MANNA_ENCRYPTION_FERNET_UNTIL``), loaded lazily on
first use by the module-level functions, or from a :class:`Keyring` you build
(``Keyring.from_env()``, ``Keyring.from_file(path)``,
``Keyring(primary, previous=[...], fernet=[...])``) and pass as ``keyring=``.

AAD (associated data): ``None`` means empty AAD, a ``str`` is taken as its
UTF-8 bytes, ``bytes`` as is. Plaintexts likewise: ``str`` (UTF-8) or
``bytes``. Fernet tokens carry no AAD: ``aad`` does not apply to them.

Errors derive from :class:`MannaError`; their messages are the Rust ones and
never contain a key or a plaintext.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Union

from ._native import (
    DecryptionError,
    DistributedLockError,
    EncryptionError,
    KeyConfigError,
    Keyring,
    Lock,
    LockTimeoutError,
    MannaError,
    lock_resource,
    column_aad,
    generate_fernet_key,
    generate_key,
    inspect,
)
from ._native import env_info as _env_info

__all__ = [
    "DecryptionError",
    "DistributedLockError",
    "EncryptionError",
    "KeyConfigError",
    "Keyring",
    "Lock",
    "LockTimeoutError",
    "MannaError",
    "lock_resource",
    "column_aad",
    "decrypt_aes256",
    "decrypt_aes256_bytes",
    "default_keyring",
    "encrypt_aes256",
    "generate_fernet_key",
    "generate_key",
    "get_encryption_info",
    "inspect",
    "set_default_keyring",
]

Data = Union[str, bytes]

_lock = threading.Lock()
_default: Optional[Keyring] = None


def default_keyring() -> Keyring:
    """The keyring the module-level functions use: the one given to
    :func:`set_default_keyring`, else loaded from the environment on first
    use (raises :class:`KeyConfigError` if the keys are missing or invalid;
    a failed load is retried on the next call)."""
    global _default
    with _lock:
        if _default is None:
            _default = Keyring.from_env()
        return _default


def set_default_keyring(keyring: Optional[Keyring]) -> None:
    """Replaces the default keyring (``None``: reload from the environment
    on next use, e.g. after rotating keys)."""
    global _default
    with _lock:
        _default = keyring


def encrypt_aes256(plaintext: Data, aad: Optional[Data] = None, *, keyring: Optional[Keyring] = None) -> str:
    """Encrypts under the primary key; returns an ``mn1:<key id>:…`` token."""
    return (keyring or default_keyring()).encrypt(plaintext, aad)


def decrypt_aes256(token: Data, aad: Optional[Data] = None, *, keyring: Optional[Keyring] = None) -> str:
    """Decrypts an envelope (any configured AES key) or a legacy Fernet
    token; returns the plaintext as ``str``."""
    return (keyring or default_keyring()).decrypt(token, aad)


def decrypt_aes256_bytes(token: Data, aad: Optional[Data] = None, *, keyring: Optional[Keyring] = None) -> bytes:
    """Like :func:`decrypt_aes256`, returning ``bytes``."""
    return (keyring or default_keyring()).decrypt_bytes(token, aad)


def get_encryption_info(keyring: Optional[Keyring] = None) -> Dict[str, Any]:
    """The encryption status, with the fields of ``info --json``
    (``initialized``, ``algorithm``, ``primary_key_id``,
    ``decrypt_only_key_ids``, ``fernet_fallback``, ``keys``, ``warnings`` …).

    Without ``keyring``: the default keyring if one was set, else the
    environment's; no key configured gives ``initialized: False`` rather
    than an error."""
    if keyring is None:
        with _lock:
            keyring = _default
    if keyring is not None:
        return keyring.info()
    return _env_info()
