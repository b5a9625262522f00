"""Factor banks: the unit that is saved, pushed and pulled (``from kf_model.bank import FactorBank``).

``manifest`` (``factors.json``, checked as data), ``files`` (bank paths; one network per folder, loaded
strictly), ``hub`` (the manifest alone, then only the files of the tasks asked for), ``factor_bank``
(:class:`FactorBank`: load, assemble, subset, save, push, grow).
"""

from kf_model.bank.factor_bank import FactorBank
from kf_model.bank.files import (
    CONFIG_FILE,
    PICKLE_SUFFIXES,
    WEIGHTS_FILE,
    bank_path,
    load_module,
    load_tsn,
    save_module,
)
from kf_model.bank.hub import TRANSPORT_ERRORS, HubManifest, fetch_manifest
from kf_model.bank.manifest import (
    CARD_FILE,
    EVALUATION_DIR,
    FAMILIARITY_DIR,
    FAMILIARITY_FILES,
    FORMAT_VERSION,
    MANIFEST_FILE,
    Manifest,
    check_unique_tasks,
    weights_fingerprint,
)

__all__ = [
    "CARD_FILE", "CONFIG_FILE", "EVALUATION_DIR", "FAMILIARITY_DIR", "FAMILIARITY_FILES", "FORMAT_VERSION",
    "MANIFEST_FILE", "PICKLE_SUFFIXES", "TRANSPORT_ERRORS", "WEIGHTS_FILE", "FactorBank", "HubManifest", "Manifest",
    "bank_path", "check_unique_tasks", "fetch_manifest", "load_module", "load_tsn", "save_module",
    "weights_fingerprint",
]
