//! Process-wide tuning of glibc's allocator for prefsmith's large, short-lived buffers.
//!
//! A training step allocates and frees the same multi-megabyte tensors (activations, logits,
//! gradients, packed matmul panels) many times. By default glibc serves every allocation above
//! its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns it to the kernel on
//! `free`, so every step faults in and zeroes those pages again: in a profile of a SmolLM2 bf16
//! step, 12 % of the time was the kernel's `clear_page`. Serving them from the
//! heap and never trimming it keeps freed pages in the process for the next step, at the cost
//! that the resident size stays at its peak until the process exits — which for a batch job
//! is what it reaches anyway.
#![allow(unsafe_code)]

/// Serves large allocations from the heap and keeps freed memory for reuse. Call once, first
/// thing in `main`. Returns whether glibc accepted both settings (it does unless it predates
/// them); on other C libraries it does nothing and returns `false`.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters and is safe to call at any
        // time; both are documented settings (mallopt(3)): no mmap-backed allocations, and a
        // trim threshold of -1, which disables trimming.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, -1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
