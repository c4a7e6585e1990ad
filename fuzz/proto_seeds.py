#!/usr/bin/env python3
"""Writes the seeds of the `proto` target (seeds/proto/), in the operation
format documented at the top of fuzz_targets/proto.rs (kind = op % 17).

Bytes that name peers: a forwarder/requester byte b is Pe(1 + b % 7); a
source byte b is Pe(b % 9) (0: this node, 7: no origin, 8: unsigned); an
origin byte b is the origin of Pe(b % 8). A "how" byte: 0 = the author's
honest history, truly signed; 5 another key; 6 a bit flipped; 7 zeros;
| 8 = codes from the input (an equivocation when they differ).

`proto_seeds.py --known DIR` writes instead inputs that reproduce known
library bugs (see the README); they are not seeds."""
import os
import sys

TICK, RAW, UPD, HB, ANN, REQ, CBOR, RESP, FAIL, OWN, STATE, SNAP, FORGET, LEAVE, PROOF = (
    0, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16)
# Request kinds (op 6) and offer states.
R_RANGE, R_OFFER, R_CHUNK, R_DELTA, R_FP = range(5)
SEC = lambda s: 199 + s  # tick byte for s whole seconds


def hb(source, vv=(), d=0, flags=0, backlog=None):
    """A built heartbeat of `source` (a peer index, not this node)."""
    b = [HB, source, len(vv)]
    for o, n in vv:
        b += [o, n]
    b += [d, flags]
    if flags & 4:
        b += [backlog or 0]
    return b


def seed_replay():
    # Replay join, max_rate 50k, publish_max 1, max_range 16.
    b = [0, 2, 0]
    b += [TICK, 1]
    b += hb(1, [(2, 20), (3, 5)], d=0, flags=1)  # Pe1: origin2@20, origin3@5, done
    b += [UPD, 1, 2, 0, 0, 5]                 # Pe2 (via Pe2): honest seqs 0..5
    b += [UPD, 1, 2, 0, 8, 2]                 # behind a gap: 8..10
    b += [UPD, 1, 2, 0, 0, 2]                 # replayed
    b += [UPD, 1, 2, 6, 10, 2]                # a flipped signature bit
    b += [UPD, 1, 3, 5, 0, 2]                 # signed with another key
    b += [UPD, 1, 7, 0, 0, 2]                 # no origin
    b += [UPD, 1, 8, 0, 0, 2]                 # unsigned
    b += [TICK, 1, TICK, SEC(2)]              # gaps seen; repairs go out
    # Answers to the repairs (oldest tag first): honest signed batches
    # (RESP, tag, 1, how, back, batches - 1, length of each).
    b += [RESP, 0, 1, 0, 0, 1, 3, 2]          # origin3 [0, 5): batches of 3 and 2
    b += [RESP, 0, 1, 0, 1, 0, 6]             # origin2 [5, 10), from one seq early
    b += [TICK, SEC(2)]                       # origin2 [10, 20) asked of Pe1
    b += [RESP, 0, 0x81, 3, 6, 0, 0, 4]       # Pe4 answers with a forged batch: banned
    b += [TICK, SEC(2)]                       # asked again
    b += [RESP, 0, 1, 0, 0, 1, 5, 6]          # origin2 [10, 21), the delta update at 15
    b += [REQ, 0, R_RANGE, 2, 0, 20]          # serve a range
    b += [REQ, 0, R_DELTA, 3, 3]              # serve a delta (none there)
    b += [REQ, 0, R_FP]                       # serve fingerprints
    b += [OWN, 5, OWN, 7, OWN, 9]             # own code, delta, code
    b += [TICK, 10, STATE, 1, TICK, 50, TICK, 50]
    b += hb(1, [], d=0, flags=1)              # Pe1 agrees (empty vv) and is done
    b += hb(1, [], d=0, flags=9)              # ... replayed: stale
    b += [TICK, SEC(1), LEAVE]
    return b


def seed_snapshot():
    # Snapshot join, quorum 2; resume chunk 0 from "disk".
    b = [1, 0x42, 0x01]
    b += hb(1, [(2, 10)], d=1)                # Pe1 and Pe2 at origin2@10, honest digest
    b += hb(2, [(2, 10)], d=1)
    b += [TICK, 130]                          # offers of that state asked of Pe1, Pe2
    offer = [0, 1, 4, 0xaa, 0xbb, 0xcc, 0xdd, 3, 1, 2, 3, 9]
    b += [RESP, 0, 1] + offer                 # both offer the same snapshot
    b += [RESP, 0, 1] + offer
    b += [TICK, 10]                           # choose; resume chunk 0
    b += [TICK, 10]                           # ask chunk 1
    b += [RESP, 0, 1, 0]                      # true chunk
    b += [TICK, 10]                           # install
    b += [SNAP, 0, 0x30]                      # installed; log exactly to 10, batches of 4
    b += [UPD, 1, 2, 0, 10, 3]                # origin2 10..13, applied
    b += [TICK, 10, OWN, 4]
    b += [REQ, 2, R_OFFER, 0, TICK, 5]        # offer request: make a snapshot
    b += [SNAP, 0, 0, 5, 1, 2, 3, 4, 5, 9]    # made: one chunk; offer answered
    b += [REQ, 2, R_CHUNK, 0, 0]              # chunk 0 of it
    b += [REQ, 2, R_CHUNK, 0xc5, 1]           # chunk of an unknown snapshot
    b += [REQ, 3, R_OFFER, 3, 2, 2, TICK, 5]  # offer of a state a little before
    b += [SNAP, 0, 0, 2, 9, 9, 1]             # made by retracting; answered
    b += [REQ, 4, R_OFFER, 1, 1, 5, 200, TICK, 5]  # offer of a state not held: refused
    b += [TICK, SEC(20)]                      # peers expire
    return b


def seed_unsigned():
    # Snapshot join, quorum 1; the snapshot's log of origin3 has a forged
    # second batch (2 of 4 kept), origin2's is signed only to 6 of 10: the
    # rest is repaired and only stored.
    b = [1, 2, 0]
    b += hb(1, [(2, 10), (3, 4)], d=1)
    b += [TICK, 130]
    b += [RESP, 0, 1, 0, 0, 2, 7, 7, 5]       # Pe1 offers that state
    b += [TICK, 10, TICK, 10]                 # fetch
    b += [RESP, 0, 1, 0]
    b += [TICK, 10]
    b += [SNAP, 0, 0x17, 0x3e]                # installed (origins in order: 3, 2)
    b += [TICK, 10, TICK, SEC(2)]             # repairs of what is not stored
    b += [RESP, 0, 1, 0, 0, 0, 2]             # origin3 [2, 4): stored
    b += [RESP, 0, 1, 0, 0, 0, 4]             # origin2 [6, 10): stored
    b += [UPD, 1, 2, 0, 10, 4]                # then new updates of origin2: applied
    b += [TICK, SEC(1)]
    return b


def seed_exclusion():
    # Replay join; Pe4 equivocates after its updates were applied (their
    # tail is retracted); a proof against Pe5 arrives by gossip; bad proofs.
    b = [0, 2, 0]
    b += hb(4, [(4, 6)], d=1)
    b += [UPD, 3, 4, 0, 0, 6]                 # Pe4 honest 0..6, applied
    b += [UPD, 3, 4, 8, 2, 2, 1, 7]           # Pe4 signs other codes for 2..4
    b += [TICK, 10]
    b += [UPD, 3, 4, 0, 6, 2]                 # past the exclusion: ignored
    b += [TICK, SEC(6)]
    b += hb(1, [(4, 6)], d=1)                 # a peer still counting them: proof sent
    b += [UPD, 1, 5, 0, 0, 3]                 # Pe5 honest 0..3
    b += [PROOF, 2, 5, 0, 1, 3]               # valid proof against Pe5 from 1..
    b += [PROOF, 2, 5, 0, 1, 3]               # the same again: replayed
    b += [PROOF, 2, 6, 1, 0, 3]               # no conflict
    b += [PROOF, 2, 6, 2, 0, 3]               # bad signature
    b += [PROOF, 2, 7, 0, 0, 3]               # not a key
    b += [PROOF, 2, 3, 3, 0, 0, 3, 1, 0, 0]   # raw bytes
    b += [PROOF, 2, 0, 0, 0, 2]               # against this node
    b += [REQ, 1, R_RANGE, 4, 0, 20]          # serve the excluded origin: to the exclusion
    b += [REQ, 1, R_OFFER, 2]                 # offer of the applied state
    b += [TICK, 10, SNAP, 0x80]               # the compute side fails: refused
    b += [TICK, SEC(1)]
    return b


def seed_deltas():
    # Auto join; delta announcements.
    b = [2, 2, 0]
    b += [ANN, 0, 2, 0, 0, 0]                 # Pe2's honest delta 15, via Pe1
    b += [RESP, 0, 1, 0]                      # the announced payload: accept
    b += [ANN, 0, 2, 0, 31, 0x20]             # signed over a wrong hash
    b += [RESP, 0, 1, 0]                      # reject
    b += [ANN, 0, 3, 8, 0, 0x10, 5, 1, 2, 3, 4, 5]  # not a FedZip delta
    b += [FAIL, 0]                            # ignore
    b += [ANN, 0, 3, 8, 1, 0x10, 5, 1, 2, 3, 4, 5]
    b += [RESP, 0, 1, 0]                      # bad delta: reject
    b += [ANN, 0, 0, 0, 0, 0]                 # own
    b += [ANN, 0, 8, 0, 0, 0]                 # unsigned
    b += [ANN, 0, 7, 0, 0, 0]                 # no origin
    b += [ANN, 0, 4, 6, 0, 0]                 # flipped signature
    b += [RAW, 0, 1, 4, 2, 9, 9]              # another run's topic
    b += [RAW, 0, 1, 0, 3, 1, 0, 1]           # unknown update version
    b += [RAW, 0, 1, 3, 3, 2, 0, 0]           # unknown proof version
    b += [CBOR, 0, 8, 0xa1] + [0x65] + list(b"Offer") + [0xa0]  # {"Offer": {}}
    b += [REQ, 1, R_DELTA, 2, 15]             # the stored delta
    b += [FORGET, 1, TICK, 10]
    return b


def seed_fingerprints():
    # Replay join; a peer at this node's version vector with another digest:
    # fingerprints asked; one differs, so origin2's log is fetched from 0.
    b = [0, 2, 0]
    b += [UPD, 1, 2, 0, 0, 4]                 # origin2 0..4, applied
    b += hb(1, [(2, 4)], d=1)                 # Pe1 at origin2@4, honest digest: agree
    b += [STATE, 2, 9]                        # this node diverges (digest [9; 32])
    b += hb(1, [(2, 4)], d=1)                 # now a mismatch: fingerprints asked
    b += [RESP, 0, 1, 1]                      # the first fingerprint altered
    b += [RESP, 0, 1, 0, 0, 1, 4]             # the range from 0: agrees
    b += [STATE, 2, 0, TICK, 50]
    return b


def seed_offers():
    # Many offer requests while no snapshot is made (rate: 10 at once per
    # peer, 5 more per second).
    b = [0, 2, 0]
    for i in range(70):
        b += [REQ, i % 7, R_OFFER, 0]
    for t in range(10):
        b += [TICK, SEC(1)]
        for i in range(35):
            b += [REQ, i % 7, R_OFFER, 0]
    b += [TICK, 10]
    return b


def seed_spot_checks():
    # The replay seed with header bit 0x10 of h2: built update batches carry
    # bases and every foreign update is spot-checked.
    b = seed_replay()
    b[2] |= 0x10
    return b


SEEDS = [("replay", seed_replay), ("snapshot_join", seed_snapshot),
         ("snapshot_unsigned", seed_unsigned), ("exclusion", seed_exclusion),
         ("deltas", seed_deltas), ("fingerprints", seed_fingerprints),
         ("offer_flood", seed_offers), ("spot_checks", seed_spot_checks)]

def known_retract_unsigned():
    # Snapshot join; origin2's installed log is signed only to 6 of 10, then
    # a proof excludes origin2 from 2: the retraction handed out is [2, 6),
    # not the applied tail [2, 10).
    b = [1, 2, 0]
    b += hb(1, [(2, 10)], d=1)
    b += [TICK, 130]
    b += [RESP, 0, 1, 0, 0, 2, 7, 7, 5]
    b += [TICK, 10, TICK, 10]
    b += [RESP, 0, 1, 0]
    b += [TICK, 10]
    b += [SNAP, 0, 0x3e]                      # origin2's log: 6 of 10 signed
    b += [PROOF, 2, 2, 0, 2, 3]               # origin2 excluded from 2
    return b


def known_retract_empty():
    # The same with the exclusion known before the install, and the log
    # holding origin2 only to 4 (gossip during the join; the snapshot's log
    # has a forged second batch): the retraction handed out is empty, and
    # the installed updates 4..10 of the excluded origin stay applied.
    b = [1, 2, 0]
    b += hb(1, [(2, 10)], d=1)
    b += [UPD, 1, 2, 0, 0, 4]                 # origin2 0..4, held during the join
    b += [PROOF, 2, 2, 0, 4, 3]               # origin2 excluded from 4
    b += [TICK, 130]
    b += [RESP, 0, 1, 0, 0, 2, 7, 7, 5]
    b += [TICK, 10, TICK, 10]
    b += [RESP, 0, 1, 0]
    b += [TICK, 10]
    b += [SNAP, 0, 0x37]                      # origin2's log: batches of 4, the second forged
    return b


def known_offer_panic():
    # Snapshot join; origin2's installed log is signed only to 6 of 10. A
    # peer asks for an offer of the state at origin2@7: the retraction to it
    # takes `Log::segment(origin2, 7, 10)`, whose codes are clipped to none,
    # and `BTreeMap::range(8..=7)` panics (release builds too).
    b = [1, 2, 0]
    b += hb(1, [(2, 10)], d=1)
    b += [TICK, 130]
    b += [RESP, 0, 1, 0, 0, 2, 7, 7, 5]
    b += [TICK, 10, TICK, 10]
    b += [RESP, 0, 1, 0]
    b += [TICK, 10]
    b += [SNAP, 0, 0x3e]                      # origin2's log: 6 of 10 signed
    b += [REQ, 1, R_OFFER, 1, 1, 2, 7]        # an offer of {origin2: 7}
    b += [TICK, 10]
    return b


def known_unjudged_delta():
    # Pe2's delta announcement waits for its payload when a proof excludes
    # Pe2 from before it: the wait is dropped and the message never judged.
    b = [0, 2, 0]
    b += [ANN, 0, 2, 0, 0, 0]                 # Pe2's delta 15, via Pe1: fetching
    b += [PROOF, 2, 2, 0, 1, 3]               # origin2 excluded from 1
    return b


def known_store_gap():
    # Snapshot join; origin2's updates 0..8 arrive by gossip during the
    # join, the installed log is signed only to 6: 6..8 are applied and held
    # but never handed out to be persisted (the file has a gap).
    b = [1, 2, 0]
    b += hb(1, [(2, 10)], d=1)
    b += [UPD, 1, 2, 0, 0, 8]                 # held during the join
    b += [TICK, 130]
    b += [RESP, 0, 1, 0, 0, 2, 7, 7, 5]
    b += [TICK, 10, TICK, 10]
    b += [RESP, 0, 1, 0]
    b += [TICK, 10]
    b += [SNAP, 0, 0x3e]                      # installed, log signed to 6
    b += [UPD, 1, 2, 0, 8, 4]                 # 8..12: stored from 8, not 6
    return b


def known_install_conflict():
    # Snapshot join; Pe2 signs other codes for 0..2 and the joiner holds
    # them (gossip during the join); the snapshot's honest log of origin2 is
    # stored over them without a conflict check: the log keeps the other
    # codes under the honest batch's signature and serves that batch.
    b = [1, 2, 0]
    b += hb(1, [(2, 10)], d=1)
    b += [UPD, 1, 2, 8, 0, 2, 1, 7]           # Pe2's other codes for 0..2, held
    b += [TICK, 130]
    b += [RESP, 0, 1, 0, 0, 2, 7, 7, 5]
    b += [TICK, 10, TICK, 10]
    b += [RESP, 0, 1, 0]
    b += [TICK, 10]
    b += [SNAP, 0, 0x30]                      # installed: origin2's log, batches of 4
    b += [REQ, 1, R_RANGE, 2, 0, 10]          # serve origin2 from 0
    return b


KNOWN = [("install_conflict", known_install_conflict),
         ("retract_unsigned", known_retract_unsigned),
         ("retract_empty", known_retract_empty),
         ("offer_panic", known_offer_panic),
         ("unjudged_delta", known_unjudged_delta),
         ("store_gap", known_store_gap)]

if sys.argv[1:2] == ["--known"]:
    # Inputs that reproduce known library bugs (see the README): never seeds.
    os.makedirs(sys.argv[2], exist_ok=True)
    for name, f in KNOWN:
        with open(os.path.join(sys.argv[2], "proto-" + name), "wb") as fh:
            fh.write(bytes(f()))
    sys.exit(0)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "proto")
os.makedirs(out, exist_ok=True)
for name, f in SEEDS:
    data = bytes(f())
    assert len(data) <= 4096, (name, len(data))
    with open(os.path.join(out, name), "wb") as fh:
        fh.write(data)
