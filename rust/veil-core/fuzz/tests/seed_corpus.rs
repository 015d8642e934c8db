//! The committed seed corpus matches the targets: every target has a binary and seeds, every seed
//! it lists is committed, and every committed seed runs through its target without a finding.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use veil_core_fuzz::TARGETS;

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binaries: BTreeSet<String> = names_in(&root.join("fuzz_targets"))
        .into_iter()
        .map(|file| file.trim_end_matches(".rs").to_owned())
        .collect();
    let targets: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(binaries, targets);
}

#[test]
fn every_listed_seed_is_committed_and_every_committed_seed_runs_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for target in TARGETS {
        let dir = root.join(target.name);
        let committed = names_in(&dir);
        for (name, bytes) in (target.seeds)() {
            assert!(
                committed.contains(name),
                "{}/{name} is not committed",
                target.name
            );
            (target.run)(&bytes);
        }
        for name in committed {
            (target.run)(&fs::read(dir.join(&name)).unwrap());
        }
    }
}
