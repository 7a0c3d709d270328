#![no_main]
//! Feeds arbitrary bytes to the journal reader; the properties live in the library.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxc_idshift::engine::journal::fuzz_read(data));
