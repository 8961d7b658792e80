#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::fuzz_targets::request_fields(data));
