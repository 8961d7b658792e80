//! The limits a login start meets before its code is sent: per client IP, per client
//! network (IPv4 /24, IPv6 /64), per address (an hour and a day), per country calling
//! code, and a global hourly budget of SMS that stops all SMS sending when spent. No one
//! IP, network or country (but the operator's home countries) may spend more than its
//! share of that budget, and the rest of the world together may not spend the part kept
//! for the home countries, so a few clients cannot spend it for everyone.
//!
//! They are all charged in one step, all or nothing, and only for a start that sends a
//! code: a start refused for any reason (too soon after the last code, a spent share)
//! spends nothing, so refused traffic cannot shut a country or a network out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::domain::client_ip::network_key;
use crate::domain::ratelimit::{KeyedLimit, Refusal, SharedLimits};

pub struct StartLimits {
    per_ip: KeyedLimit,
    per_network: KeyedLimit,
    per_address: KeyedLimit,
    per_address_daily: KeyedLimit,
    /// Not for the home countries: a country's starts must not be able to shut that country out.
    per_calling_code: KeyedLimit,
    budget: SmsBudget,
    /// Calling codes held to no country share and no calling-code limit: most users come from there.
    home_countries: Vec<u16>,
}

/// The global hourly SMS budget and its shares.
struct SmsBudget {
    limit: KeyedLimit,
    /// Each client IP's share of `limit` (`SMS_BUDGET_IP_SHARE`), inside its network's.
    per_ip: KeyedLimit,
    /// Each client network's share of `limit` (`SMS_BUDGET_NETWORK_SHARE`).
    per_network: KeyedLimit,
    /// Each calling code's share of `limit` (`SMS_BUDGET_COUNTRY_SHARE`), but the home countries'.
    per_country: KeyedLimit,
    /// What all countries but the home ones may spend together: `limit` less `SMS_BUDGET_HOME_RESERVE`.
    foreign: KeyedLimit,
    /// Set while the budget is spent, so the ERROR is logged once per episode, not per request.
    spent: AtomicBool,
}

/// A login start that is about to send a code.
pub struct Start {
    pub client_ip: String,
    pub address: String,
    /// The country calling code of a phone: only SMS spends the budget (e-mail costs nothing per message).
    pub calling_code: Option<u16>,
}

impl StartLimits {
    pub fn from_config(config: &Config, shared: Option<&Arc<SharedLimits>>) -> Self {
        let hourly = |n, name| KeyedLimit::per_hour(n).named(name).shared(shared);
        let budget = config.sms_budget.per_hour;
        let shares = &config.sms_budget;
        let home_countries = shares.home_calling_codes().to_vec();
        // Rounded down, so that the rest of the world keeps at least one; without home
        // countries there is nobody to keep a reserve for.
        let reserve = u32::try_from(u64::from(budget) * u64::from(shares.home_reserve.min(99)) / 100).unwrap_or(0);
        let foreign = if home_countries.is_empty() || reserve == 0 { 0 } else { budget - reserve };
        StartLimits {
            per_ip: hourly(config.limit.start_per_ip_per_hour, "start_per_ip"),
            per_network: hourly(config.limit.start_per_subnet_per_hour, "start_per_network"),
            per_address: hourly(config.limit.start_per_phone_per_hour, "start_per_address"),
            per_address_daily: KeyedLimit::per_day(config.limit.start_per_phone_per_day).named("start_per_address_per_day").shared(shared),
            per_calling_code: hourly(config.limit.start_per_calling_code_per_hour, "start_per_calling_code"),
            budget: SmsBudget {
                limit: hourly(budget, "sms_budget"),
                per_ip: hourly(share_of(budget, shares.ip_share), "sms_budget_ip_share"),
                per_network: hourly(share_of(budget, shares.network_share), "sms_budget_network_share"),
                per_country: hourly(share_of(budget, shares.country_share), "sms_budget_country_share"),
                foreign: hourly(foreign, "sms_budget_foreign"),
                spent: AtomicBool::new(false),
            },
            home_countries,
        }
    }

    /// Charges every limit `start` meets (every instance's, when the limits are shared),
    /// or none when one refuses.
    pub async fn admit(&self, start: &Start) -> Result<(), Refusal> {
        let (ip, address) = (start.client_ip.as_str(), start.address.as_str());
        let network = network_key(ip);
        let country = start.calling_code.map(|code| code.to_string());
        let budget = &self.budget;
        let mut checks = vec![
            (&self.per_ip, ip),
            (&self.per_network, network.as_str()),
            (&self.per_address, address),
            (&self.per_address_daily, address),
        ];
        if let (Some(calling_code), Some(country)) = (start.calling_code, country.as_deref()) {
            let home = self.home_countries.contains(&calling_code);
            if !home {
                checks.push((&self.per_calling_code, country));
                checks.push((&budget.per_country, country));
                checks.push((&budget.foreign, ""));
            }
            checks.extend([(&budget.per_ip, ip), (&budget.per_network, network.as_str()), (&budget.limit, "")]);
        }
        let (refused, refusal) = match KeyedLimit::check_all("start", &checks).await {
            Ok(()) => {
                if start.calling_code.is_some() {
                    budget.spent.store(false, Ordering::Relaxed);
                }
                return Ok(());
            }
            Err(refused) => refused,
        };
        let limit = checks[refused].0;
        if std::ptr::eq(limit, &budget.per_network) {
            tracing::info!(network, "SMS_BUDGET_NETWORK_SHARE of this client network is spent");
        } else if std::ptr::eq(limit, &budget.per_ip) {
            tracing::info!(network, "SMS_BUDGET_IP_SHARE of a client IP in this network is spent");
        } else if std::ptr::eq(limit, &budget.per_country) {
            tracing::info!("SMS_BUDGET_COUNTRY_SHARE of calling code +{} is spent", country.unwrap_or_default());
        } else if std::ptr::eq(limit, &budget.foreign) {
            tracing::info!("the SMS budget left to countries other than SMS_BUDGET_HOME_COUNTRIES is spent (SMS_BUDGET_HOME_RESERVE)");
        } else if std::ptr::eq(limit, &budget.limit) {
            if let Refusal::Wait(wait) = refusal {
                if !budget.spent.swap(true, Ordering::Relaxed) {
                    tracing::error!("SMS_BUDGET_PER_HOUR is spent: no SMS is sent until it refills (next in {wait} s)");
                }
            }
        }
        Err(refusal)
    }

    pub fn purge(&self) {
        let budget = &self.budget;
        let limits = [
            &self.per_ip,
            &self.per_network,
            &self.per_address,
            &self.per_address_daily,
            &self.per_calling_code,
            &budget.limit,
            &budget.per_ip,
            &budget.per_network,
            &budget.per_country,
            &budget.foreign,
        ];
        for limit in limits {
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

    /// The limits with every start limit but the budget's off, and `vars` over that.
    fn limits(vars: &[(&str, &str)]) -> StartLimits {
        let off = [
            ("LIMIT_START_PER_PHONE_PER_HOUR", "0"),
            ("LIMIT_START_PER_PHONE_PER_DAY", "0"),
            ("LIMIT_START_PER_IP_PER_HOUR", "0"),
            ("LIMIT_START_PER_SUBNET_PER_HOUR", "0"),
            ("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "0"),
            ("SMS_BUDGET_IP_SHARE", "0"),
            ("SMS_BUDGET_NETWORK_SHARE", "0"),
            ("SMS_BUDGET_COUNTRY_SHARE", "0"),
        ];
        let vars: std::collections::BTreeMap<&str, &str> = off.iter().chain(vars).copied().collect();
        StartLimits::from_config(&Config::from_vars(vars).unwrap(), None)
    }

    fn start(limits: &StartLimits, ip: &str, address: &str, calling_code: Option<u16>) -> Result<(), Refusal> {
        let start = Start { client_ip: ip.into(), address: address.into(), calling_code };
        futures_util::FutureExt::now_or_never(limits.admit(&start)).expect("a local limit answers at once")
    }

    fn sms(limits: &StartLimits, ip: &str, calling_code: u16) -> Result<(), Refusal> {
        start(limits, ip, &format!("{calling_code}{ip}"), Some(calling_code))
    }

    #[test]
    fn one_ip_network_or_country_cannot_spend_the_budget_for_everyone() {
        let limits = limits(&[
            ("SMS_BUDGET_PER_HOUR", "20"),
            ("SMS_BUDGET_IP_SHARE", "15"),
            ("SMS_BUDGET_NETWORK_SHARE", "25"),
            ("SMS_BUDGET_COUNTRY_SHARE", "50"),
        ]);
        for _ in 0..3 {
            sms(&limits, "198.51.100.1", 49).unwrap();
        }
        assert!(matches!(sms(&limits, "198.51.100.1", 49), Err(Refusal::Wait(_))), "the IP's share is spent");
        sms(&limits, "198.51.100.2", 49).expect("a neighbour in its network still gets codes");
        sms(&limits, "198.51.100.3", 49).expect("a neighbour in its network still gets codes");
        assert!(matches!(sms(&limits, "198.51.100.4", 49), Err(Refusal::Wait(_))), "the network's share is spent");
        for ip in ["203.0.113.1", "203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.2"] {
            sms(&limits, ip, 49).unwrap();
        }
        assert!(matches!(sms(&limits, "192.0.2.1", 49), Err(Refusal::Wait(_))), "the country's share is spent");
        for ip in ["192.0.2.1", "192.0.2.2", "10.0.0.1", "10.0.1.1", "10.0.2.1", "10.0.3.1", "10.0.4.1", "10.0.5.1", "10.0.6.1", "10.0.7.1"]
        {
            sms(&limits, ip, if ip.starts_with("10.0.") { 33 } else { 44 }).unwrap();
        }
        assert!(matches!(sms(&limits, "10.0.8.1", 1), Err(Refusal::Wait(_))), "the whole budget is spent");
    }

    #[test]
    fn home_countries_have_no_share_no_calling_code_limit_and_a_reserve() {
        let vars = [
            ("SMS_BUDGET_PER_HOUR", "10"),
            ("SMS_BUDGET_COUNTRY_SHARE", "20"),
            ("SMS_BUDGET_HOME_RESERVE", "30"),
            ("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "2"),
        ];
        for home in [&[("SMS_BUDGET_HOME_COUNTRIES", "DE, 44")][..], &[("DEFAULT_REGION", "DE")][..]] {
            let limits = limits(&[&vars[..], home].concat());
            for n in 0..2 {
                start(&limits, "198.51.100.1", &format!("49{n}"), Some(49)).expect("no calling-code limit and no share at home");
            }
            for (code, n) in [(33, 1), (33, 2), (1, 1), (1, 2), (7, 1), (7, 2), (86, 1)] {
                sms(&limits, &format!("203.0.113.{n}"), code).unwrap();
            }
            assert!(sms(&limits, "203.0.113.9", 33).is_err(), "abroad, calling codes are held to their limit");
            assert!(matches!(sms(&limits, "192.0.2.1", 86), Err(Refusal::Wait(_))), "the rest of the world has spent its 7");
            sms(&limits, "198.51.100.3", 49).expect("the reserve is the home country's");
            assert!(sms(&limits, "198.51.100.9", 49).is_err(), "the whole budget is spent");
        }
    }

    #[test]
    fn a_refused_start_spends_none_of_the_limits() {
        let limits = limits(&[
            ("LIMIT_START_PER_IP_PER_HOUR", "3"),
            ("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "3"),
            ("SMS_BUDGET_PER_HOUR", "100"),
            ("SMS_BUDGET_COUNTRY_SHARE", "2"),
        ]);
        sms(&limits, "198.51.100.1", 44).unwrap();
        sms(&limits, "198.51.100.1", 44).unwrap();
        for _ in 0..5 {
            assert!(sms(&limits, "198.51.100.1", 44).is_err(), "+44's share of the budget is spent");
        }
        // The refused starts took nothing from the IP or from +44's calling-code limit.
        sms(&limits, "198.51.100.1", 33).expect("the IP has one start left");
        assert!(sms(&limits, "198.51.100.1", 33).is_err(), "and only one");
    }

    #[test]
    fn an_address_has_a_daily_bound_beside_the_hourly_one() {
        let limits = limits(&[("LIMIT_START_PER_PHONE_PER_HOUR", "10"), ("LIMIT_START_PER_PHONE_PER_DAY", "3")]);
        for _ in 0..3 {
            start(&limits, "198.51.100.1", "ann@example.com", None).unwrap();
        }
        let Err(Refusal::Wait(wait)) = start(&limits, "198.51.100.2", "ann@example.com", None) else { panic!("the day's codes are sent") };
        assert!(wait > 3600, "one comes back every 8 hours, got {wait}");
        start(&limits, "198.51.100.1", "bob@example.com", None).expect("another address has its own");
    }
}
