"""Reproduce the bundled digits score network.

    python -m numpyro_almc.models.train_digits \
        --out numpyro_almc/models/weights/digits_score.npz

Fixed seed and hyper-parameters (below); trains on the 1500 training images of
:func:`numpyro_almc.models.load_digits_split` only (10 % of them held out for the
validation curve) and prints the DSM loss on the 297 test images.
"""

from __future__ import annotations

import argparse
import time

import jax

from numpyro_almc.models._digits import DigitsPrior, load_digits_split
from numpyro_almc.models._network import dsm_loss, save_network, train_score_network

SEED = 0
NUM_STEPS = 4_000
HYPERPARAMETERS = dict(
    num_steps=NUM_STEPS,
    batch_size=256,
    learning_rate=1e-3,
    weight_decay=1e-2,
    warmup_steps=500,
    width=256,
    num_blocks=3,
    num_frequencies=16,
    ema_decay=0.999,
    min_time=1e-3,
    max_time=5.0,
    validation_fraction=0.1,
    log_every=200,
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="destination .npz file")
    parser.add_argument(
        "--num-steps",
        type=int,
        default=NUM_STEPS,
        help="optimiser steps (default reproduces the bundled weights)",
    )
    parser.add_argument("--no-progress-bar", action="store_true")
    args = parser.parse_args(argv)

    split = load_digits_split()
    train = DigitsPrior.encode(split.train_images)
    test = DigitsPrior.encode(split.test_images)
    hyper = dict(HYPERPARAMETERS, num_steps=args.num_steps)
    start = time.perf_counter()
    trained = train_score_network(
        jax.random.key(SEED), train, progress_bar=not args.no_progress_bar, **hyper
    )
    elapsed = time.perf_counter() - start
    test_loss = float(dsm_loss(trained, jax.random.key(1), test, num_repeats=16))
    save_network(args.out, trained)
    print(f"trained {args.num_steps} steps in {elapsed:.1f} s")
    print(f"final train loss (last interval): {trained.train_loss[-1]:.4f}")
    print(f"final validation loss: {trained.validation_loss[-1]:.4f}")
    print(f"test DSM loss (key 1, 16 draws per image): {test_loss:.4f}")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
