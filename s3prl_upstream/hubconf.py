"""s3prl hub entries for MAE-AST: ``mae_ast`` (what ``run_downstream.py -u mae_ast -k CKPT``
resolves to once ``tools/install_s3prl_upstream.py`` has run) and ``mae_ast_local``.

The installed s3prl keeps its own stock ``mae_ast_local``; the installer exports only
``mae_ast`` into s3prl's hub, so no stock name is shadowed. Use ``mae_ast_local`` from here
directly (``from s3prl_upstream.hubconf import mae_ast_local``).
"""
import os

from .expert import UpstreamExpert as _UpstreamExpert

__all__ = ["mae_ast", "mae_ast_local"]


def mae_ast_local(ckpt, *args, **kwargs):
    """MAE-AST from a local checkpoint (ours or the original release's layout) or a hub folder
    (``tools/export_checkpoint.py CKPT DIR --format hub``: read without pickle).
        ckpt (str): PATH of a file or folder
    """
    if not (isinstance(ckpt, str) and (os.path.isfile(ckpt) or os.path.isdir(ckpt))):
        raise FileNotFoundError(f"mae_ast: checkpoint {ckpt!r} is neither a file nor a hub folder (pass it with -k)")
    return _UpstreamExpert(ckpt, *args, **kwargs)


def mae_ast(ckpt, *args, refresh=False, **kwargs):
    """MAE-AST from a local checkpoint path, a hub folder, or an http(s) URL of a checkpoint
    file (downloaded and cached by s3prl).
        ckpt (str): PATH, FOLDER or URL
    """
    if isinstance(ckpt, str) and ckpt.startswith(("http://", "https://")):
        from s3prl.util.download import _urls_to_filepaths

        ckpt = _urls_to_filepaths(ckpt, refresh=refresh)
    return mae_ast_local(ckpt, *args, **kwargs)
