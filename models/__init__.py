"""Network definitions and BN folding (pure PyTorch: no I/O)."""
from models.fold import fold_batchnorm, fold_bn_params, recompute_bn_statistics
from models.net import DigitNet, DigitNetConfig, WithProbabilities, batchnorm_layers

__all__ = [
    "DigitNet", "DigitNetConfig", "WithProbabilities", "batchnorm_layers",
    "fold_batchnorm", "fold_bn_params", "recompute_bn_statistics",
]
