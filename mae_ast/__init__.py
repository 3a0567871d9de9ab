"""MAE-AST: Masked Autoencoding Audio Spectrogram Transformer.

``mae_ast.core`` is plain torch. When fairseq is installed, importing this package (which is
what ``common.user_dir=.../mae_ast`` does) registers the fairseq task, model and criterion.
"""
try:
    import fairseq  # noqa: F401
except ImportError:  # the s3prl upstream and the core need no fairseq
    pass
else:
    from . import fairseq_plugin  # noqa: F401
