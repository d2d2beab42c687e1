//! The model math against Hugging Face transformers: tests/fixtures/make_fixtures.py saved two tiny
//! random LlamaForCausalLM models (GQA untied; MQA tied with Llama 3 RoPE scaling, sharded
//! safetensors) and the loss, logits and every parameter gradient that transformers computed in
//! float64. Loading the same directories, swallow must reproduce them to 1e-4 relative, in f64 and
//! in the f32 training backend. `swallow eval --hf` is checked against the same loss.

use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use swallow::backend::cpu::{CpuBackend, Real};
use swallow::backend::Backend;
use swallow::eval::load_hf_model;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn load(dir: &Path) -> Self {
        Reference { bytes: std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors") }
    }
    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let v = st.tensor(name).unwrap_or_else(|_| panic!("no tensor {name} in the reference"));
        let vals = match v.dtype() {
            safetensors::Dtype::F64 => v.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
            safetensors::Dtype::I64 => v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        };
        (v.shape().to_vec(), vals)
    }
}

/// ||a - b|| / ||b||
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn compare<T: Real>(name: &str, tol: f64) {
    let dir = fixture(name);
    let r = Reference::load(&dir);
    let (shape, toks) = r.tensor("tokens");
    let (b, t) = (shape[0], shape[1] - 1);
    let tokens: Vec<u32> = toks.iter().map(|&x| x as u32).collect();
    let mut model = load_hf_model(Arc::new(CpuBackend::<T>::new()), &dir, b, t).unwrap();
    let n = (b * t) as f64;

    let logits: Vec<f64> = model.logits(&tokens).iter().map(|&x| x as f64).collect();
    let (_, ref_logits) = r.tensor("logits");
    let e = rel_err(&logits, &ref_logits);
    assert!(e < tol, "{name}: logits relative error {e:e}");

    model.zero_grads();
    let loss = model.forward(&tokens, (1.0 / n) as f32) / n;
    model.backward();
    let ref_loss = r.tensor("loss").1[0];
    assert!(((loss - ref_loss) / ref_loss).abs() < tol, "{name}: loss {loss} vs transformers {ref_loss}");

    let be = model.backend.clone();
    for (spec, g) in model.table.specs.iter().zip(&model.grads) {
        let ours: Vec<f64> = be.download(g).iter().map(|&x| x as f64).collect();
        let (rshape, theirs) = r.tensor(&format!("grad.{}", spec.name));
        assert_eq!(rshape, spec.shape, "{}", spec.name);
        let e = rel_err(&ours, &theirs);
        assert!(e < tol, "{name}: gradient of {} relative error {e:e}", spec.name);
    }
}

#[test]
fn llama2_gqa_untied_matches_transformers_in_f64() {
    compare::<f64>("llama2_gqa", 1e-4);
}

#[test]
fn llama3_tied_rope_scaled_sharded_matches_transformers_in_f64() {
    compare::<f64>("llama3_tied", 1e-4);
}

#[test]
fn the_f32_training_backend_matches_transformers_too() {
    compare::<f32>("llama2_gqa", 1e-4);
    compare::<f32>("llama3_tied", 1e-4);
}

#[test]
fn eval_hf_on_shards_reproduces_the_transformers_loss() {
    use swallow::data::indexed_writer::IndexedWriter;
use swallow::data::token_dtype::TokenDtype;
    for name in ["llama2_gqa", "llama3_tied"] {
        let dir = fixture(name);
        let r = Reference::load(&dir);
        let (shape, toks) = r.tensor("tokens");
        let (b, t) = (shape[0], shape[1] - 1);
        let stream: Vec<u32> = r.tensor("stream").1.iter().map(|&x| x as u32).collect();
        let tmp = std::env::temp_dir().join(format!("swallow-eval-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let prefix = tmp.join("stream");
        // Two documents: the windows of the stream cross the boundary between them.
        let mut w = IndexedWriter::create(&prefix, TokenDtype::U16).unwrap();
        w.add_document(&stream[..stream.len() / 3]).unwrap();
        w.add_document(&stream[stream.len() / 3..]).unwrap();
        w.finish().unwrap();
        assert_eq!(toks.len(), b * (t + 1));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_swallow"))
            .args(["eval", "--hf", dir.to_str().unwrap(), "--data", prefix.to_str().unwrap()])
            .args(["--seq-len", &t.to_string(), "--micro-batch", &b.to_string()])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let loss = last["loss"].as_f64().unwrap();
        let ref_loss = r.tensor("loss").1[0];
        assert!(((loss - ref_loss) / ref_loss).abs() < 1e-4, "{name}: eval {loss} vs transformers {ref_loss}");
        assert_eq!(last["tokens"].as_u64().unwrap() as usize, b * t);
        assert_eq!(last["unscored_tokens"].as_u64(), Some(0), "the stream is exactly b windows: {out}");
        // One token shorter windows: the stream's (L - 1) predictions make (L - 1) / (t - 1)
        // samples, b to a micro-batch; what is left over is reported, not silently dropped.
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_swallow"))
            .args(["eval", "--hf", dir.to_str().unwrap(), "--data", prefix.to_str().unwrap()])
            .args(["--seq-len", &(t - 1).to_string(), "--micro-batch", &b.to_string()])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let predictions = stream.len() - 1;
        let scored = predictions / (t - 1) / b * b * (t - 1);
        assert_eq!(last["tokens"].as_u64().unwrap() as usize, scored, "{out}");
        assert!(predictions > scored, "the case leaves tokens over");
        assert_eq!(last["unscored_tokens"].as_u64().unwrap() as usize, predictions - scored, "{out}");
        assert!(out.contains(&format!("not scored: {} tokens", predictions - scored)), "{out}");
    }
}
