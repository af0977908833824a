"""The sample report, as data (抽样报告).

:func:`sample_report` gathers what PISA's and TIMSS's sampling chapters
report, as DataFrames:

* ``allocation`` — by explicit county stratum (prefecture): counties in the
  frame and in the probability frame, the cycle allocation n_h, counties
  selected for the cycle, the expected number this year (sum of the yearly
  inclusion probabilities) and the realised one by kind of selection,
  sampled schools and students by grade.
* ``sizes`` — expected against realised sizes: counties (sum of pi_c),
  schools by grade (sum over the frame of pi_c pi_{s|c}), students by grade
  (sum of pi_c pi_{s|c} m_s, m_s from the school's frame enrolment), and the
  grade enrolment of the frame against the sums of base and final weights.
* ``participation`` and ``participation_by_county`` — school participation
  before and after replacement, unweighted (share of sampled schools) and
  weighted (PISA: sum of w_s E_s over participating schools / over sampled
  schools, w_s the school base weight and E_s the grade enrolment), student
  participation unweighted and weighted (student base weights, in the
  participating schools), and the overall rates (weighted school rate x
  weighted student rate), as TIMSS reports them.
* ``weights`` — by grade: number, sum, minimum, median, maximum, coefficient
  of variation and Kish's effective sample size (sum w)^2 / sum w^2 with the
  weighting design effect n / n_eff.
* ``design_effects`` — design effects of means by grade (replicate variance
  over the simple-random-sample variance of the same number of students,
  R's ``deff``): of school-level variables (urban school; school grade
  enrolment) and of any outcome given (e.g. true ability in tests).
* ``coverage`` — counties left out of the year's sample (national-sample
  counties under ``national="exclude"``) with their enrolment.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

__all__ = ["SampleReport", "sample_report"]


@dataclass
class SampleReport:
    """The sample report: one DataFrame per topic (see the module docstring)."""

    allocation: pd.DataFrame
    sizes: pd.DataFrame
    participation: pd.DataFrame
    participation_by_county: pd.DataFrame
    weights: pd.DataFrame
    design_effects: pd.DataFrame
    coverage: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def summary(self) -> pd.DataFrame:
        """Headline figures: sizes, participation and design effects by grade."""
        rows = []
        for r in self.sizes.itertuples(index=False):
            rows.append({"measure": f"{r.stage} ({r.quantity})", "grade": r.grade, "expected": r.expected,
                         "realised": r.realised})
        for r in self.participation.itertuples(index=False):
            for m in ("school_before_weighted", "school_after_weighted", "student_weighted", "overall_after_weighted"):
                rows.append({"measure": m.replace("_", " "), "grade": r.grade, "expected": np.nan,
                             "realised": getattr(r, m)})
        for r in self.design_effects.itertuples(index=False):
            rows.append({"measure": f"design effect of mean {r.variable}", "grade": r.grade, "expected": np.nan,
                         "realised": r.deff})
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        return "<b>Sample report</b>" + self.summary().to_html(index=False)


def _participation(sch: pd.DataFrame, stu: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Participation rates by the ``by`` columns (vectorised group sums)."""
    orig_mask = (sch["role"] == "original").to_numpy()
    counted = sch["counted"].to_numpy(dtype=bool)
    okey = pd.factorize(sch["original_school_id"].astype(str) + "/" + sch["grade"].astype(str))[0]
    cov = np.zeros(okey.max() + 1 if okey.size else 0, dtype=bool)
    np.logical_or.at(cov, okey, counted)
    o = sch.loc[orig_mask, by].copy()
    m = (sch["enrolment"] / (sch["prob_county"] * sch["prob_school"])).to_numpy()[orig_mask]
    own = counted[orig_mask]
    covd = cov[okey[orig_mask]]
    o["n"] = 1
    o["own"] = own.astype(int)
    o["cov"] = covd.astype(int)
    o["m"] = m
    o["m_own"] = np.where(own, m, 0.0)
    o["m_cov"] = np.where(covd, m, 0.0)
    so = o.groupby(by, sort=True)[["n", "own", "cov", "m", "m_own", "m_cov"]].sum()
    counted_keys = sch.loc[counted, ["school_id", "grade"]]
    in_counted = stu[["school_id", "grade"]].merge(counted_keys.assign(_c=True), on=["school_id", "grade"],
                                                   how="left")["_c"].fillna(False).to_numpy(dtype=bool)
    st = stu.loc[in_counted, by].copy()
    p = stu["participated"].to_numpy(dtype=bool)[in_counted]
    bw = stu["base_weight"].to_numpy()[in_counted]
    st["n"] = 1
    st["p"] = p.astype(int)
    st["w"] = bw
    st["wp"] = np.where(p, bw, 0.0)
    ss = st.groupby(by, sort=True)[["n", "p", "w", "wp"]].sum().reindex(so.index).fillna(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = pd.DataFrame({
            "schools_sampled": so["n"].astype(int),
            "schools_participating_original": so["own"].astype(int),
            "schools_participating_after_replacement": so["cov"].astype(int),
            "school_before_unweighted": so["own"] / so["n"],
            "school_before_weighted": so["m_own"] / so["m"],
            "school_after_unweighted": so["cov"] / so["n"],
            "school_after_weighted": so["m_cov"] / so["m"],
            "students_sampled": ss["n"].astype(int),
            "students_participating": ss["p"].astype(int),
            "student_unweighted": ss["p"] / ss["n"].where(ss["n"] > 0),
            "student_weighted": ss["wp"] / ss["w"].where(ss["w"] > 0),
        }, index=so.index)
    out["overall_before_weighted"] = out["school_before_weighted"] * out["student_weighted"]
    out["overall_after_weighted"] = out["school_after_weighted"] * out["student_weighted"]
    return out.reset_index()


def sample_report(sample, outcome: pd.DataFrame | None = None) -> SampleReport:
    """Build the :class:`SampleReport` of a :class:`~qualmon.sampling.stages.Sample`.

    ``outcome``: optional DataFrame with ``year``, ``student_id`` and numeric
    columns whose means' design effects are reported as well.
    """
    plan = sample.plan
    cyc = sample.cycle
    sch = sample.schools
    stu = sample.students
    uni = sample._universe
    grades = list(plan.grades)
    # ----------------------------------------------------------- allocation
    orig = sch[sch["role"] == "original"]
    c_str = cyc.set_index("county_id")["stratum"]
    alloc = cyc.groupby("stratum", sort=True).agg(
        prefecture_id=("prefecture_id", "first"),
        counties_frame=("county_id", "size"),
        counties_probability_frame=("county_class", lambda s: int((s == "frame").sum())),
        cycle_allocation=("n_stratum", "max"),
        cycle_selected=("cycle_selected", "sum"),
        expected_this_year=("prob_county", "sum"),
    )
    for kind in ("sampled", "tracked", "certainty", "national"):
        alloc[f"counties_{kind}"] = cyc[cyc["selection"] == kind].groupby("stratum").size().reindex(alloc.index).fillna(0).astype(int)
    alloc["counties_this_year"] = cyc[cyc["selection"] != ""].groupby("stratum").size().reindex(alloc.index).fillna(0).astype(int)
    alloc["counties_excluded"] = cyc[cyc["excluded"]].groupby("stratum").size().reindex(alloc.index).fillna(0).astype(int)
    for g in grades:
        og = orig[orig["grade"] == g]
        alloc[f"schools_g{g}"] = og.groupby(c_str.reindex(og["county_id"]).to_numpy()).size().reindex(alloc.index).fillna(0).astype(int)
        sg = stu[stu["grade"] == g]
        alloc[f"students_g{g}"] = sg.groupby(c_str.reindex(sg["county_id"]).to_numpy()).size().reindex(alloc.index).fillna(0).astype(int)
    allocation = alloc.reset_index()
    # ----------------------------------------------------------- sizes
    rows = [{"stage": "counties", "grade": 0, "quantity": "number", "expected": float(cyc["prob_county"].sum()),
             "realised": float(len(sample.counties))}]
    for g in grades:
        ug = uni[uni["grade"] == g]
        pc = ug["prob_county_year"].to_numpy()
        rows.append({"stage": "schools", "grade": g, "quantity": "number",
                     "expected": float(np.sum(pc * ug["pik"].to_numpy())),
                     "realised": float((orig["grade"] == g).sum())})
        sg = stu[stu["grade"] == g]
        rows.append({"stage": "students", "grade": g, "quantity": "sampled",
                     "expected": float(np.sum(pc * ug["pik"].to_numpy() * ug["students_expected"].to_numpy())),
                     "realised": float(len(sg))})
        rows.append({"stage": "students", "grade": g, "quantity": "participating", "expected": np.nan,
                     "realised": float(sg["participated"].sum())})
        rows.append({"stage": "enrolment", "grade": g, "quantity": "sum of base weights",
                     "expected": float(ug["enrolment"].sum()),
                     "realised": float(sg["base_weight"].sum())})
        rows.append({"stage": "enrolment", "grade": g, "quantity": "sum of final weights",
                     "expected": float(ug["enrolment"].sum()), "realised": float(sg["weight"].sum())})
    sizes = pd.DataFrame(rows)
    # ----------------------------------------------------------- participation
    participation = _participation(sch, stu, ["grade"])
    participation_by_county = _participation(sch, stu, ["grade", "county_id"])
    # ----------------------------------------------------------- weights
    wrows = []
    for g in grades:
        w = stu.loc[(stu["grade"] == g) & (stu["weight"] > 0), "weight"].to_numpy()
        n = w.size
        neff = w.sum() ** 2 / np.sum(w * w) if n else np.nan
        wrows.append({"grade": g, "n": n, "sum": float(w.sum()), "min": float(w.min()) if n else np.nan,
                      "median": float(np.median(w)) if n else np.nan, "max": float(w.max()) if n else np.nan,
                      "cv": float(w.std() / w.mean()) if n else np.nan, "kish_effective_n": float(neff),
                      "weighting_deff": float(n / neff) if n else np.nan,
                      "frame_enrolment": float(uni.loc[uni["grade"] == g, "enrolment"].sum())})
    weights = pd.DataFrame(wrows)
    # ----------------------------------------------------------- design effects
    design_effects = _design_effects(sample, outcome)
    # ----------------------------------------------------------- coverage
    ex = sample.excluded if sample.excluded is not None else pd.DataFrame(columns=["county_id"])
    cov = ex.copy()
    for g in grades:
        e = uni[(uni["grade"] == g)].groupby("county_id")["enrolment"].sum()
        cov[f"enrolment_g{g}"] = e.reindex(cov["county_id"]).fillna(0).to_numpy()
        tot = float(uni.loc[uni["grade"] == g, "enrolment"].sum())
        cov[f"share_g{g}"] = cov[f"enrolment_g{g}"] / tot if tot else np.nan
    return SampleReport(allocation, sizes, participation, participation_by_county, weights, design_effects, cov)


def _design_effects(sample, outcome) -> pd.DataFrame:
    stu = sample.students
    part = stu[stu["participated"].to_numpy(dtype=bool) & (stu["weight"].to_numpy() > 0)]
    if part.empty:
        return pd.DataFrame(columns=["variable", "grade", "estimate", "se", "deff"])
    sch_e = sample.schools.drop_duplicates(["school_id", "grade"]).set_index(["school_id", "grade"])["enrolment"]
    data = pd.DataFrame({
        "year": part["year"].to_numpy(), "student_id": part["student_id"].to_numpy(),
        "urban_school": (part["locale"].astype(str) == "urban").to_numpy(dtype=float),
        "school_enrolment": sch_e.reindex(pd.MultiIndex.from_arrays([part["school_id"], part["grade"]])).to_numpy(dtype=float),
    })
    variables = ["urban_school", "school_enrolment"]
    if outcome is not None:
        num = [c for c in outcome.columns if c not in ("year", "student_id", "grade")
               and pd.api.types.is_numeric_dtype(outcome[c]) and not pd.api.types.is_bool_dtype(outcome[c])]
        o = outcome[["year", "student_id", *num]].copy()
        o["student_id"] = o["student_id"].astype(str)
        o["year"] = o["year"].astype(data["year"].dtype)
        data = data.merge(o, on=["year", "student_id"], how="left")
        variables += num
    d = sample.design(data)
    out = d.mean(variables, by="grade", na_rm=True)
    keep = [c for c in ("variable", "grade", "estimate", "se", "n", "deff") if c in out.columns]
    return out[keep].reset_index(drop=True)
