//! Finding CUDA without panicking: cudarc opens libcuda by name on first use and panics when it
//! is absent, so every use of the driver starts here (`init_driver`), which looks for the
//! library first. `choose_device` turns `--device cpu|cuda|auto` into the device a run trains on.

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

/// Where a training run computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainDevice {
    Cpu,
}

/// The device for `--device requested` (`cpu`, `cuda` or `auto`): `cuda` without CUDA is an
/// error naming what is missing; `auto` falls back to the CPU with a warning (on `warn_rank0`
/// only). A machine with CUDA still trains on the CPU, or refuses `cuda`: the CUDA training
/// backend is not implemented yet (docs/GPU_PATH.md).
pub fn choose_device(requested: &str, warn_rank0: bool) -> Result<TrainDevice> {
    let warn = |msg: String| {
        if warn_rank0 {
            log::warn!("{msg}");
        }
    };
    match requested {
        "cpu" => return Ok(TrainDevice::Cpu),
        "cuda" | "auto" => {}
        other => bail!("--device {other:?}: expected cpu, cuda or auto"),
    }
    match (requested == "cuda", init_driver()) {
        (true, Err(e)) => bail!("--device cuda: {e:#}; use --device cpu (or auto)"),
        (true, Ok(n)) => {
            bail!("--device cuda: found {n} CUDA device(s), but the CUDA training backend is not implemented yet; use --device cpu")
        }
        (false, Err(e)) => {
            warn(format!("--device auto: {e:#}; training on the CPU"));
            Ok(TrainDevice::Cpu)
        }
        (false, Ok(n)) => {
            warn(format!("--device auto: found {n} CUDA device(s), but the CUDA training backend is not implemented yet; training on the CPU"));
            Ok(TrainDevice::Cpu)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever this machine has, only `cpu` and `auto` give a device (the CUDA training backend
    /// does not exist yet) and a misspelt device is an error naming the choices.
    #[test]
    fn device_choice() {
        assert_eq!(choose_device("cpu", false).unwrap(), TrainDevice::Cpu);
        assert_eq!(choose_device("auto", false).unwrap(), TrainDevice::Cpu);
        let e = choose_device("cuda", false).unwrap_err().to_string();
        assert!(e.starts_with("--device cuda: ") && e.contains("use --device cpu"), "{e}");
        let e = choose_device("gpu", false).unwrap_err().to_string();
        assert_eq!(e, "--device \"gpu\": expected cpu, cuda or auto");
    }
}
