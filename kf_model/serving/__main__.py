"""``python -m kf_model.serving examples|predict``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

from kf_model import serving
from kf_model.errors import KFError
from kf_model.serving.examples import EXAMPLES_DIR, generate_examples
from kf_model.serving.registry import BankRegistry


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kf_model.serving", description=serving.__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("examples", help="render assets/examples/ from the datasets' test splits")
    ex.add_argument("--out", default=str(EXAMPLES_DIR))
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--fashion-root", default=None, help="folder of the Fashion-MNIST idx files")
    pr = sub.add_parser("predict", help="predict one image file with a bank")
    pr.add_argument("image")
    pr.add_argument("--bank", default=None)
    pr.add_argument("--tasks", default=None, help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        _run(args)
    except KFError as error:
        raise SystemExit(f"error: {serving.plain_message(error)}") from None


def _run(args: argparse.Namespace) -> None:
    if args.command == "examples":
        out = generate_examples(args.out, seed=args.seed, fashion_root=args.fashion_root)
        print(f"wrote {len(list(out.glob('*.png')))} examples to {out}")
    else:
        registry = BankRegistry.from_env(warmup=False)
        entry = registry.get(args.bank)
        prediction = registry.predict(args.image, entry.key, args.tasks or entry.task_names)
        print(json.dumps(prediction.to_json(4), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    _main()
