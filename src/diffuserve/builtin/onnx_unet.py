"""The built-in model's UNet on ONNX Runtime, for CPUs.

Eager PyTorch spends most of a small UNet's step between operators: on two cores a
guided step of the built-in model takes 62 ms eagerly and 33 ms on ONNX Runtime, which
fuses the graph's operators and runs it without Python in between (same weights, same
float32 arithmetic; outputs agree to 1e-5). The UNet is exported once with
``torch.onnx.export`` (20–25 s on two cores) and the file kept in the user's cache
folder under a hash of its weights, its configuration and the library versions, so a
restart only opens it (0.2 s).

Diffusers' attention repeats a cross-attention mask once per head before reshaping it,
which the exporter cannot follow for a batch of any size; :class:`BroadcastMaskAttention`
computes the same attention with the mask broadcast over heads instead, and is installed
on the exported copy only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

logger = logging.getLogger(__name__)

#: Part of the cache key: bump when the export itself changes.
EXPORT_VERSION = 1
#: Exports kept per prompt length, newest first: older ones (other weights, other
#: library versions) are removed after a new export.
KEEP_EXPORTS = 3
#: A partial export older than this was left by a process that died while writing it.
STALE_PARTIAL_SECONDS = 3600
#: The graph's inputs and output, in order.
INPUTS = ("sample", "timestep", "states", "mask")
OUTPUT = "noise"


class BroadcastMaskAttention:
    """Diffusers' scaled-dot-product attention (``AttnProcessor2_0``) for attention
    without spatial or group norms, cross norms or residual connections, with a key
    mask of shape (batch, 1, keys) broadcast over heads and queries rather than copied
    per head."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any
                 ) -> torch.Tensor:
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        heads = attn.heads
        width = key.shape[-1] // heads
        query, key, value = (x.view(batch, -1, heads, width).transpose(1, 2)
                             for x in (query, key, value))
        # (batch, 1, keys) as the UNet makes it → (batch, 1, 1, keys): one row for every
        # head and query.
        mask = None if attention_mask is None else attention_mask.unsqueeze(1)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        out = out.transpose(1, 2).reshape(batch, -1, heads * width).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        result: torch.Tensor = out / attn.rescale_output_factor
        return result


def _plain(attn: Any) -> bool:
    """Whether ``attn`` uses nothing :class:`BroadcastMaskAttention` leaves out."""
    return (attn.spatial_norm is None and attn.group_norm is None and not attn.norm_cross
            and not attn.residual_connection and attn.norm_q is None
            and attn.norm_k is None and len(attn.to_out) == 2)


class _Denoiser(torch.nn.Module):
    """The UNet with positional inputs and a tensor output: what gets exported."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, states: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.unet(sample, timestep, encoder_hidden_states=states,
                                      encoder_attention_mask=mask, return_dict=False)[0]
        return out


def cache_key(unet: Any) -> str:
    """A hash of what the exported graph depends on: weights, configuration, versions."""
    import onnxruntime

    digest = hashlib.sha256()
    digest.update(json.dumps({"config": dict(unet.config), "export": EXPORT_VERSION,
                              "torch": torch.__version__, "ort": onnxruntime.__version__},
                             sort_keys=True, default=str).encode())
    for name, tensor in sorted(unet.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().cpu().numpy())  # no copy
    return digest.hexdigest()[:32]


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("diffuserve")) / "onnx"


def export(unet: Any, path: Path, tokens: int) -> None:
    """Write ``unet`` (float32, on the CPU) to ``path`` as an ONNX graph with a batch of
    any size, for prompts of ``tokens`` tokens."""
    import copy

    from diffusers.models.attention_processor import Attention

    copied = copy.deepcopy(unet).float().cpu().eval()
    for module in copied.modules():
        if isinstance(module, Attention):
            if not _plain(module):
                raise ValueError("an attention layer uses features the export leaves out")
            module.set_processor(BroadcastMaskAttention())  # type: ignore[arg-type]
    channels, side = copied.config.in_channels, copied.config.sample_size
    example = (torch.randn(2, channels, side, side), torch.full((2,), 500.0),
               torch.randn(2, tokens, copied.config.cross_attention_dim),
               torch.ones(2, tokens, dtype=torch.int64))
    batch = torch.export.Dim("batch", min=1, max=1024)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter's notices (deprecations, optional torchvision operators it skips)
        # are not the server's to report.
        warnings.simplefilter("ignore")
        exporter_log.setLevel(logging.ERROR)
        try:
            torch.onnx.export(_Denoiser(copied), example, str(path), dynamo=True,
                              input_names=list(INPUTS), output_names=[OUTPUT],
                              dynamic_shapes=tuple({0: batch} for _ in INPUTS),
                              optimize=True, external_data=False, verbose=False)
        finally:
            exporter_log.setLevel(level)


class OnnxUNet:
    """Runs a UNet's exported graph; called as the pipeline calls its UNet's forward.

    Each call runs on as many threads as PyTorch uses on the calling thread
    (``torch.get_num_threads()``, which a model's ``workers`` set per call): one session
    per thread count, opened at its first use, since an ONNX Runtime session's thread
    count is fixed when it opens. Sessions are safe to run from several threads at once.
    """

    def __init__(self, path: Path, threads: int) -> None:
        self.path = path
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.session = self.session_for(threads)

    def session_for(self, threads: int) -> Any:
        """The session that runs on ``threads`` threads, opened if it is not yet."""
        session = self._sessions.get(threads)  # every step asks: no lock once it is open
        if session is not None:
            return session
        with self._lock:
            session = self._sessions.get(threads)
            if session is None:
                session = self._sessions[threads] = self._open(threads)
            return session

    def _open(self, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Between calls the server encodes PNGs and serves HTTP on the same cores: idle
        # ONNX Runtime threads must sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.path), options,
                                    providers=["CPUExecutionProvider"])

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor | float,
                 states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows = sample.shape[0]
        steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(rows)
        feed = {
            "sample": sample.float().contiguous().numpy(),
            "timestep": steps.contiguous().numpy(),
            "states": states.float().contiguous().numpy(),
            "mask": mask.to(torch.int64).contiguous().numpy(),
        }
        session = self.session_for(max(1, torch.get_num_threads()))
        (noise,) = session.run([OUTPUT], feed)
        return torch.from_numpy(noise).to(sample.dtype)


def load(unet: Any, tokens: int, cache_dir: Path | None = None,
         threads: int | None = None) -> OnnxUNet:
    """``unet`` on ONNX Runtime: its cached export, or a new one written to the cache."""
    folder = cache_dir or default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"unet-{cache_key(unet)}-{tokens}.onnx"
    if not path.is_file():
        started = time.monotonic()
        # Written beside its final name and renamed: two servers starting at once each
        # export, and neither ever opens a half-written file.
        handle, partial = tempfile.mkstemp(dir=folder, suffix=".onnx.part")
        os.close(handle)
        try:
            export(unet, Path(partial), tokens)
            os.replace(partial, path)
        finally:
            Path(partial).unlink(missing_ok=True)
        logger.info("UNet exported for ONNX Runtime", extra={"fields": {
            "path": str(path), "seconds": round(time.monotonic() - started, 1)}})
        prune(folder, tokens)
    return OnnxUNet(path, threads or torch.get_num_threads())


def prune(folder: Path, tokens: int) -> list[Path]:
    """Remove all but the KEEP_EXPORTS newest exports for ``tokens`` (each is 60 MB for
    the built-in model) and partial files of dead exports; returns what was removed."""
    exports = sorted(folder.glob(f"unet-*-{tokens}.onnx"),
                     key=lambda item: item.stat().st_mtime, reverse=True)
    stale = [item for item in folder.glob("*.onnx.part")
             if time.time() - item.stat().st_mtime > STALE_PARTIAL_SECONDS]
    removed = []
    for item in exports[KEEP_EXPORTS:] + stale:
        try:
            item.unlink()
            removed.append(item)
        except OSError:  # another process removed or still holds it
            pass
    return removed
