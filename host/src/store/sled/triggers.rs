//! [`TriggerStore`] on sled.

use super::{Op, SledStore, keys, keys::TRIGGER_STATE};
use crate::store::{Result, TriggerState, TriggerStore, decode};

impl TriggerStore for SledStore {
    fn state(&self, tenant: &str, flow: &str) -> Result<Option<TriggerState>> {
        self.get(TRIGGER_STATE, &keys::join(&[tenant, flow]))?
            .map(|bytes| decode(TRIGGER_STATE, &bytes))
            .transpose()
    }

    fn save_state(&self, tenant: &str, flow: &str, state: &TriggerState) -> Result<()> {
        self.apply(vec![Op::put_json(
            TRIGGER_STATE,
            keys::join(&[tenant, flow]),
            state,
        )])
    }
}
