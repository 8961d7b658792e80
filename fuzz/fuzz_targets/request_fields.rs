#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::api::fuzz_targets::request_fields(data));
