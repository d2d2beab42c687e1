//! The parts of a tokenizer.json around the model that a fast encoder must reproduce: the special
//! tokens the post-processor puts around a document (TemplateProcessing's single template, e.g.
//! Llama's `<s>` or Llama 3's `<|begin_of_text|>`; ByteLevel's offsets-only step), and the added
//! tokens, whose text inside a document `tokenizers` splits out before anything else. A fast
//! encoder does not split them itself: a document containing one goes to `tokenizers` whole
//! ([`AddedTokens::found_in`]).

use aho_corasick::AhoCorasick;
use serde_json::Value;

/// Ids the post-processor puts before and after a single sequence.
#[derive(Debug, Default, PartialEq)]
pub struct Template {
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
}

impl Template {
    /// The template of tokenizer.json `v`'s post-processor, or why it is not handled.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let pp = &v["post_processor"];
        let steps: Vec<&Value> = match pp["type"].as_str() {
            None if pp.is_null() => vec![],
            Some("Sequence") => pp["processors"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
            _ => vec![pp],
        };
        let mut out = Template::default();
        let mut templates = 0;
        for p in steps {
            match p["type"].as_str() {
                Some("ByteLevel") => {} // offsets only
                Some("TemplateProcessing") => {
                    templates += 1;
                    out = Self::single(p)?;
                }
                t => return Err(format!("post-processor {}", t.unwrap_or("?"))),
            }
        }
        if templates > 1 {
            return Err("two TemplateProcessing post-processors".into());
        }
        Ok(out)
    }

    fn single(p: &Value) -> Result<Self, String> {
        let items = p["single"].as_array().ok_or("TemplateProcessing without a single template")?;
        let mut out = Template::default();
        let mut seen_a = false;
        for item in items {
            if let Some(s) = item.get("Sequence") {
                if s["id"] != "A" || seen_a {
                    return Err(format!("TemplateProcessing single item {item}"));
                }
                seen_a = true;
            } else if let Some(name) = item["SpecialToken"]["id"].as_str() {
                let ids = p["special_tokens"][name]["ids"]
                    .as_array()
                    .ok_or_else(|| format!("TemplateProcessing special token {name:?} has no ids"))?
                    .iter()
                    .map(|i| i.as_u64().map(|i| i as u32).ok_or_else(|| format!("TemplateProcessing special token {name:?}: bad id {i}")))
                    .collect::<Result<Vec<u32>, String>>()?;
                if seen_a { &mut out.suffix } else { &mut out.prefix }.extend(ids);
            } else {
                return Err(format!("TemplateProcessing single item {item}"));
            }
        }
        if !seen_a {
            return Err("TemplateProcessing single template without $A".into());
        }
        Ok(out)
    }
}

/// Texts whose presence in a document sends it to `tokenizers`.
pub struct AddedTokens {
    finder: Option<AhoCorasick>,
}

impl AddedTokens {
    /// From tokenizer.json `v`'s added tokens. `changed_by_normalizer`: characters the
    /// normalization may introduce (a token matched after normalization is looked for by its
    /// longest run without them, which the raw text must then contain); `Err` when a token has no
    /// such run.
    pub fn from_json(v: &Value, changed_by_normalizer: &[char]) -> Result<Self, String> {
        let mut texts = Vec::new();
        for t in v["added_tokens"].as_array().into_iter().flatten() {
            let content = t["content"].as_str().unwrap_or("");
            if content.is_empty() {
                continue;
            }
            if t["normalized"] == true && !changed_by_normalizer.is_empty() {
                let run = content
                    .split(|c| changed_by_normalizer.contains(&c))
                    .max_by_key(|r| r.len())
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| format!("added token {content:?} is matched after normalization"))?;
                texts.push(run.to_string());
            } else {
                texts.push(content.to_string());
            }
        }
        let finder = if texts.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&texts).map_err(|e| format!("added tokens: {e}"))?)
        };
        Ok(AddedTokens { finder })
    }

    pub fn found_in(&self, text: &str) -> bool {
        self.finder.as_ref().is_some_and(|f| f.is_match(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_give_prefix_and_suffix() {
        let v = serde_json::json!({"post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "trim_offsets": false},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                        {"SpecialToken": {"id": "</s>", "type_id": 0}}],
             "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                                            "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}]}});
        assert_eq!(Template::from_json(&v).unwrap(), Template { prefix: vec![1], suffix: vec![2] });
        let bert = serde_json::json!({"post_processor": {"type": "BertProcessing"}});
        assert!(Template::from_json(&bert).unwrap_err().contains("BertProcessing"));
    }

    #[test]
    fn normalized_added_tokens_are_found_by_their_unchanged_run() {
        let v = serde_json::json!({"added_tokens": [
            {"content": "<s>", "normalized": false}, {"content": "▁Hello▁world", "normalized": true}]});
        let a = AddedTokens::from_json(&v, &['▁', ' ']).unwrap();
        assert!(a.found_in("say <s>") && a.found_in("Hello world") && !a.found_in("Hello"));
        let only_space = serde_json::json!({"added_tokens": [{"content": "▁▁", "normalized": true}]});
        assert!(AddedTokens::from_json(&only_space, &['▁', ' ']).is_err());
    }
}
