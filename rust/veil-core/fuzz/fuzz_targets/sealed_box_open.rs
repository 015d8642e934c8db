#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_core_fuzz::boxes::sealed_box_open(data));
