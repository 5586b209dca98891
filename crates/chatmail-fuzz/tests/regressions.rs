//! Every input a fuzz run ever found, replayed; and every target run on
//! its seeds, so a target that panics on a real input fails here first.

use chatmail_fuzz::{TARGETS, targets::target};

#[test]
fn every_target_takes_its_seeds() {
    for target in TARGETS {
        let seeds = (target.seeds)();
        assert!(!seeds.is_empty(), "{} has no seeds", target.name);
        for seed in seeds {
            (target.run)(&seed);
        }
    }
}

#[test]
fn inputs_found_before_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let target = target(&name).unwrap_or_else(|| panic!("no fuzz target {name}"));
        for input in std::fs::read_dir(entry.path())
            .expect("a directory")
            .flatten()
        {
            let bytes = std::fs::read(input.path()).expect("readable");
            (target.run)(&bytes);
        }
    }
}
