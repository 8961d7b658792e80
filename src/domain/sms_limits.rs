//! Limits against SMS pumping, beside the per-address and per-IP ones: per client
//! network (IPv4 /24, IPv6 /64), per country calling code, and a global hourly
//! budget of messages that stops all SMS sending when spent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::domain::ratelimit::{KeyedLimit, Refusal, SharedLimits};

pub struct SmsLimits {
    pub start_per_network: KeyedLimit,
    pub start_per_calling_code: KeyedLimit,
    budget: Arc<SmsBudget>,
}

/// The global hourly SMS budget; spent inside the transaction that queues a message.
pub struct SmsBudget {
    limit: KeyedLimit,
    /// Set while the budget is spent, so the ERROR is logged once per episode, not per request.
    spent: AtomicBool,
}

impl SmsLimits {
    pub fn from_config(config: &Config, shared: Option<&Arc<SharedLimits>>) -> Self {
        let limit = |n, name| KeyedLimit::per_hour(n).named(name).shared(shared);
        SmsLimits {
            start_per_network: limit(config.limit.start_per_subnet_per_hour, "start_per_network"),
            start_per_calling_code: limit(config.limit.start_per_calling_code_per_hour, "start_per_calling_code"),
            budget: Arc::new(SmsBudget { limit: limit(config.sms_budget_per_hour, "sms_budget"), spent: AtomicBool::new(false) }),
        }
    }

    pub fn budget(&self) -> Arc<SmsBudget> {
        Arc::clone(&self.budget)
    }

    pub fn purge(&self) {
        for limit in [&self.start_per_network, &self.start_per_calling_code, &self.budget.limit] {
            limit.purge();
        }
    }
}

impl SmsBudget {
    /// Takes one message from the budget (every instance's, when the limits are shared).
    pub async fn spend(&self) -> Result<(), Refusal> {
        match self.limit.check("").await {
            Ok(()) => {
                self.spent.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(Refusal::Wait(wait)) => {
                if !self.spent.swap(true, Ordering::Relaxed) {
                    tracing::error!("SMS_BUDGET_PER_HOUR is spent: no SMS is sent until it refills (next in {wait} s)");
                }
                Err(Refusal::Wait(wait))
            }
            Err(refusal) => Err(refusal),
        }
    }
}
