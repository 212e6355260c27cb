"""The demo's command line lists the tasks and explains the numbers it prints."""

import numpy as np
import pytest

from numpyro_almc.__main__ import _reading, main
from numpyro_almc.diagnostics import summary
from numpyro_almc.models._inverse import TASKS


def test_help_lists_the_tasks(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(task in out for task in TASKS)
    with pytest.raises(SystemExit):
        main(["demo", "--task", "nope"])


def test_reading_explains_a_large_rhat():
    rng = np.random.default_rng(0)
    table = summary(
        {"sigma": rng.normal(size=(16, 1)) + 0.01 * rng.normal(size=(16, 50))}
    )
    text = _reading(table)
    assert "wrong check" in text and "diagnostics.md" in text
