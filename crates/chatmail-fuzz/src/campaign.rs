//! Running a target on mutated inputs for a while: panics are caught,
//! inputs that take too long are reported, and an input that hangs is
//! saved before the process gives up on it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::mutate::mutate;
use crate::targets::Target;

/// What went wrong with one input.
#[derive(Debug, Clone)]
pub struct Finding {
    pub target: &'static str,
    /// The panic message, or how long the input took.
    pub what: String,
    pub input: Vec<u8>,
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// How long each target runs.
    pub duration: Duration,
    /// Seeds the mutation engine (runs are repeatable).
    pub seed: u64,
    /// An input taking longer than this is a finding.
    pub slow: Duration,
    /// An input taking longer than this is saved and the process ends.
    pub hang: Duration,
    /// Where findings are written (`<dir>/<target>-<n>`), if anywhere.
    pub findings_dir: Option<PathBuf>,
}

/// What one target's run did.
#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub executions: u64,
    pub findings: Vec<Finding>,
}

impl Campaign {
    pub fn run(&self, target: &Target) -> Report {
        let seeds = (target.seeds)();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(self.seed);
        let mut findings = Vec::new();
        let mut executions = 0;
        let watchdog = Watchdog::start(target.name, self.hang, self.findings_dir.clone());
        let started = Instant::now();
        // Every seed once as it is, then mutations.
        let mut unmutated = seeds.iter();
        while started.elapsed() < self.duration {
            let input = match unmutated.next() {
                Some(seed) => seed.clone(),
                None => {
                    let seed = pick(&mut rng, &seeds);
                    let other = pick(&mut rng, &seeds);
                    mutate(&mut rng, seed, other)
                }
            };
            watchdog.begin(&input);
            let began = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
            let took = began.elapsed();
            watchdog.end();
            executions += 1;
            let what = match outcome {
                Err(panic) => Some(format!("panic: {}", panic_message(&*panic))),
                Ok(()) if took > self.slow => Some(format!("slow: took {took:?}")),
                Ok(()) => None,
            };
            if let Some(what) = what {
                let finding = Finding {
                    target: target.name,
                    what,
                    input,
                };
                self.save(&finding, findings.len());
                findings.push(finding);
            }
        }
        Report {
            target: target.name,
            executions,
            findings,
        }
    }

    fn save(&self, finding: &Finding, index: usize) {
        if let Some(dir) = &self.findings_dir {
            let _ = std::fs::create_dir_all(dir);
            let path = dir.join(format!("{}-{index}", finding.target));
            let _ = std::fs::write(path, &finding.input);
        }
    }
}

fn pick<'a>(rng: &mut impl Rng, seeds: &'a [Vec<u8>]) -> &'a [u8] {
    seeds
        .get(rng.random_range(0..seeds.len().max(1)))
        .map_or(&[][..], Vec::as_slice)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Watches the input in progress from another thread: one that hangs
/// cannot be caught by the thread running it.
struct Watchdog {
    state: Arc<WatchState>,
}

struct WatchState {
    input: Mutex<Vec<u8>>,
    /// Milliseconds since `origin` when the input began; 0 when idle.
    began_ms: AtomicU64,
    origin: Instant,
    stop: AtomicBool,
}

impl Watchdog {
    fn start(target: &'static str, hang: Duration, findings_dir: Option<PathBuf>) -> Self {
        let state = Arc::new(WatchState {
            input: Mutex::new(Vec::new()),
            began_ms: AtomicU64::new(0),
            origin: Instant::now(),
            stop: AtomicBool::new(false),
        });
        let watched = Arc::clone(&state);
        std::thread::spawn(move || {
            while !watched.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let began = watched.began_ms.load(Ordering::Relaxed);
                if began == 0 {
                    continue;
                }
                let now = u64::try_from(watched.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
                if now.saturating_sub(began) > u64::try_from(hang.as_millis()).unwrap_or(u64::MAX) {
                    let input = watched
                        .input
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    if let Some(dir) = &findings_dir {
                        let _ = std::fs::create_dir_all(dir);
                        let _ = std::fs::write(dir.join(format!("{target}-hang")), &input);
                    }
                    eprintln!(
                        "fuzz target {target}: an input of {} bytes hangs (over {hang:?}); giving up",
                        input.len()
                    );
                    std::process::exit(2);
                }
            }
        });
        Self { state }
    }

    fn begin(&self, input: &[u8]) {
        let mut held = self
            .state
            .input
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.clear();
        held.extend_from_slice(input);
        let now = u64::try_from(self.state.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.state.began_ms.store(now.max(1), Ordering::Relaxed);
    }

    fn end(&self) {
        self.state.began_ms.store(0, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}
