//! The two migration trees and `schema.rs` describe one schema: fresh SQLite and PostgreSQL
//! databases are migrated and their tables, columns (type, nullability), primary keys and
//! indexes compared with each other and with the diesel table definitions, so neither tree
//! can drift. PostgreSQL takes part when `AIBANK_TEST_DATABASE_URL` names a server.

use std::collections::{BTreeMap, BTreeSet};

use aibank_store::DbPool;
use aibank_testkit::{pool_options, TestDb};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl};

/// One table as a backend (or `schema.rs`) declares it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Table {
    /// Column → (diesel type, nullable).
    columns: BTreeMap<String, (String, bool)>,
    primary_key: Vec<String>,
    /// (columns in order, unique), primary keys aside. `None` for an expression.
    indexes: BTreeSet<(Vec<Option<String>>, bool)>,
}

type Schema = BTreeMap<String, Table>;

/// The diesel name of a declared SQL type.
fn diesel_type(sql: &str) -> String {
    let t = sql.to_ascii_lowercase();
    let t = t.split('(').next().unwrap_or_default().trim().to_owned();
    match t.as_str() {
        "text" | "character varying" | "varchar" => "Text",
        "bigint" | "int8" => "BigInt",
        "integer" | "int" | "int4" => "Integer",
        "boolean" | "bool" => "Bool",
        "blob" | "bytea" => "Binary",
        other => panic!("a column type this test does not know: {other}"),
    }
    .to_owned()
}

/// `schema.rs`, read as text: `diesel::table!` blocks of `name (pk, …) { col -> Type, }`.
fn declared() -> Schema {
    let src = include_str!("../../src/schema.rs");
    let mut out = Schema::new();
    for block in src.split("diesel::table! {").skip(1) {
        let head = block.trim_start();
        let (name, rest) = head.split_once('(').unwrap();
        let (pk, body) = rest.split_once(')').unwrap();
        let body = body.split_once('{').unwrap().1;
        let body = body.split_once('}').unwrap().0;
        let mut table = Table {
            primary_key: pk.split(',').map(|c| c.trim().to_owned()).collect(),
            ..Table::default()
        };
        for line in body.lines().map(str::trim).filter(|l| l.contains("->")) {
            let (col, ty) = line.trim_end_matches(',').split_once("->").unwrap();
            let ty = ty.trim();
            let (ty, nullable) = match ty.strip_prefix("Nullable<") {
                Some(inner) => (inner.trim_end_matches('>'), true),
                None => (ty, false),
            };
            table
                .columns
                .insert(col.trim().to_owned(), (ty.to_owned(), nullable));
        }
        out.insert(name.trim().to_owned(), table);
    }
    out
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = BigInt)]
    nullable: i64,
    /// Position in the primary key, from 1; 0 when not in it.
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

#[derive(QueryableByName)]
struct IndexRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    index_name: String,
    #[diesel(sql_type = BigInt)]
    is_unique: i64,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Nullable<Text>)]
    column_name: Option<String>,
}

/// An index being assembled: whether it is unique, and its columns by position.
type IndexColumns = (bool, Vec<(i64, Option<String>)>);

const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

fn assemble(columns: Vec<ColumnRow>, indexes: Vec<IndexRow>) -> Schema {
    let mut out = Schema::new();
    let mut pks: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for c in columns {
        if c.table_name == MIGRATIONS_TABLE {
            continue;
        }
        let table = out.entry(c.table_name.clone()).or_default();
        // SQLite lets a non-integer primary key hold NULL unless told otherwise, but
        // nothing here ever writes one: a key column counts as NOT NULL on both.
        let nullable = c.nullable != 0 && c.pk == 0;
        table
            .columns
            .insert(c.column_name.clone(), (diesel_type(&c.data_type), nullable));
        if c.pk > 0 {
            pks.entry(c.table_name)
                .or_default()
                .push((c.pk, c.column_name));
        }
    }
    for (name, mut cols) in pks {
        cols.sort();
        out.get_mut(&name).unwrap().primary_key = cols.into_iter().map(|(_, c)| c).collect();
    }
    let mut grouped: BTreeMap<(String, String), IndexColumns> = BTreeMap::new();
    for i in indexes {
        if i.table_name == MIGRATIONS_TABLE {
            continue;
        }
        let entry = grouped
            .entry((i.table_name, i.index_name))
            .or_insert((i.is_unique != 0, Vec::new()));
        entry.1.push((i.seq, i.column_name));
    }
    for ((table, _), (unique, mut cols)) in grouped {
        cols.sort();
        let cols: Vec<_> = cols.into_iter().map(|(_, c)| c).collect();
        let t = out.get_mut(&table).unwrap();
        if unique && cols.iter().flatten().eq(t.primary_key.iter()) {
            continue; // the primary key's own index
        }
        t.indexes.insert((cols, unique));
    }
    out
}

fn sqlite_schema() -> Schema {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.db");
    let pool = DbPool::connect(&format!("sqlite://{}", path.display()), &pool_options()).unwrap();
    pool.migrate().unwrap();
    drop(pool);
    let mut c = diesel::sqlite::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    // An `INTEGER PRIMARY KEY` is SQLite's 64-bit rowid, which must be spelt INTEGER: it is
    // the BIGINT of PostgreSQL and schema.rs.
    let columns = diesel::sql_query(
        "SELECT m.name AS table_name, p.name AS column_name,
                CASE WHEN p.pk = 1 AND upper(p.type) = 'INTEGER' THEN 'BIGINT' ELSE p.type END
                    AS data_type,
                CASE WHEN p.\"notnull\" = 0 THEN 1 ELSE 0 END AS nullable, p.pk AS pk
         FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
    )
    .load::<ColumnRow>(&mut c)
    .unwrap();
    let indexes = diesel::sql_query(
        "SELECT m.name AS table_name, il.name AS index_name, il.\"unique\" AS is_unique,
                ii.seqno AS seq, ii.name AS column_name
         FROM sqlite_master m JOIN pragma_index_list(m.name) il
              JOIN pragma_index_info(il.name) ii
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
    )
    .load::<IndexRow>(&mut c)
    .unwrap();
    assemble(columns, indexes)
}

fn postgres_schema(db: &TestDb) -> Schema {
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    pool.migrate().unwrap();
    drop(pool);
    let mut c = diesel::pg::PgConnection::establish(&db.url).unwrap();
    let columns = diesel::sql_query(
        "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name,
                c.data_type::text AS data_type,
                CASE WHEN c.is_nullable = 'YES' THEN 1 ELSE 0 END::bigint AS nullable,
                COALESCE((SELECT k.ord
                          FROM pg_index i
                               CROSS JOIN LATERAL unnest(i.indkey::int2[])
                                   WITH ORDINALITY AS k(attnum, ord)
                               JOIN pg_attribute a
                                 ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                          WHERE i.indrelid = (quote_ident(c.table_name))::regclass
                            AND i.indisprimary AND a.attname = c.column_name), 0)::bigint AS pk
         FROM information_schema.columns c
         WHERE c.table_schema = 'public'",
    )
    .load::<ColumnRow>(&mut c)
    .unwrap();
    let indexes = diesel::sql_query(
        "SELECT t.relname::text AS table_name, ic.relname::text AS index_name,
                CASE WHEN i.indisunique THEN 1 ELSE 0 END::bigint AS is_unique,
                k.ord::bigint - 1 AS seq, a.attname::text AS column_name
         FROM pg_index i
              JOIN pg_class t ON t.oid = i.indrelid
              JOIN pg_class ic ON ic.oid = i.indexrelid
              JOIN pg_namespace n ON n.oid = t.relnamespace
              CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
              LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
         WHERE n.nspname = 'public' AND NOT i.indisprimary",
    )
    .load::<IndexRow>(&mut c)
    .unwrap();
    assemble(columns, indexes)
}

/// What differs between two schemas, table by table, readable in a failure.
fn differences(left: (&str, &Schema), right: (&str, &Schema), indexes: bool) -> Vec<String> {
    let (ln, lhs) = left;
    let (rn, rhs) = right;
    let mut out = Vec::new();
    let names: BTreeSet<&String> = lhs.keys().chain(rhs.keys()).collect();
    for name in names {
        match (lhs.get(name), rhs.get(name)) {
            (Some(_), None) => out.push(format!("table {name}: in {ln}, not in {rn}")),
            (None, Some(_)) => out.push(format!("table {name}: in {rn}, not in {ln}")),
            (Some(a), Some(b)) => {
                let cols: BTreeSet<&String> = a.columns.keys().chain(b.columns.keys()).collect();
                for col in cols {
                    let (x, y) = (a.columns.get(col), b.columns.get(col));
                    if x != y {
                        out.push(format!("{name}.{col}: {ln} {x:?}, {rn} {y:?}"));
                    }
                }
                if a.primary_key != b.primary_key {
                    out.push(format!(
                        "{name} primary key: {ln} {:?}, {rn} {:?}",
                        a.primary_key, b.primary_key
                    ));
                }
                if indexes && a.indexes != b.indexes {
                    out.push(format!(
                        "{name} indexes: {ln} {:?}, {rn} {:?}",
                        a.indexes, b.indexes
                    ));
                }
            }
            (None, None) => {}
        }
    }
    out
}

#[test]
fn both_migration_trees_and_schema_rs_describe_the_same_tables() {
    let declared = declared();
    assert!(
        declared.len() >= 20,
        "schema.rs read: {:?}",
        declared.keys()
    );
    let sqlite = sqlite_schema();
    let indexes: usize = sqlite.values().map(|t| t.indexes.len()).sum();
    assert!(indexes >= 15, "SQLite's indexes read: {indexes}");
    let diff = differences(("schema.rs", &declared), ("sqlite", &sqlite), false);
    assert!(
        diff.is_empty(),
        "SQLite migrations against schema.rs:\n{}",
        diff.join("\n")
    );

    let db = TestDb::fresh();
    if db.admin.is_none() {
        return; // PostgreSQL is compared when the test database names one.
    }
    let postgres = postgres_schema(&db);
    let diff = differences(("sqlite", &sqlite), ("postgres", &postgres), true);
    assert!(
        diff.is_empty(),
        "SQLite against PostgreSQL:\n{}",
        diff.join("\n")
    );
    let diff = differences(("schema.rs", &declared), ("postgres", &postgres), false);
    assert!(
        diff.is_empty(),
        "PostgreSQL migrations against schema.rs:\n{}",
        diff.join("\n")
    );
}

#[test]
fn a_drifted_column_is_reported() {
    let declared = declared();
    let mut changed = declared.clone();
    let accounts = changed.get_mut("accounts").unwrap();
    accounts
        .columns
        .insert("balance_micros".into(), ("BigInt".into(), true));
    accounts.indexes.insert((vec![Some("x".into())], false));
    changed.remove("holds");
    let diff = differences(("a", &declared), ("b", &changed), true);
    assert_eq!(diff.len(), 3, "{diff:?}");
    assert!(diff[0].starts_with("accounts.balance_micros"), "{diff:?}");
    assert!(diff[1].starts_with("accounts indexes"), "{diff:?}");
    assert_eq!(diff[2], "table holds: in a, not in b");
}
