//! Host-to-device copies of whole weight slices (offloaded experts): host memory the device
//! copies from at link speed ([`HostBytes`], page-locked on CUDA), and a copy into one slot of a
//! device tensor in place ([`KernelBackend::upload_slot`](crate::KernelBackend::upload_slot)).
//! [`reference`] is the plain-burn path every backend has; [`cuda`] queues the copies on a copy
//! stream of their own.
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod reference;

/// Bytes in host memory: pageable, or page-locked (CUDA) so a copy runs at the link's speed
/// without a staging pass and overlaps the kernels.
pub struct HostBytes(Storage);

enum Storage {
    Pageable(Vec<u8>),
    #[cfg(feature = "cuda")]
    Pinned(cudarc::driver::PinnedHostSlice<u8>),
}

impl HostBytes {
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Storage::Pageable(v) => v,
            #[cfg(feature = "cuda")]
            Storage::Pinned(p) => p.as_slice().expect("page-locked host memory is readable"),
        }
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Storage::Pageable(v) => v.len(),
            #[cfg(feature = "cuda")]
            Storage::Pinned(p) => p.num_bytes(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bytes are page-locked.
    pub fn is_pinned(&self) -> bool {
        !matches!(self.0, Storage::Pageable(_))
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn pinned(&self) -> Option<&cudarc::driver::PinnedHostSlice<u8>> {
        match &self.0 {
            Storage::Pinned(p) => Some(p),
            Storage::Pageable(_) => None,
        }
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn from_pinned(p: cudarc::driver::PinnedHostSlice<u8>) -> Self {
        HostBytes(Storage::Pinned(p))
    }
}

impl From<Vec<u8>> for HostBytes {
    fn from(v: Vec<u8>) -> Self {
        HostBytes(Storage::Pageable(v))
    }
}

impl std::fmt::Debug for HostBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_pinned() {
            "page-locked"
        } else {
            "pageable"
        };
        write!(f, "HostBytes({} bytes, {kind})", self.len())
    }
}
