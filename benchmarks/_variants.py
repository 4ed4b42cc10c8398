"""The command line shared by the scripts that compare ``NTFConfig`` variants."""

from __future__ import annotations

import argparse
import json
import warnings

import torch

ALL_DATASETS = "synthetic_embryo,drosophila,breast_her2st_A,breast_stahl,starmap_organoid"


def variant_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with ``--variants --threads --seed``, described by the first paragraph of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--variants", default=None, help="JSON {name: NTFConfig keyword dict}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of every fit")
    return parser


def parse_variants(parser: argparse.ArgumentParser, argv, default_variants: dict):
    """Parse ``argv``; set the torch threads and quiet warnings.

    Returns ``(args, variants)`` with ``variants`` the ``{name: NTFConfig keyword dict}`` to compare.
    """
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    return args, (json.loads(args.variants) if args.variants else default_variants)


def parse_variant_arguments(doc: str, argv, *, fractions: str, default_variants: dict, flags: dict | None = None,
                            numbers: dict | None = None):
    """:func:`parse_variants` with ``--datasets --fractions`` too (benchmark splits), split into lists, the
    boolean ``flags`` (``{"--name": help}``) and the optional float ``numbers`` (same form; ``None`` when
    not given) of the calling script."""
    parser = variant_parser(doc)
    parser.add_argument("--datasets", default=ALL_DATASETS)
    parser.add_argument("--fractions", default=fractions)
    for flag, text in (flags or {}).items():
        parser.add_argument(flag, action="store_true", help=text)
    for option, text in (numbers or {}).items():
        parser.add_argument(option, type=float, default=None, help=text)
    args, variants = parse_variants(parser, argv, default_variants)
    args.datasets = args.datasets.split(",")
    args.fractions = [float(f) for f in args.fractions.split(",")]
    return args, variants
