"""Item response models: closed forms, analytic derivatives, invariants (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualmon.scoring.models import (
    GPCM,
    PCM,
    BetaPrior,
    Graded,
    LogitNormalPrior,
    LogNormalPrior,
    ModelSpecError,
    NormalPrior,
    Rasch,
    ThreePL,
    TwoPL,
    expected_scores,
    get_model,
    information,
    item_table,
    models_from_table,
    probabilities,
    simulate,
    test_characteristic_curve,
)

THETA = np.linspace(-4, 4, 17)

slopes = st.floats(0.2, 3.0)
intercepts = st.floats(-3.0, 3.0)
guess = st.floats(0.01, 0.4)


def _ordered(ds):
    return sorted(ds, reverse=True)


@st.composite
def any_item(draw):
    kind = draw(st.sampled_from(["2PL", "3PL", "GRM", "GPCM", "Rasch", "PCM"]))
    a = draw(slopes)
    if kind in ("2PL", "Rasch"):
        m = get_model(kind, 2)
        p = np.array([1.0 if kind == "Rasch" else a, draw(intercepts)])
    elif kind == "3PL":
        m = ThreePL()
        p = np.array([a, draw(intercepts), draw(guess)])
    else:
        K = draw(st.integers(3, 5))
        ds = draw(st.lists(intercepts, min_size=K - 1, max_size=K - 1, unique=True))
        if kind == "GRM":
            ds = _ordered(ds)
            # keep thresholds distinct enough for finite log-probabilities
            ds = [d - 0.05 * i for i, d in enumerate(ds)]
        m = get_model(kind, K)
        p = np.array([1.0 if kind == "PCM" else a] + list(ds))
    return m, p


# ----------------------------------------------------------------------------- closed forms
def test_2pl_closed_form():
    m = TwoPL()
    a, b = 1.3, -0.4
    p = m.from_irt([a, b])
    assert p[1] == pytest.approx(-a * b)
    P = m.prob(p, np.array([b, b + 1.0]))
    assert P[0, 1] == pytest.approx(0.5)
    assert P[1, 1] == pytest.approx(1 / (1 + np.exp(-a)))
    # information a^2 P Q
    I = m.information(p, np.array([b]))
    assert I[0] == pytest.approx(a * a * 0.25)


def test_3pl_closed_form():
    m = ThreePL()
    a, b, c = 1.1, 0.3, 0.2
    p = m.from_irt([a, b, c])
    P = m.prob(p, np.array([b, -50.0, 50.0]))
    assert P[0, 1] == pytest.approx(c + (1 - c) / 2)
    assert P[1, 1] == pytest.approx(c)
    assert P[2, 1] == pytest.approx(1.0)
    # Birnbaum information: a^2 (Q/P) ((P - c)/(1 - c))^2
    t = np.array([0.7])
    P1 = m.prob(p, t)[0, 1]
    exact = a**2 * (1 - P1) / P1 * ((P1 - c) / (1 - c)) ** 2
    assert m.information(p, t)[0] == pytest.approx(exact)


def test_grm_and_gpcm_thresholds():
    g = Graded(4)
    irt = np.array([1.4, -1.0, 0.2, 1.5])
    p = g.from_irt(irt)
    np.testing.assert_allclose(g.to_irt(p), irt)
    for k, bk in enumerate(irt[1:], start=1):
        P = g.prob(p, np.array([bk]))[0]
        assert P[k:].sum() == pytest.approx(0.5)  # P(X >= k | b_k) = 1/2
    gp = GPCM(4)
    irt = np.array([0.9, -0.8, 0.1, 1.2])
    p = gp.from_irt(irt)
    np.testing.assert_allclose(gp.to_irt(p), irt)
    for k, bk in enumerate(irt[1:], start=1):
        P = gp.prob(p, np.array([bk]))[0]
        assert P[k] == pytest.approx(P[k - 1])  # adjacent categories cross at b_k
    # mirt parameterisation: d_k = -a * (b_1 + ... + b_k)
    np.testing.assert_allclose(p[1:], -0.9 * np.cumsum(irt[1:]))


def test_rasch_and_pcm_fix_the_slope():
    assert list(Rasch().free) == [False, True]
    assert Rasch().fixed_values() == {"a": 1.0}
    assert list(PCM(3).free) == [False, True, True]
    assert get_model("1PL", 2).family == "Rasch"
    assert get_model("Rasch", 4).family == "PCM"  # mirt: Rasch on polytomous = PCM
    assert get_model("graded", 3).family == "GRM"


def test_bad_specs_raise():
    with pytest.raises(ModelSpecError, match="unknown IRT model"):
        get_model("4PL")
    with pytest.raises(ModelSpecError, match="dichotomous"):
        TwoPL(3)
    with pytest.raises(ModelSpecError, match="shape"):
        TwoPL().prob(np.zeros(3), THETA)


# ----------------------------------------------------------------------------- derivatives
def _num_grad(f, w, h=1e-6):
    g = np.zeros_like(w)
    for i in range(w.size):
        e = np.zeros_like(w)
        e.flat[i] = h
        g.flat[i] = (f(w + e) - f(w - e)) / (2 * h)
    return g


@settings(max_examples=40, deadline=None)
@given(any_item(), st.integers(0, 10_000))
def test_gradient_and_hessian_match_finite_differences(item, seed):
    m, p = item
    rng = np.random.default_rng(seed)
    w = m.to_working(p)[None, :]
    counts = rng.uniform(0, 5, size=(1, len(THETA), m.n_cat))
    g, H = m.grad_hess(w, THETA, counts)

    def f(ww):
        return float(m.loglik(m.from_working(ww), THETA, counts).sum())

    gn = _num_grad(f, w.copy())
    np.testing.assert_allclose(g, gn, rtol=1e-5, atol=1e-5 * (1 + np.abs(gn).max()))
    Hn = np.zeros_like(H[0])
    for k in range(w.shape[1]):
        e = np.zeros_like(w)
        e[0, k] = 1e-6
        Hn[:, k] = (m.grad_hess(w + e, THETA, counts)[0][0] - m.grad_hess(w - e, THETA, counts)[0][0]) / 2e-6
    np.testing.assert_allclose(H[0], Hn, rtol=1e-4, atol=1e-4 * (1 + np.abs(Hn).max()))
    # Fisher information is negative semi-definite
    _, F = m.grad_hess(w, THETA, counts, fisher=True)
    assert np.linalg.eigvalsh(F[0]).max() <= 1e-8 * (1 + np.abs(F).max())


@settings(max_examples=40, deadline=None)
@given(any_item())
def test_theta_derivatives_and_information(item):
    m, p = item
    P, d1, d2 = m.theta_derivs(p, THETA)
    h = 1e-5
    Pp, Pm = m.prob(p, THETA + h), m.prob(p, THETA - h)
    np.testing.assert_allclose(d1, (Pp - Pm) / (2 * h), atol=1e-7)
    np.testing.assert_allclose(d2, (Pp - 2 * P + Pm) / h**2, atol=1e-4)
    # I(theta) = -E[d2 log P / dtheta2]  (second differences with a larger step)
    h2 = 1e-4
    lp = np.log(P)
    lpp, lpm = np.log(m.prob(p, THETA + h2)), np.log(m.prob(p, THETA - h2))
    neg_e = -(P * (lpp - 2 * lp + lpm) / h2**2).sum(-1)
    np.testing.assert_allclose(m.information(p, THETA), neg_e, rtol=1e-4, atol=1e-6)
    # logit-linear models: log P_k - log P_0 = alpha_k theta + delta_k
    ll = m.logit_linear(p)
    if ll is not None:
        a, dlt = ll
        np.testing.assert_allclose(lp[:, 1:] - lp[:, :1], np.outer(THETA, a) + dlt, atol=1e-10)


# ----------------------------------------------------------------------------- invariants
@settings(max_examples=60, deadline=None)
@given(any_item())
def test_probabilities_sum_to_one_and_lie_in_unit_interval(item):
    m, p = item
    P = m.prob(p, np.linspace(-6, 6, 61))
    np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)
    assert (P > 0).all() and (P < 1).all()


@settings(max_examples=60, deadline=None)
@given(any_item(), st.integers(0, 1000))
def test_likelihood_invariant_under_slope_intercept_vs_irt(item, seed):
    m, p = item
    irt = m.to_irt(p)
    p2 = m.from_irt(irt)
    np.testing.assert_allclose(p2, p, rtol=1e-12, atol=1e-12)
    counts = np.random.default_rng(seed).uniform(0, 3, (1, len(THETA), m.n_cat))
    assert m.loglik(p2[None], THETA, counts)[0] == pytest.approx(m.loglik(p[None], THETA, counts)[0], rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(any_item())
def test_expected_score_increases_with_theta(item):
    m, p = item
    e = m.expected_score(p, np.linspace(-5, 5, 101))
    assert np.all(np.diff(e) > 0)


def test_linear_transformation_of_the_scale():
    # theta* = A theta + B with a* = a / A, b* = A b + B gives the same probabilities
    A, B = 1.7, 0.4
    for m, irt in [(TwoPL(), [1.2, 0.3]), (Graded(4), [0.8, -1.0, 0.0, 1.1]), (GPCM(3), [1.1, -0.5, 0.7])]:
        irt = np.array(irt, float)
        irt2 = irt.copy()
        irt2[0] = irt[0] / A
        irt2[1:] = A * irt[1:] + B
        np.testing.assert_allclose(
            m.prob(m.from_irt(irt), THETA), m.prob(m.from_irt(irt2), A * THETA + B), atol=1e-12
        )


# ----------------------------------------------------------------------------- priors
@pytest.mark.parametrize(
    "prior, x",
    [
        (NormalPrior(0.5, 2.0), np.array([-1.0, 0.3, 2.0])),
        (LogNormalPrior(0.0, 0.5), np.array([0.4, 1.0, 2.5])),
        (BetaPrior(5, 17), np.array([0.05, 0.2, 0.6])),
        (LogitNormalPrior(-1, 1), np.array([0.05, 0.27, 0.6])),
    ],
)
def test_prior_derivatives(prior, x):
    lp, d1, d2 = prior.derivs(x)
    h = 1e-6
    lpp, d1p, _ = prior.derivs(x + h)
    lpm, d1m, _ = prior.derivs(x - h)
    np.testing.assert_allclose(d1, (lpp - lpm) / (2 * h), rtol=1e-5)
    np.testing.assert_allclose(d2, (d1p - d1m) / (2 * h), rtol=1e-5)


def test_beta_prior_normalised():
    from scipy import integrate

    pr = BetaPrior(5, 17)
    val, _ = integrate.quad(lambda c: np.exp(pr.derivs(np.array([c]))[0][0]), 0, 1)
    assert val == pytest.approx(1.0, rel=1e-8)


# ----------------------------------------------------------------------------- table helpers
def _table():
    return pd.DataFrame(
        {
            "model": ["2PL", "3PL", "GRM", "GPCM"],
            "a": [1.2, 0.9, 1.5, 0.7],
            "b": [0.1, -0.5, np.nan, np.nan],
            "c": [0.0, 0.2, 0.0, 0.0],
            "b1": [np.nan, np.nan, -1.0, -0.6],
            "b2": [np.nan, np.nan, 0.5, 0.9],
        },
        index=["i1", "i2", "i3", "i4"],
    )


def test_table_roundtrip_and_curves():
    tab = _table()
    mp = models_from_table(tab)
    assert [m.family for m, _ in mp.values()] == ["2PL", "3PL", "GRM", "GPCM"]
    t2 = item_table({k: m for k, (m, _) in mp.items()}, {k: p for k, (_, p) in mp.items()})
    np.testing.assert_allclose(t2.loc["i3", ["b1", "b2"]].astype(float), [-1.0, 0.5])
    np.testing.assert_allclose(t2.loc["i2", "d"], 0.9 * 0.5)
    # building again from slope-intercept columns gives the same parameters
    mp2 = models_from_table(t2)
    for k in mp:
        np.testing.assert_allclose(mp2[k][1], mp[k][1])
    th = np.linspace(-3, 3, 7)
    pr = probabilities(tab, th)
    assert pr["i3"].shape == (7, 3)
    es = expected_scores(tab, th)
    tcc = test_characteristic_curve(tab, th)
    np.testing.assert_allclose(tcc.to_numpy(), es.sum(axis=1).to_numpy())
    for it, P in pr.items():
        np.testing.assert_allclose(es[it].to_numpy(), P @ np.arange(P.shape[1]))
    inf = information(tab, th)
    assert (inf.to_numpy() > 0).all()


def test_simulate_matches_model_probabilities():
    tab = _table()
    rng = np.random.default_rng(7)
    n = 40_000
    theta = np.full(n, 0.3)
    X = simulate(tab, theta, rng)
    pr = probabilities(tab, [0.3])
    for it in tab.index:
        p = pr[it][0]
        obs = np.bincount(X[it].astype(int), minlength=len(p)) / n
        se = np.sqrt(p * (1 - p) / n)
        assert np.all(np.abs(obs - p) < 4.5 * se), it
    # reproducible from the seed
    pd.testing.assert_frame_equal(simulate(tab, theta[:50], 3), simulate(tab, theta[:50], 3))
