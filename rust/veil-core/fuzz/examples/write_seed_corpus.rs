//! Writes the seed corpus, `seeds/<target>/<name>`, from the seeds each target lists, after
//! running each through its target. Replaces what was there. Run it when a target or its input
//! format changes:
//!
//! ```text
//! cargo run --manifest-path rust/veil-core/fuzz/Cargo.toml --no-default-features --example write_seed_corpus
//! ```

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for target in veil_core_fuzz::TARGETS {
        let dir = root.join(target.name);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        for (name, bytes) in (target.seeds)() {
            (target.run)(&bytes);
            fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}
