//! The little SQL both backends share: values bound by position (`$1`, `$2` … work on
//! SQLite and Postgres alike through sqlx's Any driver), multi-row inserts, and amounts
//! as integer cents.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::ProjectionError;

/// A value bound into a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An integer (ids, cents, positions, microseconds).
    Int(i64),
    /// Text.
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}

/// Most bound values in one statement (SQLite allows 32,766; Postgres 65,535).
const BINDS_MAX: usize = 30_000;
/// Most rows in one INSERT: statements of the same shape are prepared once and
/// reused, where a huge VALUES list is parsed and planned anew every time.
const ROWS_PER_INSERT_MAX: usize = 500;

/// Placeholders for `n` values starting after `bound`: `$k` on Postgres, `?` on SQLite
/// (SQLite looks named and numbered parameters up by name, which costs time in
/// proportion to their number for each one: quadratic in a 9,000-value insert).
pub fn placeholders(conn: &AnyConnection, bound: usize, n: usize) -> Vec<String> {
    let sqlite = conn.backend_name().eq_ignore_ascii_case("sqlite");
    (bound + 1..=bound + n)
        .map(|k| match sqlite {
            true => "?".to_string(),
            false => format!("${k}"),
        })
        .collect()
}

/// Runs `sql` with `values` bound as `$1`, `$2` ….
pub async fn execute(
    conn: &mut AnyConnection,
    sql: &str,
    values: &[Value],
) -> Result<u64, ProjectionError> {
    // Statements are built here from constant text and table names, never from input.
    let mut query = sqlx::query(AssertSqlSafe(sql.to_string()));
    for value in values {
        query = match value {
            Value::Int(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.clone()),
        };
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// Inserts `rows` (each `columns.len()` values) with `INSERT INTO table (columns)
/// VALUES …` followed by `tail` (e.g. an `ON CONFLICT` clause), in as few statements
/// as the bind limit allows.
pub async fn insert_rows(
    conn: &mut AnyConnection,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Value>],
    tail: &str,
) -> Result<(), ProjectionError> {
    let per_statement = (BINDS_MAX / columns.len()).clamp(1, ROWS_PER_INSERT_MAX);
    for chunk in rows.chunks(per_statement) {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut values = Vec::with_capacity(chunk.len() * columns.len());
        for (r, row) in chunk.iter().enumerate() {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            sql.push_str(&placeholders(conn, values.len(), columns.len()).join(", "));
            sql.push(')');
            values.extend(row.iter().cloned());
        }
        sql.push(' ');
        sql.push_str(tail);
        execute(conn, &sql, &values).await?;
    }
    Ok(())
}

/// Credits as integer cents; `None` if the amount has more than 2 decimal places or
/// does not fit.
pub fn cents(amount: Decimal) -> Option<i64> {
    let scaled = amount * Decimal::ONE_HUNDRED;
    if scaled.fract() != Decimal::ZERO {
        return None;
    }
    scaled.to_i64()
}

/// Integer cents as credits.
pub fn from_cents(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// Writes `rows` into `table` with Postgres `COPY … FROM STDIN` (text format), in one
/// statement: the fast path for filling tables aside.
pub(crate) async fn copy_rows(
    pool: &sqlx::PgPool,
    table: &str,
    columns: &[String],
    rows: &[Vec<Value>],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut data = String::with_capacity(rows.len() * columns.len() * 12);
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                data.push('\t');
            }
            match value {
                Value::Int(v) => data.push_str(&v.to_string()),
                Value::Text(text) => {
                    for c in text.chars() {
                        match c {
                            '\\' => data.push_str("\\\\"),
                            '\t' => data.push_str("\\t"),
                            '\n' => data.push_str("\\n"),
                            '\r' => data.push_str("\\r"),
                            c => data.push(c),
                        }
                    }
                }
            }
        }
        data.push('\n');
    }
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw(&format!("COPY {table} ({}) FROM STDIN", columns.join(", ")))
        .await?;
    copy.send(data.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}
