#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| chatmail_fuzz::run_target("smtp_reply", input));
