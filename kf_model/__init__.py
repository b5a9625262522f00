"""kf: Knowledge Factorization (Yang, Ye, Wang, ECCV 2022) — factor networks you can assemble.

    from kf_model import FactorBank
    bank = FactorBank.from_pretrained("org/repo", tasks=["shape", "scale"])
    net = bank.assemble(["shape", "scale"])          # images -> {task: logits}
"""

from kf_model.bank import FactorBank, Manifest, weights_fingerprint
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import KFError
from kf_model.models import CommonKnowledgeNetwork, TaskSpecificNetwork, Teacher
from kf_model.models.factor import AssembledNetwork, FactorNetwork

__all__ = [
    "AssembledNetwork", "CommonKnowledgeNetwork", "FactorBank", "FactorNetwork", "InputSpec", "KFError",
    "Manifest", "TaskSpec", "TaskSpecificNetwork", "Teacher", "weights_fingerprint",
]
__version__ = "0.1.0"
