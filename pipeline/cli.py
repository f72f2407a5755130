"""`pipeline`: train the BN digit CNN, fold and export it to ONNX, verify parity.

The commands are thin: each converts its options and calls one typed function. Heavy imports
(torch, onnx) happen inside those functions so `pipeline --help` is instant.
"""
from __future__ import annotations

import importlib.util
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline.data import DATASETS
from pipeline.errors import PipelineError
from pipeline.train import DEVICES, resolve_device
from serve.repository import DEFAULT_MODEL_NAME, INT8_SUFFIX

DEFAULT_RUN = Path("runs/default")
DATA_HELP = ("sample: 5,000 real MNIST digits embedded in the package (4,000 train / 1,000 test). "
             "mnist: the four standard MNIST files in --data-dir. fashion-mnist: from --data-dir, "
             "default /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist).")
DATA_DIR_HELP = "Directory with the IDX files (raw or .gz; torchvision's MNIST/raw layout works too)."


def data_options(names: tuple[str, ...] = DATASETS, data_help: str = DATA_HELP,
                 dir_help: str = DATA_DIR_HELP) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--data and --data-dir, as every command that reads a dataset declares them."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                               help=dir_help)(command)
        return click.option("--data", type=click.Choice(list(names)), default="sample", show_default=True,
                            help=data_help)(command)
    return decorate


device_option = click.option("--device", type=click.Choice(list(DEVICES)), default="auto", show_default=True,
                             help="auto: cuda where a GPU is available, else cpu.")
TRAIN_EXTRA_HINT = "pip install 'foldserve[train]'"
TRAIN_EXTRA_MODULES = ("torch", "onnx", "onnxscript", "tqdm", "matplotlib")


class Failure(click.ClickException):
    """An expected failure, shown as `serve` shows its own: "pipeline: error: ..." on one line, exit 1.
    (Usage errors stay click's: the usage line, then "Error: ...", exit 2.)"""

    def show(self, file: Any = None) -> None:
        click.echo(f"pipeline: error: {self.format_message()}", err=True)


class PipelineGroup(click.Group):
    """Turns expected failures into one clear line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            raise Failure(str(exc)) from None


@click.group(cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="foldserve", prog_name="pipeline")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def cli(verbose: bool) -> None:
    """Train a batch-normalized digit CNN, fold BN into its weights, export BN-free ONNX, prove parity."""
    # checked before any command runs, without importing anything heavy
    missing = [name for name in TRAIN_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise Failure(f"`pipeline` needs the training extra ({', '.join(missing)} not installed): "
                      f"{TRAIN_EXTRA_HINT}")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def option_argv(ctx: click.Context, name: str) -> list[str]:
    """The command-line words that reproduce parameter ``name`` as the user gave it."""
    param = next(p for p in ctx.command.params if p.name == name)
    value = ctx.params[name]
    if isinstance(param, click.Option) and param.is_flag:
        if param.secondary_opts:  # --x/--no-x
            return [param.opts[0] if value else param.secondary_opts[0]]
        return [param.opts[0]] if value else []
    return [param.opts[0], str(value)]


class StopFlag:
    """Set by SIGINT/SIGTERM; the training loop polls it after every step and saves a checkpoint."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def install(self) -> Callable[[], None]:
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self.signum is not None:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.signum = signum
            click.echo(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step…", err=True)

        for s in previous:
            signal.signal(s, handler)

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)

        return restore


@cli.command()
@data_options()
@click.option("--download", is_flag=True, help="With --data mnist: fetch missing files into --data-dir (md5-verified).")
@click.option("--epochs", type=int, default=25, show_default=True, help="Passes over the training split.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True,
              help="Peak learning rate (short warm-up, then cosine decay to 0).")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
              help="sgd uses momentum 0.9.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds initialization, data order, augmentation and dropout: same seed on CPU, same metrics.")
@click.option("--bn/--no-bn", default=True, show_default=True,
              help="--no-bn: train the variant without batch normalization (plain biases).")
@click.option("--dropout", type=float, default=0.5, show_default=True, help="Dropout before the last layer.")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Small random affine per image (±10°, ±2 px, scale 0.9–1.1).")
@click.option("--augment-real/--no-augment-real", default=True, show_default=True,
              help="Also, for half the images: elastic distortion, thicker/thinner strokes, blur, contrast, noise.")
@click.option("--stroke-digits", type=click.IntRange(min=0), default=4000, show_default=True,
              help="Digits drawn from stroke skeletons (pipeline/synth.py) added to a digit training split.")
@click.option("--non-digits", type=click.IntRange(min=0), default=2500, show_default=True,
              help='Generated letters, shapes and scribbles added as the class "not a digit" (0: no such class).')
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RUN, show_default=True,
              help="Run directory: config.json, metrics.json, checkpoint.pt.")
@device_option
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps in total (smoke runs).")
@click.option("--log-every", type=int, default=20, show_default=True, help="Record the training loss every N steps.")
@click.option("--eval-every", type=int, default=0, show_default=True,
              help="Also evaluate on the test split every N steps (0: after each epoch only).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="bf16: bfloat16 autocast for the forward pass (weights, checkpoints and exports stay float32). "
                   "auto: bf16 where the CPU has AVX512-BF16/AMX (or the GPU supports it), else fp32.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="channels_last memory format (faster convolutions on CPU).")
@click.option("--checkpoint-every", "checkpoint_every_s", type=click.FloatRange(min=0), default=60.0,
              show_default=True, help="Seconds between checkpoints during training, so a crash loses at most "
                                      "this much (one is always written at the end and on Ctrl-C/SIGTERM).")
@click.option("--compile", "compile", is_flag=True, help="torch.compile the training forward pass.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its checkpoint (after Ctrl-C, or with a larger --epochs).")
@click.option("--overwrite", is_flag=True,
              help="Replace the run already in --out: its checkpoint and the models exported from it are deleted "
                   "first. Without it, training into a directory that holds a run is refused.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train with N local processes (torchrun, DistributedDataParallel, synchronized BN). "
                   "--batch-size is the global batch, split evenly across processes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx: click.Context, data: str, data_dir: Path | None, download: bool, epochs: int, batch_size: int,
          lr: float, optimizer: str, seed: int, bn: bool, dropout: float, augment: bool, augment_real: bool,
          stroke_digits: int, non_digits: int, out: Path, device: str,
          max_steps: int | None, log_every: int, eval_every: int, precision: str, channels_last: bool,
          checkpoint_every_s: float, compile: bool,
          resume: bool, overwrite: bool, nproc: int, quiet: bool) -> None:
    """Train the digit CNN and write config.json, metrics.json and checkpoint.pt into --out.

    Evaluates on the test split (eval mode: population statistics) after every epoch. Ctrl-C or
    SIGTERM saves a resumable checkpoint; `--resume` continues from it with the saved settings.
    """
    from pipeline.data import load_dataset
    from pipeline.train import TrainConfig, train as run_training

    cfg = TrainConfig(data=data, data_dir=str(data_dir) if data_dir else None, epochs=epochs, batch_size=batch_size,
                      lr=lr, optimizer=optimizer, seed=seed, bn=bn, dropout=dropout, augment=augment,
                      augment_real=augment_real, stroke_digits=stroke_digits, non_digits=non_digits,
                      device=device,
                      max_steps=max_steps, log_every=log_every, eval_every=eval_every, precision=precision,
                      channels_last=channels_last, compile=compile, checkpoint_every_s=checkpoint_every_s)
    given = {name for name in ctx.params if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    cfg.validate()
    if resume and overwrite:
        raise PipelineError("--resume continues the run in --out, --overwrite replaces it: pass one of them")
    dataset = None
    if download or not resume:
        dataset = load_dataset(data, data_dir, download=download)
    if nproc > 1:
        from pipeline.distributed import check_one_gpu_per_process
        from pipeline.launch import launch_torchrun

        # checked here as well as in the workers, so a bad option is one line before any worker starts
        if batch_size % nproc:
            raise PipelineError(f"--batch-size {batch_size} (the global batch) must be divisible by --nproc {nproc}")
        if resume and not (out / "checkpoint.pt").is_file():
            raise PipelineError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}")
        if resolve_device(device).type == "cuda":
            check_one_gpu_per_process(nproc)
        worker_args = [a for name in ctx.params if name not in ("nproc", "download")
                       and ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
                       for a in option_argv(ctx, name)]
        sys.exit(launch_torchrun(nproc, ["train", *worker_args]))
    from pipeline.distributed import context_from_environment, stop as stop_process_group

    dist_ctx = context_from_environment()
    stop = StopFlag()
    restore = stop.install()
    finished = False
    try:
        result = run_training(cfg, out, resume=resume, overwrite=overwrite, given_options=given, should_stop=stop,
                              progress=not quiet, dataset=dataset)
        finished = True
    finally:
        restore()
        stop_process_group(dist_ctx, finished=finished)
    if not dist_ctx.is_main:
        if result.interrupted:
            sys.exit(128 + (stop.signum or signal.SIGINT))
        return
    if result.interrupted:
        click.echo(f"interrupted at step {result.step}; checkpoint saved to {out / 'checkpoint.pt'}. "
                   f"Continue with: pipeline train --out {out} --resume", err=True)
        sys.exit(128 + (stop.signum or signal.SIGINT))
    if result.diverged:
        raise Failure(f"training diverged at step {result.step} (loss not finite or above 1e3); "
                      f"try a lower --lr. Metrics so far are in {out / 'metrics.json'}")
    click.echo(f"test accuracy {result.test_accuracy:.2%} (test loss {result.test_loss:.4f}) after "
               f"{result.step} steps in {result.wall_time:.0f} s; run saved in {out}")


@cli.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RUN,
              show_default=True, help="Run directory holding checkpoint.pt.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the model  [default: RUN/model.onnx]")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (18 or newer).")
@click.option("--no-fold", is_flag=True,
              help="Keep BatchNormalization nodes in the graph (onnxruntime then fuses them when it loads the model).")
@click.option("--recompute-stats", is_flag=True,
              help="Before folding, replace BN's moving averages with the exact population mean and unbiased "
                   "variance over the training split (the BN paper's inference procedure).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also write OUT-int8.onnx: onnxruntime static quantization (QDQ, per-channel weights, "
                   "calibrated on 500 training images), kept only if within 0.3 accuracy points of fp32. "
                   "Not with --no-fold.")
@click.option("--repository", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Then publish the model into this model repository in Triton's layout: "
                   "DIR/NAME/config.pbtxt and DIR/NAME/1/model.onnx (with --quantize int8 also DIR/NAME"
                   f"{INT8_SUFFIX}), each model directory replaced whole, in one step. Triton, KServe and "
                   "`serve http --repository` serve it.")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True,
              help="With --repository: the model's name there (its directory, and its name in /v2).")
@click.pass_context
def export(ctx: click.Context, run_dir: Path, out: Path | None, opset: int, no_fold: bool, recompute_stats: bool,
           quantize: str | None, repository: Path | None, model_name: str) -> None:
    """Fold BN into the conv/dense weights and export a BN-free ONNX model, then verify parity.

    The model takes `image` float32 [N,1,28,28] (pixels in [0,1], white ink on black) and returns
    `logits` and `probabilities`. It is written only if the parity check passes; parity.json is
    written beside it either way. With --repository it is then published for Triton or KServe.
    """
    from pipeline.export import export_model

    if repository is None and ctx.get_parameter_source("model_name") != click.core.ParameterSource.DEFAULT:
        raise PipelineError("--model-name names the model in a repository: give --repository DIR too")
    result = export_model(run_dir, out, opset=opset, fold=not no_fold, recompute_stats=recompute_stats,
                          quantize=quantize, repository=repository, model_name=model_name)
    click.echo(result.parity.table())
    click.echo(f"wrote {result.model_path} ({'BN folded' if result.folded else 'BN not folded'}, "
               f"test accuracy {result.test_accuracy:.2%}) and {result.parity_path}")
    if result.int8_report is not None:
        click.echo(result.int8_report.table())
        click.echo(f"wrote {result.int8_path}")
    if result.publication is not None:
        for model_dir in result.publication.published:
            click.echo(f"published {model_dir} (config.pbtxt, version 1)")
        for model_dir in result.publication.withdrawn:
            click.echo(f"removed {model_dir}: it was quantized from the model this export replaced")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory with the checkpoint the model was exported from  [default: the model's directory]")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(model: Path, run_dir: Path | None, as_json: bool) -> None:
    """Check that MODEL in onnxruntime computes what the checkpoint computes in PyTorch eval mode.

    For an int8 model (`export --quantize int8`) it reports accuracy and argmax agreement against
    fp32 instead, and passes when int8 is at most 0.3 accuracy points below.
    Otherwise it runs the test split and stress inputs (noise, zeros, ones, saturated 0/1) at batch size 1 and
    in one big batch. Passes when the max absolute logit difference is at most 1e-4, argmax agrees
    on every real image and the accuracies are equal. Exit status 1 if it fails.
    """
    from pipeline.export import verify_model

    report = verify_model(model, run_dir)
    click.echo(report.to_json() if as_json else report.table())
    if not report.passed:
        sys.exit(1)


@cli.command()
@data_options()
@click.option("--epochs", type=int, default=6, show_default=True, help="Epochs per run.")
@click.option("--seeds", type=int, default=3, show_default=True, help="Seeds 0..N-1 per variant and learning rate.")
@click.option("--lr", "lrs", type=float, multiple=True, default=(0.01, 0.1), show_default=True,
              help="Peak learning rate; repeat for several (BN's claim: it tolerates higher rates).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--augment/--no-augment", default=True, show_default=True)
@click.option("--eval-every", type=int, default=25, show_default=True,
              help="Evaluate test loss and accuracy (eval mode) every N steps.")
@click.option("--max-steps", type=int, default=None, help="Cap on steps per run (smoke runs).")
@device_option
@click.option("--mistakes/--no-mistakes", default=True, show_default=True,
              help="Also train the exercise's BN mistakes (per-position moments, decay 0.999, a bias after BN, "
                   "eps 1e-8 in both precisions) and evaluate with batch statistics at inference.")
@click.option("--mistake-lr", type=float, default=None,
              help="Learning rate of the mistake runs  [default: the largest --lr]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/compare"),
              show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def compare(data: str, data_dir: Path | None, epochs: int, seeds: int, lrs: tuple[float, ...], optimizer: str,
            batch_size: int, augment: bool, eval_every: int, max_steps: int | None, device: str, mistakes: bool,
            mistake_lr: float | None, out: Path, quiet: bool) -> None:
    """Measure what BN does to training/test loss and convergence: BN vs no-BN, same everything else.

    For each learning rate and seed, trains both variants from identical initial weights with the
    same data order, augmentation and optimizer (the `pipeline train` loop), recording how a few
    hidden units' input distributions move (the BN paper's Figure 1). Then the exercise's BN mistakes,
    each a variant of the BN run. Writes curves.png, distribution.png, summary.json and summary.md
    into --out, and every run under --out/runs/. A run whose loss explodes is recorded as diverged.
    """
    from pipeline.compare import CompareConfig, run_study

    cfg = CompareConfig(data=data, data_dir=str(data_dir) if data_dir else None, epochs=epochs, seeds=seeds,
                        lrs=tuple(lrs), optimizer=optimizer, batch_size=batch_size, augment=augment,
                        eval_every=eval_every, max_steps=max_steps, device=device, mistakes=mistakes,
                        mistake_lr=mistake_lr)
    result = run_study(cfg, out, progress=not quiet)
    click.echo((out / "summary.md").read_text())
    click.echo(f"wrote {out / 'curves.png'}, {out / 'distribution.png'}, {out / 'summary.json'} and "
               f"{out / 'summary.md'} ({result.wall_time:.0f} s)")


@cli.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_RUN / "model.onnx", show_default=True,
              help="The exported model, read through the served path (onnxruntime), as `serve predict` does.")
@data_options(("sample", "mnist"), "Where the digits come from; only its TEST split is used.",
              "With --data mnist: the directory with the IDX files.")
@click.option("--per-condition", type=click.IntRange(min=1), default=100, show_default=True,
              help="Images per condition (the 48-megapixel `big` condition makes at most 3).")
@click.option("--condition", "conditions", multiple=True,
              help="Only this condition (repeat for several): mnist-28, canvas, photo, note, ruled, framed, beside, "
                   "board, dim, shadow, specks, colour, thick-thin, writers, small, cropped, typeset, numbers, "
                   "not-digits, big. Default: all.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Same seed, same images, byte for byte.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the report  [default: the model's directory/evaluation]")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Processes that make and prepare the images  [default: the CPU count, at most 4]")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(model_path: Path, data: str, data_dir: Path | None, per_condition: int, conditions: tuple[str, ...],
             seed: int, out: Path | None, jobs: int | None, quiet: bool) -> None:
    """Measure how well the served model reads real images: photos, scans, canvases, fonts, numbers, non-digits.

    Generates a deterministic set from the TEST split only (photographed, ruled, scanned, coloured,
    distorted and typeset digits, numbers of 2-4 digits, and things that must be refused), encoded as
    users' files, and reads it through serve.reading. Writes evaluation.json, evaluation.md,
    failures.png and samples.png into --out.
    """
    from pipeline.evaluate import run_evaluation

    result = run_evaluation(model_path, data=data, data_dir=data_dir, per_condition=per_condition, seed=seed,
                            out=out, conditions=conditions, jobs=jobs, progress=not quiet)
    click.echo(result.markdown)
    click.echo(f"wrote {', '.join(str(p) for p in result.files)} ({result.wall_time:.0f} s)")


def main() -> None:
    try:
        cli(prog_name="pipeline")
    except SystemExit as exc:
        from pipeline.distributed import context_from_environment, end_worker

        if context_from_environment().enabled:  # a torchrun worker: skip finalization (see end_worker)
            end_worker(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
        raise


if __name__ == "__main__":
    main()
