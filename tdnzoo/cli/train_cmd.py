"""``tdnzoo train``: fine-tune or train a model on a video dataset (one process or under torchrun)."""
from __future__ import annotations

import argparse
import json

from ._args import device_arg, float_at_least, nonnegative_int, positive_float, positive_int, probability


def _label_map(value: str) -> dict[int, int]:
    """``'86:87,93:94'`` or a JSON object -> a symmetric ``{86: 87, 87: 86, ...}``."""
    try:
        pairs = json.loads(value).items() if value.strip().startswith("{") else (p.split(":") for p in value.split(","))
        out: dict[int, int] = {}
        for a, b in pairs:
            out[int(a)], out[int(b)] = int(b), int(a)
        return out
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"expected pairs like '86:87,93:94', got {value!r}") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model on videos (DDP under torchrun)",
        description="Train or fine-tune a TSN/TSM/TDN model with the official recipe. Options not given "
        "come from --config (YAML), then from the recipe defaults. Under `torchrun --nproc-per-node N -m "
        "tdnzoo train ...` it runs DistributedDataParallel (gloo on CPU); --batch-size is the global batch.",
        argument_default=argparse.SUPPRESS,
    )
    g = p.add_argument_group("data")
    g.add_argument("--model", help="model name, e.g. tdn_resnet50 or tsm_resnet50.<tag>")
    g.add_argument("--data-root", help="data folder (ROOT/<split>/<class>/<video> for --dataset folder)")
    g.add_argument("--dataset", choices=("folder", "sthv1", "sthv2", "kinetics"), help="layout (default folder)")
    g.add_argument("--train-list", help="training list file (list layouts)")
    g.add_argument("--val-list", help="validation list file (list layouts)")
    g.add_argument("--train-split", help="training sub-folder (folder layout, default train)")
    g.add_argument("--val-split", help="validation sub-folder (folder layout, default val; skipped if absent)")
    g.add_argument("--num-classes", type=positive_int, help="classes (default: the dataset's)")
    g.add_argument("--num-segments", type=positive_int, help="segments per clip (default: the model's, 8)")
    g.add_argument("--input-size", type=positive_int, help="crop side (default 224)")
    g.add_argument("--workers", type=nonnegative_int, help="data loading processes per training process (default 4)")
    g.add_argument("--loader-timeout", type=float_at_least(0.0), metavar="SECONDS",
                   help="wait this long for a batch from the workers, then save the run and stop with an error "
                   "naming the stuck video (default 600; 0 waits forever)")
    g.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal flips")
    g.add_argument("--flip-label-map", type=_label_map, help="mirrored classes swapped by a flip, e.g. '86:87,93:94'")
    g.add_argument("--mirrored-classes", action="store_true", help="the classes depend on direction: flip only with a map")
    g = p.add_argument_group("model")
    g.add_argument("--pretrained", action="store_true", help="start from the zoo weights of the model's tag")
    g.add_argument("--pretrained-backbone", action="store_true", help="start from timm's ImageNet backbone weights")
    g.add_argument("--dropout", type=probability, help="dropout before the classifier (default 0.5)")
    g.add_argument("--bn", choices=("train", "partial", "frozen"), help="BatchNorm: train (default), partial, frozen")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, help="epochs (default 60)")
    g.add_argument("--batch-size", type=positive_int, help="global batch (default 8)")
    g.add_argument("--lr", type=positive_float, help="learning rate (default 0.01 * batch / 64 for SGD)")
    g.add_argument("--optimizer", choices=("sgd", "adamw"), help="sgd (default, momentum 0.9) or adamw")
    g.add_argument("--momentum", type=float_at_least(0), help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float_at_least(0), help="default 5e-4 (1e-4 Kinetics) for SGD, 0.05 for AdamW")
    g.add_argument("--schedule", choices=("step", "cosine"), help="lr schedule (default step)")
    g.add_argument("--lr-steps", type=float_at_least(0), nargs="+", help="epochs of the x0.1 decays (default: official fractions)")
    g.add_argument("--lr-decay", type=positive_float, help="step decay factor (default 0.1)")
    g.add_argument("--min-lr", type=float_at_least(0), help="final cosine lr (default 0)")
    g.add_argument("--warmup-epochs", type=float_at_least(0), help="linear warm-up epochs (default 0)")
    g.add_argument("--clip-grad-norm", type=float_at_least(0), help="gradient-norm clip, 0 disables (default 20)")
    g = p.add_argument_group("runtime")
    g.add_argument("--output", help="run folder: checkpoints, metrics, config")
    g.add_argument("--config", help="YAML file of options (names as here, - or _)")
    g.add_argument("--resume", nargs="?", const=True, type=str,
                   help="continue the run in --output (or from the given checkpoint)")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), help="mixed precision (default none)")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-identical resume)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--eval-every", type=positive_int, help="validate every N epochs (default 1)")
    g.add_argument("--metrics-format", choices=("jsonl", "csv"), help="metrics log format (default jsonl)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:1 (default: CUDA if available)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The :class:`~tdnzoo.train.TrainConfig` of parsed arguments: YAML values, then explicit flags."""
    from ..train import TrainConfig, load_config_file

    # Keys the parser adds for dispatching, not training options.
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "command_path", "verbose", "config")}
    values = load_config_file(args.config) if getattr(args, "config", None) else {}
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    values.update(given)
    return TrainConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from ..train import TrainingError, train

    try:
        cfg = config_from_args(args)
        cfg.resolved()  # report missing options before any work
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    result = train(cfg)
    if result.history:
        best = f", best {result.best_metric:.2f} at epoch {result.best_epoch}" if result.best_epoch else ""
        print(f"done: {result.last_checkpoint}{best}")
    return 0
