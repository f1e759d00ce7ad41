"""Many scenes, one model, on a dask.distributed cluster (local or remote), resumable.

Each scene is one task; a worker loads the model once and keeps it for every scene it gets.
Results are recorded in ``OUTDIR/manifest.jsonl`` (one JSON object a line, appended as scenes
finish): a second run skips scenes done with the same model on the same input, and redoes the
rest. Every output is written under a temporary name and renamed when complete, so a killed
run leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hsimap.engine import default_workers
from hsimap.errors import HsimapError
from hsimap.io.files import output_stem
from hsimap.io.mosaic import write_vrt
from hsimap.workflows.options import PredictOptions

MANIFEST = "manifest.jsonl"
_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def expand_scenes(patterns: list[str], list_file: str | None = None) -> list[Path]:
    """Paths, quoted globs (expanded here) and a list file (one path a line) to scene paths."""
    items = list(patterns)
    if list_file:
        lines = Path(list_file).read_text().splitlines()
        items += [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    out: list[Path] = []
    for item in items:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise HsimapError(f"{item}: matches no file")
        out += [Path(m) for m in matches]
    if not out:
        raise HsimapError("no scenes given")
    seen: dict[str, Path] = {}
    for p in out:
        stem = output_stem(p)
        if stem in seen and seen[stem] != p:
            raise HsimapError(f"{p} and {seen[stem]} would share the output folder "
                              f"{stem}/; rename one")
        seen[stem] = p
    return list(dict.fromkeys(out))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_signature(scene: Path) -> dict[str, Any]:
    """Size and modification time of a scene's files (ENVI: data and header)."""
    files = [scene]
    hdr = scene.with_suffix(".hdr")
    if scene.suffix.lower() != ".hdr" and hdr.exists():
        files.append(hdr)
    if scene.suffix.lower() == ".hdr":
        from hsimap.io.scene import resolve_envi_path

        try:
            files.append(resolve_envi_path(scene))
        except HsimapError:
            pass
    return {"size": sum(f.stat().st_size for f in files if f.exists()),
            "mtime": max(f.stat().st_mtime for f in files if f.exists())}


def _model_on_worker(model_dir: str, device: str, model_hash: str | None = None):
    """The model, loaded once per worker process and shared by its threads. Kept by its hash,
    not its folder: a long-lived cluster must not serve a model since retrained into the same
    folder. ``model_hash``: the model the batch was started with; a folder that now holds
    another is refused."""
    from hsimap.model.store import load_model, resolve_device

    with _MODELS_LOCK:
        key = f"{model_hash}|{device}"
        if model_hash is None or key not in _MODELS:
            model = load_model(model_dir, resolve_device(device))
            if model_hash is not None and model.card.model_hash != model_hash:
                raise HsimapError(f"{model_dir}: holds another model than the batch started "
                                  f"with ({model.card.model_hash[:12]}, not "
                                  f"{model_hash[:12]}); was it retrained meanwhile?")
            key = f"{model.card.model_hash}|{device}"
            _MODELS[key] = model
        return _MODELS[key]


@dataclass
class BatchOptions:
    """How each scene is predicted: ``predict`` is passed to every worker unchanged, so each
    of ``hsimap predict``'s options means the same in a batch."""

    predict: PredictOptions = field(default_factory=PredictOptions)
    device: str = "cpu"

    @property
    def workers(self) -> int:
        """A scene's windows computed at once (threads); 1 unless set."""
        return self.predict.output.workers or 1

    def recorded(self) -> dict[str, Any]:
        """What the manifest keeps: every option that changes a scene's outputs (workers,
        progress and overwrite do not)."""
        opts = asdict(self.predict)
        out = opts.pop("output")
        for k in ("workers", "progress", "overwrite", "provenance"):
            out.pop(k)
        return {**opts, **out, "device": self.device}


def process_scene(scene: str, model_dir: str, out_dir: str, options: BatchOptions,
                  model_hash: str | None = None) -> dict[str, Any]:
    """Predict one scene into ``out_dir`` (runs on a worker). Never raises for a bad scene:
    the failure is returned as a record, so one scene cannot stop the batch."""
    from hsimap.io.scene import open_scene
    from hsimap.workflows.predict import predict_scene

    t0 = time.time()
    record: dict[str, Any] = {"scene": str(scene), "out_dir": str(out_dir),
                              "worker_pid": os.getpid()}
    made = not Path(out_dir).exists()
    try:
        model = _model_on_worker(model_dir, options.device, model_hash)
        record["model_hash"] = model.card.model_hash
        record["options"] = options.recorded()
        data = open_scene(scene)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        opts = replace(options.predict, output=replace(options.predict.output, overwrite=True,
                                                         progress=False,
                                                         workers=options.workers))
        report = predict_scene(data, model, out_dir, opts)
        record.update(status="done", pixels=report.pixels,
                      outputs={k: _checksums(p) for k, p in report.paths.items()})
    except HsimapError as exc:
        record.update(status="failed", reason=str(exc))
    except Exception as exc:  # a corrupt file can raise anything from deep inside GDAL
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    if record["status"] == "failed" and made:
        with contextlib.suppress(OSError):
            Path(out_dir).rmdir()  # only if empty: a failed scene leaves no folder behind
    record["seconds"] = round(time.time() - t0, 3)
    return record


def read_manifest(out_dir: Path, warn=print) -> dict[str, dict[str, Any]]:
    """The latest record of each scene. A torn last line from a killed run is ignored; a line
    that is JSON but no record (``{}``, ``null``) is skipped with a warning."""
    latest: dict[str, dict[str, Any]] = {}
    path = out_dir / MANIFEST
    if not path.exists():
        return latest
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("scene"), str):
            warn(f"warning: {path}:{n} is not a scene record; skipped")
            continue
        latest[rec["scene"]] = rec
    return latest


def is_complete(rec: dict[str, Any] | None, signature: dict[str, Any], model_hash: str,
                options: dict[str, Any] | None = None) -> bool:
    """Done before, for this model, this input and these options, with outputs intact."""
    if not rec or rec.get("status") != "done" or rec.get("model_hash") != model_hash:
        return False
    if rec.get("input") != signature or rec.get("options") != (options or {}):
        return False
    outputs = rec.get("outputs")
    # A record names the files of a whole set (the class map at least), each with the
    # checksum it had when written; one naming none, or a file without a checksum, is no
    # proof that anything was done.
    if not isinstance(outputs, dict) or "classes" not in outputs:
        return False
    for out in outputs.values():
        if not isinstance(out, dict) or "sha256" not in out or \
                _checksums(Path(out.get("path", ""))) != out:
            return False
    return True


def _checksums(path: Path) -> dict[str, str]:
    """A file's path and SHA-256, and its ``.aux.xml`` sidecar's (category names, attribute
    table): a map whose sidecar was edited or lost is not the map the run wrote."""
    out = {"path": str(path)}
    if path.is_file():
        out["sha256"] = file_sha256(path)
    aux = Path(str(path) + ".aux.xml")
    if aux.is_file():
        out["aux_sha256"] = file_sha256(aux)
    return out


@dataclass
class BatchSummary:
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dashboard: str | None = None
    seconds: float = 0.0
    mosaic: Path | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] != "done"]

    @property
    def pixels(self) -> int:
        return sum(r.get("pixels", 0) for r in self.records)


def run_batch(scenes: list[Path], model_dir: str | Path, out_dir: str | Path, *,
              jobs: int | None = None, scheduler: str | None = None, overwrite: bool = False,
              options: BatchOptions | None = None, progress: bool = True,
              mosaic: bool = False, echo=print) -> BatchSummary:
    """Run ``scenes`` through the model on dask.distributed; see the module docstring.

    Args:
        jobs: scenes at once: worker processes of a local cluster (default: cores / the
            windows each scene computes at once, ``options.workers``).
        scheduler: ``tcp://host:port`` or a scheduler JSON file of an existing cluster;
            default: a LocalCluster of ``jobs`` processes on this machine.
        overwrite: redo scenes the manifest records as done.
        options: how each scene is predicted.
        mosaic: also write ``classes_mosaic.vrt``, a VRT of every class map in ``out_dir``
            (done before or now), with its class names and QGIS style.
    """
    from hsimap.model.store import load_model

    options = options or BatchOptions()
    options.predict.check()  # before any cluster starts
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_hash = load_model(model_dir).card.model_hash  # checked before any cluster starts
    summary = BatchSummary()
    todo = _plan(scenes, out, model_hash, overwrite, summary, options.recorded(), echo)
    t0 = time.time()
    if todo:
        _run(todo, model_dir, out, model_hash, jobs, scheduler, options, summary, progress,
             echo)
    summary.seconds = time.time() - t0
    if mosaic:
        maps = sorted(out.glob("*/*_classes.tif"))
        # The mosaic of the batch folder's maps is the batch's own: each run brings it up to
        # date.
        summary.mosaic = write_vrt(maps, out / "classes_mosaic.vrt", overwrite=True)
    return summary


def _run(todo: list[tuple[Path, dict[str, Any]]], model_dir: str | Path, out: Path,
         model_hash: str, jobs: int | None, scheduler: str | None, options: BatchOptions,
         summary: BatchSummary, progress: bool, echo) -> None:
    """The scenes to do, on the cluster; their records land in ``summary``."""
    t0 = time.time()
    if jobs is None:
        jobs = max(1, default_workers() // options.workers)
    with _connect(scheduler, min(jobs, len(todo)), options.workers) as client:
        summary.dashboard = client.dashboard_link if _has_bokeh() else None
        if summary.dashboard:
            echo(f"dask dashboard: {summary.dashboard}")
        futures = {client.submit(process_scene, str(s), str(Path(model_dir).resolve()),
                                 str(out / output_stem(s)), options, model_hash,
                                 key=f"hsimap-{output_stem(s)}-{model_hash}", retries=2,
                                 pure=False): (s, sig) for s, sig in todo}
        _collect(futures, out, summary, t0, progress)


def _plan(scenes: list[Path], out: Path, model_hash: str, overwrite: bool, summary: BatchSummary,
          options: dict[str, Any], echo) -> list[tuple[Path, dict[str, Any]]]:
    """The scenes to run: all but those the manifest records as done for this model, input
    and options (unless ``overwrite``), which are listed in ``summary.skipped``."""
    done_before = read_manifest(out, echo)
    todo = []
    for s in scenes:
        sig = input_signature(s) if s.exists() else {"size": None, "mtime": None}
        if not overwrite and is_complete(done_before.get(str(s)), sig, model_hash, options):
            summary.skipped.append(str(s))
        else:
            todo.append((s, sig))
    return todo


@contextmanager
def _connect(scheduler: str | None, workers: int, threads: int):
    """A client of an existing cluster, or of a LocalCluster started (and closed) here."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise HsimapError("hsimap batch needs dask.distributed: pip install "
                          "'hsimap[distributed]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler) if "://" in scheduler else Client(scheduler_file=scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                               host="127.0.0.1", dashboard_address=_dashboard_address())
        client = Client(cluster)
    try:
        yield client
    finally:
        if cluster is not None:
            # Closing workers that are still computing (a stopped run) makes each log a
            # CancelledError warning: shutdown chatter that says nothing to the user.
            with contextlib.suppress(Exception):
                client.run(_quiet_logs)
            _quiet_logs()
        client.close()
        if cluster is not None:
            cluster.close()


def _quiet_logs() -> None:
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _collect(futures: dict, out: Path, summary: BatchSummary, t0: float,
             progress: bool) -> None:
    """Record each scene as it finishes: a manifest line (flushed and synced), a report line."""
    from distributed import as_completed
    from tqdm import tqdm

    bar = tqdm(total=len(futures), unit="scene", desc="batch", disable=not progress,
               dynamic_ncols=True)
    with open(out / MANIFEST, "a") as manifest:
        try:
            for f in as_completed(futures):
                s, sig = futures[f]
                try:
                    rec = f.result()
                except Exception as exc:  # the task itself died (e.g. its worker, repeatedly)
                    rec = {"scene": str(s), "status": "failed",
                           "reason": f"{type(exc).__name__}: {exc}"}
                rec["input"] = sig
                rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                manifest.write(json.dumps(rec) + "\n")
                manifest.flush()
                os.fsync(manifest.fileno())
                summary.records.append(rec)
                elapsed = max(time.time() - t0, 1e-9)
                bar.set_postfix(px_s=f"{summary.pixels / elapsed:,.0f}",
                                failed=len(summary.failed))
                bar.update(1)
                bar.write(f"{rec['status']:>6}  {s}  ({rec.get('seconds', 0):.1f} s)"
                          + (f": {rec['reason']}" if rec["status"] != "done" else ""))
        finally:
            bar.close()


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _dashboard_address() -> str | None:
    return "127.0.0.1:0" if _has_bokeh() else None
