"""manna.sqlalchemy.EncryptedStringAES256 on real PostgreSQL (127.0.0.1:5432,
database `test`) and SQLite. Needs `sqlalchemy>=2` and `psycopg`."""

import os
import uuid

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import manna
from manna.sqlalchemy import EncryptedStringAES256

POSTGRES_URL = os.environ.get("MANNA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def fernet_key():
    return Fernet.generate_key().decode()


@pytest.fixture
def ring(key, fernet_key):
    keyring = manna.Keyring(key, fernet=[fernet_key])
    manna.set_default_keyring(keyring)
    return keyring


def postgres_engine():
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as err:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({type(err.orig).__name__}): "
            "start it (pg_ctlcluster <version> main start) or set MANNA_TEST_POSTGRES_URL"
        )
    return engine


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'test.db'}")
    else:
        engine = postgres_engine()
    yield engine
    engine.dispose()


def make_table(engine):
    name = f"manna_py_{uuid.uuid4().hex[:12]}"
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("access_token", EncryptedStringAES256(500)),
        sa.Column("other", EncryptedStringAES256(500)),
    )
    metadata.create_all(engine)
    return name, metadata, table


def test_column_round_trip_and_aad_is_table_dot_column(engine, ring, fernet_key):
    name, metadata, table = make_table(engine)
    try:
        assert table.c.access_token.type.aad == f"{name}.access_token"
        assert table.c.other.type.aad == f"{name}.other"
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 1, "access_token": "access-sandbox-123", "other": None}])
            raw = conn.execute(sa.text(f"SELECT access_token, other FROM {name} WHERE id = 1")).one()
            assert manna.inspect(raw.access_token) == f"aes256gcm({ring.primary_key_id})"
            assert raw.other is None
            # what is stored is what the Rust column types and the migrator read
            assert ring.decrypt(raw.access_token, manna.column_aad(name, "access_token")) == "access-sandbox-123"
            row = conn.execute(sa.select(table).where(table.c.id == 1)).one()
            assert row.access_token == "access-sandbox-123"
            assert row.other is None

            # a value copied to another column does not decrypt there
            conn.execute(sa.text(f"UPDATE {name} SET other = access_token WHERE id = 1"))
            with pytest.raises(manna.DecryptionError) as err:
                conn.execute(sa.select(table.c.other)).one()
            assert err.value.kind == "authentication"
            assert "access-sandbox-123" not in str(err.value)

            # legacy Fernet rows (written by the old Python service) still read
            legacy = Fernet(fernet_key.encode()).encrypt(b"legacy-token").decode()
            conn.execute(sa.text(f"INSERT INTO {name} (id, access_token) VALUES (2, :v)"), {"v": legacy})
            assert conn.execute(sa.select(table.c.access_token).where(table.c.id == 2)).scalar_one() == "legacy-token"
    finally:
        metadata.drop_all(engine)


def test_declarative_model_on_postgres(ring):
    engine = postgres_engine()
    suffix = uuid.uuid4().hex[:12]

    class Base(DeclarativeBase):
        pass

    class PlaidItem(Base):
        __tablename__ = f"plaid_items_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        access_token: Mapped[str] = mapped_column(EncryptedStringAES256(500), nullable=False)

    Base.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            session.add(PlaidItem(id=1, access_token="access-prod-42"))
            session.commit()
        with Session(engine) as session:
            assert session.get(PlaidItem, 1).access_token == "access-prod-42"
            raw = session.execute(sa.text(f"SELECT access_token FROM plaid_items_{suffix}")).scalar_one()
            assert ring.decrypt(raw, f"plaid_items_{suffix}.access_token") == "access-prod-42"
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


def test_explicit_keyring_and_aad(key):
    keyring = manna.Keyring(key)
    kind = EncryptedStringAES256(100, aad="users.ssn", keyring=keyring)
    token = kind.process_bind_param("123-45-6789", None)
    assert keyring.decrypt(token, "users.ssn") == "123-45-6789"
    assert kind.process_result_value(token, None) == "123-45-6789"


def test_unattached_type_refuses_to_guess(ring):
    with pytest.raises(manna.MannaError, match="not attached"):
        EncryptedStringAES256(100).process_bind_param("x", None)


def test_one_type_object_on_two_columns_gets_two_aads(ring):
    shared = EncryptedStringAES256(200)
    table = sa.Table("t", sa.MetaData(), sa.Column("a", shared), sa.Column("b", shared))
    assert table.c.a.type.aad == "t.a"
    assert table.c.b.type.aad == "t.b"
