//! Building a [`PostgresStore`]: where the database is, the table, the pool, the sweep.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;

use super::held::Claims;
use super::queries::Queries;
use super::schema::{DEFAULT_TABLE, TableName, migrate};
use super::sweep::{self, DEFAULT_SWEEP_BATCH, DEFAULT_SWEEP_INTERVAL};
use super::{DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Inner, PostgresStore};
use crate::store::StoreError;

/// Builds a [`PostgresStore`].
#[must_use]
pub struct PostgresStoreBuilder {
    target: Option<Target>,
    table: String,
    migrate: bool,
    max_connections: u32,
    acquire_timeout: Duration,
    sweep_interval: Option<Duration>,
    sweep_batch: u32,
}

enum Target {
    Url(String),
    Pool(PgPool),
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("table", &self.table)
            .field("migrate", &self.migrate)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("sweep_interval", &self.sweep_interval)
            .field("sweep_batch", &self.sweep_batch)
            .finish_non_exhaustive()
    }
}

impl PostgresStoreBuilder {
    pub(super) fn new() -> Self {
        Self {
            target: None,
            table: DEFAULT_TABLE.to_owned(),
            migrate: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            sweep_interval: Some(DEFAULT_SWEEP_INTERVAL),
            sweep_batch: DEFAULT_SWEEP_BATCH,
        }
    }

    /// The database, as a libpq-style URL (`postgres://user:password@host:port/database`); the
    /// store opens a pool of its own ([`max_connections`](Self::max_connections),
    /// [`acquire_timeout`](Self::acquire_timeout)). TLS is not enabled.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.target = Some(Target::Url(url.into()));
        self
    }

    /// The database, as a pool of the [`sqlx`](https://docs.rs/sqlx/0.8) crate (version 0.8) that
    /// the application already has, so that its own queries and the store share it. Its size
    /// bounds how many keyed requests run at once (see [`PostgresStore`]'s *Connections*).
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.target = Some(Target::Pool(pool));
        self
    }

    /// The table (default [`DEFAULT_TABLE`], `idem_keys`): `name` or `schema.name`, each part
    /// ASCII letters, digits and `_`, not starting with a digit, at most 63 bytes. Used unquoted,
    /// so Postgres folds it to lower case.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Whether [`build`](Self::build) creates the table if it does not exist, as
    /// [`PostgresStore::migrate`] does (default `false`: the application runs its migrations,
    /// with `schema.sql` from this crate, or calls `migrate` itself).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The most connections of the pool the store opens from a [`url`](Self::url) (default
    /// [`DEFAULT_MAX_CONNECTIONS`], 16). Ignored with [`pool`](Self::pool).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// How long waiting for a free connection of the pool opened from a [`url`](Self::url) may
    /// take before the operation fails (default [`DEFAULT_ACQUIRE_TIMEOUT`], 1 s: below the
    /// runtime's default `store_timeout`, so an exhausted pool is reported as such). Ignored with
    /// [`pool`](Self::pool).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How often a background task deletes expired rows (default
    /// [`DEFAULT_SWEEP_INTERVAL`](super::DEFAULT_SWEEP_INTERVAL), a minute); `None` runs no
    /// task (sweep with [`PostgresStore::sweep`] from a job of your own, or not at all: an
    /// expired row is ignored, and replaced by the next claim of its key).
    pub fn sweep_interval(mut self, every: Option<Duration>) -> Self {
        self.sweep_interval = every;
        self
    }

    /// How many rows one sweep statement deletes at most (default
    /// [`DEFAULT_SWEEP_BATCH`](super::DEFAULT_SWEEP_BATCH), 1000). A pass runs at most ten such
    /// statements and starts none after one second.
    pub fn sweep_batch(mut self, rows: u32) -> Self {
        self.sweep_batch = rows;
        self
    }

    /// Connects (and creates the table, if told to) and answers the store.
    ///
    /// Must be called within a Tokio runtime: the store's lease timers and its sweep run on it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when neither a URL nor a pool was given, the table name is not a plain
    /// SQL identifier, the pool size, timeout, sweep interval or batch is zero, the database
    /// cannot be reached now, or the migration fails.
    pub async fn build(self) -> Result<PostgresStore, StoreError> {
        let table = TableName::parse(&self.table)?;
        if self.max_connections == 0 || self.acquire_timeout.is_zero() || self.sweep_batch == 0 {
            return Err(StoreError::new(
                "Postgres pool size, acquire timeout and sweep batch must be larger than zero",
            ));
        }
        if self.sweep_interval.is_some_and(|every| every.is_zero()) {
            return Err(StoreError::new(
                "the Postgres sweep interval must be longer than zero (None runs no sweep)",
            ));
        }
        let pool = match self.target {
            Some(Target::Pool(pool)) => pool,
            Some(Target::Url(url)) => PgPoolOptions::new()
                .max_connections(self.max_connections)
                .acquire_timeout(self.acquire_timeout)
                .connect(&url)
                .await
                .map_err(|e| StoreError::with_source("could not connect to Postgres", e))?,
            None => return Err(StoreError::new("PostgresStore needs a URL or a pool")),
        };
        if self.migrate {
            migrate(&pool, &table).await?;
        }
        let (stop_sweep, stopped) = oneshot::channel();
        let inner = Arc::new(Inner {
            queries: Queries::new(&table),
            lock_salt: super::lock_salt(&table),
            table,
            pool,
            claims: Claims::default(),
            sweep_batch: self.sweep_batch,
            _stop_sweep: stop_sweep,
        });
        if let Some(every) = self.sweep_interval {
            tokio::spawn(sweep::run(Arc::downgrade(&inner), every, stopped));
        }
        Ok(PostgresStore { inner })
    }
}
