//! Running a whole computation on rayon's pool.
//!
//! Every parallel loop started from a thread outside the pool (a program's main thread) is
//! handed to the pool and waited for: the caller sleeps and must be woken when the loop ends.
//! On a 2-vCPU virtual machine that round trip measured 16 µs for an empty loop and 18–61 µs
//! for a loop of 2 × 5 µs of work, against 6 µs for the same loop started from a pool thread
//! (docs/performance.md, "Parallel loops started on the pool"). A layer's decode step runs a few
//! dozen such loops, so the blocks' public entry points that run several of them ([`on_pool`])
//! cross into the pool once and start their loops from there.

/// Runs `f` on a thread of rayon's current pool and returns what it returns: directly when the
/// caller is already one of the pool's threads, otherwise handed to the pool once (the caller
/// waits), so that the parallel loops inside `f` start from a pool thread.
///
/// ```
/// use deepblocks_core::on_pool;
/// let on_a_pool_thread = on_pool(|| rayon::current_thread_index().is_some());
/// assert!(on_a_pool_thread);
/// ```
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

#[cfg(test)]
mod tests {
    use super::on_pool;
    use rayon::prelude::*;

    #[test]
    fn runs_on_the_pool_and_returns_the_result() {
        assert_eq!(rayon::current_thread_index(), None);
        let (inside, sum) = on_pool(|| {
            let sum: u64 = (0..1000u64).into_par_iter().sum();
            (rayon::current_thread_index(), sum)
        });
        assert!(inside.is_some());
        assert_eq!(sum, 499_500);
    }

    #[test]
    fn runs_in_place_on_a_pool_thread() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool");
        pool.install(|| {
            let here = rayon::current_thread_index();
            assert!(here.is_some());
            assert_eq!(on_pool(rayon::current_thread_index), here);
        });
    }

    #[test]
    fn borrows_and_mutates_the_callers_data() {
        let mut v = vec![1.0f32; 64];
        let scale = 3.0;
        on_pool(|| v.par_iter_mut().for_each(|x| *x *= scale));
        assert!(v.iter().all(|&x| x == 3.0));
    }
}
