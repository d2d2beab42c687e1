//! Model state on disk. dist.rs: distributed checkpoints, one HDF5 file of logical tensors written
//! and read collectively through parallel HDF5 (the basis of resharding; hyperslab.rs turns a rank's
//! element ranges into HDF5 selections), with page-cache hints
//! from pagecache.rs (early write-back, read-ahead) and integrity.rs (no non-finite value
//! written or read, per-tensor checksums verified at load); format.rs: what a
//! checkpoint holds (tensor names, attributes, the completeness check); store.rs: the checkpoint
//! directory (temp file, check, rename, `latest` marker, retention, `--load` resolution; one
//! writer per directory: ../dirlock.rs); export.rs: a checkpoint read whole on one process, and written as a Hugging Face directory;
//! hf.rs: Hugging Face Llama directories (config.json + safetensors, sharded or not); import.rs:
//! a Hugging Face directory as a checkpoint, with vocabulary expansion; vocab.rs: the new
//! embedding rows of an expanded vocabulary.

pub mod dist;
pub mod export;
pub mod format;
pub mod integrity;
pub mod hf;
pub mod hyperslab;
pub mod import;
pub mod pagecache;
pub mod store;
pub mod vocab;
