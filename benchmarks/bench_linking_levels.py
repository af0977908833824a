"""Benchmark: scale linking, level shares with plausible values and replicate weights,
classification accuracy.

Run on demand: ``python benchmarks/bench_linking_levels.py``.

Peers measured in the same run:
* level shares: the straightforward pandas workflow (per PV and per replicate weight,
  ``groupby(county, level)`` weighted sums, Rubin's rules) -- the numbers must agree;
* classification accuracy: a per-examinee Python loop over ``scipy.stats.norm.cdf``
  (how Rudner's method is often coded), on a subsample, scaled up.
There is no Python peer for IRT linking (R's plink / equateIRT / SNSequate are not
available here); its timings are printed alone.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from scipy import stats

from qualmon.scoring.levels import LEVEL_LABELS, assign_levels, classification_accuracy, level_shares
from qualmon.scoring.linking import link, transform_items


def timeit(fn, repeat=3):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peer_shares(pv, w, R, by, factor):
    M = pv.shape[1]
    est = []
    for m in range(M):
        lv = assign_levels(pv.iloc[:, m])
        df = pd.DataFrame({"county": by, "level": lv}).join(pd.DataFrame(np.column_stack([w, R])))
        sums = df.groupby(["county", "level"], observed=False).sum()
        est.append((sums / sums.groupby(level="county").transform("sum")).to_numpy())
    est = np.array(est)  # (M, cells, 1+R)
    full = est[:, :, 0]
    U = factor * ((est[:, :, 1:] - est[:, :, :1]) ** 2).sum(-1)
    return np.sqrt(U.mean(0) + (1 + 1 / M) * full.var(0, ddof=1)), full.mean(0)


def peer_accuracy(th, se, cuts):
    edges = [-np.inf, *cuts, np.inf]
    acc = 0.0
    for t, s in zip(th, se):
        lvl = int(np.searchsorted(cuts, t, side="right"))
        acc += stats.norm.cdf((edges[lvl + 1] - t) / s) - stats.norm.cdf((edges[lvl] - t) / s)
    return acc / len(th)


def main():
    rng = np.random.default_rng(1)
    # ---- linking: 40 anchors, mixed 2PL/3PL/GRM
    L = 40
    a = rng.lognormal(0, 0.25, L)
    b = rng.normal(0, 1, L)
    base = pd.DataFrame({"model": np.where(np.arange(L) % 5 == 0, "3PL", "2PL"), "a": a, "d": -a * b,
                         "c": np.where(np.arange(L) % 5 == 0, 0.2, 0.0)}, index=[f"A{i}" for i in range(L)])
    new = transform_items(base, 1 / 1.2, 0.3 / 1.2)
    new["d"] += rng.normal(0, 0.05, L)
    for method in ("stocking_lord", "haebara", "mean_sigma"):
        t, r = timeit(lambda: link(new, base, method=method))
        t0, _ = timeit(lambda: link(new, base, method=method, jackknife=False))
        print(f"link {method:14s} 40 anchors: {t0 * 1e3:8.1f} ms; with delete-one jackknife: {t * 1e3:8.1f} ms "
              f"(A = {r.A:.4f} +- {r.se_A:.4f}, B = {r.B:.4f} +- {r.se_B:.4f}; no Python peer)")

    # ---- level shares: 100k students, 5 PVs, 80 replicate weights, 30 counties
    n, M, R = 100_000, 5, 80
    pv = pd.DataFrame(rng.normal(500, 100, (n, M)), columns=[f"pv{i}" for i in range(1, M + 1)])
    w = rng.uniform(0.5, 3, n)
    Rw = w[:, None] * rng.choice([0.5, 1.5], size=(n, R))
    by = pd.Series(rng.integers(0, 30, n), name="county")
    t_q, out = timeit(lambda: level_shares(pv, weights=w, replicate_weights=Rw, variance_factor=0.05, by=by))
    t_p, (se_p, sh_p) = timeit(lambda: peer_shares(pv, w, Rw, by, 0.05), repeat=1)
    assert np.allclose(out["share"].to_numpy(), sh_p) and np.allclose(out["se"].to_numpy(), se_p)
    print(f"level_shares 100k x 5 PVs x 80 replicates x 30 counties: {t_q:7.3f} s; pandas groupby workflow "
          f"{t_p:7.3f} s; ratio {t_p / t_q:6.2f}")

    # ---- classification accuracy, 100k examinees
    th = rng.normal(500, 100, n)
    se = rng.uniform(20, 40, n)
    cuts = (400.0, 500.0, 600.0)
    t_q, ca = timeit(lambda: classification_accuracy(th, se, cuts))
    k = 5000
    t_p, acc_p = timeit(lambda: peer_accuracy(th[:k], se[:k], cuts), repeat=1)
    acc_q = classification_accuracy(th[:k], se[:k], cuts).accuracy
    assert abs(acc_q - acc_p) < 1e-10
    t_p_full = t_p * n / k
    print(f"classification_accuracy 100k: {t_q:7.3f} s; per-examinee loop (timed on {k}, scaled) "
          f"{t_p_full:7.3f} s; ratio {t_p_full / t_q:7.1f}")


if __name__ == "__main__":
    main()
