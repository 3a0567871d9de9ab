"""fairseq model ``mae_ast``: the plain-torch MAEAST registered with fairseq.

The fairseq model *is* the core module (subclass, not wrapper), so parameter names stay
those of the original release."""
from dataclasses import dataclass

from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model

from ..core.checkpoint import check_compatible
from ..core.config import MAEASTConfig
from ..core.model import MAEAST


@dataclass
class MAEASTModelConfig(FairseqDataclass, MAEASTConfig):
    pass


@register_model("mae_ast", dataclass=MAEASTModelConfig)
class MAEASTModel(MAEAST, BaseFairseqModel):
    @classmethod
    def build_model(cls, cfg: MAEASTModelConfig, task):
        return cls(cfg, task.cfg.feature_dim, task.cfg.mask_type)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        check_compatible(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)
