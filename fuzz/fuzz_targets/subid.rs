#![no_main]
//! Feeds arbitrary text to the /etc/subuid editor; the properties live in the library.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxc_idshift::lxc::subid::fuzz_edit(data));
