"""4D worlds: render time against 3D, the dynamic student against the 4D cache, RGB-D video to 4D.

(a) **Render time**: a 4D world -- the procedural dynamic room
    (:func:`lyra_core.scene.procedural_dynamic.procedural_dynamic_room`: ``--gaussians`` static
    Gaussians plus the moving objects stored as ``--slices`` time slices) -- rendered at a world
    time (``render(..., time=t)``: :meth:`Gaussians.at_time` then the renderer), against a 3D world
    of the same Gaussian count (the procedural room with as many Gaussians) at 320x240, same
    camera, native backend when built (torch otherwise); also the 3D world the 4D one shows at
    ``t`` (what the renderer draws after the time selection) and the time selection alone.
(b) **Dynamic student vs the 4D cache** at the held-out (camera, time) pairs of dynamic test
    scenes (:mod:`lyra_core.data.dynamic`; :mod:`lyra_core.evaluation.dynamic`): PSNR / SSIM /
    ST-LPIPS of the 4D cache (each input frame unprojected, the nearest in time shown), the
    student anchored to the nearest frame, and the student alone.
(c) **RGB-D video to 4D** (:class:`lyra_core.mapping.dynamic.DynamicMapper`) on the same scenes:
    the mapper builds a 4D world from the T input frames, rendered at the same held-out pairs.

Every ratio is against a baseline measured in the same run (the 3D world; the 4D cache).

Usage::

    python benchmarks/four_d.py [--student FOLDER] [--data data/dynamic] [--quick]

``--quick``: 20k Gaussians, 2 scenes, few repeats (a smoke run, not a measurement). Writes
``benchmarks/results/four_d_cpu.json`` (``four_d_cuda.json`` with ``--device cuda``).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

import lyra_core.weights
from lyra_core.data.dynamic import DynamicSceneSample
from lyra_core.data.format import list_scenes
from lyra_core.evaluation.dynamic import (
    CACHE_4D_METHOD,
    cache_4d_method,
    evaluate_dynamic_scenes,
    student_4d_methods,
)
from lyra_core.evaluation.report import summarize
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.models.perceptual import load_perceptual
from lyra_core.rendering import available_backends, render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.procedural_dynamic import OBJECT_FRACTION, procedural_dynamic_room
from lyra_core.scene.procedural_room import procedural_room
from report import time_call, write_report

WIDTH, HEIGHT = 320, 240
MAPPER_METHOD = "rgbd_video_to_4d"


def _camera(device: torch.device) -> Cameras:
    eye, target = torch.tensor([0.0, -2.8, 1.5]), torch.tensor([0.0, 1.0, 0.8])
    pose = look_at(eye, target, up=torch.tensor([0.0, 0.0, 1.0]))[None]
    return Cameras.from_intrinsics(pose, Intrinsics.from_fov(1.0, WIDTH, HEIGHT)).to(device)


def _four_d_world(static: int, slices: int, duration: float = 2.0) -> tuple[Gaussians, float]:
    """The dynamic room with about ``static`` static Gaussians plus its moving objects at
    ``slices`` times over ``duration`` seconds; returns it and a time between two slices."""
    room = procedural_dynamic_room(
        0, num_gaussians=round(static / (1.0 - OBJECT_FRACTION)), duration=duration
    )
    times = [duration * i / (slices - 1) for i in range(slices)]
    return room.world(times), 0.5 * (times[1] + times[2])


def _shown(path: str | None) -> str | None:
    """``path`` as written in the report: relative to the repository when inside it (the
    report names no machine paths), else as given."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    root = Path(__file__).resolve().parent.parent
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path


def render_timing(args: argparse.Namespace, device: torch.device) -> dict:
    """Part (a)."""
    backend = "native" if "native" in available_backends() and device.type == "cpu" else "auto"
    if device.type == "cpu" and "native" not in available_backends():
        backend = "torch"
    cams = _camera(device)
    world, t = _four_d_world(args.gaussians, args.slices)
    world = world.to(device)
    flat = procedural_room(len(world), seed=0).to(device)
    shown = world.at_time(t)

    def go(scene: Gaussians, **kw) -> object:
        with torch.inference_mode():
            return render(scene, cams, backend=backend, **kw)

    seconds_4d = time_call(lambda: go(world, time=t), device, args.repeats, args.budget)
    seconds_3d = time_call(lambda: go(flat), device, args.repeats, args.budget)
    seconds_shown = time_call(lambda: go(shown), device, args.repeats, args.budget)
    seconds_select = time_call(lambda: world.at_time(t), device, args.repeats, args.budget)
    return {
        "backend": backend,
        "width": WIDTH,
        "height": HEIGHT,
        "gaussians_4d": len(world),
        "slices": args.slices,
        "gaussians_shown_at_t": len(shown),
        "gaussians_3d": len(flat),
        "ms_4d_at_t": round(seconds_4d * 1e3, 2),
        "ms_3d_same_count": round(seconds_3d * 1e3, 2),
        "ms_3d_of_what_4d_shows": round(seconds_shown * 1e3, 2),
        "ms_time_selection": round(seconds_select * 1e3, 2),
        "ratio_4d_vs_3d_same_count": round(seconds_4d / seconds_3d, 3),
        "ratio_4d_vs_3d_of_what_it_shows": round(seconds_4d / seconds_shown, 3),
    }


def mapper_method(sample: DynamicSceneSample) -> Gaussians:
    """Part (c): :class:`DynamicMapper` over the scene's input video (stamps = frame times)."""
    from lyra_core.mapping.dynamic import DynamicMapper, DynamicMapperConfig
    from lyra_core.mapping.frames import PosedFrame

    views, intrinsics = sample.input, sample.intrinsics()
    mapper = DynamicMapper(DynamicMapperConfig(show_progress=False))
    for i in range(sample.num_frames):
        mapper.add(
            PosedFrame(
                views.rgb[i].float() / 255.0,
                intrinsics,
                views.camtoworlds[i],
                views.depth[i],
                stamp=float(sample.input_times[i]),
            )
        )
    return mapper.build()


def quality(args: argparse.Namespace, device: torch.device) -> dict:
    """Parts (b) and (c) on the same held-out (camera, time) pairs."""
    scenes = list_scenes(Path(args.data) / args.split)[: args.scenes]
    if not scenes:
        return {"skipped": f"no dynamic scenes in {Path(args.data) / args.split}"}
    methods = {CACHE_4D_METHOD: cache_4d_method}
    if args.student:
        from lyra_core.pipelines.dynamic_student import DynamicWorldPipeline

        pipeline = DynamicWorldPipeline.from_pretrained(args.student, device=device)
        methods |= student_4d_methods(pipeline, "dynamic_student")
    try:
        import lyra_core.mapping.dynamic  # noqa: F401 - part (c) needs it
    except ImportError:  # hook: RGB-D video to 4D is not in this tree
        pass
    else:
        methods[MAPPER_METHOD] = mapper_method
    perceptual = load_perceptual(args.perceptual)
    if perceptual is not None:
        perceptual = perceptual.to(device)
    began = time.perf_counter()
    per_scene, _, _ = evaluate_dynamic_scenes(scenes, methods, perceptual, 0, device, False)
    summary = summarize(per_scene)
    base = summary[CACHE_4D_METHOD]
    for scores in summary.values():
        scores["psnr_gain_vs_4d_cache"] = round(scores["psnr"] - base["psnr"], 3)
    return {
        "split": args.split,
        "scenes": len(scenes),
        "heldout_pairs": len(scenes) * len(load_pairs(scenes[0])),
        "student": _shown(args.student),
        "perceptual": None if perceptual is None else perceptual.name,
        "seconds": round(time.perf_counter() - began, 1),
        "summary": summary,
    }


def load_pairs(scene: Path) -> list[float]:
    from lyra_core.data.dynamic import load_dynamic_scene

    return load_dynamic_scene(scene).heldout_times.tolist()


def _print(report: dict) -> None:
    r = report["render"]
    print(f"(a) render at {r['width']}x{r['height']} ({r['backend']}):")
    print("| world | Gaussians | ms |")
    print("|---|---|---|")
    print(f"| 4D at t ({r['slices']} slices) | {r['gaussians_4d']:,} | {r['ms_4d_at_t']} |")
    print(f"| 3D, same count | {r['gaussians_3d']:,} | {r['ms_3d_same_count']} |")
    print(
        f"| 3D, what 4D shows at t | {r['gaussians_shown_at_t']:,} | "
        f"{r['ms_3d_of_what_4d_shows']} |"
    )
    print(f"| time selection alone | - | {r['ms_time_selection']} |")
    print(
        f"ratio 4D / 3D same count: {r['ratio_4d_vs_3d_same_count']}; 4D / 3D of what it "
        f"shows: {r['ratio_4d_vs_3d_of_what_it_shows']}"
    )
    q = report["quality"]
    if "summary" not in q:
        print(f"(b, c) {q['skipped']}")
        return
    print(f"(b, c) held-out (camera, time) pairs: {q['scenes']} scenes, {q['heldout_pairs']} pairs")
    metric = q["perceptual"]
    print(f"| method | PSNR | SSIM | {metric} | PSNR covered | PSNR empty | vs 4D cache |")
    print("|---|---|---|---|---|---|---|")
    for name, s in q["summary"].items():
        print(
            f"| {name} | {s['psnr']:.2f} | {s.get('ssim', float('nan')):.3f} | "
            f"{s.get(metric, float('nan')):.3f} | {s.get('psnr_covered', float('nan')):.2f} | "
            f"{s.get('psnr_uncovered', float('nan')):.2f} | {s['psnr_gain_vs_4d_cache']:+.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gaussians", type=int, default=100_000)
    parser.add_argument("--slices", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per timing")
    parser.add_argument("--data", default="data/dynamic")
    parser.add_argument("--split", default="test")
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--student", default=None, help="dynamic student folder")
    parser.add_argument("--perceptual", default="stlpips-alex")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.gaussians, args.repeats, args.budget, args.scenes = 20_000, 2, 0.2, 2
    if args.student is None:  # the shipped dynamic student, when there is one
        shipped = lyra_core.weights.shipped_dynamic_student_path()
        args.student = None if shipped is None else str(shipped)
    device = torch.device(args.device)
    report = {
        "device": args.device,
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "render": render_timing(args, device),
        "quality": quality(args, device),
    }
    _print(report)
    if not args.quick:
        write_report(args.out, f"four_d_{device.type}.json", report)


if __name__ == "__main__":
    main()
