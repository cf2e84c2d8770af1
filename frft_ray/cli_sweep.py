"""`frft-ray sweep --grid FILE [--grid FILE ...]`: run grids of whole runs and write docs/results.md."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of runs (seeds x arms x filter settings ...) and write the report")
    p.add_argument("--grid", action="append", required=True, metavar="FILE",
                   help="grid YAML (base config, shared overrides, axes); repeat for several grids, one report")
    p.add_argument("--out", default="runs/sweeps", help="where the cells' run folders and the SFT/RM cache go (default: %(default)s)")
    p.add_argument("--archive", default="docs/data/sweeps",
                   help="where each finished cell's summary.json is kept (committed): cells found there are "
                        "skipped and reported; '' keeps none (default: %(default)s, under the current folder)")
    p.add_argument("--results", default="docs/results.md", help="the markdown report to write (default: %(default)s, under the current folder: a checkout's own report)")
    p.add_argument("--img-dir", default="docs/img", help="where the report's PNGs go (default: %(default)s)")
    p.add_argument("--report-only", action="store_true", help="run nothing: rewrite the report from finished cells")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from frft_ray.cli_run import _setup_logging
    from frft_ray.sweep import load_grid, run_grid
    from frft_ray.sweep_report import collect, write_results
    from frft_ray.tracking import RunLog

    grids = [load_grid(g) for g in args.grid]  # every cell's config is checked before anything runs
    out = Path(args.out)
    archive = Path(args.archive) if args.archive else None
    _setup_logging()
    out.mkdir(parents=True, exist_ok=True)
    sweep_log = RunLog(out)  # the whole sweep's log; each cell also writes its own run.log
    sections = []
    try:
        for grid in grids:
            if not args.report_only:
                for r in run_grid(grid, out, archive):
                    extra = f", SFT + initial RM {r.base}, {r.wall_s:.0f}s" if r.status == "ran" else ""
                    print(f"cell {grid.name}/{r.cell.name}: {r.status}{extra}")
            sections.append((grid, collect(grid, out, archive)))
    finally:
        sweep_log.close()
    path = write_results(sections, Path(args.results), Path(args.img_dir))
    print(f"report: {path} ({sum(len(c) for _, c in sections)} finished cells)")
    return 0
