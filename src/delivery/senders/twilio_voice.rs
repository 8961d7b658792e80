//! Twilio Programmable Voice (`twilio_voice`): a call that reads the code out, made with
//! `POST /2010-04-01/Accounts/{sid}/Calls.json` and the call's TwiML inline (`Twiml`,
//! never also `Url`). The rendered SMS text is not used: the call says a fixed English
//! sentence with the code's digits one by one, twice.

use async_trait::async_trait;

use super::twilio::TwilioAccount;
use super::{e164, Accepted, OtpMessage, OtpSender, SendError};
use crate::config::TwilioInstance;

pub struct TwilioVoiceSender {
    account: TwilioAccount,
    /// The number calls come from (required for this kind at load).
    from: String,
}

impl TwilioVoiceSender {
    /// Settings checked at load (`config::routes`). `callbacks`: `PUBLIC_URL`, under
    /// which Twilio is asked to post the call's status.
    pub fn new(twilio: &TwilioInstance, timeout_secs: u64, callbacks: Option<&str>) -> Result<Self, String> {
        Ok(TwilioVoiceSender {
            account: TwilioAccount::new(twilio, timeout_secs, callbacks)?,
            from: twilio.from.clone().unwrap_or_default(),
        })
    }
}

/// The code's digits apart (a run of digits is read as one number), with commas for a
/// short pause between them: `4, 8, 1, 5, 2, 6`.
fn spoken(code: &str) -> String {
    code.chars().map(String::from).collect::<Vec<_>>().join(", ")
}

/// What the call says: the digits, a pause, and the digits again.
fn twiml(spoken: &str) -> String {
    let spoken = quick_xml::escape::escape(spoken);
    format!("<Response><Say>Your code is {spoken}.</Say><Pause length=\"2\"/><Say>Again: {spoken}.</Say></Response>")
}

#[async_trait]
impl OtpSender for TwilioVoiceSender {
    fn name(&self) -> &'static str {
        "twilio_voice"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        let to = e164(message);
        let spoken = spoken(&message.otp);
        let twiml = twiml(&spoken);
        let mut form = vec![("To", to.as_str()), ("From", self.from.as_str()), ("Twiml", twiml.as_str())];
        if let Some(callback) = &self.account.status_callback {
            form.push(("StatusCallback", callback));
        }
        // The TwiML holds the code spaced out: blanked too, should Twilio echo the request.
        self.account.create("Calls.json", &form, &message.otp, &[&spoken]).await
    }
}

#[cfg(test)]
mod tests {
    use super::{spoken, twiml};

    #[test]
    fn the_call_says_each_digit_twice() {
        assert_eq!(
            twiml(&spoken("481526")),
            "<Response><Say>Your code is 4, 8, 1, 5, 2, 6.</Say><Pause length=\"2\"/><Say>Again: 4, 8, 1, 5, 2, 6.</Say></Response>"
        );
    }

    #[test]
    fn what_goes_into_the_twiml_is_escaped() {
        assert_eq!(
            twiml(&spoken("<&>")),
            "<Response><Say>Your code is &lt;, &amp;, &gt;.</Say><Pause length=\"2\"/><Say>Again: &lt;, &amp;, &gt;.</Say></Response>"
        );
    }
}
