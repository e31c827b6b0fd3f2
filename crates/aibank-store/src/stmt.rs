//! Statements prepared once per connection and found again by their call site.
//!
//! diesel prepares anew, on every run, each UPDATE, upsert, `IN (…)` list, insert with
//! optional columns and raw SQL fragment: it cannot tell that their text is the same each
//! time. On the ledger's hot path (a hold and a capture per gateway call) that preparation
//! was a third of the SQLite writer's time. A [`Stmt`] is fixed SQL text with a `?` where
//! each value goes; diesel writes the placeholders each backend expects (`?` or `$n`).
//!
//! [`stmt!`](crate::stmt!) gives each call site a type of its own, and diesel caches the
//! prepared statement under that type: finding it again costs a type comparison. Keyed by
//! its text instead, each run would first write the whole SQL out and hash it, which was
//! a sixth of the SQLite writer's time.
//!
//! Only values are bound: the text is a `&'static str`, never built from input, and it is
//! the same on every run of one call site.

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
/// when nothing is read back), and `Site` the call site's own type, that diesel finds the
/// prepared statement by.
#[derive(Debug, Clone)]
#[must_use]
pub struct Stmt<'a, ST, Site> {
    sql: &'static str,
    /// The text between the `?`s, split once per call site: diesel walks a statement
    /// more than once per run, and searching a long text for its `?`s each time was a
    /// twentieth of the SQLite writer's time.
    parts: &'static [&'static str],
    binds: Vec<Val<'a>>,
    row: PhantomData<(ST, Site)>,
}

/// A statement over constant SQL text, whose `?`s are filled by the binds in the order
/// given; prepared once per connection.
///
/// The text must be the same every time this call site runs: the prepared statement is
/// found by the site, not by its text. Where one of several texts is chosen at run time,
/// each needs a `stmt!` of its own.
#[macro_export]
macro_rules! stmt {
    ($sql:expr $(,)?) => {{
        enum Site {}
        static PARTS: ::std::sync::OnceLock<::std::vec::Vec<&'static str>> =
            ::std::sync::OnceLock::new();
        $crate::Stmt::<(), Site>::at_site($sql, &PARTS)
    }};
}

impl<Site: 'static> Stmt<'_, (), Site> {
    /// Only through [`stmt!`](crate::stmt!), which gives every call site its own `Site`.
    #[doc(hidden)]
    pub fn at_site(
        sql: &'static str,
        parts: &'static std::sync::OnceLock<Vec<&'static str>>,
    ) -> Self {
        let parts = parts.get_or_init(|| sql.split('?').collect());
        debug_assert_eq!(
            parts.join("?"),
            sql,
            "a stmt! site must always have the same text"
        );
        Stmt {
            sql,
            parts,
            binds: Vec::with_capacity(parts.len().saturating_sub(1)),
            row: PhantomData,
        }
    }
}

impl<'a, ST, Site> Stmt<'a, ST, Site> {
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

    /// A value made for a [`crate::Call`], bound as its kind is.
    pub fn arg(self, v: &'a crate::Arg) -> Self {
        match v {
            crate::Arg::Int(v) => self.opt_int(*v),
            crate::Arg::Text(v) => self.opt_text(v.as_deref()),
        }
    }

    /// The same statement, read back as rows of SQL type `R` (with `get_result`, `load`…).
    pub fn returning<R>(self) -> Stmt<'a, R, Site> {
        Stmt {
            sql: self.sql,
            parts: self.parts,
            binds: self.binds,
            row: PhantomData,
        }
    }
}

impl<'a, ST, Site, DB> QueryFragment<DB> for Stmt<'a, ST, Site>
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Text>,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
    Option<&'a str>: ToSql<Nullable<Text>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut parts = self.parts.iter().copied();
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

/// Cached by its call site: one text, and one sequence of bind types, per site.
impl<ST, Site: 'static> QueryId for Stmt<'_, ST, Site> {
    type QueryId = Site;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<ST, Site> Query for Stmt<'_, ST, Site>
where
    ST: diesel::sql_types::SqlType,
{
    type SqlType = ST;
}

impl<ST, Site, C> RunQueryDsl<C> for Stmt<'_, ST, Site> {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Nullable, Text};

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
            let n = crate::stmt!("INSERT INTO t (a, b, c, d) VALUES (?, ?, ?, ?)")
                .int(i)
                .text("x?y")
                .opt_int((i > 0).then_some(i * 10))
                .opt_text(None)
                .execute(&mut c)
                .unwrap();
            assert_eq!(n, 1);
        }
        let rows: Vec<(i64, String, Option<i64>, Option<String>)> =
            crate::stmt!("SELECT a, b, c, d FROM t WHERE a >= ? ORDER BY a")
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
        assert!(crate::stmt!("INSERT INTO t (a) VALUES (?)")
            .execute(&mut c)
            .is_err());
        assert!(crate::stmt!("INSERT INTO t (a) VALUES (?)")
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
            crate::stmt!("UPDATE t SET a = a + ? WHERE a > ?")
                .int(i)
                .int(-i)
                .execute(&mut c)
                .unwrap();
        }
        assert_eq!(cached.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn each_call_site_is_its_own_statement() {
        let mut c = memory();
        c.batch_execute(
            "CREATE TABLE t (a BIGINT NOT NULL); INSERT INTO t (a) VALUES (1), (2), (3)",
        )
        .unwrap();
        // Same binds, same row type: only the site tells them apart.
        let count = |c: &mut AnyConnection, min: i64| -> i64 {
            crate::stmt!("SELECT COUNT(*) FROM t WHERE a >= ?")
                .int(min)
                .returning::<BigInt>()
                .get_result(c)
                .unwrap()
        };
        let sum = |c: &mut AnyConnection, min: i64| -> i64 {
            crate::stmt!("SELECT SUM(a) FROM t WHERE a >= ?")
                .int(min)
                .returning::<BigInt>()
                .get_result(c)
                .unwrap()
        };
        for _ in 0..2 {
            assert_eq!(count(&mut c, 2), 2);
            assert_eq!(sum(&mut c, 2), 5);
        }
    }
}
