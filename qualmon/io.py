"""Reading and writing contract tables.

Readers validate on read (:func:`read_table`); writers validate first and
write atomically (:func:`atomic_path`: a temporary file in the same folder,
renamed over the target only when complete), so a failed write never leaves a
half-written file.  Parquet files carry the contract's Arrow types.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qualmon.schema import Contract, contract, validate, validate_tables

__all__ = ["atomic_path", "read_raw", "read_table", "read_tables", "write_table", "write_tables", "write_parquet"]

_READERS = {".parquet", ".pq", ".csv", ".xlsx", ".xls"}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_raw(source: str | os.PathLike, c: Contract | None = None) -> pd.DataFrame:
    """Read a Parquet, CSV or Excel file without validating it.

    With a contract, string columns of CSV/Excel files are read as text (so
    codes such as ``"510101"`` keep their leading digits).
    """
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ValueError(f"cannot read {path}: expected a .parquet, .csv or .xlsx file")
    if suffix in (".parquet", ".pq"):
        return pq.read_table(path).to_pandas()
    text_cols = {f.name: str for f in c.fields if f.type == "string"} if c is not None else None
    if suffix == ".csv":
        return pd.read_csv(path, dtype=text_cols, keep_default_na=True, na_values=[""])
    return pd.read_excel(path, dtype=text_cols)


def read_table(
    name: str,
    path: str | os.PathLike,
    *,
    references: Mapping[str, pd.DataFrame | str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """Read table ``name`` from ``path`` and validate it against its contract."""
    return validate(name, read_raw(path, contract(name)), references=references)


def read_tables(directory: str | os.PathLike, names: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read ``<directory>/<name>.parquet`` for each contract found there, validated together
    (foreign keys among them included)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no such folder: {directory}")
    from qualmon.schema import contract_names

    names = names or [n for n in contract_names() if (directory / f"{n}.parquet").is_file()]
    raw = {}
    for n in names:
        p = directory / f"{n}.parquet"
        if not p.is_file():
            raise FileNotFoundError(f"table {n!r} not found: expected {p}")
        raw[n] = read_raw(p, contract(n))
    return validate_tables(raw)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema | None = None) -> Path:
    """Write ``df`` to Parquet atomically (no index; deterministic bytes for equal data)."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def _arrow_table(name: str, df: pd.DataFrame) -> pa.Table:
    c = contract(name)
    extra = pa.Table.from_pandas(df[[k for k in df.columns if k not in c.columns]], preserve_index=False).schema
    return pa.Table.from_pandas(df, schema=c.arrow_schema(extra), preserve_index=False)


def write_table(
    name: str,
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    references: Mapping[str, pd.DataFrame | str | os.PathLike] | None = None,
) -> Path:
    """Validate ``df`` against contract ``name`` and write it atomically.

    The format follows the suffix: ``.parquet`` (contract Arrow types), ``.csv``
    or ``.xlsx``.  Nothing is written when validation fails.
    """
    typed = validate(name, df, references=references)
    return _write_typed(name, typed, Path(path))


def _write_typed(name: str, typed: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        table = _arrow_table(name, typed)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    elif suffix == ".csv":
        with atomic_path(path) as tmp:
            typed.to_csv(tmp, index=False)
    elif suffix == ".xlsx":
        with atomic_path(path) as tmp:
            typed.to_excel(tmp, index=False, sheet_name=name[:31])
    else:
        raise ValueError(f"cannot write {path}: expected a .parquet, .csv or .xlsx file name")
    return path


def write_tables(tables: Mapping[str, pd.DataFrame], directory: str | os.PathLike) -> dict[str, Path]:
    """Validate all ``tables`` together (foreign keys among them included), then
    write each as ``<directory>/<name>.parquet``.  Nothing is written if any
    table fails."""
    typed = validate_tables(tables)
    directory = Path(directory)
    return {name: _write_typed(name, df, directory / f"{name}.parquet") for name, df in typed.items()}
