//! Writes the fuzz targets' seed corpora, and replays inputs through a
//! target without the fuzzer (to look at a finding under a debugger).
//!
//! ```sh
//! cargo run -p chatmail-fuzz -- seeds target/fuzz-corpus
//! cargo run -p chatmail-fuzz -- replay mime_agreement crash-1234
//! ```

use std::path::PathBuf;

use anyhow::Context as _;
use chatmail_fuzz::{TARGETS, targets::target};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the targets.
    List,
    /// Writes each target's seeds into DIR/<target>/.
    Seeds { dir: PathBuf },
    /// Runs TARGET on each file.
    Replay { target: String, files: Vec<PathBuf> },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::List => {
            for target in TARGETS {
                println!("{}", target.name);
            }
        }
        Command::Seeds { dir } => {
            for target in TARGETS {
                let corpus = dir.join(target.name);
                std::fs::create_dir_all(&corpus)
                    .with_context(|| format!("creating {}", corpus.display()))?;
                for (index, seed) in (target.seeds)().iter().enumerate() {
                    let path = corpus.join(format!("seed-{index}"));
                    std::fs::write(&path, seed)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
        }
        Command::Replay {
            target: name,
            files,
        } => {
            let target = target(&name).with_context(|| format!("no target {name}"))?;
            for file in files {
                let input =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                (target.run)(&input);
                println!("{}: no finding", file.display());
            }
        }
    }
    Ok(())
}
