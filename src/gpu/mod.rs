//! GPU backends. A backend lists devices and picks a free slice for a session; exclusivity
//! across processes comes from the store, which hands `pick` the UUIDs already taken.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::store::GpuPick;

/// What a create asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuRequest {
    /// Nothing named: the backend's default (a CPU-only session where there are no GPUs).
    Default,
    /// A MIG profile such as `3g.20gb`, or `3g` for that compute size on any model.
    Profile(String),
    /// One exact device: a MIG instance or a whole GPU.
    Uuid(String),
}

pub trait GpuBackend: Send + Sync {
    /// The name shown in logs and `doctor`.
    fn name(&self) -> &'static str;

    /// Picks a slice not in `taken`, or `None` for a CPU-only session.
    fn pick(&self, request: &GpuRequest, taken: &HashSet<String>) -> Result<Option<GpuPick>>;

    /// A session holding `uuid` has ended.
    fn release(&self, _uuid: &str) -> Result<()> {
        Ok(())
    }
}

/// CPU-only hosts: every session gets no GPU; naming one is an error.
pub struct NoGpu;

impl GpuBackend for NoGpu {
    fn name(&self) -> &'static str {
        "none"
    }

    fn pick(&self, request: &GpuRequest, _taken: &HashSet<String>) -> Result<Option<GpuPick>> {
        match request {
            GpuRequest::Default => Ok(None),
            GpuRequest::Profile(p) => Err(Error::invalid(
                "mig_profile",
                format!(
                    "{p:?} asks for a GPU, but this host has no GPU backend (gpu backend: none)"
                ),
            )),
            GpuRequest::Uuid(u) => Err(Error::invalid(
                "mig_instance_uuid",
                format!(
                    "{u:?} asks for a GPU, but this host has no GPU backend (gpu backend: none)"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_gpu_gives_cpu_sessions_and_refuses_gpu_requests() {
        let taken = HashSet::new();
        assert_eq!(NoGpu.pick(&GpuRequest::Default, &taken).unwrap(), None);
        let e = NoGpu
            .pick(&GpuRequest::Profile("3g".into()), &taken)
            .unwrap_err();
        assert!(e.to_string().contains("\"3g\""), "{e}");
    }
}
