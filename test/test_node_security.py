"""The world node's exposed surface: confined files, bounded inputs, untrusted checkpoints and
PLYs, and the SROS2 policy checked against a running node's graph (docs/security.md).

The first tests need no DDS (paths, header sizes, pickles); the node tests start one real world
node process (``config/world.yaml``, node name ``lyra_world``, as the policy names it) and talk
to it over DDS; conftest.py keeps DDS on this machine.
"""

from __future__ import annotations

import os
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lyra_core.utils.errors import CheckpointError, WorldBuildError

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from lyra_core.geometry.cameras import Intrinsics  # noqa: E402
from lyra_ros.config import config_path  # noqa: E402
from lyra_ros.conversions import (  # noqa: E402
    compressed_image_size,
    compressed_to_rgb,
    depth_to_image,
    intrinsics_to_camera_info,
    matrix_to_pose,
    numpy_to_image,
    rgb_to_compressed,
)
from lyra_ros.inputs import input_frame, size_problem  # noqa: E402
from lyra_ros.msg import WorldStatus  # noqa: E402
from lyra_ros.paths import PathRefusedError, WorldFiles, check_checkpoint  # noqa: E402
from lyra_ros.qos import LATCHED_QOS  # noqa: E402
from lyra_ros.srv import BuildWorld, RenderView, WorldFile  # noqa: E402
from node_process import (  # noqa: E402
    call_service,
    spin_until,
    start_world_node,
    stop_world_node,
)

W, H = 64, 48
MAX_INPUT_PIXELS = 10_000  # the node tests' limit: 64x48 passes, 101x100 does not
POLICY = Path(__file__).resolve().parents[1] / "config" / "sros2_policy.xml"


def rgbd(width: int = W, height: int = H) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:height, 0:width]
    rgb = np.stack([cols * 4 % 256, rows * 5 % 256, np.full_like(rows, 128)], -1).astype(np.uint8)
    return rgb, np.full((height, width), 2.0, np.float32)


# ---------------------------------------------------------------------------- confined files


def test_world_files_are_names_inside_the_world_dir(tmp_path):
    files = WorldFiles(tmp_path / "worlds")
    assert files.resolve("world.ply") == tmp_path / "worlds" / "world.ply"
    assert not (tmp_path / "worlds").exists()  # created on the first save, not before
    assert files.resolve("world.ply", for_writing=True).parent.is_dir()
    (tmp_path / "worlds" / "runs").mkdir()
    assert files.resolve("runs/a.ply") == tmp_path / "worlds" / "runs" / "a.ply"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("/etc/passwd", "absolute path"),
        ("~/.bashrc", "absolute path"),
        ("../outside.ply", "'..'"),
        ("runs/../../outside.ply", "'..'"),
        ("", "not a file name"),
        (".", "outside the world folder"),
    ],
)
def test_paths_leading_out_of_the_world_dir_are_refused(tmp_path, name, why):
    with pytest.raises(PathRefusedError, match=why):
        WorldFiles(tmp_path / "worlds").resolve(name, for_writing=True)


def test_symbolic_links_leading_out_are_refused_on_the_real_path(tmp_path):
    root, outside = tmp_path / "worlds", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "linked_dir").symlink_to(outside)
    (root / "linked.ply").symlink_to(outside / "victim.ply")
    (root / "inner.ply").symlink_to(root / "real.ply")  # a link that stays inside is fine
    files = WorldFiles(root)
    for name in ("linked_dir/world.ply", "linked.ply"):
        with pytest.raises(PathRefusedError, match="symbolic link"):
            files.resolve(name)
    assert files.resolve("inner.ply") == root / "inner.ply"


def test_allow_any_path_restores_free_paths(tmp_path):
    files = WorldFiles(tmp_path / "worlds", allow_any_path=True)
    assert files.resolve(str(tmp_path / "x.ply")) == tmp_path / "x.ply"
    assert files.resolve("../y.ply") == tmp_path / "worlds" / ".." / "y.ply"


def test_checkpoints_are_confined_to_the_allowed_folders(tmp_path):
    allowed = tmp_path / "checkpoints"
    (allowed / "student").mkdir(parents=True)
    (allowed / "escape").symlink_to(tmp_path)
    assert check_checkpoint("", [allowed]) == ""
    assert check_checkpoint("shipped", []) == "shipped"
    assert check_checkpoint(str(allowed / "student"), [allowed]) == str(allowed / "student")
    for value in ("/etc", str(tmp_path / "other"), str(allowed / "escape")):
        with pytest.raises(PathRefusedError, match="checkpoint_dirs"):
            check_checkpoint(value, [allowed])
    assert check_checkpoint("/etc", [allowed], allow_any_path=True) == "/etc"


# ---------------------------------------------------------------------------- bounded inputs


def forged_png(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR declares ``width`` x ``height`` (a decompression bomb's
    header; its CRC no longer matches)."""
    ok, data = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert ok
    data = bytearray(data.tobytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


def forged_jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    ok, data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8), params)
    assert ok
    data = bytearray(data.tobytes())
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_image_size_is_read_from_the_header(fmt):
    message = rgb_to_compressed(np.zeros((37, 53, 3), np.uint8), fmt)
    assert compressed_image_size(message.data) == (53, 37)
    assert compressed_image_size(forged_png(40000, 30000)) == (40000, 30000)
    assert compressed_image_size(forged_jpeg(65000, 60000)) == (65000, 60000)
    assert compressed_image_size(forged_jpeg(1234, 567, progressive=True)) == (1234, 567)
    for junk in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a" + bytes(30), bytes(100)):
        assert compressed_image_size(junk) is None


def test_compressed_bombs_are_refused_before_decoding(monkeypatch):
    def no_decoding(*args):
        raise AssertionError("cv2.imdecode ran on an image over the limit")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    for data in (forged_png(40000, 30000), forged_jpeg(65000, 60000)):
        message = CompressedImage(format="png", data=data)
        with pytest.raises(ValueError, match="max_input_pixels"):
            compressed_to_rgb(message, max_pixels=MAX_INPUT_PIXELS)
        assert "max_input_pixels" in size_problem(message, MAX_INPUT_PIXELS)
    gif = CompressedImage(format="gif", data=b"GIF89a" + bytes(30))
    with pytest.raises(ValueError, match="cannot be checked"):
        compressed_to_rgb(gif, max_pixels=MAX_INPUT_PIXELS)


def test_declared_sizes_over_the_limit_are_refused_without_their_data():
    huge = Image(width=100_000, height=100_000, encoding="rgb8", step=300_000)  # no data at all
    assert "10000000000 pixels" in size_problem(huge, MAX_INPUT_PIXELS)
    info = CameraInfo(width=2**32 - 1, height=2**32 - 1)
    assert "max_input_pixels" in size_problem(info, MAX_INPUT_PIXELS)
    rgb, depth = rgbd()
    small = numpy_to_image(rgb, "rgb8")
    assert size_problem(small, MAX_INPUT_PIXELS) is None
    for image, dep, cam, what in (
        (huge, None, None, "refused image"),
        (small, huge, None, "refused depth image"),
        (small, depth_to_image(depth), info, "refused camera_info"),
    ):
        with pytest.raises(WorldBuildError, match=what):
            input_frame(image, dep, cam, 60.0, MAX_INPUT_PIXELS)
    frame = input_frame(small, depth_to_image(depth), None, 60.0, MAX_INPUT_PIXELS)
    assert frame.rgb.shape == (H, W, 3)


# ---------------------------------------------------------------------------- untrusted files


class _Payload:
    """Pickles as a call of ``exec`` that writes ``marker``: a checkpoint that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def malicious_pickle(path: Path, marker: Path, wrap: bool = True) -> Path:
    """``torch.save`` a state dict holding :class:`_Payload` to ``path``."""
    payload = _Payload(marker)
    torch.save({"step": 1, "optimizer": payload} if wrap else {"weight": payload}, path)
    return path


def test_the_payload_runs_code_when_unpickled_freely(tmp_path):
    # The control: without weights_only the file below does run code, so the tests after it
    # that see no marker prove the loaders refused it.
    marker = tmp_path / "marker"
    path = malicious_pickle(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_a_malicious_trainer_state_is_not_executed(tmp_path):
    from lyra_core.training.checkpoints import TRAINER_STATE_NAME, read_trainer_state

    marker = tmp_path / "marker"
    folder = tmp_path / "checkpoints" / "step_0000001"
    folder.mkdir(parents=True)
    malicious_pickle(folder / TRAINER_STATE_NAME, marker)
    with pytest.raises(CheckpointError, match="unreadable trainer state"):
        read_trainer_state(folder)
    assert not marker.exists()


def test_a_student_folder_with_pickled_weights_is_refused_and_not_executed(
    tmp_path, tiny_student_checkpoint
):
    from lyra_core.pipelines.student import LyraStudent

    marker = tmp_path / "marker"
    # Pickles where safetensors should be: the usual names of pickled weights.
    bin_folder = shutil.copytree(tiny_student_checkpoint, tmp_path / "bin_weights")
    for weights in (*bin_folder.glob("*/*.safetensors"),):
        weights.unlink()
    malicious_pickle(bin_folder / "vae" / "diffusion_pytorch_model.bin", marker, wrap=False)
    malicious_pickle(bin_folder / "decoder" / "pytorch_model.bin", marker, wrap=False)
    malicious_pickle(bin_folder / "decoder" / "model.pt", marker, wrap=False)
    with pytest.raises(CheckpointError):
        LyraStudent.from_pretrained(bin_folder)
    # A pickle under the safetensors names.
    renamed = shutil.copytree(tiny_student_checkpoint, tmp_path / "renamed")
    for weights in renamed.glob("*/*.safetensors"):
        malicious_pickle(weights, marker, wrap=False)
    with pytest.raises(CheckpointError):
        LyraStudent.from_pretrained(renamed)
    assert not marker.exists()
    LyraStudent.from_pretrained(tiny_student_checkpoint)  # the untouched folder loads


# ---------------------------------------------------------------------------- the node


class Client:
    """Publishers and service clients of the ``lyra_world`` node under test."""

    def __init__(self, node) -> None:
        self.node = node
        self.status: WorldStatus | None = None
        self.image_pub = node.create_publisher(Image, "image", 10)
        self.depth_pub = node.create_publisher(Image, "depth", 10)
        self.info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
        self.sub = node.create_subscription(
            WorldStatus, "/lyra_world/status", self._on_status, LATCHED_QOS
        )
        services = {
            "save": (WorldFile, "save_world"),
            "load": (WorldFile, "load_world"),
            "build": (BuildWorld, "build_world"),
            "render": (RenderView, "render_view"),
            "reset": (Trigger, "reset_world"),
        }
        self.clients = {
            key: node.create_client(srv, f"/lyra_world/{name}")
            for key, (srv, name) in services.items()
        }

    def _on_status(self, msg: WorldStatus) -> None:
        self.status = msg

    def spin_until(self, predicate, timeout: float = 30.0, what: str = "") -> None:
        spin_until(self.node, predicate, timeout, what)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.spin_until(lambda: time.monotonic() >= end, seconds + 1.0)

    def call(self, key: str, request, timeout: float = 30.0):
        return call_service(self.node, self.clients[key], request, timeout)

    def wait_state(self, state: int, timeout: float = 30.0) -> WorldStatus:
        self.spin_until(
            lambda: self.status is not None and self.status.state == state, timeout, f"{state}"
        )
        return self.status

    def render(self):
        intrinsics = Intrinsics(60.0, 60.0, (W - 1) / 2, (H - 1) / 2, W, H)
        request = RenderView.Request(
            pose=matrix_to_pose(np.eye(4)), camera_info=intrinsics_to_camera_info(intrinsics)
        )
        return self.call("render", request)


@pytest.fixture(scope="module")
def ros_node():
    rclpy.init()
    node = rclpy.create_node("node_security_test_client")
    yield node
    node.destroy_node()
    rclpy.shutdown()


@pytest.fixture(scope="module")
def secured(ros_node, tmp_path_factory):
    """``lyra_world`` with config/world.yaml, run in a folder of its own (its default
    ``world_dir`` is ``worlds`` there), ``max_input_pixels`` 10000; the output at the end."""
    folder = tmp_path_factory.mktemp("node")
    args = ("--ros-args", "-p", f"max_input_pixels:={MAX_INPUT_PIXELS}")
    process = start_world_node(config_path("world.yaml"), *args, cwd=folder)
    client = Client(ros_node)
    state = {"process": process, "folder": folder, "worlds": folder / "worlds"}
    yield client, state
    if "output" not in state:
        stop_world_node(process)


def graph_of(node, names: tuple[str, ...]) -> dict[tuple[str, str], set[str]]:
    """``{(node, 'publish' | 'subscribe' | 'reply'): names}`` of running nodes in ``/``."""
    graph = {}
    for name in names:
        calls = {
            "publish": node.get_publisher_names_and_types_by_node,
            "subscribe": node.get_subscriber_names_and_types_by_node,
            "reply": node.get_service_names_and_types_by_node,
        }
        for kind, call in calls.items():
            found = {topic for topic, _ in call(name, "/")}
            if found:
                graph[(name, kind)] = found
    return graph


def policy_permissions(path: Path) -> tuple[set[str], dict[tuple[str, str], set[str]]]:
    """Enclave paths and ``{(node, permission): names}`` that an SROS2 policy file allows."""
    root = ET.parse(path).getroot()
    assert root.tag == "policy" and root.get("version") == "0.2.0"
    enclaves = {enclave.get("path") for enclave in root.iter("enclave")}
    allowed: dict[tuple[str, str], set[str]] = {}
    for profile in root.iter("profile"):
        assert profile.get("ns") == "/"
        for group in list(profile):
            kinds = [k for k in ("publish", "subscribe", "reply", "request") if group.get(k)]
            assert kinds and all(group.get(k) == "ALLOW" for k in kinds), ET.tostring(group)
            for kind in kinds:
                names = {child.text.strip() for child in group}
                allowed.setdefault((profile.get("node"), kind), set()).update(names)
    return enclaves, allowed


def test_the_sros2_policy_names_exactly_the_running_nodes_topics_and_services(secured):
    client, _ = secured
    client.wait_state(WorldStatus.STATE_WAITING)
    nodes = ("lyra_world", "lyra_world_build", "lyra_world_render")
    enclaves, allowed = policy_permissions(POLICY)
    assert enclaves == {"/lyra/lyra_world"}
    # Discovery is gradual: wait until the graph holds everything, then for it to settle.
    graph = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        client.spin_for(0.5)
        previous, graph = graph, graph_of(client.node, nodes)
        if graph == previous and graph.keys() == allowed.keys():
            break
    assert graph == allowed


def build_small_world(client: Client) -> None:
    rgb, depth = rgbd()
    request = BuildWorld.Request(
        use_latest=False, image=numpy_to_image(rgb, "rgb8"), depth=depth_to_image(depth)
    )
    response = client.call("build", request)
    assert response.success, response.message


def test_save_and_load_refuse_paths_outside_the_world_dir(secured, tmp_path):
    client, state = secured
    client.wait_state(WorldStatus.STATE_WAITING)
    build_small_world(client)
    worlds = state["worlds"]
    saved = client.call("save", WorldFile.Request(path="world.ply"))
    assert saved.success and (worlds / "world.ply").is_file(), saved.message
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    (worlds / "out_dir").symlink_to(outside)
    (worlds / "out.ply").symlink_to(victim)
    refusals = {
        str(victim): "absolute path",
        "~/.bashrc": "absolute path",
        "../escape.ply": "'..'",
        "out_dir/world.ply": "symbolic link",
        "out.ply": "symbolic link",
    }
    for name, why in refusals.items():
        for service in ("save", "load"):
            response = client.call(service, WorldFile.Request(path=name))
            assert not response.success, (service, name)
            assert why in response.message and "refused" in response.message, response.message
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert not (state["folder"] / "escape.ply").exists()
    loaded = client.call("load", WorldFile.Request(path="world.ply"))
    assert loaded.success and loaded.gaussian_count == saved.gaussian_count
    assert client.render().success and state["process"].poll() is None


def test_load_world_refuses_a_ply_declaring_absurd_vertex_counts(secured):
    client, state = secured
    data = (state["worlds"] / "world.ply").read_bytes()
    header_end = data.index(b"end_header")
    count = data[:header_end].split(b"element vertex ")[1].split(b"\n")[0]
    (state["worlds"] / "huge.ply").write_bytes(
        data.replace(b"element vertex " + count, b"element vertex 4000000000", 1)
    )
    response = client.call("load", WorldFile.Request(path="huge.ply"))
    assert not response.success and "4000000000 'vertex'" in response.message, response.message
    assert client.render().success and state["process"].poll() is None


def test_inputs_over_max_input_pixels_are_dropped_before_conversion(secured):
    client, state = secured
    assert client.call("reset", Trigger.Request()).success
    client.wait_state(WorldStatus.STATE_WAITING)
    client.spin_until(lambda: client.image_pub.get_subscription_count() > 0, what="the node")
    # Declared 100000x100000 with no data: converting would fail (ERROR state); dropped on
    # arrival they leave the node waiting.
    for _ in range(3):
        client.image_pub.publish(Image(width=100_000, height=100_000, encoding="rgb8"))
        client.depth_pub.publish(Image(width=100_000, height=100_000, encoding="32FC1"))
        client.info_pub.publish(CameraInfo(width=2**32 - 1, height=2**32 - 1))
        client.spin_for(0.3)
    client.spin_for(1.0)
    assert client.status.state == WorldStatus.STATE_WAITING, client.status
    # The absurd camera_info was dropped: the next frame builds with default intrinsics.
    rgb, depth = rgbd()
    client.depth_pub.publish(depth_to_image(depth))
    client.image_pub.publish(numpy_to_image(rgb, "rgb8"))
    assert client.wait_state(WorldStatus.STATE_READY).gaussian_count > 0
    big_rgb, big_depth = rgbd(101, 100)
    request = BuildWorld.Request(
        use_latest=False, image=numpy_to_image(big_rgb, "rgb8"), depth=depth_to_image(big_depth)
    )
    refused = client.call("build", request)
    assert not refused.success and "max_input_pixels (10000)" in refused.message, refused.message
    assert client.render().success
    state["output"] = output = stop_world_node(state["process"])
    for topic in ("image", "depth", "camera_info"):
        assert f"dropped a message on '{topic}'" in output, output
    warnings = [line for line in output.splitlines() if "dropped a message" in line]
    assert len(warnings) <= 4, warnings  # throttled: 9 drops, at most one warning per topic


def test_allow_any_path_warns_at_start_up(ros_node, tmp_path):
    name = "lyra_world_any_path"
    args = ("--ros-args", "-p", "allow_any_path:=true", "-r", f"__node:={name}")
    process = start_world_node("none", *args, cwd=tmp_path)
    statuses = []
    sub = ros_node.create_subscription(WorldStatus, f"/{name}/status", statuses.append, LATCHED_QOS)
    try:
        deadline = time.monotonic() + 60
        while not statuses and time.monotonic() < deadline and process.poll() is None:
            rclpy.spin_once(ros_node, timeout_sec=0.1)
        time.sleep(1.0)  # the warning follows the first status
    finally:
        ros_node.destroy_subscription(sub)
        output = stop_world_node(process)
    assert statuses, output
    assert "allow_any_path is true" in output, output
    assert os.listdir(tmp_path) == [], "the node created files at start-up"
