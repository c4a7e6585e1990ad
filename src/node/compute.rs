//! The compute thread: owns the training [`Session`] (model, replica, the
//! log's file), takes own steps once the shell opens the gate, applies what
//! the protocol core hands over, copies the replica for snapshots, installs
//! them, and reports its state; the network loop never waits on it.

use crate::crdt::log::Segment;
use crate::crdt::snapshot::Image;
use crate::model::Eval;
use crate::obs::metrics::Series;
use crate::proto::ComputeState;
use crate::train::{Made, Session};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as smpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Work for the compute thread.
pub(super) enum ToCompute {
    /// Apply this segment (contiguous with what is applied).
    Apply(Segment),
    /// Copy `δ` for a snapshot (at this state; empty: now), subtracting these.
    Image(crate::crdt::replica::VersionVector, Vec<Segment>),
    /// Install these snapshot chunks (of this vouched-for state).
    Install(
        Vec<Vec<u8>>,
        Vec<[u8; 32]>,
        crate::crdt::replica::VersionVector,
        [u8; 32],
    ),
    /// Persist an exclusion (origin, first excluded seq, proof).
    Exclude(crate::zo::seed::Origin, u64, Vec<u8>),
    /// Persist an owner-signed admission.
    Admit(crate::crdt::admit::Record),
    /// Keep a batch's bases in the data dir (origin, first seq, updates, bases).
    KeepBases(crate::zo::seed::Origin, u64, u32, Vec<u8>),
    /// Spot-check a foreign update on the state it was computed on.
    Check {
        origin: crate::zo::seed::Origin,
        seq: u64,
        code: u8,
        target: crate::crdt::replica::VersionVector,
        retract: Vec<Segment>,
    },
}

/// Own updates are made durable (fsync) in groups at most this far apart;
/// none is handed on to be published before.
const GROUP_COMMIT: Duration = Duration::from_millis(20);

/// What the compute thread reports.
pub(super) enum FromCompute {
    /// An own update, applied and stored.
    Made(Box<Made>),
    /// A copy of `δ` for a snapshot (or why there is none).
    Image(Result<Box<Image>, String>),
    /// A snapshot was installed (version vector and its log), or not.
    Installed(Result<(crate::crdt::replica::VersionVector, Vec<Segment>), String>),
    /// The replica's state.
    State(Box<ComputeState>),
    /// A spot check's verdict and recomputed gradient (or why none).
    Checked {
        origin: crate::zo::seed::Origin,
        seq: u64,
        result: Result<(crate::zo::check::Verdict, f64), String>,
    },
    /// A step or an apply failed; the node stops.
    Failed(String),
}

/// When to stop training.
pub(super) struct Limits {
    pub(super) series: Series,
    pub(super) max_updates: Option<u64>,
    pub(super) duration: Option<Duration>,
    /// Opened by the shell when training may start.
    pub(super) gate: Arc<AtomicBool>,
    /// First own seq that counts nowhere (the admission's end, or a
    /// revocation of this node): no own update is made from there.
    pub(super) own_cap: Arc<AtomicU64>,
    /// Updates the log holds (set by the shell).
    pub(super) held: Arc<AtomicU64>,
    /// No own step while more than this many held updates are unapplied.
    pub(super) max_staleness: u64,
    /// Live peers still training (set by the shell).
    pub(super) training_peers: Arc<AtomicU64>,
    /// Own steps are scaled by `min(1, step_peers / nodes training)` (0: off).
    pub(super) step_peers: u64,
}

/// The compute thread's nice value: below the network loop, so that on a
/// busy machine (many nodes on few cores) gossip, repair and heartbeats are
/// handled promptly and the network loop hands work over as fast as it
/// arrives; on an idle one it changes nothing.
const NICE: i32 = 10;

/// Lowers the calling thread's priority to [`NICE`] (Linux: a thread's own
/// nice value; threads it spawns inherit it). Failing is harmless.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; on Linux
        // PRIO_PROCESS with a thread id sets that thread's nice value.
        let r = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, NICE)
        };
        if r != 0 {
            tracing::debug!("could not lower the compute thread's priority");
        }
    }
}

/// Runs until the shell drops its sender; returns the final evaluation.
pub(super) fn run(
    mut session: Session,
    limits: Limits,
    rx: smpsc::Receiver<ToCompute>,
    tx: mpsc::Sender<FromCompute>,
) -> Option<Eval> {
    let fail = |tx: &mpsc::Sender<FromCompute>, e: String| {
        let _ = tx.blocking_send(FromCompute::Failed(e));
    };
    lower_priority();
    let _ = session.evaluate();
    let mut training = true;
    let mut deadline: Option<Instant> = None;
    let mut last_state: Option<Instant> = None;
    let mut dirty = true;
    // Own updates made but not yet durable, and since when.
    let mut unsynced: Vec<Made> = Vec::new();
    let mut oldest: Option<Instant> = None;
    let commit = |session: &mut Session, unsynced: &mut Vec<Made>| -> Result<bool, String> {
        if unsynced.is_empty() {
            return Ok(true);
        }
        session.sync().map_err(|e| e.to_string())?;
        for made in unsynced.drain(..) {
            if tx.blocking_send(FromCompute::Made(Box::new(made))).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    };
    loop {
        let open = limits.gate.load(Ordering::Acquire);
        if open && deadline.is_none() {
            deadline = limits.duration.map(|d| Instant::now() + d);
        }
        // Bounded staleness: apply before stepping on an old state.
        let behind = limits
            .held
            .load(Ordering::Acquire)
            .saturating_sub(session.applied());
        let stale = behind > limits.max_staleness;
        let wait = if training && open && !stale {
            Duration::ZERO
        } else if training && open {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(50)
        };
        let mut first = true;
        loop {
            let msg = if first {
                rx.recv_timeout(wait)
                    .map_err(|e| matches!(e, smpsc::RecvTimeoutError::Disconnected))
            } else {
                rx.try_recv()
                    .map_err(|e| matches!(e, smpsc::TryRecvError::Disconnected))
            };
            first = false;
            match msg {
                Ok(ToCompute::Apply(segment)) => {
                    let t = Instant::now();
                    match session.apply(&segment) {
                        Ok(n) => dirty |= n > 0,
                        Err(e) => {
                            fail(&tx, e.to_string());
                            return session.last_eval();
                        }
                    }
                    limits
                        .series
                        .apply_seconds
                        .observe(t.elapsed().as_secs_f64());
                }
                Ok(ToCompute::Image(target, retract)) => {
                    let image = session.image_at(&target, &retract).map(Box::new);
                    if tx.blocking_send(FromCompute::Image(image)).is_err() {
                        return session.last_eval();
                    }
                }
                Ok(ToCompute::Exclude(origin, from, proof)) => {
                    if let Err(e) = session.exclude(&origin, from, &proof) {
                        fail(&tx, e.to_string());
                        return session.last_eval();
                    }
                }
                Ok(ToCompute::Admit(record)) => {
                    if let Err(e) = session.admit(&record) {
                        fail(&tx, e.to_string());
                        return session.last_eval();
                    }
                }
                Ok(ToCompute::Check {
                    origin,
                    seq,
                    code,
                    target,
                    retract,
                }) => {
                    let result = session.recheck(&target, &retract, (origin, seq, code));
                    let msg = FromCompute::Checked {
                        origin,
                        seq,
                        result,
                    };
                    if tx.blocking_send(msg).is_err() {
                        return session.last_eval();
                    }
                }
                Ok(ToCompute::KeepBases(origin, first, n, bases)) => {
                    session.keep_bases(&origin, first, n, &bases);
                }
                Ok(ToCompute::Install(chunks, hashes, vv, digest)) => {
                    let r = session.install(&chunks, &hashes, (&vv, &digest));
                    dirty = true;
                    if tx.blocking_send(FromCompute::Installed(r)).is_err() {
                        return session.last_eval();
                    }
                }
                Err(true) => return session.evaluate().ok().or(session.last_eval()),
                Err(false) => break,
            }
        }
        if training && open && !stale {
            let own = session.trainer().next_seq();
            let over_count = limits.max_updates.is_some_and(|m| own >= m)
                || own >= limits.own_cap.load(Ordering::Acquire);
            let over_time = deadline.is_some_and(|d| Instant::now() >= d);
            if over_count || over_time {
                training = false;
                let _ = session.evaluate();
                dirty = true;
            } else {
                let p = limits.training_peers.load(Ordering::Acquire) + 1;
                if limits.step_peers > 0 {
                    session.set_step_scale(limits.step_peers as f64 / p as f64);
                }
                match session.step() {
                    Ok(made) => {
                        limits.series.step_seconds.observe(made.seconds);
                        for f in &made.forward_seconds {
                            limits.series.forward_seconds.observe(*f);
                        }
                        unsynced.push(made);
                        oldest.get_or_insert_with(Instant::now);
                        dirty = true;
                    }
                    Err(e) => {
                        fail(&tx, e.to_string());
                        return session.last_eval();
                    }
                }
            }
        }
        // Group commit: durable before anyone may publish them.
        let commit_due = oldest.is_some_and(|t| t.elapsed() >= GROUP_COMMIT) || !training;
        if commit_due && !unsynced.is_empty() {
            match commit(&mut session, &mut unsynced) {
                Ok(true) => oldest = None,
                Ok(false) => return session.last_eval(),
                Err(e) => {
                    fail(&tx, e);
                    return session.last_eval();
                }
            }
        }
        let due = last_state.is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if dirty && due {
            let st = Box::new(session.state(!training));
            if tx.blocking_send(FromCompute::State(st)).is_err() {
                return session.last_eval();
            }
            dirty = false;
            last_state = Some(Instant::now());
        }
    }
}
