//! What leaves the service: code messages (senders and the durable courier), notifications (the outbox), the platform's `useradd`, CAPTCHA checks and ID-token sign-in; what comes back: providers' delivery receipts.

pub mod breakers;
pub mod captcha;
pub mod courier;
pub mod oidc;
pub mod outbox;
pub mod receipts;
pub mod senders;
pub mod upstream;
