"""Diff2LipPipeline: face crops + reference crops + mel windows in, lip-synced face crops out.

Arrays in, dataclass out: no files, no temp dirs. Sampling follows the paper's ``generate.py``: ONE
initial noise shared by every frame (it is also the content of the masked frame's lower half), DDIM
with eta = 0, x0 clipped to [-1, 1] and the noise re-derived from the clipped x0, and the generated
lower half composited with the untouched upper half.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, List, Optional, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.schedulers import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from lipsync.model.unet import Diff2LipUNetModel, null_audio

FACE_HIDE_PERCENTAGE = 0.5  # the lower half of the crop is generated
DEEPCACHE_DEPTH = 2  # DeepCache branch: cached steps run the first 2 input and last 2 output blocks
# where the UNet's class lived when older folders were saved: model_index.json names the module, and diffusers
# imports it on load, so these names are read as today's module
FORMER_UNET_MODULES = {"lipsync.unet_diff2lip": "lipsync.model.unet"}


def default_scheduler() -> DDIMScheduler:
    """DDIM configured like the paper: linear betas 1e-4..0.02 over 1000 steps, ``leading`` spacing
    (25 steps -> t = 960, 920, ..., 0, the paper's ``ddim25``), x0 clipped to [-1, 1], final alpha = 1."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=True,
        clip_sample_range=1.0,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )


def to_model_range(images) -> torch.Tensor:
    """Images -> float32 (N, 3, H, W) in [-1, 1].

    Accepts uint8 (N, H, W, 3) arrays/tensors (the official ``u8/255*2-1``) or float (N, 3, H, W) in [0, 1].
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a numpy array or a torch tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.dtype == torch.uint8:
        if images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (N, H, W, 3), got {tuple(images.shape)}")
        images = images.permute(0, 3, 1, 2).float() / 255.0
    elif images.shape[1] != 3:
        raise ValueError(f"float images must be (N, 3, H, W) in [0, 1], got {tuple(images.shape)}")
    return (images.float() * 2 - 1).clamp(-1, 1)


def lower_half_mask(height: int, width: int, face_hide_percentage: float = FACE_HIDE_PERCENTAGE) -> torch.Tensor:
    """(1, 1, H, W) float mask, 1 on rows >= int(H * (1 - face_hide_percentage)) (the generated region)."""
    mask = torch.zeros(1, 1, height, width)
    mask[:, :, int(height * (1 - face_hide_percentage)) :] = 1.0
    return mask


def resize_faces(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 3, size, size) for a model trained at another size: area averaging down (as
    the training data's cv2.INTER_AREA), bicubic up, re-quantised to the 8-bit grid the model was trained on."""
    mode = "area" if size < images.shape[-1] else "bicubic"
    resized = F.interpolate(images.float(), size=(size, size), mode=mode)
    return (torch.round((resized.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1).to(images.dtype)


@dataclass
class Diff2LipPipelineOutput(BaseOutput):
    """``frames``: the composited faces (upper half from the input, lower half generated), as asked by
    ``output_type``: "pt" float (N, 3, H, W) in [0, 1]; "np" float32 (N, H, W, 3) in [0, 1]; "uint8" uint8
    (N, H, W, 3); "pil" a list of PIL images. ``samples``: the raw final samples x0, float (N, 3, H, W) in
    [-1, 1] (whole crop, before compositing)."""

    frames: Union[torch.Tensor, np.ndarray, List[PIL.Image.Image]]
    samples: torch.Tensor


class Diff2LipPipeline(DiffusionPipeline):
    """Audio-driven mouth inpainting with Diff2Lip.

    Components: ``unet`` (``Diff2LipUNetModel``) and ``scheduler`` (any diffusers scheduler that
    predicts from epsilon: DDIM by default; DPMSolverMultistep, UniPC, Euler swap in via ``from_config``).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: Diff2LipUNetModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' ``load_config``, with the UNet's module path of older saved folders (``model_index.json``
        written before the package was split into subpackages) read as today's ``lipsync.model.unet``."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        for name, value in config.items():
            if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] in FORMER_UNET_MODULES:
                config[name] = [FORMER_UNET_MODULES[value[0]], value[1]]
        return loaded

    # -- helpers --------------------------------------------------------------------------------------
    def _step_kwargs(self, generator, eta: float) -> dict:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "use_clipped_model_output" in params:
            kwargs["use_clipped_model_output"] = True  # eps re-derived from the clipped x0, as the paper does
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    @staticmethod
    def _check_inputs(faces, references, mels):
        if mels.ndim != 3 or tuple(mels.shape[1:]) != (80, 16):
            raise ValueError(f"mels must be (N, 80, 16) mel windows, got {tuple(mels.shape)}")
        if faces.shape[0] != mels.shape[0]:
            raise ValueError(f"got {faces.shape[0]} faces but {mels.shape[0]} mel windows; give one window per face")
        if references.shape != faces.shape:
            raise ValueError(
                f"reference_faces {tuple(references.shape)} must match faces {tuple(faces.shape)} "
                "(repeat one reference for every frame)"
            )

    def _initial_noise(self, latents, shape, generator, device) -> torch.Tensor:
        if latents is None:
            return randn_tensor((1, *shape[1:]), generator=generator, device=device, dtype=torch.float32)
        latents = torch.as_tensor(latents, dtype=torch.float32, device=device)
        if latents.ndim == 3:
            latents = latents[None]
        if latents.ndim == 4 and tuple(latents.shape[2:]) != tuple(shape[2:]) and latents.shape[2] == latents.shape[3]:
            # noise drawn at the crop size for a model of another size: nearest keeps it i.i.d. N(0, 1) per pixel
            latents = F.interpolate(latents, size=tuple(shape[2:]), mode="nearest")
        if latents.shape[0] not in (1, shape[0]) or tuple(latents.shape[1:]) != tuple(shape[1:]):
            raise ValueError(f"latents must be (1, 3, H, W) or (N, 3, H, W) for faces {tuple(shape)}, got {tuple(latents.shape)}")
        return latents

    @staticmethod
    def _batch_rows(start: int, stop: int, pad_to: int) -> torch.Tensor:
        """Row indices [start, stop), padded with ``stop - 1`` up to ``pad_to`` rows (0: no padding)."""
        rows = torch.arange(start, stop)
        if pad_to > len(rows):
            rows = torch.cat([rows, rows[-1:].expand(pad_to - len(rows))])
        return rows

    @staticmethod
    def _postprocess(recon: torch.Tensor, output_type: str):
        frames = ((recon + 1) / 2).clamp(0, 1)  # (N, 3, H, W) in [0, 1]
        if output_type == "pt":
            return frames
        array = frames.permute(0, 2, 3, 1).numpy()
        if output_type == "np":
            return array.astype(np.float32)
        as_uint8 = (array * 255).astype(np.uint8)  # truncation, as the original
        if output_type == "uint8":
            return as_uint8
        if output_type == "pil":
            return [PIL.Image.fromarray(frame) for frame in as_uint8]
        raise ValueError(f"output_type must be 'pt', 'np', 'uint8' or 'pil', got {output_type!r}")

    # -- main entry point ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        faces,
        reference_faces=None,
        mels=None,
        num_inference_steps: int = 25,
        generator: Optional[torch.Generator] = None,
        latents: Optional[torch.Tensor] = None,
        batch_size: int = 16,
        face_hide_percentage: float = FACE_HIDE_PERCENTAGE,
        eta: float = 0.0,
        output_type: str = "pt",
        return_dict: bool = True,
        progress_bar: bool = True,
        callback: Optional[Callable[[int, int], None]] = None,
        deepcache_interval: int = 1,
        deepcache_depth: int = DEEPCACHE_DEPTH,
        audio_guidance_scale: float = 1.0,
    ):
        """Generate the lower half of each face crop from its mel window.

        Args:
            faces: float (N, 3, H, W) in [0, 1] or uint8 (N, H, W, 3): the face crops (128x128 for the paper).
                A model trained at another ``image_size`` gets them resized to its size, and its lower halves
                resized back to H x W before compositing.
            reference_faces: same format; identity reference per frame. ``None``: each frame is its own
                reference (the paper's cross setting).
            mels: (N, 80, 16) mel windows, one per face.
            num_inference_steps: scheduler steps (25 = the paper's ddim25).
            generator: randomness for the one shared initial noise (seed 7 reproduces the paper).
            latents: the initial noise instead, (1, 3, H, W) shared or (N, 3, H, W) per frame.
            batch_size: frames denoised together.
            face_hide_percentage: fraction of rows (from the bottom) that is generated.
            output_type: "pt", "np", "uint8" or "pil" (see ``Diff2LipPipelineOutput``).
            progress_bar: show a tqdm bar over all model calls.
            callback: ``callback(done, total)`` after every denoising step, e.g. for a UI progress bar.
            deepcache_interval: DeepCache reuse: the deep UNet features are recomputed every
                ``deepcache_interval``-th step and reused in between (1 = off: every step is a full call).
            deepcache_depth: how many shallow input/output blocks a cached step still runs (default 2:
                about 26% of a full call's FLOPs for the paper model).
            audio_guidance_scale: classifier-free guidance on the audio. 1 (default) is the paper's sampler,
                one model call per step. Above 1, every step also runs the model with the null audio (the mel
                of silence, ``lipsync.model.unet.null_audio``) and uses
                ε̂ = ε̂(null) + scale · (ε̂(audio) − ε̂(null)); meant for models trained with audio dropout
                (``unet.config.audio_dropout`` > 0). Works with DeepCache (each call keeps its own cache) and
                with a compiled UNet; costs twice the model calls.
        """
        # 1. Check and convert inputs
        if mels is None:
            raise ValueError("mels is required: one (80, 16) mel window per face")
        if int(deepcache_interval) < 1:
            raise ValueError(f"deepcache_interval must be at least 1 (1 = off), got {deepcache_interval}")
        if not float(audio_guidance_scale) >= 1.0:
            raise ValueError(f"audio_guidance_scale must be at least 1 (1 = no guidance), got {audio_guidance_scale}")
        guided = float(audio_guidance_scale) != 1.0
        device = self._execution_device
        dtype = self.unet.dtype
        images = to_model_range(faces)  # (N, 3, H, W) in [-1, 1]
        references = images if reference_faces is None else to_model_range(reference_faces)
        mels = torch.as_tensor(np.asarray(mels) if not isinstance(mels, torch.Tensor) else mels).float()
        self._check_inputs(images, references, mels)
        n, _, height, width = images.shape
        crops = images  # (N, 3, H, W): the composite keeps their full-resolution upper half
        size = int(getattr(self.unet.config, "image_size", height))
        if height != width or size == height:
            size = None  # the model works at the crop size (the paper's 128 px path, untouched)
        else:  # a model trained at another size (python -m lipsync.train --image-size): resize in and out
            images, references = resize_faces(images, size), resize_faces(references, size)

        # 2. Mask of the generated region
        mask = lower_half_mask(images.shape[2], images.shape[3], face_hide_percentage).to(device)  # (1, 1, S, S)

        # 3. One initial noise shared by all frames (also the masked frame's lower half)
        noise = self._initial_noise(latents, images.shape, generator, device)

        # 4. Denoise batch by batch
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        total = len(self.scheduler.timesteps) * ((n + batch_size - 1) // batch_size)  # steps (guided: 2 calls each)
        self.set_progress_bar_config(disable=not progress_bar, desc="Diff2Lip")
        step_kwargs = self._step_kwargs(generator, eta)
        unet_call = getattr(self, "compiled_unet", None)  # see lipsync.model.acceleration.compile_pipeline
        if unet_call is None:
            unet_call = self.unet
        samples = []
        done = 0
        with self.progress_bar(total=total) as bar:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                # a compiled UNet keeps one static batch shape: pad the last batch with copies of its last frame
                rows = self._batch_rows(start, stop, batch_size if unet_call is not self.unet else 0)
                img = images[rows].to(device)
                ref = references[rows].to(device, dtype)
                mel = mels[rows].to(device, dtype)
                x_t = noise.expand(len(rows), -1, -1, -1) if noise.shape[0] == 1 else noise[rows]
                cond = img * (1 - mask) + mask * x_t  # (B, 3, H, W): top half image, bottom half noise
                batch_mask = mask.expand(len(rows), -1, -1, -1).to(dtype)
                cond_in = cond.to(dtype)
                # t-independent conditioning, once per batch: the audio style vector
                style = self.unet.audio_style(mel)  # (B, 4C)
                null_style = self.unet.audio_style(null_audio(len(rows), device, dtype)) if guided else None
                self.scheduler.set_timesteps(num_inference_steps, device=device)  # resets multistep state
                x_t = x_t * self.scheduler.init_noise_sigma
                deep = deep_null = None  # DeepCache: deep decoder features of the last full step (per condition)
                # 5. Denoising loop
                for i, t in enumerate(self.scheduler.timesteps):
                    model_in = self.scheduler.scale_model_input(x_t, t)
                    kwargs = {}
                    if deepcache_interval > 1:
                        full = i % int(deepcache_interval) == 0
                        kwargs = {"deepcache_depth": int(deepcache_depth), "deep_features": None if full else deep}
                    result = unet_call(
                        model_in.to(dtype), t, cond_image=cond_in, mask=batch_mask,
                        reference=ref, style=style, **kwargs,
                    )
                    if deepcache_interval > 1 and result.deep_features is not None:
                        deep = result.deep_features
                    eps = result.sample.float()[:, :3]  # channels 3:6 are learned-variance logits, unused here
                    if guided:  # the same call with the null audio, then extrapolate away from it
                        if deepcache_interval > 1:
                            kwargs["deep_features"] = None if full else deep_null
                        unconditional = unet_call(model_in.to(dtype), t, cond_image=cond_in, mask=batch_mask,
                                                  reference=ref, style=null_style, **kwargs)
                        if deepcache_interval > 1 and unconditional.deep_features is not None:
                            deep_null = unconditional.deep_features
                        eps_null = unconditional.sample.float()[:, :3]
                        eps = eps_null + float(audio_guidance_scale) * (eps - eps_null)
                    x_t = self.scheduler.step(eps, t, x_t, **step_kwargs).prev_sample
                    done += 1
                    bar.update()
                    if callback is not None:
                        callback(done, total)
                samples.append(x_t[: stop - start].float().cpu())

        # 6. Composite the generated lower half with the untouched upper half
        sample = torch.cat(samples)  # (N, 3, S, S) in [-1, 1]
        if size is not None:  # back to the crop size
            sample = F.interpolate(sample, size=(height, width), mode="bicubic").clamp(-1, 1)
        mask_cpu = lower_half_mask(height, width, face_hide_percentage) if size is not None else mask.cpu()
        recon = sample * mask_cpu + (1 - mask_cpu) * crops

        # 7. Postprocess
        frames = self._postprocess(recon, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames, sample)
        return Diff2LipPipelineOutput(frames=frames, samples=sample)
