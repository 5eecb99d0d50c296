"""Mixed precision: autocast on the right device type, and a GradScaler where fp16 needs one."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from trainer.options import PRECISIONS

DTYPES = dict(zip(PRECISIONS, (None, torch.bfloat16, torch.float16), strict=True))


@dataclass
class MixedPrecision:
    """``trainer.precision``: 32 (off), bf16 (CPU or CUDA), fp16 (CUDA only, with loss scaling).

    bf16 keeps fp32's exponent range, so it needs no scaler; fp16 underflows small gradients
    without one. A disabled scaler passes everything through, so the step code is the same.
    """

    name: str
    dtype: torch.dtype | None
    device_type: str
    scaler: torch.amp.GradScaler

    @classmethod
    def from_config(cls, name: str, device: torch.device) -> MixedPrecision:
        """``name``: one of ``options.PRECISIONS`` (the schema's check, before the start)."""
        if name == "fp16" and device.type != "cuda":
            raise ValueError("trainer.precision=fp16 needs CUDA (fp16 autocast on CPU is not supported "
                             "here); allowed on CPU: 32, bf16")
        scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
        return cls(name, DTYPES[name], device.type, scaler)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)
