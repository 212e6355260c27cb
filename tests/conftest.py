"""pytest puts this folder on ``sys.path``: the test folders mirror the package's
layers, and ``gaussian_exact`` (shared exact answers) is importable from all of them.

ArviZ 0.23 writes a once-a-day stamp on its first import through one fixed
temporary name (``daily_warning.tmp``): two pytest-xdist workers importing it
together on a fresh machine race, and the loser fails collection with
``FileNotFoundError``. Each worker writes today's stamp first, through a name of
its own, so ArviZ finds it and writes nothing.
"""

import datetime
import os
from pathlib import Path


def _arviz_stamp() -> None:
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # no ArviZ (it depends on platformdirs): nothing to race
        return
    folder = Path(user_cache_dir("arviz", "arviz"))
    today = datetime.date.today().isoformat()
    stamp = folder / "daily_warning"
    try:
        if stamp.read_text().strip() == today:
            return
    except (OSError, ValueError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"daily_warning.{os.getpid()}.tmp"
    tmp.write_text(today)
    tmp.replace(stamp)


_arviz_stamp()
