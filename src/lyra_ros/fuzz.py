"""Random and mutated messages and service requests for the world node's inputs (robustness
checks: test/test_fuzz_node.py, benchmarks/reliability.py).

:class:`MessageFuzzer` makes, from one seed, messages of every type the node subscribes to
(``Image`` on ``image`` and ``depth``, ``CompressedImage``, ``CameraInfo``, ``TFMessage``) and
requests of each of its services: a valid message with a few fields mutated (sizes, steps,
encodings, data lengths, NaN and inf, absurd stamps and frame names, broken PNG/JPEG headers)
or a message of random fields. :func:`fuzz_world_node` publishes and calls them against a
running node over DDS, within a count and a time limit.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import Pose, TransformStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from lyra_core.geometry.cameras import Intrinsics
from lyra_ros.conversions import (
    SUPPORTED_ENCODINGS,
    depth_to_image,
    intrinsics_to_camera_info,
    numpy_to_image,
    rgb_to_compressed,
)
from lyra_ros.srv import BuildWorld, RenderView, WorldFile

__all__ = ["TOPIC_KINDS", "FuzzReport", "MessageFuzzer", "fuzz_world_node"]

TOPIC_KINDS = ("image", "depth", "camera_info", "tf", "compressed")
"""Kinds of input message :meth:`MessageFuzzer.message` makes."""

SERVICE_KINDS = ("render_view", "save_world", "load_world", "build_world", "reset_world")

_UINT32_MAX = 2**32 - 1
_JUNK_TEXT = ("", " ", "..", "/", "\\", "a" * 3000, "ü∂ß", "map\x01", "%s%n", "-1", "nan")
_JUNK_NUMBERS = (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e308, -1e308, 1e-308, 3.4e38)


def _header(rng: random.Random, frames: list[str]) -> Header:
    header = Header(frame_id=rng.choice(frames + list(_JUNK_TEXT)))
    header.stamp.sec = rng.choice((0, 1, rng.randrange(2**31), 2**31 - 1, -(2**31)))
    header.stamp.nanosec = rng.choice((0, rng.randrange(1_000_000_000), _UINT32_MAX))
    return header


class MessageFuzzer:
    """Random and mutated inputs of the world node, reproducible from ``seed``.

    Args:
        seed: Seed of every random choice.
        width, height: Size of the valid images the mutations start from.
        frames: tf frame names the messages use (besides junk ones): the input camera's and the
            world frame, so some transforms connect.
    """

    def __init__(
        self,
        seed: int = 0,
        width: int = 64,
        height: int = 48,
        frames: tuple[str, ...] = ("map", "camera_optical", "base_link"),
    ) -> None:
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        self.frames = list(frames)

    # ------------------------------------------------------------------ valid starting points

    def _rgb(self) -> np.ndarray:
        return self.np_rng.integers(0, 256, (self.height, self.width, 3), dtype=np.uint8)

    def _depth(self) -> np.ndarray:
        depth = self.np_rng.uniform(0.5, 5.0, (self.height, self.width)).astype(np.float32)
        holes = self.np_rng.random(depth.shape) < 0.05
        depth[holes] = self.np_rng.choice(np.array([np.nan, np.inf, -1.0, 0.0], np.float32))
        return depth

    def _intrinsics(self) -> Intrinsics:
        w, h = self.width, self.height
        return Intrinsics(0.9 * w, 0.9 * w, (w - 1) / 2, (h - 1) / 2, w, h)

    # ------------------------------------------------------------------ mutations

    def _mutate_image(self, msg: Image) -> Image:
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            what = rng.randrange(7)
            if what == 0:
                msg.encoding = rng.choice((*SUPPORTED_ENCODINGS, "yuv422", "32FC3", *_JUNK_TEXT))
            elif what == 1:
                wider = min(msg.width + 1, _UINT32_MAX)
                msg.width = rng.choice((0, 1, wider, rng.randrange(1 << 16), _UINT32_MAX))
            elif what == 2:
                smaller = max(msg.height - 1, 0)
                msg.height = rng.choice((0, 1, smaller, rng.randrange(1 << 16), _UINT32_MAX))
            elif what == 3:
                steps = (0, 1, max(msg.step - 1, 0), min(msg.step * 2, _UINT32_MAX), _UINT32_MAX)
                msg.step = rng.choice(steps)
            elif what == 4:
                data = bytes(msg.data)
                cut = rng.randrange(len(data) + 1)
                msg.data = data[:cut] if rng.random() < 0.7 else data + bytes(rng.randrange(999))
            elif what == 5:
                msg.is_bigendian = not msg.is_bigendian
            else:
                msg.header = _header(rng, self.frames)
        return msg

    def _mutate_info(self, msg: CameraInfo) -> CameraInfo:
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            what = rng.randrange(5)
            if what == 0:
                k = list(msg.k)
                k[rng.randrange(9)] = rng.choice(_JUNK_NUMBERS)
                msg.k = k
            elif what == 1:
                msg.width = rng.choice((0, 1, rng.randrange(1 << 16), _UINT32_MAX))
            elif what == 2:
                msg.height = rng.choice((0, 1, rng.randrange(1 << 16), _UINT32_MAX))
            elif what == 3:
                msg.d = [rng.choice(_JUNK_NUMBERS) for _ in range(rng.randrange(20))]
                msg.distortion_model = rng.choice(_JUNK_TEXT)
            else:
                msg.header = _header(rng, self.frames)
        return msg

    def _compressed(self) -> CompressedImage:
        rng = self.rng
        msg = rgb_to_compressed(self._rgb(), rng.choice(("png", "jpeg")))
        data = bytearray(msg.data)
        what = rng.randrange(5)
        if what == 0:  # forged size in the header (PNG IHDR, or anywhere in a JPEG)
            at = 16 if data[:4] == b"\x89PNG" else rng.randrange(2, min(len(data), 600))
            data[at : at + 4] = rng.randrange(1 << 32).to_bytes(4, "big")
        elif what == 1:
            data = data[: rng.randrange(len(data))]
        elif what == 2:
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif what == 3:
            data = bytearray(self.np_rng.integers(0, 256, rng.randrange(2000), dtype=np.uint8))
        msg.data = bytes(data)
        msg.format = rng.choice(("png", "jpeg", "rgb8; png compressed bgr8", *_JUNK_TEXT))
        return msg

    def _transforms(self) -> TFMessage:
        rng = self.rng
        out = TFMessage()
        for _ in range(rng.choice((0, 1, 1, 2, 5, 50))):
            tf = TransformStamped()
            tf.header = _header(rng, self.frames)
            tf.child_frame_id = rng.choice(self.frames + list(_JUNK_TEXT))
            t, q = tf.transform.translation, tf.transform.rotation
            t.x, t.y, t.z = (rng.choice((*_JUNK_NUMBERS, rng.uniform(-5, 5))) for _ in range(3))
            if rng.random() < 0.5:
                q.w = 1.0
            else:
                q.x, q.y, q.z, q.w = (
                    rng.choice((*_JUNK_NUMBERS, rng.uniform(-1, 1))) for _ in "1234"
                )
            out.transforms.append(tf)
        return out

    # ------------------------------------------------------------------ public

    def message(self, kind: str) -> Any:
        """One input message of ``kind`` (:data:`TOPIC_KINDS`); a quarter of them are valid."""
        rng = self.rng
        valid = rng.random() < 0.25
        header = _header(rng, self.frames)
        if kind == "image":
            msg = numpy_to_image(self._rgb(), "rgb8", header)
            return msg if valid else self._mutate_image(msg)
        if kind == "depth":
            msg = depth_to_image(self._depth(), header)
            return msg if valid else self._mutate_image(msg)
        if kind == "camera_info":
            msg = intrinsics_to_camera_info(self._intrinsics(), header)
            return msg if valid else self._mutate_info(msg)
        if kind == "tf":
            return self._transforms()
        if kind == "compressed":
            return self._compressed()
        raise ValueError(f"unknown message kind {kind!r}; expected one of {TOPIC_KINDS}")

    def request(self, kind: str) -> Any:
        """One request of service ``kind`` (:data:`SERVICE_KINDS`)."""
        rng = self.rng
        if kind == "render_view":
            pose = Pose()
            p, q = pose.position, pose.orientation
            p.x, p.y, p.z = (rng.choice((*_JUNK_NUMBERS, rng.uniform(-3, 3))) for _ in range(3))
            q.x, q.y, q.z, q.w = (rng.choice((*_JUNK_NUMBERS, rng.uniform(-1, 1))) for _ in "1234")
            info = intrinsics_to_camera_info(self._intrinsics())
            if rng.random() < 0.75:
                info = self._mutate_info(info)
            return RenderView.Request(pose=pose, camera_info=info, time=rng.choice(_JUNK_NUMBERS))
        if kind in ("save_world", "load_world"):
            names = (
                "fuzz.ply",
                "sub/fuzz.ply",
                "../fuzz.ply",
                str(Path(tempfile.gettempdir()) / "lyra_fuzz_outside.ply"),
                "~/lyra_fuzz.ply",
                ".",
                "a/../../b.ply",
                *_JUNK_TEXT,
            )
            return WorldFile.Request(path=rng.choice(names))
        if kind == "build_world":
            request = BuildWorld.Request(use_latest=rng.random() < 0.3)
            request.image = self.message("image")
            if rng.random() < 0.7:
                request.depth = self.message("depth")
            if rng.random() < 0.5:
                request.camera_info = self.message("camera_info")
            request.source = rng.choice(("", "depth", "auto", "lyra", "fusion", *_JUNK_TEXT))
            return request
        if kind == "reset_world":
            return Trigger.Request()
        raise ValueError(f"unknown service {kind!r}; expected one of {SERVICE_KINDS}")


@dataclass
class FuzzReport:
    """What :func:`fuzz_world_node` sent and how the node answered."""

    messages_sent: dict[str, int] = field(default_factory=dict)
    requests_sent: dict[str, int] = field(default_factory=dict)
    requests_answered: int = 0
    requests_unanswered: int = 0
    seconds: float = 0.0

    @property
    def total_messages(self) -> int:
        return sum(self.messages_sent.values())

    @property
    def total_requests(self) -> int:
        return sum(self.requests_sent.values())


_SERVICE_TYPES = {
    "render_view": RenderView,
    "save_world": WorldFile,
    "load_world": WorldFile,
    "build_world": BuildWorld,
    "reset_world": Trigger,
}


def fuzz_world_node(
    node: Node,
    world: str = "/lyra_world",
    *,
    topics: dict[str, str] | None = None,
    messages: int = 500,
    requests: int = 60,
    seconds: float = 40.0,
    rate_hz: float = 100.0,
    seed: int = 0,
    request_timeout: float = 10.0,
    alive: Callable[[], bool] = lambda: True,
) -> FuzzReport:
    """Publish ``messages`` fuzzed input messages and call ``requests`` fuzzed service requests.

    Messages of each kind in ``topics`` (kind -> topic; default: the node's raw inputs and
    ``/tf``) go round-robin at ``rate_hz`` (the node subscribes with a queue of one: a burst
    would mostly be dropped before its callbacks), with one service request (answered, or timed
    out after ``request_timeout`` s) after every ``messages // requests`` of them. Stops early
    after ``seconds`` or when ``alive()`` turns false.

    Args:
        node: This side's node (spun here while waiting for answers).
        world: The world node's fully qualified name.
    """
    import rclpy

    topics = topics or {
        "image": "image",
        "depth": "depth",
        "camera_info": "camera_info",
        "tf": "/tf",
    }
    kinds = {"image": Image, "depth": Image, "camera_info": CameraInfo, "tf": TFMessage}
    kinds["compressed"] = CompressedImage
    publishers = {
        kind: node.create_publisher(kinds[kind], topic, 10) for kind, topic in topics.items()
    }
    clients = {
        name: node.create_client(srv, f"{world}/{name}") for name, srv in _SERVICE_TYPES.items()
    }
    fuzzer = MessageFuzzer(seed)
    report = FuzzReport()
    every = max(1, messages // max(requests, 1))
    start = time.monotonic()
    order = list(topics)
    try:
        for i in range(messages):
            if time.monotonic() - start > seconds or not alive():
                break
            kind = order[i % len(order)]
            publishers[kind].publish(fuzzer.message(kind))
            report.messages_sent[kind] = report.messages_sent.get(kind, 0) + 1
            next_at = start + (i + 1) / rate_hz
            rclpy.spin_once(node, timeout_sec=0.0)
            while time.monotonic() < next_at:
                rclpy.spin_once(node, timeout_sec=max(0.0, min(0.01, next_at - time.monotonic())))
            if i % every == every - 1 and report.total_requests < requests:
                name = fuzzer.rng.choice(list(clients))
                report.requests_sent[name] = report.requests_sent.get(name, 0) + 1
                if not clients[name].wait_for_service(timeout_sec=request_timeout):
                    report.requests_unanswered += 1
                    continue
                future = clients[name].call_async(fuzzer.request(name))
                deadline = time.monotonic() + request_timeout
                while not future.done() and time.monotonic() < deadline:
                    rclpy.spin_once(node, timeout_sec=0.02)
                if future.done() and future.result() is not None:
                    report.requests_answered += 1
                else:
                    report.requests_unanswered += 1
    finally:
        for publisher in publishers.values():
            node.destroy_publisher(publisher)
        for client in clients.values():
            node.destroy_client(client)
        report.seconds = time.monotonic() - start
    return report
