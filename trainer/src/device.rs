//! `--device` parsing, and loading libtorch's CUDA library on demand.
//!
//! The linker drops `libtorch_cuda.so` from a binary that references none of
//! its symbols (`--as-needed`), and even a build against the full CUDA
//! libtorch then reports `Cuda::is_available() == false`. So the CUDA backend
//! is loaded at run time instead: `--device cuda` `dlopen`s `libtorch_cuda.so`
//! (which registers its kernels with the already-loaded `libtorch_cpu.so`),
//! first by name (`LD_LIBRARY_PATH`, the binary's RUNPATH), then from the
//! folder `libtorch_cpu.so` was loaded from. One binary therefore trains on
//! the CPU here and on a GPU machine whose PyTorch 2.11 provides `torch/lib`.

use std::ffi::CString;
use std::path::PathBuf;

use tch::Device;

use crate::train::TrainError;

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device, TrainError> {
    let index = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => i,
            _ => return Err(TrainError::Config(format!("unknown device '{d}': expected cpu, cuda or cuda:N"))),
        },
    };
    load_cuda_backend().map_err(|e| TrainError::Config(format!("--device {name}: {e}")))?;
    let n = tch::Cuda::device_count();
    if n <= 0 {
        return Err(TrainError::Config(format!(
            "--device {name}: libtorch's CUDA backend is loaded but sees no GPU (driver missing or no device visible)"
        )));
    }
    if index as i64 >= n {
        return Err(TrainError::Config(format!("--device {name}: only {n} CUDA device(s) visible")));
    }
    Ok(Device::Cuda(index))
}

/// Folder of the `libtorch_cpu.so` this process mapped, from /proc/self/maps.
fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libtorch_cpu.so")).and_then(|p| PathBuf::from(p).parent().map(PathBuf::from))
}

fn dlopen(name: &str) -> Result<(), String> {
    let c = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: dlopen/dlerror with a valid NUL-terminated string; the handle is
    // deliberately kept open for the life of the process.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if h.is_null() {
            let e = libc::dlerror();
            return Err(if e.is_null() { "dlopen failed".into() } else { std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned() });
        }
    }
    Ok(())
}

/// Loads `libtorch_cuda.so` once (idempotent: dlopen reference-counts).
pub fn load_cuda_backend() -> Result<(), String> {
    let first = match dlopen("libtorch_cuda.so") {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let dir = libtorch_dir().ok_or_else(|| format!("cannot load libtorch_cuda.so ({first}) and libtorch_cpu.so's folder is unknown"))?;
    let path = dir.join("libtorch_cuda.so");
    if !path.exists() {
        return Err(format!(
            "{} does not exist: this libtorch is a CPU-only build; put a CUDA PyTorch 2.11's torch/lib on LD_LIBRARY_PATH",
            path.display()
        ));
    }
    dlopen(&path.to_string_lossy()).map_err(|e| format!("loading {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_bad_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown device 'tpu'"), "{e}");
        assert!(parse_device("cuda:x").is_err());
    }

    /// On a machine without a GPU, `cuda` fails with an error that says why;
    /// on one with a GPU it yields a CUDA device that can hold a tensor.
    #[test]
    fn cuda_is_loaded_or_explained() {
        match parse_device("cuda") {
            Ok(d) => {
                let t = tch::Tensor::ones([2], (tch::Kind::Float, d));
                assert_eq!(t.device(), d);
            }
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("--device cuda:"), "{e}");
                assert!(e.contains("sees no GPU") || e.contains("libtorch_cuda"), "{e}");
            }
        }
    }
}
