"""SQLAlchemy and the Rust migrator on one column, PostgreSQL (as in
test_sqlalchemy.py) and SQLite.

The legacy Python app wrote Fernet tokens (``cryptography``), the new one
writes through ``manna.sqlalchemy.EncryptedStringAES256``; ``manna migrate``
(the Rust CLI, from ``MANNA_CLI`` as in test_cross_language.py, keys from
the environment) rewrites the Fernet rows, and Python reads every row back
through the type. Then Python writes and updates rows, and the migrator's
``--verify-only`` census finds them all readable under the primary key.
Both sides bind values to ``TABLE.COLUMN``: any difference would make one
side's rows unreadable to the other."""

import json
import os
import subprocess
import uuid

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

import manna
from conftest import REPO, manna_cli
from manna.sqlalchemy import EncryptedStringAES256
from test_sqlalchemy import postgres_engine

LEGACY = [f"access-sandbox-{i:03}" for i in range(1, 41)]
MODERN = [f"access-production-{i:03}" for i in range(1, 21)]


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request, tmp_path):
    """``(engine, URL for the CLI)``."""
    if request.param == "sqlite":
        path = tmp_path / "interop.db"
        engine = sa.create_engine(f"sqlite:///{path}")
        cli_url = f"sqlite://{path}"
    else:
        engine = postgres_engine()
        cli_url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    yield engine, cli_url
    engine.dispose()


def migrate(cli_url, column, aes_key, fernet_key, *extra):
    """``manna migrate --column COLUMN --json …``; returns (exit status, report, stderr)."""
    env = dict(
        os.environ,
        DATABASE_URL=cli_url,
        MANNA_ENCRYPTION_KEY_AES256=aes_key,
        MANNA_ENCRYPTION_KEY=fernet_key,
    )
    env.pop("REDIS_URL", None)  # the database's own lock
    done = subprocess.run(
        manna_cli() + ["migrate", "--column", column, "--json", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    for secret in (aes_key, fernet_key, *LEGACY, *MODERN):
        assert secret not in done.stdout and secret not in done.stderr
    report = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, report, done.stderr


def test_rows_the_rust_migrator_rewrites_read_through_sqlalchemy_and_back(database):
    engine, cli_url = database
    aes_key = manna.generate_key()
    fernet_key = Fernet.generate_key().decode()
    ring = manna.Keyring(aes_key, fernet=[fernet_key])
    manna.set_default_keyring(ring)

    name = f"manna_py_mig_{uuid.uuid4().hex[:12]}"
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("access_token", EncryptedStringAES256(500)),
    )
    metadata.create_all(engine)
    column = f"{name}.access_token"
    try:
        assert table.c.access_token.type.aad == column
        # The old app: Fernet tokens, written as the Python application's service did.
        legacy = Fernet(fernet_key.encode())
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"INSERT INTO {name} (id, access_token) VALUES (:id, :v)"),
                [{"id": i, "v": legacy.encrypt(p.encode()).decode()} for i, p in enumerate(LEGACY, 1)],
            )
            # The new app, already deployed: envelopes through the type.
            conn.execute(
                table.insert(),
                [{"id": 100 + i, "access_token": p} for i, p in enumerate(MODERN, 1)],
            )
        expected = {i: p for i, p in enumerate(LEGACY, 1)}
        expected.update({100 + i: p for i, p in enumerate(MODERN, 1)})

        status, report, err = migrate(cli_url, column, aes_key, fernet_key)
        assert status == 0, err
        (col,) = report["columns"]
        assert (col["table"], col["column"]) == (name, "access_token")
        assert col["migrated"] == len(LEGACY)
        assert col["failed"] == []
        assert col["by_format"]["aes256gcm"] == {ring.primary_key_id: len(expected)}

        with engine.connect() as conn:
            raw = dict(conn.execute(sa.text(f"SELECT id, access_token FROM {name}")).all())
            assert set(raw) == set(expected)
            for row_id, token in raw.items():
                assert manna.inspect(token) == f"aes256gcm({ring.primary_key_id})", row_id
                # The Rust migrator bound each value to TABLE.COLUMN, the AAD
                # the type uses; another AAD does not open it.
                assert ring.decrypt(token, manna.column_aad(name, "access_token")) == expected[row_id]
                with pytest.raises(manna.DecryptionError):
                    ring.decrypt(token, f"{name}.other")
            # Every row reads through the SQLAlchemy type.
            read = dict(conn.execute(sa.select(table.c.id, table.c.access_token)).all())
            assert read == expected

        # Python writes again: updates of migrated rows and new rows.
        with engine.begin() as conn:
            for row_id in (1, 2, 101):
                expected[row_id] = f"rotated-by-python-{row_id}"
                conn.execute(
                    table.update().where(table.c.id == row_id).values(access_token=expected[row_id])
                )
            conn.execute(table.insert(), [{"id": 500, "access_token": "new-from-python"}])
            expected[500] = "new-from-python"

        status, report, err = migrate(cli_url, column, aes_key, fernet_key, "--verify-only")
        assert status == 0, err
        (col,) = report["columns"]
        assert report["mode"] == "verify-only"
        assert col["total"] == len(expected)
        assert col["failed"] == []
        assert col["by_format"]["aes256gcm"] == {ring.primary_key_id: len(expected)}
        assert not col["by_format"].get("fernet")
        with engine.connect() as conn:
            assert dict(conn.execute(sa.select(table.c.id, table.c.access_token)).all()) == expected
    finally:
        metadata.drop_all(engine)
