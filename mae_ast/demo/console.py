"""The demo's console: progress lines ``[demo   42s] message`` timed from the start of the demo,
the error exit, and how numbers are printed."""
import math
import time

from mae_ast import cli

_START = time.time()


def log(message: str) -> None:
    print(f"[demo {elapsed():6.0f}s] {message}", flush=True)


def elapsed() -> float:
    """Seconds since the demo started (since this module was first imported)."""
    return time.time() - _START


def fail(message: str) -> None:
    """End the demo with ``demo.py: error: <message>`` (the tools' one error style) and exit status 1."""
    cli.fail(message, code=cli.EXIT_NOTHING_DONE, prog="demo.py")


def format_number(x) -> str:
    """Floats with three decimals; anything else (None, nan, text) as it is."""
    return f"{x:.3f}" if isinstance(x, float) and math.isfinite(x) else str(x)
