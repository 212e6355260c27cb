"""Command line: ``python -m numpyro_almc demo`` (the main job).

Samples the posterior of a held-out digit under the bundled diffusion prior with
``MCMC(ALMC(model))``, prints the ALMC-aware summary
(:func:`numpyro_almc.diagnostics.summary`) for a few pixels and the noise scale and
writes a figure (truth, observation, posterior mean and sd, draws) to a PNG.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _demo(args) -> int:
    import arviz as az
    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from numpyro.infer import MCMC

    from numpyro_almc import ALMC
    from numpyro_almc.diagnostics import summary
    from numpyro_almc.models import digits_prior, load_digits_split
    from numpyro_almc.models._inverse import linear_inverse_model, make_task

    start = time.perf_counter()
    prior = digits_prior()
    split = load_digits_split()
    truth_pixels = split.test_images[args.index]
    x_true = prior.encode(truth_pixels)
    A = make_task(args.task)
    key_noise, key_run = jax.random.split(jax.random.key(args.seed))
    y = A @ x_true + args.noise * jax.random.normal(key_noise, (A.shape[0],))
    model = linear_inverse_model(prior.score_fn, A)
    print(
        f"Digit #{args.index} of the held-out split (label "
        f"{split.test_labels[args.index]}), task {args.task}: {A.shape[0]} "
        f"measurements, noise sd {args.noise} (unknown to the model)."
    )
    mcmc = MCMC(
        ALMC(model),
        num_warmup=args.num_warmup,
        num_samples=args.num_samples,
        num_chains=args.num_chains,
        chain_method="vectorized",
        progress_bar=not args.no_progress,
    )
    mcmc.run(key_run, y=y)
    idata = az.from_numpyro(mcmc, log_likelihood=False)
    pixels = [27, 28, 35, 36]
    table = (
        summary(idata, var_names=["x", "sigma"], coords={"x_dim_0": pixels})
        if _has_dim(idata, "x_dim_0")
        else summary(idata, var_names=["sigma"])
    )
    columns = ["mean", "sd", "mcse_mean", "ess_bulk", "lag1", "r_hat", "r_hat_check"]
    print(table[columns].to_string(float_format=lambda v: f"{v:.3g}"))
    print(_reading(table))
    draws = np.asarray(mcmc.get_samples()["x"])
    mean = prior.decode(draws.mean(0))
    sd = 8 * draws.std(0)
    diverging = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    psnr = 10 * np.log10(16.0**2 / np.mean((np.asarray(mean) - truth_pixels) ** 2))
    print(f"posterior-mean PSNR {psnr:.1f} dB, {diverging} divergent steps")

    observed = np.full(64, np.nan)
    if args.task.startswith("inpaint"):
        observed[np.asarray(A).argmax(1)] = np.asarray(prior.decode(y))
    elif args.task == "denoise":
        observed = np.asarray(prior.decode(y))
    else:  # show the least-squares back-projection
        observed = np.asarray(prior.decode(jnp.linalg.pinv(A) @ y))
    panels = [
        ("truth", truth_pixels),
        ("observation", observed),
        ("posterior mean", mean),
        ("posterior sd", sd),
    ] + [(f"draw {k}", prior.decode(draws[k * len(draws) // 4])) for k in range(4)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2 * len(panels), 2.4))
    for ax, (title, img) in zip(axes, panels, strict=True):
        cmap = plt.get_cmap("magma" if title == "posterior sd" else "gray_r")
        cmap = cmap.with_extremes(bad="#9ecae1")  # unobserved pixels
        vmax = None if title == "posterior sd" else 16
        ax.imshow(np.asarray(img, float).reshape(8, 8), cmap=cmap, vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"ALMC posterior, {args.task} (PSNR {psnr:.1f} dB)", fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"figure written to {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


#: Where the printout sends a reader who wonders about a number.
DIAGNOSTICS_PAGE = "docs/howto/diagnostics.md (Reading the diagnostics)"


def _reading(table) -> str:
    """One line on how to read the table (why a large r_hat is expected)."""
    checks = table["r_hat_check"]
    num_chains = table.attrs["num_chains"]
    lines = [
        f"Each of the {num_chains} chains is an independent draw of the posterior: "
        "ess_bulk and mcse_mean treat them so."
    ]
    if (checks == "wrong check").any():
        lines.append(
            "r_hat > 1.01 is expected here (the chains are stationary but move "
            "slowly at the early-stopping time; r_hat is the wrong check)."
        )
    if (checks == "drift").any():
        drifting = ", ".join(table.index[checks == "drift"])
        lines.append(f"Still drifting in the sampling phase: {drifting}.")
    lines.append(f"See {DIAGNOSTICS_PAGE}.")
    return "\n".join(lines)


def _tasks() -> tuple[str, ...]:
    try:
        from numpyro_almc.models._inverse import TASKS
    except ImportError:  # without the [nn] extra: the demo cannot run anyway
        return ()
    return TASKS


def _has_dim(idata, dim) -> bool:
    try:
        return dim in idata.posterior["x"].dims
    except (AttributeError, KeyError):
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m numpyro_almc")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="posterior sampling on a held-out digit")
    tasks = _tasks()
    demo.add_argument(
        "--task",
        default="inpaint_block",
        choices=tasks or None,
        help="the measurement (default: %(default)s)"
        + ("" if tasks else "; the demo needs the [nn] extra"),
    )
    demo.add_argument("--index", type=int, default=0, help="held-out digit index")
    demo.add_argument("--noise", type=float, default=0.1)
    # Many chains and a sampling phase of a fifth of the path, as measured in
    # benchmarks/results/chains_vs_draws.md.
    demo.add_argument(
        "--num-warmup", type=int, default=1000, help="path length (score passes)"
    )
    demo.add_argument(
        "--num-samples", type=int, default=200, help="draws per chain at τ"
    )
    demo.add_argument(
        "--num-chains", type=int, default=64, help="independent chains (vectorized)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="demo_output/digit_posterior.png")
    demo.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
