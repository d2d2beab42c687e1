#!/usr/bin/env python3
"""Compiles every kernels/*.cu with NVRTC for each target architecture (sm_80, sm_90) on a
machine with no GPU, then assembles the PTX with ptxas -v and prints registers, static shared memory,
stack and spills per kernel. NVRTC, the CUDA headers and ptxas come from the PyPI wheels
nvidia-cuda-nvrtc-cu12, nvidia-cuda-runtime-cu12 and nvidia-cuda-nvcc-cu12 (`make kernels`
installs them). Any compile or assembly error exits non-zero. Options match the run-time NVRTC
compile of the CUDA backend: -std=c++17, -I kernels, -I the CUDA headers."""

import ctypes
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

ARCHS = ["80", "90"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wheel_path(*parts):
    for base in sys.path:
        p = os.path.join(base, "nvidia", *parts)
        if os.path.exists(p):
            return p
    sys.exit(f"error: nvidia/{'/'.join(parts)} not found; run `make kernels` to install the CUDA wheels")


def load_nvrtc():
    lib = ctypes.CDLL(wheel_path("cuda_nvrtc", "lib", "libnvrtc.so.12"))
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    return lib


def nvrtc_ptx(nvrtc, src_path, arch, include):
    """PTX of one .cu for compute_<arch>; exits with the compile log on error."""
    prog = ctypes.c_void_p()
    src = open(src_path, "rb").read()
    check(nvrtc, nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(src_path).encode(), 0, None, None))
    opts = [f"--gpu-architecture=compute_{arch}", "-std=c++17", f"-I{os.path.join(ROOT, 'kernels')}", f"-I{include}"]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        sys.exit(f"error: NVRTC failed on {src_path} for sm_{arch}:\n{log.value.decode()}")
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(prog, ptx))
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value


def check(nvrtc, rc):
    if rc != 0:
        sys.exit(f"error: NVRTC: {nvrtc.nvrtcGetErrorString(rc).decode()}")


def ptxas_usage(ptxas, ptx, arch, tmp):
    """{kernel: (regs, smem bytes, stack bytes, spill stores, spill loads)} from ptxas -v."""
    path = os.path.join(tmp, f"k_{arch}.ptx")
    open(path, "wb").write(ptx)
    r = subprocess.run([ptxas, f"-arch=sm_{arch}", "-v", path, "-o", os.devnull], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: ptxas failed for sm_{arch}:\n{r.stderr}")
    usage, name = {}, None
    for line in r.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            usage[name] = [0, 0, int(m.group(1)), int(m.group(2)), int(m.group(3))]
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            usage.setdefault(name, [0, 0, 0, 0, 0])[0] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            usage[name][1] = int(s.group(1)) if s else 0
    return usage


def main():
    start = time.time()
    nvrtc = load_nvrtc()
    include = wheel_path("cuda_runtime", "include")
    ptxas = wheel_path("cuda_nvcc", "bin", "ptxas")
    os.chmod(ptxas, 0o755)
    sources = sorted(glob.glob(os.path.join(ROOT, "kernels", "*.cu")))
    print(f"{'file':<18} {'kernel':<26} {'arch':<6} {'regs':>5} {'smem B':>7} {'stack B':>8} {'spill st/ld B':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            for arch in ARCHS:
                usage = ptxas_usage(ptxas, nvrtc_ptx(nvrtc, src, arch, include), arch, tmp)
                for k, (regs, smem, stack, st, ld) in sorted(usage.items()):
                    print(f"{os.path.basename(src):<18} {k:<26} sm_{arch:<3} {regs:>5} {smem:>7} {stack:>8} {st:>7}/{ld:<6}")
    print(f"compiled {len(sources)} files for sm_{', sm_'.join(ARCHS)} in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
