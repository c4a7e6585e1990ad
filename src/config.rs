//! Configuration: the run manifest (what every node of a run must share) and
//! the node settings (what each node may choose for itself).
//!
//! Loaded from TOML; [`Config::validate`] rejects inconsistent values with a
//! message naming the field. The run id is the BLAKE3 hash of the canonical
//! (JSON, fixed field order) manifest together with the base model hash.

use crate::crdt::replica::Schedule;
use crate::model::tiny;
use crate::task;
use crate::zo::codec;
use crate::zo::perturb::Kind;
use crate::zo::seed::RunId;
use crate::zo::structure::Structure;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Errors loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema.
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    /// A value was out of range or inconsistent.
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
}

/// Which model a run fine-tunes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelSpec {
    /// The built-in candle classifier.
    Tiny(tiny::Settings),
    /// A llama-family GGUF file (e.g. SmolLM2), dequantized to f32.
    Gguf(ModelFile),
    /// A Hugging Face directory: config.json, *.safetensors, tokenizer.json.
    Hf(ModelFile),
}

/// Where a pretrained model lives (every node needs identical weights: the
/// base model hash enters the run id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// File (GGUF) or directory (Hugging Face), relative to the working directory.
    pub path: String,
}

/// Which data a run trains on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TaskSpec {
    /// The built-in synthetic counting task.
    Synthetic(task::Synthetic),
    /// Prompt-based classification of labeled sentences (needs a language model).
    Prompt(task::Prompt),
    /// Causal language modelling on plain text (needs a language model).
    Text(task::Text),
}

/// The run manifest: everything that must be identical on every node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Human-readable name.
    pub name: String,
    /// Seed of the base model (built-in model) and of data sampling.
    pub seed: u64,
    /// The model.
    pub model: ModelSpec,
    /// The data.
    pub task: TaskSpec,
    /// Parameter name patterns (`*` matches any run of characters) to train.
    #[serde(default = "default_trainable")]
    pub trainable: Vec<String>,
    /// Distribution of `z`.
    #[serde(default)]
    pub perturbation: Kind,
    /// Which elements an update perturbs: all (left out of the canonical
    /// manifest), a seed-chosen subset of layers (LeZO), or the
    /// smallest-magnitude base weights (Sparse MeZO).
    #[serde(default, skip_serializing_if = "Structure::is_dense")]
    pub structure: Structure,
    /// Perturbation size ε.
    pub eps: f64,
    /// Examples per update.
    pub batch_size: usize,
    /// Fixed-point resolution: unit of tensor t is 2^(exponent(max|θ₀_t|) − unit_bits).
    #[serde(default = "default_unit_bits")]
    pub unit_bits: u32,
    /// Learning-rate schedule over an update's seq.
    pub schedule: Schedule,
    /// The one-byte codec.
    #[serde(default)]
    pub codec: codec::Settings,
    /// Rules for delta updates (compressed sparse weight deltas). Left out of
    /// the canonical manifest while at their defaults.
    #[serde(default, skip_serializing_if = "DeltaRules::is_default")]
    pub delta: DeltaRules,
    /// Most updates one origin may contribute to the run (its log quota:
    /// later seqs are refused everywhere). Left out of the canonical
    /// manifest while at its default.
    #[serde(
        default = "default_max_updates_per_origin",
        skip_serializing_if = "is_default_max_updates_per_origin"
    )]
    pub max_updates_per_origin: u64,
    /// The run's owner: an ed25519 public key (64 hex digits). When set, the
    /// run is permissioned: only origins holding the owner's signed
    /// admission contribute, and the owner may revoke them
    /// ([`crate::crdt::admit`]). Absent: an open run (left out of the
    /// canonical manifest, so open runs keep their ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Default of `run.max_updates_per_origin`: 2^24 (16 MiB of codes).
pub const DEFAULT_MAX_UPDATES_PER_ORIGIN: u64 = 1 << 24;

fn default_max_updates_per_origin() -> u64 {
    DEFAULT_MAX_UPDATES_PER_ORIGIN
}

fn is_default_max_updates_per_origin(n: &u64) -> bool {
    *n == DEFAULT_MAX_UPDATES_PER_ORIGIN
}

/// What every node accepts and how it applies delta updates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeltaRules {
    /// A delta is scaled down to at most this L2 norm before it enters `δ`.
    pub max_norm: f64,
    /// Largest encoded delta accepted, bytes.
    pub max_bytes: usize,
}

impl Default for DeltaRules {
    fn default() -> Self {
        Self {
            max_norm: 1.0,
            max_bytes: 4 << 20,
        }
    }
}

impl DeltaRules {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How a node contributes to the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// SPSA steps published as one-byte updates.
    #[default]
    ZerothOrder,
    /// Local backprop steps published as compressed sparse deltas.
    FirstOrder,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::ZerothOrder => "zeroth-order",
            Mode::FirstOrder => "first-order",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zeroth-order" | "zo" => Ok(Mode::ZerothOrder),
            "first-order" | "fo" => Ok(Mode::FirstOrder),
            _ => Err(format!(
                "unknown mode {s:?}: use \"zeroth-order\" or \"first-order\""
            )),
        }
    }
}

/// Settings of a first-order contributor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirstOrder {
    /// Local SGD steps per published delta.
    pub local_steps: usize,
    /// SGD learning rate.
    pub lr: f64,
    /// Examples per local step (0 = run.batch_size).
    pub batch_size: usize,
    /// How the delta is compressed.
    pub compression: crate::delta::fedzip::Settings,
}

impl Default for FirstOrder {
    fn default() -> Self {
        Self {
            local_steps: 10,
            lr: 0.5,
            batch_size: 0,
            compression: crate::delta::fedzip::Settings::default(),
        }
    }
}

fn default_trainable() -> Vec<String> {
    vec!["*".into()]
}
fn default_unit_bits() -> u32 {
    24
}

/// Per-node settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// Updates this node publishes before it stops training (0 = no limit).
    pub steps: u64,
    /// Evaluate on the dev set every this many own updates (0 = only at the end).
    pub eval_every: u64,
    /// Examples per evaluation forward.
    pub eval_batch: usize,
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Multiaddrs of peers to dial at start (with `/p2p/<peer id>` for Kademlia).
    pub bootstrap: Vec<String>,
    /// Discover peers on the LAN by mDNS.
    pub mdns: bool,
    /// Addresses this node is known to be reachable at from outside (a
    /// public IP, a forwarded port): announced to peers as confirmed,
    /// without waiting for AutoNAT.
    pub external_addresses: Vec<String>,
    /// Relays (multiaddrs ending with `/p2p/<peer id>` of nodes run with
    /// `relay_server`) to reserve a slot at (at most two in all); while
    /// this node is not known to be public, peers it dialed that serve
    /// relays (a bootstrap node) are used as well.
    pub relays: Vec<String>,
    /// Serve circuit relay v2 for peers behind NATs (a node with a public
    /// address: a bootstrap node, say).
    pub relay_server: bool,
    /// Own updates are batched into one gossip message per this many milliseconds.
    pub publish_ms: u64,
    /// ... or as soon as this many are waiting (bounds how stale peers' views get).
    pub publish_max: usize,
    /// Heartbeat period in milliseconds.
    pub heartbeat_ms: u64,
    /// Bounded staleness: no own step is computed while more than this many
    /// updates this node holds are not applied to its replica yet (it
    /// applies first). Keeps every node's gradient on a recent state at any
    /// swarm size; a lone node is never behind.
    pub max_staleness: u64,
    /// Staleness-aware step size: with `P` nodes training at once (this
    /// one and the live peers it hears training), each own projected
    /// gradient is scaled by `min(1, step_peers / P)` before it is encoded,
    /// so the swarm's concurrent steps add up to what `step_peers` nodes
    /// make (their updates are computed on states that lack each other's).
    /// The byte alone is the contribution: replicas agree whatever it is.
    /// 0 turns the scaling off.
    pub step_peers: u64,
    /// Spot checks: this fraction of the one-byte updates that arrive by
    /// gossip (chosen with a secret key, so an origin cannot tell which) is
    /// recomputed (two forwards each) on the state its origin stepped on
    /// and compared with the published code; per-origin agreement is in
    /// /status and /metrics. 0 turns them off.
    pub verify_fraction: f64,
    /// Loss noise a spot check tolerates between the origin's forward and
    /// this node's (absolute, loss units): a gradient within
    /// `verify_tolerance / 2ε` of zero has no checkable sign.
    pub verify_tolerance: f64,
    /// After training, wait at most this many seconds for the swarm to agree.
    pub settle_timeout_s: u64,
    /// Start training once this many peers have been heard from.
    pub min_peers: usize,
    /// Most updates per second accepted from one origin.
    pub max_rate: f64,
    /// Distinct peers that must vouch for a snapshot's state (offer it, or
    /// announce its version vector with its digest) before a joiner installs
    /// it; capped at the peers known, so a lone peer suffices in a swarm of
    /// two. Otherwise the joiner replays.
    pub snapshot_quorum: usize,
    /// Serve /metrics, /status and the dashboard on this address (off when absent).
    pub http: Option<String>,
    /// How this node contributes: "zeroth-order" or "first-order".
    pub mode: Mode,
    /// First-order settings (used in that mode).
    pub first_order: FirstOrder,
    /// Files of the owner's membership records (admissions, revocations)
    /// this node takes and gossips at start: in a permissioned run, at least
    /// its own admission (once taken it is kept in the data dir's log).
    pub records: Vec<String>,
    /// A private swarm's pre-shared key: a libp2p swarm.key file
    /// (`seedswarm keygen --psk FILE`), relative to the working directory.
    /// Only nodes holding the same key complete a handshake; QUIC is off.
    pub psk_file: Option<String>,
    /// Most established connections in all.
    pub max_connections: u32,
    /// Most established connections with one peer.
    pub max_connections_per_peer: u32,
    /// Most connections still in their handshake, incoming and outgoing each.
    pub max_pending: u32,
    /// Most inbound connections from one IP address (loopback included).
    pub max_connections_per_ip: u32,
    /// When not empty, the only peer ids this node dials or accepts.
    pub allow: Vec<String>,
    /// Peer ids this node never dials or accepts.
    pub deny: Vec<String>,
    /// A file holding the bearer token every HTTP request must carry
    /// (`Authorization: Bearer <token>`), relative to the working directory.
    pub http_token_file: Option<String>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            steps: 2000,
            eval_every: 250,
            eval_batch: 256,
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".into(),
                "/ip4/0.0.0.0/udp/0/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            external_addresses: Vec::new(),
            relays: Vec::new(),
            relay_server: false,
            publish_ms: 250,
            publish_max: 256,
            heartbeat_ms: 1000,
            max_staleness: 64,
            step_peers: 4,
            verify_fraction: 0.01,
            verify_tolerance: crate::train::DEFAULT_TOLERANCE,
            settle_timeout_s: 120,
            min_peers: 0,
            max_rate: 50_000.0,
            snapshot_quorum: 2,
            http: None,
            mode: Mode::ZerothOrder,
            first_order: FirstOrder::default(),
            records: Vec::new(),
            psk_file: None,
            max_connections: crate::net::limits::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: crate::net::limits::DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_pending: crate::net::limits::DEFAULT_MAX_PENDING,
            max_connections_per_ip: crate::net::limits::DEFAULT_MAX_CONNECTIONS_PER_IP,
            allow: Vec::new(),
            deny: Vec::new(),
            http_token_file: None,
        }
    }
}

/// A whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The run manifest.
    pub run: Manifest,
    /// This node's settings.
    #[serde(default)]
    pub node: NodeSettings,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let cfg: Config = toml::from_str(text).map_err(|e| Error::Parse {
            path: origin.into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate().map_err(|message| Error::Invalid {
            path: origin.into(),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks values and their consistency; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let r = &self.run;
        if r.name.trim().is_empty() {
            return Err("run.name must not be empty".into());
        }
        if !(r.eps.is_finite() && r.eps > 0.0 && r.eps < 1.0) {
            return Err(format!("run.eps must be within (0, 1), got {}", r.eps));
        }
        if r.batch_size == 0 || r.batch_size > 65_536 {
            return Err(format!(
                "run.batch_size must be within 1..=65536, got {}",
                r.batch_size
            ));
        }
        if !(8..=28).contains(&r.unit_bits) {
            return Err(format!(
                "run.unit_bits must be within 8..=28, got {}",
                r.unit_bits
            ));
        }
        if r.trainable.is_empty() || r.trainable.iter().any(|p| p.trim().is_empty()) {
            return Err("run.trainable must list at least one non-empty pattern".into());
        }
        if let Some(o) = &r.owner {
            crate::crdt::admit::Owner::from_hex(o).map_err(|e| format!("run.owner: {e}"))?;
        }
        r.schedule.validate("run.schedule")?;
        r.structure.validate("run.structure")?;
        r.codec.validate("run.codec")?;
        // One update may move a weight by at most lr·clip; keep that within 2^24 units
        // of the finest unit (scale 1) so δ stays far from the i32 range.
        let max_units = r.schedule.max_lr() * r.codec.clip * f64::from(1u32 << r.unit_bits);
        if max_units > f64::from(1u32 << 28) {
            return Err(format!(
                "run.schedule.lr × run.codec.clip is too large for run.unit_bits = {}: one update could add {max_units:.3e} units",
                r.unit_bits
            ));
        }
        match (&r.model, &r.task) {
            (ModelSpec::Tiny(m), TaskSpec::Synthetic(t)) => {
                m.validate("run.model")?;
                t.validate("run.task")?;
                if m.vocab != t.vocab {
                    return Err(format!(
                        "run.task.vocab ({}) must equal run.model.vocab ({})",
                        t.vocab, m.vocab
                    ));
                }
                if m.classes != 2 {
                    return Err(format!(
                        "run.model.classes must be 2 for the synthetic task, got {}",
                        m.classes
                    ));
                }
            }
            (ModelSpec::Gguf(f) | ModelSpec::Hf(f), TaskSpec::Prompt(t)) => {
                if f.path.trim().is_empty() {
                    return Err("run.model.path must name the model file or directory".into());
                }
                t.validate("run.task")?;
            }
            (ModelSpec::Gguf(f) | ModelSpec::Hf(f), TaskSpec::Text(t)) => {
                if f.path.trim().is_empty() {
                    return Err("run.model.path must name the model file or directory".into());
                }
                t.validate("run.task")?;
            }
            (ModelSpec::Tiny(_), TaskSpec::Prompt(_) | TaskSpec::Text(_)) => {
                return Err(
                    "run.task.kind = \"prompt\" or \"text\" needs a language model (run.model.kind = \"gguf\" or \"hf\")"
                        .into(),
                );
            }
            (ModelSpec::Gguf(_) | ModelSpec::Hf(_), TaskSpec::Synthetic(_)) => {
                return Err("run.task.kind = \"synthetic\" needs run.model.kind = \"tiny\"".into());
            }
        }
        if self.node.eval_batch == 0 {
            return Err("node.eval_batch must be at least 1".into());
        }
        for (field, list) in [
            ("listen", &self.node.listen),
            ("bootstrap", &self.node.bootstrap),
            ("external_addresses", &self.node.external_addresses),
            ("relays", &self.node.relays),
        ] {
            for (i, a) in list.iter().enumerate() {
                if let Err(e) = a.parse::<libp2p::Multiaddr>() {
                    return Err(format!("node.{field}[{i}] is not a multiaddr ({a:?}): {e}"));
                }
            }
        }
        if !(10..=60_000).contains(&self.node.publish_ms) {
            return Err(format!(
                "node.publish_ms must be within 10..=60000, got {}",
                self.node.publish_ms
            ));
        }
        if !(0.0..=1.0).contains(&self.node.verify_fraction) {
            return Err(format!(
                "node.verify_fraction must be within [0, 1], got {}",
                self.node.verify_fraction
            ));
        }
        if !(self.node.verify_tolerance.is_finite() && self.node.verify_tolerance >= 0.0) {
            return Err(format!(
                "node.verify_tolerance must be a non-negative number, got {}",
                self.node.verify_tolerance
            ));
        }
        if !(1..=crate::net::wire::MAX_BATCH).contains(&self.node.publish_max) {
            return Err(format!(
                "node.publish_max must be within 1..={}, got {}",
                crate::net::wire::MAX_BATCH,
                self.node.publish_max
            ));
        }
        if !(100..=60_000).contains(&self.node.heartbeat_ms) {
            return Err(format!(
                "node.heartbeat_ms must be within 100..=60000, got {}",
                self.node.heartbeat_ms
            ));
        }
        if let Some(a) = &self.node.http {
            if let Err(e) = a.parse::<std::net::SocketAddr>() {
                return Err(format!(
                    "node.http must be an address like 127.0.0.1:9000 ({a:?}): {e}"
                ));
            }
        }
        self.node.validate_access()?;
        let d = &r.delta;
        if !(d.max_norm.is_finite() && d.max_norm > 0.0) {
            return Err(format!(
                "run.delta.max_norm must be positive and finite, got {}",
                d.max_norm
            ));
        }
        if !(64..=crate::crdt::log::MAX_DELTA_BYTES).contains(&d.max_bytes) {
            return Err(format!(
                "run.delta.max_bytes must be within 64..={}, got {}",
                crate::crdt::log::MAX_DELTA_BYTES,
                d.max_bytes
            ));
        }
        let fo = &self.node.first_order;
        if !(1..=100_000).contains(&fo.local_steps) {
            return Err(format!(
                "node.first_order.local_steps must be within 1..=100000, got {}",
                fo.local_steps
            ));
        }
        if !(fo.lr.is_finite() && fo.lr > 0.0) {
            return Err(format!(
                "node.first_order.lr must be positive and finite, got {}",
                fo.lr
            ));
        }
        if fo.batch_size > 65_536 {
            return Err(format!(
                "node.first_order.batch_size must be within 0..=65536, got {}",
                fo.batch_size
            ));
        }
        fo.compression.validate("node.first_order.compression")?;
        if self.run.max_updates_per_origin == 0 {
            return Err("run.max_updates_per_origin must be at least 1".into());
        }
        if self.node.snapshot_quorum == 0 {
            return Err("node.snapshot_quorum must be at least 1".into());
        }
        if !(self.node.max_rate.is_finite() && self.node.max_rate > 0.0) {
            return Err(format!(
                "node.max_rate must be positive, got {}",
                self.node.max_rate
            ));
        }
        Ok(())
    }
}

impl Manifest {
    /// The run's owner, when it is permissioned (validated by
    /// [`Config::validate`]; an unparsable key reads as none).
    pub fn owner(&self) -> Option<crate::crdt::admit::Owner> {
        self.owner
            .as_deref()
            .and_then(|o| crate::crdt::admit::Owner::from_hex(o).ok())
    }

    /// The run id: hash of the canonical manifest and the base model hash.
    pub fn run_id(&self, base_hash: &[u8; 32]) -> RunId {
        let mut h = blake3::Hasher::new();
        h.update(b"seedswarm/run/1");
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        h.update(&(canonical.len() as u64).to_le_bytes());
        h.update(&canonical);
        h.update(base_hash);
        RunId(*h.finalize().as_bytes())
    }
}

impl NodeSettings {
    /// Checks the admission settings: connection caps at least 1, peer ids
    /// that parse (the message names the field and index), file paths not
    /// empty. The files themselves are read when the node starts.
    pub fn validate_access(&self) -> Result<(), String> {
        for (field, v) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_peer", self.max_connections_per_peer),
            ("max_pending", self.max_pending),
            ("max_connections_per_ip", self.max_connections_per_ip),
        ] {
            if v == 0 {
                return Err(format!("node.{field} must be at least 1, got 0"));
            }
        }
        self.peer_ids("allow", &self.allow)?;
        self.peer_ids("deny", &self.deny)?;
        for (field, f) in [
            ("psk_file", &self.psk_file),
            ("http_token_file", &self.http_token_file),
        ] {
            if f.as_deref().is_some_and(|f| f.trim().is_empty()) {
                return Err(format!("node.{field} must name a file"));
            }
        }
        Ok(())
    }

    /// The peer ids of `node.<field>`; one that does not parse is an error
    /// naming the field and its index. Only ids that inline an ed25519 key
    /// (every seedswarm node's, as its `peer id …` line prints it) count:
    /// libp2p's parser alone takes many mistyped strings.
    pub fn peer_ids(&self, field: &str, list: &[String]) -> Result<Vec<libp2p::PeerId>, String> {
        list.iter()
            .enumerate()
            .map(|(i, p)| {
                let s = p.trim();
                let bad = |why: String| format!("node.{field}[{i}] is not a peer id ({p:?}): {why}");
                let id: libp2p::PeerId = s.parse().map_err(|e| bad(format!("{e}")))?;
                if id.to_base58() != s || crate::net::origin_of_peer(&id).is_none() {
                    return Err(bad(
                        "not the ed25519 peer id of a seedswarm node (its \"peer id …\" start-up line)"
                            .into(),
                    ));
                }
                Ok(id)
            })
            .collect()
    }
}

/// Whether `name` matches the glob `pattern` (`*` = any run of characters).
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../configs/demo.toml");

    #[test]
    fn demo_config_is_valid() {
        Config::parse(DEMO, "demo.toml").unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("eps = 0.01", "eps = -1.0", "run.eps"),
            ("batch_size = 64", "batch_size = 0", "run.batch_size"),
            (
                "steps_per_octave = 8",
                "steps_per_octave = 3",
                "run.codec.steps_per_octave",
            ),
            ("vocab = 32\ndim", "vocab = 33\ndim", "run.task.vocab"),
            ("eps = 0.01", "eps = 0.01\nepsilon = 2", "epsilon"),
            ("eps = 0.01", "eps = \"big\"", "eps"),
            (
                "eval_batch = 256",
                "eval_batch = 256\nlisten = [\"nonsense\"]",
                "node.listen[0]",
            ),
            (
                "eval_batch = 256",
                "eval_batch = 256\ndeny = [\"x\"]",
                "node.deny[0]",
            ),
            (
                "eval_batch = 256",
                "eval_batch = 256\nmax_connections_per_ip = 0",
                "node.max_connections_per_ip",
            ),
            (
                "eval_batch = 256",
                "eval_batch = 256\npsk_file = \"\"",
                "node.psk_file",
            ),
        ];
        for (from, to, field) in cases {
            assert!(DEMO.contains(from), "{from}");
            let text = DEMO.replacen(from, to, 1);
            let err = Config::parse(&text, "x.toml").unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn peer_id_lists_name_the_bad_index_and_stay_out_of_the_run_id() {
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let good = format!("eval_batch = 256\nallow = [\"{peer}\"]\npsk_file = \"swarm.key\"");
        let c = Config::parse(&DEMO.replacen("eval_batch = 256", &good, 1), "x.toml").unwrap();
        assert_eq!(c.node.peer_ids("allow", &c.node.allow).unwrap(), vec![peer]);
        let plain = Config::parse(DEMO, "demo.toml").unwrap();
        assert_eq!(c.run.run_id(&[0; 32]), plain.run.run_id(&[0; 32]));
        let bad = format!("eval_batch = 256\nallow = [\"{peer}\", \"nonsense\"]");
        let err = Config::parse(&DEMO.replacen("eval_batch = 256", &bad, 1), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node.allow[1]") && err.contains("nonsense"),
            "{err}"
        );
    }

    #[test]
    fn structures_are_checked_and_name_the_run() {
        let with = |t: &str| DEMO.to_string() + "\n[run.structure]\n" + t + "\n";
        for (table, field) in [
            ("kind = \"layers\"\nlayers = 0", "run.structure.layers"),
            (
                "kind = \"magnitude\"\ndensity = 0.0",
                "run.structure.density",
            ),
            (
                "kind = \"magnitude\"\ndensity = 1.5",
                "run.structure.density",
            ),
        ] {
            let err = Config::parse(&with(table), "x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let plain = Config::parse(DEMO, "a").unwrap().run;
        let dense = Config::parse(&with("kind = \"dense\""), "a").unwrap().run;
        // Dense is the default and stays out of the canonical manifest.
        assert_eq!(dense.run_id(&[0; 32]), plain.run_id(&[0; 32]));
        let layers = Config::parse(&with("kind = \"layers\"\nlayers = 2"), "a").unwrap();
        assert_eq!(layers.run.structure, Structure::Layers { layers: 2 });
        assert_ne!(layers.run.run_id(&[0; 32]), plain.run_id(&[0; 32]));
    }

    #[test]
    fn run_id_depends_on_manifest_and_base() {
        let a = Config::parse(DEMO, "a").unwrap().run;
        let mut b = a.clone();
        b.eps *= 2.0;
        assert_ne!(a.run_id(&[0; 32]), b.run_id(&[0; 32]));
        assert_ne!(a.run_id(&[0; 32]), a.run_id(&[1; 32]));
        assert_eq!(a.run_id(&[0; 32]), a.clone().run_id(&[0; 32]));
    }

    #[test]
    fn smollm2_config_is_valid_and_checked() {
        const SMOL: &str = include_str!("../configs/smollm2-sst2.toml");
        let c = Config::parse(SMOL, "smollm2-sst2.toml").unwrap();
        assert!(matches!(c.run.model, ModelSpec::Gguf(_)));
        assert!(matches!(c.run.task, TaskSpec::Prompt(_)));
        for (from, to, field) in [
            (
                "assets/SmolLM2-135M-Instruct.Q4_1.gguf",
                "",
                "run.model.path",
            ),
            (
                "labels = [\" terrible\", \" great\"]",
                "labels = [\" great\"]",
                "run.task.labels",
            ),
            (
                "template = \"{sentence} It was\"",
                "template = \"It was\"",
                "run.task.template",
            ),
            ("k_per_class = ", "shots = 3\nk_per_class = ", "shots"),
        ] {
            assert!(SMOL.contains(from), "{from}");
            let err = Config::parse(&SMOL.replacen(from, to, 1), "x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", "x"));
        assert!(glob("model.layers.2*", "model.layers.29.mlp"));
        assert!(glob("*norm*", "model.layers.0.input_layernorm.weight"));
        assert!(!glob("*.bias", "mlp.weight"));
        assert!(glob("mlp.weight", "mlp.weight"));
    }
}
