//! The `seedswarm` command line: parses arguments, sets up tracing, and calls
//! into the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use seedswarm::config::Config;
use seedswarm::delta::files as delta;
use seedswarm::obs::progress::{LogWriter, Progress};
use seedswarm::{node, train};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

/// Whom an owner's record is about, for which run, and where it goes.
#[derive(clap::Args)]
struct RecordArgs {
    /// The owner key (`seedswarm owner-key`).
    #[arg(long)]
    owner_key: PathBuf,
    /// The run's config (its run id is computed; loads the model).
    #[arg(long, env = "SEEDSWARM_CONFIG")]
    config: PathBuf,
    /// The peer id (`seedswarm peer-id --data-dir D` prints a node's).
    #[arg(long)]
    peer: String,
    /// Where to write the record (hand it to a node: --record FILE, or
    /// `seedswarm publish`).
    #[arg(long)]
    out: PathBuf,
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
        /// "zeroth-order" (one-byte SPSA updates) or "first-order" (local
        /// backprop, compressed deltas); overrides node.mode.
        #[arg(long)]
        mode: Option<seedswarm::config::Mode>,
        /// Keep the update log here (resumes if present).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Write a JSON summary here.
        #[arg(long)]
        summary: Option<PathBuf>,
    },
    /// Accuracy of a replica (base model + the update log in --data-dir) on a
    /// labeled file (TSV/JSONL) or, without --data, the task's dev set.
    Eval {
        /// Run manifest and node settings (TOML).
        #[arg(long, env = "SEEDSWARM_CONFIG")]
        config: PathBuf,
        /// Labeled file (sentence/label TSV with a header, or JSONL).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Node or train data directory whose update log to replay (base model without).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Write a JSON summary here (accuracy, n, loss, digest).
        #[arg(long)]
        summary: Option<PathBuf>,
    },
    /// Write the fine-tuned weights (base + update log) as safetensors, or
    /// the run as a seed log (manifest, base hash, every update, digest).
    Export {
        /// Run manifest and node settings (TOML).
        #[arg(long, env = "SEEDSWARM_CONFIG")]
        config: PathBuf,
        /// Node or train data directory whose update log to replay.
        #[arg(long)]
        data_dir: PathBuf,
        /// Output file (.safetensors), parameter names as in the model.
        #[arg(long, required_unless_present = "seedlog")]
        out: Option<PathBuf>,
        /// Write the run as a seed log here (`seedswarm materialize` turns
        /// it and the base model into the exact fine-tuned weights).
        #[arg(long)]
        seedlog: Option<PathBuf>,
        /// Include the origins' signatures in the seed log (64 bytes per
        /// signed batch), so that every update is attributable.
        #[arg(long, requires = "seedlog")]
        signed: bool,
        /// Write a JSON summary of the seed log here.
        #[arg(long, requires = "seedlog")]
        summary: Option<PathBuf>,
    },
    /// Rebuild the exact fine-tuned replica from a seed log and its base
    /// model (refused when the base's hash differs; the final digest is
    /// checked), and write its weights.
    Materialize {
        /// The seed log (`seedswarm export --seedlog`).
        file: PathBuf,
        /// The base model (GGUF file or Hugging Face directory); default:
        /// the path in the run's manifest. Not used by the built-in model.
        #[arg(long)]
        base: Option<PathBuf>,
        /// A .safetensors file, or a directory (model.safetensors, the
        /// manifest, a model card; config.json and tokenizer.json for a
        /// language model).
        #[arg(long)]
        out: PathBuf,
        /// Write a JSON summary here.
        #[arg(long)]
        summary: Option<PathBuf>,
    },
    /// Recheck one-byte updates of a finished run: rebuilds the replica from
    /// the log in --data-dir and recomputes a fraction of each origin's
    /// updates (two forwards each) on the state each was made on (the bases
    /// the node kept, bases.log); exits 4 when an origin is flagged.
    Verify {
        /// Run manifest and node settings (TOML).
        #[arg(long, env = "SEEDSWARM_CONFIG")]
        config: PathBuf,
        /// Node or train data directory whose update log to recheck.
        #[arg(long)]
        data_dir: PathBuf,
        /// The origin to recheck (64 hex digits); default: every origin.
        #[arg(long)]
        origin: Option<String>,
        /// Fraction of its updates to recheck.
        #[arg(long, default_value_t = 0.05)]
        fraction: f64,
        /// Loss noise tolerated between the origin's forward and ours
        /// (absolute, loss units): a gradient within tolerance / 2ε of zero
        /// has no checkable sign.
        #[arg(long, default_value_t = seedswarm::train::DEFAULT_TOLERANCE)]
        tolerance: f64,
        /// Choose the sample from this seed (default: at random).
        #[arg(long)]
        sample_seed: Option<u64>,
        /// Write a JSON summary here (tally and every check).
        #[arg(long)]
        summary: Option<PathBuf>,
    },
    /// Print a node's peer id, creating its key in --data-dir on first use
    /// (what the owner of a permissioned run admits).
    PeerId {
        /// The node's data directory (its node.key).
        #[arg(long, env = "SEEDSWARM_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Create the owner key of a permissioned run (keep it offline); prints
    /// the public key to put in the manifest as `run.owner`.
    OwnerKey {
        /// Where to write the key (never overwritten; mode 0600).
        out: PathBuf,
    },
    /// Sign an admission: the peer may contribute to this permissioned run
    /// (its seqs below --until-seq, or all).
    Admit {
        #[command(flatten)]
        who: RecordArgs,
        /// Admit only the peer's updates with seq below this.
        #[arg(long)]
        until_seq: Option<u64>,
    },
    /// Sign a revocation: the peer's updates from --from-seq on count nowhere
    /// (nodes that applied them subtract them). Publish it to any node.
    Revoke {
        #[command(flatten)]
        who: RecordArgs,
        /// First seq of the peer's that no longer counts (0: all of them).
        #[arg(long, default_value_t = 0)]
        from_seq: u64,
    },
    /// Hand owner's records (admission or revocation files) to a running
    /// node over its HTTP server (POST /records); it checks, keeps and
    /// gossips them.
    Publish {
        /// The node's HTTP URL, e.g. http://127.0.0.1:9100
        #[arg(long)]
        node: String,
        /// Send the bearer token in this file (nodes with node.http_token_file).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Record files.
        #[arg(required = true)]
        records: Vec<PathBuf>,
    },
    /// Show one table for one or many nodes (their --http URLs); exits 1
    /// when one is unreachable, 3 on a digest mismatch, 4 when a node flagged
    /// an origin.
    Status {
        /// Node URLs, e.g. http://127.0.0.1:9100
        #[arg(required = true)]
        urls: Vec<String>,
        /// Refresh until interrupted.
        #[arg(long)]
        watch: bool,
        /// Refresh period in seconds.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Send the bearer token in this file (nodes with node.http_token_file).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Run a swarm node: train, gossip one-byte updates, apply everyone's.
    Node {
        /// Run manifest and node settings (TOML).
        #[arg(long, env = "SEEDSWARM_CONFIG")]
        config: PathBuf,
        /// Listen address (repeatable; replaces node.listen).
        #[arg(long)]
        listen: Vec<String>,
        /// Peer to dial at start (repeatable; adds to node.bootstrap).
        #[arg(long)]
        bootstrap: Vec<String>,
        /// An address this node is known to be reachable at from outside,
        /// e.g. a public IP with a forwarded port (repeatable; adds to
        /// node.external_addresses).
        #[arg(long = "external-address")]
        external_address: Vec<String>,
        /// A relay to reserve a slot at, ending with /p2p/<peer id>
        /// (repeatable; adds to node.relays).
        #[arg(long)]
        relay: Vec<String>,
        /// Serve circuit relay v2 for peers behind NATs (node.relay_server).
        #[arg(long)]
        relay_server: bool,
        /// Node key, update log and status.json live here; a restart resumes.
        #[arg(long, env = "SEEDSWARM_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Stop publishing after this many own updates, then settle and exit.
        #[arg(long)]
        max_updates: Option<u64>,
        /// Stop publishing after this many seconds, then settle and exit.
        #[arg(long)]
        duration: Option<f64>,
        /// Start training once this many peers are heard from.
        #[arg(long)]
        min_peers: Option<usize>,
        /// No own step while more than this many held updates are not
        /// applied yet; overrides node.max_staleness.
        #[arg(long)]
        max_staleness: Option<u64>,
        /// "zeroth-order" (one-byte SPSA updates) or "first-order" (local
        /// backprop, compressed sparse deltas); overrides node.mode.
        #[arg(long)]
        mode: Option<seedswarm::config::Mode>,
        /// How a node with an empty log catches up: auto (by estimate),
        /// replay (the log from genesis) or snapshot.
        #[arg(long, value_enum, default_value_t = seedswarm::proto::join::Mode::Auto)]
        join: seedswarm::proto::join::Mode,
        /// Disable mDNS discovery.
        #[arg(long)]
        no_mdns: bool,
        /// Keep serving after training instead of exiting once the swarm agrees.
        #[arg(long)]
        serve: bool,
        /// Serve /metrics, /status and the dashboard on this address (e.g. 127.0.0.1:9100).
        #[arg(long)]
        http: Option<String>,
        /// Write a JSON summary here.
        #[arg(long)]
        summary: Option<PathBuf>,
        /// A membership record from the run's owner (admission or
        /// revocation file) to take and gossip (repeatable; adds to
        /// node.records).
        #[arg(long)]
        record: Vec<PathBuf>,
        /// Private swarm: the pre-shared key file (replaces node.psk_file).
        #[arg(long)]
        psk: Option<PathBuf>,
        /// HTTP requests must carry the bearer token in this file (replaces
        /// node.http_token_file).
        #[arg(long)]
        http_token_file: Option<PathBuf>,
    },
    /// FedZip-compress the difference of two safetensors files (input − base),
    /// or with --apply add a compressed delta to a base.
    Delta {
        /// Base weights A (.safetensors).
        #[arg(long)]
        base: PathBuf,
        /// Fine-tuned weights B (.safetensors); the delta is B − A.
        #[arg(long, required_unless_present = "apply", conflicts_with = "apply")]
        input: Option<PathBuf>,
        /// Compressed delta (.fzd) to add to --base; writes --out.
        #[arg(long, requires = "out")]
        apply: Option<PathBuf>,
        /// Fraction of each tensor's entries kept, by magnitude (default 0.01).
        #[arg(long, conflicts_with = "apply")]
        top_z: Option<f64>,
        /// k-means centroids per tensor (default 3).
        #[arg(long, conflicts_with = "apply")]
        clusters: Option<usize>,
        /// Lloyd iterations (default 10).
        #[arg(long, conflicts_with = "apply")]
        iterations: Option<usize>,
        /// Position coding: diff or plain (default diff).
        #[arg(long, conflicts_with = "apply")]
        positions: Option<seedswarm::delta::fedzip::Positions>,
        /// Output: the compressed delta, or with --apply the weights (.safetensors).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write a JSON summary here (sizes, ratio, errors).
        #[arg(long, conflicts_with = "apply")]
        summary: Option<PathBuf>,
    },
    /// Write new secrets, readable by the owner only (mode 0600), never over
    /// an existing file: a private swarm's pre-shared key, an HTTP token.
    Keygen {
        /// A new pre-shared swarm key (libp2p swarm.key format) for
        /// node.psk_file; copy it to every machine of the swarm.
        #[arg(long, required_unless_present = "http_token")]
        psk: Option<PathBuf>,
        /// A new HTTP bearer token (64 hex digits) for node.http_token_file.
        #[arg(long)]
        http_token: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(|| LogWriter)
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

/// Signs an owner's record for the run of `who.config` and writes it.
fn sign_record(
    who: &RecordArgs,
    kind: seedswarm::crdt::admit::Kind,
    seq: u64,
) -> anyhow::Result<()> {
    let cfg = load(&who.config)?;
    let progress = Progress::spinner("loading the model (the run id covers it)");
    let (record, run) = seedswarm::owner::sign_for(&who.owner_key, &cfg, kind, &who.peer, seq)
        .with_context(|| who.config.display().to_string())?;
    drop(progress);
    seedswarm::owner::write_record(&who.out, &record)?;
    println!(
        "wrote {record:?} for run {} to {}",
        run.short(),
        who.out.display()
    );
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// Applies a `--mode` override and checks the result.
fn with_mode(
    mut cfg: Config,
    mode: Option<seedswarm::config::Mode>,
    path: &Path,
) -> anyhow::Result<Config> {
    if let Some(m) = mode {
        cfg.node.mode = m;
        cfg.validate()
            .map_err(|message| seedswarm::config::Error::Invalid {
                path: format!("{} with --mode {m}", path.display()),
                message,
            })?;
    }
    Ok(cfg)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train {
            config,
            steps,
            mode,
            data_dir,
            summary,
        } => {
            let mut cfg = with_mode(load(&config)?, mode, &config)?;
            if let Some(s) = steps {
                cfg.node.steps = s;
            }
            let progress = Progress::spinner("loading the model and the update log");
            let mut report = |step: u64,
                              total: u64,
                              loss: f64,
                              eval: Option<seedswarm::model::Eval>| {
                progress.bar(total, "{bar:30} {pos}/{len} {per_sec} loss {msg}");
                let bar = progress.handle();
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
            drop(progress);
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
        Command::Eval {
            config,
            data,
            data_dir,
            summary,
        } => {
            let cfg = load(&config)?;
            let progress = Progress::spinner("loading the model, the update log and the data");
            let mut report = |done: usize, total: usize| {
                progress.bar(
                    total as u64,
                    "eval {bar:30} {pos}/{len} batches {per_sec} eta {eta}",
                );
                progress.handle().set_position(done as u64);
            };
            let s = train::evaluate(
                &cfg,
                data.as_deref(),
                data_dir.as_deref(),
                Some(&mut report),
            )?;
            drop(progress);
            println!(
                "accuracy {:.1}% ({} of {}), loss {:.4} on {}; {} updates replayed, digest {}, {:.1}s",
                100.0 * s.accuracy,
                (s.accuracy * s.n as f64).round(),
                s.n,
                s.loss,
                s.data,
                s.updates,
                s.digest.get(..16).unwrap_or("-"),
                s.wall_seconds
            );
            if let Some(path) = summary {
                write_json(&path, &s)?;
            }
            Ok(())
        }
        Command::Export {
            config,
            data_dir,
            out,
            seedlog,
            signed,
            summary,
        } => {
            let cfg = load(&config)?;
            let progress = Progress::spinner("loading the model and the update log");
            if let Some(out) = out {
                let n = train::export(&cfg, Some(&data_dir), &out)?;
                progress.handle().suspend(|| {
                    println!("wrote {n} tensors to {}", out.display());
                });
            }
            if let Some(path) = seedlog {
                let s = train::export_seedlog(&cfg, &data_dir, &path, signed)?;
                drop(progress);
                println!("{}", s.line(&path));
                if let Some(p) = summary {
                    write_json(&p, &s)?;
                }
            }
            Ok(())
        }
        Command::Verify {
            config,
            data_dir,
            origin,
            fraction,
            tolerance,
            sample_seed,
            summary,
        } => {
            let cfg = load(&config)?;
            let origin = origin
                .map(|o| {
                    seedswarm::zo::seed::Origin::from_hex(&o)
                        .ok_or_else(|| anyhow::anyhow!("--origin must be 64 hex digits, got {o:?}"))
                })
                .transpose()?;
            let key = match sample_seed {
                Some(s) => *blake3::hash(&s.to_le_bytes()).as_bytes(),
                None => {
                    let mut k = [0u8; 32];
                    getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
                    k
                }
            };
            let progress = Progress::spinner("loading the model and rechecking the update log");
            let s = train::verify(&cfg, &data_dir, origin, fraction, tolerance, &key)?;
            drop(progress);
            print!("{}", s.report());
            if let Some(p) = summary {
                write_json(&p, &s)?;
            }
            if !s.flagged.is_empty() {
                std::process::exit(4);
            }
            Ok(())
        }
        Command::Materialize {
            file,
            base,
            out,
            summary,
        } => {
            let progress = Progress::spinner("loading the base model and replaying the seed log");
            let s = train::materialize(&file, base.as_deref(), &out)?;
            drop(progress);
            println!("{}", s.line());
            if let Some(p) = summary {
                write_json(&p, &s)?;
            }
            Ok(())
        }
        Command::Publish {
            node,
            token_file,
            records,
        } => {
            let token = token_file
                .map(|f| seedswarm::net::psk::load_token("--token-file", &f))
                .transpose()
                .map_err(|e| anyhow::anyhow!(e))?;
            for path in &records {
                let answer = seedswarm::owner::publish(&node, token.as_deref(), path)?;
                println!("{}: {answer}", path.display());
            }
            Ok(())
        }
        Command::PeerId { data_dir } => {
            let key = seedswarm::net::load_or_create_key(&data_dir)?;
            println!("{}", key.public().to_peer_id());
            Ok(())
        }
        Command::OwnerKey { out } => {
            let owner = seedswarm::owner::create_key(&out)?;
            println!("wrote the owner key to {} (keep it offline)", out.display());
            println!("put this in the manifest's [run] section:");
            println!("owner = \"{}\"", owner.to_hex());
            Ok(())
        }
        Command::Admit { who, until_seq } => sign_record(
            &who,
            seedswarm::crdt::admit::Kind::Admission,
            until_seq.unwrap_or(seedswarm::crdt::admit::UNLIMITED),
        ),
        Command::Revoke { who, from_seq } => {
            sign_record(&who, seedswarm::crdt::admit::Kind::Revocation, from_seq)
        }
        Command::Status {
            urls,
            watch,
            interval,
            token_file,
        } => {
            let token = token_file
                .map(|f| seedswarm::net::psk::load_token("--token-file", &f))
                .transpose()
                .map_err(|message| seedswarm::config::Error::Invalid {
                    path: "command line".into(),
                    message,
                })?;
            status_loop(&urls, watch, interval, token.as_deref())
        }
        Command::Node {
            config,
            listen,
            bootstrap,
            external_address,
            relay,
            relay_server,
            data_dir,
            max_updates,
            duration,
            min_peers,
            max_staleness,
            mode,
            join,
            no_mdns,
            serve,
            http,
            summary,
            record,
            psk,
            http_token_file,
        } => run_node(
            {
                let mut cfg = with_access(
                    with_mode(load(&config)?, mode, &config)?,
                    psk,
                    http_token_file,
                );
                cfg.node
                    .records
                    .extend(record.iter().map(|p| p.display().to_string()));
                if let Some(s) = max_staleness {
                    cfg.node.max_staleness = s;
                }
                cfg.node.external_addresses.extend(external_address);
                cfg.node.relays.extend(relay);
                cfg.node.relay_server |= relay_server;
                cfg
            },
            http,
            listen,
            bootstrap,
            data_dir,
            max_updates,
            duration,
            min_peers,
            join,
            no_mdns,
            serve,
            summary,
        ),
        Command::Delta {
            base,
            input,
            apply,
            top_z,
            clusters,
            iterations,
            positions,
            out,
            summary,
        } => match (apply, input) {
            (Some(apply), _) => delta_apply(&base, &apply, out.as_deref()),
            (None, Some(input)) => {
                let d = seedswarm::delta::fedzip::Settings::default();
                let s = seedswarm::delta::fedzip::Settings {
                    top_z: top_z.unwrap_or(d.top_z),
                    clusters: clusters.unwrap_or(d.clusters),
                    iterations: iterations.unwrap_or(d.iterations),
                    positions: positions.unwrap_or(d.positions),
                };
                delta_compress(&base, &input, &s, out.as_deref(), summary.as_deref())
            }
            (None, None) => anyhow::bail!("delta needs --input or --apply"),
        },
        Command::Keygen { psk, http_token } => keygen(psk.as_deref(), http_token.as_deref()),
    }
}

/// `seedswarm status`: one table (or, with `--watch`, one every `interval`
/// seconds); exits 1 when a node is unreachable, 3 on a digest mismatch,
/// 4 when a node's spot checks flagged an origin.
fn status_loop(
    urls: &[String],
    watch: bool,
    interval: f64,
    token: Option<&str>,
) -> anyhow::Result<()> {
    loop {
        let rep = seedswarm::obs::status::poll_with(urls, Duration::from_secs(3), token);
        if watch {
            print!("\x1b[2J\x1b[H");
        }
        print!("{}", rep.table);
        if !watch {
            if !rep.unreachable.is_empty() {
                std::process::exit(1);
            }
            if rep.mismatches > 0 {
                std::process::exit(3);
            }
            if rep.flagged > 0 {
                std::process::exit(4);
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(interval.max(0.2)));
    }
}

/// Applies `--psk` and `--http-token-file` overrides (checked when the
/// node's options are made).
fn with_access(mut cfg: Config, psk: Option<PathBuf>, token: Option<PathBuf>) -> Config {
    if let Some(p) = psk {
        cfg.node.psk_file = Some(p.display().to_string());
    }
    if let Some(t) = token {
        cfg.node.http_token_file = Some(t.display().to_string());
    }
    cfg
}

/// `seedswarm keygen`: writes the secrets asked for and says what to do
/// with them (a key's fingerprint, never the key).
fn keygen(psk: Option<&Path>, http_token: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = psk {
        let key = seedswarm::net::psk::generate(path)
            .with_context(|| format!("writing the swarm key {}", path.display()))?;
        println!(
            "wrote a new pre-shared swarm key to {} (mode 0600), fingerprint {}",
            path.display(),
            key.fingerprint()
        );
        println!(
            "copy it to every machine of the swarm and set psk_file = \"{}\" under [node] (or --psk); QUIC is off in a private swarm",
            path.display()
        );
    }
    if let Some(path) = http_token {
        seedswarm::net::psk::generate_token(path)
            .with_context(|| format!("writing the HTTP token {}", path.display()))?;
        println!(
            "wrote a new HTTP bearer token to {} (mode 0600); set http_token_file = \"{}\" under [node] (or --http-token-file), and pass --token-file to seedswarm status",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_node(
    mut cfg: Config,
    http: Option<String>,
    listen: Vec<String>,
    bootstrap: Vec<String>,
    data_dir: Option<PathBuf>,
    max_updates: Option<u64>,
    duration: Option<f64>,
    min_peers: Option<usize>,
    join: seedswarm::proto::join::Mode,
    no_mdns: bool,
    serve: bool,
    summary: Option<PathBuf>,
) -> anyhow::Result<()> {
    if !listen.is_empty() {
        cfg.node.listen = listen;
    }
    cfg.node.bootstrap.extend(bootstrap);
    if no_mdns {
        cfg.node.mdns = false;
    }
    if let Some(m) = min_peers {
        cfg.node.min_peers = m;
    }
    if http.is_some() {
        cfg.node.http = http;
    }
    cfg.validate()
        .map_err(|message| seedswarm::config::Error::Invalid {
            path: "command line".into(),
            message,
        })?;
    if let Some(d) = duration {
        if !(d.is_finite() && d > 0.0) {
            return Err(seedswarm::config::Error::Invalid {
                path: "command line".into(),
                message: format!("--duration must be a positive number of seconds, got {d}"),
            }
            .into());
        }
    }
    let max_updates =
        max_updates.or((cfg.node.steps > 0 && duration.is_none()).then_some(cfg.node.steps));
    let mut opts = node::Options::from_config(
        &cfg,
        data_dir,
        max_updates,
        duration.map(Duration::from_secs_f64),
        serve,
    )?;
    opts.join = join;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (status_tx, status_rx) = tokio::sync::oneshot::channel();
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("leaving (Ctrl-C)");
        };
        let printer = tokio::spawn(async move {
            let Ok(mut watch) = status_rx.await else { return };
            print_progress(&mut watch).await;
        });
        let result = node::run(cfg, opts, shutdown, |n| {
            println!("peer id {}", n.peer_id);
            for a in &n.listen {
                println!("listening on {a}/p2p/{}", n.peer_id);
            }
            for line in &n.notices {
                println!("{line}");
            }
            if let Some(h) = n.http {
                println!("dashboard http://{h}/  metrics http://{h}/metrics  status http://{h}/status");
            }
            let _ = status_tx.send(n.watch());
        })
        .await;
        printer.abort();
        let s = result?;
        println!(
            "done: digest {} applied {} (own {}), accuracy {:.1}%, settled {}, {:.1} wire bytes in per update",
            &s.digest.get(..16).unwrap_or("-"),
            s.updates_applied,
            s.own_updates,
            100.0 * s.accuracy,
            s.settled,
            s.wire_bytes_in_per_update
        );
        if !s.settled {
            for w in s.waiting_for.iter().chain(&s.missing) {
                println!("not settled: {w}");
            }
        }
        if let Some(path) = summary {
            write_json(&path, &s)?;
        }
        anyhow::Ok(())
    })
}

/// One status line to stderr every two seconds.
async fn print_progress(watch: &mut tokio::sync::watch::Receiver<node::Status>) {
    let mut last = Instant::now();
    while watch.changed().await.is_ok() {
        if last.elapsed() < Duration::from_secs(2) {
            continue;
        }
        last = Instant::now();
        eprintln!("{}", seedswarm::obs::status::line(&watch.borrow()));
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing summary {}", path.display()))
}

/// `seedswarm delta`: compresses `input − base`, prints what it did and
/// writes `--summary`.
fn delta_compress(
    base: &Path,
    input: &Path,
    s: &seedswarm::delta::fedzip::Settings,
    out: Option<&Path>,
    summary: Option<&Path>,
) -> anyhow::Result<()> {
    s.validate("delta")
        .map_err(|message| seedswarm::config::Error::Invalid {
            path: "command line".into(),
            message: message.replace("delta.", "--").replace('_', "-"),
        })?;
    let s = delta::compress(base, input, s, out)?;
    if !s.skipped.is_empty() {
        eprintln!(
            "note: {} tensors not compressed (in one file only, or equal non-float): {}",
            s.skipped.len(),
            s.skipped.join(", ")
        );
    }
    println!(
        "delta: {} tensors, {} of {} entries kept; {} -> {} bytes ({:.1}x; plain positions {} bytes, {:.1}x); rel L2 error {:.4}, max abs error {:.3e}; {:.2}s",
        s.tensors,
        s.kept,
        s.elements,
        s.raw_bytes,
        s.compressed_bytes,
        s.ratio,
        s.compressed_bytes_plain,
        s.ratio_plain,
        s.rel_l2_error,
        s.max_abs_error,
        s.wall_s
    );
    if let Some(path) = summary {
        write_json(path, &s)?;
    }
    Ok(())
}

/// `seedswarm delta --apply`: writes `base + delta` to `out` and says so.
fn delta_apply(base: &Path, delta: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let out = out.context("--apply needs --out")?;
    let a = delta::apply(base, delta, out)?;
    println!(
        "applied {} tensors ({} entries) to {}, wrote {}",
        a.tensors,
        a.kept,
        base.display(),
        out.display()
    );
    Ok(())
}
