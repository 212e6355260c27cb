"""How digit-like are draws from the bundled digits prior?

    python benchmarks/digits_prior_quality.py

Fits a logistic-regression classifier on the TRAIN split of scikit-learn's digits,
then compares (a) 500 reverse-diffusion draws from ``digits_prior()`` with (b) the
297 held-out test images: predicted-class histogram and mean max-class
confidence. Writes ``benchmarks/results/digits_prior_quality.md`` and a PNG grid of
draws to ``/tmp/digits_prior_samples.png``.
"""

from __future__ import annotations

import pathlib
import time

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from numpyro_almc.models import digits_prior, load_digits_split

NUM_DRAWS = 500
NUM_STEPS = 500
SEED = 0
RESULTS = pathlib.Path(__file__).parent / "results" / "digits_prior_quality.md"
PNG = pathlib.Path("/tmp/digits_prior_samples.png")


def summarise(classifier, images):
    proba = classifier.predict_proba(images)
    histogram = np.bincount(proba.argmax(1), minlength=10) / len(images)
    return histogram, float(proba.max(1).mean())


def save_grid(images, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(8, 8, figsize=(6, 6))
    for ax, image in zip(axes.ravel(), images, strict=False):
        ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    split = load_digits_split()
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    classifier.fit(split.train_images, split.train_labels)
    test_accuracy = classifier.score(split.test_images, split.test_labels)

    prior = digits_prior()
    start = time.perf_counter()
    draws = prior.sample(jax.random.key(SEED), NUM_DRAWS, num_steps=NUM_STEPS)
    draws.block_until_ready()
    elapsed = time.perf_counter() - start
    pixels = np.asarray(prior.decode(draws))
    save_grid(pixels, PNG)

    hist_draws, conf_draws = summarise(classifier, pixels)
    hist_test, conf_test = summarise(classifier, split.test_images)

    lines = [
        "# Digits prior quality",
        "",
        f"Command: `python benchmarks/digits_prior_quality.py`. Classifier: "
        f"StandardScaler + LogisticRegression fitted on the {len(split.train_images)} "
        f"training images (held-out accuracy {test_accuracy:.3f}). "
        f"(a) {NUM_DRAWS} draws of `digits_prior().sample` (seed {SEED}, "
        f"{NUM_STEPS} steps, Tweedie-denoised, decoded and clipped to [0, 16]; "
        f"{elapsed:.1f} s incl. compile on CPU); (b) the "
        f"{len(split.test_images)} held-out test images.",
        "",
        "| | " + " | ".join(str(k) for k in range(10)) + " | mean max-class conf. |",
        "|---" * 12 + "|",
        "| (a) prior draws | "
        + " | ".join(f"{h:.3f}" for h in hist_draws)
        + f" | {conf_draws:.3f} |",
        "| (b) test images | "
        + " | ".join(f"{h:.3f}" for h in hist_test)
        + f" | {conf_test:.3f} |",
        "",
        "Columns 0–9: fraction of images assigned to each class.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {RESULTS} and {PNG}")


if __name__ == "__main__":
    main()
