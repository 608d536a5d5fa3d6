//! Versioned writes with Diesel's typed query builder.

/// A versioned update written with Diesel's DSL: sets `changes` and
/// `version = version + 1` on the row whose id and version match, in one
/// statement; evaluates to `Result<new_version, manna_store_diesel::Error>`.
///
/// Zero rows matched is [`Error::Conflict`](crate::Error::Conflict) naming the
/// table and id — `RowGone` when the row no longer exists, `RowChanged`
/// otherwise — exactly like [`VersionedTable::update`](crate::VersionedTable::update).
/// The syntax names the `table!` module, then `ID_COLUMN = id`,
/// `VERSION_COLUMN = expected`, then any Diesel changeset:
///
/// ```
/// use diesel::prelude::*;
/// use manna_store_diesel::{versioned_update, Error};
/// diesel::table! { accounts (id) { id -> Integer, balance -> BigInt, version -> Integer } }
///
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// diesel::sql_query("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL, \
///                    version INTEGER NOT NULL DEFAULT 1)").execute(&mut conn).unwrap();
/// diesel::sql_query("INSERT INTO accounts (id, balance) VALUES (1, 100)").execute(&mut conn).unwrap();
///
/// let v = versioned_update!(&mut conn, accounts, id = 1, version = 1, accounts::balance.eq(90)).unwrap();
/// assert_eq!(v, 2);
/// let stale = versioned_update!(&mut conn, accounts, id = 1, version = 1, accounts::balance.eq(80));
/// assert!(matches!(stale, Err(Error::Conflict(_))));
/// ```
#[macro_export]
macro_rules! versioned_update {
    ($conn:expr, $table:ident, $id_col:ident = $id:expr, $version_col:ident = $expected:expr, $changes:expr $(,)?) => {{
        use $crate::diesel::prelude::*;
        let __conn = $conn;
        let __id = $id;
        let __expected = $expected;
        let __target = $table::table
            .filter($table::$id_col.eq(__id.clone()))
            .filter($table::$version_col.eq(__expected));
        match $crate::diesel::update(__target)
            .set(($changes, $table::$version_col.eq($table::$version_col + 1)))
            .execute(&mut *__conn)
        {
            Ok(0) => {
                match $crate::diesel::select($crate::diesel::dsl::exists(
                    $table::table.filter($table::$id_col.eq(__id.clone())),
                ))
                .get_result::<bool>(&mut *__conn)
                {
                    Ok(true) => Err($crate::Error::Conflict(
                        $crate::__private::ConflictError::row_changed(
                            stringify!($table),
                            __id.to_string(),
                        ),
                    )),
                    Ok(false) => Err($crate::Error::Conflict(
                        $crate::__private::ConflictError::row_gone(
                            stringify!($table),
                            __id.to_string(),
                        ),
                    )),
                    Err(e) => Err($crate::Error::from(e)),
                }
            }
            Ok(_) => Ok(__expected + 1),
            Err(e) => Err($crate::Error::from(e)),
        }
    }};
}

/// A versioned delete written with Diesel's DSL: deletes the row whose id
/// and version match; zero rows is [`Error::Conflict`](crate::Error::Conflict)
/// as for [`versioned_update!`](crate::versioned_update).
///
/// ```
/// use diesel::prelude::*;
/// use manna_store_diesel::versioned_delete;
/// diesel::table! { notes (id) { id -> Integer, version -> Integer } }
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// diesel::sql_query("CREATE TABLE notes (id INTEGER PRIMARY KEY, version INTEGER NOT NULL DEFAULT 1)")
///     .execute(&mut conn).unwrap();
/// diesel::sql_query("INSERT INTO notes (id) VALUES (1)").execute(&mut conn).unwrap();
/// assert!(versioned_delete!(&mut conn, notes, id = 1, version = 2).is_err());
/// versioned_delete!(&mut conn, notes, id = 1, version = 1).unwrap();
/// ```
#[macro_export]
macro_rules! versioned_delete {
    ($conn:expr, $table:ident, $id_col:ident = $id:expr, $version_col:ident = $expected:expr $(,)?) => {{
        use $crate::diesel::prelude::*;
        let __conn = $conn;
        let __id = $id;
        let __target = $table::table
            .filter($table::$id_col.eq(__id.clone()))
            .filter($table::$version_col.eq($expected));
        match $crate::diesel::delete(__target).execute(&mut *__conn) {
            Ok(0) => {
                match $crate::diesel::select($crate::diesel::dsl::exists(
                    $table::table.filter($table::$id_col.eq(__id.clone())),
                ))
                .get_result::<bool>(&mut *__conn)
                {
                    Ok(true) => Err($crate::Error::Conflict(
                        $crate::__private::ConflictError::row_changed(
                            stringify!($table),
                            __id.to_string(),
                        ),
                    )),
                    Ok(false) => Err($crate::Error::Conflict(
                        $crate::__private::ConflictError::row_gone(
                            stringify!($table),
                            __id.to_string(),
                        ),
                    )),
                    Err(e) => Err($crate::Error::from(e)),
                }
            }
            Ok(_) => Ok(()),
            Err(e) => Err($crate::Error::from(e)),
        }
    }};
}
