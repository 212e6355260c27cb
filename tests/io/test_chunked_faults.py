"""Faults of chunked runs: kills, concurrent writers, lost and foreign files.

Every test breaks a run folder the way a crash, a second job or a careless copy
would, and checks that ``run_almc_chunked`` / ``load_chunks`` either recover the
uninterrupted run exactly or refuse with an error that names the problem. The
problem is tiny (a 2-D Gaussian, 2 chains, 4 chunks of 5 steps) so that the
whole file runs in seconds; one jitted chunk serves every test.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_almc as na
from numpyro_almc.io import chunked
from numpyro_almc.io.chunked import RunLockedError

SCHED = na.budget_schedule(12, num_warm_start_steps=4, step_size=0.05)
KW = dict(num_chains=2, num_steps=20, chunk_size=5, keep_every=1)
CHUNKS = 4


def _gauss_loglik(mean, x):
    return -0.5 * jnp.sum((x - mean) ** 2)


def score(x, t):
    return -x


# A pytree callable: its array (the mean) is part of the run's fingerprint.
LOGLIK = jax.tree_util.Partial(_gauss_loglik, jnp.array([1.0, -1.0]))
KEY = 3


def run(path, key=KEY, loglik=LOGLIK, sched=SCHED, **kw):
    return na.run_almc_chunked(
        jax.random.key(key), loglik, score, sched, jnp.zeros(2), path=path,
        **{**KW, **kw},
    )  # fmt: skip


def _files(path):
    """Every file of a run folder and its bytes."""
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def assert_same_run(path, ref_path, res=None, ref=None):
    """The run in ``path`` equals the reference run, bitwise."""
    got, want = na.load_chunks(path), na.load_chunks(ref_path)
    assert got["num_steps_done"] == want["num_steps_done"] == KW["num_steps"]
    np.testing.assert_array_equal(got["draws"]["x"], want["draws"]["x"])
    np.testing.assert_array_equal(got["step"], want["step"])
    for a, b in zip(got["trace"], want["trace"], strict=True):
        np.testing.assert_array_equal(a, b)
    if res is not None:
        for a, b in zip(
            jax.tree.leaves(res.state), jax.tree.leaves(ref.state), strict=True
        ):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(res.mean["x"], ref.mean["x"])
        np.testing.assert_array_equal(res.variance["x"], ref.variance["x"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its folder and result."""
    path = tmp_path_factory.mktemp("reference")
    res = run(path)
    assert res.complete
    return path, res


# ------------------------------------------------------------------ kills


class Injected(Exception):
    pass


# _atomic_savez calls of a run: chunk 0, state 0, chunk 1, state 1, ...
FAULTS = [
    (0, "before"),  # dies computing/writing chunk 0
    (0, "torn"),  # half of chunk 0's temporary file written
    (0, "after"),  # chunk 0 on disk, no state yet
    (1, "torn"),  # state 0 half written
    (1, "after"),  # state 0 saved
    (2, "before"),
    (4, "torn"),
    (5, "after"),  # state 2 saved: one chunk left
    (7, "before"),  # last state never saved
]


@pytest.mark.parametrize("call, phase", FAULTS)
def test_run_killed_at_a_write_resumes_to_the_uninterrupted_run(
    tmp_path, monkeypatch, reference, call, phase
):
    real = chunked._atomic_savez
    calls = []

    def faulty(path, **arrays):
        n = len(calls)
        calls.append(path.name)
        if n == call and phase == "before":
            raise Injected
        if n == call and phase == "torn":
            tmp = chunked._tmp_name(path)
            real(tmp, **arrays)
            data = tmp.read_bytes()
            tmp.write_bytes(data[: len(data) // 2])  # what a kill leaves
            raise Injected
        size = real(path, **arrays)
        if n == call:
            raise Injected
        return size

    monkeypatch.setattr(chunked, "_atomic_savez", faulty)
    with pytest.raises(Injected):
        run(tmp_path)
    monkeypatch.setattr(chunked, "_atomic_savez", real)
    assert not (tmp_path / "run.lock").exists()  # released on the way out
    res = run(tmp_path)
    assert res.complete
    assert_same_run(tmp_path, reference[0], res, reference[1])
    assert not list(tmp_path.glob("*.tmp"))  # the torn file was cleaned up


def test_exception_in_callback_then_resume(tmp_path, reference):
    def stop(chunks_done, steps_done):
        if chunks_done == 2:
            raise Injected

    with pytest.raises(Injected):
        run(tmp_path, callback=stop)
    assert na.load_chunks(tmp_path)["num_steps_done"] == 10
    res = run(tmp_path)
    assert_same_run(tmp_path, reference[0], res, reference[1])


CHILD = """
import sys, time
import jax, jax.numpy as jnp
import numpyro_almc as na
sys.path.insert(0, sys.argv[2])
from test_chunked_faults import run
mode = sys.argv[3]
def report(chunks_done, steps_done):
    print(chunks_done, flush=True)
    if mode == "hold" and chunks_done == 1:
        sys.stdin.readline()          # hold the lock until the parent says go
    elif mode == "kill":
        time.sleep(0.05)              # give the parent time to aim its kill
run(sys.argv[1], callback=report)
print("done", flush=True)
"""


def _child(path, mode):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(path),
         os.path.dirname(__file__), mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip


def test_sigkilled_run_resumes_to_the_uninterrupted_run(tmp_path, reference):
    # SIGKILL at a random point of the chunk loop (seeded: reproducible), here or
    # in the middle of a write: no finally block, no cleanup, the lock left behind.
    rng = np.random.default_rng(0)
    after, delay = int(rng.integers(1, CHUNKS - 1)), float(rng.uniform(0.03, 0.08))
    child = _child(tmp_path, "kill")
    try:
        for _ in range(after):
            line = child.stdout.readline()
            assert line.strip(), child.stderr.read()[-2000:]
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert (tmp_path / "run.lock").exists()  # the dead writer's lock
    done = na.load_chunks(tmp_path)["num_steps_done"]
    assert 5 * after <= done < KW["num_steps"]
    with pytest.warns(UserWarning, match="stale lock"):
        res = run(tmp_path)
    assert_same_run(tmp_path, reference[0], res, reference[1])
    assert not (tmp_path / "run.lock").exists()


# ------------------------------------------------------------------ locks


def test_second_writer_is_refused_while_the_first_runs(tmp_path, reference):
    child = _child(tmp_path, "hold")
    try:
        assert child.stdout.readline().strip() == "1", child.stderr.read()[-2000:]
        before = _files(tmp_path)
        holder = re.escape(f"{tmp_path} is locked by pid {child.pid} on host")
        with pytest.raises(RunLockedError, match=holder):
            run(tmp_path)
        with pytest.raises(RunLockedError, match="break_lock=True"):
            run(tmp_path, resume=False)  # a fresh start would delete its chunks
        assert _files(tmp_path) == before  # nothing touched
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err[-2000:]
    assert out.split()[-1] == "done"
    assert_same_run(tmp_path, reference[0])  # the first run was not disturbed
    assert not (tmp_path / "run.lock").exists()


def _write_lock(path, pid, host):
    (path / "run.lock").write_text(
        json.dumps({"pid": pid, "host": host, "time": "t", "token": "x"})
    )


def test_stale_and_foreign_locks(tmp_path, reference):
    # A dead pid on this host: the lock is stale, removed with a warning.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    _write_lock(tmp_path, int(dead.stdout), socket.gethostname())
    with pytest.warns(UserWarning, match=f"pid {int(dead.stdout)} on this host"):
        run(tmp_path, max_chunks=1)
    assert not (tmp_path / "run.lock").exists()
    # A lock from another host cannot be checked: refused until break_lock=True.
    _write_lock(tmp_path, 1, "elsewhere")
    with pytest.raises(RunLockedError, match="pid 1 on host 'elsewhere'"):
        run(tmp_path)
    res = run(tmp_path, break_lock=True)
    assert_same_run(tmp_path, reference[0], res, reference[1])
    assert not (tmp_path / "run.lock").exists()


def test_temporary_files_have_per_process_names(tmp_path, monkeypatch):
    # Two writers (break_lock misused) must never write the same temporary file.
    real, moved = os.replace, []

    def replace(src, dst):
        moved.append((pathlib.Path(src).name, pathlib.Path(dst).name))
        return real(src, dst)

    monkeypatch.setattr(chunked.os, "replace", replace)
    run(tmp_path, max_chunks=2)
    monkeypatch.setattr(chunked.os, "replace", real)
    assert [dst for _, dst in moved] == [
        "run.json", "chunk_000000.npz", "state.npz", "chunk_000001.npz", "state.npz"
    ]  # fmt: skip
    for src, dst in moved:
        assert re.fullmatch(
            rf"{re.escape(dst)}\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", src
        )
    assert len({src for src, _ in moved}) == len(moved)  # a random part in each


# ------------------------------------------------------------------ lost files


def test_lost_state_file_is_refused_and_keeps_the_chunks(tmp_path, reference):
    run(tmp_path, max_chunks=2)
    (tmp_path / "state.npz").unlink()
    before = _files(tmp_path)
    with pytest.raises(
        ValueError, match=r"chunk_000000\.npz, chunk_000001\.npz.*no usable state"
    ):
        run(tmp_path)
    assert _files(tmp_path) == before  # every chunk still there, unchanged
    with pytest.raises(FileNotFoundError, match="no state file but 2 chunk"):
        na.load_chunks(tmp_path)
    res = run(tmp_path, resume=False)  # explicitly asked: start afresh
    assert_same_run(tmp_path, reference[0], res, reference[1])


@pytest.fixture
def finished(tmp_path, reference):
    """A copy of the finished reference run."""
    path = tmp_path / "run"
    shutil.copytree(reference[0], path)
    return path


def test_truncated_chunk_is_named(finished):
    file = finished / "chunk_000001.npz"
    file.write_bytes(file.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"chunk_000001\.npz cannot be read.*Restore"):
        na.load_chunks(finished)
    with pytest.raises(ValueError, match=r"chunk_000001\.npz cannot be read"):
        na.export_netcdf(finished)
    # A finished run resumed checks its chunks too.
    with pytest.raises(ValueError, match=r"chunk_000001\.npz cannot be read"):
        run(finished)


def test_missing_chunk_is_named(finished):
    (finished / "chunk_000002.npz").unlink()
    with pytest.raises(ValueError, match=r"chunk_000002\.npz is missing"):
        na.load_chunks(finished)
    with pytest.raises(ValueError, match=r"chunk_000002\.npz is missing"):
        run(finished)


def test_modified_array_fails_its_checksum(finished):
    # The same file size and meta, one draw changed (a bit flip the zip CRC would
    # not see, or an edit): caught by the array's sha256.
    file = finished / "chunk_000002.npz"
    with np.load(file) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["draw/x"] = arrays["draw/x"].copy()
    arrays["draw/x"][0, 0, 0] += 1.0
    np.savez(file, **arrays)
    with pytest.raises(
        ValueError, match=r"chunk_000002\.npz has a wrong checksum for 'draw/x'"
    ):
        na.load_chunks(finished)


def test_foreign_chunk_is_refused(tmp_path, finished):
    other = tmp_path / "other"
    run(other, key=KEY + 1)  # same shapes: its chunks have the same sizes
    shutil.copy(other / "chunk_000001.npz", finished / "chunk_000001.npz")
    with pytest.raises(ValueError, match=r"chunk_000001\.npz belongs to another run"):
        na.load_chunks(finished)
    with pytest.raises(ValueError, match=r"chunk_000001\.npz belongs to another run"):
        run(finished)
    # A chunk of this run under another chunk's name.
    shutil.copy(finished / "chunk_000000.npz", finished / "chunk_000001.npz")
    with pytest.raises(ValueError, match="holds chunk 0 of this run, not chunk 1"):
        na.load_chunks(finished)


# ------------------------------------------------------------------ fingerprints


OTHER_INPUTS = {
    # same length, another step size
    "schedule.step_sizes": dict(
        sched=na.budget_schedule(12, num_warm_start_steps=4, step_size=0.06)
    ),
    "init_positions": dict(init_positions=jnp.ones((2, 2))),
    "preconditioner": dict(preconditioner=na.linear_gaussian_preconditioner(
        jnp.eye(2), 0.5)),
    # a pytree likelihood with another array (a plain function cannot be compared)
    "loglikelihood_fn": dict(
        loglik=jax.tree_util.Partial(_gauss_loglik, jnp.array([1.0, 1.0]))
    ),
    "'key'": dict(key=KEY + 1),
    "'tag'": dict(tag="model v2"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(OTHER_INPUTS))
def test_resume_with_other_inputs_is_refused(tmp_path, name):
    run(tmp_path, max_chunks=1)
    before = _files(tmp_path)
    with pytest.raises(ValueError, match=f"holds a different run: .*{re.escape(name)}"):
        run(tmp_path, **OTHER_INPUTS[name])
    assert _files(tmp_path) == before
