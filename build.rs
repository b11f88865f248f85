//! Link-time settings for the `ebb` binary only (no dependency is rebuilt by them).
//!
//! On GNU/Linux the binary is a position-independent executable whose ~94,000 relative
//! relocations take 2.2 MB as `.rela.dyn`; the dynamic loader reads all of it at every start, so
//! it stays resident. `-z pack-relative-relocs` stores them as a 34 KB `.relr.dyn` bitmap instead
//! (glibc 2.36 or later loads it; GNU ld 2.38+, lld 15+ and mold write it), which keeps 2.1 MiB
//! of the metrics server's resident memory off (docs/performance.md, "Issue 14 re-measure").
//! An older GNU ld ignores the option with a warning.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
