//! The store's table: its name, checked once, and the migration that creates it
//! (`schema.sql` beside this file).

use std::fmt;

use sqlx::PgPool;

use crate::store::StoreError;

/// The table a store uses unless its builder names another: `idem_keys`.
pub const DEFAULT_TABLE: &str = "idem_keys";

/// The schema, with `{table}` and `{index}` to fill in.
const SCHEMA: &str = include_str!("schema.sql");

/// A lock taken while migrating, so that two instances starting at once do not both create the
/// table (an arbitrary constant: `idem` in ASCII, then the schema's version).
const MIGRATION_LOCK: i64 = 0x6964_656d_0000_0001;

/// The longest identifier Postgres keeps (longer ones are silently truncated, so they are refused).
const MAX_IDENTIFIER_LEN: usize = 63;

/// A table name checked to be one or two plain SQL identifiers (`table` or `schema.table`): ASCII
/// letters, digits and `_`, not starting with a digit, at most 63 bytes each. It is used unquoted,
/// so Postgres folds it to lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TableName {
    qualified: String,
    index: String,
}

impl TableName {
    /// Checks `name`.
    pub(super) fn parse(name: &str) -> Result<Self, StoreError> {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|part| is_identifier(part)) {
            return Err(StoreError::new(format!(
                "invalid Postgres table name {name:?}: use `table` or `schema.table`, each part \
                 1 to {MAX_IDENTIFIER_LEN} ASCII letters, digits or `_`, not starting with a digit"
            )));
        }
        let table = parts[parts.len() - 1];
        let mut index = format!("{table}_expires_at");
        index.truncate(MAX_IDENTIFIER_LEN);
        Ok(Self {
            qualified: name.to_ascii_lowercase(),
            index: index.to_ascii_lowercase(),
        })
    }

    /// The name, as written in SQL.
    pub(super) fn as_str(&self) -> &str {
        &self.qualified
    }

    /// The schema, for this table.
    pub(super) fn schema_sql(&self) -> String {
        SCHEMA
            .replace("{table}", &self.qualified)
            .replace("{index}", &self.index)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qualified)
    }
}

fn is_identifier(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_IDENTIFIER_LEN
        && !part.starts_with(|c: char| c.is_ascii_digit())
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Creates the table and its index if they do not exist, in one transaction under a lock of its
/// own, so that instances starting together do not race.
pub(super) async fn migrate(pool: &PgPool, table: &TableName) -> Result<(), StoreError> {
    let failed = |e| StoreError::with_source(format!("could not create the table {table}"), e);
    let mut tx = pool.begin().await.map_err(failed)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    sqlx::raw_sql(&table.schema_sql())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    tx.commit().await.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_schema_qualified_identifiers() {
        let table = TableName::parse("Payments.Idem_Keys2").unwrap();
        assert_eq!(table.as_str(), "payments.idem_keys2");
        let sql = table.schema_sql();
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS payments.idem_keys2 ("));
        assert!(
            sql.contains("CREATE INDEX IF NOT EXISTS idem_keys2_expires_at ON payments.idem_keys2")
        );
        assert!(TableName::parse("_t").is_ok());
        assert!(TableName::parse(&"t".repeat(63)).is_ok());
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            "1table",
            "idem keys",
            "idem;drop table x",
            "\"quoted\"",
            "a.b.c",
            "a.",
            "schema.",
            "tablé",
            "t-1",
        ] {
            let error = TableName::parse(bad).unwrap_err().to_string();
            assert!(
                error.contains("invalid Postgres table name"),
                "{bad:?}: {error}"
            );
        }
        assert!(TableName::parse(&"t".repeat(64)).is_err());
    }
}
