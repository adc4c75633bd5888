"""What the CLI does once before any command, to start fast."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType


class _PandasNotLookedAt(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not looked at by pyarrow's first conversion (gateway.startup)")
        return None


def pyarrow_without_pandas() -> None:
    """pyarrow's first conversion of Python values (`pa.array([...])`, `pa.scalar(...)`)
    imports pandas, where it is installed, only to ask whether the values are pandas
    objects: 0.35-0.6 s of every CLI run, and the gateway never hands it any. That first
    look is made here with pandas unfindable, so pyarrow notes "no pandas" and does not
    ask again; a real use later (`to_pandas()`) still imports it, as pyarrow tries again
    then. Nothing to do where pandas is already imported or not installed."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    finder = _PandasNotLookedAt()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)
