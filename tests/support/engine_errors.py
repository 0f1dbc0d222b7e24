"""One instance of every engine error, for the tests of pickling and of the error table."""

from __future__ import annotations

from diffuserve.engine import errors

SAMPLES: list[errors.EngineError] = [
    errors.QueueFull("sd", 64, 12),
    errors.Draining(7),
    errors.ModelNotLoaded("sd", 5),
    errors.WorkerLost("sd", 3),
    errors.UnknownModel("sd"),
    errors.ResidencyRefused("sd", "its backend cannot unload its weights"),
    errors.UnsupportedTask("sd", "edit"),
    errors.TooManyImages("qwen-edit", 3, 4),
    errors.PromptTooLong("flux", 512, 600),
    errors.DeadlineExceeded(started=False, timeout_seconds=540.0, retry_after=30),
    errors.DeadlineExceeded(started=True, timeout_seconds=0.5, retry_after=1),
    errors.Cancelled(),
    errors.OutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB"),
    errors.ContentFlagged(),
    errors.GenerationFailed("sd", "RuntimeError: boom"),
    errors.ModelLoadFailed("Could not load model 'sd' from 'x': that folder does not exist."),
]
