#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| leasegate::fuzzing::pg_messages(data));
