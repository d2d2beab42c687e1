//! Model state on disk. hf.rs: Hugging Face Llama directories (config.json + safetensors, sharded
//! or not). Distributed HDF5 checkpoints will live beside it.

pub mod hf;
