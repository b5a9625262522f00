"""kf test suite (a package, so helpers import as ``tests.hub_server``)."""
