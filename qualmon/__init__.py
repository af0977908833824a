"""qualmon: compulsory-education quality monitoring (义务教育质量监测).

Stages, data flowing one way: frames -> sample -> responses -> scores ->
estimates -> reports.  The public names re-exported here are loaded lazily so
that ``import qualmon`` stays quick.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "validate": "qualmon.schema",
    "ContractError": "qualmon.schema",
    "contract": "qualmon.schema",
    "contract_names": "qualmon.schema",
    "read_table": "qualmon.io",
    "write_table": "qualmon.io",
    "Design": "qualmon.design",
    "ReplicateDesign": "qualmon.design",
    "synth": "qualmon.synth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qualmon' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module.rsplit(".", 1)[-1] == name else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
