//! `swallow import` against independent references: the transformers models of tests/fixtures
//! (made by make_fixtures.py) imported as checkpoints give, under `swallow eval --load`, the loss
//! transformers recorded; bf16 and fp16 weights arrive as exactly their f32 values; `swallow
//! train --load` (under TP 2) starts from the imported weights (the import stores no optimizer
//! state; the first save does) and the export after it keeps the model's BOS/EOS ids; a vocabulary expansion puts every
//! old token's rows at its new id and each new token's rows at the mean of the old rows of the
//! pieces worked out by hand below; bad directories are one-line errors naming file and tensor.

mod common;

use safetensors::{Dtype, SafeTensors};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use swallow::data::indexed_writer::IndexedWriter;
use swallow::data::token_dtype::TokenDtype;

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures").join(name)
}

fn swallow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swallow")).args(args).output().unwrap()
}

/// The stderr of a command that must fail cleanly (exit 1, one `error:` line, no panic).
fn fails(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: ") && !err.contains("panicked") && !err.contains("internal error"), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every tensor of the model files (`model*.safetensors`, fp32) in `dir`, by name.
fn tensors(dir: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap();
        if file.starts_with("model") && file.ends_with(".safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            for (name, v) in SafeTensors::deserialize(&bytes).unwrap().tensors() {
                let vals = match v.dtype() {
                    Dtype::F32 => v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                    d => panic!("{name}: {d:?}"),
                };
                out.insert(name, (v.shape().to_vec(), vals));
            }
        }
    }
    out
}

/// Writes `tensors` as `dir/model.safetensors`, each encoded by `encode` as `dtype`.
fn write_safetensors(dir: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, dtype: Dtype, encode: impl Fn(f32) -> Vec<u8>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, (shape, v))| (n.clone(), shape.clone(), v.iter().flat_map(|&x| encode(x)).collect())).collect();
    let views = bytes.iter().map(|(n, shape, b)| (n.clone(), safetensors::tensor::TensorView::new(dtype, shape.clone(), b).unwrap()));
    std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(views, &None).unwrap()).unwrap();
}

/// A copy of a fixture's config.json in a new directory `name` under `root`.
fn model_dir(root: &Path, name: &str, config_from: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(fixture(config_from).join("config.json"), d.join("config.json")).unwrap();
    d
}

/// Export a checkpoint in fp32 and read its tensors back.
fn exported(ckpt: &Path, out: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    common::succeeded(&swallow(&["export", "--load", s(ckpt), "--out", s(out), "--dtype", "fp32"]), "export");
    tensors(out)
}

/// The fixture's token stream as shards (two documents): `eval` cuts it into the same windows
/// that transformers evaluated.
fn stream_shards(name: &str, dir: &Path) -> (String, usize, usize, f64) {
    let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ints = |t: &str| -> Vec<i64> { st.tensor(t).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect() };
    let stream: Vec<u32> = ints("stream").iter().map(|&x| x as u32).collect();
    let shape = st.tensor("tokens").unwrap().shape().to_vec();
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
    let prefix = dir.join(format!("{name}-stream"));
    let mut w = IndexedWriter::create(&prefix, TokenDtype::U16).unwrap();
    w.add_document(&stream[..stream.len() / 3]).unwrap();
    w.add_document(&stream[stream.len() / 3..]).unwrap();
    w.finish().unwrap();
    (s(&prefix).to_string(), shape[0], shape[1] - 1, meta["loss"].as_f64().unwrap())
}

fn eval_loss(ckpt: &Path, data: &str, b: usize, t: usize) -> f64 {
    let out = common::succeeded(&swallow(&["eval", "--load", s(ckpt), "--data", data, "--seq-len", &t.to_string(), "--micro-batch", &b.to_string()]), "eval");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    v["loss"].as_f64().unwrap()
}

#[test]
fn imported_transformers_models_give_transformers_loss_under_eval_load() {
    let dir = common::tmpdir("import", "loss");
    // Llama 2 style, one safetensors file, into a checkpoint directory; Llama 3 style (tied, RoPE
    // scaling, sharded) into a file.
    for (name, out) in [("llama2_gqa", dir.join("ck2")), ("llama3_tied", dir.join("ck3.h5"))] {
        let o = common::succeeded(&swallow(&["import", "--hf", s(&fixture(name)), "--out", s(&out)]), name);
        assert!(o.contains("step 0"), "{o}");
        let (data, b, t, reference) = stream_shards(name, &dir);
        let loss = eval_loss(&out, &data, b, t);
        assert!(((loss - reference) / reference).abs() < 1e-5, "{name}: eval --load {loss} vs transformers {reference}");
        // The weights round-trip exactly (import, then export in fp32).
        let original = tensors(&fixture(name));
        let back = exported(&out, &dir.join(format!("{name}-hf")));
        assert_eq!(back.keys().collect::<Vec<_>>(), original.keys().collect::<Vec<_>>(), "{name}");
        for (k, v) in &back {
            assert_eq!(v, &original[k], "{name}: {k}");
        }
    }
    assert_eq!(std::fs::read_to_string(dir.join("ck2/latest")).unwrap().trim(), "step-0.h5");
}

#[test]
fn half_precision_weights_import_as_their_exact_f32_values() {
    let dir = common::tmpdir("import", "dtypes");
    let original = tensors(&fixture("llama2_gqa"));
    type Codec = (Dtype, fn(f32) -> Vec<u8>, fn(f32) -> f32);
    let codecs: [(&str, Codec); 2] = [
        ("bf16", (Dtype::BF16, |x| half::bf16::from_f32(x).to_le_bytes().to_vec(), |x| half::bf16::from_f32(x).to_f32())),
        ("fp16", (Dtype::F16, |x| half::f16::from_f32(x).to_le_bytes().to_vec(), |x| half::f16::from_f32(x).to_f32())),
    ];
    for (label, (dtype, encode, round)) in codecs {
        let hf = model_dir(&dir, label, "llama2_gqa");
        write_safetensors(&hf, &original, dtype, encode);
        let ck = dir.join(format!("{label}.h5"));
        common::succeeded(&swallow(&["import", "--hf", s(&hf), "--out", s(&ck)]), label);
        let back = exported(&ck, &dir.join(format!("{label}-out")));
        for (k, (_, want)) in &original {
            let want: Vec<f32> = want.iter().map(|&x| round(x)).collect();
            assert_eq!(back[k].1, want, "{label}: {k}");
        }
    }
}

#[test]
fn training_starts_from_the_imported_weights_under_tensor_parallelism() {
    let dir = common::tmpdir("import", "train");
    let ck = dir.join("ck");
    // The fixture with special ids of its own (not transformers' defaults 1 and 2), which the
    // import keeps and a later export writes, through a run whose --config has none.
    let hf = model_dir(&dir, "hf", "llama2_gqa");
    std::fs::copy(fixture("llama2_gqa").join("model.safetensors"), hf.join("model.safetensors")).unwrap();
    let config = std::fs::read_to_string(hf.join("config.json")).unwrap();
    let config = config.replace("\"bos_token_id\": 1", "\"bos_token_id\": 3").replace("\"eos_token_id\": 2", "\"eos_token_id\": 5");
    std::fs::write(hf.join("config.json"), config).unwrap();
    common::succeeded(&swallow(&["import", "--hf", s(&hf), "--out", s(&ck)]), "import");
    // The import holds the weights only (no 12 bytes per parameter of zero moments), marked fresh.
    let groups = |file: &Path| hdf5_metno::File::open(file).unwrap().member_names().unwrap();
    let imported = ck.join("step-0.h5");
    assert!(!groups(&imported).contains(&"optimizer".to_string()), "{:?}", groups(&imported));
    let f = hdf5_metno::File::open(&imported).unwrap();
    let state = f.attr("optimizer_state").unwrap().read_scalar::<hdf5_metno::types::VarLenUnicode>().unwrap();
    assert_eq!(state.as_str(), "fresh");
    drop(f);
    let (data, _, _, _) = stream_shards("llama2_gqa", &dir);
    // The fixture's [model]; a learning rate of 0, so that the weights saved after a step under
    // TP 2 must be the imported ones, bit for bit.
    let config = dir.join("gqa.toml");
    std::fs::write(
        &config,
        "[model]\nhidden_size = 64\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\nffn_hidden_size = 160\nvocab_size = 96\n\
         max_position_embeddings = 64\nrope_theta = 10000.0\nnorm_eps = 1e-5\n\
         [train]\nseq_len = 8\nmicro_batch = 1\nglobal_batch = 2\nlr = 0.0\nmin_lr = 0.0\n",
    )
    .unwrap();
    let o = common::mpirun(2, &["train", "--config", s(&config), "--tp", "2", "--data", &data, "--steps", "1", "--save", s(&ck), "--load", "auto"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let out = common::succeeded(&o, "train");
    assert!(out.contains("resumed from") && out.contains("step-0.h5") && out.contains("AdamW moments start at zero"), "{out}");
    assert!(!err.contains("differ"), "the imported [model] must equal the fixture's: {err}");
    assert_eq!(std::fs::read_to_string(ck.join("latest")).unwrap().trim(), "step-1.h5");
    assert!(groups(&ck.join("step-1.h5")).contains(&"optimizer".to_string()), "the first save stores the moments");
    let back = exported(&ck, &dir.join("after"));
    for file in ["config.json", "generation_config.json"] {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("after").join(file)).unwrap()).unwrap();
        assert_eq!((v["bos_token_id"].as_u64(), v["eos_token_id"].as_u64()), (Some(3), Some(5)), "{file}: {v}");
    }
    for (k, v) in tensors(&fixture("llama2_gqa")) {
        assert_eq!(back[&k], v, "{k} changed with lr 0");
    }
}

/// A SentencePiece-style BPE tokenizer (Llama 2's normalizer and decoder; no byte fallback) with
/// `vocab` in id order; ids 0..3 are the special tokens.
fn metaspace_tokenizer(vocab: &[String], merges: &[(String, String)]) -> String {
    let v: serde_json::Map<String, serde_json::Value> = vocab.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let special = |id: usize, t: &str| json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null, "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": false, "ignore_merges": false,
                  "vocab": v, "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()}
    })
    .to_string()
}

#[test]
fn vocabulary_expansion_copies_old_rows_and_averages_the_old_pieces_of_new_tokens() {
    let dir = common::tmpdir("import", "vocab");
    // The old tokenizer, 96 tokens for the fixture's 96 rows: 3 specials, "▁" and a-z, "▁a".."▁z"
    // (merges ranked first), then 40 pairs consonant+vowel ("ba", "be", ..., "mo").
    let letters: Vec<String> = ('a'..='z').map(String::from).collect();
    let mut old: Vec<String> = ["<unk>", "<s>", "</s>", "▁"].iter().map(|t| t.to_string()).collect();
    old.extend(letters.iter().cloned());
    let mut merges: Vec<(String, String)> = letters.iter().map(|l| ("▁".to_string(), l.clone())).collect();
    for x in "bcdfghjklm".chars() {
        for y in "aeio".chars() {
            merges.push((x.to_string(), y.to_string()));
        }
    }
    old.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    assert_eq!(old.len(), 96);
    // The new one: the specials, three new tokens, then the old tokens in reverse order (new ids).
    let added = ["▁ab", "bab", "▁mom"];
    let mut new: Vec<String> = old[..3].to_vec();
    new.extend(added.iter().map(|t| t.to_string()));
    new.extend(old[3..].iter().rev().cloned());
    let mut new_merges = merges.clone();
    new_merges.push(("▁a".into(), "b".into()));
    new_merges.push(("ba".into(), "b".into()));
    let hf = model_dir(&dir, "hf", "llama2_gqa");
    std::fs::copy(fixture("llama2_gqa").join("model.safetensors"), hf.join("model.safetensors")).unwrap();
    std::fs::write(hf.join("tokenizer.json"), metaspace_tokenizer(&old, &merges)).unwrap();
    let new_path = dir.join("new-tokenizer.json");
    std::fs::write(&new_path, metaspace_tokenizer(&new, &new_merges)).unwrap();

    let ck = dir.join("ck");
    let out = common::succeeded(&swallow(&["import", "--hf", s(&hf), "--out", s(&ck), "--tokenizer", s(&new_path)]), "import");
    assert!(out.contains("96 -> 99") && out.contains("96 rows copied, 3 new rows"), "{out}");
    let back = exported(&ck, &dir.join("out"));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], 99);

    // By hand, with the old merges (▁x before consonant+vowel, no "ab"):
    //   "▁ab" = ▁ a b -> "▁a" b;   "bab" = b a b -> "ba" b (a word-continuation piece: no ▁);
    //   "▁mom" = ▁ m o m -> "▁m" o m ("▁m" outranks "mo", then nothing merges).
    let pieces: [&[&str]; 3] = [&["▁a", "b"], &["ba", "b"], &["▁m", "o", "m"]];
    let old_id = |t: &str| old.iter().position(|x| x == t).unwrap();
    let original = tensors(&fixture("llama2_gqa"));
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        let (shape, want_old) = &original[name];
        let h = shape[1];
        let row = |rows: &[f32], i: usize| rows[i * h..(i + 1) * h].to_vec();
        let (new_shape, got) = &back[name];
        assert_eq!(new_shape, &vec![99, h], "{name}");
        for (id, tok) in new.iter().enumerate() {
            if let Some(k) = added.iter().position(|a| a == tok) {
                let mean: Vec<f64> = (0..h)
                    .map(|j| pieces[k].iter().map(|p| want_old[old_id(p) * h + j] as f64).sum::<f64>() / pieces[k].len() as f64)
                    .collect();
                for (g, m) in row(got, id).iter().zip(&mean) {
                    assert!((*g as f64 - m).abs() < 1e-6, "{name}: row of new token {tok}: {g} vs {m}");
                }
            } else {
                assert_eq!(row(got, id), row(want_old, old_id(tok)), "{name}: token {tok} (old id {}, new id {id})", old_id(tok));
            }
        }
    }
    // The other tensors are untouched, and the expanded checkpoint evaluates.
    for (k, v) in &original {
        if !k.contains("embed_tokens") && !k.contains("lm_head") {
            assert_eq!(&back[k], v, "{k}");
        }
    }
    let (data, b, t, _) = stream_shards("llama2_gqa", &dir);
    assert!(eval_loss(&ck, &data, b, t).is_finite());
}

#[test]
fn bad_model_directories_are_errors_naming_the_file_and_tensor() {
    let dir = common::tmpdir("import", "errors");
    let original = tensors(&fixture("llama2_gqa"));
    let f32_le = |x: f32| x.to_le_bytes().to_vec();
    let import = |hf: &Path| swallow(&["import", "--hf", s(hf), "--out", s(&dir.join("out.h5"))]);

    let hf = model_dir(&dir, "missing", "llama2_gqa");
    let mut t = original.clone();
    t.remove("model.layers.1.mlp.up_proj.weight");
    write_safetensors(&hf, &t, Dtype::F32, f32_le);
    let e = fails(import(&hf));
    assert!(e.contains("missing") && e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("missing/model.safetensors"), "{e}");

    let hf = model_dir(&dir, "shape", "llama2_gqa");
    let mut t = original.clone();
    t.insert("model.norm.weight".into(), (vec![63], vec![1.0; 63]));
    write_safetensors(&hf, &t, Dtype::F32, f32_le);
    let e = fails(import(&hf));
    assert!(e.contains("shape/model.safetensors") && e.contains("model.norm.weight") && e.contains("[63]") && e.contains("[64]"), "{e}");

    let hf = model_dir(&dir, "dtype", "llama2_gqa");
    let bytes: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = original
        .iter()
        .map(|(n, (shape, v))| {
            let int = n == "model.norm.weight";
            let b = v.iter().flat_map(|&x| if int { (x as i32).to_le_bytes() } else { x.to_le_bytes() }).collect();
            (n.clone(), shape.clone(), b, if int { Dtype::I32 } else { Dtype::F32 })
        })
        .collect();
    let views = bytes.iter().map(|(n, sh, b, d)| (n.clone(), safetensors::tensor::TensorView::new(*d, sh.clone(), b).unwrap()));
    std::fs::write(hf.join("model.safetensors"), safetensors::tensor::serialize(views, &None).unwrap()).unwrap();
    let e = fails(import(&hf));
    assert!(e.contains("dtype/model.safetensors") && e.contains("model.norm.weight") && e.contains("I32"), "{e}");

    for (label, key, value) in [("arch", "architectures", json!(["MistralForCausalLM"])), ("type", "model_type", json!("mistral"))] {
        let hf = model_dir(&dir, label, "llama2_gqa");
        let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
        c[key] = value;
        std::fs::write(hf.join("config.json"), c.to_string()).unwrap();
        let e = fails(import(&hf));
        assert!(e.contains(&format!("{label}/config.json")) && e.to_lowercase().contains("mistral"), "{e}");
    }

    // --tokenizer needs the model's own tokenizer.json (the fixture has none).
    let e = fails(swallow(&["import", "--hf", s(&fixture("llama2_gqa")), "--out", s(&dir.join("x.h5")), "--tokenizer", s(&dir.join("t.json"))]));
    assert!(e.contains("llama2_gqa/tokenizer.json"), "{e}");
    // A directory that already holds checkpoints is not overwritten.
    let ck = dir.join("ck");
    common::succeeded(&swallow(&["import", "--hf", s(&fixture("llama2_gqa")), "--out", s(&ck)]), "import");
    let e = fails(swallow(&["import", "--hf", s(&fixture("llama2_gqa")), "--out", s(&ck)]));
    assert!(e.contains("already holds checkpoints"), "{e}");
}
