//! Unit tests of FedZip: golden vectors, hand-made malformed inputs, sizes,
//! and property tests.

use super::bits::{plain_width, BitWriter};
use super::*;
use crate::varint;
use proptest::prelude::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic standard normal samples (splitmix64 + Box-Muller; the
/// transcendental functions are only used to make test data).
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn golden_input() -> (Vec<f32>, Vec<f32>) {
    let a = vec![0.5, -1.0, 0.0, 2.0, -0.25, 3.0, 0.1, -2.5, 1.5, -3.0];
    let b = vec![0.0, 0.75, -0.75, 0.75];
    (a, b)
}

#[test]
fn golden_vector() {
    let (a, b) = golden_input();
    let s = Settings {
        top_z: 0.5,
        ..Settings::default()
    };
    let d = compress(&[("a", &a), ("b", &b)], &s).unwrap();
    let t = &d.tensors[0];
    assert_eq!(t.positions, vec![3, 5, 7, 8, 9]);
    assert_eq!(t.centroids, GOLDEN_CENTROIDS_A.to_vec());
    assert_eq!(t.ids, GOLDEN_IDS_A.to_vec());
    // Ties in magnitude: the lower index wins.
    assert_eq!(d.tensors[1].positions, vec![1, 2]);
    let bytes = encode(&d, Positions::Diff);
    assert_eq!(hex(&bytes), GOLDEN_DIFF);
    assert_eq!(hex(&encode(&d, Positions::Plain)), GOLDEN_PLAIN);
    assert_eq!(decode(&bytes, 14).unwrap(), d);
    assert_eq!(
        t.to_dense(),
        vec![
            0.0,
            0.0,
            0.0,
            t.centroids[t.ids[0] as usize],
            0.0,
            t.centroids[t.ids[1] as usize],
            0.0,
            t.centroids[t.ids[2] as usize],
            t.centroids[t.ids[3] as usize],
            t.centroids[t.ids[4] as usize],
        ]
    );
}

const GOLDEN_CENTROIDS_A: [f32; 3] = [-2.75, 1.75, 3.0];
const GOLDEN_IDS_A: [u8; 5] = [1, 2, 0, 1, 0];
/// "FZDL" v1, 2 tensors; "a": len 10, centroids [-2.75, 1.75, 3.0],
/// 5 kept, diff coding, code lengths [2, 1, 2], 3 bitstream bytes; "b":
/// len 4, centroids [-0.75, 0, 0.75], 2 kept, code lengths [1, 0, 1].
const GOLDEN_DIFF: &str = "465a444c010201610a03000030c00000e03f00004040050002010203e00a27\
                           01620403000040bf000000000000403f0200010001022001";
const GOLDEN_PLAIN: &str = "465a444c010201610a03000030c00000e03f000040400501020102045387e904\
                            01620403000040bf000000000000403f02010100010119";

#[test]
fn settings_validate_names_the_field() {
    let s = Settings {
        top_z: 2.0,
        ..Settings::default()
    };
    assert_eq!(
        s.validate("delta").unwrap_err(),
        "delta.top_z must be within (0, 1], got 2"
    );
    let s = Settings {
        clusters: 0,
        ..Settings::default()
    };
    assert!(s.validate("d").unwrap_err().starts_with("d.clusters"));
    assert!(Settings::default().validate("d").is_ok());
    let t: Settings = toml::from_str("top_z = 0.1\npositions = \"plain\"").unwrap();
    assert_eq!(t.positions, Positions::Plain);
    assert_eq!(t.clusters, 3);
    assert!(toml::from_str::<Settings>("topz = 0.1").is_err());
}

#[test]
fn compress_rejects_bad_input() {
    let s = Settings::default();
    let e = compress(&[("w", &[1.0, f32::NAN])], &s).unwrap_err();
    assert!(e.to_string().contains("tensor w: element 1"), "{e}");
    let e = compress(&[("w", &[1.0]), ("w", &[2.0])], &s).unwrap_err();
    assert!(matches!(e, Error::DuplicateName { .. }));
    let bad = Settings {
        top_z: 0.0,
        ..s.clone()
    };
    assert!(matches!(
        compress(&[("w", &[1.0])], &bad),
        Err(Error::Settings(_))
    ));
}

#[test]
fn invalid_delta_encodes_without_panic_and_is_refused() {
    let t = SparseTensor {
        name: "w".into(),
        len: 1 << 40,
        centroids: vec![1.0],
        positions: vec![5, 3],
        ids: vec![0, 7],
    };
    let d = Delta { tensors: vec![t] };
    assert!(d.validate().is_err());
    for coding in [Positions::Diff, Positions::Plain] {
        assert!(decode(&encode(&d, coding), u64::MAX).is_err());
    }
}

#[test]
fn keeps_ceil_top_z() {
    assert_eq!(kept_count(0, 0.5), 0);
    assert_eq!(kept_count(10, 0.01), 1);
    assert_eq!(kept_count(10, 0.15), 2);
    assert_eq!(kept_count(10, 1.0), 10);
    let x = gaussian(1000, 1);
    let d = compress(&[("x", &x)], &Settings::default()).unwrap();
    assert_eq!(d.kept(), 10);
    let min_kept = d.tensors[0]
        .positions
        .iter()
        .map(|&p| x[p as usize].abs())
        .fold(f32::INFINITY, f32::min);
    assert_eq!(x.iter().filter(|v| v.abs() >= min_kept).count(), 10);
}

#[test]
fn single_cluster_and_equal_values() {
    let x = [0.0f32, 1.0, 1.0, 1.0, -1.0];
    for clusters in [1, 3, 256] {
        let s = Settings {
            top_z: 1.0,
            clusters,
            ..Settings::default()
        };
        let d = compress(&[("x", &x)], &s).unwrap();
        for coding in [Positions::Diff, Positions::Plain] {
            assert_eq!(decode(&encode(&d, coding), 5).unwrap(), d);
        }
    }
}

fn valid_bytes() -> Vec<u8> {
    let x = gaussian(2000, 7);
    let s = Settings {
        top_z: 0.05,
        ..Settings::default()
    };
    encode(
        &compress(&[("x", &x), ("y", &x[..100])], &s).unwrap(),
        Positions::Diff,
    )
}

/// Writes a one-tensor delta by hand: plain coding, two ids with codes
/// given by `lengths`.
fn handmade(len: u64, centroids: &[f32], lengths: &[u8], body: &[(u64, u32)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    varint::put(&mut out, 1);
    varint::put(&mut out, 1);
    out.push(b'w');
    varint::put(&mut out, len);
    varint::put(&mut out, centroids.len() as u64);
    for c in centroids {
        out.extend_from_slice(&c.to_le_bytes());
    }
    let count = body.iter().filter(|(_, w)| *w == plain_width(len)).count();
    varint::put(&mut out, count as u64);
    out.push(1);
    out.extend_from_slice(lengths);
    let mut w = BitWriter::default();
    for &(v, bits) in body {
        w.write(v, bits);
    }
    let bits = w.finish();
    varint::put(&mut out, bits.len() as u64);
    out.extend_from_slice(&bits);
    out
}

#[test]
fn decode_rejects_malformed_input() {
    let good = valid_bytes();
    assert!(decode(&good, 2100).is_ok());
    assert_eq!(
        decode(&good, 2099).unwrap_err().to_string(),
        "tensor 1 (\"y\"): the delta holds more than the allowed 2099 elements"
    );
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(decode(&b, u64::MAX), Err(Error::Magic));
    let mut b = good.clone();
    b[4] = 2;
    assert_eq!(decode(&b, u64::MAX), Err(Error::Version(2)));
    let mut b = good.clone();
    b.push(0);
    assert_eq!(decode(&b, u64::MAX), Err(Error::Trailing(1)));
    for n in 0..good.len() {
        assert!(decode(&good[..n], u64::MAX).is_err(), "prefix {n}");
    }
    // Duplicate names.
    let d = compress(&[("x", &[1.0f32][..])], &Settings::default()).unwrap();
    let two = Delta {
        tensors: vec![d.tensors[0].clone(), d.tensors[0].clone()],
    };
    assert!(matches!(
        decode(&encode(&two, Positions::Diff), 10),
        Err(Error::DuplicateName { .. })
    ));
    // Non-finite centroid.
    let mut nan = d.clone();
    nan.tensors[0].centroids[0] = f32::NAN;
    let e = decode(&encode(&nan, Positions::Diff), 10).unwrap_err();
    assert!(e.to_string().contains("non-finite centroid"), "{e}");
    // Hand-made plain-coded tensors: len 5 (3 bits), codes 0 -> "0", 1 -> "1".
    let ok = handmade(5, &[1.0, 2.0], &[1, 1], &[(1, 3), (4, 3), (0, 1), (1, 1)]);
    let t = &decode(&ok, 5).unwrap().tensors[0];
    assert_eq!(
        (t.positions.as_slice(), t.ids.as_slice()),
        (&[1, 4][..], &[0, 1][..])
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            handmade(5, &[1.0, 2.0], &[1, 1], &[(1, 3), (5, 3), (0, 1), (1, 1)]),
            "not below len",
        ),
        (
            handmade(5, &[1.0, 2.0], &[1, 1], &[(3, 3), (2, 3), (0, 1), (1, 1)]),
            "not increasing",
        ),
        (
            handmade(5, &[1.0, 2.0], &[1, 2], &[(1, 3), (4, 3), (0, 1), (1, 1)]),
            "complete code",
        ),
        (
            handmade(5, &[1.0, 2.0, 3.0], &[1, 1, 1], &[(1, 3), (4, 3), (0, 2)]),
            "complete code",
        ),
        (
            handmade(5, &[1.0, 2.0], &[0, 0], &[(1, 3), (4, 3), (0, 2)]),
            "no id has a code",
        ),
        (
            handmade(5, &[1.0, 2.0], &[33, 1], &[(1, 3), (4, 3), (0, 2)]),
            "exceeds 32",
        ),
        (
            handmade(5, &[1.0, 2.0], &[2, 0], &[(1, 3), (4, 3)]),
            "single used id",
        ),
        (
            handmade(
                5,
                &[1.0, 2.0],
                &[1, 1],
                &[(1, 3), (4, 3), (0, 1), (1, 1), (0, 8)],
            ),
            "used",
        ),
        (
            handmade(
                4,
                &[1.0, 2.0],
                &[1, 1],
                &[(1, 2), (3, 2), (0, 1), (1, 1), (1, 1)],
            ),
            "padding",
        ),
        (
            handmade(1 << 33, &[1.0, 2.0], &[1, 1], &[(1, 3)]),
            "exceeds 2^32",
        ),
    ];
    for (bytes, want) in cases {
        let e = decode(&bytes, u64::MAX).unwrap_err();
        assert!(e.to_string().contains(want), "{e} (want {want})");
    }
    // A huge count with a short bitstream is refused before allocating.
    let mut b2 = MAGIC.to_vec();
    b2.push(VERSION);
    varint::put(&mut b2, 1);
    varint::put(&mut b2, 1);
    b2.push(b'w');
    varint::put(&mut b2, MAX_LEN);
    varint::put(&mut b2, 1);
    b2.extend_from_slice(&1f32.to_le_bytes());
    varint::put(&mut b2, MAX_LEN);
    b2.extend_from_slice(&[0, 1, 1, 0]);
    let e = decode(&b2, u64::MAX).unwrap_err();
    assert!(e.to_string().contains("cannot fit"), "{e}");
    // Non-minimal varint.
    let mut b3 = MAGIC.to_vec();
    b3.extend_from_slice(&[VERSION, 0x80, 0x00]);
    assert!(decode(&b3, 0).unwrap_err().to_string().contains("minimal"));
    let mut b4 = MAGIC.to_vec();
    b4.push(VERSION);
    b4.extend_from_slice(&[0xff; 10]);
    assert!(decode(&b4, 0).unwrap_err().to_string().contains("overflow"));
}

#[test]
fn sizes_and_ratio() {
    let x = gaussian(1 << 20, 42);
    let raw = 4.0 * x.len() as f64;
    let mut report = Vec::new();
    for top_z in [0.01, 0.1] {
        let s = Settings {
            top_z,
            ..Settings::default()
        };
        let d = compress(&[("x", &x)], &s).unwrap();
        let diff = encode(&d, Positions::Diff).len();
        let plain = encode(&d, Positions::Plain).len();
        assert!(diff < plain, "top_z {top_z}: diff {diff} plain {plain}");
        assert_eq!(decode(&encode(&d, Positions::Diff), 1 << 20).unwrap(), d);
        report.push((top_z, raw / diff as f64, raw / plain as f64));
    }
    eprintln!("1M Gaussian ratios (top_z, diff, plain): {report:?}");
    assert!(report[0].1 > 250.0, "{report:?}");
    assert!(report[1].1 > 45.0, "{report:?}");
}

fn arb_tensor() -> impl Strategy<Value = Vec<f32>> {
    let value = prop_oneof![
        (-4i8..=4).prop_map(|v| f32::from(v) * 0.25),
        (-1e3f32..1e3f32),
        any::<f32>().prop_filter("finite", |v| v.is_finite()),
    ];
    prop::collection::vec(value, 0..400)
}

fn arb_settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![Just(1.0f64), 0.001f64..1.0],
        prop_oneof![1usize..=8, Just(256usize)],
        0usize..=4,
    )
        .prop_map(|(top_z, clusters, iterations)| Settings {
            top_z,
            clusters,
            iterations,
            positions: Positions::Diff,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn roundtrip(tensors in prop::collection::vec(arb_tensor(), 0..4), s in arb_settings()) {
        let names: Vec<String> = (0..tensors.len()).map(|i| format!("t{i}")).collect();
        let input: Vec<(&str, &[f32])> =
            names.iter().map(String::as_str).zip(tensors.iter().map(Vec::as_slice)).collect();
        let d = compress(&input, &s).unwrap();
        prop_assert!(d.validate().is_ok());
        let total = d.elements();
        for coding in [Positions::Diff, Positions::Plain] {
            let bytes = encode(&d, coding);
            prop_assert_eq!(&decode(&bytes, total).unwrap(), &d);
            // Deterministic: compressing again gives the same bytes.
            prop_assert_eq!(encode(&compress(&input, &s).unwrap(), coding), bytes);
        }
        for (t, (_, x)) in d.tensors.iter().zip(&input) {
            let nonzero = x.iter().filter(|&&v| v != 0.0).count();
            prop_assert_eq!(t.positions.len(), kept_count(x.len(), s.top_z).min(nonzero));
            prop_assert!(t.positions.iter().all(|&p| x[p as usize] != 0.0));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut b = MAGIC.to_vec();
        b.push(VERSION);
        b.extend_from_slice(&bytes);
        let _ = decode(&bytes, u64::MAX);
        let _ = decode(&b, 1 << 20);
    }

    #[test]
    fn bit_flips_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4)) {
        let mut b = valid_bytes();
        for (i, bit) in flips {
            let i = i.index(b.len());
            b[i] ^= 1 << bit;
        }
        if let Ok(d) = decode(&b, 1 << 16) {
            prop_assert!(d.validate().is_ok());
            prop_assert_eq!(decode(&encode(&d, Positions::Plain), 1 << 16).unwrap(), d);
        }
    }
}
