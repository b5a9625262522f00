"""Factor banks: the unit that is saved, pushed and pulled (``from kf_model.bank import FactorBank``).

``manifest`` (``factors.json``, checked as data), ``files`` (bank paths; one network per folder, loaded
strictly), ``hub`` (the manifest alone, then only the files of the tasks asked for), ``factor_bank``
(:class:`FactorBank`: load, assemble, subset, save, push, grow).
"""

from kf_model.bank.factor_bank import FactorBank
from kf_model.bank.files import CONFIG_FILE, WEIGHTS_FILE, bank_path, load_module, save_module
from kf_model.bank.hub import fetch_manifest
from kf_model.bank.manifest import CARD_FILE, EVALUATION_DIR, FAMILIARITY_DIR, MANIFEST_FILE, Manifest
from kf_model.hub_files import TRANSPORT_ERRORS

__all__ = [
    "CARD_FILE", "CONFIG_FILE", "EVALUATION_DIR", "FAMILIARITY_DIR", "MANIFEST_FILE", "TRANSPORT_ERRORS",
    "WEIGHTS_FILE", "FactorBank", "Manifest", "bank_path", "fetch_manifest", "load_module", "save_module"
]
