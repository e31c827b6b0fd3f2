//! Statements prepared once per connection.
//!
//! diesel prepares anew, on every run, each UPDATE, upsert, `IN (…)` list, insert with
//! optional columns and raw SQL fragment: it cannot tell that their text is the same each
//! time. On the ledger's hot path (a hold and a capture per gateway call) that preparation
//! was a third of the SQLite writer's time. A [`Stmt`] is fixed SQL text with a `?` where
//! each value goes; diesel writes the placeholders each backend expects (`?` or `$n`) and
//! caches the prepared statement under the text, so it is parsed once per connection.
//!
//! Only values are bound: the text is a `&'static str`, never built from input.

use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::Error;
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Nullable, Text};
use diesel::{QueryResult, RunQueryDsl};

/// One bound value.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Int(i64),
    Text(&'a str),
    OptInt(Option<i64>),
    OptText(Option<&'a str>),
}

/// Fixed SQL text and its values in order; `ST` is the SQL type of a returned row (`()`
/// when nothing is read back).
#[derive(Debug, Clone)]
#[must_use]
pub struct Stmt<'a, ST = ()> {
    sql: &'static str,
    binds: Vec<Val<'a>>,
    row: PhantomData<ST>,
}

/// A statement over `sql`, whose `?`s are filled by the binds in the order given.
pub fn stmt<'a>(sql: &'static str) -> Stmt<'a> {
    Stmt {
        sql,
        binds: Vec::with_capacity(sql.matches('?').count()),
        row: PhantomData,
    }
}

impl<'a, ST> Stmt<'a, ST> {
    pub fn int(mut self, v: i64) -> Self {
        self.binds.push(Val::Int(v));
        self
    }

    pub fn text(mut self, v: &'a str) -> Self {
        self.binds.push(Val::Text(v));
        self
    }

    pub fn opt_int(mut self, v: Option<i64>) -> Self {
        self.binds.push(Val::OptInt(v));
        self
    }

    pub fn opt_text(mut self, v: Option<&'a str>) -> Self {
        self.binds.push(Val::OptText(v));
        self
    }

    /// The same statement, read back as rows of SQL type `R` (with `get_result`, `load`…).
    pub fn returning<R>(self) -> Stmt<'a, R> {
        Stmt {
            sql: self.sql,
            binds: self.binds,
            row: PhantomData,
        }
    }
}

impl<'a, ST, DB> QueryFragment<DB> for Stmt<'a, ST>
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Text>,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
    Option<&'a str>: ToSql<Nullable<Text>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut parts = self.sql.split('?');
        let mut binds = self.binds.iter();
        if let Some(first) = parts.next() {
            out.push_sql(first);
        }
        for part in parts {
            match binds.next() {
                Some(Val::Int(v)) => out.push_bind_param::<BigInt, i64>(v)?,
                Some(Val::Text(v)) => out.push_bind_param::<Text, str>(v)?,
                Some(Val::OptInt(v)) => out.push_bind_param::<Nullable<BigInt>, _>(v)?,
                Some(Val::OptText(v)) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                None => return Err(arity(self.sql)),
            }
            out.push_sql(part);
        }
        if binds.next().is_some() {
            return Err(arity(self.sql));
        }
        Ok(())
    }
}

fn arity(sql: &str) -> Error {
    Error::QueryBuilderError(format!("values do not match the placeholders of: {sql}").into())
}

/// Cached by its text (there is no type to tell statements apart).
impl<ST> QueryId for Stmt<'_, ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST> Query for Stmt<'_, ST>
where
    ST: diesel::sql_types::SqlType,
{
    type SqlType = ST;
}

impl<ST, C> RunQueryDsl<C> for Stmt<'_, ST> {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Nullable, Text};

    use super::stmt;
    use crate::AnyConnection;

    fn memory() -> AnyConnection {
        AnyConnection::Sqlite(SqliteConnection::establish(":memory:").unwrap())
    }

    #[test]
    fn binds_fill_the_placeholders_in_order() {
        let mut c = memory();
        c.batch_execute("CREATE TABLE t (a BIGINT NOT NULL, b TEXT NOT NULL, c BIGINT, d TEXT)")
            .unwrap();
        for i in 0..3 {
            let n = stmt("INSERT INTO t (a, b, c, d) VALUES (?, ?, ?, ?)")
                .int(i)
                .text("x?y")
                .opt_int((i > 0).then_some(i * 10))
                .opt_text(None)
                .execute(&mut c)
                .unwrap();
            assert_eq!(n, 1);
        }
        let rows: Vec<(i64, String, Option<i64>, Option<String>)> =
            stmt("SELECT a, b, c, d FROM t WHERE a >= ? ORDER BY a")
                .int(1)
                .returning::<(BigInt, Text, Nullable<BigInt>, Nullable<Text>)>()
                .load(&mut c)
                .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, "x?y".to_owned(), Some(10), None),
                (2, "x?y".to_owned(), Some(20), None)
            ]
        );
    }

    #[test]
    fn a_count_mismatch_is_an_error_not_a_query() {
        let mut c = memory();
        c.batch_execute("CREATE TABLE t (a BIGINT NOT NULL)")
            .unwrap();
        assert!(stmt("INSERT INTO t (a) VALUES (?)")
            .execute(&mut c)
            .is_err());
        assert!(stmt("INSERT INTO t (a) VALUES (?)")
            .int(1)
            .int(2)
            .execute(&mut c)
            .is_err());
        let n: i64 = diesel::select(diesel::dsl::sql::<BigInt>("COUNT(*) FROM t"))
            .get_result(&mut c)
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn prepared_once_per_connection() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        let mut c = memory();
        c.batch_execute("CREATE TABLE t (a BIGINT NOT NULL)")
            .unwrap();
        let cached = Arc::new(AtomicUsize::new(0));
        let seen = cached.clone();
        c.set_instrumentation(move |e: diesel::connection::InstrumentationEvent<'_>| {
            if matches!(
                e,
                diesel::connection::InstrumentationEvent::CacheQuery { .. }
            ) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        });
        for i in 0..5 {
            stmt("UPDATE t SET a = a + ? WHERE a > ?")
                .int(i)
                .int(-i)
                .execute(&mut c)
                .unwrap();
        }
        assert_eq!(cached.load(Ordering::SeqCst), 1);
    }
}
