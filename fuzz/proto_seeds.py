#!/usr/bin/env python3
"""Writes the seeds of the `proto` target (seeds/proto/), in the operation
format documented at the top of fuzz_targets/proto.rs."""
import os

TICK, RAW, UPD, HB, ANN, REQ, CBOR, RESP, FAIL, OWN, STATE, SNAP, FORGET, LEAVE = (
    0, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15)
SEC = lambda s: 199 + s  # tick byte for s whole seconds

def seed_replay():
    # Replay join, max_rate 50k, publish_max 1, max_range 16.
    b = [0, 2, 0]
    b += [TICK, 1]
    b += [HB, 1, 2, 2, 10, 3, 5, 0, 1]       # Pe1: origin2@10, origin3@5, done
    b += [UPD, 1, 2, 0, 5, 1, 2, 3, 4, 5]     # Pe2 (via Pe2): seqs 0..5
    b += [UPD, 1, 2, 8, 2, 9, 9]              # behind a gap: 8..10
    b += [UPD, 1, 2, 0, 2, 1, 7]              # equivocation
    b += [UPD, 1, 2, 0, 2, 1, 2]              # replayed
    b += [TICK, 1, TICK, SEC(2)]              # gaps seen; repairs go out
    b += [RESP, 0, 1, 0, 3, 0xf0, 1, 2]       # origin3 [0, 5): a delta and codes
    b += [RESP, 0, 1, 0, 5, 6, 7, 8, 9, 9]    # origin2 [5, 10)
    b += [REQ, 0, 0, 2, 0, 20]                # serve a range
    b += [REQ, 0, 3, 3, 0]                    # serve a delta
    b += [OWN, 5, OWN, 7, OWN, 9]             # own code, delta, code
    b += [TICK, 10, STATE, 1, TICK, 50, TICK, 50]
    b += [HB, 1, 0, 0, 1]                     # Pe1 agrees (empty vv) and is done
    b += [TICK, SEC(1), LEAVE]
    return b

def seed_snapshot():
    # Snapshot join; resume chunk 0 from "disk".
    b = [1, 2, 0x01]
    b += [HB, 1, 1, 2, 10, 5, 0]
    b += [HB, 2, 1, 2, 10, 5, 0]
    b += [TICK, 10]                           # offers asked of Pe1, Pe2
    b += [RESP, 0, 1, 1, 2, 10, 5, 1, 4, 0xaa, 0xbb, 0xcc, 0xdd, 3, 1, 2, 3, 9]
    b += [FAIL, 0]
    b += [TICK, 10]                           # choose; resume chunk 0
    b += [TICK, 10]                           # ask chunk 1
    b += [RESP, 0, 1, 0]                      # true chunk
    b += [TICK, 10]                           # install
    b += [SNAP, 0, 2, 2, 10] + [1] * 10 + [0, 3, 1, 2, 3]
    b += [UPD, 1, 2, 10, 3, 1, 2, 3]
    b += [TICK, 10, OWN, 4]
    b += [REQ, 2, 1, TICK, 5]                 # offer request: make a snapshot
    b += [SNAP, 0, 5, 1, 2, 3, 4, 5, 9]       # made: one chunk; offer answered
    b += [REQ, 2, 2, 0, 0]                    # chunk 0 of it
    b += [REQ, 2, 2, 0xc5, 1]                 # chunk of an unknown snapshot
    b += [TICK, SEC(20)]                      # peers expire
    return b

def seed_deltas():
    # Auto join; delta announcements.
    b = [2, 2, 0]
    b += [ANN, 0, 2, 0, 0]                    # Pe2's delta 0, via Pe1
    b += [RESP, 0, 1, 0]                      # the announced payload: accept
    b += [ANN, 0, 2, 1, 0x21]                 # wrong hash
    b += [RESP, 0, 1, 0]                      # reject
    b += [ANN, 0, 3, 0, 0x10, 5, 1, 2, 3, 4, 5]  # not a FedZip delta
    b += [FAIL, 0]                            # ignore
    b += [ANN, 0, 3, 1, 0x10, 5, 1, 2, 3, 4, 5]
    b += [RESP, 0, 1, 0]                      # bad delta: reject
    b += [ANN, 0, 0, 0, 0]                    # own
    b += [ANN, 0, 8, 0, 0]                    # unsigned
    b += [ANN, 0, 7, 0, 0]                    # no origin
    b += [RAW, 0, 1, 3, 2, 9, 9]              # another run's topic
    b += [RAW, 0, 1, 0, 3, 2, 0, 1]           # unknown update version
    b += [CBOR, 0, 6] + list(b"eOffer")
    b += [REQ, 1, 3, 2, 0]                    # the stored delta
    b += [FORGET, 1, TICK, 10]
    return b

def seed_offers():
    # Many offer requests while no snapshot is made.
    b = [0, 2, 0]
    for i in range(300):
        b += [REQ, i % 7, 1]
    b += [TICK, 10]
    return b

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "proto")
os.makedirs(out, exist_ok=True)
for name, f in [("replay", seed_replay), ("snapshot_join", seed_snapshot),
                ("deltas", seed_deltas), ("offer_flood", seed_offers)]:
    with open(os.path.join(out, name), "wb") as fh:
        fh.write(bytes(f()))
