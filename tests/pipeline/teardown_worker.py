"""Run under torchrun by test_distributed: one DDP step, rank 0 slow to finish, then `distributed.stop`
and `distributed.end_worker`, as `pipeline train` ends.

Writes OUT/rank{N}.json: when the rank finished its own work and when it left the process group.
"""
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from models import DigitNet, DigitNetConfig
from models.sync_bn import convert_sync_batchnorm
from pipeline.distributed import agree, context_from_environment, end_worker, start, stop


def one_step() -> None:
    model = convert_sync_batchnorm(DigitNet(DigitNetConfig(dropout=0.0)))
    ddp = DistributedDataParallel(model)
    loss = torch.nn.functional.cross_entropy(ddp(torch.rand(8, 1, 28, 28)), torch.arange(8))
    loss.backward()


ctx = context_from_environment()
start(ctx, torch.device("cpu"), batch_size=16)
one_step()
agree(ctx, 0.0, False, torch.device("cpu"))  # the training loop's last collective
if ctx.is_main:
    time.sleep(1.0)  # rank 0 evaluates and writes while the others are done
done_at = time.time()
stop(ctx, finished=True)
left_at = time.time()
Path(sys.argv[1], f"rank{ctx.rank}.json").write_text(json.dumps({"done_at": done_at, "left_at": left_at}))
end_worker(0)  # as `pipeline train` ends its workers
