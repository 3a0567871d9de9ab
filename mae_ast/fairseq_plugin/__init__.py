"""fairseq glue: importing this registers task ``mae_ast_pretraining``, model ``mae_ast`` and
criterion ``mae_ast``, and lets torch>=2.6 load fairseq's own training checkpoints."""
from ..core.checkpoint import allow_fairseq_checkpoints
from . import criterion, model, task  # noqa: F401  (registration side effects)

allow_fairseq_checkpoints()
