"""The README's commands and its Python example work as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_first_code_block_is_the_two_commands_and_ci_calls_the_second():
    first = re.search(r"```[^\n]*\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert first == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci


def test_python_example_runs(monkeypatch):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    monkeypatch.chdir(ROOT)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    # what the example promises
    d = ns["d"]
    est = d.mean("api00")
    assert round(float(est["estimate"].iloc[0]), 2) == 662.29 and round(float(est["se"].iloc[0]), 4) == 9.4089
    assert ns["year"].scores["level"].between(1, 4).all()
