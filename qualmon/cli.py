"""The ``qualmon`` command.

Exit status: 0 on success, 1 on a data problem (a table that fails its
contract, a missing or unreadable file), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["main"]

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: exit 2 with a short hint
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def _years(text: str) -> list[int]:
    """'2024' or '2021-2026' or '2021,2024'."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise argparse.ArgumentTypeError(f"expected years such as 2024, 2021-2026 or 2021,2024; got {text!r}")
    return out


def _years_arg(text: str) -> list[int]:
    try:
        return _years(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected years such as 2024, 2021-2026 or 2021,2024; got {text!r}") from None


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- verbs
def _cmd_synth(args) -> int:
    from qualmon.synth import province

    t0 = time.perf_counter()
    years = [y for chunk in args.years for y in chunk] if args.years else None
    kw = {"years": years} if years else {}
    prov = province(seed=args.seed, scale=args.scale, **kw)
    _log(f"generated synthetic province (seed {args.seed}, years {list(prov.years)}) in {time.perf_counter() - t0:.1f} s", args.quiet)
    paths = prov.write(args.out)
    _log(f"wrote {len(paths)} tables under {args.out}/", args.quiet)
    return EXIT_OK


def _cmd_validate(args) -> int:
    from qualmon.schema import contract, contract_names, validate

    if args.table not in contract_names():
        print(f"qualmon validate: unknown table {args.table!r}; known tables: {', '.join(contract_names())}", file=sys.stderr)
        return EXIT_USAGE
    path = Path(args.file)
    refs = {}
    for spec in args.ref or []:
        if "=" not in spec:
            print(f"qualmon validate: --ref expects NAME=FILE, got {spec!r}", file=sys.stderr)
            return EXIT_USAGE
        name, f = spec.split("=", 1)
        refs[name] = f
    if not args.no_references:
        for fk in contract(args.table).foreign_keys:
            ref = fk["reference"]["resource"]
            sibling = path.parent / f"{ref}.parquet"
            if ref not in refs and sibling.is_file() and sibling.resolve() != path.resolve():
                refs[ref] = sibling
    df = validate(args.table, path, references=refs or None)
    checked = f" (foreign keys checked against {', '.join(sorted(refs))})" if refs else ""
    print(f"{path}: {len(df)} rows meet the contract '{args.table}'{checked}")
    return EXIT_OK


def _cmd_sample(args) -> int:
    from qualmon.sampling import SamplingPlan, draw

    plan = SamplingPlan.from_toml(args.plan)
    if args.year is not None or args.seed is not None:
        plan = plan.replace(**{k: v for k, v in (("year", args.year), ("seed", args.seed)) if v is not None})
    frames = Path(args.frames)
    if not frames.is_dir():
        raise FileNotFoundError(f"--frames {frames}: no such folder")
    t0 = time.perf_counter()
    sample = draw(plan, frames)
    paths = sample.write(Path(args.out))
    _log(f"drew the {plan.year} sample in {time.perf_counter() - t0:.1f} s; wrote {len(paths)} files under {args.out}/", args.quiet)
    if not args.quiet:
        print(sample.summary().to_string(index=False))
    return EXIT_OK


def _cmd_score(args) -> int:
    from qualmon.io import read_raw
    from qualmon.schema import contract, validate_tables
    from qualmon.scoring.workflow import ScoringSpec, read_bases, score_year, write_year

    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder")
    names = ["responses", "item_bank", "student_roster", "school_frame", "questionnaire_student"]
    raw = {}
    for n in names:
        f = data / f"{n}.parquet"
        if f.is_file():
            raw[n] = read_raw(f, contract(n))
        elif n != "questionnaire_student":
            raise FileNotFoundError(f"--data {data}: {f.name} is missing (the {n} table is needed to score)")
    tables = validate_tables(raw)
    weights = None
    if args.weights:
        w = read_raw(args.weights)
        if not {"student_id", "weight"} <= set(w.columns):
            raise ValueError(f"--weights {args.weights}: expected columns student_id and weight (e.g. sample_students.parquet)")
        if "year" in w.columns:
            w = w[w["year"] == args.year]
        weights = w.set_index("student_id")["weight"].astype(float)
    spec = ScoringSpec()
    if args.spec:
        import tomllib

        with open(args.spec, "rb") as fh:
            spec = ScoringSpec.from_mapping(tomllib.load(fh).get("scoring", {}))
    previous = {}
    for prev in args.previous or []:
        previous.update(read_bases(prev))
    t0 = time.perf_counter()
    result = score_year(tables, args.year, weights=weights, previous=previous, spec=spec, seed=args.seed)
    write_year(result, Path(args.out), tables=tables)
    _log(f"scored {args.year}: {len(result.tests)} tests, {result.scores['student_id'].nunique():,} students "
         f"({time.perf_counter() - t0:.1f} s); wrote {args.out}/scores.parquet", args.quiet)
    if not args.quiet:
        print(result.summary().to_string(index=False))
    return EXIT_OK


def _cmd_demo(args) -> int:
    from qualmon.pipeline import run_demo

    run_demo(out=Path(args.out), seed=args.seed, years=[y for chunk in args.years for y in chunk] if args.years else None, scale=args.scale, quiet=args.quiet)
    return EXIT_OK


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="qualmon",
        description="Compulsory-education quality monitoring (义务教育质量监测): sampling, scoring, analysis and reports.",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors and results")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("synth", help="generate the synthetic province and write its tables", description="Generate the built-in synthetic province and write each table as DIR/<table>.parquet and the truth under DIR/truth/.")
    s.add_argument("--seed", type=int, required=True, help="random seed (same seed, same bytes)")
    s.add_argument("--years", type=_years_arg, action="append", help="years, e.g. 2024, 2021-2026 or 2021,2024 (default: 2021-2026)")
    s.add_argument("--scale", type=float, default=1.0, help="share of the province's students to generate (default 1.0)")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=_cmd_synth)

    v = sub.add_parser("validate", help="check a table file against its contract", description="Check a Parquet, CSV or Excel file against the contract TABLE (a file stem in data_schema/). Foreign keys are checked against sibling <table>.parquet files when present.")
    v.add_argument("table", metavar="TABLE", help="contract name, e.g. student_roster")
    v.add_argument("file", metavar="FILE", help="the file to check")
    v.add_argument("--ref", action="append", metavar="NAME=FILE", help="a referenced table for the foreign-key check (repeatable)")
    v.add_argument("--no-references", action="store_true", help="do not look for referenced tables next to FILE")
    v.set_defaults(func=_cmd_validate)

    sp = sub.add_parser("sample", help="draw the three-stage sample of a sampling plan", description="Draw the three-stage PPS sample (counties, schools, students) of PLAN.toml from the frames in DIR (county_frame, school_frame, student_roster as Parquet) and write sample_counties, sample_schools, sample_students (with replicate weights) and the sample report. Same plan, seed and frames give the same bytes.")
    sp.add_argument("plan", metavar="PLAN.toml", help="the sampling plan (see sampling/plans/provincial.toml)")
    sp.add_argument("--frames", required=True, metavar="DIR", help="folder with county_frame, school_frame and student_roster Parquet files")
    sp.add_argument("--out", required=True, metavar="DIR", help="output folder")
    sp.add_argument("--year", type=int, help="override the plan's year")
    sp.add_argument("--seed", type=int, help="override the plan's seed")
    sp.set_defaults(func=_cmd_sample)

    sc = sub.add_parser("score", help="calibrate, link and score the tests of a year", description="Calibrate every test of YEAR (IRT, weighted), link it to earlier years through anchor items, score students (EAP, plausible values), and write DIR/scores.parquet, item_parameters.parquet and scales.json.")
    sc.add_argument("--data", required=True, help="folder with responses, item_bank, student_roster, school_frame (and questionnaire_student) as Parquet")
    sc.add_argument("--year", type=int, required=True, help="the year to score")
    sc.add_argument("--out", required=True, help="output folder")
    sc.add_argument("--previous", action="append", metavar="DIR", help="output folder of an earlier 'qualmon score' run to link to (repeatable)")
    sc.add_argument("--weights", metavar="FILE", help="student weights (e.g. sample_students.parquet with student_id, weight)")
    sc.add_argument("--spec", metavar="TOML", help="a TOML file with a [scoring] table (quadpts, n_pv, cuts, ...)")
    sc.add_argument("--seed", type=int, default=0, help="seed of the plausible values (default 0)")
    sc.set_defaults(func=_cmd_score)

    d = sub.add_parser("demo", help="run the full monitoring cycle on the synthetic province", description="Run the full monitoring cycle on the built-in synthetic province and write everything under DIR (inputs and truth under DIR/data/).")
    d.add_argument("--out", default="out", help="output folder (default out/)")
    d.add_argument("--seed", type=int, default=20240501, help="random seed (default 20240501)")
    d.add_argument("--years", type=_years_arg, action="append", help="years (default 2021-2026: two three-year cycles)")
    d.add_argument("--scale", type=float, default=1.0, help="share of the province's students (default 1.0)")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from qualmon.schema import ContractError

    try:
        return int(args.func(args) or 0)
    except ContractError as e:
        print(f"qualmon {args.command}: data problem\n{e}", file=sys.stderr)
        return EXIT_DATA
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"qualmon {args.command}: {e}", file=sys.stderr)
        return EXIT_DATA
    except (ValueError, KeyError, OSError) as e:
        print(f"qualmon {args.command}: data problem: {e}", file=sys.stderr)
        return EXIT_DATA


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
