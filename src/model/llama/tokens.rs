//! The tokenizer of a llama: from GGUF metadata (byte-level BPE with
//! SmolLM2's pre-tokenizer) or a Hugging Face tokenizer.json.

use super::load::load_err;
use super::Source;
use crate::model::Error;
use candle_core::quantized::gguf_file;
use tokenizers::Tokenizer;

/// Reads the tokenizer of a model (GGUF metadata or tokenizer.json).
pub fn tokenizer(source: Source<'_>) -> Result<Tokenizer, Error> {
    match source {
        Source::Gguf(path) => {
            let mut f = std::fs::File::open(path).map_err(|e| load_err(path, e))?;
            let ct = gguf_file::Content::read(&mut f).map_err(|e| load_err(path, e))?;
            gguf_tokenizer(&ct).map_err(|e| load_err(path, e))
        }
        Source::HfDir(dir) => {
            let path = dir.join("tokenizer.json");
            Tokenizer::from_file(&path).map_err(|e| load_err(&path, e))
        }
    }
}

/// A byte-level BPE tokenizer from GGUF metadata, with SmolLM2's
/// pre-tokenizer (digits split individually, then GPT-2 byte-level, no prefix
/// space). No BOS/EOS is added.
fn gguf_tokenizer(ct: &gguf_file::Content) -> Result<Tokenizer, String> {
    use candle_core::quantized::tokenizer::TokenizerFromGguf;
    use tokenizers::pre_tokenizers::{
        byte_level::ByteLevel, digits::Digits, sequence::Sequence, PreTokenizerWrapper,
    };
    let mut t = Tokenizer::from_gguf(ct).map_err(|e| format!("tokenizer: {e}"))?;
    let pre = ct
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if !matches!(pre.as_str(), "smollm" | "gpt2" | "") {
        return Err(format!(
            "tokenizer.ggml.pre = {pre:?} is not supported (supported: smollm, gpt2)"
        ));
    }
    let seq: Vec<PreTokenizerWrapper> = if pre == "smollm" {
        vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ]
    } else {
        vec![ByteLevel::new(false, true, true).into()]
    };
    t.with_pre_tokenizer(Some(Sequence::new(seq)));
    Ok(t)
}

/// Token ids of `text` (no special tokens added).
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, Error> {
    Ok(tok
        .encode(text, false)
        .map_err(|e| Error::Load(format!("tokenizing {text:?}: {e}")))?
        .get_ids()
        .to_vec())
}
