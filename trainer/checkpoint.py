"""Checkpoints that resume exactly: atomic on disk, loaded safely, RNG of every rank included.

Nothing a rank receives is unpickled: RNG states are byte tensors of a fixed layout, and a
checkpoint reaches a rank from the file itself (``torch.load(weights_only=True)``) or as tensors
broadcast from rank 0, its structure as JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist

from trainer import resume
from trainer.contract import CHECKPOINTS_DIR, LAST_CHECKPOINT
from trainer.env import DistEnv
from trainer.files import link_atomic, write_atomic
from trainer.logs import get_logger
from trainer.progress import Progress
from trainer.writer import BackgroundWriter, snapshot

log = get_logger("checkpoint")

# --- RNG states as byte tensors --------------------------------------------------------------------
# A fixed little-endian layout per generator, never a pickle: a rank's state travels to rank 0 as a
# uint8 tensor (all_gather) and is stored as uint8 tensors, which torch.load(weights_only=True) reads.
_NUMPY_WORDS = 624  # MT19937 key words of numpy's legacy global generator
_PYTHON_WORDS = 625  # random.getstate()'s internal tuple: 624 words and the position
RNG_SECTIONS = ("torch", "numpy", "python", "cuda")


def _numpy_state_bytes() -> torch.Tensor:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    if name != "MT19937" or len(keys) != _NUMPY_WORDS:
        raise ValueError(f"numpy's global generator is {name} with {len(keys)} words: MT19937 expected")
    raw = (np.asarray(keys, dtype="<u4").tobytes() + np.array([pos, has_gauss], dtype="<i8").tobytes()
           + np.array([cached], dtype="<f8").tobytes())
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _set_numpy_state(state: torch.Tensor) -> None:
    raw = state.numpy().tobytes()
    keys_end = 4 * _NUMPY_WORDS
    keys = np.frombuffer(raw[:keys_end], dtype="<u4").astype(np.uint32)
    pos, has_gauss = (int(value) for value in np.frombuffer(raw[keys_end:keys_end + 16], dtype="<i8"))
    cached = float(np.frombuffer(raw[keys_end + 16:keys_end + 24], dtype="<f8")[0])
    np.random.set_state(("MT19937", keys, pos, has_gauss, cached))


def _python_state_bytes() -> torch.Tensor:
    version, internal, gauss_next = random.getstate()
    if len(internal) != _PYTHON_WORDS:
        raise ValueError(f"random.getstate() has {len(internal)} words: {_PYTHON_WORDS} expected")
    raw = (np.array([version, gauss_next is not None, *internal], dtype="<i8").tobytes()
           + np.array([gauss_next or 0.0], dtype="<f8").tobytes())
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _set_python_state(state: torch.Tensor) -> None:
    raw = state.numpy().tobytes()
    words = [int(value) for value in np.frombuffer(raw[:8 * (_PYTHON_WORDS + 2)], dtype="<i8")]
    gauss_next = float(np.frombuffer(raw[8 * (_PYTHON_WORDS + 2):], dtype="<f8")[0]) if words[1] else None
    random.setstate((words[0], tuple(words[2:]), gauss_next))


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's generators as uint8 tensors; CUDA: only ``device``'s own generator."""
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state_bytes(), "python": _python_state_bytes()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what ``rng_state`` saved (also the tuple layout of older checkpoints); CUDA: only
    ``device``'s generator, so no other visible device gets a context."""
    if isinstance(state["python"], tuple):  # older checkpoints: the getstate() tuples themselves
        random.setstate(state["python"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        cuda = state.get("cuda")
        cuda = cuda[device.index] if isinstance(cuda, list) and device.index is not None and device.index < len(cuda) else None
    else:
        _set_python_state(state["python"])
        _set_numpy_state(state["numpy"])
        cuda = state.get("cuda")
    torch.set_rng_state(state["torch"])
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def _pack(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """One uint8 tensor: the sections' byte lengths (int64), then the sections."""
    sections = [state.get(name, torch.empty(0, dtype=torch.uint8)).reshape(-1) for name in RNG_SECTIONS]
    lengths = torch.tensor([len(section) for section in sections], dtype=torch.int64)
    return torch.cat([lengths.view(torch.uint8), *sections])


def _unpack(packed: torch.Tensor) -> dict[str, torch.Tensor]:
    header = 8 * len(RNG_SECTIONS)
    lengths = packed[:header].clone().view(torch.int64).tolist()
    state, offset = {}, header
    for name, length in zip(RNG_SECTIONS, lengths, strict=True):
        if length:
            state[name] = packed[offset:offset + length].clone()
        offset += length
    return state


def gather_rng_states(device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Every rank's generators, indexed by rank (collective: all ranks call it).

    Tensor collectives only: the packed sizes first, then the states padded to the longest.
    """
    packed = _pack(rng_state(device))
    size = torch.tensor([packed.numel()], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = max(int(value.item()) for value in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:packed.numel()] = packed.to(device)
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [_unpack(tensor[:int(length.item())].cpu()) for tensor, length in zip(gathered, sizes, strict=True)]


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, fsync, rename: a crash leaves the old checkpoint or the new one."""
    write_atomic(path, lambda file: torch.save(state, file))


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# --- A checkpoint on every rank, without pickles over the wire ------------------------------------
# Every dtype a state dict may hold, by a fixed code (the wire carries the code, not a pickle).
_DTYPES = [getattr(torch, name) for name in (
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "complex64", "complex128", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2",
) if hasattr(torch, name)]
_DTYPE_CODES = {dtype: code for code, dtype in enumerate(_DTYPES)}


def _encode(value: Any, tensors: list[torch.Tensor]) -> Any:
    """The structure of a state dict as JSON (tensors replaced by their index in ``tensors``)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.dtype not in _DTYPE_CODES:
            raise TypeError(f"checkpoint tensor of layout {value.layout} and dtype {value.dtype}: "
                            f"cannot be sent to the other ranks")
        tensors.append(value)
        return {"t": len(tensors) - 1}
    if isinstance(value, dict):
        return {"d": [[_encode(key, tensors), _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"u": [_encode(item, tensors) for item in value]}
    if isinstance(value, list):
        return {"l": [_encode(item, tensors) for item in value]}
    raise TypeError(f"checkpoint value of type {type(value).__name__}: cannot be sent to the other ranks")


def _decode(value: Any, tensors: list[torch.Tensor]) -> Any:
    if not isinstance(value, dict):
        return value
    ((kind, items),) = value.items()
    if kind == "t":
        return tensors[items]
    if kind == "d":
        return {_decode(key, tensors): _decode(item, tensors) for key, item in items}
    if kind == "u":
        return tuple(_decode(item, tensors) for item in items)
    return [_decode(item, tensors) for item in items]


def _broadcast_bytes(payload: bytes, device: torch.device) -> bytes:
    """Rank 0's ``payload`` on every rank (a length, then a uint8 tensor)."""
    length = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(length, src=0)
    size = int(length.item())
    if size == 0:
        return b""
    if dist.get_rank() == 0:
        buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    else:
        buffer = torch.empty(size, dtype=torch.uint8, device=device)
    dist.broadcast(buffer, src=0)
    return buffer.cpu().numpy().tobytes()


def broadcast_state(state: dict[str, Any] | None, device: torch.device) -> dict[str, Any]:
    """Rank 0's ``state`` on every rank (collective): its structure as JSON bytes, every tensor's
    dtype code and shape as an int64 tensor, then each tensor's bytes. Nothing is unpickled."""
    tensors: list[torch.Tensor] = []
    structure, specs = b"", torch.empty(0, dtype=torch.int64)
    if dist.get_rank() == 0:
        structure = json.dumps(_encode(state, tensors)).encode()
        specs = torch.tensor([number for tensor in tensors
                              for number in (_DTYPE_CODES[tensor.dtype], tensor.dim(), *tensor.shape)],
                             dtype=torch.int64)
    structure = _broadcast_bytes(structure, device)
    count = torch.tensor([specs.numel()], dtype=torch.int64, device=device)
    dist.broadcast(count, src=0)
    specs = specs.to(device) if dist.get_rank() == 0 else torch.empty(int(count.item()), dtype=torch.int64, device=device)
    dist.broadcast(specs, src=0)
    numbers, position = specs.tolist(), 0
    received: list[torch.Tensor] = []
    while position < len(numbers):
        dtype, ndim = _DTYPES[numbers[position]], numbers[position + 1]
        shape = numbers[position + 2:position + 2 + ndim]
        position += 2 + ndim
        nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if dist.get_rank() == 0:
            buffer = tensors[len(received)].detach().contiguous().reshape(-1).view(torch.uint8).to(device)
        else:
            buffer = torch.empty(nbytes, dtype=torch.uint8, device=device)
        if nbytes:
            dist.broadcast(buffer, src=0)
        received.append(buffer.cpu().view(dtype).reshape(shape))
    if dist.get_rank() == 0:
        assert state is not None
        return state
    return _decode(json.loads(structure), received)


_HASH_CHUNK = 16 << 20  # bytes hashed at a time


def _fingerprint(file: IO[bytes]) -> str:
    """What tells an open checkpoint file's bytes from any other's, without reading them all.

    torch's zip format ends in a central directory (a few kB) holding every record's name, size,
    offset and CRC-32 (of the pickled structure and of every tensor's bytes): the sha256 of those
    and the file's size tells files of different content apart (short of a CRC-32 collision in
    every record that differs) without a second pass over gigabytes. A file of another format, or
    saved without CRC-32s (``torch.serialization.set_crc32_options(False)``), is hashed whole.
    Leaves ``file`` at 0."""
    size = os.fstat(file.fileno()).st_size
    try:
        with zipfile.ZipFile(file) as archive:  # a file object passed in stays open
            records = [[info.filename, info.CRC, info.file_size, info.header_offset] for info in archive.infolist()]
    except zipfile.BadZipFile:
        records = []
    digest = hashlib.sha256(str(size).encode())
    if records and all(crc or not length for _, crc, length, _ in records):
        digest.update(json.dumps(records).encode())
    else:
        file.seek(0)
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()


def _sees(path: Path, size: int, fingerprint: str) -> IO[bytes] | None:
    """``path`` opened, when this rank sees the very file rank 0 read (same size and
    ``_fingerprint``): the file checked is the file loaded."""
    try:
        with contextlib.ExitStack() as closing:
            file = closing.enter_context(open(path, "rb"))
            if os.fstat(file.fileno()).st_size == size and _fingerprint(file) == fingerprint:
                closing.pop_all()  # the caller's now
                return file
    except OSError:
        pass
    return None


def load_everywhere(path: Path | None, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint rank 0 names, on every rank (collective; ``path`` matters on rank 0 only,
    None: nothing to resume).

    Rank 0 sends the file's size and ``_fingerprint``; each other rank checks whether it sees the
    same file (a shared run directory), which takes milliseconds. If every rank does, each reads
    it itself (``torch.load(weights_only=True)``, reading it in place: one copy of the state per
    rank), all at the same time. If any rank does not, rank 0 maps the file (``mmap``: no copy of
    its own) and sends the state as tensors straight from the mapping (``broadcast_state``, one
    broadcast per tensor), so reading the file and sending it overlap instead of following each
    other. Nothing is unpickled from the network.
    """
    with contextlib.ExitStack() as closing:
        file: IO[bytes] | None = None
        if dist.get_rank() == 0 and path is not None:
            file = closing.enter_context(open(path, "rb"))
            about = _broadcast_bytes(json.dumps({
                "path": str(path.resolve()), "size": os.fstat(file.fileno()).st_size,
                "fingerprint": _fingerprint(file)}).encode(), device)
        else:
            about = _broadcast_bytes(b"", device)
        if not about:
            return None
        if dist.get_rank() != 0:
            where = json.loads(about)
            file = _sees(Path(where["path"]), where["size"], where["fingerprint"])
            if file is not None:
                closing.enter_context(file)
        everyone = torch.tensor([file is not None], dtype=torch.int64, device=device)
        dist.all_reduce(everyone, op=dist.ReduceOp.MIN)
        if everyone.item():
            assert file is not None
            return torch.load(file, map_location="cpu", weights_only=True)
    if dist.get_rank() == 0:
        assert path is not None
        log.info("not every rank sees %s: rank 0 sends the checkpoint as tensors", path)
        # torch maps only its zip format; an older file is read whole.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        return broadcast_state(state, device)
    return broadcast_state(None, device)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state_dict tensors' bytes, in key order: equal weights, equal digest."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- the run's checkpoints -------------------------------------------------------------------------

class Checkpoints:
    """``DIR/checkpoints``: ``last.pt`` (what a resume reads), ``best.pt`` (``save.best``), and with
    ``save.keep_last=N`` the N newest as ``step-GLOBALSTEP.pt`` (``last.pt`` another name of the
    newest). Every name changes in one rename, so a crash leaves the previous checkpoint whole.

    Rank 0 writes in the background (``trainer.writer``): ``submit`` returns once the state is
    copied to CPU memory; ``wait`` (the run's end, a stop) returns once it is on disk."""

    STEP_FILE = re.compile(r"step-(\d+)\.pt")

    def __init__(self, run_dir: Path, keep_last: int = 1) -> None:
        self.folder = run_dir / CHECKPOINTS_DIR
        self.keep_last = keep_last
        self.writer = BackgroundWriter()

    @property
    def last(self) -> Path:
        return self.folder / LAST_CHECKPOINT

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def submit(self, state: dict[str, Any], global_step: int, last: bool = True, best: bool = False) -> None:
        """Write ``state`` in the background: as ``last.pt`` (``last``), then as ``best.pt`` too
        (``best``: a link to the new ``last.pt``, or its own file when ``last`` is False). Waits
        for the previous write first (so at most one snapshot is held), and raises its error if it
        failed."""
        self.writer.wait()
        copy = snapshot(state)
        self.writer.submit(lambda: self._write(copy, global_step, last, best))

    def wait(self) -> None:
        """Every submitted checkpoint is on disk (raises a failed write's error)."""
        self.writer.wait()

    def _write(self, state: dict[str, Any], global_step: int, last: bool, best: bool) -> None:
        if last:
            self._write_last(state, global_step)
        if best:
            if last:
                link_atomic(self.last, self.best)
            else:
                save_atomic(state, self.best)

    def _write_last(self, state: dict[str, Any], global_step: int) -> None:
        if self.keep_last == 1:
            save_atomic(state, self.last)
            return
        newest = self.folder / f"step-{global_step:09d}.pt"
        save_atomic(state, newest)
        link_atomic(newest, self.last)
        kept = sorted(path for path in self.folder.glob("step-*.pt") if self.STEP_FILE.fullmatch(path.name))
        for old in kept[:-self.keep_last]:
            old.unlink(missing_ok=True)


@dataclass
class TrainingState:
    """Everything a checkpoint holds, and the one place that saves and restores it: model,
    optimizer, schedule, scaler, progress (every rank's own counters), every rank's RNG, and the
    fingerprint of what the sample order and the schedule came from."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LRScheduler, or None
    scaler: torch.amp.GradScaler
    fingerprint: dict[str, Any]
    seed: int

    def state_dict(self, env: DistEnv, progress: Progress, device: torch.device) -> dict[str, Any] | None:
        """Collective (every rank's RNG state and counters are gathered); the state on rank 0 only."""
        rng_states = gather_rng_states(device)
        per_rank = progress.gather_per_rank(device)
        if not env.is_main:
            return None
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),  # empty unless fp16
            "progress": asdict(progress),  # rank 0's; every rank's own counters below
            "progress_per_rank": per_rank,
            "rng": rng_states,
            "world_size": env.world_size,
            "seed": self.seed,
            "fingerprint": self.fingerprint,  # what the sample order and the schedule came from
        }

    def save(self, checkpoints: Checkpoints, env: DistEnv, progress: Progress, device: torch.device,
             last: bool = True, best: bool = False) -> None:
        """Collective; rank 0 hands the state to the background writer: ``last.pt`` (``last``),
        ``best.pt`` (``best``). Returns once the state is copied, not written (``Checkpoints.wait``)."""
        state = self.state_dict(env, progress, device)
        if state is not None:
            checkpoints.submit(state, progress.global_step, last=last, best=best)

    def restore(self, state: dict[str, Any], env: DistEnv, device: torch.device, sched: Any,
                steps_per_epoch: int, epochs: int, log: logging.Logger) -> Progress:
        """Every rank puts the checkpoint's state in place (its own RNG and counters) and returns
        where the run stands. A checkpoint of another world size restarts its epoch; one of another
        schedule gets the current settings' schedule at the run's position (with a warning)."""
        base_lrs = [group.get("initial_lr", group["lr"]) for group in self.optimizer.param_groups]
        progress = Progress(**state["progress"])
        same_world = state["world_size"] == env.world_size
        if not same_world:
            # Another world size shards the data differently: a mid-epoch position is
            # meaningless, so that epoch restarts; exactness is only promised for the same size.
            log.warning("checkpoint from world size %d, now %d: RNG streams not restored, "
                        "epoch %d restarts from its beginning", state["world_size"],
                        env.world_size, progress.epoch)
            progress = progress.start_epoch(progress.epoch)
        saved = state.get("fingerprint")
        schedule_changes: list[str] = []
        if saved is not None:
            resume.check_sample_order(saved, self.fingerprint, progress.epoch, progress.step_in_epoch, log)
            schedule_changes = resume.changed(resume.SCHEDULE_KEYS, saved, self.fingerprint)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if schedule_changes:
            # The checkpoint's curve was drawn for other settings (its end may be behind us:
            # lr 0): the current settings' schedule, at the run's position on it.
            same_intervals = same_world and "optimizer steps per epoch" not in schedule_changes
            position = (progress.epoch if sched.interval != "step" else
                        progress.global_step if same_intervals else progress.epoch * steps_per_epoch)
            self.scheduler = resume.rederive_schedule(sched, self.optimizer, base_lrs, steps_per_epoch,
                                                      epochs, position)
            log.warning("resuming with another schedule (%s): the lr schedule is re-derived for "
                        "the current settings, at interval %d (lr %.4g)",
                        resume.describe(schedule_changes, saved or {}, self.fingerprint), position,
                        self.optimizer.param_groups[0]["lr"])
        elif self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if same_world:
            set_rng_state(state["rng"][env.rank], device)
            if "progress_per_rank" in state:  # older checkpoints: rank 0's counters for all
                progress = progress.with_own(state["progress_per_rank"][env.rank])
        log.info("resumed at epoch %d, step %d of that epoch (global step %d)",
                 progress.epoch, progress.step_in_epoch, progress.global_step)
        return progress
