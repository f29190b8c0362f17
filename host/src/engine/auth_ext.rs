//! The 0.2.0 contract's `auth` export: a connector may declare an auth
//! scheme added after 0.1.0 (AWS Signature V4) by exporting it beside the
//! 0.1.0 `plugin`. It is asked once, when the version's manifest is read,
//! in an instance of its own with the same limits as any call.

use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::{
    DeadlineHit, Engine, LoadedPlugin,
    bindings::v0_2::{self, exports::switchyard::connector0_2_0::auth},
    host::{HostState, Limiter},
};
use crate::{engine::CallEnv, manifest::AuthScheme};

impl Engine {
    /// The scheme a 0.2.0 connector's `auth` export declares; `None` for a
    /// 0.1.0 connector.
    pub(super) async fn declared_auth(
        &self,
        plugin: &LoadedPlugin,
        timeout: Duration,
    ) -> Result<Option<AuthScheme>, String> {
        let Some(pre) = &plugin.auth else {
            return Ok(None);
        };
        let deadline = Instant::now() + timeout;
        let limiter = Limiter {
            memory_limit: self.config.memory_limit,
        };
        let mut store = Store::new(
            &self.engine,
            HostState::new(CallEnv::default(), limiter, deadline, plugin.spec.clone()),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlineHit))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let instance: v0_2::Connector = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("instantiating for `auth`: {e}"))?;
        let scheme = instance
            .switchyard_connector0_2_0_auth()
            .call_scheme(&mut store)
            .await
            .map_err(|e| format!("calling `auth.scheme`: {e}"))?;
        Ok(Some(match scheme {
            auth::AuthScheme::AwsSigv4(s) => AuthScheme::AwsSigV4 {
                region: s.region,
                service: s.service,
            },
        }))
    }
}
