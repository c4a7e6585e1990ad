//! The checks on what the core hands out, and the shell's and compute
//! side's answers to it: `next_apply` segments (non-empty, within the asked
//! size, one payload per delta marker, never own, contiguous per origin) and
//! every `Output` (verdicts, sends, responds, own publications, snapshots,
//! installs, training and finish), answering `Publish` with `Published` and
//! `Resume` with `KeptChunk`s.

use crate::harness::H;
use crate::{hash, trace, Pe, MAX_DELTA_BYTES, MAX_WAITS, ME};
use seedswarm::crdt::log::{Segment, DELTA};
use seedswarm::net::wire::{self, DeltaAnnounce, Heartbeat, Request};
use seedswarm::proto::{self, Input, Output, Topic};

impl H {
    pub(crate) fn check_segment(&mut self, seg: &Segment) {
        if trace() {
            eprintln!("         apply {seg:?}");
        }
        assert_ne!(seg.origin, self.own, "next_apply hands out own updates");
        assert!(!seg.codes.is_empty(), "empty segment");
        assert!(seg.codes.len() <= self.apply_max, "segment over max");
        let markers = seg.codes.iter().filter(|&&c| c == DELTA).count();
        assert_eq!(
            markers,
            seg.payloads.len(),
            "segment without the payload of a delta update: {seg:?}"
        );
        let at = self.applied.entry(seg.origin).or_insert(0);
        assert_eq!(
            seg.first_seq, *at,
            "segment of {:?} not contiguous with what was applied",
            seg.origin
        );
        *at = seg.end();
    }

    pub(crate) fn output(&mut self, out: Output<Pe, u64, u64>) {
        if trace() && !matches!(out, Output::Event(proto::Event::Bytes { .. })) {
            eprintln!("         out {out:?}");
        }
        match out {
            Output::Publish { topic, data, end } => {
                match topic {
                    Topic::Updates => {
                        wire::decode_updates(&data).expect("own update batch does not decode");
                    }
                    Topic::Status => {
                        Heartbeat::decode(&data).expect("own heartbeat does not decode");
                    }
                    Topic::Deltas => {
                        DeltaAnnounce::decode(&data, MAX_DELTA_BYTES)
                            .expect("own delta announcement does not decode");
                    }
                }
                if let Some(end) = end {
                    let now = self.now();
                    self.core.handle(now, Input::Published { end });
                }
            }
            Output::Verdict { id, from, verdict } => {
                let Some(&given_from) = self.given.get(&id) else {
                    panic!("verdict {verdict:?} for message {id}, never given");
                };
                assert_eq!(from, given_from, "verdict names another forwarder");
                assert!(self.judged.insert(id), "second verdict for message {id}");
            }
            Output::Send { to, tag, request } => {
                assert!(tag >= self.next_tag, "tag {tag} reused");
                self.next_tag = tag + 1;
                assert_ne!(to, ME, "request sent to this node");
                request
                    .validate()
                    .unwrap_or_else(|e| panic!("own request {request:?} invalid: {e}"));
                if matches!(request, Request::Delta { .. }) {
                    self.delta_out += 1;
                    assert!(self.delta_out <= MAX_WAITS, "delta fetches unbounded");
                }
                self.outstanding.insert(tag, (to, request));
            }
            Output::Respond { channel, response } => {
                let Some(req) = self.open.remove(&channel) else {
                    panic!("answer on channel {channel}: never given or answered already");
                };
                response
                    .validate(&req)
                    .unwrap_or_else(|e| panic!("answer {response:?} to {req:?} invalid: {e}"));
            }
            Output::MakeSnapshot => {
                assert!(!self.make_pending, "MakeSnapshot again before Snapshot");
                self.make_pending = true;
            }
            Output::Install { chunks, hashes } => {
                assert_eq!(chunks.len(), hashes.len());
                for (c, h) in chunks.iter().zip(&hashes) {
                    assert_eq!(&hash(c), h, "unverified chunk installed");
                }
                assert!(self.install.is_none(), "second Install before Installed");
                self.install = Some(chunks.len());
            }
            Output::KeepChunk { id, index, data } => {
                self.kept.insert((id, index), data);
            }
            Output::Resume { id, chunks } => {
                // Chunks kept by "an earlier life": those of the offer as
                // made, some of them corrupted, chosen by the header.
                let offered = self.offered.get(&id).cloned().unwrap_or_default();
                for index in 0..chunks.min(8) as u32 {
                    let mut data = match self.kept.get(&(id, index)) {
                        Some(d) => d.clone(),
                        None if self.resume_mask & (1 << index) != 0 => {
                            match offered.get(index as usize) {
                                Some(d) => d.clone(),
                                None => continue,
                            }
                        }
                        None => continue,
                    };
                    if self.resume_mask & 0x80 != 0 && index == 0 {
                        data.push(0);
                    }
                    let now = self.now();
                    self.core.handle(now, Input::KeptChunk { id, index, data });
                }
            }
            Output::StartTraining => {
                assert!(!self.training, "StartTraining twice");
                self.training = true;
            }
            Output::Finished { .. } => {
                assert!(!self.finished, "Finished twice");
                self.finished = true;
            }
            Output::Event(_) => {}
        }
    }
}
