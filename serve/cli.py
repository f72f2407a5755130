"""`serve`: digit predictions from the exported ONNX model, with onnxruntime only (never torch)."""
from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Serve predictions from a BN-free ONNX digit model exported by `pipeline export`."""


def main() -> None:
    cli(prog_name="serve")


if __name__ == "__main__":
    main()
