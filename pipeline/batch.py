"""`seg-video batch`: annotate a collection of videos with a pool of pipelines, here or on a Ray cluster, resumably.

Each worker (a local process, or a Ray actor: `pipeline.batch_ray`) loads the engine once and runs one `AnnotateJob`
per video. Outputs mirror the input names under DIR and are written under a temporary name (`PARTIAL` + name, in the
same folder), renamed into place only when their video succeeded. `DIR/manifest.jsonl` holds one JSON object per
line, appended as each video ends (the last line for a name wins; each run starts by compacting the file):

    {"name": "cam1/monday.mp4", "input": "/data/cam1/monday.mp4", "size": 1048576, "mtime_ns": 1731000000000000000,
     "sha256": "…", "config": "…", "status": "done", "reason": null, "outputs": ["cam1/monday.mp4"],
     "frames": 9000, "seconds": 61.2, "attempts": 1, "worker": "worker 2", "finished": "2026-01-01T12:00:00+00:00"}

`status` is done, failed (`reason`: the one-line error) or skipped (done by an earlier run, input and settings
unchanged); `config` fingerprints the run's settings and outputs; `attempts` counts runs since the input or the
settings last changed. A re-run skips what is done and unchanged (same size and mtime, or same sha256) while its
outputs exist, and retries failures until `--max-attempts`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from pipeline import cli
from pipeline.batch_inputs import collect_inputs
from pipeline.batch_local import LocalPool, available_cpus
from pipeline.batch_manifest import MANIFEST, Entry, Kind, Manifest, fingerprint, plan, record_of
from pipeline.batch_pool import POLL_SECONDS, Pool, Result, uses_gpu
from pipeline.batch_progress import BatchProgress
from pipeline.config import RunConfig

MAX_WORKERS = 1024
"""The most workers one batch starts (a typo such as --workers 10000000 must not fork that many processes)."""

# -- running the batch ---------------------------------------------------------------------------------------------


def execute(entries: Sequence[Entry], pool: Pool, manifest: Manifest, progress: BatchProgress, out: Path,
            config_hash: str, *, max_attempts: int) -> None:
    """Feed the pending entries to the pool's workers, record each outcome, commit each success's outputs.

    A worker that dies loses only its video, which goes back in the queue while it has attempts left. On any
    exception (Ctrl-C, SIGTERM) the workers are stopped, the videos in progress lose their temporary outputs, and
    the exception propagates; nothing in progress is recorded, so the next run does them again.
    """
    waiting = deque(entry for entry in entries if entry.status == "pending")
    idle = list(range(len(pool.names)))
    running: dict[int, Entry] = {}
    try:
        while waiting or running:
            while idle and waiting:
                slot, start = idle.pop(0), waiting.popleft()
                start.attempts += 1
                pool.submit(slot, start.task())
                running[slot] = start
                progress.begin(slot, start)
            for update in pool.poll(POLL_SECONDS):
                if update.lost is not None:
                    progress.note(f"{pool.names[update.slot]} lost: {update.lost}")
                    pool.restart(update.slot)
                entry = running.get(update.slot)
                if entry is None:  # an idle worker died: replaced above
                    continue
                if update.result is None and update.lost is None:
                    progress.advance(update.slot, update.frames)
                    continue
                if update.result is None and entry.attempts < max_attempts:  # its worker died: try again
                    entry.discard()
                    waiting.appendleft(entry)
                else:
                    lost = Result(0, 0.0, None, f"worker lost: {update.lost}", pool.names[update.slot])
                    _settle(entry, update.result or lost, manifest, out, config_hash)
                    progress.end(update.slot, entry)
                del running[update.slot]  # only now: an interrupted _settle still has its temporaries deleted
                idle.append(update.slot)
            progress.draw()
    except BaseException:
        pool.abort()
        for entry in running.values():
            entry.discard()
        raise
    pool.close()


def _settle(entry: Entry, result: Result, manifest: Manifest, out: Path, config_hash: str) -> None:
    """Record the worker's result; on success the record goes first, then the outputs take their final names."""
    entry.frames, entry.seconds = result.frames, result.seconds
    entry.status, entry.reason = ("done", None) if result.error is None else ("failed", result.error)
    if entry.status == "failed":
        entry.discard()
        manifest.append(record_of(entry, out, config_hash, result))
        return
    manifest.append(record_of(entry, out, config_hash, result))
    try:
        entry.commit()
    except OSError as error:
        entry.discard()
        entry.status, entry.reason = "failed", f"cannot rename the outputs into place: {error}"
        manifest.append(record_of(entry, out, config_hash, result))


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
    lines = [f"{cli.PROG} batch: {len(entries)} videos in {seconds:.1f} s on {where}",
             f"{'status':<9}{'videos':>7}{'frames':>9}{'work (s)':>10}", *rows, f"throughput: {rate}"]
    failed = [e for e in entries if e.status == "failed"]
    if failed:
        lines += ["failed:"] + [f"  {e.name}: {e.reason}" for e in failed]
    pending = [e for e in entries if e.status == "pending"]
    if pending:
        lines.append(f"not finished (the next run does them): {len(pending)}")
    lines.append(f"manifest: {manifest}")
    return "\n".join(lines)


# -- the command line ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """`seg-video batch`'s options; engine and pipeline settings use the names of the single-video command's."""
    parser = cli.OneLineParser(
        prog=f"{cli.PROG} batch",
        description="Annotate many videos with a pool of pipelines (processes here, or Ray actors on a cluster), "
                    "each loading the engine once. Resumable: DIR/manifest.jsonl records every video, and a re-run "
                    "does only what is not done yet (or whose input or settings changed).",
        epilog=f"examples:\n  {cli.PROG} batch footage/ --out annotated/ --workers 4\n"
               f"  {cli.PROG} batch 'cams/*/2026-*.mp4' list.txt --out out/ --coco --no-video\n"
               f"  {cli.PROG} batch footage/ --out /shared/out/ --engine maskrcnn --ray auto",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, folders (searched for videos), globs (quote them), or .txt lists of these")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="output folder: outputs mirror the input names, plus manifest.jsonl")
    parser.add_argument("-e", "--engine", help="segmentation engine (default: motion; see seg-video --list-engines)")
    parser.add_argument("-c", "--config", metavar="FILE|PRESET", help="TOML config file or preset name")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the engine, e.g. --param device=cuda (repeatable)")
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
    return parser


def main(argv: Sequence[str]) -> int:
    """`seg-video batch …` (called by `pipeline.cli.main`); returns the exit code: 0 all done, 1 some failed."""
    args = build_parser().parse_args(argv, namespace=cli.build_parser().parse_args([]))
    wanted: dict[Kind, bool] = {"video": not args.no_video, "coco": args.write_coco, "masks": args.write_masks}
    kinds = [kind for kind, on in wanted.items() if on]
    if not kinds:
        raise cli.UsageError("--no-video needs --coco and/or --masks (else nothing is written)")
    if args.workers is not None and not 1 <= args.workers <= MAX_WORKERS:
        raise cli.UsageError(f"--workers must be between 1 and {MAX_WORKERS}; got {args.workers}")
    if args.max_attempts < 1:
        raise cli.UsageError(f"--max-attempts must be at least 1; got {args.max_attempts}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise cli.UsageError(f"--out is a file, not a folder: {out}")
    config = cli._config(args)
    items = collect_inputs(args.inputs, out)
    if not items:
        raise cli.UsageError(f"no videos found in {' '.join(args.inputs)}")
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out / MANIFEST)
    config_hash = fingerprint(config, kinds)
    entries = plan(items, out, kinds, manifest, config_hash, max_attempts=args.max_attempts,
                   overwrite=args.overwrite)
    if manifest.unreadable and not args.quiet:
        print(f"{cli.PROG}: {manifest.path}: {manifest.unreadable} unreadable line(s) ignored", file=sys.stderr)
    pending = sum(entry.status == "pending" for entry in entries)
    manifest.open()
    started = time.perf_counter()
    where, code = "no workers (nothing to do)", 0
    try:
        for entry in entries:
            if entry.kept is not None:
                manifest.append(entry.kept)
        if pending:
            pool, where = _pool(args, config, pending)
            try:
                pool.start()
            except BaseException:
                pool.abort()
                raise
            progress = BatchProgress(entries, pool.names, quiet=args.quiet)
            execute(entries, pool, manifest, progress, out, config_hash, max_attempts=args.max_attempts)
    except KeyboardInterrupt:
        code = cli.EXIT_SIGINT
    except cli.Terminated:
        code = cli.EXIT_SIGTERM
    finally:
        manifest.close()
    if not args.quiet:
        print(summary_table(entries, time.perf_counter() - started, where, manifest.path), file=sys.stderr)
    if code:
        print(f"{cli.PROG}: error: {'interrupted' if code == cli.EXIT_SIGINT else 'terminated'}; "
              "finished videos are kept, the next run does the rest", file=sys.stderr)
        return code
    return cli.EXIT_FAILED if any(entry.status == "failed" for entry in entries) else 0


def _pool(args: argparse.Namespace, config: RunConfig, pending: int) -> tuple[Pool, str]:
    """The pool to run `pending` videos on, and how to name it in the summary."""
    gpu = uses_gpu(config)
    if args.ray is not None:
        try:
            from pipeline.batch_ray import RayPool
        except ImportError:
            raise cli.UsageError("--ray needs Ray: pip install 'seg-video[ray]'") from None
        ray_pool = RayPool(config, args.ray, args.workers, pending=pending, gpu=gpu)
        return ray_pool, f"Ray ({len(ray_pool.names)} actors)"
    gpus = 0
    if gpu:
        import torch

        gpus = torch.cuda.device_count()
    size = max(1, min(args.workers or gpus or available_cpus(), pending))
    return LocalPool(config, size, gpus=gpus), f"{size} local worker{'s' * (size > 1)}"
