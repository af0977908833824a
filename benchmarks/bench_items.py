"""Benchmark: classical item analysis and Mantel-Haenszel DIF against Python peers.

Run on demand: ``python benchmarks/bench_items.py``. Peers measured in the same run:

* pingouin ``cronbach_alpha`` (alpha + CI only) and the pingouin/pandas workflow an
  analyst would write to get the same item table (alpha-if-deleted by re-running
  pingouin per item, item-rest correlations with pandas);
* statsmodels ``StratifiedTable`` per item (MH odds ratio, RBG SE, MH chi-square),
  tables built with ``numpy.bincount``.

Prints timings and ratios (peer / qualmon; > 1 means qualmon is faster) and checks
that the numbers agree.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from qualmon.scoring.items import dif, item_analysis


def timeit(fn, repeat=3):
    best = np.inf
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def simulate(n=100_000, J=40, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.7, 2.0, J)
    b = rng.normal(0, 1, J)
    theta = rng.normal(size=n)
    g = rng.integers(0, 2, n)
    b_f = b.copy()
    b_f[3] += 0.6
    bb = np.where(g[:, None] == 1, b_f, b)
    X = (rng.random((n, J)) < 1 / (1 + np.exp(-a * (theta[:, None] - bb)))).astype(float)
    return pd.DataFrame(X, columns=[f"I{j:02d}" for j in range(J)]), pd.Series(np.where(g == 1, "F", "M"))


def peer_item_table(X):
    import pingouin as pg

    alpha = pg.cronbach_alpha(X, ci=0.95)
    total = X.sum(axis=1)
    rows = {}
    for c in X.columns:
        rows[c] = {"p_value": X[c].mean(), "item_rest_r": X[c].corr(total - X[c]),
                   "alpha_if_deleted": pg.cronbach_alpha(X.drop(columns=c))[0]}
    return alpha, pd.DataFrame.from_dict(rows, orient="index")


def peer_mh(X, g):
    from statsmodels.stats.contingency_tables import StratifiedTable

    total = X.sum(axis=1).to_numpy().astype(int)
    f = (g == "F").to_numpy()
    K = total.max() + 1
    out = {}
    for c in X.columns:
        y = X[c].to_numpy().astype(int)
        # table[k] = [[ref right, ref wrong], [focal right, focal wrong]]
        code = total * 4 + f * 2 + (1 - y)
        t = np.bincount(code, minlength=K * 4).reshape(K, 2, 2).astype(float)
        t = t[t.sum(axis=(1, 2)) > 0]
        st = StratifiedTable(np.moveaxis(t, 0, 2))
        out[c] = {"alpha_mh": st.oddsratio_pooled, "ln_alpha_se": st.logodds_pooled_se,
                  "mh_chi2": st.test_null_odds(correction=True).statistic}
    return pd.DataFrame.from_dict(out, orient="index")


def main():
    X, g = simulate()
    n, J = X.shape
    print(f"data: {n} students x {J} dichotomous items")

    t_q, res = timeit(lambda: item_analysis(X))
    t_pa, pa = timeit(lambda: __import__("pingouin").cronbach_alpha(X, ci=0.95))
    t_pt, (pa2, ptab) = timeit(lambda: peer_item_table(X))
    assert abs(res.alpha - pa[0]) < 1e-10
    assert np.allclose(res.items["alpha_if_deleted"], ptab["alpha_if_deleted"], atol=1e-10)
    assert np.allclose(res.items["item_rest_r"], ptab["item_rest_r"], atol=1e-10)
    print(f"item_analysis (full table, alpha SE/CI, polyserial):   {t_q:8.3f} s")
    print(f"pingouin cronbach_alpha (alpha + CI only):            {t_pa:8.3f} s   ratio {t_pa / t_q:6.2f}")
    print(f"pingouin/pandas workflow for the same item table:     {t_pt:8.3f} s   ratio {t_pt / t_q:6.2f}")

    t_d, d = timeit(lambda: dif(X, g, focal="F", reference="M"))
    t_p, p = timeit(lambda: peer_mh(X, g))
    assert np.allclose(d.items["alpha_mh"], p["alpha_mh"], rtol=1e-10)
    assert np.allclose(d.items["ln_alpha_se"], p["ln_alpha_se"], rtol=1e-10)
    assert np.allclose(d.items["mh_chi2"], p["mh_chi2"], rtol=1e-10)
    print(f"dif (MH + SMD + Mantel + Liu-Agresti, ETS classes):   {t_d:8.3f} s")
    print(f"statsmodels StratifiedTable per item (MH only):       {t_p:8.3f} s   ratio {t_p / t_d:6.2f}")

    # matrix-sampled: 3 booklets of 2 of 3 blocks
    Xm = X.copy()
    rng = np.random.default_rng(2)
    book = rng.integers(0, 3, n)
    blocks = np.array_split(np.arange(J), 3)
    for bk, miss in enumerate([2, 0, 1]):
        Xm.iloc[np.flatnonzero(book == bk), blocks[miss]] = np.nan
    t_m, _ = timeit(lambda: item_analysis(Xm))
    print(f"item_analysis, matrix-sampled (3 booklets):           {t_m:8.3f} s   (no peer)")


if __name__ == "__main__":
    main()
