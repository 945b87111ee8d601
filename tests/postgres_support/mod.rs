//! What the Postgres behaviour tests share: the test cluster, a store and a charges table of
//! their own per test, and a server on 127.0.0.1:0.

#![allow(dead_code, unreachable_pub)]

#[path = "../../idem-runtime/tests/support/postgres_server.rs"]
pub mod server;

use std::net::SocketAddr;

use axum::{Extension, Router};
use idem::config::{Idempotency, IdempotencyBuilder};
use idem::postgres::sqlx;
use idem::store::PostgresStore;
use tokio::net::TcpListener;

pub use self::server::{PostgresServer, unique_table};

/// A store on a table of its own; `None` when the tests are skipped.
pub async fn store() -> Option<PostgresStore> {
    let server = PostgresServer::shared()?;
    Some(
        PostgresStore::builder()
            .url(server.url())
            .table(unique_table("idem"))
            .migrate(true)
            .build()
            .await
            .expect("connects to the test cluster"),
    )
}

/// Creates a charges table of its own: an id, an amount and a tag that is unique, checked only at
/// commit (so that a charge with a tag already used fails the commit, not the insert).
pub async fn charges_table(pool: &sqlx::PgPool) -> String {
    let table = unique_table("charges");
    sqlx::query(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, amount bigint NOT NULL, tag text, \
         CONSTRAINT {table}_tag UNIQUE (tag) DEFERRABLE INITIALLY DEFERRED)"
    ))
    .execute(pool)
    .await
    .expect("charges table");
    table
}

/// The rows of `table`.
pub async fn rows(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("count")
}

/// `router` with an `Idempotency` on `store` (configured by `configure`), served on 127.0.0.1:0.
pub async fn serve(
    router: Router,
    store: PostgresStore,
    configure: impl FnOnce(IdempotencyBuilder) -> IdempotencyBuilder,
) -> SocketAddr {
    let idempotency = configure(Idempotency::builder().store(store))
        .build()
        .expect("valid settings");
    serve_router(router.layer(Extension(idempotency))).await
}

/// `router` as it is, served on 127.0.0.1:0 until the test ends.
pub async fn serve_router(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A client that reuses no connection.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}
