"""Running chains: the one step loop, what it keeps, chain keys and sharding, and the
jitted drivers built on them."""

from numpyro_almc.run.chains import chain_keys, initial_positions
from numpyro_almc.run.driver import ALMCResult, run_almc
from numpyro_almc.run.health import ALMCRunWarning
from numpyro_almc.run.recorders import ALMCTrace, SaveAt
from numpyro_almc.run.sharding import CHAIN_AXIS, chain_mesh

__all__ = [
    "CHAIN_AXIS",
    "ALMCResult",
    "ALMCRunWarning",
    "ALMCTrace",
    "SaveAt",
    "chain_keys",
    "chain_mesh",
    "initial_positions",
    "run_almc",
]
