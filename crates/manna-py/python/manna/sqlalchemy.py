"""SQLAlchemy 2.x column type: ``EncryptedStringAES256(length)``.

Values are encrypted with the keyring (the default one unless ``keyring=`` is
given) and bound to their column: the AAD is ``TABLE.COLUMN``, built by
``manna_crypto::aad::column`` (:func:`manna.column_aad`) — the bytes the Rust
column types and the migrator (``--aad column``, the default) use, so a row
written by Python reads in Rust and the other way round, and a value copied
to another column does not decrypt. Legacy Fernet tokens still read while a
Fernet key is configured.

The column learns its table when it is attached to one (``Table(...)`` or a
declarative model). A type used outside a table needs ``aad=`` explicitly.

``length`` is the database column's length: the stored token is longer than
the plaintext (``21 + ceil(4 * (28 + n) / 3)`` characters for ``n`` bytes).

Needs ``sqlalchemy>=2``.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import Column, String, event
from sqlalchemy.types import TypeDecorator

from . import Keyring, MannaError, column_aad, default_keyring

__all__ = ["EncryptedStringAES256"]


class EncryptedStringAES256(TypeDecorator):
    """A ``VARCHAR(length)`` column holding ``mn1:`` envelopes; Python sees
    ``str`` (``None`` stays ``NULL``)."""

    impl = String
    cache_ok = True

    def __init__(
        self,
        length: Optional[int] = None,
        *,
        aad: Optional[str] = None,
        keyring: Optional[Keyring] = None,
    ) -> None:
        super().__init__(length)
        #: ``TABLE.COLUMN`` once attached (or the explicit ``aad``).
        self.aad = aad
        self._explicit_aad = aad is not None
        self._keyring = keyring

    def _ring(self) -> Keyring:
        return self._keyring or default_keyring()

    def _column_aad(self) -> str:
        if self.aad is None:
            raise MannaError(
                "EncryptedStringAES256 is not attached to a table column: "
                "attach it, or pass aad='TABLE.COLUMN'"
            )
        return self.aad

    def process_bind_param(self, value: Any, dialect: Any) -> Optional[str]:
        if value is None:
            return None
        return self._ring().encrypt(value, self._column_aad())

    def process_result_value(self, value: Any, dialect: Any) -> Optional[str]:
        if value is None:
            return None
        return self._ring().decrypt(value, self._column_aad())

    def copy(self, **kw: Any) -> "EncryptedStringAES256":
        # SQLAlchemy copies the type for each dialect: the copy keeps the AAD.
        twin = EncryptedStringAES256(self.impl.length, aad=self.aad, keyring=self._keyring)
        twin._explicit_aad = self._explicit_aad
        return twin


@event.listens_for(Column, "after_parent_attach")
def _bind_column_aad(column: Column, table: Any) -> None:
    """Binds each ``EncryptedStringAES256`` column to ``TABLE.COLUMN`` when
    the column joins its table."""
    kind = column.type
    if not isinstance(kind, EncryptedStringAES256) or kind._explicit_aad:
        return
    aad = column_aad(table.name, column.name)
    if kind.aad is not None and kind.aad != aad:
        # The same type object on a second column: give this one its own.
        kind = kind.copy()
        column.type = kind
    kind.aad = aad
