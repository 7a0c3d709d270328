#![no_main]
//! Feeds arbitrary bytes to the id map parser; the properties live in the library.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxc_idshift::engine::idmap::fuzz_parse(data));
