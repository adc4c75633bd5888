"""Shape checks shared by the model backends: features in, one column per output out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.errors import ConfigError, ModelOutputError


def feature_matrix(features: np.ndarray, width: int | None, *, model: str,
                   columns: Sequence[str] = ()) -> np.ndarray:
    """`features` as a C-contiguous float32 (N, width) array.

    A width that does not match is a configuration error (the contract's feature mapping
    and the model disagree), not a problem with the records: it would fail for every
    batch, so it must stop the job rather than send every record to rejects."""
    array = np.ascontiguousarray(features, dtype=np.float32)
    if array.ndim != 2:
        raise ConfigError(f"model {model}: features must be a 2-D (rows, features) array, found shape {array.shape}")
    if width is not None and array.shape[1] != width:
        named = f" ({', '.join(columns)})" if columns else ""
        raise ConfigError(f"model {model}: expects {width} features per row{named}, "
                          f"found {array.shape[1]} (features of shape {array.shape})")
    return array


def output_column(values: np.ndarray, rows: int, *, model: str, output: str) -> np.ndarray:
    """One output as a 1-D array of `rows` values; (N, 1) is accepted and flattened."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.reshape(-1)
    if values.ndim != 1 or values.shape[0] != rows:
        raise ModelOutputError(f"model {model}: output {output} has shape {values.shape}, expected ({rows},)")
    return values
