//! Statements sent together: a transaction's writes are pipelined (sent
//! without waiting for each answer), so a batch costs about one round trip
//! plus the commit instead of one per statement.

use futures::future::try_join_all;
use tokio_postgres::types::ToSql;

use super::pg;
use crate::store::Result;

pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// Boxes a statement's parameters.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$(Box::new($value) as $crate::store::postgres::batch::Param),*]
    };
}
pub(super) use params;

#[derive(Default)]
pub(super) struct Batch {
    statements: Vec<(&'static str, Vec<Param>)>,
}

impl Batch {
    pub(super) fn push(&mut self, sql: &'static str, params: Vec<Param>) {
        self.statements.push((sql, params));
    }

    pub(super) fn append(&mut self, other: Batch) {
        self.statements.extend(other.statements);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Runs every statement, in order, pipelined; returns the rows each
    /// changed (or returned).
    pub(super) async fn run(
        &self,
        client: &deadpool_postgres::Transaction<'_>,
    ) -> Result<Vec<u64>> {
        let prepared = try_join_all(
            self.statements
                .iter()
                .map(|(sql, _)| client.prepare_cached(sql)),
        )
        .await
        .map_err(pg)?;
        try_join_all(
            self.statements
                .iter()
                .zip(&prepared)
                .map(|((_, params), stmt)| {
                    let refs: Vec<&(dyn ToSql + Sync)> = params
                        .iter()
                        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                        .collect();
                    async move { client.execute(stmt, &refs).await }
                }),
        )
        .await
        .map_err(pg)
    }
}
