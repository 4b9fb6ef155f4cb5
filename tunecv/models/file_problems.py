"""Why a file is no checkpoint, in a few words read from its bytes: the reason in tunecv's one-line error (torch's
own text runs to many lines, is cut mid-sentence, or advises loading the file with weights_only=False, which would
run any code a pickle holds)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6: a zip archive holding <name>/data.pkl
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # the older format: a pickled magic number first
OBJECTS = "it holds Python objects besides tensors, and unpickling those could run code"


def torch_file_problem(path: Path, err: Exception) -> str:
    """Why torch.load(weights_only=True) refused `path` (`err`: what it raised)."""
    if isinstance(err, OSError):
        return os_problem(err)
    head = _head(path)
    if not head:
        return "an empty file"
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return "truncated or damaged: its zip archive is incomplete"
        with zipfile.ZipFile(path) as archive:
            if not any(name.rsplit("/", 1)[-1] == "data.pkl" for name in archive.namelist()):
                return "a zip archive, not a PyTorch file"
        return OBJECTS if isinstance(err, pickle.UnpicklingError) else "damaged"
    if head.startswith(LEGACY_MAGIC):
        return "truncated" if isinstance(err, EOFError) else \
            OBJECTS if isinstance(err, pickle.UnpicklingError) else "damaged"
    if head.startswith(b"\x80"):
        return "a Python pickle, not a PyTorch file"
    return "a text file, not a PyTorch file" if is_text(head) else "not a PyTorch file"


def os_problem(err: OSError) -> str:
    """"permission denied", "input/output error": the operating system's words."""
    return (err.strerror or type(err).__name__).lower()


def _head(path: Path, size: int = 512) -> bytes:
    with open(path, "rb") as file:
        return file.read(size)


def is_text(data: bytes) -> bool:
    """No control bytes but the usual whitespace: text (UTF-8 included), not a binary format."""
    return all(byte >= 0x20 or byte in b"\t\n\r\f" for byte in data)


def safetensors_file_problem(path: Path, err: Exception) -> str:
    """Why safetensors refused `path` (`err`: what it raised)."""
    return os_problem(err) if isinstance(err, OSError) else \
        safetensors_problem(_head(path, MAX_HEADER), path.stat().st_size)


MAX_HEADER = 1 << 24  # bytes of a safetensors file read to say what is wrong with it


def safetensors_problem(head: bytes, size: int) -> str:
    """Why a file of `size` bytes starting with `head` is no safetensors file: one of those starts with the
    length of its JSON header (8 bytes), then the header, then the tensors' bytes the header places."""
    if not head:
        return "an empty file"
    if is_text(head[:512]):
        return "a text file, not a safetensors file"
    if len(head) < 9 or head[8:9] != b"{":
        return "not a safetensors file"
    length = int.from_bytes(head[:8], "little")
    if 8 + length > size:
        return "truncated"
    try:
        header = json.loads(head[8:8 + length])
        end = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "damaged: its header is not valid"
    return "truncated" if 8 + length + end > size else "damaged"
