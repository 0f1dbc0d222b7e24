"""What a loaded pipeline's weights hold in memory.

Counted from the tensors themselves, so that quantised weights (torchao's tensor
subclasses, which keep their data in inner tensors) count what they really hold, and a
tensor shared by two components (tied weights, a pipeline built from another's parts)
counts once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def weight_bytes(pipeline: Any) -> int:
    """Bytes held by the parameters and buffers of every PyTorch module among
    ``pipeline``'s components (or of ``pipeline`` itself, a module), each storage
    counted once."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for module in _modules(pipeline):
        for tensor in (*module.parameters(recurse=True), *module.buffers(recurse=True)):
            for plain in _plain_tensors(tensor):
                if plain.device.type == "meta":
                    continue
                storage = plain.untyped_storage()
                key = (str(plain.device), storage.data_ptr())
                if key in seen and storage.data_ptr() != 0:
                    continue
                seen.add(key)
                total += storage.nbytes()
    return total


def _modules(pipeline: Any) -> Iterator[Any]:
    import torch

    if isinstance(pipeline, torch.nn.Module):
        yield pipeline
        return
    components = getattr(pipeline, "components", None)
    if not isinstance(components, dict):
        return
    for component in components.values():
        if isinstance(component, torch.nn.Module):
            yield component


def _plain_tensors(tensor: Any) -> Iterator[Any]:
    """``tensor``, or for a tensor subclass that keeps its data in inner tensors
    (``__tensor_flatten__``: torchao's quantised weights), those, recursively."""
    inner = getattr(tensor, "data", tensor)
    flatten = getattr(type(inner), "__tensor_flatten__", None)
    if flatten is None:
        yield inner
        return
    names, _ = inner.__tensor_flatten__()
    for name in names:
        yield from _plain_tensors(getattr(inner, name))
