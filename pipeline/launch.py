"""`pipeline train --nproc N`: run the same command in N local processes under torchrun."""
from __future__ import annotations

import signal
import subprocess
import sys

import click


def launch_torchrun(nproc: int, worker_argv: list[str]) -> int:
    """Run ``python -m pipeline <worker_argv>`` in ``nproc`` processes; return the exit status.

    torchrun (``torch.distributed.run``) starts the workers with RANK/WORLD_SIZE set and, if one
    fails, stops the others, so a failed worker ends the whole job instead of leaving it hanging.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "pipeline", *worker_argv]
    process = subprocess.Popen(cmd)
    # Ctrl-C reaches the workers from the terminal directly; SIGTERM to us is passed on to torchrun,
    # which passes it to the workers. Either way they save a checkpoint, and we wait for them.
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda signum, _: process.send_signal(signum))
    try:
        status = process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if status in (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM):
        return status if status > 0 else 128 - status
    if status != 0:
        click.echo(f"pipeline: error: distributed training failed (torchrun exit status {status}); "
                   "the failing worker's message is above", err=True)
        return 1
    return 0
