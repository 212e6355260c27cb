"""Multi-host runs for real: two JAX processes on localhost, two CPU devices each.

``jax.distributed.initialize`` with a localhost coordinator; cross-process
collectives on CPU use gloo (the default of ``jax_cpu_collectives_implementation``
in jax 0.10). The global mesh has 4 devices over 2 processes. Claims:

* ``run_almc`` over the global mesh gives draws bitwise equal to the same run in
  one process with 4 (simulated) devices, and its outputs are global arrays
  sharded over the 4 devices (2 addressable per process);
* a chunked run over the global mesh, killed in both processes after its second
  chunk, leaves every completed chunk readable (each process wrote its own
  chains; ``load_chunks`` merges them) and, resumed by two fresh processes,
  finishes with the state and draws of the uninterrupted single-process run.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numpyro_almc as na

pytestmark = pytest.mark.slow

COMMON = """
import json, os, sys
import jax
import jax.numpy as jnp
import numpy as np
import numpyro_almc as na

SCHED = na.budget_schedule(40, num_warm_start_steps=10, step_size=0.1)
KEY = jax.random.key(11)
RUN = dict(num_chains=8, final_window=5, path_every=7)
CHUNKED = dict(num_chains=8, num_steps=90, chunk_size=20, keep_every=4, keep_from=10)


def loglik(x):
    return -0.5 * jnp.sum((x - 1.0) ** 2) / 0.04


def score(x, t):
    return -x
"""

# Before any JAX operation: 2 CPU devices per process, then join the runtime.
PRELUDE = """
import sys
import jax

pid, port, run_dir, out_dir, crash = sys.argv[1:6]
pid, crash = int(pid), int(crash)
jax.config.update("jax_num_cpu_devices", 2)
jax.distributed.initialize(
    coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid
)
"""

WORKER = (
    PRELUDE
    + COMMON
    + """
from jax.experimental import multihost_utils

mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("chain",))
out = {"process_count": jax.process_count(), "device_count": jax.device_count()}
if not crash:
    res = na.run_almc(KEY, loglik, score, SCHED, jnp.zeros(3), mesh=mesh, **RUN)
    x = res.state.position
    out["fully_addressable"] = x.is_fully_addressable
    out["devices"] = len(x.sharding.device_set)
    out["addressable_shards"] = len(x.addressable_shards)
    gathered = {
        "position": res.state.position,
        "window": res.window_draw,
        "path": res.path,
        "num_diverging": res.num_diverging,
    }
    gathered = multihost_utils.process_allgather(gathered, tiled=True)
    gathered["mean_loglikelihood"] = np.asarray(res.trace.mean_loglikelihood)


def kill(chunks_done, steps_done):
    if crash and chunks_done == 2:
        os._exit(17)  # killed in both processes: no cleanup


res = na.run_almc_chunked(
    KEY, loglik, score, SCHED, jnp.zeros(3), path=run_dir, mesh=mesh,
    callback=kill, **CHUNKED
)
out["complete"] = res.complete
final = multihost_utils.process_allgather(
    {"state": res.state.position, "mean": res.mean["x"]}, tiled=True
)
if pid == 0:
    gathered["chunked_position"] = final["state"]
    gathered["chunked_mean"] = final["mean"]
    np.savez(os.path.join(out_dir, "multi.npz"), **gathered)
    with open(os.path.join(out_dir, "multi.json"), "w") as f:
        json.dump(out, f)
"""
)

REFERENCE = (
    COMMON
    + """
out_dir = sys.argv[1]
assert len(jax.devices()) == 4
res = na.run_almc(KEY, loglik, score, SCHED, jnp.zeros(3), devices="all", **RUN)
chunked_ref = na.run_almc(
    KEY, loglik, score, SCHED, jnp.zeros(3), devices="all",
    num_chains=8, num_steps=90, path_every=4,
)
np.savez(
    os.path.join(out_dir, "single.npz"),
    position=res.state.position, window=res.window_draw, path=res.path,
    num_diverging=res.num_diverging, mean_loglikelihood=res.trace.mean_loglikelihood,
    chunked_position=chunked_ref.state.position, chunked_path=chunked_ref.path,
)
"""
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _two_processes(script, run_dir, out_dir, crash):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(i),
                str(port),
                str(run_dir),
                str(out_dir),
                str(int(crash)),
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, err))
    return results


def test_two_process_run_matches_single_process(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(WORKER))
    run_dir = tmp_path / "run"
    ref = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(tmp_path)],
        env=_env(devices=4),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    single = np.load(tmp_path / "single.npz")

    # Both processes killed after the second chunk: every completed chunk readable.
    killed = _two_processes(worker, run_dir, tmp_path, crash=True)
    assert [rc for rc, _ in killed] == [17, 17], killed[0][1][-3000:]
    assert sorted(f.name for f in run_dir.glob("state*.npz")) == [
        "state.p000.npz",
        "state.p000.prev.npz",
        "state.p001.npz",
        "state.p001.prev.npz",
    ]
    partial = na.load_chunks(run_dir)
    assert partial["num_steps_done"] == 40
    keep = np.arange(3, 90, 4) >= 10  # kept steps 11, 15, ...
    np.testing.assert_array_equal(
        partial["draws"]["x"],
        single["chunked_path"][:, keep][:, : partial["step"].size],
    )

    # Had process 1 died before saving its second state, it would be one chunk
    # behind: readers and the resumed run use the chunks both have recorded.
    os.replace(run_dir / "state.p001.prev.npz", run_dir / "state.p001.npz")
    assert na.load_chunks(run_dir)["num_steps_done"] == 20

    # Two fresh processes resume the run (from chunk 1) and finish it.
    resumed = _two_processes(worker, run_dir, tmp_path, crash=False)
    assert [rc for rc, _ in resumed] == [0, 0], resumed[0][1][-3000:]
    with open(tmp_path / "multi.json") as f:
        out = json.load(f)
    multi = np.load(tmp_path / "multi.npz")
    assert out["process_count"] == 2 and out["device_count"] == 4
    assert out["complete"]
    # Really sharded: a global array over 4 devices, 2 of them in this process.
    assert not out["fully_addressable"]
    assert out["devices"] == 4 and out["addressable_shards"] == 2
    for name in ("position", "window", "path", "num_diverging"):
        np.testing.assert_array_equal(multi[name], single[name])  # bitwise
    # The chain average is an all-reduce across processes: same up to float
    # reduction order.
    np.testing.assert_allclose(
        multi["mean_loglikelihood"], single["mean_loglikelihood"], rtol=1e-5
    )
    np.testing.assert_array_equal(multi["chunked_position"], single["chunked_position"])
    full = na.load_chunks(run_dir)
    np.testing.assert_array_equal(full["draws"]["x"], single["chunked_path"][:, keep])
    np.testing.assert_allclose(
        multi["chunked_mean"], full["draws"]["x"].mean(1), rtol=1e-5, atol=1e-6
    )
