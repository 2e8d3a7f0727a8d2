"""`seg-video batch`: the command line of the batch job (`seg_video.batch.run`): its options, its progress on stderr
(`seg_video.cli.batch_progress`), the summary table that ends it, and its exit codes."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from seg_video.batch.local_pool import LocalPool
from seg_video.batch.manifest import Entry, Kind
from seg_video.batch.messages import Pool
from seg_video.batch.run import Batch, check_workers
from seg_video.batch.worker import BatchWorker, uses_gpu
from seg_video.cli.batch_progress import BatchProgress
from seg_video.cli.options import OneLineParser, add_engine_options, run_config
from seg_video.cli.options import build_parser as single_video_parser
from seg_video.cli.report import EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, PROG, Terminated
from seg_video.core.config import RunConfig
from seg_video.core.errors import UsageError
from seg_video.core.threads import available_cpus
from seg_video.engines.base import create_engine


def build_parser() -> argparse.ArgumentParser:
    """`seg-video batch`'s options; engine and pipeline settings use the names of the single-video command's."""
    parser = OneLineParser(
        prog=f"{PROG} batch",
        description="Annotate many videos with a pool of pipelines (processes here, or Ray actors on a cluster), "
                    "each loading the engine once. Resumable: DIR/manifest.jsonl records every video, and a re-run "
                    "does only what is not done yet (or whose input or settings changed).",
        epilog=f"examples:\n  {PROG} batch footage/ --out annotated/ --workers 4\n"
               f"  {PROG} batch 'cams/*/2026-*.mp4' list.txt --out out/ --coco --no-video\n"
               f"  {PROG} batch footage/ --out /shared/out/ --engine maskrcnn --ray auto",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, folders (searched for videos), globs (quote them), or .txt lists of these")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="output folder: outputs mirror the input names, plus manifest.jsonl")
    parser.add_argument("-e", "--engine", help="segmentation engine (default: motion; see seg-video --list-engines)")
    parser.add_argument("-c", "--config", metavar="FILE|PRESET", help="TOML config file or preset name")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                        help="a pipeline/render/output/track setting, e.g. --set output.crf=28 (repeatable)")
    parser.add_argument("-w", "--workers", type=int, metavar="N",
                        help="pipelines at once (default: one per GPU for a neural engine on GPUs, else one per "
                             "CPU core here; with --ray, as many as the cluster's GPUs or CPUs)")
    parser.add_argument("--ray", metavar="auto|ADDRESS",
                        help="run the workers as Ray actors: auto = this machine's cluster (ray start) or a new local "
                             "one; ADDRESS = a cluster's (host:port, ray://host:port). Needs seg-video[ray]")
    parser.add_argument("--coco", action="store_true", dest="write_coco", help="also write NAME.coco.json per video")
    parser.add_argument("--masks", action="store_true", dest="write_masks",
                        help="also write a label-map PNG per frame into NAME.masks/ per video")
    parser.add_argument("--no-video", action="store_true", help="write no annotated videos (needs --coco or --masks)")
    parser.add_argument("--max-attempts", type=int, default=3, metavar="N",
                        help="give up on a video after N failed runs (default 3; a changed input starts afresh)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in DIR named like an output that no earlier batch there wrote")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary")
    add_engine_options(parser, "engine settings (as for one video)")
    return parser


def main(argv: Sequence[str]) -> int:
    """`seg-video batch …` (called by `seg_video.cli.main.main`); returns the exit code: 0 all done, 1 some failed."""
    args = build_parser().parse_args(argv, namespace=single_video_parser().parse_args([]))
    wanted: dict[Kind, bool] = {"video": not args.no_video, "coco": args.write_coco, "masks": args.write_masks}
    kinds = [kind for kind, on in wanted.items() if on]
    if not kinds:
        raise UsageError("--no-video needs --coco and/or --masks (else nothing is written)")
    check_workers(args.workers)
    config = run_config(args)
    create_engine(config.engine, config.engine_params)  # settings checked before any worker starts (each builds one)
    batch = Batch(args.inputs, Path(args.out), config, kinds, max_attempts=args.max_attempts,
                  overwrite=args.overwrite)
    manifest = batch.manifest
    if manifest.unreadable and not args.quiet:
        print(f"{PROG}: {manifest.path}: {manifest.unreadable} unreadable line(s) ignored", file=sys.stderr)
    started = time.perf_counter()
    code = 0
    pools = PoolChoice(config, workers=args.workers, ray=args.ray)
    try:
        batch.run(pools, lambda workers: BatchProgress(batch.entries, workers, quiet=args.quiet))
    except KeyboardInterrupt:
        code = EXIT_SIGINT
    except Terminated:
        code = EXIT_SIGTERM
    if not args.quiet:
        print(summary_table(batch.entries, time.perf_counter() - started, pools.where, manifest.path), file=sys.stderr)
    if code:
        print(f"{PROG}: error: {'interrupted' if code == EXIT_SIGINT else 'terminated'}; "
              "finished videos are kept, the next run does the rest", file=sys.stderr)
        return code
    return EXIT_FAILED if any(entry.status == "failed" for entry in batch.entries) else 0


class PoolChoice:
    """Makes the pool the options ask for once the batch knows how many videos it has, and remembers its name."""

    def __init__(self, config: RunConfig, *, workers: int | None, ray: str | None) -> None:
        self._config, self._workers, self._ray = config, workers, ray
        self.where = "no workers (nothing to do)"
        """The pool in words, for the summary."""

    def __call__(self, pending: int) -> Pool:
        pool, self.where = choose_pool(self._config, pending, workers=self._workers, ray=self._ray)
        return pool


def choose_pool(config: RunConfig, pending: int, *, workers: int | None, ray: str | None) -> tuple[Pool, str]:
    """The pool the options ask for to run `pending` videos (Ray actors with `--ray`, else local processes: one
    per GPU for an engine on GPUs, else one per core, never more than the videos), and how to name it in the
    summary."""
    gpu = uses_gpu(config)
    if ray is not None:
        try:
            from seg_video.batch.ray_pool import RayPool
        except ImportError:
            raise UsageError("--ray needs Ray: pip install 'seg-video[ray]'") from None
        ray_pool = RayPool(config, ray, workers, make_worker=BatchWorker, pending=pending, gpu=gpu)
        return ray_pool, f"Ray ({len(ray_pool.names)} actors)"
    gpus = 0
    if gpu:
        import torch

        gpus = torch.cuda.device_count()
    size = max(1, min(workers or gpus or available_cpus(), pending))
    return LocalPool(config, size, make_worker=BatchWorker, gpus=gpus), f"{size} local worker{'s' * (size > 1)}"


def summary_table(entries: Sequence[Entry], seconds: float, where: str, manifest: Path) -> str:
    """The end-of-batch report: counts, frames and seconds by status, throughput, and each failure's reason."""
    rows = []
    processed = [e for e in entries if e.status in ("done", "failed") and e.seconds > 0]
    frames = sum(e.frames for e in processed if e.status == "done")
    for status in ("done", "failed", "skipped"):
        group = [e for e in entries if e.status == status]
        work = sum(e.seconds for e in group)
        rows.append(f"{status:<9}{len(group):>7}{sum(e.frames for e in group):>9}{work:>10.1f}")
    rate = f"{len(processed) / seconds:.2f} videos/s, {frames / seconds:.1f} frames/s" if seconds > 0 else ""
    lines = [f"{PROG} batch: {len(entries)} videos in {seconds:.1f} s on {where}",
             f"{'status':<9}{'videos':>7}{'frames':>9}{'work (s)':>10}", *rows, f"throughput: {rate}"]
    failed = [e for e in entries if e.status == "failed"]
    if failed:
        lines += ["failed:"] + [f"  {e.name}: {e.reason}" for e in failed]
    pending = [e for e in entries if e.status == "pending"]
    if pending:
        lines.append(f"not finished (the next run does them): {len(pending)}")
    lines.append(f"manifest: {manifest}")
    return "\n".join(lines)
