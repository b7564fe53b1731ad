//! Builds `netfast-ebpf` for the BPF target, as aya-template does, so the loader can
//! embed the object with `include_bytes_aligned!`.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata_ebpf_root()?;
    // aya-build turns every stderr line of its nested `cargo build` into a
    // `cargo:warning`, so a fresh build ended in dozens of "warning: netfast@0.1.0:
    // Compiling ..." lines. A quiet nested cargo prints no progress; compiler warnings
    // and errors still come through (they travel as JSON on stdout). Progress is the
    // caller's to say: cargo's own status line, or xtask's "building ..." step.
    // SAFETY: a build script is single-threaded here; no other thread reads the
    // environment while it changes.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [Package {
            name: "netfast-ebpf",
            root_dir: &metadata,
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    // With AYA_BUILD_SKIP (clippy or docs without bpf-linker) aya-build writes nothing.
    // An empty object keeps the crate compiling; the loader refuses it with a clear error.
    let object = PathBuf::from(env::var("OUT_DIR")?).join("netfast");
    if !object.exists() {
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}

fn cargo_metadata_ebpf_root() -> anyhow::Result<String> {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR")?;
    let root = PathBuf::from(manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("netfast has no parent directory"))?
        .join("netfast-ebpf");
    root.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))
}
