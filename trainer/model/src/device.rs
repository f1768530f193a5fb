//! The compute device, chosen at run time from configuration (`"cpu"`, `"cuda"`, `"cuda:1"`,
//! `"wgpu"`). `cpu` is burn's pure-Rust `flex` backend and always works; the others need the
//! matching cargo feature and say so when it is missing.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A device as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// burn's pure-Rust CPU backend (`flex`).
    Cpu,
    /// A CUDA GPU by index (feature `cuda`).
    Cuda(usize),
    /// The default wgpu adapter (feature `wgpu`).
    Wgpu,
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "wgpu" => Ok(Self::Wgpu),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => Ok(Self::Cuda(index)),
                _ => Err(format!(
                    "unknown device '{other}': use cpu, cuda, cuda:N or wgpu"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::Wgpu => f.write_str("wgpu"),
        }
    }
}

impl DeviceSpec {
    /// The burn device, or an error naming the cargo feature this binary lacks.
    pub fn device(self) -> Result<Device, String> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            Self::Cuda(index) => Ok(Device::cuda(index)),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(Default::default())),
            #[allow(unreachable_patterns)]
            other => Err(format!(
                "device '{other}' needs prefsmith built with --features {}",
                other.feature()
            )),
        }
    }

    fn feature(self) -> &'static str {
        match self {
            Self::Cpu => "(none)",
            Self::Cuda(_) => "cuda",
            Self::Wgpu => "wgpu",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda:2".parse(), Ok(DeviceSpec::Cuda(2)));
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn cpu_always_works() {
        assert!(DeviceSpec::Cpu.device().is_ok());
    }
}
