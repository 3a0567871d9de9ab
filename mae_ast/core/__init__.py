"""Plain-torch core of MAE-AST: features, masking, transformer, model, loss.

Imports neither fairseq nor s3prl; both integrations are thin layers on top of it.
"""
from .config import MAEASTConfig
from .features import fbank, num_frames
from .loss import mae_ast_loss
from .masking import MASK_TYPES, MaskPlan, compute_mask
from .model import MAEAST

__all__ = ["MAEASTConfig", "MAEAST", "MaskPlan", "MASK_TYPES", "compute_mask", "fbank",
           "num_frames", "mae_ast_loss"]
