"""Self-describing checkpoints: ``{"model": state_dict, "config": asdict(cfg), ...}``, never pickled modules."""
from __future__ import annotations

import pickle
import zipfile
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
    import torch

    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check it is one of ours."""
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
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
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], source: Path | str = "checkpoint") -> "DigitNet":
    """Rebuild the network from the checkpoint's own config and load its weights (eval mode)."""
    from models import DigitNet, DigitNetConfig

    try:
        cfg = DigitNetConfig.from_dict(dict(ckpt["config"]))
        model = DigitNet(cfg)
        model.load_state_dict(ckpt["model"], strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise PipelineError(f"{source}: checkpoint does not match the DigitNet architecture ({first_line[:200]})") from None
    return model.eval()
