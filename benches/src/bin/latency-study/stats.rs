//! Summary statistics in the seed's shape (pandas `describe()`: mean, std, min, 25 %, 50 %,
//! 75 %, max) plus p99 and n.

/// The summary of one series, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p99: f64,
    pub max: f64,
}

/// Linear-interpolation quantile of sorted data (pandas' and numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

pub fn summarize(samples: &[f64]) -> Summary {
    let mut s: Vec<f64> = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let m = mean(&s);
    // Sample standard deviation (ddof = 1), as pandas reports it.
    let std = if n > 1 { (s.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
    Summary {
        n,
        mean: m,
        std,
        min: s.first().copied().unwrap_or(f64::NAN),
        p25: quantile(&s, 0.25),
        p50: quantile(&s, 0.50),
        p75: quantile(&s, 0.75),
        p99: quantile(&s, 0.99),
        max: s.last().copied().unwrap_or(f64::NAN),
    }
}

/// Milliseconds with enough digits for microsecond-scale rows.
pub fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 1.0 {
        format!("{v:.4}")
    } else if v < 100.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_matches_pandas() {
        // pandas.Series([1, 2, 3, 4, 10]).describe()
        let s = summarize(&[1.0, 2.0, 3.0, 4.0, 10.0]);
        assert_eq!((s.n, s.mean, s.min, s.p25, s.p50, s.p75, s.max), (5, 4.0, 1.0, 2.0, 3.0, 4.0, 10.0));
        assert!((s.std - 3.535_533_905_932_738).abs() < 1e-12);
    }
}
