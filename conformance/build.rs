//! Embeds PROTOCOL.md, the transcripts and the vectors, so the `conformance` binary checks a
//! server with the spec it was built from, anywhere, without the source tree.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = String::new();
    for (konst, dir, ext) in [("TRANSCRIPTS", "spec/transcripts", "ft"), ("VECTORS", "spec/vectors", "json")] {
        let dir = spec.join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("spec directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        files.sort();
        writeln!(out, "pub const {konst}: &[(&str, &str)] = &[").unwrap();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            writeln!(out, "    ({name:?}, include_str!({:?})),", f.canonicalize().unwrap().display().to_string())
                .unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let protocol = spec.join("PROTOCOL.md");
    println!("cargo:rerun-if-changed={}", protocol.display());
    writeln!(
        out,
        "pub const PROTOCOL: &str = include_str!({:?});",
        protocol.canonicalize().unwrap().display().to_string()
    )
    .unwrap();
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("spec_files.rs");
    std::fs::write(dest, out).unwrap();
}
