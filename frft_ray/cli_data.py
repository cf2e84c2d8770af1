"""`frft-ray data ...`: inspect preference data before a run.

`data stats PATH --format F` streams the file through the same loader a run uses and prints what it
kept, what it skipped by reason, and prompt/chosen/rejected lengths. Its --on-bad-record defaults to
`skip` (unlike a run, whose data.on_bad_record defaults to `error`): a stats tool should report on a
messy file, not stop at its first bad line.

`data benchmark [--annotators P]` generates the bundled benchmark's pool and prints how often each
annotator pool's labels agree with the gold reward, and pooled (the numbers in docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from frft_ray.config import ConfigError, DataConfig, FieldNames


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect preference data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    st = data_sub.add_parser(
        "stats",
        help="records kept, skipped by reason, and length statistics of a preference file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument("path", help="data file (.jsonl, .jsonl.gz, .parquet) or, with --format hf, a dataset name")
    st.add_argument("--format", required=True, choices=["hh-rlhf", "jsonl", "parquet", "hf"])
    st.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    st.add_argument(
        "--on-bad-record", choices=["error", "skip"], default="skip",
        help="skip (default here): count bad records by reason; error: stop at the first with its line",
    )
    defaults = FieldNames()
    st.add_argument("--prompt-field", default=defaults.prompt)
    st.add_argument("--chosen-field", default=defaults.chosen)
    st.add_argument("--rejected-field", default=defaults.rejected)
    st.add_argument("--id-field", default=None)
    st.add_argument("--source-field", default=None)
    st.add_argument("--split", default="train", help="split for --format hf")
    st.add_argument("--max-records", type=int, default=None, help="stop after this many good records")
    st.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    st.set_defaults(func=cmd_data_stats)
    bm = data_sub.add_parser(
        "benchmark",
        help="the bundled benchmark's pool: pairs per source and label agreement with gold, per pool and pooled",
    )
    bm.add_argument("--annotators", choices=["adversarial", "uniform", "hh_like"], default="adversarial",
                    help="data.benchmark.annotators preset")
    bm.add_argument("--label-accuracy", type=float, default=None, help="data.benchmark.label_accuracy (uniform)")
    bm.add_argument("--pool-size", type=int, default=20000, help="data.benchmark.pool_size")
    bm.add_argument("--seed", type=int, default=0, help="data.benchmark.seed")
    bm.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    bm.set_defaults(func=cmd_data_benchmark)


def _data_config(args: argparse.Namespace) -> DataConfig:
    try:
        return DataConfig(
            format=args.format,
            path=args.path,
            split=args.split,
            on_bad_record=args.on_bad_record,
            max_records=args.max_records,
            fields=FieldNames(
                prompt=args.prompt_field, chosen=args.chosen_field, rejected=args.rejected_field,
                id=args.id_field, source=args.source_field,
            ),
        )
    except ValidationError as e:  # named by the flag that set it (--max-records, --prompt-field, ...)
        raise ConfigError("; ".join(f"{_flag(x['loc'])}: {x['msg']}" for x in e.errors())) from None


def _flag(loc: tuple) -> str:
    if loc[0] == "fields":
        return f"--{loc[-1]}-field"
    return {"path": "PATH"}.get(loc[0], f"--{str(loc[0]).replace('_', '-')}")


def cmd_data_stats(args: argparse.Namespace) -> int:
    from itertools import islice

    from frft_ray.data.common import check_file
    from frft_ray.data.loading import iter_preferences
    from frft_ray.data.records import LoadReport
    from frft_ray.data.stats import compute_stats, format_stats

    data = _data_config(args)
    if data.format != "hf":
        check_file(data.path)  # FileNotFoundError -> "frft-ray: error: ..." and exit 2, before any output
    report = LoadReport(path=data.path)
    pairs = islice(iter_preferences(data, report, progress=not args.no_progress), data.max_records)
    stats = compute_stats(pairs, report)
    stats["format"] = data.format
    if args.json:
        json.dump(stats, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_stats(stats))
    if stats["records"] == 0 and stats["skipped_total"]:  # a run on this would fail: say so, exit 1
        print(f"frft-ray: warning: no record kept, {stats['skipped_total']} skipped ({stats['skipped']}): "
              f"is --format {data.format} right for {data.path}?", file=sys.stderr)
        return 1
    return 0


def cmd_data_benchmark(args: argparse.Namespace) -> int:
    from frft_ray.config import BenchmarkConfig
    from frft_ray.data.benchmark import describe, make_benchmark

    given = {"annotators": args.annotators, "pool_size": args.pool_size, "seed": args.seed,
             "sft_size": 1, "eval_prompts": 1}
    if args.label_accuracy is not None:
        given["label_accuracy"] = args.label_accuracy
    try:
        cfg = BenchmarkConfig(**given)
    except ValidationError as e:
        raise ConfigError("; ".join(f"data.benchmark.{'.'.join(map(str, x['loc']))}: {x['msg']}"
                                    for x in e.errors())) from None
    d = describe(make_benchmark(cfg))
    out = {"annotators": cfg.annotators, "label_accuracy": cfg.label_accuracy, "seed": cfg.seed,
           "pool": d["pool"], "pool_by_source": d["pool_by_source"], "gold_ties": d["gold_ties"],
           "gold_agreement": d["gold_agreement"], "gold_agreement_by_pool": d["gold_agreement_by_pool"]}
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"benchmark pool: {out['pool']:,} pairs, seed {cfg.seed}, annotators {cfg.annotators}"
          + (f" (label_accuracy {cfg.label_accuracy})" if cfg.annotators == "uniform" else ""))
    print(f"{'source':<20}{'pairs':>8}{'agrees with gold':>18}")
    for source, agree in out["gold_agreement_by_pool"].items():
        print(f"{source:<20}{out['pool_by_source'][source]:>8,}{agree:>18.3f}")
    print(f"{'pooled':<20}{out['pool']:>8,}{out['gold_agreement']:>18.3f}")
    print(f"(agreement excludes the {out['gold_ties']:,} pairs whose sides score the same gold)")
    return 0
