//! Which instruction set the kernels run on, detected once at run time.

/// Whether this CPU runs the AVX2 + FMA + F16C kernels (x86-64 only).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma_f16c() -> bool {
    // std caches the CPUID result: each check is an atomic load.
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The kernel family in use on this machine: `"avx2+fma+f16c"` or `"portable"`. Benchmarks print
/// it next to their figures.
pub fn kernel_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        return "avx2+fma+f16c";
    }
    "portable"
}
