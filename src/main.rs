//! The `seedswarm` command line: parses arguments, sets up tracing, and calls
//! into the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use seedswarm::config::Config;
use seedswarm::train;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "seedswarm",
    version,
    about = "Peer-to-peer zeroth-order fine-tuning with one-byte updates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a single node without a network.
    Train {
        /// Run manifest and node settings (TOML).
        #[arg(long, env = "SEEDSWARM_CONFIG")]
        config: PathBuf,
        /// Own updates to publish (overrides node.steps).
        #[arg(long)]
        steps: Option<u64>,
        /// Keep the update log here (resumes if present).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Write a JSON summary here.
        #[arg(long)]
        summary: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<seedswarm::config::Error>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train {
            config,
            steps,
            data_dir,
            summary,
        } => {
            let mut cfg = load(&config)?;
            if let Some(s) = steps {
                cfg.node.steps = s;
            }
            let bar = ProgressBar::new(cfg.node.steps);
            if !std::io::stderr().is_terminal() {
                bar.set_draw_target(ProgressDrawTarget::hidden());
            }
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} loss {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let mut report = |step: u64,
                              _total: u64,
                              loss: f64,
                              eval: Option<seedswarm::model::Eval>| {
                bar.set_position(step);
                bar.set_message(format!("{loss:.4}"));
                if let Some(e) = eval {
                    bar.suspend(|| {
                        println!(
                            "step {step:>6}  train loss {loss:.4}  dev loss {:.4}  dev accuracy {:.1}%",
                            e.loss(),
                            100.0 * e.accuracy()
                        )
                    });
                }
            };
            let s = train::run_single(&cfg, data_dir.as_deref(), &mut report)?;
            bar.finish_and_clear();
            println!(
                "done: {} updates in {:.1}s ({:.0}/s), loss {:.4} -> {:.4}, accuracy {:.1}% -> {:.1}%, digest {}",
                s.updates,
                s.wall_seconds,
                s.steps_per_second,
                s.initial_loss,
                s.final_loss,
                100.0 * s.initial_accuracy,
                100.0 * s.accuracy,
                &s.digest[..16]
            );
            if let Some(path) = summary {
                write_json(&path, &s)?;
            }
            Ok(())
        }
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing summary {}", path.display()))
}
