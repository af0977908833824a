"""Table contracts and validation.

Every table that crosses a stage boundary has a contract in ``data_schema/``
(shipped as the package data ``qualmon.data_schema``): a Frictionless Table
Schema JSON file, readable and editable by hand, with

* ``fields``: name, logical ``type`` (integer, number, string, boolean),
  ``arrowType`` (the Arrow type written to Parquet), a Chinese and English
  ``description`` and ``constraints`` (``required`` = not nullable, ``enum``,
  ``minimum`` / ``maximum`` (``exclusiveMinimum``), ``pattern``);
* ``primaryKey`` and ``foreignKeys`` (checked when the referenced table is
  given);
* ``rules``: row-wise conditions written as pandas expressions;
* ``additionalColumns``: whether columns beyond the listed ones are allowed.

:func:`validate` is the single entry point.  It reports every problem at once
in one :class:`ContractError`, whose ``problems`` attribute is a DataFrame with
one row per (column, check).  Value checks are delegated to pandera (lazy
validation); types, rules and foreign keys are checked here.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = [
    "Contract",
    "ContractError",
    "contract",
    "contract_names",
    "validate",
    "validate_tables",
]

_ARROW = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
}
_NULLABLE_INT = {"int8": "Int8", "int16": "Int16", "int32": "Int32", "int64": "Int64"}
_MAX_EXAMPLES = 5


# --------------------------------------------------------------------------- contracts
@dataclass(frozen=True)
class Field:
    """One column of a contract."""

    name: str
    type: str
    arrow_type: str
    required: bool
    constraints: Mapping[str, Any]
    description: Mapping[str, str]

    @property
    def pandas_dtype(self) -> Any:
        """The dtype :func:`validate` returns for this column."""
        if self.type == "integer":
            return np.dtype(self.arrow_type) if self.required else _NULLABLE_INT[self.arrow_type]
        if self.type == "number":
            return np.dtype(self.arrow_type)
        if self.type == "boolean":
            return np.dtype(bool) if self.required else "boolean"
        return pd.StringDtype(na_value=np.nan)

    def expected(self) -> str:
        """Human-readable statement of what the column must hold."""
        c = self.constraints
        parts = [self.arrow_type]
        if "enum" in c:
            parts.append("one of {" + ", ".join(map(str, c["enum"])) + "}")
        if "minimum" in c:
            parts.append((">" if c.get("exclusiveMinimum") else ">=") + f" {c['minimum']}")
        if "maximum" in c:
            parts.append(f"<= {c['maximum']}")
        if "pattern" in c:
            parts.append(f"matching {c['pattern']}")
        parts.append("not null" if self.required else "nullable")
        return ", ".join(parts)


@dataclass(frozen=True)
class Contract:
    """A table contract loaded from ``data_schema/<name>.json``."""

    name: str
    title: Mapping[str, str]
    description: Mapping[str, str]
    fields: tuple[Field, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[dict, ...]
    rules: tuple[dict, ...]
    additional_columns: bool
    path: str = field(default="", compare=False)

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"contract {self.name!r} has no column {name!r}")

    def arrow_schema(self, extra: pa.Schema | None = None) -> pa.Schema:
        """Arrow schema of the contract's columns (plus ``extra`` fields)."""
        fields = [pa.field(f.name, _ARROW[f.arrow_type], nullable=not f.required) for f in self.fields]
        if extra is not None:
            fields += [f for f in extra if f.name not in self.columns]
        return pa.schema(fields)

    def empty(self) -> pd.DataFrame:
        """An empty DataFrame with the contract's columns and dtypes."""
        return pd.DataFrame({f.name: pd.Series([], dtype=f.pandas_dtype) for f in self.fields})

    def describe(self, lang: str = "en") -> pd.DataFrame:
        """The contract as a table (one row per column), for people."""
        return pd.DataFrame(
            {
                "column": [f.name for f in self.fields],
                "arrow_type": [f.arrow_type for f in self.fields],
                "expected": [f.expected() for f in self.fields],
                "description": [f.description.get(lang, "") for f in self.fields],
            }
        )

    def _repr_html_(self) -> str:  # pragma: no cover - display only
        head = f"<b>{self.name}</b> — {self.title.get('zh', '')} / {self.title.get('en', '')}"
        return head + self.describe().to_html(index=False)


def _contract_dir() -> Path:
    return Path(str(resources.files("qualmon.data_schema")))


@functools.cache
def contract_names() -> tuple[str, ...]:
    """Names of all contracts shipped in ``qualmon.data_schema``."""
    return tuple(sorted(p.stem for p in _contract_dir().glob("*.json")))


@functools.cache
def contract(name: str) -> Contract:
    """Load the contract ``name`` (a file stem in ``data_schema/``)."""
    path = _contract_dir() / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no contract named {name!r}; known contracts: {', '.join(contract_names())}")
    raw = json.loads(path.read_text(encoding="utf-8"))
    fields = tuple(
        Field(
            name=f["name"],
            type=f["type"],
            arrow_type=f["arrowType"],
            required=bool(f.get("constraints", {}).get("required", False)),
            constraints={k: v for k, v in f.get("constraints", {}).items() if k != "required"},
            description=f.get("description", {}),
        )
        for f in raw["fields"]
    )
    return Contract(
        name=raw["name"],
        title=raw.get("title", {}),
        description=raw.get("description", {}),
        fields=fields,
        primary_key=tuple(raw.get("primaryKey", ())),
        foreign_keys=tuple(raw.get("foreignKeys", ())),
        rules=tuple(raw.get("rules", ())),
        additional_columns=bool(raw.get("additionalColumns", True)),
        path=str(path),
    )


# --------------------------------------------------------------------------- errors
_PROBLEM_COLUMNS = ["table", "column", "check", "expected", "n_rows", "found", "rows"]


class ContractError(ValueError):
    """A table does not meet its contract.

    ``problems`` is a DataFrame with columns ``table``, ``column``, ``check``,
    ``expected``, ``n_rows`` (rows affected), ``found`` (a few offending
    values) and ``rows`` (a few offending row keys).
    """

    def __init__(self, problems: pd.DataFrame):
        self.problems = problems.reset_index(drop=True)
        tables = list(dict.fromkeys(self.problems["table"]))
        self.table = tables[0] if len(tables) == 1 else tables
        super().__init__(self._message())

    def _message(self) -> str:
        lines = []
        for table, grp in self.problems.groupby("table", sort=False):
            lines.append(f"table '{table}' does not meet its contract ({len(grp)} problem{'s' * (len(grp) != 1)}):")
            for p in grp.itertuples(index=False):
                line = f"  - column '{p.column}' [{p.check}]: "
                if p.n_rows:
                    line += f"{p.n_rows} row{'s' * (p.n_rows != 1)}; "
                line += f"expected {p.expected}"
                if p.found:
                    line += f"; found {p.found}"
                if p.rows:
                    line += f"; e.g. rows {p.rows}"
                lines.append(line)
        return "\n".join(lines)


class _Problems:
    """Collects problems for one table."""

    def __init__(self, table: str, df: pd.DataFrame | None, key: Iterable[str]):
        self.table = table
        self.df = df
        self.key = [k for k in key if df is not None and k in df.columns]
        self.rows: list[dict] = []

    def keys_of(self, positions: np.ndarray) -> str:
        if self.df is None or len(positions) == 0:
            return ""
        positions = np.asarray(positions)[:_MAX_EXAMPLES]
        if not self.key:
            return ", ".join(f"#{int(i)}" for i in positions)
        sub = self.df.iloc[positions][self.key]
        return ", ".join("(" + ", ".join(f"{k}={v}" for k, v in zip(self.key, row)) + ")" for row in sub.itertuples(index=False))

    def add(self, column: str, check: str, expected: str, positions=(), found: Iterable = ()) -> None:
        positions = np.unique(np.asarray(positions, dtype=np.int64))
        found = list(dict.fromkeys("null" if _isnull(v) else repr(v) if isinstance(v, str) else str(v) for v in found))
        self.rows.append(
            {
                "table": self.table,
                "column": column,
                "check": check,
                "expected": expected,
                "n_rows": int(len(positions)),
                "found": ", ".join(found[:_MAX_EXAMPLES]) + (", ..." if len(found) > _MAX_EXAMPLES else ""),
                "rows": self.keys_of(positions),
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=_PROBLEM_COLUMNS)


def _isnull(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- type checks
def _coerce_column(s: pd.Series, f: Field) -> tuple[pd.Series | None, np.ndarray, list]:
    """Return (coerced series or None, positions of bad values, examples).

    A column is coerced to ``f.pandas_dtype`` when that loses nothing;
    otherwise the offending positions are returned.
    """
    nonnull = s.notna().to_numpy()
    kind = s.dtype.kind if isinstance(s.dtype, np.dtype) else None
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(s.cat.categories.dtype if len(s.cat.categories) else object)
        kind = s.dtype.kind if isinstance(s.dtype, np.dtype) else None

    if f.type in ("integer", "number"):
        if pd.api.types.is_bool_dtype(s.dtype):
            bad = np.flatnonzero(nonnull)
            return None, bad, s.iloc[bad[:_MAX_EXAMPLES]].tolist()
        if pd.api.types.is_numeric_dtype(s.dtype):
            values = s.to_numpy(dtype="float64", na_value=np.nan)
        else:
            values = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            bad = np.flatnonzero(nonnull & np.isnan(values))
            if len(bad):
                return None, bad, s.iloc[bad[:_MAX_EXAMPLES]].tolist()
        if f.type == "integer":
            with np.errstate(invalid="ignore"):
                bad = np.flatnonzero(nonnull & (values != np.round(values)))
            if len(bad):
                return None, bad, s.iloc[bad[:_MAX_EXAMPLES]].tolist()
            info = np.iinfo(np.dtype(f.arrow_type))
            bad = np.flatnonzero(nonnull & ((values < info.min) | (values > info.max)))
            if len(bad):
                return None, bad, s.iloc[bad[:_MAX_EXAMPLES]].tolist()
            ints = np.where(nonnull, values, 0).astype(f.arrow_type)
            arr = ints if (f.required and nonnull.all()) else pd.arrays.IntegerArray(ints, ~nonnull)
            return pd.Series(arr, index=s.index, name=s.name), bad, []
        return pd.Series(values, index=s.index, name=s.name), np.array([], dtype=np.int64), []

    if f.type == "boolean":
        if pd.api.types.is_bool_dtype(s.dtype):
            values = s.to_numpy(dtype=bool, na_value=False)
        else:
            raw = s.to_numpy(dtype=object)
            ok = np.array([isinstance(v, (bool, np.bool_)) for v in raw[nonnull]], dtype=bool)
            bad = np.flatnonzero(nonnull)[~ok]
            if len(bad):
                return None, bad, s.iloc[bad[:_MAX_EXAMPLES]].tolist()
            values = np.where(nonnull, raw, False).astype(bool)
        arr = values if (f.required and nonnull.all()) else pd.arrays.BooleanArray(values, ~nonnull)
        return pd.Series(arr, index=s.index, name=s.name), np.array([], np.int64), []

    # string
    if pd.api.types.is_string_dtype(s.dtype) and not (kind == "O"):
        return s.astype(f.pandas_dtype), np.array([], np.int64), []
    values = s.to_numpy(dtype=object)
    ok = np.array([isinstance(v, str) for v in values[nonnull]], dtype=bool)
    bad = np.flatnonzero(nonnull)[~ok]
    if len(bad):
        return None, bad, s.iloc[bad[:_MAX_EXAMPLES]].tolist()
    return s.astype(f.pandas_dtype), bad, []


# --------------------------------------------------------------------------- value checks (pandera)
def _pandera_schema(c: Contract, columns: list[str]):
    import pandera.pandas as pdv

    cols = {}
    for f in c.fields:
        if f.name not in columns:
            continue
        k = f.constraints
        checks = []
        if "enum" in k:
            checks.append(pdv.Check.isin(k["enum"], name="enum"))
        if "minimum" in k:
            checks.append(pdv.Check.gt(k["minimum"], name="minimum") if k.get("exclusiveMinimum") else pdv.Check.ge(k["minimum"], name="minimum"))
        if "maximum" in k:
            checks.append(pdv.Check.le(k["maximum"], name="maximum"))
        if "pattern" in k:
            checks.append(pdv.Check.str_matches(k["pattern"], name="pattern"))
        cols[f.name] = pdv.Column(None, checks=checks, nullable=not f.required, required=True)
    return pdv.DataFrameSchema(cols)


_CHECK_NAMES = {
    "not_nullable": "required",
    "isin": "enum",
    "str_matches": "pattern",
    "greater_than_or_equal_to": "minimum",
    "greater_than": "minimum",
    "less_than_or_equal_to": "maximum",
}


def _value_checks(c: Contract, df: pd.DataFrame, ok_columns: list[str], probs: _Problems) -> None:
    import pandera.errors as pe

    if not ok_columns:
        return
    schema = _pandera_schema(c, ok_columns)
    try:
        schema.validate(df[ok_columns].reset_index(drop=True), lazy=True)
    except pe.SchemaErrors as err:
        fc = err.failure_cases
        fc = fc[fc["index"].notna()] if "index" in fc else fc
        for (column, check), grp in fc.groupby(["column", "check"], sort=False, dropna=False):
            f = c.field(column)
            name = _CHECK_NAMES.get(str(check).split("(")[0], str(check).split("(")[0])
            expected = "no missing values" if name == "required" else f.expected()
            probs.add(column, name, expected, grp["index"].astype("int64").to_numpy(), grp["failure_case"].tolist())


# --------------------------------------------------------------------------- entry point
def _read_any(name: str, source: str | os.PathLike) -> pd.DataFrame:
    from qualmon.io import read_raw

    return read_raw(source, contract(name))


def validate(
    table_name: str,
    df_or_path: pd.DataFrame | str | os.PathLike,
    *,
    references: Mapping[str, pd.DataFrame | str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """Check a table against its contract and return it with the contract's dtypes.

    Parameters
    ----------
    table_name : str
        A contract name (file stem in ``data_schema/``), e.g. ``"student_roster"``.
    df_or_path : DataFrame or path
        The table, or a Parquet / CSV / Excel file holding it.
    references : mapping, optional
        Tables referenced by the contract's foreign keys (name -> DataFrame or
        path).  Foreign keys whose table is not given are not checked.

    Returns
    -------
    DataFrame
        The table with columns in contract order (extra columns after them) and
        the contract's dtypes (nullable pandas dtypes where nulls are allowed).

    Raises
    ------
    ContractError
        Listing every problem found: missing or unexpected columns, wrong
        types, nulls in required columns, values outside the allowed set or
        range or pattern, duplicate primary keys, broken foreign keys and
        failed row rules — each with the table, the column, how many rows, a
        few offending values and row keys, and what was expected.
    """
    problems = _validate(table_name, df_or_path, references)
    if isinstance(problems, pd.DataFrame):
        raise ContractError(problems)
    return problems[0]


def _validate(table_name, df_or_path, references):
    c = contract(table_name)
    df = df_or_path if isinstance(df_or_path, pd.DataFrame) else _read_any(table_name, df_or_path)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate({table_name!r}, ...) expects a DataFrame or a file path, got {type(df_or_path).__name__}")
    df = df.reset_index(drop=True)
    probs = _Problems(table_name, df, c.primary_key)

    # columns present / missing / unexpected
    for f in c.fields:
        if f.name not in df.columns:
            probs.add(f.name, "missing", f"a column of {f.expected()}")
    if df.columns.duplicated().any():
        for name in df.columns[df.columns.duplicated()].unique():
            probs.add(str(name), "duplicate_column", "each column once")
        df = df.loc[:, ~df.columns.duplicated()]
    if not c.additional_columns:
        for name in df.columns:
            if name not in c.columns:
                probs.add(str(name), "unexpected", f"only the contract's columns ({', '.join(c.columns)})")

    # types (coercing losslessly)
    out = {}
    ok_columns = []
    for f in c.fields:
        if f.name not in df.columns:
            continue
        coerced, bad, examples = _coerce_column(df[f.name], f)
        if coerced is None:
            probs.add(f.name, "type", f"{f.type} ({f.arrow_type}); found dtype {df[f.name].dtype}", bad, examples)
        else:
            out[f.name] = coerced
            ok_columns.append(f.name)
    extra = [n for n in df.columns if n not in c.columns]
    typed = pd.concat([pd.DataFrame(out, index=df.index), df[extra]], axis=1) if extra else pd.DataFrame(out, index=df.index)

    _value_checks(c, typed, ok_columns, probs)

    # primary key
    pk = [k for k in c.primary_key if k in ok_columns]
    if pk and len(pk) == len(c.primary_key) and len(typed):
        dup = _duplicate_positions(typed, pk)
        if len(dup):
            probs.add("(" + ", ".join(pk) + ")", "primary_key", "unique keys, no duplicates", dup)

    # row rules
    for rule in c.rules:
        try:
            ok = typed.eval(rule["expression"], engine="python")
            ok = np.asarray(pd.Series(ok).fillna(False), dtype=bool)
        except Exception:  # a column the rule needs is missing or mistyped: reported above
            continue
        bad = np.flatnonzero(~ok)
        if len(bad):
            probs.add(rule["name"], "rule", rule.get("description", {}).get("en", rule["expression"]), bad)

    # foreign keys
    for fk in c.foreign_keys:
        ref_name = fk["reference"]["resource"]
        if not references or ref_name not in references:
            continue
        cols, ref_cols = list(fk["fields"]), list(fk["reference"]["fields"])
        if not all(k in ok_columns for k in cols):
            continue
        ref = references[ref_name]
        if not isinstance(ref, pd.DataFrame):
            ref = _read_any(ref_name, ref)
        ref = ref.reset_index(drop=True)
        bad = _broken_foreign_keys(typed, cols, ref, ref_cols)
        if len(bad):
            found = ["/".join(map(str, row)) for row in typed.iloc[bad[:_MAX_EXAMPLES]][cols].itertuples(index=False)]
            probs.add(
                "(" + ", ".join(cols) + ")",
                "foreign_key",
                f"values present in {ref_name}({', '.join(ref_cols)})",
                bad,
                found,
            )

    if probs.rows:
        return probs.frame()
    return (typed,)


_GOLD64 = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (vectorised, wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _string_hash(arr: pa.Array) -> np.ndarray:
    """64-bit hash of each string of an Arrow (large_)string array, straight from
    its buffers: the bytes are read as 8-byte words (zero padded), mixed with the
    length, strings of each length at once.  Nulls hash to a constant."""
    n = len(arr)
    odt = np.int32 if arr.type == pa.string() else np.int64
    off = np.frombuffer(arr.buffers()[1], dtype=odt, count=n + 1, offset=arr.offset * np.dtype(odt).itemsize).astype(np.int64)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(off)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for w in np.flatnonzero(np.bincount(lengths)) if n else ():
            rows = np.flatnonzero(lengths == w) if lengths[0] != w or (lengths != w).any() else None
            k = n if rows is None else len(rows)
            hw = np.full(k, np.uint64(w) + _GOLD64, dtype=np.uint64)
            if w:
                width = int(w) + (-int(w)) % 8
                raw = np.zeros((k, width), dtype=np.uint8)
                if rows is None:  # every string has this length: read the buffer as a matrix
                    raw[:, : int(w)] = data[off[0] : off[0] + n * int(w)].reshape(n, int(w))
                else:
                    raw[:, : int(w)] = data[off[rows][:, None] + np.arange(int(w))[None, :]]
                words = raw.view(np.uint64)
                for j in range(words.shape[1]):
                    hw = _mix64(hw ^ words[:, j]) + _GOLD64
            if rows is None:
                h = hw
            else:
                h[rows] = hw
    if arr.null_count:
        h[np.asarray(arr.is_null())] = np.uint64(0x5D1A7E11)
    return h


def _column_hash(s: pd.Series) -> np.ndarray:
    """A 64-bit hash of each value; equal values hash equal whatever the dtype
    (int16 vs int64, str vs object strings)."""
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        v = np.where(np.isnan(v), np.inf, v) + 0.0  # one value for nulls; -0.0 == 0.0
        return _mix64(v.view(np.uint64))
    try:
        arr = pa.array(s, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.util.hash_array(s.astype(str).to_numpy(dtype=object))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return _string_hash(arr)


def _row_hash(df: pd.DataFrame, cols: list[str], seed: int = 0) -> np.ndarray:
    h = np.full(len(df), np.uint64(seed), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in cols:
            h = _mix64(h ^ _column_hash(df[c])) + _GOLD64
    return h


def _duplicate_positions(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Positions of all rows whose key ``cols`` occurs more than once.

    Rows are hashed column by column (fixed-width codes straight from their
    Arrow buffers) and sorted; rows sharing a hash are then compared exactly.
    """
    if len(df) < 2:
        return np.array([], dtype=np.int64)
    h = _row_hash(df, cols)
    hs = np.sort(h)
    same = hs[1:] == hs[:-1]
    if not same.any():
        return np.array([], dtype=np.int64)
    pos = np.flatnonzero(np.isin(h, hs[1:][same]))
    exact = df.iloc[pos][cols].duplicated(keep=False).to_numpy()
    return pos[exact]


def _broken_foreign_keys(df: pd.DataFrame, cols: list[str], ref: pd.DataFrame, ref_cols: list[str]) -> np.ndarray:
    """Positions of rows of ``df`` whose non-null key is absent from ``ref``.

    Keys are compared through two independent 64-bit row hashes, each looked
    up in the reference's hash set (Arrow ``is_in``): a broken key could pass
    only by colliding in both, with probability about (n_left n_ref / 2**64)**2
    (below 1e-10 for ten million rows on each side).
    """
    import pyarrow.compute as pc

    if any(k not in ref.columns for k in ref_cols):
        return np.arange(len(df))
    notnull = df[cols].notna().all(axis=1).to_numpy()
    rr = ref[ref_cols].set_axis(cols, axis=1)
    present = np.ones(len(df), dtype=bool)
    for seed in (0x1234567, 0x89ABCDEF):
        left, right = _row_hash(df, cols, seed), _row_hash(rr, cols, seed)
        present &= pc.is_in(pa.array(left), value_set=pa.array(right)).to_numpy(zero_copy_only=False)
    return np.flatnonzero(notnull & ~present)


def validate_tables(
    tables: Mapping[str, pd.DataFrame | str | os.PathLike],
    *,
    references: Mapping[str, pd.DataFrame | str | os.PathLike] | None = None,
) -> dict[str, pd.DataFrame]:
    """Validate several tables at once, including foreign keys among them.

    Returns the typed tables; raises one :class:`ContractError` listing the
    problems of every table.
    """
    refs = dict(references or {})
    refs.update({k: v for k, v in tables.items()})
    out, problems = {}, []
    for name, tab in tables.items():
        res = _validate(name, tab, refs)
        if isinstance(res, pd.DataFrame):
            problems.append(res)
        else:
            out[name] = res[0]
            refs[name] = res[0]
    if problems:
        raise ContractError(pd.concat(problems, ignore_index=True))
    return out
