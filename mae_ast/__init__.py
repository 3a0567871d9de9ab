"""MAE-AST: Masked Autoencoding Audio Spectrogram Transformer.

``mae_ast.core`` is plain torch. The fairseq task, model and criterion register when fairseq
is already imported, which is the case when fairseq loads this folder as
``common.user_dir``; elsewhere ``import mae_ast.fairseq_plugin`` registers them. Tools and the
s3prl upstream thus import quickly and need no fairseq.
"""
import sys

if sys.modules.get("fairseq") is not None:
    from . import fairseq_plugin  # noqa: F401
