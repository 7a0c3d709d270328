//! Replays the fuzz seed corpus through the fuzz targets' properties, so that every
//! `cargo test` checks them on stable Rust without libFuzzer.

use lxc_idshift::engine::{acl, caps, idmap, journal};
use lxc_idshift::lxc::{config, pve, subid};
use std::fs;
use std::path::PathBuf;

/// Runs `check` on every file of `fuzz/corpus/<target>`; returns how many it ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        // Name the input in the panic message, since the property panics carry none.
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} violates a property", path.display());
        count += 1;
    }
    count
}

#[test]
fn acl_corpus_holds_properties() {
    let n = replay("acl", acl::fuzz_roundtrip);
    assert!(n >= 5, "only {n} acl seeds");
}

#[test]
fn caps_corpus_holds_properties() {
    let n = replay("caps", caps::fuzz_roundtrip);
    assert!(n >= 5, "only {n} caps seeds");
}

#[test]
fn idmap_corpus_holds_properties() {
    let n = replay("idmap", idmap::fuzz_parse);
    assert!(n >= 6, "only {n} idmap seeds");
}

#[test]
fn journal_corpus_holds_properties() {
    let n = replay("journal", journal::fuzz_read);
    assert!(n >= 6, "only {n} journal seeds");
}

#[test]
fn config_corpus_holds_properties() {
    let n = replay("config", config::fuzz_edit);
    assert!(n >= 6, "only {n} config seeds");
}

#[test]
fn subid_corpus_holds_properties() {
    let n = replay("subid", subid::fuzz_edit);
    assert!(n >= 6, "only {n} subid seeds");
}

#[test]
fn pve_conf_corpus_holds_properties() {
    let n = replay("pve_conf", pve::conf::fuzz_edit);
    assert!(n >= 6, "only {n} pve_conf seeds");
}
