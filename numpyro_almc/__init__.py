"""numpyro_almc: Annealed Langevin Monte Carlo with diffusion-model (score) priors.

The top level holds the front ends and what every user needs; the layers are
sub-namespaces:

* :mod:`numpyro_almc.operators`: structured linear forward operators (masks, PSF
  convolutions, pooling, subsampled DCT, dense, matrix-free), factored once;
* :mod:`numpyro_almc.path`: OU quantities, schedules and their per-step parameters,
  time-dependent likelihoods, preconditioners;
* :mod:`numpyro_almc.scores`: exact scores, adapters from trained networks, reduced
  precision, prior draws;
* :mod:`numpyro_almc.mcmc`: the ALMC move (BlackJAX-style ``init`` / ``build_kernel``)
  and the final stage from ``τ`` to ``t = 0`` (``finish``);
* :mod:`numpyro_almc.smc`: the Feynman–Kac step, its weight terms, the evidence;
* :mod:`numpyro_almc.run`: the one step loop, what it keeps, chain keys, sharding;
* :mod:`numpyro_almc.io`: chunked runs on disk and the ArviZ export;
* :mod:`numpyro_almc.diagnostics`: an ALMC-aware summary, path health, a kernel Stein
  discrepancy and a data-driven early-stopping time;
* :mod:`numpyro_almc.infer`: the NumPyro façades;
* :mod:`numpyro_almc.baselines`, :mod:`numpyro_almc.testbeds`,
  :mod:`numpyro_almc.models` (extra ``[nn]``).
"""

from numpyro_almc import (
    baselines,
    diagnostics,
    infer,
    io,
    mcmc,
    operators,
    path,
    run,
    scores,
    smc,
    testbeds,
)
from numpyro_almc.infer import ALMC, ALMCSMC, ScorePrior
from numpyro_almc.io import export_netcdf, load_chunks, run_almc_chunked
from numpyro_almc.io.arviz import to_inference_data
from numpyro_almc.mcmc.almc import as_top_level_api as almc
from numpyro_almc.mcmc.finish import FinalStage
from numpyro_almc.path import (
    budget_schedule,
    langevin_schedule,
    linear_gaussian_preconditioner,
    noised_gaussian_likelihood,
    paper_schedule,
)
from numpyro_almc.run import SaveAt, run_almc
from numpyro_almc.run.smc import run_almc_smc
from numpyro_almc.scores import sample_prior
from numpyro_almc.smc import as_top_level_api as almc_smc

__version__ = "0.2.0"

__all__ = [
    # front ends
    "ALMC",
    "ALMCSMC",
    "ScorePrior",
    "almc",
    "almc_smc",
    "run_almc",
    "run_almc_smc",
    "run_almc_chunked",
    # the path
    "budget_schedule",
    "paper_schedule",
    "langevin_schedule",
    "noised_gaussian_likelihood",
    "linear_gaussian_preconditioner",
    # output
    "FinalStage",
    "SaveAt",
    "to_inference_data",
    "load_chunks",
    "export_netcdf",
    "sample_prior",
    # layers
    "baselines",
    "diagnostics",
    "infer",
    "io",
    "mcmc",
    "operators",
    "path",
    "run",
    "scores",
    "smc",
    "testbeds",
]
