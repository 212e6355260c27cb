"""Runs on disk and in ArviZ: chunked, resumable runs and the ArviZ export."""

from numpyro_almc.io.arviz import to_inference_data
from numpyro_almc.io.chunked import (
    ChunkedResult,
    export_netcdf,
    load_chunks,
    run_almc_chunked,
)

__all__ = [
    "ChunkedResult",
    "export_netcdf",
    "load_chunks",
    "run_almc_chunked",
    "to_inference_data",
]
