//! Building a [`RedisStore`]: where the server is, the key prefix, the timeouts, the local tier.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Client;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;

#[cfg(doc)]
use super::DEFAULT_LOCAL_TIER_BYTES;
use super::connection::Connection;
use super::scripts::Scripts;
use super::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_PREFIX, DEFAULT_RESPONSE_TIMEOUT, RedisStore};
use crate::store::StoreError;
use crate::store::completed::CompletedCache;

/// Builds a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    target: Option<Target>,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    local_tier: Option<u64>,
}

enum Target {
    Url(String),
    Client(Client),
    Cluster(Vec<String>),
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("local_tier", &self.local_tier)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    pub(super) fn new() -> Self {
        Self {
            target: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            local_tier: None,
        }
    }

    /// The server, as a redis-rs URL: `redis://[:password@]host[:port][/db]`, or
    /// `redis+unix:///path/to/socket` for a unix socket. (TLS, `rediss://`, is not enabled.)
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.target = Some(Target::Url(url.into()));
        self
    }

    /// A Redis Cluster, by the URLs of some of its nodes (`redis://host:port`; one reachable node
    /// is enough to discover the others). Every operation of the store is one script on one key,
    /// so it runs on the node that holds the key's slot, atomically there, and the store works
    /// unchanged across resharding and failover (redis-rs's cluster connection follows `MOVED`
    /// and `ASK` redirections).
    pub fn cluster<I, U>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.target = Some(Target::Cluster(nodes.into_iter().map(Into::into).collect()));
        self
    }

    /// The server, as a client of the [`redis`](https://docs.rs/redis/1) crate (version 1) built
    /// by the application.
    pub fn client(mut self, client: Client) -> Self {
        self.target = Some(Target::Client(client));
        self
    }

    /// The prefix of every key (default [`DEFAULT_PREFIX`], `idem:`). Services sharing one Redis
    /// use different prefixes to keep their keys apart.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one attempt to connect may take (default [`DEFAULT_CONNECT_TIMEOUT`], 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one command may wait for an answer (default [`DEFAULT_RESPONSE_TIMEOUT`], 1 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Keeps completed records in an in-process tier of at most `max_bytes` (response sizes plus
    /// a fixed overhead per record), so that replays of them skip Redis; `0` switches it off, as
    /// is the default. See [`RedisStore`]'s *Local tier* for the trade-off and
    /// [`DEFAULT_LOCAL_TIER_BYTES`] for a starting size.
    pub fn local_tier(mut self, max_bytes: u64) -> Self {
        self.local_tier = (max_bytes > 0).then_some(max_bytes);
        self
    }

    /// Connects and answers the store.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when neither a URL, a client nor cluster nodes were given, a URL is
    /// invalid, a timeout is zero, or Redis cannot be reached now (a service should not start with its idempotency store
    /// unreachable; once running, it rides out outages as described on [`RedisStore`]).
    pub async fn build(self) -> Result<RedisStore, StoreError> {
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(StoreError::new(
                "Redis connect and response timeouts must be longer than zero",
            ));
        }
        let client = match self.target {
            Some(Target::Client(client)) => client,
            Some(Target::Url(url)) => Client::open(url.as_str())
                .map_err(|e| StoreError::with_source(format!("invalid Redis URL {url:?}"), e))?,
            Some(Target::Cluster(nodes)) => {
                let connection =
                    connect_cluster(nodes, self.connect_timeout, self.response_timeout).await?;
                return Ok(RedisStore {
                    connection,
                    prefix: self.prefix.into(),
                    local: self.local_tier.map(CompletedCache::new),
                    scripts: Arc::new(Scripts::new()),
                });
            }
            None => {
                return Err(StoreError::new(
                    "RedisStore needs a URL, a client or cluster nodes",
                ));
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map(Connection::Single)
            .map_err(|e| StoreError::with_source("could not connect to Redis", e))?;
        Ok(RedisStore {
            connection,
            prefix: self.prefix.into(),
            local: self.local_tier.map(CompletedCache::new),
            scripts: Arc::new(Scripts::new()),
        })
    }
}

/// Connects to a cluster through the given nodes.
async fn connect_cluster(
    nodes: Vec<String>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Connection, StoreError> {
    if nodes.is_empty() {
        return Err(StoreError::new(
            "a Redis Cluster needs the URL of at least one node",
        ));
    }
    let client = ClusterClient::builder(nodes.iter().map(String::as_str))
        .connection_timeout(connect_timeout)
        .response_timeout(response_timeout)
        .retries(2)
        .build()
        .map_err(|e| {
            StoreError::with_source(format!("invalid Redis Cluster nodes {nodes:?}"), e)
        })?;
    client
        .get_async_connection()
        .await
        .map(Connection::Cluster)
        .map_err(|e| StoreError::with_source("could not connect to the Redis Cluster", e))
}
