# swallow: set-up, demo, tests, benchmarks. `make demo` and `make test` are the README's two commands.
SHELL := /bin/bash
.DEFAULT_GOAL := help

APT_PACKAGES := openmpi-bin libopenmpi-dev libclang-dev clang pkg-config libhdf5-openmpi-dev python3 python3-venv shellcheck
# NVRTC, the CUDA headers and ptxas for `make kernels` (no GPU needed), in a venv under out/;
# and NCCL, whose wheel installs only libnccl.so.2, the name swallow's loader must find (the
# tests load it and make unique ids; communicators need a GPU).
CUDA_WHEELS := nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86 nvidia-nccl-cu12==2.19.3
CUDA_VENV := out/cuda-tools
BIN := target/release/swallow
SAMPLE_PREFIX := out/sample/sample_text_document
# mpirun refuses to run as root unless told; CI and these machines run as root.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export HDF5_DIR := /usr/lib/x86_64-linux-gnu/hdf5/openmpi

.PHONY: help setup build demo test kernels gpu-check-bin gpu-check sample-data fixtures bench bench-parallel bench-prep bench-corpus parallel-matrix clean

help:
	@echo "make demo   - install what is missing, prepare the sample corpus, train the tiny model (CPU, mpirun)"
	@echo "make test   - install what is missing, run the test suite"
	@echo "make kernels - compile every CUDA kernel with NVRTC for sm_80/sm_90, print registers/smem/spills"
	@echo "make gpu-check-bin - the GPU check's binaries at out/gpu/ (kernel conformance, swallow-gpu-bench)"
	@echo "make gpu-check - on a GPU machine, with out/gpu/ from gpu-check-bin: scripts/gpu-check.sh (no Rust needed)"
	@echo "make bench  - swallow bench cpu and the PyTorch peer, side by side (needs torch + transformers)"
	@echo "make sample-data - rebuild data/sample/tokenizer.json from the sample corpus"
	@echo "make fixtures    - regenerate the transformers fixtures (needs torch + transformers)"
	@echo "make parallel-matrix - every 8-rank layout x ZeRO x schedule x SP against the single-rank run"
	@echo "make bench-parallel  - tokens/s and per-group traffic of 1/2/4/8-rank layouts"
	@echo "make bench-prep      - swallow prep vs the preprocess_data.py recipe on 200 MB (sample, Llama 2, Llama 3 kinds), and swallow bench data"
	@echo "make bench-corpus    - swallow corpus vs the Python pipeline (warcio, trafilatura, datasketch) on 2,000 WARC pages, one core each"

# Idempotent: installs only the Debian packages that are missing.
setup:
	@command -v cargo >/dev/null || { echo "error: no Rust toolchain (cargo) found; install it with rustup first" >&2; exit 1; }
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

build: setup
	cargo build --release

$(SAMPLE_PREFIX).idx: build data/sample/ja.jsonl data/sample/en.jsonl data/sample/tokenizer.json
	@mkdir -p out/sample
	$(BIN) prep --tokenizer data/sample/tokenizer.json --input data/sample/ja.jsonl data/sample/en.jsonl \
		--output $(SAMPLE_PREFIX) --append-eod

demo: build $(SAMPLE_PREFIX).idx
	$(BIN) data inspect $(SAMPLE_PREFIX) --vocab-size 4096
	@rm -f out/demo/metrics.jsonl
	mpirun -np 1 $(BIN) train --config tiny --data $(SAMPLE_PREFIX) --metrics out/demo/metrics.jsonl
	@echo "metrics: out/demo/metrics.jsonl ($$(wc -l < out/demo/metrics.jsonl) steps)"

# `make kernels` installed NVRTC, so the run-time compilation tests must find it (not skip).
# One test at a time: OpenMPI 4 processes of one user share the session directory
# /tmp/ompi.HOST.UID, and one job's clean-up can remove it while another job starts, failing that
# start ("orte_session_dir failed"); the tests that start MPI jobs must not overlap.
test: setup kernels
	SWALLOW_REQUIRE_NVRTC=1 cargo test --release -- --test-threads=1

# The GPU check's binaries at fixed paths, to carry to a GPU machine without Rust, MPI or HDF5
# and run there with scripts/gpu-check.sh (both link only libc and libstdc++; checked here).
gpu-check-bin: setup
	@bin=$$(cargo test --release --test kernel_conformance --no-run 2>&1 | tee /dev/stderr | sed -n 's/.*Executable .*(\(.*\))$$/\1/p'); \
	[ -x "$$bin" ] || { echo "error: cargo printed no test executable" >&2; exit 1; }; \
	cargo build --release --bin swallow-gpu-bench && mkdir -p out/gpu && \
	cp "$$bin" out/gpu/kernel_conformance.tmp && mv out/gpu/kernel_conformance.tmp out/gpu/kernel_conformance && \
	cp target/release/swallow-gpu-bench out/gpu/swallow-gpu-bench.tmp && mv out/gpu/swallow-gpu-bench.tmp out/gpu/swallow-gpu-bench && \
	for b in out/gpu/kernel_conformance out/gpu/swallow-gpu-bench; do \
		if ldd $$b | grep -qE 'libmpi|libhdf5'; then echo "error: $$b links MPI or HDF5" >&2; exit 1; fi; \
	done; ls -l out/gpu

# On the GPU machine (after gpu-check-bin here): conformance, then the training benchmark.
gpu-check:
	scripts/gpu-check.sh

# Idempotent: the venv and the pinned wheels are installed once; compile errors fail the target.
kernels: setup
	@[ -x $(CUDA_VENV)/bin/python ] || python3 -m venv $(CUDA_VENV)
	@$(CUDA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(CUDA_WHEELS)
	$(CUDA_VENV)/bin/python scripts/compile_kernels.py

sample-data:
	cargo run --release --example build_tokenizer

fixtures:
	python3 tests/fixtures/make_fixtures.py

bench: build
	@mkdir -p out
	$(BIN) bench cpu | tee out/bench-swallow.txt
	python3 scripts/bench_pytorch.py | tee out/bench-pytorch.txt

bench-parallel: build $(SAMPLE_PREFIX).idx
	scripts/bench_parallel.sh

# The Python peer of bench-prep (Megatron's preprocess_data.py recipe) and the tokenizer builders.
BENCH_VENV := out/bench-venv
BENCH_WHEELS := torch==2.15.0 megatron-core==0.16.1 numpy==2.4.6 tokenizers==0.22.2 sentencepiece==0.2.3 transformers==4.57.6 protobuf==7.36.2
# Debian's Japanese and English documentation: the real text the tokenizers are trained and measured on.
DOC_PACKAGES := debian-reference-ja developers-reference-ja debian-policy-ja aptitude-doc-ja maint-guide-ja debian-faq-ja manpages-ja manpages-ja-dev \
	debian-reference-en developers-reference debian-policy aptitude-doc-en maint-guide debian-faq manpages manpages-dev

out/corpus/ja.jsonl out/corpus/en.jsonl:
	@missing=$$(for p in $(DOC_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@mkdir -p out/corpus
	python3 scripts/tokenizer_corpus.py --lang ja --out out/corpus/ja.jsonl
	python3 scripts/tokenizer_corpus.py --lang en --out out/corpus/en.jsonl

bench-prep: build out/corpus/ja.jsonl
	@[ -x $(BENCH_VENV)/bin/python ] || python3 -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(BENCH_WHEELS)
	@mkdir -p out
	$(BENCH_VENV)/bin/python scripts/bench_prep.py --mb 200 --workers 2 | tee out/bench-prep.txt
	$(BIN) bench data | tee -a out/bench-prep.txt

# The Python peer of bench-corpus (scripts/corpus_peer.py): the libraries the corpus fixtures were
# made with (tests/fixtures/corpus/make_fixtures.py), plus MinHash/LSH, zstd and charset detection.
CORPUS_VENV := out/corpus-venv
CORPUS_WHEELS := warcio==1.8.2 trafilatura==2.3.1 lxml==6.2.1 lxml_html_clean==0.4.7 datasketch==2.0.0 numpy==2.4.6 scipy==1.17.1 zstandard==0.25.0 charset_normalizer==3.5.3

bench-corpus: build
	@[ -x $(CORPUS_VENV)/bin/python ] || python3 -m venv $(CORPUS_VENV)
	@$(CORPUS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(CORPUS_WHEELS)
	@mkdir -p out
	set -o pipefail; $(CORPUS_VENV)/bin/python scripts/bench_corpus.py --files 4 --records 500 | tee out/bench-corpus.txt

parallel-matrix: build $(SAMPLE_PREFIX).idx
	scripts/parallel_matrix.sh

clean:
	cargo clean
	rm -rf out
