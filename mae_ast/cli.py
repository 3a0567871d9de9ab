"""One error style for the command-line tools in ``tools/``.

A tool that cannot do its job prints one line, ``<tool>: error: <message>``, to stderr and
exits with a documented code: the form and code argparse already uses for a bad command
line, so a user (or a script) sees every failure of every tool the same way.
"""
import os
import sys
from typing import NoReturn, Optional

EXIT_OK = 0
# The tool ran but produced nothing usable from inputs it could open (e.g. every audio file
# given to visualize.py failed to decode).
EXIT_NOTHING_DONE = 1
# argparse's code for a bad command line; also used for inputs that cannot be used at all
# (a missing folder or checkpoint), since the user must change the command to go on.
EXIT_USAGE = 2

EXIT_CODES_HELP = """\
exit codes:
  0  done
  1  ran, but nothing could be made from the inputs (each one is named on stderr)
  2  bad command line, or an input or output that cannot be used; stderr says
     '<tool>: error: <why>'
"""


def tool_name() -> str:
    """The name argparse gives the running tool (its file name), so both error sources agree."""
    return os.path.basename(sys.argv[0]) or "mae_ast"


def fail(message: str, code: int = EXIT_USAGE, prog: Optional[str] = None) -> NoReturn:
    """Print ``<tool>: error: <message>`` to stderr and exit with ``code``."""
    print(f"{prog or tool_name()}: error: {message}", file=sys.stderr)
    sys.exit(code)


def make_folder(path: str) -> None:
    """Create the output folder ``path`` (and its parents), or fail saying why; tools call it
    before their long work, so a typo does not cost the whole run."""
    if os.path.exists(path) and not os.path.isdir(path):
        fail(f"{path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        fail(f"cannot create the folder {path}: {e.strerror or e}")
