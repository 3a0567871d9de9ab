"""fairseq glue: importing this registers

* pre-training: task ``mae_ast_pretraining``, model ``mae_ast``, criterion ``mae_ast``;
* fine-tuning: task ``mae_ast_finetuning`` (labelled manifests), model ``mae_ast_classifier``
  (the core's MAEASTClassifier), criterion ``mae_ast_classification`` (ce / bce; accuracy,
  whole-set mAP and ROC-AUC) and lr scheduler ``epoch_step_decay`` (SSAST's schedule).

Every patch of fairseq made at import time (checked on fairseq-fixed 0.12.3.1, the same code as
fairseq 0.12.2 made to install on Python 3.11), and why:

1. ``hydra_plugins/mae_ast_launch`` wraps ``fairseq.distributed.utils.
   _infer_torch_distributed_launch_init`` when ``fairseq-hydra-train`` starts (Hydra imports
   plugins before fairseq reads the user dir): under torchrun on a machine without GPUs,
   fairseq computes ``rank % torch.cuda.device_count()`` and dies with ZeroDivisionError.
   With GPUs the wrapper calls fairseq's own function unchanged.
2. ``model.py`` wraps ``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` to attach the
   checkpoint's own model config to its state dict: fairseq hands ``load_state_dict`` only the
   current config, and a 16x16 patch checkpoint has the same weight shapes as a 2x128 frame
   model, so without it such a restore would load silently instead of being refused.
3. ``model.py`` wraps ``fairseq.checkpoint_utils._upgrade_state_dict`` so that released
   checkpoints without training state (exported ones, weights-only ones of the original
   release) restore like a run that has not started: fairseq's restore path reads
   ``optimizer_history`` and ``extra_state`` unconditionally. Checkpoints with training state
   pass through unchanged.

Nothing else in fairseq is changed. Original checkpoints need no weight translation (same
parameter names and shapes: ``mae_ast.core.checkpoint``).
"""
from . import criterion, model, task  # noqa: F401  (registration side effects)
from . import classification_criterion, classifier_model, finetuning_task, lr_scheduler  # noqa: F401
