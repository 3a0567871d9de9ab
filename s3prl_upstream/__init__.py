"""s3prl upstream for MAE-AST checkpoints (``-u mae_ast``), built on ``mae_ast.core``; no fairseq.

Register it in an installed s3prl with ``python tools/install_s3prl_upstream.py``.
"""
