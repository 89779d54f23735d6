"""Procedural multi-trajectory data: layouts, generation, on-disk format, splits, dataset and
`lyra generate`."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lyra_core import cli
from lyra_core.data import format as data_format
from lyra_core.data import generator, layouts
from lyra_core.data.format import (
    SPLIT_SEED_RANGES,
    SPLITS,
    ProceduralDataset,
    SceneSample,
    ViewSet,
    list_scenes,
    load_scene,
    scene_dirname,
    split_of_seed,
    split_seeds,
    write_scene,
)
from lyra_core.data.generator import GeneratorConfig, generate_scene
from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES
from lyra_core.utils.errors import DataError

TINY = GeneratorConfig(
    width=32, height=24, num_frames=5, num_heldout=2, num_gaussians=4000, batch_size=8
)
SEEDS = (0, 1)  # seed 0 draws an outdoor layout, seed 1 a room
VIEW_FILES = ("rgb.npy", "depth.npy", "cameras.npz", "cache_rgb.npy", "cache_mask.npy")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict[int, SceneSample]]:
    """Two tiny scenes generated with the function API and written to ``<tmp>/train``."""
    split_dir = tmp_path_factory.mktemp("data") / "train"
    samples = {seed: generate_scene(seed, TINY) for seed in SEEDS}
    for seed, sample in samples.items():
        write_scene(split_dir / scene_dirname(seed), sample)
    return split_dir, samples


def _views(sample: SceneSample) -> dict[str, ViewSet]:
    assert sample.heldout is not None
    return {**sample.trajectories, "heldout": sample.heldout}


def _assert_samples_equal(a: SceneSample, b: SceneSample) -> None:
    assert a.meta == b.meta
    for name in ("input_rgb", "input_depth", "input_K", "input_camtoworld"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    assert list(_views(a)) == list(_views(b))
    for key, views in _views(a).items():
        for field, x in views.to_dict().items():
            y = getattr(_views(b)[key], field)
            assert x.dtype == y.dtype and torch.equal(x, y), f"{key}.{field}"


def test_scene_folder_holds_every_file(tiny):
    split_dir, _ = tiny
    assert [p.name for p in list_scenes(split_dir)] == ["scene_000000", "scene_000001"]
    layouts = set()
    for seed in SEEDS:
        scene = split_dir / scene_dirname(seed)
        for name in ("meta.json", "input/rgb.png", "input/depth.npy", "input/camera.json"):
            assert (scene / name).is_file(), name
        for folder in [scene / "trajectories" / n for n in LYRA_TRAJECTORY_NAMES]:
            assert sorted(p.name for p in folder.iterdir()) == sorted(VIEW_FILES)
        assert sorted(p.name for p in (scene / "heldout").iterdir()) == sorted(VIEW_FILES)
        meta = json.loads((scene / "meta.json").read_text())
        assert meta["seed"] == seed and meta["split"] == "train"
        assert (meta["width"], meta["height"], meta["num_frames"]) == (32, 24, 5)
        assert meta["trajectory_names"] == list(LYRA_TRAJECTORY_NAMES)
        assert meta["generator_version"] == generator.GENERATOR_VERSION
        assert meta["scene_depth"] > 0.3 and set(meta["intrinsics"]) == {"fx", "fy", "cx", "cy"}
        layouts.add(meta["layout"])
    assert layouts == {"room", "outdoor"}


def test_load_scene_round_trips_exactly(tiny):
    split_dir, samples = tiny
    for seed, sample in samples.items():
        loaded = load_scene(split_dir / scene_dirname(seed))
        _assert_samples_equal(loaded, sample)
        views = loaded.trajectories["up"]
        assert views.rgb.shape == (5, 24, 32, 3) and views.rgb.dtype == torch.uint8
        assert views.depth.shape == (5, 24, 32) and views.depth.dtype == torch.float32
        assert views.Ks.shape == (5, 3, 3) and views.camtoworlds.shape == (5, 4, 4)
        assert views.cache_mask.dtype == torch.bool
        assert loaded.heldout is not None and loaded.heldout.rgb.shape == (2, 24, 32, 3)


def test_first_frame_is_the_input_view(tiny):
    _, samples = tiny
    for sample in samples.values():
        hit = sample.input_depth > 0
        for name, views in sample.trajectories.items():
            assert torch.equal(views.camtoworlds[0], sample.input_camtoworld), name
            assert torch.equal(views.Ks[0], sample.input_K)
            diff = (views.rgb[0].int() - sample.input_rgb.int()).abs()
            assert int(diff.max()) <= 1, name
            torch.testing.assert_close(views.depth[0], sample.input_depth, atol=1e-4, rtol=1e-4)
            mask = views.cache_mask[0]
            assert float(mask.float().mean()) >= 0.95 * float(hit.float().mean())
            assert float((mask & hit).float().sum() / hit.float().sum()) > 0.95
            cache_err = (views.cache_rgb[0].float() - sample.input_rgb.float()).abs()[mask]
            assert float(cache_err.mean()) < 0.08 * 255, name


def test_cache_masks_shrink_as_cameras_move_away(tiny):
    _, samples = tiny
    for sample in samples.values():
        room = sample.meta["layout"] == "room"
        assert float(sample.trajectories["left"].cache_mask[0].float().mean()) > (
            0.9 if room else 0.5
        )
        for name in ("left", "right", "zoom_out"):
            coverage = sample.trajectories[name].cache_mask.float().mean(dim=(1, 2))
            assert coverage[-1] < coverage[0], (name, coverage.tolist())


def test_same_seed_is_identical_and_other_seeds_differ(tiny):
    _, samples = tiny
    _assert_samples_equal(generate_scene(1, TINY), samples[1])
    a, b = samples[0], samples[1]
    assert not torch.equal(a.input_rgb, b.input_rgb)
    assert not torch.equal(a.input_camtoworld, b.input_camtoworld)
    assert a.meta["scene_depth"] != b.meta["scene_depth"]


def test_splits_are_deterministic_and_disjoint():
    seeds = {split: split_seeds(split, 50) for split in SPLITS}
    assert seeds == {split: split_seeds(split, 50) for split in SPLITS}
    for split, values in seeds.items():
        assert all(split_of_seed(s) == split for s in values)
        start, stop = SPLIT_SEED_RANGES[split]
        assert split_of_seed(start) == split and split_of_seed(stop - 1) == split
    assert not set(seeds["train"]) & set(seeds["val"])
    assert not set(seeds["val"]) & set(seeds["test"])
    assert split_seeds("val", 3, offset=10) == [s + 10 for s in seeds["val"][:3]]
    ranges = sorted(SPLIT_SEED_RANGES.values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges))
    with pytest.raises(ValueError):
        split_of_seed(-1)
    with pytest.raises(ValueError):
        split_seeds("train", 10, offset=SPLIT_SEED_RANGES["train"][1])


def test_dataset_returns_collatable_tensors(tiny):
    split_dir, samples = tiny
    dataset = ProceduralDataset(split_dir, trajectory_names=("left", "zoom_in"))
    assert len(dataset) == 2
    item = dataset[1]
    assert int(item["seed"]) == 1 and set(item["trajectories"]) == {"left", "zoom_in"}
    assert torch.equal(item["input"]["rgb"], samples[1].input_rgb)
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["trajectories"]["left"]["cache_rgb"].shape == (2, 5, 24, 32, 3)
    assert batch["heldout"]["camtoworlds"].shape == (2, 2, 4, 4)


def test_failed_write_leaves_no_partial_folder(tiny, tmp_path, monkeypatch):
    _, samples = tiny
    original = data_format.write_view_set

    def failing(folder: Path, views: ViewSet) -> None:
        if folder.name == "heldout":  # the last part written: most files already exist
            raise OSError("disk full (simulated)")
        original(folder, views)

    monkeypatch.setattr(data_format, "write_view_set", failing)
    target = tmp_path / "train" / scene_dirname(0)
    with pytest.raises(OSError, match="simulated"):
        write_scene(target, samples[0])
    assert list((tmp_path / "train").iterdir()) == []
    monkeypatch.setattr(data_format, "write_view_set", original)
    write_scene(target, samples[0])
    with pytest.raises(FileExistsError):
        write_scene(target, samples[0])


def test_cli_generates_with_workers_and_skips_existing(tmp_path, capsys):
    out = tmp_path / "procedural"
    stale = out / "val" / ".tmp-scene_900000-killed"
    stale.mkdir(parents=True)
    args = ["--out", str(out), "--num-scenes", "2", "--split", "val", "--workers", "2"]
    args += ["--frames", "3", "--width", "24", "--height", "16", "--seed-offset", "5"]
    args += ["--gaussians", "1500", "--heldout", "1", "--no-progress"]
    assert generator.main(args) == 0
    scenes = list_scenes(out / "val")
    assert [p.name for p in scenes] == ["scene_900005", "scene_900006"]
    assert sorted(p.name for p in (out / "val").iterdir()) == [p.name for p in scenes]
    sample = load_scene(scenes[0])
    assert sample.meta["split"] == "val" and sample.trajectories["right"].rgb.shape[:3] == (
        3,
        16,
        24,
    )
    assert "generated 2, skipped 0, failed 0" in capsys.readouterr().out
    stamps = [np.load(p / "input" / "depth.npy").sum() for p in scenes]
    mtimes = [(p / "meta.json").stat().st_mtime_ns for p in scenes]
    assert generator.main(args) == 0
    assert "generated 0, skipped 2, failed 0" in capsys.readouterr().out
    assert [(p / "meta.json").stat().st_mtime_ns for p in scenes] == mtimes
    assert [np.load(p / "input" / "depth.npy").sum() for p in scenes] == stamps


def test_data_package_names_resolve_to_layouts_and_generator():
    import lyra_core.data as data

    assert data.random_layout is layouts.random_layout
    assert data.layout_gaussians is layouts.layout_gaussians
    assert data.LAYOUT_KINDS == layouts.LAYOUT_KINDS == ("room", "outdoor")
    assert data.generate_scene is generator.generate_scene
    assert data.GENERATOR_VERSION == generator.GENERATOR_VERSION
    for name in data.__all__:
        assert getattr(data, name) is not None, name
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018


def test_layouts_draw_free_space_from_the_seed():
    rng = np.random.default_rng(3)
    room = layouts.random_layout(rng, "room")
    assert room.kind == "room" and len(room.boxes) >= 2 and len(room.spheres) >= 1
    again = layouts.random_layout(np.random.default_rng(3), "room")
    assert again.boxes == room.boxes and np.array_equal(again.bounds, room.bounds)
    # A box's own axis is occupied; a point inside the bounds far from every object is free.
    cx, cy, _, z0, z1 = room.boxes[0]
    assert not room.is_free(np.array([cx, cy, 0.5 * (z0 + z1)]))[0]
    assert not room.is_free(room.bounds[1] + 1.0)[0]
    gaussians = layouts.layout_gaussians(room, 500, np.random.default_rng(0))
    assert len(gaussians) == 500
    with pytest.raises(ValueError, match="unknown layout kind"):
        layouts.random_layout(rng, "cave")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"num_frames": 1}, "frames >= 2"),
        ({"width": 0}, "width, height"),
        ({"fov_y": 3.5}, "fov_y"),
        ({"movement_scale": 0.0}, "movement_scale"),
        ({"layout": "cave"}, "layout must be"),
    ],
)
def test_generator_config_rejects_settings_with_a_data_error(fields, match):
    with pytest.raises(DataError, match=match):
        GeneratorConfig(**fields)


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_generate_cli_fails_in_one_line(tmp_path, capsys):
    out = tmp_path / "data"
    base = ["generate", "--out", str(out), "--no-progress", "--workers", "1"]
    too_far = ["--split", "val", "--num-scenes", "2", "--seed-offset", str(10**9)]
    assert cli.main([*base, *too_far]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("lyra generate: error:") and "val" in lines[0]
    assert not (out / "val").exists()  # nothing written for a refused request
    assert cli.main([*base, "--num-scenes", "1", "--fov", "4.0"]) == 2
    assert len(lines := _stderr_lines(capsys)) == 1 and "fov_y" in lines[0]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bad_out = ["generate", "--out", str(blocker), "--num-scenes", "1", "--no-progress"]
    assert cli.main(bad_out) == 2
    assert len(lines := _stderr_lines(capsys)) == 1 and "cannot create" in lines[0]
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage + error, exit 2
        cli.main([*base, "--num-scenes", "0"])
    assert exit_info.value.code == 2 and "must be >= 1" in capsys.readouterr().err


def test_generate_options_all_have_help():
    for action in generator.build_parser()._actions:
        assert action.help, action.option_strings


def test_generator_runs_as_a_module():
    for module in ("lyra_core.data.generator",):
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert "--num-scenes" in result.stdout and "--movement-scale" in result.stdout
