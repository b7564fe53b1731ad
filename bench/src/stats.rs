//! Medians and spreads.

use serde::Serialize;

/// A sample's median with its interquartile range and extremes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Non-finite values are ignored; an empty sample gives n = 0 and NaN figures.
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Summary {
                n: 0,
                median: f64::NAN,
                p25: f64::NAN,
                p75: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        Summary {
            n: v.len(),
            median: quantile_sorted(&v, 0.5),
            p25: quantile_sorted(&v, 0.25),
            p75: quantile_sorted(&v, 0.75),
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// Linear interpolation between closest ranks.
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    quantile_sorted(&v, q)
}

/// A small xorshift generator: lane order per block needs no crypto.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0, 5.0, f64::NAN]);
        assert_eq!(
            (s.n, s.median, s.p25, s.p75, s.min, s.max),
            (5, 3.0, 2.0, 4.0, 1.0, 5.0)
        );
        assert_eq!(quantile(&[1.0, 2.0], 0.5), 1.5);
        assert_eq!(Summary::of(&[]).n, 0);
    }

    #[test]
    fn shuffle_keeps_elements() {
        let mut v: Vec<u32> = (0..10).collect();
        Rng::seeded(7).shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
    }
}
