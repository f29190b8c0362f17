//! [`Inbox`] on sled: deliveries keyed by arrival time (so they are
//! processed in order), made durable by the group commit; rejected
//! deliveries keyed by flow, then time, so the newest of each flow are kept
//! in one pass over keys.

use rand::RngCore;

use super::{Op, SledStore, keys, keys::*};
use crate::store::{BoxFuture, Delivery, Inbox, InboxKey, Rejected, Result, StoreError, decode};

impl Inbox for SledStore {
    fn accept(&self, delivery: &Delivery) -> BoxFuture<'_, Result<InboxKey>> {
        let mut random = [0u8; 8];
        rand::rng().fill_bytes(&mut random);
        let key = format!("{:016x}{}", delivery.received_at, hex::encode(random)).into_bytes();
        let written = self.apply(vec![Op::put_json(INBOX, key.clone(), delivery)]);
        Box::pin(async move {
            written?;
            self.commit.durable().await.map_err(StoreError::Backend)?;
            Ok(InboxKey(key))
        })
    }

    fn pending(
        &self,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, Result<Delivery>)>> {
        let from = after.map(|k| keys::after(&k.0)).unwrap_or_default();
        Ok(self
            .scan_from(INBOX, b"", &from, limit)?
            .into_iter()
            .map(|(key, value)| (InboxKey(key), decode(INBOX, &value)))
            .collect())
    }

    fn defer(&self, key: &InboxKey, delivery: &Delivery) -> Result<()> {
        self.apply(vec![Op::put_json(INBOX, key.0.clone(), delivery)])
    }

    fn discard(&self, key: &InboxKey) -> Result<()> {
        self.apply(vec![Op::delete(INBOX, key.0.clone())])
    }

    fn reject(
        &self,
        key: Option<&InboxKey>,
        tenant: &str,
        flow: &str,
        rejected: &Rejected,
    ) -> Result<()> {
        let mut random = [0u8; 4];
        rand::rng().fill_bytes(&mut random);
        let mut record_key = keys::prefix(&[tenant, flow]);
        record_key.extend_from_slice(
            format!("{:016x}{}", rejected.received_at, hex::encode(random)).as_bytes(),
        );
        let mut ops: Vec<Op> = key
            .map(|k| Op::delete(INBOX, k.0.clone()))
            .into_iter()
            .collect();
        ops.push(Op::put_json(REJECTED, record_key, rejected));
        self.apply(ops)
    }

    fn rejected(&self, tenant: &str, flow: &str) -> Result<Vec<Rejected>> {
        let mut list = self
            .scan_prefix(REJECTED, &keys::prefix(&[tenant, flow]))?
            .into_iter()
            .map(|(_, value)| decode(REJECTED, &value))
            .collect::<Result<Vec<Rejected>>>()?;
        list.reverse();
        Ok(list)
    }

    fn trim_rejected(&self, tenant: &str, flow: &str, keep: usize) -> Result<usize> {
        let keys = self.scan_prefix(REJECTED, &keys::prefix(&[tenant, flow]))?;
        let excess = keys.len().saturating_sub(keep);
        self.apply(
            keys.into_iter()
                .take(excess)
                .map(|(key, _)| Op::delete(REJECTED, key))
                .collect(),
        )?;
        Ok(excess)
    }

    fn prune_rejected(&self, before: u64, keep: usize) -> Result<usize> {
        let keys: Vec<Vec<u8>> = self
            .tree(REJECTED)?
            .iter()
            .keys()
            .map(|key| key.map(|k| k.to_vec()).map_err(super::backend))
            .collect::<Result<_>>()?;
        let old = rejected_to_forget(&keys, before, keep);
        let n = old.len();
        self.apply(
            old.into_iter()
                .map(|key| Op::delete(REJECTED, key.to_vec()))
                .collect(),
        )?;
        Ok(n)
    }
}

/// The keys (`{tenant}\0{flow}\0{received_at:016x}{random}`, sorted) of
/// rejected deliveries older than `cutoff` or beyond a flow's newest `keep`.
fn rejected_to_forget(sorted: &[Vec<u8>], cutoff: u64, keep: usize) -> Vec<&[u8]> {
    let split = |key: &[u8]| -> Option<(usize, u64)> {
        let second = key.iter().enumerate().filter(|(_, b)| **b == 0).nth(1)?.0;
        let time = std::str::from_utf8(key.get(second + 1..second + 17)?).ok()?;
        Some((second + 1, u64::from_str_radix(time, 16).ok()?))
    };
    let mut forget = Vec::new();
    let mut start = 0;
    while start < sorted.len() {
        let Some((flow_len, _)) = split(&sorted[start]) else {
            forget.push(&sorted[start][..]); // not a key this code writes
            start += 1;
            continue;
        };
        let flow = &sorted[start][..flow_len];
        let end = start
            + sorted[start..]
                .iter()
                .take_while(|k| k.starts_with(flow))
                .count();
        let excess = (end - start).saturating_sub(keep);
        for (i, key) in sorted[start..end].iter().enumerate() {
            let too_old = split(key).is_none_or(|(_, at)| at < cutoff);
            if i < excess || too_old {
                forget.push(&key[..]);
            }
        }
        start = end;
    }
    forget
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: usize = 1_000;

    fn key(flow: &str, at: u64, n: u32) -> Vec<u8> {
        format!("t\0{flow}\0{at:016x}{n:08x}").into_bytes()
    }

    #[test]
    fn old_and_excess_rejections_are_forgotten_per_flow() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        // Flow a: 1,005 recent entries; flow b: 3 entries, one old.
        for n in 0..(KEEP as u32 + 5) {
            keys.push(key("a", 1_000 + u64::from(n), n));
        }
        keys.extend([key("b", 10, 0), key("b", 2_000, 1), key("b", 2_001, 2)]);
        keys.sort();
        let forget = rejected_to_forget(&keys, 500, KEEP);
        // a loses its 5 oldest; b loses the one received before the cutoff.
        let mut expected: Vec<Vec<u8>> = (0..5).map(|n| key("a", 1_000 + n, n as u32)).collect();
        expected.push(key("b", 10, 0));
        assert_eq!(
            forget,
            expected.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        // A flow whose id shares a prefix with another is its own group.
        let keys = vec![key("a", 10, 0), key("ab", 2_000, 0)];
        assert_eq!(rejected_to_forget(&keys, 500, KEEP), vec![&keys[0][..]]);
    }
}
