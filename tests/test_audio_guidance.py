"""Audio dropout (training) and audio guidance (sampling): the null condition is the mel of silence in both,
scale 1 is today's sampler call for call, and scale > 1 extrapolates ε̂ by the guidance formula."""

import json

import numpy as np
import pytest
import torch
from conftest import small_pipeline

from lipsync.media import audio as audio_io
from lipsync.model.unet import NULL_AUDIO_VALUE, null_audio
from lipsync.training.sampling import apply_audio_dropout, audio_dropout_rows


def inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    faces = (torch.rand(n, 128, 128, 3, generator=g) * 255).to(torch.uint8)
    mels = torch.randn(n, 80, 16, generator=g)
    return faces, mels


class Spy:
    """Wraps the UNet: records the style of every call, and returns what the UNet returns."""

    def __init__(self, unet):
        self.unet, self.styles, self.results = unet, [], []

    def __call__(self, *args, **kwargs):
        self.styles.append(kwargs["style"].clone())
        out = self.unet(*args, **kwargs)
        self.results.append(out.sample.float()[:, :3].clone())
        return out


def test_the_null_condition_is_the_mel_of_silence():
    silence = audio_io.mel_windows(audio_io.melspectrogram(np.zeros(16000, np.float32)), 25, num_frames=1)[0]
    assert np.array_equal(silence, np.full((80, 16), NULL_AUDIO_VALUE, np.float32))
    assert torch.equal(null_audio(2)[1], torch.from_numpy(silence))


def test_scale_1_is_the_paper_sampler_call_for_call():
    pipe = small_pipeline()
    faces, mels = inputs()
    default = pipe(faces=faces, mels=mels, num_inference_steps=3, generator=torch.Generator().manual_seed(7),
                   progress_bar=False, batch_size=3).frames
    spy = Spy(pipe.unet)
    pipe.compiled_unet = spy  # the pipeline calls what acceleration installs here
    try:
        explicit = pipe(faces=faces, mels=mels, num_inference_steps=3, generator=torch.Generator().manual_seed(7),
                        progress_bar=False, audio_guidance_scale=1.0, batch_size=3).frames
    finally:
        del pipe.compiled_unet
    assert torch.equal(default, explicit)
    assert len(spy.styles) == 3  # one model call per step, never the null audio
    assert torch.equal(spy.styles[0][:3], pipe.unet.audio_style(mels))


def test_guided_eps_is_null_plus_scale_times_the_difference(monkeypatch):
    pipe = small_pipeline()
    faces, mels = inputs()
    spy = Spy(pipe.unet)
    pipe.compiled_unet = spy
    stepped = []
    original = pipe.scheduler.step

    def record(eps, t, x_t, **kwargs):
        stepped.append(eps.clone())
        return original(eps, t, x_t, **kwargs)

    monkeypatch.setattr(pipe.scheduler, "step", record)
    pipe(faces=faces, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(7),
         progress_bar=False, audio_guidance_scale=2.5, batch_size=3)
    del pipe.compiled_unet
    assert len(spy.results) == 4 and len(stepped) == 2  # two calls per step
    null_style = pipe.unet.audio_style(null_audio(3))
    for step in range(2):
        conditional, unconditional = spy.results[2 * step], spy.results[2 * step + 1]
        assert torch.equal(spy.styles[2 * step + 1], null_style)  # the null condition is silence
        assert torch.allclose(stepped[step], unconditional + 2.5 * (conditional - unconditional), atol=1e-6)
        assert not torch.allclose(conditional, unconditional)  # a random model reacts to the audio a little


def test_guidance_works_with_deepcache_and_refuses_scales_below_1():
    pipe = small_pipeline()
    faces, mels = inputs()
    common = dict(faces=faces, mels=mels, num_inference_steps=4, progress_bar=False, audio_guidance_scale=2.0)
    cached = pipe(**common, deepcache_interval=2, generator=torch.Generator().manual_seed(7)).frames
    full = pipe(**common, generator=torch.Generator().manual_seed(7)).frames
    assert torch.isfinite(cached).all()
    psnr = 10 * torch.log10(1 / ((cached - full) ** 2).mean())
    assert psnr > 25, float(psnr)  # the cached steps approximate the full ones, per condition
    with pytest.raises(ValueError, match="audio_guidance_scale must be at least 1"):
        pipe(faces=faces, mels=mels, num_inference_steps=1, audio_guidance_scale=0.5, progress_bar=False)


def test_audio_dropout_silences_whole_samples_reproducibly():
    mels = torch.randn(200, 5, 80, 16)
    out = apply_audio_dropout(mels, seed=3, indices=list(range(200)), step=7, p=0.3)
    dropped = (out == NULL_AUDIO_VALUE).flatten(1).all(dim=1)
    kept = (out == mels).flatten(1).all(dim=1)
    assert torch.equal(dropped | kept, torch.ones(200, dtype=torch.bool))  # whole samples, nothing in between
    assert 0.2 < dropped.float().mean() < 0.4
    assert torch.equal(dropped, audio_dropout_rows(3, list(range(200)), 7, 0.3))  # the same on resume
    assert not torch.equal(dropped, audio_dropout_rows(3, list(range(200)), 8, 0.3))  # another step, others
    assert apply_audio_dropout(mels, 3, list(range(200)), 7, 0.0) is mels


def test_the_trainer_feeds_the_null_audio_and_records_the_dropout(tmp_path, monkeypatch):
    """A tiny run with --audio-dropout: the model sees silenced samples, and the saved config says so."""
    from test_train import TINY_CONFIG  # noqa: F401 - the tiny model the training tests use

    from lipsync.training.config import TrainConfig
    from lipsync.training.trainer import Trainer

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"faces": torch.rand(5, 3, 32, 32, generator=g) * 2 - 1,
                    "reference": torch.rand(3, 32, 32, generator=g) * 2 - 1,
                    "mels": torch.randn(5, 80, 16, generator=g), "sync_mel": torch.zeros(1, 80, 16),
                    "audio": torch.zeros(3200), "clip": 0, "start": i}

    seen = []
    from lipsync.model.unet import Diff2LipUNetModel

    original = Diff2LipUNetModel.forward

    def spy(self, *args, audio=None, **kwargs):
        if audio is not None and self.training:
            seen.append(audio.detach().reshape(-1, 5, 80, 16).clone())
        return original(self, *args, audio=audio, **kwargs)

    monkeypatch.setattr(Diff2LipUNetModel, "forward", spy)
    config = TrainConfig(data=str(tmp_path), output=str(tmp_path / "run"), batch_size=4, max_steps=6, lr=1e-3,
                         validate_every=0, checkpoint_every=0, progress=False, seed=0, audio_dropout=0.5,
                         **TINY_CONFIG)
    final = Trainer(config, train_dataset=Windows(), val_dataset=Windows()).run()
    silenced = torch.cat([(m == NULL_AUDIO_VALUE).flatten(1).all(dim=1) for m in seen])
    assert 0 < silenced.float().mean() < 1  # some samples, not all, trained with silence
    assert json.loads((final / "unet" / "config.json").read_text())["audio_dropout"] == 0.5


def test_the_app_shows_the_guidance_slider_only_for_models_trained_with_audio_dropout(tmp_path):
    from lipsync.app import layout
    from lipsync.app.handlers import Handlers
    from lipsync.engine import LipSyncEngine

    plain, dropped = tmp_path / "plain", tmp_path / "dropped"
    small_pipeline().save_pretrained(plain)
    pipe = small_pipeline()
    pipe.unet.register_to_config(audio_dropout=0.2)
    pipe.save_pretrained(dropped)
    shown = {}
    for name, folder in (("plain", plain), ("dropped", dropped)):
        engine = LipSyncEngine(checkpoint=folder, device="cpu", detector="opencv")
        demo = layout.build_demo(engine, default_detector="opencv")
        slider = [c for c in demo.config["components"] if c["props"].get("elem_id") == "audio-guidance"][0]
        shown[name] = slider["props"]["visible"]
        assert not engine.pipeline_loaded  # read from the saved config, nothing loaded
    assert shown == {"plain": False, "dropped": True}
    options = Handlers(LipSyncEngine(checkpoint=dropped), max_seconds=30).make_options(audio_guidance=1.5)
    assert options.audio_guidance == 1.5
