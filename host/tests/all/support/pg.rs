//! The PostgreSQL server of the tests: `./dev test` starts a throwaway
//! cluster and names it in `SWITCHYARD_TEST_POSTGRES`; each test gets a
//! database of its own on it, so tests share nothing but the server.

use rand::RngCore;

/// The variable `./dev test` sets to the cluster's URL.
pub const URL_VAR: &str = "SWITCHYARD_TEST_POSTGRES";

/// The master key every host of a shared store is given (tests only).
pub const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The test cluster's URL (its maintenance database).
pub fn server() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: the PostgreSQL tests need a server \
             (`./dev test` starts a throwaway cluster and sets it)"
        )
    })
}

/// Creates an empty database on the test cluster; returns its URL.
pub async fn fresh_database() -> String {
    let server = server();
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test cluster at {server}: {e}"));
    let driver = tokio::spawn(connection);
    let mut random = [0u8; 6];
    rand::rng().fill_bytes(&mut random);
    let name = format!("sy_{}", hex::encode(random));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    drop(client);
    let _ = driver.await;
    let (base, _) = server
        .rsplit_once('/')
        .expect("the test cluster's URL names a database");
    format!("{base}/{name}")
}

/// Runs one statement on the database at `url` and returns its rows (what
/// a test reads of the store's tables, or changes to stage a failure).
pub async fn query(url: &str, statement: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let driver = tokio::spawn(connection);
    let rows = client
        .query(statement, &[])
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    drop(client);
    let _ = driver.await;
    rows
}
