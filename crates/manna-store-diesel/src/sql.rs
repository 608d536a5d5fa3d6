//! A small backend-neutral SQL builder: text pieces and bound values, turned
//! into a Diesel query for the connection at hand.
//!
//! Identifiers reach the text only as [`Ident::quoted`]; every value is bound.
//! Placeholders are written by Diesel itself (`$n` on PostgreSQL, `?` on
//! SQLite). The statements are safe to cache, so Diesel prepares each distinct
//! SQL text once per connection.

use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, HasSqlType, Nullable, Text, Untyped};
use diesel::{QueryResult, RunQueryDsl};
use manna_store::{IdKind, Ident, RowId};

use crate::conn::{AnyConn, Dialect};

/// A value bound to a statement.
#[derive(Clone)]
pub(crate) enum Bind {
    Int(i64),
    Text(String),
    OptText(Option<String>),
    Bytes(Vec<u8>),
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    IntArray(Vec<i64>),
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    TextArray(Vec<String>),
}

enum Piece {
    Sql(String),
    Bind(Bind),
}

/// A statement being built for one dialect.
pub(crate) struct Sql {
    dialect: Dialect,
    pieces: Vec<Piece>,
}

impl Sql {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Sql {
            dialect,
            pieces: Vec::new(),
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Appends SQL text (never a value).
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        if let Some(Piece::Sql(s)) = self.pieces.last_mut() {
            s.push_str(sql);
        } else {
            self.pieces.push(Piece::Sql(sql.to_owned()));
        }
        self
    }

    /// Appends a quoted identifier.
    pub(crate) fn ident(&mut self, ident: &Ident) -> &mut Self {
        self.push(&ident.quoted())
    }

    /// Appends a placeholder bound to `value`.
    pub(crate) fn bind(&mut self, value: Bind) -> &mut Self {
        self.pieces.push(Piece::Bind(value));
        self
    }

    pub(crate) fn execute(self, conn: &mut AnyConn<'_>) -> QueryResult<usize> {
        match conn {
            #[cfg(feature = "postgres")]
            AnyConn::Pg(c) => self.into_query::<diesel::pg::Pg>(bind_pg).execute(*c),
            #[cfg(feature = "sqlite")]
            AnyConn::Sqlite(c) => self
                .into_query::<diesel::sqlite::Sqlite>(bind_sqlite)
                .execute(*c),
            AnyConn::Never(n, _) => match *n {},
        }
    }

    pub(crate) fn load<T>(self, conn: &mut AnyConn<'_>) -> QueryResult<Vec<T>>
    where
        T: LoadRow,
    {
        match conn {
            #[cfg(feature = "postgres")]
            AnyConn::Pg(c) => self.into_query::<diesel::pg::Pg>(bind_pg).load(*c),
            #[cfg(feature = "sqlite")]
            AnyConn::Sqlite(c) => self
                .into_query::<diesel::sqlite::Sqlite>(bind_sqlite)
                .load(*c),
            AnyConn::Never(n, _) => match *n {},
        }
    }

    fn into_query<DB: Backend>(self, bind: fn(Bind) -> BoxedBind<DB>) -> DynQuery<DB> {
        DynQuery {
            pieces: self
                .pieces
                .into_iter()
                .map(|p| match p {
                    Piece::Sql(s) => DynPiece::Sql(s),
                    Piece::Bind(b) => DynPiece::Bind(bind(b)),
                })
                .collect(),
        }
    }
}

/// Rows a [`Sql`] statement can load on every enabled backend.
#[cfg(all(feature = "postgres", feature = "sqlite"))]
pub(crate) trait LoadRow:
    diesel::QueryableByName<diesel::pg::Pg> + diesel::QueryableByName<diesel::sqlite::Sqlite> + 'static
{
}
#[cfg(all(feature = "postgres", feature = "sqlite"))]
impl<T> LoadRow for T where
    T: diesel::QueryableByName<diesel::pg::Pg>
        + diesel::QueryableByName<diesel::sqlite::Sqlite>
        + 'static
{
}
/// Rows a [`Sql`] statement can load on every enabled backend.
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
pub(crate) trait LoadRow: diesel::QueryableByName<diesel::pg::Pg> + 'static {}
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
impl<T> LoadRow for T where T: diesel::QueryableByName<diesel::pg::Pg> + 'static {}
/// Rows a [`Sql`] statement can load on every enabled backend.
#[cfg(all(feature = "sqlite", not(feature = "postgres")))]
pub(crate) trait LoadRow: diesel::QueryableByName<diesel::sqlite::Sqlite> + 'static {}
#[cfg(all(feature = "sqlite", not(feature = "postgres")))]
impl<T> LoadRow for T where T: diesel::QueryableByName<diesel::sqlite::Sqlite> + 'static {}
/// Rows a [`Sql`] statement can load on every enabled backend.
#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
pub(crate) trait LoadRow: 'static {}
#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
impl<T: 'static> LoadRow for T {}

type BoxedBind<DB> = Box<dyn QueryFragment<DB> + Send + 'static>;

#[cfg(feature = "postgres")]
fn bind_pg(b: Bind) -> BoxedBind<diesel::pg::Pg> {
    use diesel::sql_types::Array;
    match b {
        Bind::Int(v) => Box::new(Bound::<BigInt, _>::new(v)),
        Bind::Text(v) => Box::new(Bound::<Text, _>::new(v)),
        Bind::OptText(v) => Box::new(Bound::<Nullable<Text>, _>::new(v)),
        Bind::Bytes(v) => Box::new(Bound::<Binary, _>::new(v)),
        Bind::IntArray(v) => Box::new(Bound::<Array<BigInt>, _>::new(v)),
        Bind::TextArray(v) => Box::new(Bound::<Array<Text>, _>::new(v)),
    }
}

#[cfg(feature = "sqlite")]
fn bind_sqlite(b: Bind) -> BoxedBind<diesel::sqlite::Sqlite> {
    match b {
        Bind::Int(v) => Box::new(Bound::<BigInt, _>::new(v)),
        Bind::Text(v) => Box::new(Bound::<Text, _>::new(v)),
        Bind::OptText(v) => Box::new(Bound::<Nullable<Text>, _>::new(v)),
        Bind::Bytes(v) => Box::new(Bound::<Binary, _>::new(v)),
        // Arrays are a PostgreSQL feature; the SQLite code paths never bind them.
        Bind::IntArray(_) | Bind::TextArray(_) => Box::new(Unsupported),
    }
}

#[cfg(feature = "sqlite")]
struct Unsupported;

#[cfg(feature = "sqlite")]
impl<DB: Backend> QueryFragment<DB> for Unsupported {
    fn walk_ast<'b>(&'b self, _: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        Err(diesel::result::Error::QueryBuilderError(
            "array parameters are only supported on PostgreSQL".into(),
        ))
    }
}

struct Bound<ST, U> {
    value: U,
    sql_type: PhantomData<fn() -> ST>,
}

impl<ST, U> Bound<ST, U> {
    fn new(value: U) -> Self {
        Bound {
            value,
            sql_type: PhantomData,
        }
    }
}

impl<ST, U, DB> QueryFragment<DB> for Bound<ST, U>
where
    DB: Backend + HasSqlType<ST>,
    U: ToSql<ST, DB>,
{
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        pass.push_bind_param::<ST, U>(&self.value)
    }
}

enum DynPiece<DB: Backend> {
    Sql(String),
    Bind(BoxedBind<DB>),
}

/// The Diesel query built from a [`Sql`]: cacheable by its SQL text.
struct DynQuery<DB: Backend> {
    pieces: Vec<DynPiece<DB>>,
}

impl<DB: Backend> QueryFragment<DB> for DynQuery<DB> {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        for p in &self.pieces {
            match p {
                DynPiece::Sql(s) => pass.push_sql(s),
                DynPiece::Bind(b) => b.walk_ast(pass.reborrow())?,
            }
        }
        Ok(())
    }
}

impl<DB: Backend> QueryId for DynQuery<DB> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: Backend> Query for DynQuery<DB> {
    type SqlType = Untyped;
}

impl<DB: Backend, Conn> RunQueryDsl<Conn> for DynQuery<DB> {}

/// Binds primary-key value `id` as a key of `kind` — the one place a key is
/// bound, for the migrator's store and the application's versioned writes
/// alike. A UUID is `CAST(… AS uuid)` on PostgreSQL (which reads any case)
/// and text exactly as given on SQLite, where it must match the stored
/// spelling byte for byte (the scan hands back ids as stored).
pub(crate) fn push_key(q: &mut Sql, kind: IdKind, id: &RowId) -> Result<(), crate::Error> {
    match (kind, id) {
        (IdKind::Int, RowId::Int(i)) => {
            q.bind(Bind::Int(*i));
        }
        (IdKind::Uuid, RowId::Text(s)) => {
            let text = Bind::Text(s.clone());
            if q.dialect() == Dialect::Postgres {
                q.push("CAST(").bind(text).push(" AS uuid)");
            } else {
                q.bind(text);
            }
        }
        (IdKind::Text, RowId::Text(s)) => {
            q.bind(Bind::Text(s.clone()));
        }
        _ => {
            return Err(crate::Error::unsupported(format!(
                "row id {id} does not match the key column's type ({kind:?})"
            )))
        }
    }
    Ok(())
}
