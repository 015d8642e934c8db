#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_core_fuzz::store::store_request(data));
