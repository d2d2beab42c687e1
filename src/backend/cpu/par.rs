//! Parallel and SIMD plumbing shared by the CPU kernels: how a buffer is cut into rayon tasks
//! (chunks big enough to amortise scheduling, small buffers stay on the calling thread), a raw
//! pointer that may cross threads for provably disjoint writes, and `simd_fn!`, which compiles
//! a kernel twice (baseline x86-64 and AVX2+FMA) and picks the best at run time, so loops
//! written plainly auto-vectorise 8-wide without `-C target-cpu`.

/// Elements below which an elementwise op runs serially, and the smallest chunk of a task.
pub const MIN_CHUNK: usize = 32 * 1024;

/// Chunk length (a multiple of `align`) cutting `len` elements into a few tasks per thread.
pub fn chunk_len(len: usize, align: usize) -> usize {
    let tasks = 4 * rayon::current_num_threads();
    let c = len.div_ceil(tasks).max(MIN_CHUNK);
    c.div_ceil(align.max(1)) * align.max(1)
}

/// Rows per task for row-wise ops over `[rows, dim]`.
pub fn rows_per_task(rows: usize, dim: usize) -> usize {
    (chunk_len(rows * dim.max(1), dim.max(1)) / dim.max(1)).clamp(1, rows.max(1))
}

/// A pointer that may be shared across rayon tasks which write disjoint elements.
#[derive(Clone, Copy)]
pub struct SyncPtr<T>(*mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    pub fn new(p: *mut T) -> Self {
        SyncPtr(p)
    }
    /// The raw pointer (a method, so closures capture the whole `SyncPtr`).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// Defines `fn name<T: Real>(args) -> ret` whose body is compiled for baseline x86-64 and for
/// AVX2+FMA, dispatching on CPU features at run time (cached by std).
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$T:ident: Real>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: Real>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$T: Real>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<$T: Real>($($arg: $ty),*) $(-> $ret)? { body::<$T>($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features the function was compiled for.
                    return unsafe { avx2::<$T>($($arg),*) };
                }
            }
            body::<$T>($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// Sum of `f(x[i])` with 16 independent accumulators (vectorises; the order is fixed by
/// the length alone, so results are reproducible).
#[inline(always)]
pub fn lane_sum<T: super::Real>(x: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for i in 0..16 {
            acc[i] += f(c[i]);
        }
    }
    let mut tail = T::zero();
    for &v in it.remainder() {
        tail += f(v);
    }
    pairwise16(acc) + tail
}

/// Sum of `f(x[i], y[i])` over two equal-length slices, 16 accumulators.
#[inline(always)]
pub fn lane_sum2<T: super::Real>(x: &[T], y: &[T], f: impl Fn(T, T) -> T) -> T {
    debug_assert_eq!(x.len(), y.len());
    let mut acc = [T::zero(); 16];
    let mut ix = x.chunks_exact(16);
    let mut iy = y.chunks_exact(16);
    for (a, b) in (&mut ix).zip(&mut iy) {
        for i in 0..16 {
            acc[i] += f(a[i], b[i]);
        }
    }
    let mut tail = T::zero();
    for (&a, &b) in ix.remainder().iter().zip(iy.remainder()) {
        tail += f(a, b);
    }
    pairwise16(acc) + tail
}

/// Maximum of a slice (`-inf` when empty), 16 lanes.
#[inline(always)]
pub fn lane_max<T: super::Real>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for i in 0..16 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = T::neg_infinity();
    for &v in it.remainder().iter().chain(acc.iter()) {
        m = if v > m { v } else { m };
    }
    m
}

#[inline(always)]
fn pairwise16<T: super::Real>(a: [T; 16]) -> T {
    let mut b = [T::zero(); 8];
    for i in 0..8 {
        b[i] = a[i] + a[i + 8];
    }
    let c = [b[0] + b[4], b[1] + b[5], b[2] + b[6], b[3] + b[7]];
    (c[0] + c[2]) + (c[1] + c[3])
}
