#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| leasegate::fuzzing::mysql_handshake_response(data));
