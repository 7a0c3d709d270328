#![no_main]
//! Feeds arbitrary text to the Proxmox VE container config editor; the properties
//! live in the library.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxc_idshift::lxc::pve::conf::fuzz_edit(data));
