#!/usr/bin/env python
"""Register this repository's s3prl upstream (``s3prl_upstream/``) in an installed s3prl, so
that ``run_downstream.py -u mae_ast -k CHECKPOINT`` resolves to it.

    python tools/install_s3prl_upstream.py              # install (running it again is harmless)
    python tools/install_s3prl_upstream.py --uninstall  # take it out again
    python tools/install_s3prl_upstream.py --s3prl /path/to/s3prl/s3prl   # a given s3prl package folder

What it does: writes a small package ``s3prl/upstream/mae_ast_repo/`` whose ``hubconf.py``
puts this repository on ``sys.path`` and exports only ``mae_ast`` from
``s3prl_upstream.hubconf``, and appends one marked line importing it to ``s3prl/hub.py``.
No stock file is otherwise changed and no stock name is shadowed: s3prl's own ``mae_ast``
upstream keeps ``mae_ast_local``, ``mae_ast_frame``, ``mae_ast_patch`` (its hub never had a
plain ``mae_ast``). The code stays in this repository: edits here take effect without
reinstalling; move the repository and you must install again.
"""
import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

from mae_ast import cli

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mae_ast_repo"
MARK = "# MAE-AST upstream, added by tools/install_s3prl_upstream.py"
HUB_LINE = f"from s3prl.upstream.{PACKAGE}.hubconf import *  {MARK}\n"

HUBCONF = '''"""MAE-AST upstream from {repo} (written by tools/install_s3prl_upstream.py there;
remove with its --uninstall)."""
import sys as _sys

_REPO = {repo!r}
if _REPO not in _sys.path:
    _sys.path.append(_REPO)

from s3prl_upstream.hubconf import mae_ast  # noqa: E402

__all__ = ["mae_ast"]
'''


def s3prl_dir(given):
    if given:
        path = Path(given)
    else:
        spec = importlib.util.find_spec("s3prl")  # does not import s3prl (slow, needs torchaudio)
        if spec is None or not spec.submodule_search_locations:
            cli.fail("s3prl is not installed in this Python; install it or pass --s3prl")
        path = Path(list(spec.submodule_search_locations)[0])
    if not (path / "hub.py").is_file() or not (path / "upstream").is_dir():
        cli.fail(f"{path} does not look like the s3prl package folder (no hub.py / upstream/)")
    return path


def install(s3prl: Path):
    target = s3prl / "upstream" / PACKAGE
    target.mkdir(exist_ok=True)
    (target / "__init__.py").write_text("")
    (target / "hubconf.py").write_text(HUBCONF.format(repo=str(REPO)))
    hub = s3prl / "hub.py"
    text = hub.read_text()
    if MARK not in text:
        hub.write_text(text + ("" if text.endswith("\n") else "\n") + HUB_LINE)
    print(f"[install_s3prl_upstream] -u mae_ast now resolves to {REPO / 's3prl_upstream'} "
          f"(registered in {s3prl})")


def uninstall(s3prl: Path):
    target = s3prl / "upstream" / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    hub = s3prl / "hub.py"
    lines = hub.read_text().splitlines(keepends=True)
    kept = [line for line in lines if MARK not in line]
    if kept != lines:
        hub.write_text("".join(kept))
    print(f"[install_s3prl_upstream] removed the MAE-AST upstream from {s3prl}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, epilog=cli.EXIT_CODES_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uninstall", action="store_true", help="remove it again")
    ap.add_argument("--s3prl", help="the s3prl package folder (the one holding hub.py); "
                                    "default: the s3prl this Python imports")
    args = ap.parse_args()
    s3prl = s3prl_dir(args.s3prl)
    try:
        (uninstall if args.uninstall else install)(s3prl)
    except OSError as e:  # e.g. s3prl in a system site-packages this user cannot write
        cli.fail(f"cannot change {s3prl}: {e.strerror or e} ({e.filename})")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
