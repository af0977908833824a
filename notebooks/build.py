"""Build and execute the walk-through notebooks (run on demand: `make notebooks`).

Each notebook is written from the cells below and executed in place with
nbclient, so the committed .ipynb files carry real outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_province_and_contracts.ipynb": [
        ("md", "# 1. The synthetic province and the data contracts\n\nqualmon ships a synthetic province (183 county-level units in 21 prefectures) so that every stage can be run and checked against a known truth. Every table that crosses a stage boundary has a contract in `data_schema/`."),
        ("code", "import qualmon\nfrom qualmon.synth import province\n\nprov = province(seed=1, years=(2024, 2025), scale=0.1)\nprov.summary()"),
        ("code", "prov.tables['county_frame'].head()"),
        ("code", "sf = prov.tables['school_frame']\nsf[sf.year == 2024].groupby(['stage', 'locale']).agg(schools=('school_id', 'size'), median_grade4=('grade4_enrolment', 'median'), median_grade8=('grade8_enrolment', 'median'))"),
        ("md", "## Contracts\nOne validation entry point: `qualmon.validate(table, df_or_path)` returns the typed table or raises one `ContractError` listing every problem."),
        ("code", "qualmon.contract('student_roster')"),
        ("code", "bad = prov.tables['student_roster'].head(8).copy()\nbad.loc[1, 'grade'] = 5\nbad.loc[2, 'gender'] = None\nbad.loc[3, 'student_id'] = bad.loc[4, 'student_id']\ntry:\n    qualmon.validate('student_roster', bad)\nexcept qualmon.ContractError as err:\n    print(err)\n    problems = err.problems\nproblems"),
        ("md", "## The truth behind the data\n`prov.truth` holds what generated the province, for recovery checks: which counties decline, abilities, item parameters."),
        ("code", "prov.truth.counties[prov.truth.counties.declining | prov.truth.counties.tracked]"),
    ],
    "02_sampling_and_design.ipynb": [
        ("md", "# 2. The three-stage sample and design-based estimates\n\nA sampling plan is a TOML file or the same Python object; `SamplingPlan(year, seed)` alone is the provincial plan (about 10 % of counties, at most 18 primary and 12 junior schools per county, 30 or a multiple of 30 students per school)."),
        ("code", "from qualmon.synth import province\nfrom qualmon.sampling import SamplingPlan, draw, simulate_participation, inclusion_probabilities\n\nprov = province(seed=3, years=(2024,), scale=0.3, tested=None)\nplan = SamplingPlan(year=2024, seed=3)\nprint(plan.to_toml()[:900])"),
        ("code", "sample = simulate_participation(draw(plan, prov.tables), seed=3)\nsample.summary()"),
        ("code", "sample.counties[['county_id', 'prefecture_id', 'stratum', 'selection', 'prob_county', 'weight']].head(10)"),
        ("code", "sample.report.participation"),
        ("md", "Exact PPS inclusion probabilities with certainty units, as R's `sampling::inclusionprobabilities`:"),
        ("code", "import numpy as np\nsizes = np.array([1, 2, 5, 10, 50, 400, 30, 8])\npi = inclusion_probabilities(sizes, 4)\npi, pi.sum()"),
        ("md", "## Estimates with replicate standard errors\nThe sample's design carries the final weights and the 80 Fay replicate weights; every estimator is a short function of it. Here the (unknown in practice) true ability of the sampled students is the outcome, so the estimate can be set against the population value."),
        ("code", "truth = prov.truth.students[['student_id', 'general', 'grade']]\ndesign = sample.design(truth)\nest = design.mean('general', by='grade')\npop = prov.truth.students.groupby('grade')['general'].mean().rename('population')\nest.merge(pop, left_on='grade', right_index=True)"),
        ("md", "One sample of about 13 counties is one draw: with so few first-stage units the county effects dominate the error (large design effects). Over repeated samples (different seeds) the estimator is unbiased and the replicate SE tracks the spread of the estimates:"),
        ("code", "import pandas as pd\nrows = []\nfor sd in range(30):\n    s = simulate_participation(draw(plan.replace(seed=sd), prov.tables), seed=sd)\n    e = s.design(truth).mean('general', by='grade')\n    rows.append(e[['grade', 'estimate', 'se']].assign(seed=sd))\nmc = pd.concat(rows)\nmc.groupby('grade').agg(mean_estimate=('estimate', 'mean'), mc_sd=('estimate', 'std'), mean_se=('se', 'mean')).join(pop)"),
        ("md", "The same design object reproduces R's survey package on its own example data:"),
        ("code", "import pandas as pd, qualmon\napi = pd.read_csv('../../shared/datasets/survey_api/apiclus1.csv')\ndclus1 = qualmon.Design(api, clusters='dnum', weights='pw', fpc='fpc')\npd.concat([dclus1.mean('api00'), dclus1.replicate('JK1').mean('api00')])  # R: 644.17, SE 23.542 (Taylor), 26.329 (JK1)"),
    ],
    "03_scoring.ipynb": [
        ("md", "# 3. IRT scoring\n\n`qualmon.scoring.calibrate` fits Rasch/2PL/3PL/GRM/GPCM by marginal maximum likelihood with mirt's conventions. On mirt's LSAT7 data the 2PL estimates match mirt's published values (a = 0.988, 1.081, 1.706, 0.765, 0.736; d = 1.856, 0.808, 1.804, 0.486, 1.855)."),
        ("code", "import pandas as pd\nfrom qualmon import scoring\n\nlsat7 = pd.read_csv('../../shared/datasets/irt/LSAT7.csv')\ncal = scoring.calibrate(lsat7, model='2PL')\ncal.items.round(3)"),
        ("code", "cal.summary().round(3)"),
        ("code", "scoring.score(lsat7, cal, method='EAP').drop_duplicates().head()"),
        ("md", "## A monitoring year\n`score_year` calibrates every test of a year (weighted), links it to the previous administration through anchor items, draws plausible values with a latent regression and assigns the four levels."),
        ("code", "from qualmon.synth import province\nfrom qualmon.scoring.workflow import score_year\n\nprov = province(seed=5, years=(2022, 2025), scale=0.05)\ny2022 = score_year(prov.tables, 2022)\ny2025 = score_year(prov.tables, 2025, previous=y2022.tests)\npd.concat([y2022.summary(), y2025.summary()])"),
        ("code", "s = y2025.scores\npv = [f'pv{i}' for i in range(1, 6)]\nscale = y2025.tests[('mathematics', 4)].scale\nscoring.level_shares(scale.transform(s.loc[s.grade == 4, pv]))"),
    ],
}


def build(names: list[str] | None = None) -> None:
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src) for kind, src in cells]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
        nbformat.write(nb, HERE / name)
        print(f"executed {name}")


if __name__ == "__main__":
    build(sys.argv[1:] or None)
