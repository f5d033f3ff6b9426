"""Weights in and out of other formats. Each format module holds its name tables as data:
{native name pattern: source name pattern}, "{i}" standing for the layer index."""

from __future__ import annotations


def expand_names(name_map: dict[str, str], n_layer: int) -> dict[str, str]:
    """Concrete {native: source} names for every layer of a model with n_layer blocks."""
    out: dict[str, str] = {}
    for native, source in name_map.items():
        if "{i}" in native:
            for i in range(n_layer):
                out[native.format(i=i)] = source.format(i=i)
        else:
            out[native] = source
    return out
