//! Finding CUDA without panicking: cudarc opens libcuda by name on first use and panics when it
//! is absent, so every use of the driver starts here (`init_driver`), which looks for the
//! library first. `choose_device` turns `--device` into the device a run trains on, and
//! `device_for_local_rank` maps a rank to its GPU.

use anyhow::{bail, Result};

/// Loads and initialises the CUDA driver; returns the number of devices (at least one).
pub fn init_driver() -> Result<usize> {
    use cudarc::driver::{result, sys};
    // SAFETY: only probes library names with dlopen.
    if !unsafe { sys::is_culib_present() } {
        bail!("no CUDA driver on this machine (libcuda.so.1 not found on the library path)");
    }
    result::init().map_err(|e| anyhow::anyhow!("the CUDA driver failed to initialise (cuInit: {e:?})"))?;
    let count = result::device::get_count().map_err(|e| anyhow::anyhow!("CUDA driver: cuDeviceGetCount: {e:?}"))?;
    if count < 1 {
        bail!("the CUDA driver reports no devices");
    }
    Ok(count as usize)
}

/// The name and total memory (bytes) of CUDA device `ordinal`.
pub fn device_info(ordinal: usize) -> Result<(String, usize)> {
    use cudarc::driver::result::device;
    init_driver()?;
    let dev = device::get(ordinal as i32).map_err(|e| anyhow::anyhow!("CUDA device {ordinal}: {e:?}"))?;
    let name = device::get_name(dev).map_err(|e| anyhow::anyhow!("CUDA device {ordinal}: cuDeviceGetName: {e:?}"))?;
    // SAFETY: `dev` is a device handle the driver just returned.
    let bytes = unsafe { device::total_mem(dev) }.map_err(|e| anyhow::anyhow!("CUDA device {ordinal}: cuDeviceTotalMem: {e:?}"))?;
    Ok((name, bytes))
}

/// Where a training run computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainDevice {
    Cpu,
    /// The CUDA backend on this rank's GPU (`DriverRuntime`).
    Cuda,
    /// The CUDA backend on its CPU emulation (`EmulatedRuntime`): every allocation, launch and
    /// GEMM of a GPU run, slowly, without a GPU (tests, debugging).
    CudaEmulated,
}

/// The devices `--device` accepts.
pub const DEVICES: &str = "cpu, cuda, auto or cuda-emulated";

/// The device for `--device requested` (`cpu`, `cuda`, `auto`, `cuda-emulated`): `cuda` without
/// CUDA is an error naming what is missing; `auto` takes CUDA when the driver reports a device,
/// else falls back to the CPU with a warning (on `warn_rank0` only).
pub fn choose_device(requested: &str, warn_rank0: bool) -> Result<TrainDevice> {
    match requested {
        "cpu" => Ok(TrainDevice::Cpu),
        "cuda-emulated" => Ok(TrainDevice::CudaEmulated),
        "cuda" => match init_driver() {
            Ok(_) => Ok(TrainDevice::Cuda),
            Err(e) => bail!("--device cuda: {e:#}; use --device cpu (or auto)"),
        },
        "auto" => match init_driver() {
            Ok(_) => Ok(TrainDevice::Cuda),
            Err(e) => {
                if warn_rank0 {
                    log::warn!("--device auto: {e:#}; training on the CPU");
                }
                Ok(TrainDevice::Cpu)
            }
        },
        other => bail!("--device {other:?}: expected {DEVICES}"),
    }
}

/// The GPU of the rank that is `local_rank` of `ranks_on_node` on its node: one GPU per rank, in
/// node-local rank order, or the only visible one when the launcher bound the rank to it
/// (jobscripts/lib/bind-gpu.sh sets CUDA_VISIBLE_DEVICES to one device per rank).
pub fn device_for_local_rank(local_rank: usize, ranks_on_node: usize) -> Result<usize> {
    let count = init_driver()?;
    pick_device(local_rank, ranks_on_node, count, std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref())
}

/// `device_for_local_rank` given the driver's device count and CUDA_VISIBLE_DEVICES.
fn pick_device(local_rank: usize, ranks_on_node: usize, count: usize, visible: Option<&str>) -> Result<usize> {
    let bound = count == 1 && visible.is_some_and(|v| !v.is_empty() && !v.contains(','));
    if bound {
        return Ok(0);
    }
    if local_rank >= count {
        bail!(
            "{ranks_on_node} ranks on this node but {count} CUDA device(s) visible: swallow runs one rank per GPU \
             (launch {count} ranks per node, e.g. mpirun --map-by ppr:{count}:node, or bind each rank to its GPU \
             with jobscripts/lib/bind-gpu.sh)"
        );
    }
    Ok(local_rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cpu` and `cuda-emulated` need nothing; `cuda` and `auto` follow the driver's presence;
    /// a misspelt device is an error naming the choices.
    #[test]
    fn one_gpu_per_rank() {
        assert_eq!(pick_device(3, 4, 4, None).unwrap(), 3);
        assert_eq!(pick_device(3, 4, 4, Some("0,1,2,3")).unwrap(), 3);
        // bind-gpu.sh: each rank sees only its own GPU.
        assert_eq!(pick_device(3, 4, 1, Some("3")).unwrap(), 0);
        assert_eq!(pick_device(0, 1, 1, None).unwrap(), 0);
        let e = pick_device(1, 2, 1, None).unwrap_err().to_string();
        assert!(e.starts_with("2 ranks on this node but 1 CUDA device(s) visible"), "{e}");
        assert!(pick_device(4, 8, 4, Some("0,1,2,3")).is_err());
    }

    #[test]
    fn device_choice() {
        assert_eq!(choose_device("cpu", false).unwrap(), TrainDevice::Cpu);
        assert_eq!(choose_device("cuda-emulated", false).unwrap(), TrainDevice::CudaEmulated);
        match init_driver() {
            Ok(_) => {
                assert_eq!(choose_device("cuda", false).unwrap(), TrainDevice::Cuda);
                assert_eq!(choose_device("auto", false).unwrap(), TrainDevice::Cuda);
            }
            Err(_) => {
                assert_eq!(choose_device("auto", false).unwrap(), TrainDevice::Cpu);
                let e = choose_device("cuda", false).unwrap_err().to_string();
                assert!(e.starts_with("--device cuda: no CUDA driver") && e.ends_with("use --device cpu (or auto)"), "{e}");
            }
        }
        let e = choose_device("gpu", false).unwrap_err().to_string();
        assert_eq!(e, "--device \"gpu\": expected cpu, cuda, auto or cuda-emulated");
    }
}
