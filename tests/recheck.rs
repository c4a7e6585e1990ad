//! Spot checks over real libp2p: three nodes of the demo run on loopback,
//! one of them publishing every one-byte update with the sign of its
//! gradient flipped (valid, signed, well-formed bytes). Its peers recompute
//! a fraction of the updates they receive, on the state each was made on
//! (the bases its batches carry), and flag it; the honest origins agree.
//! Replicas still end bit-identical: a flagged origin is reported, and what
//! to do with it is the operator's (a revocation, in a permissioned run).

mod common;

use common::{assert_identical, config, finish, options};
use seedswarm::node::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_flag_a_sign_flipping_origin_and_agree_with_honest_ones() {
    let mut cfg = config();
    cfg.node.verify_fraction = 0.25;
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let mut o = options(1200, 2);
        o.bootstrap = nodes
            .iter()
            .map(|p| p.listen[0].clone().with_p2p(p.peer_id).unwrap())
            .collect();
        o.flip_signs = i == 2;
        nodes.push(Node::start(cfg.clone(), o).await.expect("node starts"));
    }
    let s = finish(nodes).await;
    assert_identical(&s);
    let flipper = &s[2].origin;
    for (i, x) in s.iter().enumerate().take(2) {
        eprintln!("node {i}: {:?}, skipped {}", x.rechecks, x.rechecks_skipped);
        let bad = &x.rechecks[flipper];
        let after = bad.flagged_after.expect("the flipper is flagged");
        assert!(after <= 20, "flagged after {after} checks: {bad:?}");
        assert!(bad.disagreed * 2 > bad.checked, "{bad:?}");
        for (o, t) in &x.rechecks {
            if o == flipper {
                continue;
            }
            assert!(t.checked >= 20, "enough checks of {o}: {t:?}");
            assert_eq!(t.flagged_after, None, "honest {o} flagged: {t:?}");
            assert!(t.disagreed * 20 <= t.checked, "honest {o}: {t:?}");
        }
    }
}
