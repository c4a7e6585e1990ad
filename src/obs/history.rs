//! A node's history of its own series in fixed memory, served at `/history`.
//!
//! Two views of one stream of samples (one sample per status publish):
//!
//! - `recent`: the last [`RECENT`] samples at full resolution;
//! - `run`: the whole run in at most [`BUCKETS`] buckets. Each bucket holds
//!   `bucket_samples` consecutive samples (the last one may hold fewer);
//!   when all buckets are full, neighbours are merged pairwise and the
//!   width doubles, so the first bucket always starts at the first sample
//!   and the last one ends at the latest.
//!
//! `/history` JSON (`version` 1):
//!
//! ```text
//! { "version": 1,
//!   "samples": 1234,          // samples taken since the node started
//!   "bucket_samples": 4,      // samples per full `run` bucket
//!   "recent": [Point, ...],   // oldest first, ≤ 600, one per sample (n = 1)
//!   "run":    [Point, ...] }  // oldest first, ≤ 600 buckets, whole run
//! Point = { "t0": s, "t": s,  // first and last sample of it, seconds of node uptime
//!   "n": samples in it,
//!   "loss": mean or null, "accuracy": mean (0..1) or null,
//!   "updates_per_s", "bytes_in_per_s", "bytes_out_per_s",
//!   "backlog", "peers": means,
//!   "updates_applied", "own_updates": last values (counters) }
//! ```

use crate::node::Status;
use serde::Serialize;
use std::collections::VecDeque;

/// Samples kept at full resolution.
pub const RECENT: usize = 600;
/// Most buckets of the whole run (even, so pairs merge evenly).
pub const BUCKETS: usize = 600;

/// One point of a series: one sample, or the summary of a bucket of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    /// Uptime of the first sample in it, seconds.
    pub t0: f64,
    /// Uptime of the last sample in it, seconds.
    pub t: f64,
    /// Samples in it.
    pub n: u64,
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
    pub updates_per_s: f64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
    pub backlog: f64,
    pub peers: f64,
    pub updates_applied: u64,
    pub own_updates: u64,
}

/// Running sums of a bucket.
#[derive(Clone, Debug, Default)]
struct Bucket {
    t0: f64,
    t: f64,
    n: u64,
    loss: (f64, u64),
    accuracy: (f64, u64),
    /// updates/s, bytes in/s, bytes out/s, backlog, peers.
    sums: [f64; 5],
    last: (u64, u64),
}

impl Bucket {
    fn of(p: &Point) -> Self {
        Self {
            t0: p.t0,
            t: p.t,
            n: 1,
            loss: p.loss.map_or((0.0, 0), |l| (l, 1)),
            accuracy: p.accuracy.map_or((0.0, 0), |a| (a, 1)),
            sums: [
                p.updates_per_s,
                p.bytes_in_per_s,
                p.bytes_out_per_s,
                p.backlog,
                p.peers,
            ],
            last: (p.updates_applied, p.own_updates),
        }
    }

    /// Adds a later bucket.
    fn merge(&mut self, b: &Bucket) {
        self.t = b.t;
        self.n += b.n;
        self.loss = (self.loss.0 + b.loss.0, self.loss.1 + b.loss.1);
        self.accuracy = (
            self.accuracy.0 + b.accuracy.0,
            self.accuracy.1 + b.accuracy.1,
        );
        for (s, x) in self.sums.iter_mut().zip(b.sums) {
            *s += x;
        }
        self.last = b.last;
    }

    fn point(&self) -> Point {
        let n = self.n.max(1) as f64;
        let mean = |(s, k): (f64, u64)| (k > 0).then(|| s / k as f64);
        Point {
            t0: self.t0,
            t: self.t,
            n: self.n,
            loss: mean(self.loss),
            accuracy: mean(self.accuracy),
            updates_per_s: self.sums[0] / n,
            bytes_in_per_s: self.sums[1] / n,
            bytes_out_per_s: self.sums[2] / n,
            backlog: self.sums[3] / n,
            peers: self.sums[4] / n,
            updates_applied: self.last.0,
            own_updates: self.last.1,
        }
    }
}

/// The bounded history of one node.
#[derive(Debug)]
pub struct History {
    recent: VecDeque<Point>,
    run: Vec<Bucket>,
    /// Samples per full bucket of `run`.
    width: u64,
    samples: u64,
}

/// What `/history` serves (see the module docs).
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub version: u32,
    pub samples: u64,
    pub bucket_samples: u64,
    pub recent: Vec<Point>,
    pub run: Vec<Point>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            recent: VecDeque::with_capacity(RECENT),
            run: Vec::with_capacity(BUCKETS),
            width: 1,
            samples: 0,
        }
    }
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one status sample.
    pub fn record(&mut self, s: &Status) {
        self.push(Point {
            t0: s.uptime_s,
            t: s.uptime_s,
            n: 1,
            loss: Some(f64::from(s.loss)).filter(|l| l.is_finite()),
            accuracy: s.accuracy.filter(|a| a.is_finite()),
            updates_per_s: s.updates_per_s,
            bytes_in_per_s: s.bytes_in_per_s,
            bytes_out_per_s: s.bytes_out_per_s,
            backlog: s.backlog as f64,
            peers: s.peers as f64,
            updates_applied: s.updates_applied,
            own_updates: s.own_updates,
        });
    }

    /// Records one sample (`n` and `t0` are taken as 1 and `t`).
    pub fn push(&mut self, mut p: Point) {
        p.n = 1;
        p.t0 = p.t;
        self.samples += 1;
        let b = Bucket::of(&p);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(p);
        match self.run.last_mut() {
            Some(last) if last.n < self.width => last.merge(&b),
            _ => {
                if self.run.len() == BUCKETS {
                    let merged: Vec<Bucket> = self
                        .run
                        .chunks(2)
                        .map(|pair| {
                            let mut m = pair[0].clone();
                            if let Some(second) = pair.get(1) {
                                m.merge(second);
                            }
                            m
                        })
                        .collect();
                    self.run = merged;
                    self.width *= 2;
                }
                self.run.push(b);
            }
        }
    }

    /// Samples taken so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// A copy to serve (taken under the lock, serialized outside it).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: 1,
            samples: self.samples,
            bucket_samples: self.width,
            recent: self.recent.iter().cloned().collect(),
            run: self.run.iter().map(Bucket::point).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u64) -> Point {
        Point {
            t: i as f64 * 0.5,
            loss: (i % 7 != 3).then_some(1.0 / (1.0 + i as f64)),
            accuracy: None,
            updates_per_s: 10.0,
            backlog: (i % 4) as f64,
            peers: 2.0,
            updates_applied: 3 * i,
            own_updates: i,
            ..Point::default()
        }
    }

    #[test]
    fn recent_window_is_exact() {
        let mut h = History::new();
        for i in 0..1000 {
            h.push(sample(i));
        }
        let s = h.snapshot();
        assert_eq!(s.recent.len(), RECENT);
        for (k, p) in s.recent.iter().enumerate() {
            let mut want = sample(400 + k as u64);
            want.t0 = want.t;
            want.n = 1;
            assert_eq!(p, &want);
        }
    }

    #[test]
    fn bounded_after_1e5_samples_and_the_run_covers_everything() {
        let mut h = History::new();
        for i in 0..100_000 {
            h.push(sample(i));
            if i % 997 == 0 {
                assert!(h.run.len() <= BUCKETS && h.recent.len() <= RECENT);
            }
        }
        let s = h.snapshot();
        assert_eq!(s.samples, 100_000);
        assert!(s.run.len() <= BUCKETS && s.run.len() > BUCKETS / 2);
        assert_eq!(s.recent.len(), RECENT);
        assert_eq!(s.run[0].t0, 0.0, "starts at the first sample");
        assert_eq!(s.run.last().unwrap().t, 99_999.0 * 0.5, "ends at the last");
        assert_eq!(s.run.iter().map(|p| p.n).sum::<u64>(), 100_000);
        assert!(s.run[..s.run.len() - 1]
            .iter()
            .all(|p| p.n == s.bucket_samples));
        for w in s.run.windows(2) {
            assert!(w[0].t < w[1].t0, "buckets in order, not overlapping");
        }
        // Counters keep the last value of the bucket, gauges the mean.
        let last = s.run.last().unwrap();
        assert_eq!(last.own_updates, 99_999);
        assert_eq!(last.updates_applied, 3 * 99_999);
        assert!((s.run[0].updates_per_s - 10.0).abs() < 1e-9);
        assert!((s.run[0].backlog - 1.5).abs() < 1e-9);
        assert!(s
            .run
            .iter()
            .all(|p| p.loss.is_some() && p.accuracy.is_none()));
    }

    #[test]
    fn few_samples_are_kept_one_per_bucket() {
        let mut h = History::new();
        for i in 0..10 {
            h.push(sample(i));
        }
        let s = h.snapshot();
        assert_eq!((s.run.len(), s.recent.len(), s.bucket_samples), (10, 10, 1));
        assert_eq!(s.run[3].loss, None, "a missing loss stays missing");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["run"][9]["own_updates"], 9);
    }
}
