//! `seedswarm delta`: compress B − A of two safetensors files, apply the
//! result to A, and reject mismatched inputs.

use candle_core::{DType, Device, Tensor};
use seedswarm::delta::fedzip::{self, Settings};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

fn seedswarm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_seedswarm"))
        .args(args)
        .output()
        .expect("run seedswarm")
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 8;
            h as f32 / (1 << 24) as f32 - 0.5
        })
        .collect()
}

fn save(path: &Path, tensors: &[(&str, Vec<f32>, &[usize])]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, v, shape)| {
            let t = Tensor::from_vec(v.clone(), *shape, &Device::Cpu).unwrap();
            (n.to_string(), t)
        })
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn compress_then_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, d, c, summary) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
        dir.path().join("d.fzd"),
        dir.path().join("c.safetensors"),
        dir.path().join("summary.json"),
    );
    let wa = values(64 * 48, 1);
    let wb: Vec<f32> = wa
        .iter()
        .zip(values(64 * 48, 2))
        .map(|(x, n)| x + 0.01 * n)
        .collect();
    let ba = values(48, 3);
    let bb: Vec<f32> = ba.iter().map(|x| x + 0.5).collect();
    let frozen = values(10, 4);
    save(
        &a,
        &[
            ("w", wa.clone(), &[64, 48]),
            ("bias", ba.clone(), &[48]),
            ("frozen", frozen.clone(), &[10]),
        ],
    );
    save(
        &b,
        &[("w", wb.clone(), &[64, 48]), ("bias", bb.clone(), &[48])],
    );

    let out = seedswarm(&[
        "delta",
        "--base",
        path_str(&a),
        "--input",
        path_str(&b),
        "--top-z",
        "0.05",
        "--out",
        path_str(&d),
        "--summary",
        path_str(&summary),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let elements = (64 * 48 + 48) as u64;
    assert_eq!(s["elements"], elements);
    assert_eq!(s["raw_bytes"], 4 * elements);
    assert_eq!(s["kept"], (154 + 3) as u64);
    assert_eq!(s["compressed_bytes"], std::fs::metadata(&d).unwrap().len());
    assert!(s["ratio"].as_f64().unwrap() > 1.0, "{s}");
    assert!(
        s["compressed_bytes_plain"].as_u64().unwrap() > s["compressed_bytes"].as_u64().unwrap(),
        "{s}"
    );
    let rel = s["rel_l2_error"].as_f64().unwrap();
    assert!(rel > 0.0 && rel < 1.0, "{s}");
    assert!(s["max_abs_error"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["wall_s"].as_f64().unwrap() >= 0.0, "{s}");
    assert_eq!(s["skipped"], serde_json::json!(["frozen"]));

    let out = seedswarm(&[
        "delta",
        "--apply",
        path_str(&d),
        "--base",
        path_str(&a),
        "--out",
        path_str(&c),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = candle_core::safetensors::load(&c, &Device::Cpu).unwrap();

    // The same delta computed through the library.
    let dw: Vec<f32> = wb.iter().zip(&wa).map(|(y, x)| y - x).collect();
    let db: Vec<f32> = bb.iter().zip(&ba).map(|(y, x)| y - x).collect();
    let s = Settings {
        top_z: 0.05,
        ..Settings::default()
    };
    let delta = fedzip::compress(&[("bias", &db), ("w", &dw)], &s).unwrap();
    let bytes = std::fs::read(&d).unwrap();
    assert_eq!(fedzip::decode(&bytes, elements).unwrap(), delta);
    for (name, base, t) in [
        ("bias", &ba, &delta.tensors[0]),
        ("w", &wa, &delta.tensors[1]),
    ] {
        let want: Vec<f32> = base.iter().zip(t.to_dense()).map(|(x, d)| x + d).collect();
        let c = &got[name];
        assert_eq!(c.dtype(), DType::F32);
        assert_eq!(
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want,
            "{name}"
        );
    }
    assert_eq!(got["w"].dims(), &[64, 48]);
    assert_eq!(got["frozen"].to_vec1::<f32>().unwrap(), frozen);
}

#[test]
fn mismatched_shapes_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    save(&a, &[("layer.weight", values(12, 1), &[3, 4])]);
    save(&b, &[("layer.weight", values(12, 2), &[4, 3])]);
    let out = seedswarm(&["delta", "--base", path_str(&a), "--input", path_str(&b)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layer.weight") && err.contains("shape"),
        "{err}"
    );

    // A delta applied to a base whose tensor has another length.
    let d = dir.path().join("d.fzd");
    save(&b, &[("layer.weight", values(12, 2), &[3, 4])]);
    let out = seedswarm(&[
        "delta",
        "--base",
        path_str(&a),
        "--input",
        path_str(&b),
        "--out",
        path_str(&d),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    save(&a, &[("layer.weight", values(10, 1), &[10])]);
    let c = dir.path().join("c.safetensors");
    let out = seedswarm(&[
        "delta",
        "--apply",
        path_str(&d),
        "--base",
        path_str(&a),
        "--out",
        path_str(&c),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layer.weight") && err.contains("elements"),
        "{err}"
    );

    // Invalid settings name the option.
    let out = seedswarm(&[
        "delta",
        "--base",
        path_str(&a),
        "--input",
        path_str(&b),
        "--top-z",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--top-z"), "{err}");
}
