//! Test helpers for the CPU kernels: a tiny deterministic RNG and a central-difference gradient
//! checker (f64) that probes a random subset of coordinates so the checks stay fast.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    pub fn next_u64(&mut self) -> u64 {
        // splitmix64: the finaliser of the state before its step
        let z = self.0;
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        crate::mix::mix64(z)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.uniform()).collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks `grad` (the analytic gradient of `f` at `x`) by central differences on `probes`
/// random coordinates (all of them when `x` is smaller). `f` must be a pure function of `x`.
pub fn check_grad(
    name: &str,
    x: &[f64],
    grad: &[f64],
    probes: usize,
    seed: u64,
    mut f: impl FnMut(&[f64]) -> f64,
) {
    assert_eq!(x.len(), grad.len(), "{name}: gradient length");
    let h = 1e-6;
    let mut rng = Rng::new(seed);
    let idx: Vec<usize> = if x.len() <= probes {
        (0..x.len()).collect()
    } else {
        (0..probes).map(|_| rng.below(x.len())).collect()
    };
    let mut xp = x.to_vec();
    for i in idx {
        xp[i] = x[i] + h;
        let fp = f(&xp);
        xp[i] = x[i] - h;
        let fm = f(&xp);
        xp[i] = x[i];
        let fd = (fp - fm) / (2.0 * h);
        let err = (fd - grad[i]).abs();
        assert!(
            err <= 1e-6 * (1.0 + fd.abs()),
            "{name}[{i}]: finite difference {fd} vs analytic {}",
            grad[i]
        );
    }
}
