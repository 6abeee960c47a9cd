"""``edge-runtime convert``: argument parsing and exit codes around ``converters.pipeline.convert``.

``edge-runtime`` wires it in with ``add_parsers(subparsers)``, the shape of every package's command module;
``run_convert(args)`` returns the exit code:
0 when every build is accepted (or ``--allow-degraded``), 1 when a build was rejected by the quality gate,
2 when the conversion could not run (the message of the ``ConversionError`` goes to stderr).

``--quant`` takes per-target preset lists, repeated or joined with ``;``:
``--quant gguf=Q8_0,Q4_K_M --quant onnx=int8`` or ``--quant "gguf=Q4_K_M;coreml=int8,int4"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from converters.errors import ConversionError, UnknownPresetError

EXIT_OK, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2


def add_parsers(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("convert", help="convert a GGUF file or HF folder to gguf/onnx/coreml builds",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a .gguf file or a Hugging Face model folder")
    parser.add_argument("--targets", default="gguf,onnx,coreml", help="comma-separated: gguf, onnx, coreml")
    parser.add_argument("--quant", action="append", default=[], metavar="TARGET=PRESET[,PRESET]",
                        help="presets per target (defaults: gguf=Q8_0,Q4_K_M onnx=int4,int8,fp32 coreml=int8,int4)")
    parser.add_argument("--out", type=Path, required=True, help="output folder; manifest.json goes there")
    parser.add_argument("--allow-degraded", action="store_true",
                        help="exit 0 even when the quality gate rejects a build (it stays 'rejected')")
    parser.add_argument("--greedy-tokens", type=int, default=16, help="tokens compared by the greedy check")
    parser.add_argument("--min-top1", type=float, help="gate threshold: minimum top-1 agreement")
    parser.add_argument("--max-kl", type=float, help="gate threshold: maximum mean KL divergence (nats)")
    parser.add_argument("--min-greedy", type=float, help="gate threshold: minimum greedy agreement")
    parser.add_argument("--max-ppl-ratio", type=float, help="gate threshold: maximum perplexity ratio")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=run_convert)
    return parser


def parse_quant(values: list[str]) -> dict[str, list[str]]:
    presets: dict[str, list[str]] = {}
    for value in values:
        for part in filter(None, (p.strip() for p in value.split(";"))):
            target, sep, names = part.partition("=")
            if not sep or not names:
                raise UnknownPresetError(f"--quant {part!r}: expected TARGET=PRESET[,PRESET]")
            presets.setdefault(target.strip(), []).extend(n.strip() for n in names.split(",") if n.strip())
    return presets


def options_from_args(args):
    from converters.manifest import GateThresholds
    from converters.pipeline import ConvertOptions

    limits = {"min_top1_agreement": args.min_top1, "max_mean_kl": args.max_kl,
              "min_greedy_agreement": args.min_greedy, "max_perplexity_ratio": args.max_ppl_ratio}
    return ConvertOptions(targets=[t.strip() for t in args.targets.split(",") if t.strip()],
                          presets=parse_quant(args.quant), greedy_tokens=args.greedy_tokens,
                          thresholds=GateThresholds(**{k: v for k, v in limits.items() if v is not None}),
                          progress=not args.no_progress)


def run_convert(args) -> int:
    from converters.pipeline import convert

    try:
        manifest = convert(args.source, args.out, options_from_args(args))
    except ConversionError as exc:
        print(f"edge-runtime convert: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(summary_table(manifest))
    rejected = [b for b in manifest.builds if b.status == "rejected"]
    return EXIT_OK if not rejected or args.allow_degraded else EXIT_REJECTED


def summary_table(manifest) -> str:
    lines = ["| build | status | MB | top-1 | mean KL | greedy | ppl ratio | s |", "|---|---|---|---|---|---|---|---|"]
    for b in manifest.builds:
        g = b.gate
        lines.append(f"| {b.target} {b.preset} | {b.status} | {b.bytes / 1e6:.1f} | {g.top1_agreement:.3f} | "
                     f"{g.mean_kl:.4f} | {g.greedy_agreement:.3f} | {g.perplexity_ratio:.3f} | {b.conversion_s:.1f} |")
    return "\n".join(lines)


add_convert_parser = add_parsers  # the name earlier releases exported


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m converters.cli convert ...``): the same command without the runtime's."""
    parser = argparse.ArgumentParser(prog="edge-runtime")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
