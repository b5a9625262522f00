"""kf: Knowledge Factorization (Yang, Ye, Wang, ECCV 2022) — factor networks you can assemble.

    from kf_model import FactorBank
    bank = FactorBank.from_pretrained("org/repo", tasks=["shape", "scale"])
    net = bank.assemble(["shape", "scale"])          # images -> {task: logits}
"""

from kf_model.bank import FactorBank
from kf_model.data.specs import TaskSpec
from kf_model.errors import KFError

__all__ = ["FactorBank", "KFError", "TaskSpec"]
__version__ = "0.1.0"
