"""Tabular input: pandas DataFrames and Series as data, and one fit per group (``by=``).

pandas stays optional: nothing here imports it. An object can only be a DataFrame
or Series when pandas is already imported, so ``sys.modules`` tells us which
class to test against.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _pandas():
    return sys.modules.get("pandas")


def is_frame(x) -> bool:
    """True when ``x`` is a pandas DataFrame."""
    pd = _pandas()
    return pd is not None and isinstance(x, pd.DataFrame)


def is_series(x) -> bool:
    """True when ``x`` is a pandas Series (or Index)."""
    pd = _pandas()
    return pd is not None and isinstance(x, (pd.Series, pd.Index))


def column_array(col, name) -> np.ndarray:
    """One numeric column as a numpy array; missing values (pd.NA) become NaN.

    Raises:
        TypeError: naming the column when it is not numeric or boolean.
    """
    pd = _pandas()
    dtype = col.dtype
    types = pd.api.types
    if types.is_bool_dtype(dtype) and not col.hasnans:
        return col.to_numpy(dtype=bool)
    if types.is_numeric_dtype(dtype) and not types.is_complex_dtype(dtype):
        if col.hasnans:
            return col.to_numpy(dtype=float, na_value=np.nan)
        return col.to_numpy()
    example = next((v for v in col.tolist() if v is not None), None)
    raise TypeError(
        f"column {name!r} has non-numeric dtype {dtype} (e.g. {example!r}); jaxmle fits "
        "numbers only: drop the column (df.drop(columns=[...])), encode it (pd.get_dummies, "
        ".cat.codes), or pass it as by= to fit_batch for one fit per group"
    )


def frame_to_dict(df) -> dict:
    """A DataFrame as {column name: numpy array}: the columns become data leaves."""
    names = list(df.columns)
    if len(set(map(str, names))) != len(names):
        raise ValueError(f"the DataFrame has duplicate column names: {names}")
    # JAX sorts dict keys, so they must be comparable: use strings unless all are str.
    keys = names if all(isinstance(n, str) for n in names) else [str(n) for n in names]
    return {k: column_array(df[n], n) for k, n in zip(keys, names)}


def from_tabular(data):
    """DataFrame -> dict of arrays; Series -> array; dicts are walked. Anything else as is."""
    if is_frame(data):
        return frame_to_dict(data)
    if is_series(data):
        return column_array(data, getattr(data, "name", None) or "data")
    if isinstance(data, dict):
        return {k: from_tabular(v) if (is_series(v) or is_frame(v) or isinstance(v, dict)) else v
                for k, v in data.items()}
    return data


def _labels_and_codes(labels) -> tuple[Any, np.ndarray]:
    """Sorted unique group labels and each row's group index."""
    pd = _pandas()
    if pd is not None:
        codes, uniques = pd.factorize(labels, sort=True)
        if (codes < 0).any():
            raise ValueError("the by= column has missing values: drop or fill those rows first")
    else:
        uniques, codes = np.unique(np.asarray(labels), return_inverse=True)
    # Python scalars, not numpy ones: labels print, compare and serialise plainly.
    return [u.item() if isinstance(u, np.generic) else u for u in uniques], np.asarray(codes).reshape(-1)


def split_groups(data, by: str):
    """Long-format data as columns plus each row's group (``jm.fit_batch(..., by=)``).

    Args:
        data: a DataFrame, or a dict of equally long arrays (or Series).
        by: the column holding the group label (any type: ids, strings).

    Returns:
        (columns, codes, groups): the other columns as numpy arrays, each row's
        group index, and the G labels in sorted order.
    """
    if is_frame(data):
        if by not in data.columns:
            raise ValueError(f"by={by!r} is not a column; the columns are {list(data.columns)}")
        labels = data[by].to_numpy()
        rest = frame_to_dict(data.drop(columns=[by]))
    elif isinstance(data, dict):
        if by not in data:
            raise ValueError(f"by={by!r} is not a data key; the keys are {list(data)}")
        labels = np.asarray(data[by].to_numpy() if is_series(data[by]) else data[by])
        rest = {k: v for k, v in from_tabular(data).items() if k != by}
    else:
        raise TypeError(f"by= needs a DataFrame or a dict of columns, got {type(data).__name__}")
    if not rest:
        raise ValueError(f"no data columns left besides by={by!r}")
    if labels.ndim != 1:
        raise ValueError(f"the by= column must be 1-D, got shape {labels.shape}")
    rest = {k: np.asarray(v) for k, v in rest.items()}
    bad = {k: v.shape for k, v in rest.items() if v.ndim == 0 or v.shape[0] != labels.shape[0]}
    if bad:
        raise ValueError(f"with by={by!r} every column needs one row per observation "
                         f"({labels.shape[0]}); got shapes {bad}")
    groups, codes = _labels_and_codes(labels)
    return rest, codes, groups


def long_nonfinite_report(data, by: str) -> list[str]:
    """NaN/inf cells of long-format data (``by=``), named by column, group and row.

    Rows are named by the DataFrame's index (by position for a dict of columns), so a
    user can find and fix them; the padded batch built from them could only name a
    position that exists nowhere in their data.
    """
    columns, codes, groups = split_groups(data, by)
    index = data.index if is_frame(data) else None
    bad = []
    for name, col in columns.items():
        if not np.issubdtype(col.dtype, np.floating):
            continue
        rows = np.flatnonzero(~np.isfinite(col).reshape(col.shape[0], -1).all(axis=1))
        if rows.size:
            first = rows[0]
            plain = lambda v: v.item() if isinstance(v, np.generic) else v  # noqa: E731
            where = f"index {plain(index[first])!r}" if index is not None else f"row {first}"
            bad.append(f"column {name!r}: {rows.size} rows, first in group {plain(groups[codes[first]])!r} "
                       f"at {where}")
    return bad
