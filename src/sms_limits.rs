//! Limits against SMS pumping, beside the per-address and per-IP ones: per client
//! network (IPv4 /24, IPv6 /64), per country calling code, and a global hourly
//! budget of messages that stops all SMS sending when spent.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Config;
use crate::error::ApiError;
use crate::ratelimit::HourlyLimit;

pub struct SmsLimits {
    pub start_per_network: HourlyLimit,
    pub start_per_calling_code: HourlyLimit,
    budget: HourlyLimit,
    /// Set while the budget is spent, so the ERROR is logged once per episode, not per request.
    budget_spent: AtomicBool,
}

impl SmsLimits {
    pub fn from_config(config: &Config) -> Self {
        SmsLimits {
            start_per_network: HourlyLimit::per_hour(config.limit_start_per_subnet_per_hour).named("start_per_network"),
            start_per_calling_code: HourlyLimit::per_hour(config.limit_start_per_calling_code_per_hour).named("start_per_calling_code"),
            budget: HourlyLimit::per_hour(config.sms_budget_per_hour).named("sms_budget"),
            budget_spent: AtomicBool::new(false),
        }
    }

    /// Takes one message from the global budget.
    pub fn spend_budget(&self) -> Result<(), ApiError> {
        match self.budget.check("") {
            Ok(()) => {
                self.budget_spent.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(wait) => {
                if !self.budget_spent.swap(true, Ordering::Relaxed) {
                    tracing::error!("SMS_BUDGET_PER_HOUR is spent: no SMS is sent until it refills (next in {wait} s)");
                }
                Err(ApiError::rate_limited(wait, format!("sending is paused; retry in {wait} seconds")))
            }
        }
    }

    pub fn purge(&self) {
        for limit in [&self.start_per_network, &self.start_per_calling_code, &self.budget] {
            limit.purge();
        }
    }
}
