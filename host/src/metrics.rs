//! Prometheus metrics (`GET /metrics`, OpenMetrics text) with
//! `prometheus-client`, the Prometheus project's own Rust client. Labels hold
//! plugin keys, actions and outcomes only: never tenant data.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub plugin: String,
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// `source` (per address) or `hook` (per webhook).
    pub limit: String,
}

type Latency = Family<CallLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub runs: Family<StatusLabel, Counter>,
    pub retries: Counter,
    pub dead_letters: Counter,
    pub queue_depth: Gauge,
    pub step_latency: Latency,
    pub plugin_call_latency: Latency,
    pub deliveries: Family<OutcomeLabel, Counter>,
    pub polls: Family<OutcomeLabel, Counter>,
    pub ack_latency: Histogram,
    pub poll_lag: Histogram,
    pub rate_limited: Family<LimitLabel, Counter>,
    pub entity_events: Family<OutcomeLabel, Counter>,
    pub reconciled: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let runs = Family::<StatusLabel, Counter>::default();
        registry.register(
            "runs",
            "Runs that reached a status (finished, retrying, paused)",
            runs.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "step_retries",
            "Step attempts scheduled again",
            retries.clone(),
        );
        let dead_letters = Counter::default();
        registry.register(
            "dead_letters",
            "Runs that failed for good and went to the dead-letter list",
            dead_letters.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Runs in the durable queue (due now or later)",
            queue_depth.clone(),
        );
        let step_latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "step_duration_seconds",
            "Time of one step attempt, mapping included",
            step_latency.clone(),
        );
        let plugin_call_latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "plugin_call_duration_seconds",
            "Time of one plugin call (instantiation included)",
            plugin_call_latency.clone(),
        );
        let deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome",
            deliveries.clone(),
        );
        let polls = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "polls",
            "Polls of polling triggers by outcome",
            polls.clone(),
        );
        let ack_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "webhook_ack_seconds",
            "From a delivery's arrival to its durable acknowledgement",
            ack_latency.clone(),
        );
        let poll_lag = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "poll_lag_seconds",
            "How late a poll started after it was due",
            poll_lag.clone(),
        );
        let rate_limited = Family::<LimitLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests to public endpoints refused with 429, by the limit they hit",
            rate_limited.clone(),
        );
        let entity_events = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "entity_events",
            "Events of flows with an entity, by what they came to (new, changed, no_op, out_of_order, coalesced)",
            entity_events.clone(),
        );
        let reconciled = Counter::default();
        registry.register(
            "reconciled_runs",
            "Runs started by reconciliation: changes the webhooks missed",
            reconciled.clone(),
        );
        Metrics {
            registry,
            entity_events,
            reconciled,
            runs,
            retries,
            dead_letters,
            queue_depth,
            step_latency,
            plugin_call_latency,
            deliveries,
            polls,
            ack_latency,
            poll_lag,
            rate_limited,
        }
    }
}

impl Metrics {
    pub fn run(&self, status: &str) {
        self.runs
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    pub fn delivery(&self, outcome: &str) {
        self.deliveries
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn entity_event(&self, outcome: &str) {
        self.entity_events
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn poll(&self, outcome: &str) {
        self.polls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn call(&self, family: &Latency, plugin: &str, function: &str, seconds: f64) {
        family
            .get_or_create(&CallLabels {
                plugin: plugin.to_string(),
                function: function.to_string(),
            })
            .observe(seconds);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
