//! The command line: `serve` (the default), `check-config`, `migrate`, `send-test`.

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::config::Config;
use crate::delivery::senders::{self, OtpMessage};
use crate::domain::address::{self, Address};
use crate::domain::otp;

/// One-time-password login backend for messenger apps. Configured by environment
/// variables (see .env.example).
#[derive(Parser, Debug)]
#[command(name = "otpgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the HTTP service (the default). SIGTERM or SIGINT stops it gracefully.
    Serve,
    /// Validate the environment and print the effective configuration as JSON, secrets redacted.
    CheckConfig,
    /// Create or update the database schema (PostgreSQL at DATABASE_URL, or else the SQLite
    /// file at DATABASE_PATH), then exit.
    Migrate {
        /// Then copy the users, sessions and contacts of this SQLite database into the
        /// (empty) PostgreSQL database at DATABASE_URL.
        #[arg(long, value_name = "PATH")]
        from_sqlite: Option<String>,
    },
    /// Send one test message through the configured sender.
    SendTest {
        /// Phone number (or e-mail address) to send to.
        #[arg(long)]
        to: String,
    },
    /// Ask the running service on BIND for a probe (exit 0 if it answers 2xx); for
    /// container HEALTHCHECKs, where no HTTP client is installed.
    Healthcheck {
        /// The probe to ask: /healthz (alive) or /readyz (ready).
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
}

impl Command {
    /// Whether it acts on the settings, so that a misspelled one is worth a warning; the
    /// healthcheck reads only BIND, and runs every few seconds.
    pub fn reads_settings(&self) -> bool {
        !matches!(self, Command::Healthcheck { .. })
    }

    /// Whether the warnings about serving ([`Config::warnings`]: APP_TOKEN unset, the
    /// built-in upstream...) concern it: serve, and check-config, which is asked before it.
    pub fn serves_or_checks(&self) -> bool {
        matches!(self, Command::Serve | Command::CheckConfig)
    }
}

/// The effective configuration, as check-config prints it: every [`Secret`](crate::config::Secret)
/// setting serialises as `"<redacted>"`, a setting left unset as `""` (as an env file
/// leaves it, so an operator sees which are missing), and URLs lose their credentials.
pub fn redacted_config(config: &Config) -> Value {
    let mut settings = config.settings();
    for (name, field) in settings.iter_mut() {
        match field {
            Value::Null => *field = Value::String(String::new()),
            Value::String(text) if name.ends_with("_url") => *text = url_without_credentials(text),
            _ => {}
        }
    }
    Value::Object(settings)
}

/// Drops `user:password@` and the query string, where gateways often take API keys.
pub fn url_without_credentials(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            let slash = if rest.contains('/') { "/" } else { "" };
            format!("{scheme}://{host}{slash}{path}")
        }
        None => without_query.to_string(),
    }
}

/// Checks what can be checked without serving: the settings themselves were checked as
/// they were read ([`Config::from_vars`]), and the rest is what `serve` checks before it
/// starts ([`check_surroundings`](super::check_surroundings)), so the two cannot disagree.
/// A Redis that does not answer is only a warning: the configuration may be checked elsewhere.
pub async fn check_config(config: &Config) -> Result<String, String> {
    for warning in super::check_surroundings(config).await? {
        tracing::warn!("{warning}");
    }
    Ok(serde_json::to_string_pretty(&redacted_config(config)).expect("JSON values serialise"))
}

pub async fn migrate(config: &Config, from_sqlite: Option<&str>) -> Result<String, String> {
    let Some(url) = &config.database.url else {
        if from_sqlite.is_some() {
            return Err("--from-sqlite copies into PostgreSQL: set DATABASE_URL".into());
        }
        let (db, _) = super::open_database(config, crate::domain::clock::Clock::system()).await?;
        db.close().map_err(|e| format!("cannot close database {}: {e}", config.database.path))?;
        return Ok(format!("schema applied to {}", config.database.path));
    };
    let target = url_without_credentials(url);
    let (db, _) = super::open_database(config, crate::domain::clock::Clock::system()).await?;
    let mut done = format!("schema applied to {target}");
    if let Some(path) = from_sqlite {
        let imported = db.import_sqlite(path).await.map_err(|e| format!("cannot import {path}: {e}"))?;
        done.push_str(&format!(
            "; imported from {path}: {} users, {} sessions, {} contacts (pending codes and queued messages are not carried over)",
            imported.users, imported.sessions, imported.contacts
        ));
    }
    db.close().map_err(|e| e.to_string())?;
    Ok(done)
}

pub async fn send_test(config: &Config, to: &str) -> Result<String, String> {
    let to = match address::normalize_email(to) {
        Some(email) => Address::Email(email),
        None if address::normalize_phone(to).is_none() => {
            return Err(format!("--to {to:?} is neither a phone number nor an e-mail address"))
        }
        // The same checks as a login start: a number the service would refuse is not sent to.
        None => Address::Phone(
            crate::domain::phone::PhonePolicy::from_config(config).check(to).map_err(|e| format!("--to is refused: {}", e.message))?.digits,
        ),
    };
    let senders = senders::build(config)?;
    let (via, sender) = senders.first_for(&to).ok_or_else(|| format!("no configured sender can reach {}", to.masked()))?;
    let appid = "otpgate-send-test";
    let code = otp::generate(config.otp.length);
    let text = crate::domain::templates::Templates::from_config(config).render_to(&to, appid, &code);
    let message = OtpMessage { text, to: to.clone(), otp: code, appid: appid.into() };
    sender.send(&message).await.map_err(|e| format!("{via} could not deliver to {}: {}", to.masked(), to.masked_in(&e.reason)))?;
    Ok(format!("sent a test message to {} through {via}", to.masked()))
}

pub async fn healthcheck(config: &Config, path: &str) -> Result<String, String> {
    // A wildcard BIND is reached over loopback.
    let address = config.http.bind.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]");
    let url = format!("http://{address}{path}");
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build().map_err(|e| e.to_string())?;
    let response = client.get(&url).send().await.map_err(|e| {
        let hint = match e.is_connect() {
            true => format!("; is `otpgate serve` running, with this BIND ({})?", config.http.bind),
            false => String::new(),
        };
        // With its causes: reqwest's own text is only "error sending request".
        format!("{url}: {}{hint}", crate::delivery::upstream::describe(e))
    })?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{url} answered {status}: {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(url_without_credentials("https://user:pw@sms.example.com/send?key=abc"), "https://sms.example.com/send");
        assert_eq!(url_without_credentials("https://api.example.com/backend/"), "https://api.example.com/backend/");
        assert_eq!(url_without_credentials("http://h:9000"), "http://h:9000");
        assert_eq!(url_without_credentials(""), "");
    }

    #[test]
    fn subcommands_parse_and_serve_is_the_default() {
        assert_eq!(Cli::try_parse_from(["otpgate"]).unwrap().command, None);
        let send = Cli::try_parse_from(["otpgate", "send-test", "--to", "+18005551234"]).unwrap();
        assert_eq!(send.command, Some(Command::SendTest { to: "+18005551234".into() }));
        assert!(Cli::try_parse_from(["otpgate", "send-test"]).is_err(), "--to is required");
        assert!(Cli::try_parse_from(["otpgate", "fly"]).is_err());
    }
}
