"""pytest puts this folder on ``sys.path``: the test folders mirror the package's
layers, and ``gaussian_exact`` (shared exact answers) is importable from all of them."""
