"""Many scenes, one model, on a dask.distributed cluster (local or remote), resumable.

Each scene is one task; a worker loads the model once and keeps it for every scene it gets.
Results are recorded in ``OUTDIR/manifest.jsonl`` (one JSON object a line, appended as scenes
finish): a second run skips scenes done with the same model on the same input, and redoes the
rest. Every output is written under a temporary name and renamed when complete, so a killed
run leaves nothing that looks finished.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsimap.errors import HsimapError

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
        if p.stem in seen and seen[p.stem] != p:
            raise HsimapError(f"{p} and {seen[p.stem]} would share the output folder "
                              f"{p.stem}/; rename one")
        seen[p.stem] = p
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


def _model_on_worker(model_dir: str, device: str):
    """The model, loaded once per worker process and shared by its threads."""
    from hsimap.model.store import load_model, resolve_device

    key = f"{Path(model_dir).resolve()}|{device}"
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(model_dir, resolve_device(device))
        return _MODELS[key]


def process_scene(scene: str, model_dir: str, out_dir: str, options: dict[str, Any]
                  ) -> dict[str, Any]:
    """Predict one scene into ``out_dir`` (runs on a worker). Never raises for a bad scene:
    the failure is returned as a record, so one scene cannot stop the batch."""
    from hsimap.io.scene import open_scene
    from hsimap.outputs import write_outputs

    t0 = time.time()
    record: dict[str, Any] = {"scene": str(scene), "out_dir": str(out_dir),
                              "worker_pid": os.getpid()}
    try:
        model = _model_on_worker(model_dir, options.get("device", "cpu"))
        record["model_hash"] = model.card.get("model_hash")
        data = open_scene(scene)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        report = write_outputs(data, model, out_dir, window=options.get("window"),
                               halo=options.get("halo"), workers=options.get("threads", 1),
                               cog=options.get("cog", False), overwrite=True, progress=False,
                               ignore_wavelengths=options.get("ignore_wavelengths", False))
        record.update(status="done", pixels=report.pixels,
                      outputs={k: {"path": str(p), "sha256": file_sha256(p)}
                               for k, p in report.paths.items()})
    except HsimapError as exc:
        record.update(status="failed", reason=str(exc))
    except Exception as exc:  # a corrupt file can raise anything from deep inside GDAL
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    record["seconds"] = round(time.time() - t0, 3)
    return record


def read_manifest(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest record of each scene (a torn last line from a killed run is ignored)."""
    latest: dict[str, dict[str, Any]] = {}
    path = out_dir / MANIFEST
    if not path.exists():
        return latest
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        latest[rec["scene"]] = rec
    return latest


def is_complete(rec: dict[str, Any] | None, signature: dict[str, Any], model_hash: str) -> bool:
    """Done before, for this model and this input, with outputs intact."""
    if not rec or rec.get("status") != "done" or rec.get("model_hash") != model_hash:
        return False
    if rec.get("input") != signature:
        return False
    for out in rec.get("outputs", {}).values():
        p = Path(out["path"])
        if not p.exists() or file_sha256(p) != out["sha256"]:
            return False
    return True


@dataclass
class BatchSummary:
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dashboard: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] != "done"]

    @property
    def pixels(self) -> int:
        return sum(r.get("pixels", 0) for r in self.records)


def run_batch(scenes: list[Path], model_dir: str | Path, out_dir: str | Path, *,
              workers: int | None = None, threads_per_worker: int = 1,
              scheduler: str | None = None, force: bool = False,
              options: dict[str, Any] | None = None, progress: bool = True,
              echo=print) -> BatchSummary:
    """Run ``scenes`` through the model on dask.distributed; see the module docstring.

    Args:
        scheduler: ``tcp://host:port`` or a scheduler JSON file of an existing cluster;
            default: a LocalCluster of ``workers`` processes on this machine.
        threads_per_worker: threads each worker gives a scene (its windows in parallel).
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise HsimapError("hsimap batch needs dask.distributed: pip install "
                          "'hsimap[distributed]'") from None
    from tqdm import tqdm

    from hsimap.model.store import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_dir)  # checks the model before any cluster starts
    model_hash = model.card["model_hash"]
    options = dict(options or {}, threads=threads_per_worker)
    done_before = read_manifest(out)
    todo, summary = [], BatchSummary()
    for s in scenes:
        sig = input_signature(s) if s.exists() else {"size": None, "mtime": None}
        if not force and is_complete(done_before.get(str(s)), sig, model_hash):
            summary.skipped.append(str(s))
        else:
            todo.append((s, sig))
    t0 = time.time()
    if not todo:
        return summary
    workers = workers or max(1, (os.cpu_count() or 1) // threads_per_worker)
    cluster = None
    if scheduler:
        target = scheduler if "://" in scheduler else None
        client = Client(target) if target else Client(scheduler_file=scheduler)
    else:
        cluster = LocalCluster(n_workers=min(workers, len(todo)),
                               threads_per_worker=threads_per_worker, processes=True,
                               host="127.0.0.1", dashboard_address=_dashboard_address())
        client = Client(cluster)
    summary.dashboard = client.dashboard_link if _has_bokeh() else None
    if summary.dashboard:
        echo(f"dask dashboard: {summary.dashboard}")
    manifest = open(out / MANIFEST, "a")
    bar = tqdm(total=len(todo), unit="scene", desc="batch", disable=not progress,
               dynamic_ncols=True)
    try:
        futures = {}
        for s, sig in todo:
            f = client.submit(process_scene, str(s), str(Path(model_dir).resolve()),
                              str(out / s.stem), options, key=f"hsimap-{s.stem}-{model_hash}",
                              retries=2, pure=False)
            futures[f] = (s, sig)
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
        manifest.close()
        client.close()
        if cluster is not None:
            cluster.close()
    summary.seconds = time.time() - t0
    return summary


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _dashboard_address() -> str | None:
    return "127.0.0.1:0" if _has_bokeh() else None


def write_vrt(class_maps: list[Path], path: Path) -> Path:
    """A GDAL VRT mosaic of class maps that share CRS and pixel size (first one wins)."""
    from xml.sax.saxutils import escape

    import rasterio

    if not class_maps:
        raise HsimapError("no class maps to mosaic")
    infos = []
    for p in class_maps:
        with rasterio.open(p) as src:
            infos.append((p, src.crs, src.transform, src.width, src.height, src.dtypes[0],
                          src.colormap(1)))
    _, crs, t0, _, _, dtype, cmap = infos[0]
    for p, c, t, *_ in infos:
        if c != crs or abs(t.a - t0.a) > 1e-9 or abs(t.e - t0.e) > 1e-9:
            raise HsimapError(f"{p}: CRS or pixel size differs from {infos[0][0]}; "
                              "no VRT written")
    left = min(t.c for _, _, t, *_ in infos)
    top = max(t.f for _, _, t, *_ in infos)
    right = max(t.c + w * t.a for _, _, t, w, _, _, _ in infos)
    bottom = min(t.f + h * t.e for _, _, t, _, h, _, _ in infos)
    width, height = round((right - left) / t0.a), round((bottom - top) / t0.e)
    gdt = {"uint8": "Byte", "uint16": "UInt16"}[dtype]
    colors = "".join(f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
                     for _, (r, g, b, a) in sorted(cmap.items()))
    sources = []
    for p, _, t, w, h, _, _ in infos:
        xo, yo = round((t.c - left) / t0.a), round((t.f - top) / t0.e)
        rel = os.path.relpath(p, path.parent)
        sources.append(
            f'<SimpleSource><SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>'
            f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{xo}" yOff="{yo}" xSize="{w}" ySize="{h}"/></SimpleSource>')
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
           f"<SRS>{escape(crs.to_wkt()) if crs else ''}</SRS>"
           f"<GeoTransform>{left}, {t0.a}, 0, {top}, 0, {t0.e}</GeoTransform>"
           f'<VRTRasterBand dataType="{gdt}" band="1"><NoDataValue>0</NoDataValue>'
           f"<ColorInterp>Palette</ColorInterp><ColorTable>{colors}</ColorTable>"
           f"{''.join(sources)}</VRTRasterBand></VRTDataset>\n")
    from hsimap.io.writers import temp_name

    tmp = temp_name(path)
    tmp.write_text(xml)
    os.replace(tmp, path)
    return path
