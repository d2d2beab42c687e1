//! Reading Hugging Face Llama directories: `config.json` mapped onto our ModelConfig (a
//! LlamaForCausalLM, else an error), and the weights from `model.safetensors` or the shards listed
//! in `model.safetensors.index.json` (memory-mapped; one tensor at a time, so a model need not fit
//! in memory), each found by its HF name in the parameter table and converted (f32/f16/bf16/f64)
//! to f32. Errors name the file and the tensor.

use crate::config::{ModelConfig, RopeScaling};
use crate::model::params::{ParamSpec, ParamTable};
use anyhow::{bail, Context, Result};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Reads `DIR/config.json` of a LlamaForCausalLM.
pub fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let j: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let int = |k: &str| -> Result<usize> {
        j.get(k).and_then(Value::as_u64).map(|v| v as usize).with_context(|| format!("{}: missing integer {k:?}", path.display()))
    };
    let float_or = |k: &str, d: f64| j.get(k).and_then(Value::as_f64).unwrap_or(d);
    if let Some(mt) = j.get("model_type").and_then(Value::as_str) {
        if mt != "llama" {
            bail!("{}: model_type {mt:?} is not supported, expected \"llama\"", path.display());
        }
    }
    if let Some(archs) = j.get("architectures").and_then(Value::as_array) {
        if !archs.iter().any(|a| a.as_str() == Some("LlamaForCausalLM")) {
            bail!("{}: architectures {archs:?} is not supported, expected [\"LlamaForCausalLM\"]", path.display());
        }
    }
    for flag in ["attention_bias", "mlp_bias"] {
        if j.get(flag).and_then(Value::as_bool) == Some(true) {
            bail!("{}: {flag} = true is not supported (Llama has no biases)", path.display());
        }
    }
    if let Some(act) = j.get("hidden_act").and_then(Value::as_str) {
        if act != "silu" {
            bail!("{}: hidden_act {act:?}, expected \"silu\"", path.display());
        }
    }
    let hidden = int("hidden_size")?;
    let heads = int("num_attention_heads")?;
    if let Some(hd) = j.get("head_dim").and_then(Value::as_u64) {
        if hd as usize * heads != hidden {
            bail!("{}: head_dim {hd} x {heads} heads != hidden_size {hidden} (not supported)", path.display());
        }
    }
    // transformers 5 writes `rope_parameters` {rope_theta, rope_type, ...}; 4.x and the Hub use
    // top-level `rope_theta` plus `rope_scaling` {rope_type (or type), factor, ...}.
    let rope = j.get("rope_parameters").or_else(|| j.get("rope_scaling")).filter(|v| !v.is_null());
    let rope_theta = rope
        .and_then(|r| r.get("rope_theta"))
        .or_else(|| j.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(10000.0);
    let rope_scaling = match rope {
        None => None,
        Some(rs) => {
            let kind = rs.get("rope_type").or_else(|| rs.get("type")).and_then(Value::as_str).unwrap_or("default");
            match kind {
                "default" => None,
                "llama3" => {
                    let f = |k: &str| {
                        rs.get(k).and_then(Value::as_f64).with_context(|| format!("{}: rope scaling field {k} missing", path.display()))
                    };
                    Some(RopeScaling {
                        factor: f("factor")?,
                        low_freq_factor: f("low_freq_factor")?,
                        high_freq_factor: f("high_freq_factor")?,
                        original_max_position_embeddings: f("original_max_position_embeddings")? as usize,
                    })
                }
                other => bail!("{}: rope type {other:?} is not supported (only \"default\" and \"llama3\")", path.display()),
            }
        }
    };
    Ok(ModelConfig {
        hidden_size: hidden,
        num_layers: int("num_hidden_layers")?,
        num_heads: heads,
        num_kv_heads: j.get("num_key_value_heads").and_then(Value::as_u64).map(|v| v as usize).unwrap_or(heads),
        ffn_hidden_size: int("intermediate_size")?,
        vocab_size: int("vocab_size")?,
        max_position_embeddings: int("max_position_embeddings")?,
        rope_theta,
        rope_scaling,
        norm_eps: float_or("rms_norm_eps", 1e-6),
        tie_embeddings: j.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
        init_std: float_or("initializer_range", 0.02),
        vocab_divisible_by: 1,
        bos_token_id: token_id(&j, "bos_token_id"),
        eos_token_id: token_id(&j, "eos_token_id"),
    })
}

/// A special token id of config.json: an integer, or the first of a list (Llama 3 Instruct lists
/// its end-of-turn ids).
fn token_id(j: &Value, key: &str) -> Option<u32> {
    let v = j.get(key)?;
    v.as_u64().or_else(|| v.as_array()?.first()?.as_u64()).map(|id| id as u32)
}

/// The safetensors files of a directory: the shards of the index, or model.safetensors.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("cannot read {}", index.display()))?;
        let j: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = j.get("weight_map").and_then(Value::as_object).with_context(|| format!("{}: no weight_map", index.display()))?;
        let files: std::collections::BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    bail!("{}: no model.safetensors or model.safetensors.index.json", dir.display())
}

fn to_f32(dtype: Dtype, bytes: &[u8], what: &str) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => bail!("{what}: dtype {other:?} is not supported (expected BF16, F16, F32 or F64)"),
    })
}

/// One safetensors file, mapped, with its parsed header.
struct WeightFile {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Offset of the data section (8 + header length).
    data_start: usize,
    header: Metadata,
}

/// The weights of a Hugging Face directory, read one tensor at a time by HF name.
pub struct HfWeights {
    dir: PathBuf,
    files: Vec<WeightFile>,
    /// Tensor name -> index into `files`.
    location: BTreeMap<String, usize>,
}

impl HfWeights {
    /// Maps the directory's safetensors files and checks that they hold only tensors of `table`
    /// (plus what writers add harmlessly: RoPE `inv_freq` buffers, a tied `lm_head.weight` copy).
    pub fn open(dir: &Path, table: &ParamTable) -> Result<Self> {
        let mut files = Vec::new();
        let mut location = BTreeMap::new();
        for path in weight_files(dir)? {
            let f = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: read-only mapping of a file we do not modify while it is mapped.
            let map = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))?;
            let (n, header) = SafeTensors::read_metadata(&map)
                .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e:?}", path.display()))?;
            for name in header.tensors().keys() {
                if table.index_of(name).is_none() {
                    let tied_copy = name == "lm_head.weight" && table.lm_head == table.embed;
                    if tied_copy || name.ends_with("rotary_emb.inv_freq") {
                        continue;
                    }
                    bail!("{}: unexpected tensor {name:?} for this Llama configuration", path.display());
                }
                location.insert(name.clone(), files.len());
            }
            files.push(WeightFile { path, map, data_start: n + 8, header });
        }
        Ok(HfWeights { dir: dir.to_path_buf(), files, location })
    }

    /// The tensor of `spec` as f32, checked against its logical shape.
    pub fn tensor(&self, spec: &ParamSpec) -> Result<Vec<f32>> {
        let name = &spec.name;
        let Some(&k) = self.location.get(name) else {
            let files: Vec<String> = self.files.iter().map(|f| f.path.display().to_string()).collect();
            bail!("{}: tensor {name} is missing (in none of {})", self.dir.display(), files.join(", "));
        };
        let file = &self.files[k];
        let info = file.header.info(name).expect("located tensors are in their file's header");
        if info.shape != spec.shape {
            bail!("{}: tensor {name} has shape {:?}, expected {:?}", file.path.display(), info.shape, spec.shape);
        }
        let (a, b) = info.data_offsets;
        let bytes = &file.map[file.data_start + a..file.data_start + b];
        to_f32(info.dtype, bytes, &format!("{}: tensor {name}", file.path.display()))
    }
}

/// Reads every tensor of the table from the directory, by HF name, as f32 (table order).
pub fn read_weights(dir: &Path, table: &ParamTable) -> Result<Vec<Vec<f32>>> {
    let weights = HfWeights::open(dir, table)?;
    table.specs.iter().map(|spec| weights.tensor(spec)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(extra: &str) -> Result<ModelConfig> {
        let dir = std::env::temp_dir().join(format!("swallow-hfcfg-{}-{}", std::process::id(), extra.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            r#"{{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "intermediate_size": 160, "vocab_size": 96, "max_position_embeddings": 64,
            "rms_norm_eps": 1e-5 {extra}}}"#
        );
        std::fs::write(dir.join("config.json"), text).unwrap();
        read_config(&dir)
    }

    #[test]
    fn rope_settings_in_both_config_spellings() {
        let v5 = config_with(r#", "rope_parameters": {"rope_theta": 20000.0, "rope_type": "default"}"#).unwrap();
        assert_eq!((v5.rope_theta, v5.rope_scaling.clone()), (20000.0, None));
        let v4 = config_with(
            r#", "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#,
        )
        .unwrap();
        assert_eq!(v4.rope_theta, 500000.0);
        assert_eq!(v4.rope_scaling.unwrap().original_max_position_embeddings, 8192);
        assert_eq!(v4.num_kv_heads, 2);
        let e = config_with(r#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#).unwrap_err();
        assert!(format!("{e:#}").contains("yarn"));
        let e = config_with(r#", "attention_bias": true"#).unwrap_err();
        assert!(format!("{e:#}").contains("attention_bias"));
    }
}
