#![no_main]
//! Feeds arbitrary text to the LXC config editor; the properties live in the library.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxc_idshift::lxc::config::fuzz_edit(data));
