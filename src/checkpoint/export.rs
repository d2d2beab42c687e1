//! From a distributed checkpoint to one process: its configuration and whole logical tensors
//! (`read_config`, `read_tensor`, used by `swallow eval --load`), and `swallow export`, which writes
//! a Hugging Face Llama directory: config.json (LlamaForCausalLM), generation_config.json,
//! `model-0000k-of-0000n.safetensors` shards of at most 5 GB with model.safetensors.index.json,
//! and the tokenizer files when given. Tensors are streamed one at a time from the checkpoint into
//! the shards (converted to bf16, fp16 or fp32), so the model never has to fit in memory at once.

use super::dist::{self, AttrValue, TensorRequest};
use crate::atomic_file;
use crate::config::Config;
use crate::model::params::ParamTable;
use crate::progress::ProgressMeter;
use anyhow::{bail, Context, Result};
use mpi::topology::SimpleCommunicator;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest shard Hugging Face's save_pretrained writes by default.
const MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// The configuration stored in a checkpoint (its `config` attribute).
pub fn read_config(path: &Path) -> Result<Config> {
    let (attrs, _) = dist::inspect(path)?;
    match attrs.get("config") {
        Some(AttrValue::Str(text)) => Config::from_toml(text, &format!("the config stored in {}", path.display()), &[]),
        _ => bail!("checkpoint {}: no config attribute", path.display()),
    }
}

/// One whole logical tensor of a checkpoint.
pub fn read_tensor(path: &Path, comm: &SimpleCommunicator, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let numel: usize = shape.iter().product();
    let mut buf = vec![0f32; numel];
    let mut req = [TensorRequest { name: name.into(), shape: shape.iter().map(|&d| d as u64).collect(), pieces: vec![(0..numel as u64, &mut buf[..])] }];
    dist::read(path, comm, &mut req, None)?;
    Ok(buf)
}

/// Element type of the exported weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportDtype {
    Bf16,
    F16,
    F32,
}

impl ExportDtype {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "bf16" | "bfloat16" => ExportDtype::Bf16,
            "fp16" | "f16" | "float16" => ExportDtype::F16,
            "fp32" | "f32" | "float32" => ExportDtype::F32,
            other => bail!("--dtype {other:?}: expected bf16, fp16 or fp32"),
        })
    }

    fn bytes(self) -> u64 {
        if self == ExportDtype::F32 { 4 } else { 2 }
    }

    /// (safetensors dtype, torch_dtype)
    fn names(self) -> (&'static str, &'static str) {
        match self {
            ExportDtype::Bf16 => ("BF16", "bfloat16"),
            ExportDtype::F16 => ("F16", "float16"),
            ExportDtype::F32 => ("F32", "float32"),
        }
    }

    fn encode(self, x: &[f32]) -> Vec<u8> {
        match self {
            ExportDtype::Bf16 => x.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
            ExportDtype::F16 => x.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            ExportDtype::F32 => x.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        }
    }
}

/// Hugging Face config.json of a LlamaForCausalLM for `cfg`.
fn hf_config(cfg: &Config, dtype: ExportDtype) -> serde_json::Value {
    let m = &cfg.model;
    let rope_scaling = m.rope_scaling.as_ref().map(|r| {
        json!({
            "rope_type": "llama3",
            "factor": r.factor,
            "low_freq_factor": r.low_freq_factor,
            "high_freq_factor": r.high_freq_factor,
            "original_max_position_embeddings": r.original_max_position_embeddings,
        })
    });
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": m.hidden_size,
        "intermediate_size": m.ffn_hidden_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads,
        "num_key_value_heads": m.num_kv_heads,
        "head_dim": m.head_dim(),
        "vocab_size": m.vocab_size,
        "max_position_embeddings": m.max_position_embeddings,
        "rms_norm_eps": m.norm_eps,
        "rope_theta": m.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": m.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "attention_dropout": 0.0,
        "initializer_range": m.init_std,
        "use_cache": true,
        "torch_dtype": dtype.names().1,
    })
}

/// `swallow export`: the checkpoint at `ckpt` as a Hugging Face Llama directory `out`. A failed
/// export (a corrupt checkpoint, a full disk) leaves no temp file behind, nor the directory
/// where it made it.
pub fn export(ckpt: &Path, comm: &SimpleCommunicator, out: &Path, dtype: ExportDtype, tokenizer: Option<&Path>) -> Result<()> {
    let created = !out.exists();
    let result = write_directory(ckpt, comm, out, dtype, tokenizer);
    if result.is_err() {
        for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if created {
            let _ = std::fs::remove_dir(out); // only when empty
        }
    }
    result
}

fn write_directory(ckpt: &Path, comm: &SimpleCommunicator, out: &Path, dtype: ExportDtype, tokenizer: Option<&Path>) -> Result<()> {
    let cfg = read_config(ckpt)?;
    let table = ParamTable::llama(&cfg.model);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Shards in table order, each at most MAX_SHARD_BYTES (a larger single tensor gets its own).
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0;
    for (p, spec) in table.specs.iter().enumerate() {
        let bytes = spec.numel() as u64 * dtype.bytes();
        if size + bytes > MAX_SHARD_BYTES && !shards.last().unwrap().is_empty() {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().unwrap().push(p);
        size += bytes;
    }
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut meter = ProgressMeter::new("export", table.numel() as u64 * dtype.bytes(), true);
    let mut total = 0u64;
    for (k, ids) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!({ "format": "pt" }));
        let mut at = 0u64;
        for &p in ids {
            let spec = &table.specs[p];
            let len = spec.numel() as u64 * dtype.bytes();
            header.insert(spec.name.clone(), json!({ "dtype": dtype.names().0, "shape": spec.shape, "data_offsets": [at, at + len] }));
            weight_map.insert(spec.name.clone(), file.clone());
            at += len;
        }
        total += at;
        let mut head = serde_json::to_vec(&header)?;
        head.resize(head.len().div_ceil(8) * 8, b' ');
        atomic_file::write_with(&out.join(&file), |w| {
            w.write_all(&(head.len() as u64).to_le_bytes())?;
            w.write_all(&head)?;
            for &p in ids {
                let spec = &table.specs[p];
                w.write_all(&dtype.encode(&read_tensor(ckpt, comm, &spec.name, &spec.shape)?))?;
                meter.advance(spec.numel() as u64 * dtype.bytes());
            }
            Ok(())
        })?;
    }
    drop(meter);
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    atomic_file::write(&out.join("model.safetensors.index.json"), &serde_json::to_vec_pretty(&index)?)?;
    let (copied, specials) = match tokenizer {
        Some(t) => copy_tokenizer(t, out, cfg.model.max_position_embeddings)?,
        None => (Vec::new(), Specials::default()),
    };
    let mut config = hf_config(&cfg, dtype);
    let mut generation = json!({ "_from_model_config": true });
    // The tokenizer's own ids, else those the model carries from its import.
    let ids = [
        ("bos_token_id", specials.bos.as_ref().map(|t| t.1).or(cfg.model.bos_token_id)),
        ("eos_token_id", specials.eos.as_ref().map(|t| t.1).or(cfg.model.eos_token_id)),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            config[key] = json!(id);
            generation[key] = json!(id);
        }
    }
    atomic_file::write(&out.join("config.json"), &serde_json::to_vec_pretty(&config)?)?;
    atomic_file::write(&out.join("generation_config.json"), &serde_json::to_vec_pretty(&generation)?)?;
    println!(
        "export: {} -> {} | {} tensors, {:.1} MB {} in {n} shard(s){}",
        ckpt.display(), out.display(), table.specs.len(), total as f64 / 1e6, dtype.names().1,
        if copied.is_empty() { String::new() } else { format!(" | tokenizer: {}{}", copied.join(", "), specials.describe()) }
    );
    Ok(())
}

/// The special tokens of an exported tokenizer: (text, id).
#[derive(Default)]
struct Specials {
    bos: Option<(String, u32)>,
    eos: Option<(String, u32)>,
    unk: Option<(String, u32)>,
}

impl Specials {
    fn describe(&self) -> String {
        let one = |what: &str, t: &Option<(String, u32)>| t.as_ref().map(|(text, id)| format!(" {what} {id} {text:?}"));
        let parts: Vec<String> = [one("bos", &self.bos), one("eos", &self.eos)].into_iter().flatten().collect();
        if parts.is_empty() { String::new() } else { format!(";{}", parts.join(",")) }
    }
}

/// Known BOS names (Llama 2 / Mistral, Llama 3, Gemma) and UNK names.
const BOS_NAMES: [&str; 3] = ["<s>", "<|begin_of_text|>", "<bos>"];
const UNK_NAMES: [&str; 1] = ["<unk>"];

/// Copies a tokenizer.json file, or the tokenizer files of a directory, into `out`, and finds its
/// BOS and EOS. Where no tokenizer_config.json comes along (a bare tokenizer.json), one is
/// written with special_tokens_map.json, naming BOS, EOS and UNK, so that transformers'
/// AutoTokenizer and `generate` know where a text ends.
fn copy_tokenizer(src: &Path, out: &Path, max_len: usize) -> Result<(Vec<String>, Specials)> {
    let files: Vec<(PathBuf, String)> = if src.is_dir() {
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"]
            .iter()
            .map(|f| (src.join(f), f.to_string()))
            .filter(|(p, _)| p.exists())
            .collect()
    } else {
        vec![(src.to_path_buf(), "tokenizer.json".into())]
    };
    if files.is_empty() {
        bail!("--tokenizer {}: no tokenizer.json, tokenizer_config.json or tokenizer.model there", src.display());
    }
    for (from, name) in &files {
        std::fs::copy(from, out.join(name)).with_context(|| format!("copying tokenizer {} to {}", from.display(), out.display()))?;
    }
    let mut names: Vec<String> = files.into_iter().map(|(_, n)| n).collect();
    let json = out.join("tokenizer.json");
    if !json.exists() {
        return Ok((names, Specials::default()));
    }
    let tok = crate::checkpoint::vocab::load_tokenizer(&json)?;
    let config: Option<serde_json::Value> = std::fs::read_to_string(out.join("tokenizer_config.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let named = |field: &str, known: &[&str]| -> Option<(String, u32)> {
        let from_config = config.as_ref().and_then(|c| crate::tokenize::eod::config_token(c, field)).map(str::to_string);
        from_config.into_iter().chain(known.iter().map(|k| k.to_string())).find_map(|n| tok.token_to_id(&n).map(|id| (n, id)))
    };
    let specials = Specials {
        bos: named("bos_token", &BOS_NAMES),
        eos: named("eos_token", &crate::tokenize::eod::EOD_NAMES),
        unk: named("unk_token", &UNK_NAMES),
    };
    if !names.iter().any(|n| n == "tokenizer_config.json") {
        let mut map = serde_json::Map::new();
        for (key, token) in [("bos_token", &specials.bos), ("eos_token", &specials.eos), ("unk_token", &specials.unk)] {
            if let Some((text, _)) = token {
                map.insert(key.into(), json!(text));
            }
        }
        let mut config = serde_json::Value::Object(map.clone());
        config["tokenizer_class"] = json!("PreTrainedTokenizerFast");
        config["model_max_length"] = json!(max_len);
        config["clean_up_tokenization_spaces"] = json!(false);
        atomic_file::write(&out.join("tokenizer_config.json"), &serde_json::to_vec_pretty(&config)?)?;
        atomic_file::write(&out.join("special_tokens_map.json"), &serde_json::to_vec_pretty(&serde_json::Value::Object(map))?)?;
        names.extend(["tokenizer_config.json".to_string(), "special_tokens_map.json".to_string()]);
    }
    Ok((names, specials))
}
