#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ncodec_bitstream::fuzzing::decode_gaussian(data));
