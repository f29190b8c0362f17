//! Rate limits of the public endpoints (`/hooks/…`, `/oauth/callback`): a
//! budget per source address and one per webhook, so that no sender and no
//! flooded hook takes the host's capacity or its disk. A request over its
//! budget gets 429 with `Retry-After` before its body is read or anything is
//! stored.
//!
//! The decision is GCRA (a token bucket kept as one timestamp per key), a pure
//! function with table tests. Keys live in a bounded map: a key whose bucket
//! is full again carries no information and is dropped when the map is
//! pruned, and once the map holds [`MAX_KEYS`] busy keys, new keys share one
//! overflow budget, so an attacker rotating addresses cannot grow memory.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::metrics::{counter::Counter, family::Family};

use super::ApiError;
use crate::metrics::LimitLabel;

/// Keys one limiter tracks at most (about 40 bytes each for addresses).
pub(super) const MAX_KEYS: usize = 100_000;

/// How often idle keys are dropped while the map has room.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// How often a full map is searched for idle keys (each pass walks it).
const PRUNE_FULL_EVERY: Duration = Duration::from_millis(250);

/// A sustained rate with a burst on top; `per_second == 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// The operator's limits for the public endpoints (`serve` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicLimits {
    /// Requests of one source address to `/hooks/…` and `/oauth/callback`.
    pub source: Rate,
    /// Deliveries to one webhook.
    pub hook: Rate,
    /// Proxies in front of the host that append to `X-Forwarded-For`; 0:
    /// the TCP peer is the source.
    pub proxy_hops: usize,
}

/// GCRA in nanoseconds: each request moves the key's theoretical arrival
/// time (TAT) on by `interval`; a request is admitted while the TAT is at
/// most `tolerance` ahead of now, which allows `burst` requests at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    fn new(rate: Rate) -> Option<Gcra> {
        if rate.per_second == 0 {
            return None;
        }
        let interval = 1_000_000_000 / u64::from(rate.per_second);
        Some(Gcra {
            interval,
            tolerance: interval * u64::from(rate.burst.max(1) - 1),
        })
    }

    /// Admits a request at `now` of a key whose TAT is `tat` (a fresh key's
    /// TAT is anything up to `now`): the key's new TAT, or how long until a
    /// request would be admitted.
    fn decide(self, tat: u64, now: u64) -> Result<u64, Duration> {
        let tat = tat.max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            Err(Duration::from_nanos(ahead - self.tolerance))
        } else {
            Ok(tat + self.interval)
        }
    }
}

/// One GCRA budget per key, in a bounded map.
struct Keyed<K> {
    gcra: Gcra,
    capacity: usize,
    epoch: Instant,
    table: Mutex<Table<K>>,
}

struct Table<K> {
    tats: HashMap<K, u64>,
    /// The budget shared by new keys while the map is full of busy ones.
    overflow: u64,
    pruned_at: u64,
}

impl<K: Hash + Eq> Keyed<K> {
    fn new(gcra: Gcra, capacity: usize) -> Self {
        Keyed {
            gcra,
            capacity,
            epoch: Instant::now(),
            table: Mutex::new(Table {
                tats: HashMap::new(),
                overflow: 0,
                pruned_at: 0,
            }),
        }
    }

    fn check<Q>(&self, key: &Q) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.check_at(key, now)
    }

    /// [`Keyed::check`] at `now` (nanoseconds since the limiter was made).
    fn check_at<Q>(&self, key: &Q, now: u64) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        // Nothing below can panic while the lock is held, so a poisoned lock
        // still holds a consistent table.
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let since_prune = now.saturating_sub(table.pruned_at);
        let full = table.tats.len() >= self.capacity && !table.tats.contains_key(key);
        if since_prune >= PRUNE_EVERY.as_nanos() as u64
            || (full && since_prune >= PRUNE_FULL_EVERY.as_nanos() as u64)
        {
            table.prune(now);
        }
        if let Some(tat) = table.tats.get_mut(key) {
            *tat = self.gcra.decide(*tat, now)?;
        } else if table.tats.len() < self.capacity {
            let tat = self.gcra.decide(now, now)?;
            table.tats.insert(key.to_owned(), tat);
        } else {
            table.overflow = self.gcra.decide(table.overflow, now)?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tats
            .len()
    }
}

impl<K: Hash + Eq> Table<K> {
    /// Drops keys whose bucket is full again: they decide nothing a fresh
    /// key would not.
    fn prune(&mut self, now: u64) {
        self.tats.retain(|_, tat| *tat > now);
        if self.tats.capacity() > 4 * self.tats.len().max(1024) {
            self.tats.shrink_to_fit();
        }
        self.pruned_at = now;
    }
}

/// The limiters of the public endpoints, shared by their routes.
pub(super) struct Limits {
    sources: Option<Keyed<IpAddr>>,
    hooks: Option<Keyed<String>>,
    proxy_hops: usize,
    refused: Family<LimitLabel, Counter>,
}

impl Limits {
    /// `refused` counts the requests each limit refused.
    pub(super) fn new(settings: PublicLimits, refused: Family<LimitLabel, Counter>) -> Self {
        Limits {
            sources: Gcra::new(settings.source).map(|g| Keyed::new(g, MAX_KEYS)),
            hooks: Gcra::new(settings.hook).map(|g| Keyed::new(g, MAX_KEYS)),
            proxy_hops: settings.proxy_hops,
            refused,
        }
    }

    /// Takes one delivery from the budget of the hook at `token`. Called
    /// once the token is known to lead to a hook, so that made-up tokens do
    /// not take room in the map.
    pub(super) fn check_hook(&self, token: &str) -> Result<(), ApiError> {
        let Some(hooks) = &self.hooks else {
            return Ok(());
        };
        hooks.check(token).map_err(|wait| {
            self.refuse("hook");
            too_many(wait, "too many deliveries to this webhook")
        })
    }

    fn check_source(&self, request: &Request) -> Result<(), ApiError> {
        let Some(sources) = &self.sources else {
            return Ok(());
        };
        // Served without connect info (an embedding that does not ask for
        // it), every request counts against one unknown source.
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let address = source(peer, request.headers(), self.proxy_hops);
        sources.check(&bucket(address)).map_err(|wait| {
            self.refuse("source");
            too_many(wait, "too many requests from this address")
        })
    }

    fn refuse(&self, limit: &'static str) {
        self.refused
            .get_or_create(&LimitLabel {
                limit: limit.to_string(),
            })
            .inc();
    }
}

/// Budgets per API token at a rate each tenant sets (the get-object
/// endpoint): a burst of one second's worth, then the rate. Tokens are
/// keyed by their hash, so the map holds no secret.
#[derive(Default)]
pub(super) struct TokenLimits {
    by_rate: Mutex<HashMap<u32, Arc<Keyed<String>>>>,
}

impl TokenLimits {
    pub(super) fn check(&self, token_hash: &str, per_second: u32) -> Result<(), ApiError> {
        let rate = Rate {
            per_second,
            burst: per_second,
        };
        let Some(gcra) = Gcra::new(rate) else {
            return Ok(());
        };
        let keyed = self
            .by_rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(per_second)
            .or_insert_with(|| Arc::new(Keyed::new(gcra, MAX_KEYS)))
            .clone();
        keyed.check(token_hash).map_err(|wait| {
            too_many(
                wait,
                &format!("over this token's {per_second} get-object requests per second"),
            )
        })
    }
}

/// Middleware of the public routes: the source address's budget, before
/// anything else is done for the request.
pub(super) async fn per_source(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    match limits.check_source(&request) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn too_many(wait: Duration, what: &str) -> ApiError {
    // Whole seconds, rounded up: a client that waits that long is admitted.
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{what}; retry in {seconds} s"),
    )
    .retry_after(seconds)
}

/// The address a request counts against: the TCP peer, or with `proxy_hops`
/// trusted proxies in front, the address the outermost of them saw (the
/// `proxy_hops`-th entry of `X-Forwarded-For` from the right; entries further
/// left were written by the client and prove nothing). A header that does not
/// have that entry falls back to the peer.
fn source(peer: Option<IpAddr>, headers: &HeaderMap, proxy_hops: usize) -> IpAddr {
    let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if proxy_hops == 0 {
        return peer;
    }
    // Repeated headers are one list, in order.
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        entries.extend(value.split(',').map(str::trim));
    }
    let Some(entry) = entries.len().checked_sub(proxy_hops).map(|i| entries[i]) else {
        return peer;
    };
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .unwrap_or(peer)
}

/// The key of an address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its
/// /64, the block one subscriber gets, so that rotating through it does not
/// buy a new budget.
fn bucket(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    fn rate(per_second: u32, burst: u32) -> Gcra {
        Gcra::new(Rate { per_second, burst }).unwrap()
    }

    #[test]
    fn gcra_admits_the_burst_then_the_rate() {
        // (rate/s, burst, requests at these ms, expected: Ok or the wait in ms)
        type Case = (u32, u32, &'static [u64], &'static [Result<(), u64>]);
        let cases: &[Case] = &[
            // A burst of 3 at once, the 4th waits one interval.
            (10, 3, &[0, 0, 0, 0], &[Ok(()), Ok(()), Ok(()), Err(100)]),
            // After one interval, one more; refused requests take nothing.
            (
                10,
                3,
                &[0, 0, 0, 0, 0, 100, 100],
                &[Ok(()), Ok(()), Ok(()), Err(100), Err(100), Ok(()), Err(100)],
            ),
            // Paced at the rate, never refused.
            (
                10,
                1,
                &[0, 100, 200, 300],
                &[Ok(()), Ok(()), Ok(()), Ok(())],
            ),
            // Faster than the rate without a burst: every other one waits.
            (
                10,
                1,
                &[0, 50, 100, 150],
                &[Ok(()), Err(50), Ok(()), Err(50)],
            ),
            // A long idle time refills the bucket to the burst, not beyond.
            (
                1,
                2,
                &[0, 0, 0, 60_000, 60_000, 60_000],
                &[Ok(()), Ok(()), Err(1_000), Ok(()), Ok(()), Err(1_000)],
            ),
        ];
        for (n, (per_second, burst, times, expected)) in cases.iter().enumerate() {
            let gcra = rate(*per_second, *burst);
            let mut tat = 0;
            let got: Vec<Result<(), u64>> = times
                .iter()
                .map(|&at| match gcra.decide(tat, at * MS) {
                    Ok(next) => {
                        tat = next;
                        Ok(())
                    }
                    Err(wait) => Err(wait.as_millis() as u64),
                })
                .collect();
            assert_eq!(&got, expected, "case {n}");
        }
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        assert_eq!(
            Gcra::new(Rate {
                per_second: 0,
                burst: 10
            }),
            None
        );
    }

    #[test]
    fn keys_have_their_own_budgets() {
        let keyed = Keyed::<String>::new(rate(1, 2), 10);
        assert!(keyed.check_at("a", 0).is_ok());
        assert!(keyed.check_at("a", 0).is_ok());
        assert_eq!(keyed.check_at("a", 0), Err(Duration::from_secs(1)));
        assert!(keyed.check_at("b", 0).is_ok());
        assert!(keyed.check_at("a", S).is_ok());
    }

    #[test]
    fn idle_keys_are_pruned_and_a_full_map_shares_one_budget() {
        let keyed = Keyed::<u32>::new(rate(1, 2), 3);
        for key in 0..3 {
            assert!(keyed.check_at(&key, 0).is_ok());
        }
        assert_eq!(keyed.len(), 3);
        // Full of busy keys: new keys take from the shared overflow budget.
        assert!(keyed.check_at(&10, 1).is_ok());
        assert!(keyed.check_at(&11, 1).is_ok());
        assert!(keyed.check_at(&12, 1).is_err());
        assert_eq!(keyed.len(), 3, "the map did not grow");
        // Known keys keep their own budgets meanwhile.
        assert!(keyed.check_at(&0, 1).is_ok());
        assert!(keyed.check_at(&0, 1).is_err());
        // Once the keys are idle (buckets full again), a new key prunes
        // them and gets a budget of its own.
        let later = 3 * S;
        assert!(keyed.check_at(&20, later).is_ok());
        assert_eq!(keyed.len(), 1);
        // And the periodic pass drops idle keys even with room to spare.
        let much_later = later + PRUNE_EVERY.as_nanos() as u64 + 3 * S;
        assert!(keyed.check_at(&21, much_later).is_ok());
        assert_eq!(keyed.len(), 1);
    }

    #[test]
    fn rotating_keys_cannot_grow_the_map() {
        let keyed = Keyed::<u64>::new(rate(100, 10), 1_000);
        // A new key every microsecond for 100,000 requests: each key is busy
        // for 10 ms, so about 10,000 are busy at a time, ten times the room.
        for n in 0..100_000u64 {
            let _ = keyed.check_at(&n, n * 1_000);
            assert!(keyed.len() <= 1_000);
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_source_is_the_peer_unless_proxies_are_trusted() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        // (X-Forwarded-For values, trusted hops, expected source)
        let cases: &[(&[&str], usize, &str)] = &[
            // No proxy: the header is the client's word, ignored.
            (&["203.0.113.7"], 0, "10.0.0.9"),
            (&[], 1, "10.0.0.9"),
            // One proxy: the entry it appended, the rightmost.
            (&["203.0.113.7"], 1, "203.0.113.7"),
            (&["1.1.1.1, 203.0.113.7"], 1, "203.0.113.7"),
            // Two proxies: the entry the outer one appended.
            (&["1.1.1.1, 203.0.113.7, 10.1.1.1"], 2, "203.0.113.7"),
            // Repeated headers are one list.
            (&["1.1.1.1", "203.0.113.7, 10.1.1.1"], 2, "203.0.113.7"),
            // Fewer entries than proxies, or garbage: the peer.
            (&["203.0.113.7"], 2, "10.0.0.9"),
            (&["1.1.1.1, not-an-address"], 1, "10.0.0.9"),
            // Ports and IPv6 as some proxies write them.
            (&["203.0.113.7:4711"], 1, "203.0.113.7"),
            (&["[2001:db8::1]:443"], 1, "2001:db8::1"),
            (&["2001:db8::1"], 1, "2001:db8::1"),
        ];
        for (values, hops, expected) in cases {
            assert_eq!(
                source(Some(peer), &headers(values), *hops),
                expected.parse::<IpAddr>().unwrap(),
                "{values:?} with {hops} hops"
            );
        }
        assert_eq!(
            source(None, &HeaderMap::new(), 0),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_block() {
        let cases = [
            ("203.0.113.7", "203.0.113.7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
        ];
        for (address, key) in cases {
            assert_eq!(
                bucket(address.parse().unwrap()),
                key.parse::<IpAddr>().unwrap(),
                "{address}"
            );
        }
    }
}
