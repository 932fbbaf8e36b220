"""``python -m search_space``: list the zoo, or summarise a zoo model / genome JSON file.

    python -m search_space list
    python -m search_space show fastvit_t8
    python -m search_space show my_genome.json --resolution 256
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

_logger = logging.getLogger("search_space")


def _load(spec: str):
    from . import Genome, zoo

    if spec in zoo:
        return spec, zoo[spec]
    path = Path(spec)
    if path.suffix == ".json" or path.exists():
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"genome file {spec}: {e.strerror}") from None
        return path.stem, Genome.from_json(text)
    raise ValueError(f"unknown model {spec!r}: not a zoo name ({', '.join(sorted(zoo))}) and not a genome JSON file")


def _show(args: argparse.Namespace) -> int:
    import torch

    from . import build_model, reparameterize

    name, genome = _load(args.model)
    if args.resolution:
        genome = genome.with_resolution(args.resolution)
    res = genome.resolution
    model = build_model(genome).eval()
    n_train = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 3, res, res)
    with torch.no_grad():
        before = model(x)
        reparameterize(model)
        t0 = time.perf_counter()
        after = model(x)
        ms = (time.perf_counter() - t0) * 1e3
    n_dep = sum(p.numel() for p in model.parameters())
    err = float((before - after).abs().max() / before.abs().max())
    print(f"{name}  (genome key {genome.key()}, resolution {res})")
    print(f"  stem {genome.stem}, head {genome.head}")
    for i, st in enumerate(genome.stages):
        print(f"  stage {i}: depth {st.depth:2d}  width {st.width:4d}  mixer {st.mixer:9s} k{st.kernel_size} "
              f"ffn x{st.ffn_ratio} (dw k{st.ffn_kernel_size})  se {st.se:9s} down {st.downsample}")
    print(f"  parameters: {n_train / 1e6:.3f} M training form, {n_dep / 1e6:.3f} M deployed")
    print(f"  fold check: relative logit error {err:.1e} (eval mode, default init)")
    print(f"  one torch CPU forward of the deployed form: {ms:.1f} ms (single run, indicative only)")
    if args.json:
        print(genome.to_json(indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search_space", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the zoo models")
    show = sub.add_parser("show", help="summarise a zoo model or a genome JSON file")
    show.add_argument("model", help="zoo name or path to a genome JSON file")
    show.add_argument("--resolution", type=int, default=None, help="deploy at another resolution")
    show.add_argument("--json", action="store_true", help="also print the genome JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from . import RepNASError, zoo

    try:
        if args.command == "list":
            for n, g in zoo.items():
                print(f"{n:15s} resolution {g.resolution}  mixers {'/'.join(s.mixer for s in g.stages)}")
            return 0
        return _show(args)
    except (RepNASError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
