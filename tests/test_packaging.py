"""The built wheel holds the same tree as the editable install."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = {"qualmon": "qualmon", "qualmon.sampling": "sampling", "qualmon.scoring": "scoring", "qualmon.reports": "reports", "qualmon.data_schema": "data_schema"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (whl,) = out.glob("qualmon-*.whl")
    return whl


def test_wheel_tree_equals_source_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for pkg, folder in SUBPACKAGES.items():
        base = pkg.replace(".", "/")
        for f in (ROOT / folder).rglob("*"):
            if f.suffix in (".py", ".json", ".toml") and f.is_file() and "__pycache__" not in f.parts:
                expected.add(f"{base}/{f.relative_to(ROOT / folder).as_posix()}")
    in_wheel = {n for n in names if n.startswith("qualmon/") and n.rsplit(".", 1)[-1] in ("py", "json", "toml")}
    assert in_wheel == expected
    # the unrelated PyPI names must not become top-level packages
    assert not any(n.split("/")[0] in {"sampling", "scoring", "reports", "data_schema"} for n in names)


def test_wheel_in_a_fresh_venv_imports_everything(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    # install the wheel with this interpreter's pip, into the new environment only
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    # third-party dependencies come from the test environment (a plain path, so its editable hooks stay inactive)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = textwrap.dedent(
        f"""
        import importlib, pathlib
        site = pathlib.Path({str(site)!r}).resolve()
        for name in {sorted(SUBPACKAGES)!r}:
            mod = importlib.import_module(name)
            assert site in pathlib.Path(mod.__file__).resolve().parents, (name, mod.__file__)
        import qualmon
        from qualmon.schema import contract_names, contract
        names = contract_names()
        assert {{'student_roster', 'responses', 'scores'}} <= set(names), names
        assert site in pathlib.Path(contract('responses').path).resolve().parents
        from qualmon.sampling import SamplingPlan, DEFAULT_PLAN_PATH
        assert site in pathlib.Path(DEFAULT_PLAN_PATH).resolve().parents
        assert SamplingPlan.from_toml(DEFAULT_PLAN_PATH).county_fraction == 0.1
        print(len(names))
        """
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) == len(list((ROOT / "data_schema").glob("*.json")))
