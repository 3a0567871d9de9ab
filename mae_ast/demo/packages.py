"""The Debian packages whose recordings make the demo's built-in corpus.

Which packages (``PACKAGES``), installing the missing ones (as root) or naming the apt-get
line to run, and listing their audio files, each classified by source, category (speech,
music, effects) and language.
"""
import os
import re
import subprocess
from typing import List, NamedTuple, Optional, Sequence

from .console import fail, log

CATEGORIES = ("speech", "music", "effects")
PACKAGES = ("fillets-ng-data-cs", "fillets-ng-data-nl", "tuxpaint-stamps-default", "klettres-data",
            "ktuberling-data", "wesnoth-1.16-music", "hedgewars-data", "sonic-pi-samples")
AUDIO_EXTS = (".ogg", ".opus", ".wav", ".flac")


class Kind(NamedTuple):
    """What one audio file of a package is."""

    source: str  # a probe class finer than the category, e.g. "hedgewars-voices"
    category: str  # one of CATEGORIES
    language: str  # "" when not speech or not known


def classify(package: str, path: str) -> Optional[Kind]:
    """The kind of one audio file of a package, or None for files the corpus leaves out."""
    if package.startswith("fillets-ng-data-"):
        language = package.rsplit("-", 1)[1]
        return Kind(f"fillets-{language}", "speech", language)
    if package == "tuxpaint-stamps-default":
        # a stamp's spoken description is <stamp>_desc_<language>.ogg; its other sounds are effects
        spoken = re.search(r"_desc_([A-Za-z_@]+)\.ogg$", path)
        return Kind("tuxpaint-speech", "speech", spoken.group(1)) if spoken else Kind("tuxpaint-effects", "effects", "")
    parts = path.split("/")
    if package == "klettres-data":  # /usr/share/klettres/<language>/...
        return Kind("klettres", "speech", parts[4])
    if package == "ktuberling-data":  # /usr/share/ktuberling/sounds/<language>/<word>.ogg
        return Kind("ktuberling", "speech", parts[5] if len(parts) > 6 else "")
    if package.startswith("wesnoth") and "/music/" in path:
        return Kind("wesnoth-music", "music", "")
    if package == "hedgewars-data":
        return _classify_hedgewars(path)
    if package == "sonic-pi-samples" and "/samples/" in path:
        return Kind("sonic-pi", "effects", "")
    return None


def _classify_hedgewars(path: str) -> Optional[Kind]:
    if "/Data/Music/" in path:
        return Kind("hedgewars-music", "music", "")
    if "/Data/Sounds/voices/" in path:
        return Kind("hedgewars-voices", "speech", "")
    if "/Data/Sounds/" in path:
        return Kind("hedgewars-effects", "effects", "")
    return None


def is_installed(package: str) -> bool:
    return subprocess.run(["dpkg", "-s", package], capture_output=True).returncode == 0


def ensure_installed(packages: Sequence[str]) -> None:
    """Install the missing packages with apt-get when running as root; otherwise stop with the
    command line to run."""
    missing = [package for package in packages if not is_installed(package)]
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        fail(f"the built-in corpus needs Debian packages that are not installed; run\n"
             f"    sudo {' '.join(command)}\nor train on your own audio with --audio DIR")
    log(f"installing {len(missing)} Debian packages (about 650 MB for all eight, a few minutes): {' '.join(command)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        # most often a stale package list: refresh it once and try again, this time loudly
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


def versions(packages: Sequence[str]) -> str:
    """``dpkg-query -W`` of the packages: changes when any of them is upgraded."""
    return subprocess.run(["dpkg-query", "-W", *packages], capture_output=True, text=True).stdout


def audio_files(package: str) -> List[tuple]:
    """The package's audio files that the corpus uses: [(path, Kind)], sorted by path."""
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True).stdout
    files = []
    for path in sorted(listing.splitlines()):
        if not path.lower().endswith(AUDIO_EXTS) or not os.path.isfile(path):
            continue
        kind = classify(package, path)
        if kind is not None:
            files.append((path, kind))
    return files
