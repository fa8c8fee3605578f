//! Installs `include/dsm.h` next to the built `libdsm.so` (`target/<profile>/dsm.h`), so a
//! program can be compiled against the library it will run with: `cc -I target/release …`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=include/dsm.h");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is target/<profile>/build/<crate>-<hash>/out.
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let header = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("include/dsm.h");
    if let Err(e) = std::fs::copy(&header, profile_dir.join("dsm.h")) {
        println!("cargo:warning=cannot install dsm.h next to libdsm.so: {e}");
    }
}
