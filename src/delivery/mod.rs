//! What leaves the service: code messages (senders and the durable courier), notifications (the outbox), the platform's `useradd` and CAPTCHA checks.

pub mod captcha;
pub mod courier;
pub mod outbox;
pub mod senders;
pub mod upstream;
