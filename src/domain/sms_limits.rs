//! Limits against SMS pumping, beside the per-address and per-IP ones: per client
//! network (IPv4 /24, IPv6 /64), per country calling code, and a global hourly
//! budget of messages that stops all SMS sending when spent. No one network and no one
//! country (but the operator's home countries) may spend more than its share of that
//! budget, so a few clients cannot spend it for everyone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::domain::phone;
use crate::domain::ratelimit::{KeyedLimit, Refusal, SharedLimits};

pub struct SmsLimits {
    pub start_per_network: KeyedLimit,
    pub start_per_calling_code: KeyedLimit,
    budget: Arc<SmsBudget>,
}

/// The global hourly SMS budget; spent inside the transaction that queues a message.
pub struct SmsBudget {
    limit: KeyedLimit,
    /// Each client network's share of `limit` (`SMS_BUDGET_NETWORK_SHARE`).
    per_network: KeyedLimit,
    /// Each calling code's share of `limit` (`SMS_BUDGET_COUNTRY_SHARE`), but the home countries'.
    per_country: KeyedLimit,
    /// Calling codes held to no country share: most users come from there.
    home_countries: Vec<u16>,
    /// Set while the budget is spent, so the ERROR is logged once per episode, not per request.
    spent: AtomicBool,
}

impl SmsLimits {
    pub fn from_config(config: &Config, shared: Option<&Arc<SharedLimits>>) -> Result<Self, String> {
        let limit = |n, name| KeyedLimit::per_hour(n).named(name).shared(shared);
        let budget = config.sms_budget.per_hour;
        let home = &config.sms_budget.home_countries;
        let home_countries = if home.is_empty() {
            phone::calling_codes("DEFAULT_REGION", config.phone.default_region.as_str())?
        } else {
            phone::calling_codes("SMS_BUDGET_HOME_COUNTRIES", home.clone())?
        };
        Ok(SmsLimits {
            start_per_network: limit(config.limit.start_per_subnet_per_hour, "start_per_network"),
            start_per_calling_code: limit(config.limit.start_per_calling_code_per_hour, "start_per_calling_code"),
            budget: Arc::new(SmsBudget {
                limit: limit(budget, "sms_budget"),
                per_network: limit(share_of(budget, config.sms_budget.network_share), "sms_budget_network_share"),
                per_country: limit(share_of(budget, config.sms_budget.country_share), "sms_budget_country_share"),
                home_countries,
                spent: AtomicBool::new(false),
            }),
        })
    }

    pub fn budget(&self) -> Arc<SmsBudget> {
        Arc::clone(&self.budget)
    }

    pub fn purge(&self) {
        let budget = &self.budget;
        for limit in [&self.start_per_network, &self.start_per_calling_code, &budget.limit, &budget.per_network, &budget.per_country] {
            limit.purge();
        }
    }
}

/// `percent` of `budget`, at least one; 0 (no limit) when the budget is off or the
/// share is 0 or 100.
fn share_of(budget: u32, percent: u32) -> u32 {
    if budget == 0 || percent == 0 || percent >= 100 {
        return 0;
    }
    let share = (u64::from(budget) * u64::from(percent)).div_ceil(100);
    u32::try_from(share).unwrap_or(budget).max(1)
}

impl SmsBudget {
    /// Takes one message from the budget (every instance's, when the limits are shared)
    /// for a number with `calling_code`, asked for from the client network `network`.
    /// A network or country over its share spends nothing of what the rest of the world
    /// has left; in Redis the three are decided in one step, all or nothing.
    pub async fn spend(&self, calling_code: u16, network: &str) -> Result<(), Refusal> {
        let country = calling_code.to_string();
        let mut checks = vec![(&self.per_network, network)];
        if !self.home_countries.contains(&calling_code) {
            checks.push((&self.per_country, country.as_str()));
        }
        checks.push((&self.limit, ""));
        let (refused, refusal) = match KeyedLimit::check_all("sms_budget", &checks).await {
            Ok(()) => {
                self.spent.store(false, Ordering::Relaxed);
                return Ok(());
            }
            Err((_, Refusal::Unavailable)) => return Err(Refusal::Unavailable),
            Err(refused) => refused,
        };
        let limit = checks[refused].0;
        if std::ptr::eq(limit, &self.per_network) {
            tracing::info!(network, "SMS_BUDGET_NETWORK_SHARE of this client network is spent");
        } else if std::ptr::eq(limit, &self.per_country) {
            tracing::info!("SMS_BUDGET_COUNTRY_SHARE of calling code +{calling_code} is spent");
        } else if let Refusal::Wait(wait) = refusal {
            if !self.spent.swap(true, Ordering::Relaxed) {
                tracing::error!("SMS_BUDGET_PER_HOUR is spent: no SMS is sent until it refills (next in {wait} s)");
            }
        }
        Err(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_a_percentage_of_the_budget_and_never_rounds_to_nothing() {
        assert_eq!(share_of(1000, 25), 250);
        assert_eq!(share_of(1000, 10), 100);
        assert_eq!(share_of(10, 25), 3, "rounded up");
        assert_eq!(share_of(3, 1), 1);
        assert_eq!((share_of(1000, 0), share_of(1000, 100), share_of(0, 25)), (0, 0, 0), "off");
    }

    fn spend(budget: &SmsBudget, calling_code: u16, network: &str) -> Result<(), Refusal> {
        futures_util::FutureExt::now_or_never(budget.spend(calling_code, network)).expect("a local limit answers at once")
    }

    fn budget(vars: &[(&str, &str)]) -> Arc<SmsBudget> {
        SmsLimits::from_config(&Config::from_vars(vars.iter().copied()).unwrap(), None).unwrap().budget()
    }

    #[test]
    fn one_network_or_country_cannot_spend_the_budget_for_everyone() {
        let vars = [("SMS_BUDGET_PER_HOUR", "20"), ("SMS_BUDGET_NETWORK_SHARE", "25"), ("SMS_BUDGET_COUNTRY_SHARE", "50")];
        let budget = budget(&vars);
        for _ in 0..5 {
            spend(&budget, 49, "198.51.100.0/24").unwrap();
        }
        assert!(matches!(spend(&budget, 49, "198.51.100.0/24"), Err(Refusal::Wait(_))), "the network's share is spent");
        for _ in 0..5 {
            spend(&budget, 49, "203.0.113.0/24").unwrap();
        }
        assert!(matches!(spend(&budget, 49, "192.0.2.0/24"), Err(Refusal::Wait(_))), "the country's share is spent");
        for network in ["192.0.2.0/24", "192.0.2.0/24", "10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"] {
            spend(&budget, 44, network).unwrap();
        }
        for network in ["10.0.3.0/24", "10.0.4.0/24", "10.0.5.0/24", "10.0.6.0/24", "10.0.7.0/24"] {
            spend(&budget, 33, network).unwrap();
        }
        assert!(matches!(spend(&budget, 1, "10.0.8.0/24"), Err(Refusal::Wait(_))), "the whole budget is spent");
    }

    #[test]
    fn home_countries_are_held_to_no_country_share() {
        let vars = [("SMS_BUDGET_PER_HOUR", "10"), ("SMS_BUDGET_COUNTRY_SHARE", "20"), ("SMS_BUDGET_NETWORK_SHARE", "0")];
        for home in [&[("SMS_BUDGET_HOME_COUNTRIES", "DE, 44")][..], &[("DEFAULT_REGION", "DE")][..]] {
            let budget = budget(&[&vars[..], home].concat());
            for _ in 0..7 {
                spend(&budget, 49, "198.51.100.0/24").unwrap();
            }
            spend(&budget, 33, "198.51.100.0/24").unwrap();
            spend(&budget, 33, "198.51.100.0/24").unwrap();
            assert!(spend(&budget, 33, "198.51.100.0/24").is_err(), "the rest are held to their share");
            spend(&budget, 49, "198.51.100.0/24").expect("the budget has one left for the home country");
        }
        let bad = Config::from_vars([("SMS_BUDGET_HOME_COUNTRIES", "Narnia")]).unwrap();
        assert!(SmsLimits::from_config(&bad, None).err().unwrap().contains("SMS_BUDGET_HOME_COUNTRIES"));
    }
}
