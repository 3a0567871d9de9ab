"""fairseq glue: importing this registers task ``mae_ast_pretraining``, model ``mae_ast`` and
criterion ``mae_ast``."""
from . import criterion, model, task  # noqa: F401  (registration side effects)
