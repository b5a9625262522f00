"""``python -m kf_model.bench``: see :mod:`kf_model.bench`."""

from kf_model.bench.runner import main

main()
