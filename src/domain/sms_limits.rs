//! Limits against SMS pumping, beside the per-address and per-IP ones: per client
//! network (IPv4 /24, IPv6 /64), per country calling code, and a global hourly
//! budget of messages that stops all SMS sending when spent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::domain::ratelimit::KeyedLimit;

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
    pub fn from_config(config: &Config) -> Self {
        SmsLimits {
            start_per_network: KeyedLimit::per_hour(config.limit.start_per_subnet_per_hour).named("start_per_network"),
            start_per_calling_code: KeyedLimit::per_hour(config.limit.start_per_calling_code_per_hour).named("start_per_calling_code"),
            budget: Arc::new(SmsBudget {
                limit: KeyedLimit::per_hour(config.sms_budget_per_hour).named("sms_budget"),
                spent: AtomicBool::new(false),
            }),
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
    /// Takes one message from the budget, or says in how many seconds one is back.
    pub fn spend(&self) -> Result<(), u64> {
        match self.limit.check("") {
            Ok(()) => {
                self.spent.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(wait) => {
                if !self.spent.swap(true, Ordering::Relaxed) {
                    tracing::error!("SMS_BUDGET_PER_HOUR is spent: no SMS is sent until it refills (next in {wait} s)");
                }
                Err(wait)
            }
        }
    }
}
