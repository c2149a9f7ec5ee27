//! The little dense linear algebra the PCA initializations need: the eigen-decomposition of a
//! symmetric matrix (Householder reduction to tridiagonal form, then the implicit QL algorithm, as
//! in EISPACK's `tred2`/`tql2`; O(n³), about a second for n = 768) and the principal components of
//! a set of vectors, and the Cholesky solve of the least-squares fits (latent predictor, restoration
//! filter).

/// Eigenvalues and eigenvectors of a symmetric matrix `a` (`n × n`, row-major), sorted by
/// decreasing eigenvalue: `(eigenvalues, vectors)` with the unit vector of eigenvalue `k` in
/// `vectors[k*n..(k+1)*n]`.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut v = a[..n * n].to_vec();
    let mut d = vec![0.0f64; n];
    let mut e = vec![0.0f64; n];
    tridiagonalize(&mut v, &mut d, &mut e, n);
    diagonalize(&mut v, &mut d, &mut e, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| d[y].total_cmp(&d[x]));
    let values = order.iter().map(|&k| d[k]).collect();
    let mut vectors = Vec::with_capacity(n * n);
    for &k in &order {
        vectors.extend((0..n).map(|i| v[i * n + k]));
    }
    (values, vectors)
}

/// Householder reduction of the symmetric `v` to tridiagonal form: on return `d` holds the
/// diagonal, `e[1..]` the subdiagonal and `v` the orthogonal transformation.
fn tridiagonalize(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    d.copy_from_slice(&v[(n - 1) * n..n * n]);
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[(i - 1) * n + j];
                v[i * n + j] = 0.0;
                v[j * n + i] = 0.0;
            }
        } else {
            for x in &mut d[..i] {
                *x /= scale;
                h += *x * *x;
            }
            let f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].iter_mut().for_each(|x| *x = 0.0);
            for j in 0..i {
                let f = d[j];
                v[j * n + i] = f;
                let mut g = e[j] + v[j * n + j] * f;
                for k in j + 1..i {
                    g += v[k * n + j] * d[k];
                    e[k] += v[k * n + j] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                for k in j..i {
                    v[k * n + j] -= f * e[k] + g * d[k];
                }
                d[j] = v[(i - 1) * n + j];
                v[i * n + j] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        v[(n - 1) * n + i] = v[i * n + i];
        v[i * n + i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[k * n + i + 1] / h;
            }
            for j in 0..=i {
                let g: f64 = (0..=i).map(|k| v[k * n + i + 1] * v[k * n + j]).sum();
                for k in 0..=i {
                    v[k * n + j] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[k * n + i + 1] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[(n - 1) * n + j];
        v[(n - 1) * n + j] = 0.0;
    }
    v[(n - 1) * n + n - 1] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL iterations on the tridiagonal `(d, e)`, accumulating the rotations into `v`: on
/// return `d` holds the eigenvalues and the columns of `v` the eigenvectors.
fn diagonalize(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            // At most a few dozen iterations per eigenvalue in practice; the bound only guards
            // against a NaN in the input.
            for _ in 0..100 {
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let h = g - d[l];
                for x in &mut d[l + 2..n] {
                    *x -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    let h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    for k in 0..n {
                        let h = v[k * n + i + 1];
                        v[k * n + i + 1] = s * v[k * n + i] + c * h;
                        v[k * n + i] = c * v[k * n + i] - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
}

/// Principal components of `rows` (vectors of `n` values, row-major) around `mean`:
/// `(variances, directions)` as [`symmetric_eigen`] returns them for the covariance matrix.
pub fn principal_components(rows: &[f32], mean: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let count = rows.len() / n.max(1);
    let mut cov = vec![0.0f64; n * n];
    let mut centred = vec![0.0f64; n];
    for row in rows.chunks_exact(n) {
        for ((c, &v), m) in centred.iter_mut().zip(row).zip(mean) {
            *c = f64::from(v) - m;
        }
        for i in 0..n {
            let ci = centred[i];
            let out = &mut cov[i * n + i..(i + 1) * n];
            for (o, &cj) in out.iter_mut().zip(&centred[i..]) {
                *o += ci * cj;
            }
        }
    }
    let denom = count.saturating_sub(1).max(1) as f64;
    for i in 0..n {
        for j in i..n {
            let v = cov[i * n + j] / denom;
            cov[i * n + j] = v;
            cov[j * n + i] = v;
        }
    }
    symmetric_eigen(&cov, n)
}

/// Solves the symmetric positive definite `n × n` system `a·x = b` (Cholesky); if the matrix is
/// not positive definite, the whole solution is 0.
pub fn cholesky_solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for j in 0..n {
        let d = a[j * n + j] - (0..j).map(|k| a[j * n + k] * a[j * n + k]).sum::<f64>();
        if !(d > 0.0 && d.is_finite()) {
            return vec![0.0; n];
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let s = a[i * n + j] - (0..j).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>();
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        b[i] = (b[i] - (0..i).map(|k| a[i * n + k] * b[k]).sum::<f64>()) / a[i * n + i];
    }
    for i in (0..n).rev() {
        b[i] = (b[i] - (i + 1..n).map(|k| a[k * n + i] * b[k]).sum::<f64>()) / a[i * n + i];
    }
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn finds_the_eigenvectors_of_a_rotated_diagonal() {
        // A = Q diag(5, 2, 0.5) Qᵀ with a rotation Q.
        let (c, s) = (0.6f64, 0.8f64);
        let q = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let dg = [5.0, 2.0, 0.5];
        let mut a = [0.0f64; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| q[i * 3 + k] * dg[k] * q[j * 3 + k]).sum();
            }
        }
        let (values, vectors) = symmetric_eigen(&a, 3);
        for (v, d) in values.iter().zip(dg) {
            assert!((v - d).abs() < 1e-12, "{values:?}");
        }
        // The first eigenvector is Q's first column, up to sign.
        let dot: f64 = (0..3).map(|i| vectors[i] * q[i * 3]).sum();
        assert!((dot.abs() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn decomposes_a_random_symmetric_matrix() {
        let n = 40;
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            for j in i..n {
                let x = next();
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        // Two equal eigenvalues must not confuse it: add a repeated block.
        a[0] = 3.0;
        a[n + 1] = 3.0;
        a[1] = 0.0;
        a[n] = 0.0;
        let (values, vectors) = symmetric_eigen(&a, n);
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
        for k in 0..n {
            let u = &vectors[k * n..(k + 1) * n];
            for i in 0..n {
                let au: f64 = (0..n).map(|j| a[i * n + j] * u[j]).sum();
                assert!(
                    (au - values[k] * u[i]).abs() < 1e-10,
                    "A·u ≠ λ·u for k = {k}"
                );
            }
            for l in 0..n {
                let dot: f64 = (0..n).map(|i| u[i] * vectors[l * n + i]).sum();
                let want = if k == l { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-10, "not orthonormal at ({k}, {l})");
            }
        }
    }

    #[test]
    fn principal_components_follow_the_spread() {
        // Points along (1, 1)/√2 with a small spread across it.
        let mut rows = Vec::new();
        for i in 0..=200 {
            let t = (i as f32 - 100.0) / 10.0;
            for w in [0.1, -0.1] {
                rows.extend([t + w + 1.0, t - w + 2.0]);
            }
        }
        let (values, vectors) = principal_components(&rows, &[1.0, 2.0], 2);
        assert!(values[0] > 100.0 * values[1]);
        assert!((vectors[0].abs() - 0.5f64.sqrt()).abs() < 1e-6);
        assert!((vectors[0] - vectors[1]).abs() < 1e-6);
    }
}
