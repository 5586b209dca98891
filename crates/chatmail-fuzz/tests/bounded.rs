//! The bounded fuzz run of the test command (a few seconds per target),
//! and every input a run ever found, replayed.

use std::time::Duration;

use chatmail_fuzz::{Campaign, TARGETS, targets::target};

/// Seconds per target in the test command: eight targets, about a minute.
const SECONDS_PER_TARGET: u64 = 7;

#[test]
fn every_target_survives_a_bounded_run() {
    let campaign = Campaign {
        duration: Duration::from_secs(SECONDS_PER_TARGET),
        // A different seed every day: the runs add up over time.
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() / 86_400),
        // Unoptimised code is slow; these only catch the pathological.
        slow: Duration::from_secs(10),
        hang: Duration::from_secs(60),
        findings_dir: Some(std::env::temp_dir().join("chatmail-fuzz-findings")),
    };
    let mut failures = Vec::new();
    for target in TARGETS {
        let report = campaign.run(target);
        println!("{}: {} inputs", report.target, report.executions);
        assert!(report.executions > 10, "{} barely ran", report.target);
        for finding in report.findings {
            failures.push(format!(
                "{}: {} (input of {} bytes saved in {})",
                finding.target,
                finding.what,
                finding.input.len(),
                std::env::temp_dir()
                    .join("chatmail-fuzz-findings")
                    .display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
