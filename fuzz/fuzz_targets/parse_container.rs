#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ncodec_bitstream::fuzzing::parse_and_decode(data));
