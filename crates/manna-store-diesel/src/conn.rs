//! The connections this crate works with, behind one sealed trait.

use std::convert::Infallible;
use std::marker::PhantomData;

/// The SQL dialect of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// `"postgres"` or `"sqlite"`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
        }
    }
}

/// A borrowed connection of either backend.
pub(crate) enum AnyConn<'a> {
    #[cfg(feature = "postgres")]
    Pg(&'a mut diesel::PgConnection),
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut diesel::SqliteConnection),
    #[allow(dead_code)]
    Never(Infallible, PhantomData<&'a mut ()>),
}

impl AnyConn<'_> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "postgres")]
            AnyConn::Pg(_) => Dialect::Postgres,
            #[cfg(feature = "sqlite")]
            AnyConn::Sqlite(_) => Dialect::Sqlite,
            AnyConn::Never(n, _) => match *n {},
        }
    }

    /// Runs `f` in a write transaction: a plain transaction on PostgreSQL,
    /// `BEGIN IMMEDIATE` on SQLite (takes the write lock up front, so a
    /// read-then-write transaction never fails to upgrade its lock). Nested
    /// calls use savepoints.
    pub(crate) fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConn<'_>) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        self.begin()?;
        match f(self) {
            Ok(v) => {
                self.commit()?;
                Ok(v)
            }
            Err(e) => match self.rollback() {
                Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(e),
                Err(r) => Err(r.into()),
            },
        }
    }

    pub(crate) fn begin(&mut self) -> diesel::QueryResult<()> {
        use diesel::connection::{AnsiTransactionManager as Tm, TransactionManager};
        match self {
            #[cfg(feature = "postgres")]
            AnyConn::Pg(c) => Tm::begin_transaction(&mut **c),
            #[cfg(feature = "sqlite")]
            AnyConn::Sqlite(c) => {
                let depth = Tm::transaction_manager_status_mut(&mut **c).transaction_depth()?;
                if depth.is_none() {
                    Tm::begin_transaction_sql(&mut **c, "BEGIN IMMEDIATE")
                } else {
                    Tm::begin_transaction(&mut **c)
                }
            }
            AnyConn::Never(n, _) => match *n {},
        }
    }

    pub(crate) fn commit(&mut self) -> diesel::QueryResult<()> {
        use diesel::connection::{AnsiTransactionManager as Tm, TransactionManager};
        match self {
            #[cfg(feature = "postgres")]
            AnyConn::Pg(c) => Tm::commit_transaction(&mut **c),
            #[cfg(feature = "sqlite")]
            AnyConn::Sqlite(c) => Tm::commit_transaction(&mut **c),
            AnyConn::Never(n, _) => match *n {},
        }
    }

    pub(crate) fn rollback(&mut self) -> diesel::QueryResult<()> {
        use diesel::connection::{AnsiTransactionManager as Tm, TransactionManager};
        match self {
            #[cfg(feature = "postgres")]
            AnyConn::Pg(c) => Tm::rollback_transaction(&mut **c),
            #[cfg(feature = "sqlite")]
            AnyConn::Sqlite(c) => Tm::rollback_transaction(&mut **c),
            AnyConn::Never(n, _) => match *n {},
        }
    }
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// A Diesel connection this crate can drive: [`diesel::PgConnection`]
/// (feature `postgres`) or [`diesel::SqliteConnection`] (feature `sqlite`).
///
/// Sealed: the helpers build dialect-specific SQL for exactly these two.
/// Pooled connections deref to them (`&mut *pooled`).
pub trait StoreConnection: sealed::Sealed {
    /// The connection's SQL dialect.
    fn dialect(&self) -> Dialect;

    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn any(&mut self) -> AnyConn<'_>;

    /// Runs `f` in a write transaction and commits if it returns `Ok`.
    ///
    /// PostgreSQL: `BEGIN`; SQLite: `BEGIN IMMEDIATE`, which takes the write
    /// lock up front so a read-then-write transaction never fails to upgrade
    /// its lock (it waits up to the busy timeout instead). Nested calls use
    /// savepoints.
    fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        Self: Sized,
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<crate::Error>,
    {
        let lift = |e: diesel::result::Error| E::from(crate::Error::from(e));
        self.any().begin().map_err(lift)?;
        match f(self) {
            Ok(v) => {
                self.any().commit().map_err(lift)?;
                Ok(v)
            }
            Err(e) => match self.any().rollback() {
                Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(e),
                Err(r) => Err(lift(r)),
            },
        }
    }
}

#[cfg(feature = "postgres")]
impl sealed::Sealed for diesel::PgConnection {}
#[cfg(feature = "postgres")]
impl StoreConnection for diesel::PgConnection {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    #[allow(private_interfaces)]
    fn any(&mut self) -> AnyConn<'_> {
        AnyConn::Pg(self)
    }
}

#[cfg(feature = "sqlite")]
impl sealed::Sealed for diesel::SqliteConnection {}
#[cfg(feature = "sqlite")]
impl StoreConnection for diesel::SqliteConnection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    #[allow(private_interfaces)]
    fn any(&mut self) -> AnyConn<'_> {
        AnyConn::Sqlite(self)
    }
}
