//! Development sender: writes the code to the log instead of delivering it.

use async_trait::async_trait;

use super::{Accepted, OtpMessage, OtpSender, SendError};

pub struct LogSender;

#[async_trait]
impl OtpSender for LogSender {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        // The only place a code is ever logged, and the point of this sender.
        tracing::info!("otp for {} is {}", message.to, message.otp);
        Ok(Accepted::default())
    }
}
