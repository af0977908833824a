"""IRT calibration and scoring speed against PyPI ``mirt`` (Rust core) and ``girth``.

Run on demand:  .venv/bin/python benchmarks/bench_irt.py [--quick] [--skip-peers] [--skip-1m]

Every scenario times qualmon and the peers in the same run (wall clock, best of
``--repeat`` runs) on the same simulated data, and prints the ratio peer / qualmon
(> 1 means qualmon is faster) and the largest absolute difference of the item
parameters (a, b) between qualmon and each peer.  Peers: ``pip install mirt girth``
(``mirt`` = PyPI "Multidimensional Item Response Theory for Python", Rust core; it
uses Gauss-Hermite quadrature, so its estimates differ slightly from a 61-node
rectangular grid).  The 1,000,000-student calibration runs in a subprocess to
report its peak resident memory honestly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd

from qualmon.scoring.calibration import Calibration, calibrate
from qualmon.scoring.persons import plausible_values, score

warnings.filterwarnings("ignore")


def sim_2pl(n, J, rng, missing=False):
    a = rng.lognormal(0, 0.3, J)
    b = rng.normal(0, 1, J)
    th = rng.normal(size=n)
    P = 1 / (1 + np.exp(-(np.outer(th, a) - a * b)))
    X = (rng.random((n, J)) < P).astype(float)
    if missing:  # 4 booklets, each leaving out a different 30% of the items
        bk = rng.integers(0, 4, n)
        for k in range(4):
            cols = [j for j in range(J) if (j + 3 * k) % 10 < 3]
            X[np.ix_(bk == k, cols)] = np.nan
    items = pd.DataFrame({"model": "2PL", "a": a, "b": b}, index=[f"i{j:02d}" for j in range(J)])
    return pd.DataFrame(X, columns=items.index), items, th


def sim_grm(n, J, K, rng):
    a = rng.lognormal(0, 0.25, J)
    b = np.sort(rng.normal(0, 1, (J, K - 1)), axis=1)
    th = rng.normal(size=n)
    cum = 1 / (1 + np.exp(-(a[None, :, None] * (th[:, None, None] - b[None, :, :]))))
    u = rng.random((n, J))
    X = (u[:, :, None] < cum).sum(-1).astype(float)
    items = pd.DataFrame({"model": "GRM", "a": a}, index=[f"g{j}" for j in range(J)])
    for k in range(K - 1):
        items[f"b{k + 1}"] = b[:, k]
    return pd.DataFrame(X, columns=items.index), items


def timed(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def row(label, t_ours, peers):
    print(f"  {label:<44s} qualmon {t_ours:7.2f} s")
    for name, (t, diff) in peers.items():
        if t is None:
            print(f"  {'':<44s} {name:<22s} n/a ({diff})")
            continue
        extra = f"   max|diff| a,b = {diff:.3f}" if isinstance(diff, float) else ""
        print(f"  {'':<44s} {name:<22s} {t:7.2f} s   ratio {t / t_ours:5.2f}x{extra}")


def mirt_ab(res):
    c = res.coef()
    c = c.to_pandas() if hasattr(c, "to_pandas") else pd.DataFrame(c)
    return c["discrimination"].to_numpy(), c["difficulty"].to_numpy()


def diff_ab(ours, a, b):
    return float(max(np.max(np.abs(ours.items["a"].to_numpy() - a)), np.max(np.abs(ours.items["b"].to_numpy() - b))))


def peer_mirt_2pl(X, quadpts, weights=None):
    import mirt

    Y = np.where(np.isnan(X.to_numpy()), -1, X.to_numpy()).astype(np.int64)
    if weights is None:
        return timed(lambda: mirt.fit_mirt(Y, "2PL", n_quadpts=quadpts, compute_standard_errors=False))
    from mirt.estimation.weighted import WeightedEMEstimator

    def run():
        est = WeightedEMEstimator(n_quadpts=quadpts, compute_standard_errors=False)
        return est.fit(mirt.TwoParameterLogistic(Y.shape[1]), Y, weights)

    return timed(run)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10x smaller data")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-1m", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    f = 10 if args.quick else 1
    rng = np.random.default_rng(2026)
    have = {}
    if not args.skip_peers:
        for mod in ("mirt", "girth"):
            try:
                __import__(mod)
                have[mod] = True
            except ImportError:
                have[mod] = False
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()}")
    print(f"peers available: {have}")

    # ------------------------------------------------------------------ 2PL complete
    n, J = 100_000 // f, 40
    X, items, th = sim_2pl(n, J, rng)
    print(f"\n2PL {n} x {J}, complete data, 61 rectangular nodes (se=None)")
    calibrate(X.iloc[:2000], "2PL", se=None)  # warm-up (imports, thread pool)
    t_ours, ours = timed(lambda: calibrate(X, "2PL", se=None), args.repeat)
    truth = float(max(np.abs(ours.items["a"] - items["a"]).max(), np.abs(ours.items["b"] - items["b"]).max()))
    print(f"  qualmon: {ours.iterations} EM iterations, converged={ours.converged}, max|est - truth| = {truth:.3f}")
    peers = {}
    if have.get("mirt"):
        for q in (61, 41):
            t, res = peer_mirt_2pl(X, q)
            peers[f"PyPI mirt ({q} GH nodes)"] = (t, diff_ab(ours, *mirt_ab(res)))
    if have.get("girth"):
        import girth

        opts = {"quadrature_n": 61, "quadrature_bounds": (-6, 6), "max_iteration": 500}
        t, res = timed(lambda: girth.twopl_mml(X.to_numpy().T.astype(int), options=opts))
        peers["girth twopl_mml (61)"] = (t, diff_ab(ours, res["Discrimination"], res["Difficulty"]))
    row("2PL complete", t_ours, peers)
    t_se, r_se = timed(lambda: calibrate(X, "2PL", se="oakes"))
    print(f"  qualmon with Oakes standard errors: {t_se:.2f} s")
    t_cp, _ = timed(lambda: calibrate(X, "2PL", se="crossprod"))
    print(f"  qualmon with cross-product standard errors: {t_cp:.2f} s")

    # ------------------------------------------------------------------ 2PL booklets
    Xm, items_m, _ = sim_2pl(n, J, rng, missing=True)
    print(f"\n2PL {n} x {J}, 4 booklets, {Xm.isna().to_numpy().mean():.0%} missing by design")
    t_ours, ours = timed(lambda: calibrate(Xm, "2PL", se=None), args.repeat)
    peers = {}
    if have.get("mirt"):
        t, res = peer_mirt_2pl(Xm, 61)
        peers["PyPI mirt (61 GH nodes)"] = (t, diff_ab(ours, *mirt_ab(res)))
    if have.get("girth"):
        peers["girth"] = (None, "no missing-data support in twopl_mml")
    row("2PL booklets", t_ours, peers)

    # ------------------------------------------------------------------ weighted
    w = rng.uniform(0.3, 3.0, n)
    print(f"\n2PL {n} x {J}, sample weights")
    t_ours, ours = timed(lambda: calibrate(X, "2PL", weights=w, se=None), args.repeat)
    peers = {}
    if have.get("girth"):
        peers["girth"] = (None, "no weights")
    row("2PL weighted", t_ours, peers)
    if have.get("mirt"):
        # PyPI mirt's WeightedEMEstimator runs without its Rust core (its docs say so) and
        # takes minutes at this size; compare both on a 20% subsample instead
        nw = n // 5
        Xw, ww = X.iloc[:nw], w[:nw]
        t_small, ours_w = timed(lambda: calibrate(Xw, "2PL", weights=ww, se=None), args.repeat)
        t, res = peer_mirt_2pl(Xw, 61, weights=ww)
        row(f"2PL weighted, {nw} x {J} subsample", t_small,
            {"PyPI mirt weighted (61)": (t, diff_ab(ours_w, *mirt_ab(res)))})

    # ------------------------------------------------------------------ GRM
    G, gitems = sim_grm(n, 10, 4, rng)
    print(f"\nGRM {n} x 10 items x 4 categories")
    t_ours, ours = timed(lambda: calibrate(G, "GRM", se=None), args.repeat)
    peers = {}
    if have.get("mirt"):
        import mirt

        Yg = G.to_numpy().astype(np.int64)
        t, res = timed(lambda: mirt.fit_mirt(Yg, "GRM", n_quadpts=61, compute_standard_errors=False))
        try:
            c = res.coef()
            c = c.to_pandas() if hasattr(c, "to_pandas") else pd.DataFrame(c)
            da = float(np.max(np.abs(ours.items["a"].to_numpy() - c["discrimination"].to_numpy())))
        except Exception as e:  # pragma: no cover - peer API detail
            da = f"coef layout: {e}"
        peers["PyPI mirt GRM (61)"] = (t, da)
    if have.get("girth"):
        import girth

        opts = {"quadrature_n": 61, "quadrature_bounds": (-6, 6), "max_iteration": 500}
        t, res = timed(lambda: girth.grm_mml(G.to_numpy().T.astype(int) + 1, options=opts))
        peers["girth grm_mml (61)"] = (t, float(np.max(np.abs(ours.items["a"].to_numpy() - res["Discrimination"]))))
    row("GRM (a only compared)", t_ours, peers)

    # ------------------------------------------------------------------ EAP 1M x 40
    m = 1_000_000 // f
    Xe, items_e, _ = sim_2pl(m, 40, rng)
    cal = Calibration.from_items(items_e)
    print(f"\nEAP with SE, {m} x 40, 121 nodes")
    t_ours, eap = timed(lambda: score(Xe, cal, "EAP", quadpts=121), args.repeat)
    t_exact, eap_x = timed(lambda: score(Xe.iloc[: m // 10], cal, "EAP", quadpts=121, exact=True))
    dmax = float(np.max(np.abs(eap["theta"].to_numpy()[: m // 10] - eap_x["theta"].to_numpy())))
    print(f"  sufficient-statistic path vs direct per-student grid: max |diff| = {dmax:.1e}; "
          f"direct path on {m // 10} rows {t_exact:.2f} s")
    peers = {}
    if have.get("mirt"):
        import mirt

        ref = mirt.fit_mirt(Xe.iloc[:5000].to_numpy().astype(np.int64), "2PL", n_quadpts=21, compute_standard_errors=False)
        Ye = Xe.to_numpy().astype(np.int64)
        # score with the peer's own fitted model object (its parameters differ; timing only)
        t, res = timed(lambda: mirt.fscores(ref, Ye, method="EAP", n_quadpts=121))
        peers["PyPI mirt fscores (121)"] = (t, "own parameters; timing only")
    row("EAP + SE", t_ours, peers)
    for meth in ("MAP", "WLE"):
        t, _ = timed(lambda: score(Xe, cal, meth))
        print(f"  qualmon {meth} with SE, {m} x 40: {t:.2f} s")

    # ------------------------------------------------------------------ plausible values
    npv = 100_000 // f
    Xp = Xe.iloc[:npv]
    bg = pd.DataFrame({"g": rng.integers(0, 2, npv), "ses": rng.normal(size=npv)})
    print(f"\n5 plausible values, {npv} students (latent regression on 2 covariates)")
    t_ours, pv = timed(lambda: plausible_values(Xp, cal, n=5, background=bg, seed=1, draw="normal"), args.repeat)
    t_post, _ = timed(lambda: plausible_values(Xp, cal, n=5, background=bg, seed=1, draw="posterior"))
    print(f"  (EM iterations {pv.attrs['iterations']}; draw='posterior' takes {t_post:.2f} s)")
    peers = {}
    if have.get("mirt"):
        import mirt

        Yp = Xp.to_numpy().astype(np.int64)
        ref = mirt.fit_mirt(Yp[:5000], "2PL", n_quadpts=21, compute_standard_errors=False)
        t, _ = timed(lambda: mirt.generate_plausible_values(ref, Yp, n_plausible=5, n_quadpts=61, seed=1))
        peers["PyPI mirt generate_plausible_values (no regression)"] = (t, "timing only")
    row("PVs (draw='normal')", t_ours, peers)

    # ------------------------------------------------------------------ 1M calibration
    if not args.skip_1m:
        n1 = 1_000_000 // f
        print(f"\n2PL calibration {n1} x 40 (subprocess; peak RSS includes the data)")
        code = f"""
import json, resource, time, tracemalloc, numpy as np, pandas as pd, warnings
warnings.filterwarnings('ignore')
from qualmon.scoring.calibration import calibrate
rng = np.random.default_rng(7)
n, J = {n1}, 40
a = rng.lognormal(0, 0.3, J); b = rng.normal(0, 1, J)
X = np.empty((n, J))
for s in range(0, n, 100000):
    th = rng.normal(size=min(n, s + 100000) - s)
    X[s:s + len(th)] = rng.random((len(th), J)) < 1 / (1 + np.exp(-(np.outer(th, a) - a * b)))
df = pd.DataFrame(X, copy=False)
del X
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
tracemalloc.start()
t = time.perf_counter()
r = calibrate(df, '2PL', se=None)
el = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1] / 2**20
print(json.dumps(dict(seconds=el, iterations=r.iterations, converged=r.converged, rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_before_mb=base, traced_peak_mb=peak, max_err=float(max(np.abs(r.items['a'].to_numpy() - a).max(), np.abs(r.items['b'].to_numpy() - b).max())))))
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
        try:
            res = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  qualmon {res['seconds']:.1f} s, {res['iterations']} EM iterations, converged={res['converged']}, "
                  f"max|est - truth| = {res['max_err']:.3f}")
            print(f"  peak RSS {res['rss_mb']:.0f} MB (data alone {res['rss_before_mb']:.0f} MB); "
                  f"peak traced allocations during calibrate {res['traced_peak_mb']:.0f} MB")
        except Exception:
            print("  failed:", out.stderr[-2000:])


if __name__ == "__main__":
    main()
