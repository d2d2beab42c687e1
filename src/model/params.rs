//! The one table of parameters. Each parameter is declared once, under its Hugging Face name, with
//! its logical (unsharded) shape, its tensor-parallel shard kind, its init and whether weight decay
//! applies. Init, TP slicing, ZeRO partitioning, grad-norm de-duplication, checkpoints and HF
//! import/export all derive from this table.

use crate::config::ModelConfig;

/// How a parameter is split across tensor-parallel ranks (Megatron's column/row/vocab parallel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardKind {
    /// Same full tensor on every TP rank (norm weights).
    Replicated,
    /// Split along dim 0, the output features (`[out, in]` layout): q/k/v, gate, up.
    Column,
    /// Split along dim 1, the input features: o_proj, down_proj.
    Row,
    /// Split along dim 0, the vocabulary: embedding and LM head, padded to a multiple of
    /// `divisible_by` x TP rows (Megatron's make-vocab-size-divisible-by).
    Vocab { divisible_by: usize },
    /// k/v projections of `kv_heads` heads: column-parallel by whole heads; with more TP ranks
    /// than KV heads each rank holds one head, replicated on `tp / kv_heads` consecutive ranks.
    KvHeads { kv_heads: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitKind {
    /// normal(0, init_std)
    Normal,
    /// all ones (RMSNorm weights)
    Ones,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    /// Logical shape as Hugging Face stores it (`[out_features, in_features]` for linears).
    pub shape: Vec<usize>,
    pub shard: ShardKind,
    pub init: InitKind,
    pub weight_decay: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Shape of a tensor-parallel rank's shard among `tp` (dim 0 of vocab-parallel tensors is
    /// padded; see `padded_vocab`).
    pub fn local_shape(&self, tp: usize) -> Vec<usize> {
        let mut s = self.shape.clone();
        match self.shard {
            ShardKind::Replicated => {}
            ShardKind::Column => s[0] /= tp,
            ShardKind::KvHeads { kv_heads } => s[0] /= tp.min(kv_heads),
            ShardKind::Row => s[1] /= tp,
            ShardKind::Vocab { divisible_by } => s[0] = padded_vocab(s[0], tp, divisible_by) / tp,
        }
        s
    }

    /// How many consecutive TP ranks hold the same shard (1 unless KV heads are replicated).
    pub fn replicas(&self, tp: usize) -> usize {
        match self.shard {
            ShardKind::Replicated => tp,
            ShardKind::KvHeads { kv_heads } if tp > kv_heads => tp / kv_heads,
            _ => 1,
        }
    }

    /// Whether TP rank `rank`'s copy counts in the global gradient norm (one copy of each
    /// replicated shard counts).
    pub fn counted_on(&self, tp: usize, rank: usize) -> bool {
        rank % self.replicas(tp) == 0
    }

    /// The flat row-major global element ranges (of the padded logical tensor) that make up rank
    /// `rank`'s shard, in the shard's own row-major order.
    pub fn local_ranges(&self, tp: usize, rank: usize) -> Vec<std::ops::Range<u64>> {
        let local = self.local_shape(tp);
        let n: usize = local.iter().product();
        match self.shard {
            ShardKind::Replicated => vec![0..n as u64],
            ShardKind::Column | ShardKind::Vocab { .. } | ShardKind::KvHeads { .. } => {
                let start = ((rank / self.replicas(tp)) * n) as u64;
                vec![start..start + n as u64]
            }
            ShardKind::Row => {
                let (rows, cols, full) = (local[0] as u64, local[1] as u64, self.shape[1] as u64);
                (0..rows).map(|r| r * full + rank as u64 * cols..r * full + (rank as u64 + 1) * cols).collect()
            }
        }
    }
}

/// Vocabulary rows including padding: the next multiple of `divisible_by` x `tp` (padding rows
/// are never looked up, their logits are excluded from the loss, and checkpoints and exports
/// leave them out).
pub fn padded_vocab(vocab: usize, tp: usize, divisible_by: usize) -> usize {
    let unit = tp * divisible_by.max(1);
    vocab.div_ceil(unit) * unit
}

/// Indices into the table of one decoder layer's parameters.
#[derive(Clone, Copy, Debug)]
pub struct LayerIds {
    pub input_norm: usize,
    pub q: usize,
    pub k: usize,
    pub v: usize,
    pub o: usize,
    pub post_norm: usize,
    pub gate: usize,
    pub up: usize,
    pub down: usize,
}

impl LayerIds {
    /// Every parameter of the layer.
    pub fn all(&self) -> [usize; 9] {
        [self.input_norm, self.q, self.k, self.v, self.o, self.post_norm, self.gate, self.up, self.down]
    }
}

#[derive(Clone, Debug)]
pub struct ParamTable {
    pub specs: Vec<ParamSpec>,
    pub embed: usize,
    pub layers: Vec<LayerIds>,
    pub final_norm: usize,
    /// Equal to `embed` when the embeddings are tied.
    pub lm_head: usize,
}

impl ParamTable {
    pub fn llama(m: &ModelConfig) -> ParamTable {
        let mut specs = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, shard: ShardKind| {
            let init = if shape.len() == 1 { InitKind::Ones } else { InitKind::Normal };
            let weight_decay = shape.len() > 1;
            specs.push(ParamSpec { name, shape, shard, init, weight_decay });
            specs.len() - 1
        };
        let (h, f, v) = (m.hidden_size, m.ffn_hidden_size, m.vocab_size);
        let d = m.head_dim();
        let q_out = m.num_heads * d;
        let kv_out = m.num_kv_heads * d;
        let kv = ShardKind::KvHeads { kv_heads: m.num_kv_heads };
        let vocab = ShardKind::Vocab { divisible_by: m.vocab_divisible_by };
        let embed = add("model.embed_tokens.weight".into(), vec![v, h], vocab);
        let mut layers = Vec::with_capacity(m.num_layers);
        for i in 0..m.num_layers {
            let p = format!("model.layers.{i}");
            layers.push(LayerIds {
                input_norm: add(format!("{p}.input_layernorm.weight"), vec![h], ShardKind::Replicated),
                q: add(format!("{p}.self_attn.q_proj.weight"), vec![q_out, h], ShardKind::Column),
                k: add(format!("{p}.self_attn.k_proj.weight"), vec![kv_out, h], kv),
                v: add(format!("{p}.self_attn.v_proj.weight"), vec![kv_out, h], kv),
                o: add(format!("{p}.self_attn.o_proj.weight"), vec![h, q_out], ShardKind::Row),
                post_norm: add(format!("{p}.post_attention_layernorm.weight"), vec![h], ShardKind::Replicated),
                gate: add(format!("{p}.mlp.gate_proj.weight"), vec![f, h], ShardKind::Column),
                up: add(format!("{p}.mlp.up_proj.weight"), vec![f, h], ShardKind::Column),
                down: add(format!("{p}.mlp.down_proj.weight"), vec![h, f], ShardKind::Row),
            });
        }
        let final_norm = add("model.norm.weight".into(), vec![h], ShardKind::Replicated);
        let lm_head = if m.tie_embeddings {
            embed
        } else {
            add("lm_head.weight".into(), vec![v, h], vocab)
        };
        ParamTable { specs, embed, layers, final_norm, lm_head }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// Total number of (unique) parameters.
    pub fn numel(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Parameters that enter the FLOP count (PaLM's N): all but the input embedding, with the LM
    /// head counted even when it is tied to the embedding.
    pub fn numel_for_flops(&self) -> usize {
        let lm = self.specs[self.lm_head].numel();
        let tied_extra = if self.lm_head == self.embed { lm } else { 0 };
        self.numel() - self.specs[self.embed].numel() + tied_extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn llama2_7b_has_the_published_parameter_count() {
        let c = Config::load("llama2-7b", &[]).unwrap();
        let t = ParamTable::llama(&c.model);
        // Llama 2 7B: 6,738,415,616 parameters (HF model card / sum of safetensors shapes).
        assert_eq!(t.numel(), 6_738_415_616);
        assert_eq!(t.specs.len(), 2 + 32 * 9 + 1);
        assert_eq!(t.specs[t.layers[3].k].name, "model.layers.3.self_attn.k_proj.weight");
    }

    #[test]
    fn tensor_parallel_shards_tile_the_logical_tensor() {
        let mut c = Config::load("tiny", &[]).unwrap().model;
        c.vocab_size = 4097; // not a multiple of tp: one padding row at tp 2
        let t = ParamTable::llama(&c);
        for spec in &t.specs {
            let total: u64 = match spec.shard {
                ShardKind::Vocab { divisible_by } => (padded_vocab(spec.shape[0], 2, divisible_by) * spec.shape[1]) as u64,
                _ => spec.numel() as u64,
            };
            let mut covered: Vec<u64> = (0..2)
                .flat_map(|r| spec.local_ranges(2, r))
                .flat_map(|rg| rg.collect::<Vec<_>>())
                .collect();
            let per_rank: usize = spec.local_shape(2).iter().product();
            if spec.shard == ShardKind::Replicated {
                assert_eq!(covered.len(), 2 * per_rank);
                continue;
            }
            assert_eq!(covered.len(), 2 * per_rank, "{}", spec.name);
            covered.sort_unstable();
            assert_eq!(covered, (0..total).collect::<Vec<_>>(), "{}", spec.name);
        }
        // 2 KV heads over 4 ranks: ranks 0, 1 hold head 0 and ranks 2, 3 head 1.
        let k = &t.specs[t.layers[0].k];
        assert_eq!(k.local_shape(4), vec![32, 128]);
        assert_eq!(k.local_ranges(4, 1), vec![0..32 * 128]);
        assert_eq!(k.local_ranges(4, 2), vec![32 * 128..64 * 128]);
        assert!(k.counted_on(4, 2) && !k.counted_on(4, 3) && k.counted_on(2, 1));
        let o = &t.specs[t.layers[0].o];
        assert_eq!(o.local_shape(2), vec![128, 64]);
        assert_eq!(o.local_ranges(2, 1)[1], 128 + 64..256);
        assert_eq!(t.specs[t.embed].local_shape(2), vec![2049, 128]);
    }

    #[test]
    fn llama3_70b_gqa_shapes_and_tying() {
        let c = Config::load("llama3-70b", &[]).unwrap();
        let t = ParamTable::llama(&c.model);
        assert_eq!(t.specs[t.layers[0].k].shape, vec![1024, 8192]);
        // Llama 3 70B: 70,553,706,496 parameters.
        assert_eq!(t.numel(), 70_553_706_496);
        let tied = Config::load("tiny", &["model.tie_embeddings=true".into()]).unwrap();
        let tt = ParamTable::llama(&tied.model);
        assert_eq!(tt.lm_head, tt.embed);
        assert!(tt.index_of("lm_head.weight").is_none());
    }
}
