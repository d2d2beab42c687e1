//! The CUDA sources embedded in the binary for run-time compilation: every kernels/*.cu with the
//! kernels it defines (its `extern "C" __global__` functions) and every kernels/*.cuh header, as
//! build.rs lists them, so the binary compiles exactly the kernels the emulation build runs.

/// One kernels/*.cu file.
#[derive(Debug)]
pub struct KernelSource {
    /// The file name, e.g. `rope.cu`.
    pub file: &'static str,
    pub text: &'static str,
    /// The kernels it defines, in source order.
    pub kernels: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_file_and_header_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cu") || n.ends_with(".cuh"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = SOURCES.iter().map(|s| s.file).chain(HEADERS.iter().map(|h| h.0)).map(String::from).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        let rope = SOURCES.iter().find(|s| s.file == "rope.cu").unwrap();
        assert_eq!(rope.kernels, ["rope_fwd", "rope_bwd"]);
        assert_eq!(rope.text, std::fs::read_to_string(dir.join("rope.cu")).unwrap());
    }
}
