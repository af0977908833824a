"""Scoring a monitoring year: every test calibrated, linked, scored, levelled.

For each test (year × subject × grade) :func:`score_test`

1. calibrates the items with the model of the item bank (2PL/3PL with a
   Beta(5, 17) guessing prior, GRM/GPCM), weighted by the students' sampling
   weights; omitted responses count as wrong, not-reached as not presented;
2. links to the previous administration of the same subject and grade through
   the anchor items: a free calibration is linked by Stocking–Lord (jackknife
   linking error, robust-z drift check that drops drifting anchors), then the
   non-drifting anchors are held fixed at their base values (fixed-anchor
   calibration), so the new items and the new population land on the base
   scale; the first administration fixes the scale (latent N(0, 1));
3. scores students (EAP with SE) and draws plausible values with a latent
   regression on background variables (gender, left-behind, migrant, locale,
   an SES index and the school means of SES and of the proportion correct,
   with missing-value indicators), as PISA/NAEP condition;
4. puts everything on the reporting scale fixed in the base year (weighted
   pooled PVs: mean 500, SD 100) and assigns the four levels.

:func:`score_year` runs every test of a year and returns the ``scores``
contract table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from qualmon.scoring.levels import DEFAULT_CUTS, ReportingScale, assign_levels, level_numbers

__all__ = ["ScoringSpec", "TestResult", "YearScores", "background_variables", "score_test", "score_year"]


@dataclass(frozen=True)
class ScoringSpec:
    """How tests are scored (defaults follow PISA/NAEQ practice)."""

    quadpts: int = 61
    n_pv: int = 5
    omitted: str = "wrong"
    not_reached: str = "not_presented"
    guessing_prior: tuple = ("beta", 5, 17)
    scale_mean: float = 500.0
    scale_sd: float = 100.0
    cuts: tuple = tuple(DEFAULT_CUTS)
    link_method: str = "stocking_lord"
    drift_z: float = 2.7
    tol: float = 1e-4  # EM convergence: max parameter change (mirt's default)
    max_iter: int = 5000
    se: str = "crossprod"  # item-parameter SEs; "oakes" (observed information, as mirt) costs one E-step per parameter

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "ScoringSpec":
        unknown = set(m) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"ScoringSpec: unknown fields {sorted(unknown)}; expected some of {sorted(cls.__dataclass_fields__)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in m.items()})


@dataclass
class TestResult:
    """One test (year, subject, grade) scored."""

    year: int
    subject: str
    grade: int
    calibration: Any
    scores: pd.DataFrame  # index student_id: theta, se, pv1..pvM, scale_score, level
    scale: ReportingScale
    linking: Any = None  # LinkingResult against the previous administration
    base_year: int | None = None
    linking_error: float = 0.0  # SE of the year's mean on the reporting scale due to linking
    item_report: pd.DataFrame | None = None  # classical statistics, IRT parameters and fit, DIF classes per item

    def summary(self) -> dict:
        pv = self.scores.filter(like="pv")
        return {
            "year": self.year,
            "subject": self.subject,
            "grade": self.grade,
            "students": len(self.scores),
            "items": len(self.calibration.items),
            "anchors_fixed": 0 if self.linking is None else len(self.linking.anchors),
            "anchors_dropped": 0 if self.linking is None else len(self.linking.dropped),
            "latent_mean": float(self.calibration.latent.loc["mean", "estimate"]),
            "latent_sd": float(np.sqrt(self.calibration.latent.loc["variance", "estimate"])),
            "mean_scale_score_pv": float(self.scale.transform(pv).to_numpy().mean()),
            "linking_error": self.linking_error,
            "converged": bool(self.calibration.converged),
            "iterations": int(self.calibration.iterations),
            "base_year": self.base_year,
        }


@dataclass
class YearScores:
    """All tests of a year: the ``scores`` contract table, the item parameters and the per-test results."""

    year: int
    scores: pd.DataFrame
    items: pd.DataFrame
    tests: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame([t.summary() for t in self.tests.values()])

    def _repr_html_(self) -> str:  # pragma: no cover - display only
        return f"<b>Scores {self.year}</b>" + self.summary().to_html(index=False)


def _priors(models: Mapping[str, str], spec: ScoringSpec) -> dict:
    return {item: {"c": spec.guessing_prior} for item, m in models.items() if m == "3PL"}


def score_test(
    responses: pd.DataFrame,
    items: pd.DataFrame,
    *,
    year: int,
    subject: str,
    grade: int,
    weights: pd.Series | None = None,
    background: pd.DataFrame | None = None,
    base: TestResult | None = None,
    spec: ScoringSpec = ScoringSpec(),
    seed: int = 0,
) -> TestResult:
    """Calibrate, link, score and level one test.

    ``responses``: long rows of the test (``student_id``, ``item_id``,
    ``score``, ``status``); ``items``: its item-bank rows (``item_id``,
    ``model``); ``weights``: sampling weights indexed by ``student_id``;
    ``background``: conditioning covariates indexed by ``student_id``;
    ``base``: the previous administration of the same subject and grade.
    """
    from qualmon.scoring.calibration import calibrate
    from qualmon.scoring.linking import link
    from qualmon.scoring.persons import plausible_values, score

    resp = responses[["student_id", "item_id", "score", "status"]]
    if weights is not None:
        # normalised weights (sum = number of students), as PISA/NAEP calibrate: the
        # weighted likelihood keeps the sample's information, so priors and SEs keep their meaning
        students = pd.Index(resp["student_id"].unique())
        w = weights.reindex(students)
        if w.isna().any():
            raise ValueError(f"{int(w.isna().sum())} tested students have no weight, e.g. {list(students[w.isna().to_numpy()][:3])}")
        weights = w * (len(w) / w.sum())
    models = dict(zip(items["item_id"], items["model"].fillna("2PL")))
    present = set(resp["item_id"].unique())
    models = {k: v for k, v in models.items() if k in present}
    kw = dict(quadpts=spec.quadpts, omitted=spec.omitted, not_reached=spec.not_reached, progress=False, tol=spec.tol, max_iter=spec.max_iter)
    priors = _priors(models, spec) or None
    linking, linking_error, base_year = None, 0.0, year
    if base is None:
        cal = calibrate(resp, model=models, weights=weights, priors=priors, se=spec.se, **kw)
        scale = None
    else:
        base_items = base.calibration.items
        # anchors whose observed score categories differ from the base form's (a category
        # nobody reached this year) cannot be held fixed; they are estimated as new items
        scored = resp[resp["status"] == "scored"]
        n_cat_now = scored.groupby("item_id")["score"].nunique()
        anchors = [i for i in models if i in base_items.index and int(n_cat_now.get(i, 0)) == int(base_items.loc[i, "n_cat"])]
        if len(anchors) < 4:
            raise ValueError(f"score_test({year}, {subject}, grade {grade}): only {len(anchors)} anchor items shared with {base.year}; at least 4 are needed to link")
        free = calibrate(resp, model=models, weights=weights, priors=priors, se=None, **kw)
        linking = link(free.items, base_items, anchors=anchors, method=spec.link_method, drop_drift=True, drift_z=spec.drift_z)
        dropped = set(linking.dropped)
        kept = [a for a in anchors if a not in dropped]
        cal = calibrate(resp, model=models, weights=weights, priors=priors, se=spec.se, fixed=base_items.loc[kept], **kw)
        scale = base.scale
        base_year = base.base_year
    eap = score(resp, cal, method="EAP", omitted=spec.omitted, not_reached=spec.not_reached)
    bg = None
    if background is not None:
        bg = background.reindex(eap.index)
    pv = plausible_values(resp, cal, n=spec.n_pv, background=bg, seed=seed, weights=None if weights is None else weights.reindex(eap.index),
                          omitted=spec.omitted, not_reached=spec.not_reached)
    pv = pv.reindex(eap.index)
    if scale is None:
        w = None if weights is None else weights.reindex(pv.index)
        scale = ReportingScale.fit(pv, weights=w, mean=spec.scale_mean, sd=spec.scale_sd, base_year=year, label=f"{subject} grade {grade}")
    if linking is not None:  # SE of the new population's mean (0 on the free calibration's scale) due to linking
        linking_error = linking.linking_error(theta=0.0, scale=scale)
    out = pd.concat([eap[["theta", "se"]], pv], axis=1)
    out["scale_score"] = scale.transform(out["theta"])
    out["level"] = level_numbers(assign_levels(out["scale_score"], spec.cuts))
    out.index.name = "student_id"
    report = _item_report(resp, items, cal, weights, background, spec)
    return TestResult(year, subject, grade, cal, out, scale, linking, base_year, float(linking_error), report)


def _item_report(resp: pd.DataFrame, items: pd.DataFrame, cal, weights, background, spec: ScoringSpec) -> pd.DataFrame:
    """Per item: classical statistics and flags, IRT parameters and fit, and the
    ETS DIF class by gender (girls focal) and by locale (rural focal)."""
    from qualmon.scoring.items import dif, item_analysis

    r = resp
    score = r["score"].astype("float64")
    if spec.omitted == "wrong":
        score = score.where(r["status"] != "omitted", 0.0)
    wide = r.assign(_s=score).pivot(index="student_id", columns="item_id", values="_s")
    status = r.pivot(index="student_id", columns="item_id", values="status").reindex(index=wide.index, columns=wide.columns)
    maxs = items.set_index("item_id")["max_score"].reindex(wide.columns).astype(float)
    w = None if weights is None else weights.reindex(wide.index)
    ia = item_analysis(wide, max_scores=maxs, weights=w, status=status)
    cols = ["n", "p_value", "item_rest_r", "alpha_if_deleted", "omit_rate", "not_reached_rate", "flags"]
    rep = ia.items[[c for c in cols if c in ia.items.columns]].copy()
    irt = cal.items[[c for c in ("model", "a", "b", "c") if c in cal.items.columns]]
    rep = rep.join(irt, how="left")
    if cal.fit is not None:
        rep = rep.join(cal.fit[[c for c in ("p_S_X2", "infit", "outfit") if c in cal.fit.columns]], how="left")
    if background is not None:
        bg = background.reindex(wide.index)
        for name, col, focal in (("dif_gender", "girl", 1.0), ("dif_rural", "rural", 1.0)):
            if col in bg.columns and bg[col].nunique() == 2:
                try:
                    d = dif(wide, group=bg[col], focal=focal, max_scores=maxs, weights=w)
                    rep[name] = d.items["ets_class"].reindex(rep.index)
                except ValueError:
                    rep[name] = pd.NA
    rep.index.name = "item_id"
    return rep


def background_variables(tables: Mapping[str, pd.DataFrame], year: int, responses: pd.DataFrame | None = None) -> pd.DataFrame:
    """Conditioning variables per student (index ``student_id``) for the latent regression.

    gender (girl = 1), left-behind, migrant, locale dummies (town, rural), an
    SES index (mean of the standardised parent education, books at home and
    possessions), the school mean of the SES index and, when ``responses`` are
    given, the school mean of the proportion of the maximum score; missing
    values are set to the mean with an indicator column.
    """
    ros = tables["student_roster"]
    ros = ros[ros["year"] == year]
    sf = tables["school_frame"]
    sf = sf[sf["year"] == year][["school_id", "locale"]]
    q = tables.get("questionnaire_student")
    df = ros[["student_id", "school_id", "gender", "left_behind", "migrant"]].merge(sf, on="school_id", how="left")
    if q is not None and len(q):
        qy = q[q["year"] == year][["student_id", "parent_education", "books_at_home", "possessions"]]
        df = df.merge(qy, on="student_id", how="left")
    else:
        for c in ("parent_education", "books_at_home", "possessions"):
            df[c] = np.nan
    if responses is not None:
        df = df[df["student_id"].isin(set(responses["student_id"]))]
    parts = []
    for c in ("parent_education", "books_at_home", "possessions"):
        v = df[c].astype("float64")
        parts.append((v - v.mean()) / (v.std() if v.std() > 0 else 1.0))
    ses = pd.concat(parts, axis=1).mean(axis=1, skipna=True)
    out = pd.DataFrame(
        {
            "girl": (df["gender"] == "F").astype(float).to_numpy(),
            "left_behind": df["left_behind"].astype(float).to_numpy(),
            "migrant": df["migrant"].astype(float).to_numpy(),
            "town": (df["locale"] == "town").astype(float).to_numpy(),
            "rural": (df["locale"] == "rural").astype(float).to_numpy(),
            "ses": ses.to_numpy(),
        },
        index=pd.Index(df["student_id"].to_numpy(), name="student_id"),
    )
    school = df["school_id"].to_numpy()
    out["ses_missing"] = out["ses"].isna().astype(float)
    out["ses"] = out["ses"].fillna(out["ses"].mean() if out["ses"].notna().any() else 0.0)
    out["school_ses"] = pd.Series(out["ses"].to_numpy()).groupby(school).transform("mean").to_numpy()
    if responses is not None and len(responses):
        r = responses[responses["status"].isin(["scored", "omitted"])]
        got = r["score"].astype("float64").fillna(0.0)
        tot = r.assign(got=got).groupby("student_id")["got"].sum()
        mx = r.groupby("student_id")["max_score"].sum() if "max_score" in r else r.groupby("student_id").size()
        pc = (tot / mx).reindex(out.index)
        out["school_pc"] = pd.Series(pc.fillna(pc.mean()).to_numpy()).groupby(school).transform("mean").to_numpy()
    constant = [c for c in out.columns if out[c].nunique(dropna=False) <= 1]
    return out.drop(columns=constant)


def score_year(
    tables: Mapping[str, pd.DataFrame],
    year: int,
    *,
    weights: pd.Series | None = None,
    previous: Mapping[tuple[str, int], TestResult] | None = None,
    spec: ScoringSpec = ScoringSpec(),
    seed: int = 0,
) -> YearScores:
    """Score every test given in ``year``.

    ``tables`` holds ``responses``, ``item_bank``, ``student_roster``,
    ``school_frame`` and (optionally) ``questionnaire_student``; ``weights``:
    final student weights indexed by ``student_id`` (default: equal);
    ``previous``: (subject, grade) -> :class:`TestResult` of the last
    administration, for linking.  Returns :class:`YearScores` whose
    ``scores`` meets the ``scores`` contract.
    """
    resp = tables["responses"]
    resp = resp[resp["year"] == year]
    bank = tables["item_bank"]
    bank = bank[bank["year"] == year]
    if not len(resp):
        raise ValueError(f"score_year({year}): no responses for that year")
    resp = resp.merge(bank[["item_id", "subject", "grade", "max_score"]], on="item_id", how="left")
    if resp["subject"].isna().any():
        bad = resp.loc[resp["subject"].isna(), "item_id"].unique()[:5]
        raise ValueError(f"score_year({year}): responses to items missing from item_bank {year}: {list(bad)}")
    tests, frames, items = {}, [], []
    for k, ((subject, grade), r) in enumerate(resp.groupby(["subject", "grade"], sort=True)):
        grade = int(grade)
        bg = background_variables(tables, year, r)
        base = (previous or {}).get((subject, grade))
        try:
            res = score_test(r, bank[(bank["subject"] == subject) & (bank["grade"] == grade)], year=year, subject=subject, grade=grade,
                             weights=weights, background=bg, base=base, spec=spec, seed=seed * 1000 + k)
        except Exception as err:
            raise type(err)(f"scoring {subject} grade {grade}, {year}: {err}") from err
        tests[(subject, grade)] = res
        s = res.scores.reset_index()
        s.insert(0, "year", year)
        s.insert(2, "grade", grade)
        s.insert(3, "subject", subject)
        s["method"] = "EAP"
        frames.append(s)
        it = res.calibration.items.copy()
        it.insert(0, "year", year)
        it.insert(1, "subject", subject)
        it.insert(2, "grade", grade)
        items.append(it.reset_index().rename(columns={"index": "item_id", "item": "item_id"}))
    scores = pd.concat(frames, ignore_index=True)
    cols = ["year", "student_id", "grade", "subject", "theta", "se", "method"] + [c for c in scores.columns if c.startswith("pv")] + ["scale_score", "level"]
    return YearScores(year, scores[cols], pd.concat(items, ignore_index=True), tests)


# --------------------------------------------------------------------------- persistence
def write_year(result: YearScores, directory, *, tables: Mapping[str, pd.DataFrame] | None = None) -> dict:
    """Write a scored year: ``scores.parquet`` (contract, validated against the
    roster when ``tables`` are given), ``item_parameters.parquet``,
    ``scales.json`` (reporting scales and linking results, so a later year can
    link to this one) and ``tests.csv`` (the per-test summary)."""
    import json
    from pathlib import Path

    from qualmon.io import atomic_path, write_parquet, write_table

    directory = Path(directory)
    refs = {"student_roster": tables["student_roster"]} if tables and "student_roster" in tables else None
    paths = {"scores": write_table("scores", result.scores, directory / "scores.parquet", references=refs)}
    items = result.items.copy()
    for c in items.columns:
        if items[c].dtype == object:
            items[c] = items[c].astype(str)
    paths["item_parameters"] = write_parquet(items, directory / "item_parameters.parquet")
    meta = {
        f"{t.subject}|{t.grade}": {
            "year": t.year,
            "subject": t.subject,
            "grade": t.grade,
            "base_year": t.base_year,
            "scale": t.scale.to_dict(),
            "linking_error": t.linking_error,
            "linking": None if t.linking is None else {"A": t.linking.A, "B": t.linking.B, "se_A": t.linking.se_A, "se_B": t.linking.se_B,
                                                       "method": t.linking.method, "anchors": list(map(str, t.linking.anchors)), "dropped": list(map(str, t.linking.dropped))},
        }
        for t in result.tests.values()
    }
    with atomic_path(directory / "scales.json") as tmp:
        tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=2, default=float), encoding="utf-8")
    paths["scales"] = directory / "scales.json"
    reports = [t.item_report.reset_index().assign(year=t.year, subject=t.subject, grade=t.grade) for t in result.tests.values() if t.item_report is not None]
    if reports:
        rep = pd.concat(reports, ignore_index=True)
        for c in rep.columns:
            if rep[c].dtype == object:
                rep[c] = rep[c].astype(str)
        paths["item_report"] = write_parquet(rep, directory / "item_report.parquet")
    with atomic_path(directory / "tests.csv") as tmp:
        result.summary().to_csv(tmp, index=False)
    paths["tests"] = directory / "tests.csv"
    return paths


def read_bases(directory) -> dict[tuple[str, int], TestResult]:
    """The (subject, grade) -> :class:`TestResult` bases of an earlier scored year
    (item parameters and reporting scale), for linking a later year to it."""
    import json
    from pathlib import Path

    from qualmon.scoring.calibration import Calibration

    directory = Path(directory)
    meta_path, items_path = directory / "scales.json", directory / "item_parameters.parquet"
    for p in (meta_path, items_path):
        if not p.is_file():
            raise FileNotFoundError(f"not a scored year: {p} is missing (write it with qualmon score)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    items = pd.read_parquet(items_path)
    out = {}
    for m in meta.values():
        it = items[(items["subject"] == m["subject"]) & (items["grade"] == m["grade"])].set_index("item_id")
        it = it.drop(columns=["year", "subject", "grade"]).dropna(axis=1, how="all")
        cal = Calibration.from_items(it)
        out[(m["subject"], int(m["grade"]))] = TestResult(
            int(m["year"]), m["subject"], int(m["grade"]), cal, pd.DataFrame(), ReportingScale.from_dict(m["scale"]), None, m["base_year"], m["linking_error"]
        )
    return out
