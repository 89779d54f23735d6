"""GEN3C, the teacher: camera-controlled video diffusion from one image and its 3D cache.

    pipe = Gen3CPipeline.from_pretrained("models/gen3c", offload=True)  # bf16 on CUDA
    out = pipe(image, depth, K, cameras, generator=torch.Generator().manual_seed(0))
    out.latents      # (1, 16, T', h, w) float32 normalised latents of the trajectory
    out.frames       # (T, 3, H, W) float32 decoded frames in [0, 1]
    out.cache_rgb    # (T, 3, H, W) float32 the 3D cache rendered along the trajectory, [0, 1]
    out.cache_mask   # (T, H, W) bool, where the cache covers the view
    out.cache_depth  # (T, H, W) float32 z-depth of those renders, meters (0: uncovered)

:meth:`Gen3CPipeline.__call__` takes ``image`` (3, H, W) float in [0, 1]; ``depth`` (H, W) meters
along the optical axis (0, NaN, inf: unknown); ``K`` (3, 3) pixels; ``cameras``
(:class:`~lyra_core.geometry.cameras.Cameras`: T camera-to-world poses, OpenCV axes, meters, image
size W x H; camera 0 is the input view unless ``camtoworld`` gives its pose); ``generator``;
``num_inference_steps`` (35) and ``guidance_scale`` (1.0). T - 1 must be a multiple of the VAE's
temporal factor (8) and H, W of 16 (VAE 8 x patch 2): 121 x 704 x 1280 as GEN3C/Lyra, anything
smaller for tests. :meth:`Gen3CPipeline.tiny` builds a random tiny teacher (tests).

Steps (GEN3C as Lyra ran it, with diffusers' Cosmos-1.0 Video2World preconditioning):

1. **3D cache**: the image unprojected with its depth (one Gaussian per pixel,
   :func:`lyra_core.pipelines.cache3d.cache_gaussians`) rendered at every camera over black
   (:func:`~lyra_core.pipelines.cache3d.render_views`): the warped video, its mask
   (alpha > 0.5) and its depth. GEN3C reads two cache buffers; a single image fills the first,
   the second is zeros.
2. **Conditioning**: latent frame 0 is the VAE latent of the input image (``augment_sigma`` =
   0.001 of noise, marked by the condition mask); the pose latents are, per buffer,
   VAE(warped video in [-1, 1]) and VAE(mask x 2 - 1 as 3 channels): 2 x (16 + 16) = 64
   channels. The transformer reads ``[x_t, condition mask, pose latents, padding mask]``
   (:func:`lyra_core.models.gen3c.transformer_inputs`).
3. **Sampling**: EDM (``sigma_data`` 0.5) with diffusers' ``EDMEulerScheduler`` (Karras sigmas
   80 -> 0.0002, rho 7, last step to sigma 0), ``num_inference_steps`` network evaluations per
   branch. Per step: input ``c_in x``, noise label ``c_noise = log(sigma) / 4``, denoised
   ``x0 = c_skip x + c_out F``; the condition frame's input is its clean latent plus
   ``augment_sigma`` noise, rescaled to ``c_in(augment_sigma)``, and its ``x0`` is replaced by
   that latent (both only while sigma > ``augment_sigma``, as diffusers' Cosmos pipeline does).
   Guidance: ``x0 = cond + g (cond - uncond)``, where the unconditional branch reads the
   negative-prompt embedding and ZERO pose latents (the condition frame stays); with g = 0 the
   unconditional branch is skipped.
4. **Output**: the final latents as the VAE normalises them (``(z - mean) / std``, the
   :meth:`VideoVAE.normalize` convention: the diffusion runs on ``sigma_data`` times that, and
   Lyra-1's stored generator latents are that 0.5x version) and the decoded frames.

Memory (docs/teacher.md): bf16 on CUDA; with ``offload=True`` the VAE and the transformer sit on
the CPU except while they run; the VAE encodes and decodes ``vae_batch_size`` videos at a time;
attention is PyTorch SDPA (diffusers' default). Text: the prompt is empty, so both T5 embeddings
are constants read from ``text_embeddings.safetensors`` (``lyra teacher encode-text``); T5 is
never loaded here.

A teacher folder (:meth:`Gen3CPipeline.from_pretrained` / :meth:`~Gen3CPipeline.save_pretrained`)::

    transformer/                  diffusers CosmosTransformer3DModel (lyra import-teacher)
    vae/                          diffusers AutoencoderKLCosmos folder, or the released
                                  Cosmos-Tokenize1-CV8x8x8-720p files (encoder.jit, ...)
    text_embeddings.safetensors   prompt_embeds, negative_prompt_embeds (1, 512, 1024)
    scheduler/                    optional EDMEulerScheduler config (default: GEN3C's)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.models.gen3c import (
    TEXT_EMBEDDINGS_NAME,
    Gen3CTransformerConfig,
    build_transformer,
    load_text_embeddings,
    load_transformer,
    save_text_embeddings,
    transformer_inputs,
    unfolded_config,
    write_transformer_folder,
)
from lyra_core.models.modeling_utils import (
    default_device_dtype,
    on_device,
    write_folder_atomically,
)
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.cache3d import (
    CACHE_BACKGROUND,
    DEFAULT_BATCH_SIZE,
    cache_gaussians,
    render_views,
)
from lyra_core.utils.errors import CheckpointError

__all__ = [
    "GEN3C_FPS",
    "GEN3C_HEIGHT",
    "GEN3C_NUM_FRAMES",
    "GEN3C_WIDTH",
    "SCHEDULER_CONFIG",
    "Gen3COutput",
    "Gen3CPipeline",
    "make_scheduler",
]

GEN3C_HEIGHT, GEN3C_WIDTH, GEN3C_NUM_FRAMES, GEN3C_FPS = 704, 1280, 121, 24
SCHEDULER_CONFIG = {
    "sigma_max": 80.0,
    "sigma_min": 0.0002,
    "sigma_data": 0.5,
    "sigma_schedule": "karras",
    "rho": 7.0,
    "prediction_type": "epsilon",
    "final_sigmas_type": "zero",
}
"""``EDMEulerScheduler`` arguments of GEN3C's sampling as Lyra ran it."""
NUM_BUFFERS = 2
"""3D-cache buffers GEN3C reads (one image: the second is zeros)."""


def make_scheduler(**changes):
    """diffusers' ``EDMEulerScheduler`` with :data:`SCHEDULER_CONFIG` (``changes`` override)."""
    from diffusers import EDMEulerScheduler

    return EDMEulerScheduler(**(SCHEDULER_CONFIG | changes))


@dataclass
class Gen3COutput:
    """The teacher's output for one trajectory (all on the CPU).

    Attributes:
        latents: (1, 16, T', h, w) float32 normalised latents (:meth:`VideoVAE.normalize`).
        frames: (T, 3, H, W) float32 decoded frames in [0, 1].
        cache_rgb: (T, 3, H, W) float32 3D-cache renders in [0, 1] (black where uncovered).
        cache_mask: (T, H, W) bool cache coverage.
        cache_depth: (T, H, W) float32 z-depth of the cache renders, meters (0 where
            uncovered).
    """

    latents: Tensor
    frames: Tensor
    cache_rgb: Tensor
    cache_mask: Tensor
    cache_depth: Tensor


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _cast(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` in ``dtype``, except the submodules diffusers keeps in float32
    (``_keep_in_fp32_modules``: the transformer's learnable position embedding)."""
    if all(p.dtype == dtype for p in model.parameters()):
        return model
    nn.Module.to(model, dtype)  # diffusers' ``to`` would warn about the float32 modules
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if any(part in keep for part in name.split(".")):
            nn.Module.float(module)
    return model


class Gen3CPipeline:
    """GEN3C's transformer, its VAE and the constant text embeddings (see the module docstring).

    Args:
        transformer: from :func:`lyra_core.models.gen3c.load_transformer` (or
            :func:`~lyra_core.models.gen3c.build_transformer`), or any module with the same
            call and a ``config`` with ``concat_padding_mask`` and ``out_channels``.
        vae: the Cosmos tokenizer (CV8x8x8: 16 channels, 8x time and space).
        prompt_embeds: (1, L, D) embedding of the (empty) prompt.
        negative_prompt_embeds: (1, L, D) embedding of the negative prompt.
        scheduler: an ``EDMEulerScheduler`` (default :func:`make_scheduler`).
        device: where the models run (default CUDA when available).
        dtype: the models' dtype while running (default bf16 on CUDA, float32 on the CPU).
        offload: keep each model on the CPU except while it runs.
        vae_batch_size: videos per VAE encode / decode call.
        render_batch_size: cameras per render call of the 3D cache.
        fps: frame rate given to the transformer's RoPE (GEN3C: 24).
        augment_sigma: noise on the condition frame's latent (0.001).
        progress: show a tqdm bar over the denoising steps.
    """

    def __init__(
        self,
        transformer: nn.Module,
        vae: VideoVAE,
        prompt_embeds: Tensor,
        negative_prompt_embeds: Tensor,
        scheduler=None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        offload: bool = False,
        vae_batch_size: int = 1,
        render_batch_size: int = DEFAULT_BATCH_SIZE,
        fps: int = GEN3C_FPS,
        augment_sigma: float = 0.001,
        progress: bool = True,
    ) -> None:
        if prompt_embeds.shape != negative_prompt_embeds.shape or prompt_embeds.dim() != 3:
            raise ValueError(
                "prompt_embeds and negative_prompt_embeds must share one (1, L, D) shape, got "
                f"{tuple(prompt_embeds.shape)} and {tuple(negative_prompt_embeds.shape)}"
            )
        if vae.latent_channels != int(transformer.config.out_channels):
            raise CheckpointError(
                f"the VAE makes {vae.latent_channels}-channel latents, the transformer denoises "
                f"{transformer.config.out_channels}"
            )
        self.device, self.dtype = default_device_dtype(device, dtype)
        self.offload = offload
        home = torch.device("cpu") if offload else self.device
        self.transformer = _cast(transformer.eval(), self.dtype).to(home)
        self.vae = vae.eval().to(home)
        _cast(self.vae.vae, self.dtype)  # the network; the latent statistics stay float32
        self.prompt_embeds = prompt_embeds.float().cpu()
        self.negative_prompt_embeds = negative_prompt_embeds.float().cpu()
        self.scheduler = scheduler if scheduler is not None else make_scheduler()
        self.vae_batch_size = vae_batch_size
        self.render_batch_size = render_batch_size
        self.fps = fps
        self.augment_sigma = float(augment_sigma)
        self.progress = progress

    # ------------------------------------------------------------------ folders

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], **kwargs) -> Gen3CPipeline:
        """Load a teacher folder (layout in the module docstring); ``kwargs`` go to
        :class:`Gen3CPipeline` (``device``, ``dtype``, ``offload``, ...). The transformer is
        read in ``dtype`` (default bf16 on CUDA) so the 7B weights never exist in float32.

        Raises:
            CheckpointError: a missing or mismatched part.
        """
        from diffusers import EDMEulerScheduler

        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"no GEN3C teacher folder at {folder}")
        _, dtype = default_device_dtype(kwargs.get("device"), kwargs.get("dtype"))
        transformer = load_transformer(folder / "transformer", torch_dtype=dtype)
        vae = VideoVAE.from_folder(folder / "vae")
        prompt, negative = load_text_embeddings(folder / TEXT_EMBEDDINGS_NAME)
        if prompt.shape[-1] != int(transformer.config.text_embed_dim):
            raise CheckpointError(
                f"{folder / TEXT_EMBEDDINGS_NAME}: {prompt.shape[-1]}-wide embeddings, the "
                f"transformer reads {transformer.config.text_embed_dim}"
            )
        scheduler = None
        if (folder / "scheduler").is_dir():
            try:
                scheduler = EDMEulerScheduler.from_pretrained(folder / "scheduler")
            except (OSError, ValueError, TypeError) as err:
                raise CheckpointError(f"{folder / 'scheduler'}: {err}") from err
        return cls(transformer, vae, prompt, negative, scheduler, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write the teacher folder atomically (the transformer in GEN3C's diffusers
        configuration, the VAE as a diffusers folder)."""
        state = self.transformer.state_dict()
        config = unfolded_config(self.transformer)

        def write(tmp: Path) -> None:
            (tmp / "transformer").mkdir()
            write_transformer_folder(tmp / "transformer", state, config)
            self.vae.save_pretrained(tmp / "vae")
            save_text_embeddings(
                tmp / TEXT_EMBEDDINGS_NAME, self.prompt_embeds, self.negative_prompt_embeds
            )
            self.scheduler.save_pretrained(tmp / "scheduler")

        return write_folder_atomically(folder, write)

    @classmethod
    def tiny(cls, seed: int = 0, text_tokens: int = 8, **kwargs) -> Gen3CPipeline:
        """A random tiny teacher for tests: :meth:`Gen3CTransformerConfig.tiny` and
        :meth:`VideoVAE.tiny` (8x time and space, 16 channels), random text embeddings of
        ``text_tokens`` tokens; float32 on the CPU unless ``kwargs`` say otherwise."""
        config = Gen3CTransformerConfig.tiny()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            transformer = build_transformer(config)
            vae = VideoVAE.tiny()
            text = torch.randn(2, 1, text_tokens, config.text_embed_dim)
        kwargs = {"device": "cpu", "progress": False} | kwargs
        return cls(transformer, vae, text[0], text[1], **kwargs)

    # ------------------------------------------------------------------ steps

    def check_inputs(
        self, image: Tensor, depth: Tensor, K: Tensor, cameras: Cameras
    ) -> tuple[int, int, int]:
        """Raise ValueError unless the inputs fit each other and the networks; returns
        (T, H, W)."""
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
        h, w = image.shape[1:]
        if tuple(depth.shape) != (h, w):
            raise ValueError(f"depth must be {(h, w)} like the image, got {tuple(depth.shape)}")
        if tuple(K.shape) != (3, 3):
            raise ValueError(f"K must be (3, 3), got {tuple(K.shape)}")
        if (cameras.width, cameras.height) != (w, h):
            raise ValueError(f"cameras are {cameras.width}x{cameras.height}, the image {w}x{h}")
        t = len(cameras)
        step = self.vae.spatial_factor * self._patch()
        if (t - 1) % self.vae.temporal_factor:
            raise ValueError(
                f"T - 1 = {t - 1} cameras must be a multiple of {self.vae.temporal_factor}"
            )
        if h % step or w % step:
            raise ValueError(f"images of {w}x{h} must be multiples of {step}")
        return t, h, w

    def _patch(self) -> int:
        patch = getattr(self.transformer.config, "patch_size", (1, 1, 1))
        return int(patch[1])

    def render_cache(
        self,
        image: Tensor,
        depth: Tensor,
        K: Tensor,
        cameras: Cameras,
        camtoworld: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The 3D cache along ``cameras``: (T, 3, H, W) float32 colour in [0, 1] (black where
        uncovered), the (T, H, W) bool mask and the (T, H, W) float32 z-depth in meters (0
        where uncovered), on the CPU."""
        h, w = image.shape[1:]
        pose = cameras.camtoworlds[0] if camtoworld is None else camtoworld
        intrinsics = Intrinsics.from_matrix(K, w, h)
        cache = cache_gaussians(
            image.permute(1, 2, 0).float().cpu(),
            depth.float().cpu(),
            intrinsics,
            pose.float().cpu(),
        )
        renders = render_views(
            cache,
            cameras.to(dtype=torch.float32),
            CACHE_BACKGROUND,
            self.device,
            self.render_batch_size,
            output_type="float",
        )
        return renders.rgb.permute(0, 3, 1, 2).cpu(), renders.mask.cpu(), renders.depth.cpu()

    def encode_conditions(
        self, image: Tensor, cache_rgb: Tensor, cache_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The clean latent of ``image`` and the pose latents of the cache, in the diffusion's
        units (``sigma_data`` x normalised):

        Returns:
            (1, C, 1, h, w) image latent and (1, 64, T', h, w) pose latents (buffer 1: RGB,
            mask; buffer 2: zeros), float32 on ``self.device``.
        """
        scale = float(self.scheduler.config.sigma_data)
        videos = [
            image.permute(1, 2, 0)[None, None],  # (1, 1, H, W, 3) in [0, 1]
            cache_rgb.permute(0, 2, 3, 1)[None],  # warped video, [0, 1] -> [-1, 1] inside
            cache_mask.float()[None, ..., None].expand(-1, -1, -1, -1, 3),  # mask x 2 - 1
        ]
        with on_device(self.vae, self.device, self.offload), torch.inference_mode():
            latents = [
                self.vae.encode(v.to(self.device, torch.float32), batch_size=self.vae_batch_size)
                .float()
                .permute(0, 2, 1, 3, 4)
                * scale
                for v in videos
            ]
        image_latent, rgb, mask = latents
        pose = torch.cat([rgb, mask, torch.zeros_like(rgb), torch.zeros_like(mask)], dim=1)
        return image_latent, pose

    def sample(
        self,
        image_latent: Tensor,
        pose_latents: Tensor,
        generator: torch.Generator | None = None,
        num_inference_steps: int = 35,
        guidance_scale: float = 1.0,
    ) -> Tensor:
        """EDM Euler sampling (module docstring, step 3).

        Args:
            image_latent: (1, C, 1, h, w) clean latent of the input view (diffusion units).
            pose_latents: (1, 64, T', h, w).
            generator: for the initial noise and the condition-frame noise.
            num_inference_steps: network evaluations per branch.
            guidance_scale: g of ``cond + g (cond - uncond)``.

        Returns:
            (1, C, T', h, w) float32 final latents in diffusion units, on ``self.device``.
        """
        from diffusers.utils.torch_utils import randn_tensor

        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        device = self.device
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps, device=device)
        _, c, _, h, w = image_latent.shape
        frames = pose_latents.shape[2]
        shape = (1, c, frames, h, w)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents * scheduler.config.sigma_max
        condition = torch.zeros(shape, device=device)
        condition[:, :, :1] = image_latent.to(device)
        indicator = torch.zeros(1, 1, frames, 1, 1, device=device)
        indicator[:, :, :1] = 1.0
        dtype = _dtype_of(self.transformer)
        mask = indicator.expand(1, 1, frames, h, w).to(dtype)
        pose = pose_latents.to(device, dtype)
        branches = [(pose, self.prompt_embeds.to(device, dtype))]
        if guidance_scale != 0:
            branches.append((torch.zeros_like(pose), self.negative_prompt_embeds.to(device, dtype)))
        augment = torch.tensor(self.augment_sigma, device=device)
        c_in_augment = scheduler._get_conditioning_c_in(augment)

        with on_device(self.transformer, self.device, self.offload), torch.inference_mode():
            steps = tqdm(scheduler.timesteps, desc="gen3c", unit="step", disable=not self.progress)
            for i, t in enumerate(steps):
                sigma = scheduler.sigmas[i].to(device)
                # Below the augment noise the condition frame is denoised like the others.
                active = indicator if self.augment_sigma < float(sigma) else indicator * 0
                denoised = []
                for branch_pose, embeds in branches:
                    noise = randn_tensor(shape, generator=generator, device=device)
                    clean = (condition + noise * augment) * c_in_augment
                    clean = clean / scheduler._get_conditioning_c_in(sigma)
                    x = active * clean + (1 - active) * latents
                    x = scheduler.scale_model_input(x, t)
                    out = self.transformer(
                        hidden_states=x.to(dtype),
                        timestep=t.expand(1).to(dtype),
                        encoder_hidden_states=embeds,
                        fps=self.fps,
                        return_dict=False,
                        **transformer_inputs(self.transformer, mask, branch_pose),
                    )[0]
                    x0 = scheduler.precondition_outputs(latents, out.float(), sigma)
                    denoised.append(active * condition + (1 - active) * x0)
                x0 = denoised[0]
                if len(denoised) == 2:
                    x0 = x0 + guidance_scale * (denoised[0] - denoised[1])
                latents = scheduler.step(
                    x0, t, latents, return_dict=False, pred_original_sample=x0
                )[0]
        return latents

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (1, C, T', h, w) -> frames (T, 3, H, W) in [0, 1] on the CPU."""
        with on_device(self.vae, self.device, self.offload), torch.inference_mode():
            video = self.vae.decode(
                latents.permute(0, 2, 1, 3, 4).to(self.device), batch_size=self.vae_batch_size
            )
        return video[0].permute(0, 3, 1, 2).float().cpu()

    @torch.inference_mode()
    def __call__(
        self,
        image: Tensor,
        depth: Tensor,
        K: Tensor,
        cameras: Cameras,
        generator: torch.Generator | None = None,
        num_inference_steps: int = 35,
        guidance_scale: float = 1.0,
        camtoworld: Tensor | None = None,
    ) -> Gen3COutput:
        """Generate the video of one trajectory (module docstring for the arguments).

        Raises:
            ValueError: inputs that do not fit each other or the networks.
        """
        self.check_inputs(image, depth, K, cameras)
        cache_rgb, cache_mask, cache_depth = self.render_cache(image, depth, K, cameras, camtoworld)
        image_latent, pose = self.encode_conditions(image.float().cpu(), cache_rgb, cache_mask)
        latents = self.sample(image_latent, pose, generator, num_inference_steps, guidance_scale)
        normalised = (latents / self.scheduler.config.sigma_data).float()
        frames = self.decode(normalised)
        return Gen3COutput(normalised.cpu(), frames, cache_rgb, cache_mask, cache_depth)
