//! The instruction set the kernels run on: detected once, in this one place, for the whole
//! workspace.
//!
//! `DEEPBLOCKS_ISA=portable` in the environment forces the portable kernels on any CPU (CI runs
//! the core and model tests a second time that way, so the path every non-x86 user runs is
//! tested on every commit); `DEEPBLOCKS_ISA=avx2` asks for AVX2 and gets it when the CPU has
//! AVX2, FMA and F16C, without the AVX-VNNI extension of the integer kernels, AVX-512 or the AMX tile
//! unit even where the CPU has them ([`vnni`], [`avx512`], [`amx`]; CI and the benches measure the
//! plain AVX2 kernels that way); `DEEPBLOCKS_ISA=avx512` keeps AVX-512 and VNNI but not the tile
//! unit; `DEEPBLOCKS_ISA=avx512f` keeps AVX-512 and VNNI but neither the tile unit nor the bf16
//! dot products of AVX512-BF16 ([`bf16_dot`]). Unset, empty, `auto` or any other value: the best
//! the CPU has. The variable is read on the first kernel call of the process.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that chooses the kernels' instruction set.
pub const ISA_ENV: &str = "DEEPBLOCKS_ISA";

/// A family of kernels. Every kernel has a portable version; an instruction set adds its own
/// where it pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust that compilers vectorise for the target's baseline: every CPU.
    Portable,
    /// x86-64 with AVX2, FMA and F16C (Haswell and Zen and later).
    Avx2,
}

impl Isa {
    /// `"portable"` or `"avx2+fma+f16c"`, as benchmarks print beside their figures.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2+fma+f16c",
        }
    }

    /// The best instruction set this CPU supports, whatever the environment says.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// The instruction set for a value of [`ISA_ENV`] on a CPU whose best is `detected`.
    ///
    /// ```
    /// use deepblocks_core::Isa;
    /// assert_eq!(Isa::choose(Some("portable"), Isa::Avx2), Isa::Portable);
    /// assert_eq!(Isa::choose(Some("avx2"), Isa::Portable), Isa::Portable); // not on this CPU
    /// assert_eq!(Isa::choose(None, Isa::Avx2), Isa::Avx2);
    /// ```
    pub fn choose(env: Option<&str>, detected: Isa) -> Isa {
        match env.map(str::trim) {
            Some("portable") => Isa::Portable,
            _ => detected,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The instruction set the kernels of this process use: [`Isa::detect`] unless [`ISA_ENV`]
/// (`DEEPBLOCKS_ISA`) says `portable`. Read once, on the first call.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| Isa::choose(std::env::var(ISA_ENV).ok().as_deref(), Isa::detect()))
}

/// Whether the integer kernels of block-format weights may use `vpdpbusd` on 256-bit registers,
/// in either encoding: AVX-VNNI's (Intel since Alder Lake and Sapphire Rapids, AMD since Zen 5)
/// or AVX-512 VNNI's with AVX-512 VL (Intel since Ice Lake, AMD Zen 4): the process runs the AVX2
/// kernels ([`isa`]), the CPU has one of them, and [`ISA_ENV`] does not say `avx2`. Read once,
/// on the first call.
pub fn vnni() -> bool {
    static VNNI: OnceLock<bool> = OnceLock::new();
    *VNNI.get_or_init(|| {
        let has = vnni_vex() || vnni_evex();
        vnni_choice(std::env::var(ISA_ENV).ok().as_deref(), isa(), has)
    })
}

/// Whether the f32 products that gain from wider registers (the blocked attention's
/// [`crate::matmul_strided`]) may use AVX-512F's 512-bit registers: the process runs the AVX2
/// kernels ([`isa`]), the CPU has AVX-512F (Intel since Skylake-SP, AMD since Zen 4), and
/// [`ISA_ENV`] does not say `avx2`. Read once, on the first call.
pub fn avx512() -> bool {
    static AVX512: OnceLock<bool> = OnceLock::new();
    *AVX512.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let has = is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        vnni_choice(std::env::var(ISA_ENV).ok().as_deref(), isa(), has)
    })
}

/// Whether the bf16 products of blocked attention over a bf16 cache may run on the AMX tile unit
/// ([`crate::matmul_bf16_pairs`]): [`avx512`] holds, the CPU has AMX-TILE, AMX-BF16 and
/// AVX-512BW (Intel since Sapphire Rapids), Linux grants the process the tile state when this
/// asks for it on the first call (`arch_prctl(ARCH_REQ_XCOMP_PERM)`: process-wide, it raises the
/// signal frame every thread needs), and [`ISA_ENV`] does not say `avx512` (AVX-512 without
/// the tile unit, for comparisons). Read once, on the first call.
pub fn amx() -> bool {
    static AMX: OnceLock<bool> = OnceLock::new();
    *AMX.get_or_init(|| {
        let env = std::env::var(ISA_ENV).ok();
        let without = matches!(env.as_deref().map(str::trim), Some("avx512" | "avx512f"));
        avx512() && !without && amx_granted()
    })
}

/// Whether attention over a bf16 cache may run on AVX512-BF16's `vdpbf16ps` (32 multiply-adds of
/// bf16 pairs into sixteen f32 lanes, with the queries and the probabilities rounded to bf16:
/// [`crate::bf16_rows::bf16_dot_scores`], [`crate::bf16_rows::bf16_dot_mix`]): [`avx512`] holds,
/// the CPU has AVX512-BF16 and AVX-512BW (AMD since Zen 4, Intel Cooper Lake and since Sapphire
/// Rapids), and
/// [`ISA_ENV`] does not say `avx512f` (the f32 products, for comparisons). Read once, on the
/// first call.
pub fn bf16_dot() -> bool {
    static DOT: OnceLock<bool> = OnceLock::new();
    *DOT.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let has = is_x86_feature_detected!("avx512bf16");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        let env = std::env::var(ISA_ENV).ok();
        avx512() && has && avx512bw() && env.as_deref().map(str::trim) != Some("avx512f")
    })
}

/// The CPU has the tile unit with bf16 products and the kernel lets this process use it.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_granted() -> bool {
    // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
    // SAFETY: CPUID exists on every x86-64 CPU (the call is safe from Rust 1.94, unsafe before).
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    let cpu = leaf7.edx & (1 << 22) != 0
        && leaf7.edx & (1 << 24) != 0
        && is_x86_feature_detected!("avx512bw");
    if !cpu {
        return false;
    }
    // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): 0 once the kernel has granted it.
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a system call with plain integer arguments; it changes no memory of ours.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn amx_granted() -> bool {
    false
}

/// Whether the CPU has AVX-VNNI (the VEX encoding of 256-bit `vpdpbusd`).
pub(crate) fn vnni_vex() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avxvnni");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has AVX-512 VNNI and VL (the EVEX encoding of 256-bit `vpdpbusd`).
pub(crate) fn vnni_evex() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has AVX-512BW (byte and word operations on 512-bit registers).
pub(crate) fn avx512bw() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512bw");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`vnni`] (or [`avx512`]) for a value of [`ISA_ENV`], the process's instruction set and whether
/// the CPU has the extension.
fn vnni_choice(env: Option<&str>, isa: Isa, has_vnni: bool) -> bool {
    isa == Isa::Avx2 && has_vnni && env.map(str::trim) != Some("avx2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnni_follows_the_cpu_and_the_environment() {
        assert!(vnni_choice(None, Isa::Avx2, true));
        assert!(vnni_choice(Some("auto"), Isa::Avx2, true));
        assert!(!vnni_choice(Some(" avx2 "), Isa::Avx2, true)); // plain AVX2 asked for
        assert!(!vnni_choice(None, Isa::Avx2, false)); // not on this CPU
        assert!(!vnni_choice(None, Isa::Portable, true)); // portable kernels asked for
    }
}
