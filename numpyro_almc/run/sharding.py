"""Sharding chains over devices: a one-axis mesh named ``"chain"``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["CHAIN_AXIS", "chain_mesh"]

#: Name of the mesh axis along which chains are sharded.
CHAIN_AXIS = "chain"


def chain_mesh(devices="all") -> Mesh:
    """A one-axis :class:`jax.sharding.Mesh` named ``"chain"`` over ``devices``.

    Parameters
    ----------
    devices
        ``"all"`` (every *local* device, ``jax.local_devices()``) or a sequence of
        devices. For a multi-host run build the mesh over ``jax.devices()`` (all
        processes' devices) yourself, see ``docs/multi_host.md``.

    Examples
    --------
    >>> chain_mesh().axis_names
    ('chain',)
    """
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(
                f"`devices` must be None, 'all' or a list of devices, got {devices!r}."
            )
        devices = jax.local_devices()
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` is empty; pass at least one device.")
    if not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError("`devices` must hold jax.Device objects (see jax.devices()).")
    return Mesh(np.asarray(devices, dtype=object), (CHAIN_AXIS,))


def resolve_mesh(devices, mesh, num_chains) -> Mesh | None:
    """The chain mesh asked for by ``devices=`` / ``mesh=`` (None: no sharding)."""
    if devices is not None and mesh is not None:
        raise ValueError("Pass either `devices` or `mesh`, not both.")
    if mesh is None:
        if devices is None:
            return None
        mesh = chain_mesh(devices)
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh)}.")
    if CHAIN_AXIS not in mesh.axis_names:
        raise ValueError(
            f"`mesh` must have an axis named {CHAIN_AXIS!r} (chains are sharded "
            f"along it), got axes {mesh.axis_names}; see chain_mesh()."
        )
    num_shards = mesh.shape[CHAIN_AXIS]
    if num_chains % num_shards:
        raise ValueError(
            f"num_chains ({num_chains}) must be a multiple of the number of devices "
            f"along the {CHAIN_AXIS!r} axis ({num_shards}); use e.g. "
            f"num_chains={-(-num_chains // num_shards) * num_shards}."
        )
    return mesh


def put(tree, sharding: NamedSharding):
    """``device_put`` onto ``sharding``, also when it spans other processes.

    In a multi-process run ``device_put`` refuses a sharding with devices of other
    processes; every process holds the same host value (same key, same
    arguments), so each builds its own shards of the global array from it.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

    return jax.tree.map(one, tree)


def shard_chains(tree, mesh: Mesh | None):
    """Put the leading (chain) axis of every leaf of ``tree`` along the mesh."""
    if mesh is None:
        return tree
    return put(tree, NamedSharding(mesh, PartitionSpec(CHAIN_AXIS)))


def replicate(tree, mesh: Mesh | None):
    """Copy ``tree`` (schedule, preconditioner) to every device of the mesh."""
    if mesh is None or tree is None:
        return tree
    return put(tree, NamedSharding(mesh, PartitionSpec()))
