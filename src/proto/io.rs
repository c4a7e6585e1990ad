//! The core's interface: its inputs, outputs, events, settings and counters,
//! and what it needs to know of peers and of the compute side.

use crate::crdt::log::{Payload, Segment};
use crate::crdt::replica::VersionVector;
use crate::crdt::snapshot::Snapshot;
use crate::model::Eval;
use crate::net::wire;
use crate::zo::seed::Origin;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::{join, Timing};

/// A peer of the swarm, as the core sees it.
pub trait Peer: Clone + Eq + Hash + Ord + Debug {
    /// The origin whose updates this peer signs, when its identity is one
    /// (an ed25519 key).
    fn origin(&self) -> Option<Origin>;
}

/// The gossip topics of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One-byte update batches.
    Updates,
    /// Heartbeats.
    Status,
    /// Delta announcements.
    Deltas,
    /// Proofs of equivocation and the owner's membership records
    /// (admissions, revocations).
    Proofs,
}

/// A validation verdict for gossipsub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop and penalize the forwarder.
    Reject,
    /// Drop without penalty (duplicate, unknown version, busy).
    Ignore,
}

/// An own update, as the compute side produced it.
#[derive(Clone, Debug)]
pub enum Own {
    /// A one-byte update.
    Code(u8),
    /// A compressed sparse delta (its code in the log is [`crate::crdt::log::DELTA`]).
    Delta(Payload),
}

/// What the compute side reports about the replica.
#[derive(Clone, Debug, Default)]
pub struct ComputeState {
    /// Version vector of the replica (what is applied).
    pub vv: VersionVector,
    /// Digest of `δ` at `vv`.
    pub digest: [u8; 32],
    /// Updates applied.
    pub applied: u64,
    /// Own updates made.
    pub own: u64,
    /// Recent training loss (moving average; NaN when unknown).
    pub loss: f32,
    /// Latest evaluation.
    pub eval: Option<Eval>,
    /// Training has stopped for good.
    pub training_done: bool,
}

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This machine's replay speed (param-updates/s), measured at start;
    /// `--join auto` weighs replay against a snapshot with it (None: an
    /// assumed rate).
    pub apply_rate: Option<f64>,
    /// Signs this node's own batches; its origin is this node's.
    pub signer: crate::crdt::attest::Signer,
    /// Most updates per second accepted from one origin (burst of two seconds).
    pub max_rate: f64,
    /// Own one-byte updates are published once per interval...
    pub publish_interval: Duration,
    /// ... or as soon as this many are waiting.
    pub publish_max: usize,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Repair timing.
    pub timing: Timing,
    /// How a node with an empty log catches up.
    pub join: join::Mode,
    /// Distinct peers that must vouch for a snapshot's state before it is
    /// installed (at most as many as are known).
    pub snapshot_quorum: usize,
    /// Start training only once this many peers have been heard from.
    pub min_peers: usize,
    /// Finish once training is over and the swarm agrees (or after `settle_timeout`).
    pub exit_when_settled: bool,
    /// After training, wait at most this long for the swarm to agree.
    pub settle_timeout: Duration,
    /// Largest delta payload accepted (`run.delta.max_bytes`).
    pub max_delta_bytes: usize,
    /// Most updates one origin may contribute (`run.max_updates_per_origin`).
    pub max_updates_per_origin: u64,
    /// The run's owner (`run.owner`): when set, only admitted origins count.
    pub owner: Option<crate::crdt::admit::Owner>,
    /// When this node started, in milliseconds of wall-clock time: heartbeats
    /// carry it with a counter, so an old heartbeat replayed by anyone is
    /// told apart from a fresh one (and one after a restart is newer).
    pub epoch_ms: u64,
    /// Trainable tensors (name, length): what a delta may touch.
    pub shapes: Vec<(String, u64)>,
    /// Test hook: fraction of incoming update messages dropped unseen.
    pub drop_incoming: f64,
    /// How this node contributes; announced in heartbeats.
    pub mode: crate::config::Mode,
    /// Fraction of the one-byte updates arriving by gossip to spot-check
    /// (`node.verify_fraction`; 0: none).
    pub verify_fraction: f64,
    /// This node's secret key choosing which updates it checks.
    pub check_key: [u8; 32],
}

/// What the core takes in.
#[derive(Debug)]
pub enum Input<P, M, C> {
    /// Time passed: repairs, heartbeats, joins, publishing by time, settling.
    Tick,
    /// A gossip message to judge (`topic` None: not one of this run's).
    Gossip {
        /// Its id, to report the verdict with.
        id: M,
        /// The peer that forwarded it.
        from: P,
        /// Its signed author, when signed.
        source: Option<P>,
        /// Which topic.
        topic: Option<Topic>,
        /// The payload.
        data: Vec<u8>,
    },
    /// A sync request from a peer.
    Request {
        /// Who asks.
        from: P,
        /// What.
        request: wire::Request,
        /// Where the answer goes.
        channel: C,
    },
    /// The answer to our request `tag`.
    Response {
        /// Who answered.
        from: P,
        /// The tag of [`Output::Send`].
        tag: u64,
        /// The answer.
        response: wire::Response,
    },
    /// Our request `tag` failed (timeout, connection closed, unsupported).
    RequestFailed {
        /// The tag of [`Output::Send`].
        tag: u64,
    },
    /// Own updates up to `end` were handed to gossipsub.
    Published {
        /// One past the last own seq published.
        end: u64,
    },
    /// The compute side made own update `seq` (already applied and persisted).
    Own {
        /// Its seq.
        seq: u64,
        /// The update.
        update: Own,
        /// The state it was computed on, without this node's own entry
        /// (published with one-byte updates, so peers can recheck them).
        basis: VersionVector,
    },
    /// A spot check of [`Output::Check`] is done: the verdict and the
    /// recomputed gradient, or why it could not be made.
    Checked {
        /// Whose update.
        origin: Origin,
        /// Its seq.
        seq: u64,
        /// The outcome.
        result: Result<(crate::zo::check::Verdict, f64), String>,
    },
    /// The compute side's latest state.
    State(Box<ComputeState>),
    /// A snapshot asked for by [`Output::MakeSnapshot`] is ready.
    Snapshot(Arc<Snapshot>),
    /// The snapshot of [`Output::MakeSnapshot`] could not be made.
    SnapshotFailed(String),
    /// The snapshot of [`Output::Install`] was installed (the replica's
    /// version vector and the snapshot's log), or not.
    Installed(Result<(VersionVector, Vec<Segment>), String>),
    /// A chunk kept by an interrupted join ([`Output::Resume`]).
    KeptChunk {
        /// Snapshot id.
        id: [u8; 32],
        /// Chunk index.
        index: u32,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Stop talking to this peer (blocked, partitioned).
    Forget(P),
    /// Whether a peer is now reachable only through relays (`true`) or
    /// again directly (`false`). Snapshots, the only bulk transfer, are
    /// asked of direct peers alone; a joiner that knows only relayed peers
    /// replays (a byte per update) instead.
    Relayed {
        /// The peer.
        peer: P,
        /// Only relayed connections are open to it.
        only: bool,
    },
    /// Leave the swarm: flush own updates, announce it.
    Leave,
}

/// What the core asks the shell to do.
#[derive(Debug)]
pub enum Output<P, M, C> {
    /// Publish on a topic; `end`: one past the last own seq it carries.
    Publish {
        /// Topic.
        topic: Topic,
        /// Payload.
        data: Vec<u8>,
        /// One past the last own seq carried (update batches and announcements).
        end: Option<u64>,
    },
    /// Report a gossip validation verdict.
    Verdict {
        /// The message.
        id: M,
        /// The peer that forwarded it.
        from: P,
        /// The verdict.
        verdict: Verdict,
    },
    /// Send a sync request; answer with [`Input::Response`] or [`Input::RequestFailed`].
    Send {
        /// To whom.
        to: P,
        /// Our tag for it.
        tag: u64,
        /// The request.
        request: wire::Request,
    },
    /// Answer a sync request.
    Respond {
        /// The request's channel.
        channel: C,
        /// The answer.
        response: wire::Response,
    },
    /// Make a snapshot of the replica (`δ` at its version vector plus
    /// [`Core::log`]'s prefix up to it) and hand it back as [`Input::Snapshot`];
    /// with `retract` non-empty, of the state before those segments (each the
    /// applied tail of its origin; this node's own may have grown since, the
    /// compute side subtracts its newer own updates too).
    MakeSnapshot {
        /// The state wanted (empty: the current one).
        target: VersionVector,
        /// What to subtract first.
        retract: Vec<Segment>,
    },
    /// Recheck `origin`'s one-byte update `seq` (code `code`) on the state
    /// `target` it was computed on: subtract `retract` (the applied tails
    /// past `target`; the compute side subtracts its newer own updates too),
    /// recompute, add them back; report [`Input::Checked`].
    Check {
        /// Whose update.
        origin: Origin,
        /// Its seq.
        seq: u64,
        /// Its published code.
        code: u8,
        /// The state it was computed on (its own entry is `seq`).
        target: VersionVector,
        /// What to subtract to get there.
        retract: Vec<Segment>,
    },
    /// Keep the bases of a batch (own, or accepted from gossip) in the data
    /// dir, so the run can be rechecked offline.
    KeepBases {
        /// Whose batch.
        origin: Origin,
        /// Its first seq.
        first_seq: u64,
        /// Its updates.
        n: u32,
        /// The encoded bases ([`crate::crdt::basis`]).
        bases: Vec<u8>,
    },
    /// Install these verified snapshot chunks into the (empty) replica and
    /// report [`Input::Installed`]; refuse them unless the state is `vv`
    /// with `digest` (what enough peers vouched for).
    Install {
        /// The chunks.
        chunks: Vec<Vec<u8>>,
        /// Their hashes.
        hashes: Vec<[u8; 32]>,
        /// The version vector vouched for.
        vv: VersionVector,
        /// Its digest.
        digest: [u8; 32],
    },
    /// Keep this verified snapshot chunk, so an interrupted join resumes.
    KeepChunk {
        /// Snapshot id.
        id: [u8; 32],
        /// Chunk index.
        index: u32,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Hand back kept chunks of snapshot `id` as [`Input::KeptChunk`].
    Resume {
        /// Snapshot id.
        id: [u8; 32],
        /// Its chunk count.
        chunks: usize,
    },
    /// Training may start (enough peers, join over).
    StartTraining,
    /// This peer sent what no honest peer sends (a forged signature in a
    /// range it served): stop talking to it.
    Ban {
        /// The peer.
        peer: P,
        /// Why.
        reason: &'static str,
    },
    /// An origin was proven to equivocate and is excluded from `from` on:
    /// persist the exclusion (with its proof) next to the log.
    Excluded {
        /// The origin.
        origin: Origin,
        /// First excluded seq.
        from: u64,
        /// The encoded proof.
        proof: Vec<u8>,
    },
    /// An owner-signed admission is news: persist it next to the log.
    Admitted(crate::crdt::admit::Record),
    /// This node's own updates count only below `end` (its admission ends
    /// there, or the owner revoked it from there): make none from there on.
    OwnCap {
        /// First own seq that counts nowhere.
        end: u64,
    },
    /// The node is finished: training over and the swarm agreed, or it waited
    /// `settle_timeout` for that.
    Finished {
        /// Whether the swarm agreed.
        settled: bool,
    },
    /// Something to count or log.
    Event(Event<P>),
}

/// Things worth counting or logging.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<P> {
    /// A message or response was refused or dropped, for this reason.
    Rejected(&'static str),
    /// Payload bytes on a protocol (`gossip_updates`, `gossip_status`,
    /// `gossip_deltas`, `sync`, `delta`, `snapshot`), in or out.
    Bytes {
        /// Protocol label.
        protocol: &'static str,
        /// Inbound (else outbound).
        inbound: bool,
        /// Bytes.
        n: usize,
    },
    /// Own updates published.
    UpdatesPublished(u64),
    /// Foreign updates newly stored (gossip or repair).
    UpdatesReceived(u64),
    /// Of which by range repair.
    UpdatesRepaired(u64),
    /// A peer announced our version vector with another digest.
    DigestMismatch(P),
    /// An origin was proven to equivocate: excluded from this seq on.
    Excluded(Origin, u64),
    /// A peer announced it is leaving.
    PeerLeft(P),
    /// A peer went silent and is no longer waited on.
    PeerSilent(P),
    /// The join decided or finished (`"snapshot"`, `"replay"`, `"none"`).
    Joined(&'static str),
    /// The swarm agrees: same version vector and digest everywhere.
    Settled,
    /// A spot check of one of this origin's updates gave this verdict.
    Rechecked(Origin, crate::zo::check::Verdict),
}

/// Counters the core keeps for status and summaries.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Refusals by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Messages dropped by the test hook.
    pub dropped: u64,
    /// Updates received by repair.
    pub repaired: u64,
    /// Foreign updates stored.
    pub foreign_received: u64,
    /// Gossip messages published with own updates.
    pub published_messages: u64,
    /// Own updates in them.
    pub published_updates: u64,
    /// One past the last own seq handed to gossipsub.
    pub published_through: u64,
    /// Heartbeats at our version vector with another digest.
    pub digest_mismatches: u64,
    /// Distinct peers heard from.
    pub peers_seen: usize,
    /// Origins excluded for equivocation, with the first excluded seq.
    pub excluded: BTreeMap<String, u64>,
    /// Origins admitted by the run's owner (0 in an open run).
    pub admitted: usize,
    /// Updates taken out of the replica again by exclusions.
    pub retracted: u64,
    /// Updates dropped from behind gaps (over bounds, or unrepairable).
    pub dropped_pending: u64,
    /// Spot checks per origin.
    pub checks: BTreeMap<Origin, crate::zo::check::Tally>,
    /// Spot checks not made: the queue was full, the state was not reached
    /// in time, bases did not decode or name unknown origins, or the
    /// compute side could not make them.
    pub checks_skipped: u64,
    /// Largest backlog sampled at heartbeats.
    pub backlog_max: u64,
    /// Sum of sampled backlogs.
    pub backlog_sum: f64,
    /// Backlog samples.
    pub backlog_samples: u64,
}
