"""Self-describing checkpoints: ``{"model": state_dict, "config": asdict(cfg), ...}``, never pickled modules."""
from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import atomic_path
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from models import DigitNet

CHECKPOINT_FORMAT = "foldserve-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically, with a checksum of its weights that every load verifies."""
    import torch

    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload,
               "model_sha256": weights_digest(payload["model"])}
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as exc:  # torch's zip writer reports a failed write as "unexpected pos ..."
        free_mb = shutil.disk_usage(path.parent).free / 1e6
        kept = "; the previous checkpoint is kept" if path.exists() else ""
        raise PipelineError(f"cannot write {path} (is the disk full? {free_mb:.0f} MB free): "
                            f"{str(exc).strip().splitlines()[-1][:120]}{kept}") from None


def weights_digest(state_dict: dict[str, Any]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: torch.load does not check the zip's
    CRCs, so flipped bytes inside tensor data would otherwise load silently."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``), check it is one of ours and that its weights
    match their checksum."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: Path) -> tuple[dict[str, Any], str]:
    """``load_checkpoint``, and the sha256 of the very bytes it was loaded from (the file may be
    rewritten afterwards, by a training run that is still going)."""
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # an untrusted file: torch raises anything from IndexError to UnpicklingError
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{path}: not a readable checkpoint ({first_line[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise PipelineError(f"{path}: not a foldserve checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise PipelineError(f"{path}: checkpoint version {ckpt.get('version')} is not supported "
                            f"(this foldserve reads version {CHECKPOINT_VERSION})")
    for key in ("model", "config"):
        if key not in ckpt:
            raise PipelineError(f"{path}: checkpoint has no {key!r} entry")
    if "model_sha256" in ckpt:  # checkpoints written before checksums were added have none
        try:
            intact = weights_digest(ckpt["model"]) == ckpt["model_sha256"]
        except (AttributeError, TypeError, RuntimeError):
            intact = False
        if not intact:
            raise PipelineError(f"{path}: the weights do not match their checksum: the file is damaged; "
                                "retrain, or resume from an intact copy")
    return ckpt, hashlib.sha256(data).hexdigest()


def model_from_checkpoint(ckpt: dict[str, Any], source: Path | str = "checkpoint") -> "DigitNet":
    """Rebuild the network from the checkpoint's own config and load its weights (eval mode)."""
    from models import DigitNet, DigitNetConfig

    try:
        cfg = DigitNetConfig.from_dict(dict(ckpt["config"]))
        model = DigitNet(cfg)
        model.load_state_dict(ckpt["model"], strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise PipelineError(f"{source}: checkpoint does not match the DigitNet architecture "
                            f"({first_line[:200]})") from None
    return model.eval()
