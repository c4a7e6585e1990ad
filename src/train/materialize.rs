//! A run as a seed log and back: `export --seedlog` writes a node's log as
//! one small file ([`crate::seedlog`]); `materialize` rebuilds the exact
//! replica from it and a base model (refusing a base of another hash and
//! checking the final digest), then writes the weights as safetensors or as
//! a Hugging Face-style directory.

use super::*;
use crate::seedlog::SeedLog;
use serde::Serialize;
use std::collections::HashMap;

/// JSON summary of `export --seedlog`.
#[derive(Clone, Debug, Serialize)]
pub struct SeedLogSummary {
    pub run_id: String,
    pub base_hash: String,
    pub digest: String,
    pub origins: usize,
    pub updates: u64,
    pub deltas: usize,
    pub delta_bytes: usize,
    pub signed: bool,
    /// Size of the seed log, bytes.
    pub bytes: usize,
    /// Of which the manifest.
    pub manifest_bytes: usize,
    /// Raw f32 size of the whole model's weights, bytes.
    pub model_bytes: u64,
}

/// JSON summary of `materialize`.
#[derive(Clone, Debug, Serialize)]
pub struct MaterializeSummary {
    pub run_id: String,
    pub digest: String,
    pub updates: u64,
    pub origins: usize,
    /// Origins whose updates are all covered by their own signatures
    /// (checked); 0 for an unsigned seed log.
    pub signed_origins: usize,
    /// What was written: "safetensors" or "directory".
    pub format: String,
    pub out: String,
    pub tensors: usize,
    pub wall_seconds: f64,
}

impl SeedLogSummary {
    /// What `export --seedlog` prints.
    pub fn line(&self, path: &Path) -> String {
        format!(
            "wrote the seed log {}: {} bytes for {} updates of {} origins ({} deltas, {} bytes){}, against {} bytes of f32 weights; digest {}",
            path.display(),
            self.bytes,
            self.updates,
            self.origins,
            self.deltas,
            self.delta_bytes,
            if self.signed { ", signed" } else { "" },
            self.model_bytes,
            &self.digest[..16]
        )
    }
}

impl MaterializeSummary {
    /// What `materialize` prints.
    pub fn line(&self) -> String {
        format!(
            "rebuilt {} updates of {} origins ({} signed), digest {} checked; wrote {} tensors to {} ({}), {:.1}s",
            self.updates,
            self.origins,
            self.signed_origins,
            &self.digest[..16],
            self.tensors,
            self.out,
            self.format,
            self.wall_seconds
        )
    }
}

/// Writes the update log of `data_dir` (with `signed`, the origins'
/// signatures too) as a seed log at `out`; replays it first, so the file
/// carries the digest it must give.
pub fn export_seedlog(
    cfg: &Config,
    data_dir: &Path,
    out: &Path,
    signed: bool,
) -> Result<SeedLogSummary, Error> {
    let mut trainer = Trainer::new(cfg, local_origin(cfg))?;
    let run = trainer.run();
    let base_hash = model::base_hash(trainer.model.as_ref())?;
    let (mut log, _) = open_log(data_dir, run)?;
    trainer.replay(&log)?;
    // The file keeps foreign origins' signatures; a node's own updates are
    // signed again with its key (as the node does when it starts).
    if signed && data_dir.join("node.key").exists() {
        let key =
            crate::net::load_or_create_key(data_dir).map_err(|e| Error::Mismatch(e.to_string()))?;
        if let Ok(ed) = key.try_into_ed25519() {
            crate::proto::attest_own(&mut log, &crate::crdt::attest::Signer::new(ed, run));
        }
    }
    let manifest = serde_json::to_string(&cfg.run)
        .map_err(|e| Error::Mismatch(format!("serializing the manifest: {e}")))?;
    let segments = log
        .version_vector()
        .iter()
        .map(|(o, &n)| {
            let mut s = log.segment(o, 0, n);
            if !signed {
                s.attests.clear();
            }
            s
        })
        .collect();
    let sl = SeedLog {
        run,
        base_hash,
        manifest,
        segments,
        digest: trainer.replica().digest_bytes(),
    };
    let bytes = sl.write(out).map_err(|e| Error::Mismatch(e.to_string()))?;
    let (deltas, delta_bytes) = sl.deltas();
    Ok(SeedLogSummary {
        run_id: run.to_hex(),
        base_hash: seed::hex(&base_hash),
        digest: seed::hex(&sl.digest),
        origins: sl.segments.len(),
        updates: sl.updates(),
        deltas,
        delta_bytes,
        signed: sl.signed(),
        bytes,
        manifest_bytes: sl.manifest.len(),
        model_bytes: 4 * trainer
            .model
            .params()
            .iter()
            .map(|p| p.len() as u64)
            .sum::<u64>(),
    })
}

/// Rebuilds the replica of the seed log at `file` on the base model of its
/// manifest (or `base`: a GGUF file or a Hugging Face directory), checks
/// the base hash, the signatures (when present) and the final digest, and
/// writes the weights to `out`: a `.safetensors` file, or a directory with
/// `model.safetensors`, the manifest, a model card and, for a language
/// model, `config.json` and `tokenizer.json` (what transformers loads).
pub fn materialize(
    file: &Path,
    base: Option<&Path>,
    out: &Path,
) -> Result<MaterializeSummary, Error> {
    let start = Instant::now();
    let (trainer, sl, manifest, signed_origins) = rebuild(file, base)?;
    let as_file = out.extension().is_some_and(|e| e == "safetensors");
    let tensors = if as_file {
        save_weights(trainer.model(), out)?
    } else {
        write_dir(&trainer, &sl, &manifest, out)?
    };
    Ok(MaterializeSummary {
        run_id: sl.run.to_hex(),
        digest: seed::hex(&sl.digest),
        updates: sl.updates(),
        origins: sl.segments.len(),
        signed_origins,
        format: if as_file { "safetensors" } else { "directory" }.into(),
        out: out.display().to_string(),
        tensors,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

/// The replica of a seed log: the trainer at its final state, the log, the
/// manifest the model was built from, and how many origins were signed.
pub fn rebuild(
    file: &Path,
    base: Option<&Path>,
) -> Result<(Trainer, SeedLog, config::Manifest, usize), Error> {
    let sl = SeedLog::read(file).map_err(|e| Error::Mismatch(e.to_string()))?;
    let mut manifest: config::Manifest = serde_json::from_str(&sl.manifest)
        .map_err(|e| Error::Mismatch(format!("{}: its manifest: {e}", file.display())))?;
    if manifest.run_id(&sl.base_hash) != sl.run {
        return Err(Error::Mismatch(format!(
            "{}: the run id is not that of its manifest and base hash (the file was altered)",
            file.display()
        )));
    }
    if let Some(b) = base {
        let path = b.display().to_string();
        manifest.model = match &manifest.model {
            ModelSpec::Tiny(_) => {
                return Err(Error::Mismatch(
                    "--base: this run is on the built-in model, which needs no base file".into(),
                ))
            }
            _ if b.is_dir() => ModelSpec::Hf(config::ModelFile { path }),
            _ => ModelSpec::Gguf(config::ModelFile { path }),
        };
    }
    let model = build_model(&manifest)?;
    let have = model::base_hash(model.as_ref())?;
    if have != sl.base_hash {
        return Err(Error::Mismatch(format!(
            "the base model's hash is {}, but the seed log was made on {}: use the run's base model (--base)",
            seed::hex(&have),
            seed::hex(&sl.base_hash)
        )));
    }
    let origin = Origin([0; 32]);
    let mut trainer = Trainer::with_model(&manifest, model, sl.run, origin)?;
    let mut log = Log::in_memory(sl.run);
    let mut signed = 0;
    for s in &sl.segments {
        if !s.attests.is_empty() {
            let v = log::verified_prefix(&sl.run, s);
            if v.end() != s.end() {
                return Err(Error::Mismatch(format!(
                    "origin {}: its signatures cover seqs 0..{} of 0..{} (forged or incomplete)",
                    s.origin.short(),
                    v.end(),
                    s.end()
                )));
            }
            signed += 1;
        }
        log.insert_with(s.origin, 0, &s.codes, &s.payloads)?;
    }
    trainer.replay(&log)?;
    let digest = trainer.replica().digest_bytes();
    if digest != sl.digest {
        return Err(Error::Mismatch(format!(
            "the rebuilt replica's digest is {}, the seed log says {}",
            seed::hex(&digest),
            seed::hex(&sl.digest)
        )));
    }
    Ok((trainer, sl, manifest, signed))
}

/// Every parameter of `m` under its name, as safetensors (metadata
/// `format: pt`, as transformers expects); returns the tensor count.
pub(super) fn save_weights(m: &dyn Model, out: &Path) -> Result<usize, Error> {
    let mut tensors = HashMap::new();
    for (i, p) in m.params().into_iter().enumerate() {
        let t = candle_core::Tensor::from_vec(
            m.read(i)?,
            p.shape.as_slice(),
            &candle_core::Device::Cpu,
        )
        .map_err(model::Error::from)?;
        tensors.insert(p.name, t);
    }
    let n = tensors.len();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(&tensors, Some(meta), out)
        .map_err(|e| model::Error::Load(format!("writing {}: {e}", out.display())))?;
    Ok(n)
}

fn write_dir(
    trainer: &Trainer,
    sl: &SeedLog,
    manifest: &config::Manifest,
    out: &Path,
) -> Result<usize, Error> {
    let io = |what: &str, e: std::io::Error| {
        Error::Mismatch(format!("writing {}: {e}", out.join(what).display()))
    };
    std::fs::create_dir_all(out).map_err(|e| io("", e))?;
    let n = save_weights(trainer.model(), &out.join("model.safetensors"))?;
    let hf = match model_source(manifest) {
        Some(src) => {
            let config = trainer.model().hf_config().ok_or_else(|| {
                Error::Mismatch("the model has no Hugging Face configuration".into())
            })?;
            std::fs::write(out.join("config.json"), format!("{config:#}\n"))
                .map_err(|e| io("config.json", e))?;
            llama::tokenizer(src)?
                .save(out.join("tokenizer.json"), false)
                .map_err(|e| Error::Mismatch(format!("writing tokenizer.json: {e}")))?;
            true
        }
        None => false,
    };
    std::fs::write(out.join("seedswarm-manifest.json"), &sl.manifest)
        .map_err(|e| io("seedswarm-manifest.json", e))?;
    std::fs::write(out.join("README.md"), model_card(sl, manifest, hf))
        .map_err(|e| io("README.md", e))?;
    Ok(n)
}

fn model_card(sl: &SeedLog, manifest: &config::Manifest, hf: bool) -> String {
    let vv = sl.version_vector();
    let mut origins = String::new();
    for (o, n) in &vv {
        origins.push_str(&format!("| `{}` | {n} |\n", o.to_hex()));
    }
    let (deltas, delta_bytes) = sl.deltas();
    let load = if hf {
        "Load it with transformers: `AutoModelForCausalLM.from_pretrained(DIR)` \
         and `PreTrainedTokenizerFast(tokenizer_file=\"DIR/tokenizer.json\")`."
    } else {
        "The built-in seedswarm model: `model.safetensors` holds its tensors by name."
    };
    format!(
        "# {name}, fine-tuned by seedswarm\n\n\
         Rebuilt exactly from a seed log by `seedswarm materialize`: the base model, \
         the run manifest below and {updates} updates from {n} contributors \
         ({deltas} of them compressed deltas, {delta_bytes} bytes).\n\n\
         {load}\n\n\
         - run id: `{run}`\n\
         - base model hash: `{base}`\n\
         - digest of the fine-tuning accumulator δ: `{digest}`\n\
         - perturbation: {kind:?} ({structure:?}), ε = {eps}, batch {batch}, trainable: {trainable:?}\n\n\
         ## Contributors (updates each)\n\n\
         | origin | updates |\n|---|---|\n{origins}\n\
         ## Manifest\n\n```json\n{manifest_json}\n```\n",
        name = manifest.name,
        updates = sl.updates(),
        n = vv.len(),
        run = sl.run.to_hex(),
        base = seed::hex(&sl.base_hash),
        digest = seed::hex(&sl.digest),
        kind = manifest.perturbation,
        structure = manifest.structure,
        eps = manifest.eps,
        batch = manifest.batch_size,
        trainable = manifest.trainable,
        manifest_json = sl.manifest,
    )
}
