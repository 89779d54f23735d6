"""Reliability of the world node's exposed surface: bad inputs, an image flood, fuzzing, kill -9.

One world node runs as its own process (``python -m lyra_ros.world_node``, a temporary config:
``world_source depth``, ``refine true`` so frames reach the mapping worker, one 320x240
simulated camera at 10 Hz, ``max_input_pixels`` 640x480, in a temporary folder that holds its
``world_dir``) on an isolated DDS setup (localhost discovery, a domain of its own, a temporary
log folder). This process is the peer:

1. **Bad inputs**: one class at a time (service requests with paths leading out of the world
   folder, PLYs with absurd headers, truncated or NaN, oversized and malformed images, depth
   and camera_info, NaN poses and tf, oversized renders and builds), each followed by a check
   that the node process is alive; its answer or state says how it was handled. Classes that
   need no node (a PNG decompression bomb before decoding, a malicious pickle in a checkpoint
   folder, a ``lyra_checkpoint`` outside ``checkpoint_dirs`` at start-up) run here.
2. **Image flood**: 640x480 rgb8 images and 32FC1 depth at ``--flood-rate`` Hz for
   ``--flood-seconds`` (posed by a static tf, so the map keeps integrating them) while the
   simulated camera renders; the node's resident memory (``/proc/<pid>/status`` VmRSS) is
   sampled every 5 s. Start = just before the flood (world built, one render done).
3. **Fuzzing**: ``--fuzz-messages`` random and mutated messages of every subscribed type and
   ``--fuzz-requests`` random service requests (:func:`lyra_ros.fuzz.fuzz_world_node`); then a
   build and a render must succeed.
4. **kill -9 during saves**: not rerun; the figures of ``kill_during_save_cpu.json``
   (benchmarks/kill_during_save.py) are copied in.

Prints a table and writes ``reliability_cpu.json`` to ``--out``.

Usage: python benchmarks/reliability.py [--flood-seconds 600] [--flood-rate 30]
       [--fuzz-messages 2000] [--fuzz-requests 200] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from report import write_report

ESCAPE_TARGET = Path(tempfile.gettempdir()) / "lyra_escape.ply"
"""An absolute path outside the world folder that save_world must refuse."""

NODE = "lyra_world_reliability"
W, H = 640, 480
CONFIG = f"""
{NODE}:
  ros__parameters:
    world_frame: map
    world_source: depth
    depth_stride: 2
    refine: true
    max_input_pixels: {W * H}
    max_render_pixels: 1000000
    cameras: [robot]
    camera:
      robot:
        frame_id: robot_optical
        width: 320
        height: 240
        rate: 10.0
        topic: sim/robot/image
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def isolate_dds(log_dir: Path) -> None:
    """Keep DDS on this machine, in a domain of its own; large-data Fast DDS profile."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 70))
    os.environ["ROS_LOG_DIR"] = str(log_dir)
    from lyra_ros.config import use_large_data_transport

    use_large_data_transport()


class Peer:
    """This process's node: publishers of the node's inputs, its service clients."""

    def __init__(self) -> None:
        import rclpy
        from geometry_msgs.msg import TransformStamped
        from sensor_msgs.msg import CameraInfo, Image
        from std_srvs.srv import Trigger
        from tf2_msgs.msg import TFMessage

        from lyra_ros.msg import WorldStatus
        from lyra_ros.qos import LATCHED_QOS, TF_STATIC_QOS
        from lyra_ros.srv import BuildWorld, RenderView, WorldFile

        self.rclpy = rclpy
        self.node = node = rclpy.create_node("reliability_peer")
        self.status = None
        self.image = node.create_publisher(Image, "image", 10)
        self.depth = node.create_publisher(Image, "depth", 10)
        self.info = node.create_publisher(CameraInfo, "camera_info", 10)
        self.tf = node.create_publisher(TFMessage, "/tf", 100)
        self.tf_static = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self.sub = node.create_subscription(
            WorldStatus, f"/{NODE}/status", self._on_status, LATCHED_QOS
        )
        types = {
            "save_world": WorldFile,
            "load_world": WorldFile,
            "build_world": BuildWorld,
            "render_view": RenderView,
            "reset_world": Trigger,
        }
        self.clients = {n: node.create_client(t, f"/{NODE}/{n}") for n, t in types.items()}
        self.TransformStamped, self.TFMessage = TransformStamped, TFMessage

    def _on_status(self, msg) -> None:
        self.status = msg

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.02)

    def spin_until(self, predicate, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.02)
            if predicate():
                return True
        return False

    def call(self, name: str, request, timeout: float = 60.0):
        client = self.clients[name]
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"{name} not available")
        future = client.call_async(request)
        if not self.spin_until(future.done, timeout):
            raise RuntimeError(f"{name}: no answer in {timeout} s")
        return future.result()

    def transform(self, child: str, static: bool = False) -> None:
        from lyra_ros.conversions import matrix_to_transform

        tf = self.TransformStamped()
        tf.header.frame_id, tf.child_frame_id = "map", child
        tf.header.stamp = self.node.get_clock().now().to_msg()
        tf.transform = matrix_to_transform(np.eye(4))
        (self.tf_static if static else self.tf).publish(self.TFMessage(transforms=[tf]))


def frame(width: int = W, height: int = H, seed: int = 0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = rng.uniform(1.5, 4.0, (height, width)).astype(np.float32)
    return rgb, depth


def render_request(width: int = 320, height: int = 240, pose: np.ndarray | None = None):
    from lyra_core.geometry.cameras import Intrinsics
    from lyra_ros.conversions import intrinsics_to_camera_info, matrix_to_pose
    from lyra_ros.srv import RenderView

    f = 0.9 * width
    intrinsics = Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)
    pose = np.eye(4) if pose is None else pose
    return RenderView.Request(
        pose=matrix_to_pose(pose), camera_info=intrinsics_to_camera_info(intrinsics)
    )


def build_request(width: int = W, height: int = H):
    from lyra_ros.conversions import depth_to_image, numpy_to_image
    from lyra_ros.srv import BuildWorld

    rgb, depth = frame(width, height)
    return BuildWorld.Request(
        use_latest=False, image=numpy_to_image(rgb, "rgb8"), depth=depth_to_image(depth)
    )


# ------------------------------------------------------------------------------ bad inputs


def bad_input_classes(peer: Peer, worlds: Path, scratch: Path) -> list[tuple[str, object]]:
    """``(class, check)``: each check sends one class of bad input and returns
    ``(handled, what happened)``."""
    from sensor_msgs.msg import CameraInfo, Image

    from lyra_ros.conversions import depth_to_image, numpy_to_image
    from lyra_ros.srv import WorldFile

    def refused(service: str, path: str, why: str):
        def check():
            response = peer.call(service, WorldFile.Request(path=path))
            return (not response.success and why in response.message), response.message

        return check

    good = worlds / "good.ply"

    def ply_variant(name: str, edit) -> str:
        (worlds / name).write_bytes(edit(good.read_bytes()))
        return name

    def huge_header(data: bytes) -> bytes:
        count = data.split(b"element vertex ")[1].split(b"\n")[0]
        return data.replace(b"element vertex " + count, b"element vertex 4000000000", 1)

    def nan_vertex(data: bytes) -> bytes:
        start = data.index(b"end_header\n") + len(b"end_header\n")
        return data[:start] + np.float32(np.nan).tobytes() + data[start + 4 :]

    outside = scratch / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "victim.txt").write_text("keep")
    if not (worlds / "link").exists():
        (worlds / "link").symlink_to(outside)

    def state_after(publish, expect: set[int], error: str = "", settle: float = 1.5):
        """Publish, then the node's state must be in ``expect`` and its error hold ``error``."""

        def check():
            publish()
            peer.spin_for(settle)
            state, text = peer.status.state, peer.status.error
            return state in expect and error in text, f"state {state}, error {text!r}"

        return check

    def after_reset(check):
        def run_check():
            if not peer.call("reset_world", _trigger()).success:
                return False, "reset_world refused"
            peer.spin_for(0.5)
            return check()

        return run_check

    rgb, depth = frame(64, 48)

    def bad_data():
        msg = numpy_to_image(rgb, "rgb8")
        msg.data = bytes(msg.data)[:100]
        peer.depth.publish(depth_to_image(depth))
        peer.image.publish(msg)

    def bad_encoding():
        msg = Image(width=64, height=48, encoding="yuv422", step=128, data=bytes(64 * 48 * 2))
        peer.depth.publish(depth_to_image(depth))
        peer.image.publish(msg)

    def huge_declared():
        for _ in range(3):
            peer.image.publish(Image(width=100_000, height=100_000, encoding="rgb8"))
            peer.depth.publish(Image(width=100_000, height=100_000, encoding="32FC1"))
            peer.info.publish(CameraInfo(width=2**32 - 1, height=2**32 - 1))
            peer.spin_for(0.2)

    def nan_tf():
        tf = peer.TransformStamped()
        tf.header.frame_id, tf.child_frame_id = "map", "robot_optical"
        tf.header.stamp = peer.node.get_clock().now().to_msg()
        tf.transform.translation.x = math.nan  # and a zero quaternion
        peer.tf.publish(peer.TFMessage(transforms=[tf]))

    def nan_render():
        request = render_request()
        request.pose.position.x = math.nan
        response = peer.call("render_view", request)
        return not response.success, response.message

    def huge_render():
        response = peer.call("render_view", render_request(100_000, 100_000))
        return not response.success and "max_render_pixels" in response.message, response.message

    def huge_build():
        response = peer.call("build_world", build_request(W + 1, H))
        return not response.success and "max_input_pixels" in response.message, response.message

    ready = {2}  # the world stays
    waiting, error = {0}, {3}  # no world: still waiting; or the build from it failed
    return [
        ("save_world: absolute path", refused("save_world", str(ESCAPE_TARGET), "absolute")),
        ("save_world: ~/.bashrc", refused("save_world", "~/.bashrc", "absolute")),
        ("save_world: '..' out of world_dir", refused("save_world", "../escape.ply", "'..'")),
        ("save_world: symlink out of world_dir", refused("save_world", "link/x.ply", "symbolic")),
        ("load_world: absolute path", refused("load_world", "/etc/passwd", "absolute")),
        ("load_world: symlink out of world_dir", refused("load_world", "link/victim.txt", "sym")),
        (
            "load_world: PLY declaring 4e9 vertices",
            refused("load_world", ply_variant("huge.ply", huge_header), "4000000000"),
        ),
        (
            "load_world: truncated PLY",
            refused("load_world", ply_variant("cut.ply", lambda d: d[: len(d) // 2]), "trunc"),
        ),
        (
            "load_world: NaN in a PLY",
            refused("load_world", ply_variant("nan.ply", nan_vertex), "vertex 0"),
        ),
        ("render_view: NaN pose", nan_render),
        ("render_view: 100000x100000", huge_render),
        ("build_world: image over max_input_pixels", huge_build),
        ("tf: NaN translation, zero quaternion", state_after(nan_tf, ready, settle=0.5)),
        (
            "image/depth/camera_info declaring 1e10 px, no data",
            after_reset(state_after(huge_declared, waiting)),
        ),
        (
            "image: data shorter than height*step",
            after_reset(state_after(bad_data, error, "image data has")),
        ),
        (
            "image: unsupported encoding yuv422",
            after_reset(state_after(bad_encoding, error, "yuv422")),
        ),
    ]


def _trigger():
    from std_srvs.srv import Trigger

    return Trigger.Request()


def offline_classes(scratch: Path) -> list[tuple[str, bool, str]]:
    """Classes checked in this process: ``(class, handled, what happened)``."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    from lyra_core.training.checkpoints import read_trainer_state
    from lyra_core.utils.errors import CheckpointError
    from lyra_ros.conversions import compressed_to_rgb

    rows = []
    _, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(png.tobytes())
    data[16:24] = (40000).to_bytes(4, "big") + (30000).to_bytes(4, "big")
    try:
        compressed_to_rgb(CompressedImage(format="png", data=bytes(data)), max_pixels=W * H)
        rows.append(("CompressedImage: PNG header 40000x30000", False, "decoded"))
    except ValueError as err:
        rows.append(("CompressedImage: PNG header 40000x30000", True, str(err)))

    marker = scratch / "pickle_ran"
    folder = scratch / "checkpoints" / "step_0000001"
    folder.mkdir(parents=True, exist_ok=True)
    code = f"open({str(marker)!r}, 'w').write('ran')"
    torch.save({"step": 1, "optimizer": _Payload(code)}, folder / "trainer.pt")
    try:
        read_trainer_state(folder)
        handled, what = False, "loaded"
    except CheckpointError as err:
        handled, what = not marker.exists(), f"{str(err)[-80:]}; code ran: {marker.exists()}"
    rows.append(("checkpoint: malicious pickle trainer.pt", handled, what))

    command = [sys.executable, "-m", "lyra_ros.world_node", "--config", "none", "--ros-args"]
    command += ["-p", "lyra_checkpoint:=/etc", "-r", "__node:=lyra_world_bad_checkpoint"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=scratch,
    )
    line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    line = line.replace(str(scratch.resolve()), "<tmp>").replace(str(scratch), "<tmp>")
    rows.append(
        (
            "start-up: lyra_checkpoint outside checkpoint_dirs",
            result.returncode == 2 and "checkpoint_dirs" in line,
            f"exit {result.returncode}: {line[:100]}",
        )
    )
    return rows


class _Payload:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


# ------------------------------------------------------------------------------ flood, fuzz


def flood(peer: Peer, pid: int, seconds: float, rate: float) -> dict:
    """Publish 640x480 rgb8 + 32FC1 depth at ``rate`` Hz for ``seconds``; sample RSS."""
    from std_msgs.msg import Header

    from lyra_ros.conversions import depth_to_image, numpy_to_image

    rgb, depth = frame()
    samples = [(0.0, rss_mb(pid), peer.status.gaussian_count)]
    start = time.monotonic()
    sent, next_sample = 0, 5.0
    while (elapsed := time.monotonic() - start) < seconds:
        header = Header(frame_id="camera_optical")
        header.stamp = peer.node.get_clock().now().to_msg()
        peer.depth.publish(depth_to_image(depth, header))
        peer.image.publish(numpy_to_image(rgb, "rgb8", header))
        peer.transform("robot_optical")
        sent += 1
        if elapsed >= next_sample:
            samples.append((round(elapsed, 1), rss_mb(pid), peer.status.gaussian_count))
            next_sample += 5.0
        peer.spin_for(max(0.0, start + sent / rate - time.monotonic()))
    samples.append((round(time.monotonic() - start, 1), rss_mb(pid), peer.status.gaussian_count))
    rss = [mb for _, mb, _ in samples]
    after_minute = next((mb for t, mb, _ in samples if t >= 60), rss[-1])
    window = min(120.0, seconds / 3)  # the trend without the map steps' peaks: window medians
    first = [mb for t, mb, _ in samples if t <= window]
    last = [mb for t, mb, _ in samples if t >= samples[-1][0] - window]
    return {
        "seconds": round(time.monotonic() - start, 1),
        "frames_published": sent,
        "rate_hz": round(sent / seconds, 1),
        "frame": f"{W}x{H} rgb8 + 32FC1 depth",
        "rss_mb_start": round(rss[0], 1),
        "rss_mb_after_first_minute": round(after_minute, 1),
        "rss_mb_end": round(rss[-1], 1),
        "rss_mb_max": round(max(rss), 1),
        "rss_window_s": window,
        "rss_mb_median_first_window": round(statistics.median(first), 1),
        "rss_mb_median_last_window": round(statistics.median(last), 1),
        "map_gaussians_start": samples[0][2],
        "map_gaussians_end": samples[-1][2],
        "samples_s_rss_mb_gaussians": [(t, round(mb, 1), n) for t, mb, n in samples],
    }


def run(args: argparse.Namespace) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="lyra-reliability-"))
    isolate_dds(scratch / "ros_log")
    import rclpy

    from lyra_ros.fuzz import fuzz_world_node
    from lyra_ros.srv import WorldFile

    (scratch / "node.yaml").write_text(CONFIG)
    log = open(scratch / "node.log", "w")  # noqa: SIM115 (open for the node's whole life)
    node_cmd = [sys.executable, "-m", "lyra_ros.world_node", "--config", "node.yaml"]
    node_cmd += ["--ros-args", "-r", f"__node:={NODE}"]
    process = subprocess.Popen(node_cmd, cwd=scratch, stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    peer = Peer()
    report: dict = {}
    try:
        if not peer.spin_until(lambda: peer.status is not None, 120):
            raise RuntimeError("the world node did not start")
        peer.transform("camera_optical", static=True)
        built = peer.call("build_world", build_request(), timeout=120)
        assert built.success, built.message
        assert peer.call("save_world", WorldFile.Request(path="good.ply")).success
        worlds = scratch / "worlds"

        rows = []
        for name, check in bad_input_classes(peer, worlds, scratch):
            try:
                handled, what = check()
            except Exception as err:  # a timeout: the node did not answer
                handled, what = False, f"{type(err).__name__}: {err}"
            alive = process.poll() is None
            what = what.replace(str(scratch), "<tmp>")  # no paths of this machine in the JSON
            rows.append({"class": name, "handled": handled, "node_alive": alive, "result": what})
            print(f"  {name:<52} {'ok' if handled else 'NOT HANDLED'}  alive={alive}")
            if not alive:
                break
        for name, handled, what in offline_classes(scratch):
            what = what.replace(str(scratch), "<tmp>")
            rows.append({"class": name, "handled": handled, "node_alive": None, "result": what})
            print(f"  {name:<52} {'ok' if handled else 'NOT HANDLED'}  (in-process)")
        outside_intact = (scratch / "outside" / "victim.txt").read_text() == "keep"
        report["bad_inputs"] = {
            "classes": len(rows),
            "handled": sum(r["handled"] for r in rows),
            "crashes": int(process.poll() is not None),
            "files_outside_world_dir_untouched": outside_intact and not ESCAPE_TARGET.exists(),
            "rows": rows,
        }

        built = peer.call("build_world", build_request(), timeout=120)
        peer.call("render_view", render_request())
        print(f"image flood: {args.flood_seconds:.0f} s at {args.flood_rate:.0f} Hz ...")
        report["flood"] = flood(peer, process.pid, args.flood_seconds, args.flood_rate)
        report["flood"]["node_alive"] = process.poll() is None
        report["flood"]["render_after"] = peer.call("render_view", render_request()).success
        status = peer.status
        report["flood"]["map_frames_integrated"] = status.frames_integrated
        report["flood"]["map_frames_dropped"] = status.frames_dropped

        rss_before = rss_mb(process.pid)
        fuzz = fuzz_world_node(
            peer.node,
            f"/{NODE}",
            messages=args.fuzz_messages,
            requests=args.fuzz_requests,
            seconds=args.fuzz_seconds,
            seed=args.seed,
            alive=lambda: process.poll() is None,
        )
        alive = process.poll() is None
        rebuilt = peer.call("build_world", build_request(), timeout=120) if alive else None
        while rebuilt is not None and "busy" in rebuilt.message:
            peer.spin_for(0.5)
            rebuilt = peer.call("build_world", build_request(), timeout=120)
        view = peer.call("render_view", render_request()) if alive else None
        report["fuzz"] = {
            "messages_sent": fuzz.messages_sent,
            "messages_total": fuzz.total_messages,
            "requests_sent": fuzz.requests_sent,
            "requests_answered": fuzz.requests_answered,
            "requests_unanswered": fuzz.requests_unanswered,
            "seconds": round(fuzz.seconds, 1),
            "node_alive": alive,
            "build_and_render_after": bool(rebuilt and rebuilt.success and view and view.success),
            "rss_mb_before": round(rss_before, 1),
            "rss_mb_after": round(rss_mb(process.pid), 1) if alive else None,
        }
    finally:
        peer.node.destroy_node()
        rclpy.shutdown()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
    report["node_exit_code"] = process.returncode
    output = (scratch / "node.log").read_text()
    report["node_tracebacks"] = output.count("Traceback")
    if process.returncode != 0:  # keep what the node said last
        report["node_log_tail"] = output.splitlines()[-30:]
    shutil.rmtree(scratch, ignore_errors=True)
    return report


def kill_figures(path: Path) -> dict | None:
    """The kill -9 figures of benchmarks/kill_during_save.py's JSON (not rerun here)."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    atomic = data["atomic"]
    return {
        "source": path.name,
        "date": data["date"],
        "world_file_mb": data["world_file_mb"],
        "saves_killed": sum(row["saves_killed"] for row in atomic),
        "target_old_or_new": sum(row["target_old_or_new"] for row in atomic),
        "target_torn_or_missing": sum(row["target_torn_or_missing"] for row in atomic),
        "temp_files_after_sweep": data["litter"]["temp_files_after_sweep"],
        "naive_writer_torn_or_missing": data["naive_baseline"]["target_torn_or_missing"],
        "naive_writer_saves_killed": data["naive_baseline"]["saves_killed"],
    }


def print_table(report: dict) -> None:
    bad, flood_, fuzz, kill = (report.get(k) for k in ("bad_inputs", "flood", "fuzz", "kill_9"))
    print("\n| check | result |\n|---|---|")
    print(
        f"| bad-input classes | {bad['handled']}/{bad['classes']} handled as designed, "
        f"{bad['crashes']} crashes |"
    )
    print(
        f"| image flood {flood_['seconds']:.0f} s ({flood_['frames_published']} frames, "
        f"{flood_['frame']}) | RSS {flood_['rss_mb_start']:.0f} MB at start, "
        f"{flood_['rss_mb_end']:.0f} MB at end (max {flood_['rss_mb_max']:.0f}; medians of "
        f"the first and last {flood_['rss_window_s']:.0f} s "
        f"{flood_['rss_mb_median_first_window']:.0f} and "
        f"{flood_['rss_mb_median_last_window']:.0f}); "
        f"alive {flood_['node_alive']} |"
    )
    print(
        f"| fuzzing | {fuzz['messages_total']} messages + {sum(fuzz['requests_sent'].values())} "
        f"requests ({fuzz['requests_answered']} answered); alive {fuzz['node_alive']}, "
        f"build+render after {fuzz['build_and_render_after']} |"
    )
    print(
        f"| node shutdown after all of it (SIGINT) | exit code {report['node_exit_code']}, "
        f"{report['node_tracebacks']} tracebacks in its log |"
    )
    if kill:
        print(
            f"| kill -9 during saves | {kill['saves_killed']} killed: "
            f"{kill['target_old_or_new']} old-or-new, {kill['target_torn_or_missing']} torn; "
            f"{kill['temp_files_after_sweep']} temp files after the sweep |"
        )


def _relative(value):
    """Paths as relative ones (no paths of this machine in the JSON)."""
    return os.path.relpath(value) if isinstance(value, Path) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood-seconds", type=float, default=600.0, help="image flood length")
    parser.add_argument("--flood-rate", type=float, default=30.0, help="flood frames per second")
    parser.add_argument("--fuzz-messages", type=int, default=2000)
    parser.add_argument("--fuzz-requests", type=int, default=200)
    parser.add_argument("--fuzz-seconds", type=float, default=120.0, help="fuzzing time limit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--kill-json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "kill_during_save_cpu.json",
        help="kill_during_save.py's result, whose figures are copied in",
    )
    args = parser.parse_args()
    started = time.monotonic()
    report = {
        "benchmark": "reliability",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.machine(),
        "cpu_count": os.cpu_count(),
        "args": {k: _relative(v) for k, v in vars(args).items()},
        **run(args),
        "kill_9": kill_figures(args.kill_json),
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    print_table(report)
    write_report(args.out, "reliability_cpu.json", report)


if __name__ == "__main__":
    main()
