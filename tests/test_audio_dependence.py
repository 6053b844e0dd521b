"""Audio-dependence checks (lipsync.scoring.audio_dependence, python -m lipsync.evaluate --audio-dependence): a
model whose audio is cut off gives exactly 0 and identical samples, a model that uses its audio clearly does not,
and the CLI mode runs on a tiny prepared dataset. Tiny seeded models."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import prepare_train_clips, small_unet

from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler
from lipsync.model.unet import Diff2LipUNetModel
from lipsync.scoring.audio_dependence import one_step_audio_dependence, sample_audio_dependence

CLIPS = ("train_21_lipnet_bbaf2n", "train_22_lipnet_brbk7n")  # 75 frames each, one speaker each
TINY_32 = dict(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
               num_head_channels=32)


class DeafUNet(Diff2LipUNetModel):
    """The UNet with its audio cut off: every mel window is replaced by zeros before the audio encoder."""

    def audio_style(self, audio):
        return super().audio_style(torch.zeros_like(audio))


def deaf(unet: Diff2LipUNetModel) -> DeafUNet:
    model = DeafUNet.from_config(unet.config)
    model.load_state_dict(unet.state_dict())
    return model.eval()


def loud(unet: Diff2LipUNetModel, scale: float = 20.0) -> Diff2LipUNetModel:
    """The UNet with its audio style vector scaled up: the audio moves the output a lot."""
    with torch.no_grad():
        unet.audio_encoder_to_style[-1].weight.mul_(scale)
        unet.audio_encoder_to_style[-1].bias.mul_(scale)
    return unet


def pipeline(unet) -> Diff2LipPipeline:
    pipe = Diff2LipPipeline(unet=unet, scheduler=default_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def frames():
    """4 smooth 128 px faces-like crops, references and (right, wrong) mel windows."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    base = np.stack([xx, yy, (xx + yy) // 2], -1)
    faces = np.stack([(base + rng.integers(0, 60, 3)) % 256 for _ in range(4)]).astype(np.uint8)
    refs = np.roll(faces, 1, axis=0)
    mels = rng.uniform(-4, 4, (4, 80, 16)).astype(np.float32)
    wrong = {"rolled": np.roll(mels, 1, axis=0), "silence": np.full_like(mels, -4.0)}
    return faces, refs, mels, wrong


def test_one_step_is_exactly_zero_when_the_audio_is_cut_off(frames):
    faces, refs, mels, wrong = frames
    result = one_step_audio_dependence(deaf(small_unet()), faces, refs, mels, wrong, timesteps=(100, 500, 900))
    assert result.ratios == {"rolled": {100: 0.0, 500: 0.0, 900: 0.0}, "silence": {100: 0.0, 500: 0.0, 900: 0.0}}
    assert all(s > 0.01 for s in result.eps_size.values())
    assert result.frames == 4 and result.image_size == 128
    assert "rolled t=100 0%" in result.summary() and "\n" not in result.summary()
    assert json.loads(json.dumps(result.as_dict()))["ratios"]["silence"]["900"] == 0.0


def test_one_step_is_clearly_non_zero_when_the_model_uses_its_audio(frames):
    faces, refs, mels, wrong = frames
    result = one_step_audio_dependence(loud(small_unet()), faces, refs, mels, wrong, timesteps=(100, 500, 900))
    for variant in ("rolled", "silence"):
        for t in (100, 500, 900):
            assert result.ratio(t, variant) > 0.05, result.summary()
    assert result.ratio(100) == result.ratios["rolled"][100]  # the first wrong set by default
    # the same figure from float inputs in [-1, 1], one wrong set as an array, batch by batch
    floats = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1
    ref_floats = torch.from_numpy(refs).permute(0, 3, 1, 2).float() / 127.5 - 1
    again = one_step_audio_dependence(loud(small_unet()), floats, ref_floats, mels, wrong["rolled"], timesteps=(100,),
                                      batch_size=3)
    assert again.ratio(100) == pytest.approx(result.ratio(100, "rolled"), rel=1e-4)


def test_one_step_feeds_a_model_of_another_size_at_its_size(frames):
    faces, refs, mels, wrong = frames
    torch.manual_seed(0)
    unet = Diff2LipUNetModel(**TINY_32)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    unet = loud(unet.eval())
    result = one_step_audio_dependence(unet, faces, refs, mels, wrong, timesteps=(300,))
    assert result.image_size == 32 and result.ratio(300) > 0.01
    assert one_step_audio_dependence(deaf(unet), faces, refs, mels, wrong, timesteps=(300,)).ratio(300) == 0.0


def test_one_step_rejects_mismatched_inputs(frames):
    faces, refs, mels, wrong = frames
    unet = small_unet()
    with pytest.raises(ValueError, match="mel windows"):
        one_step_audio_dependence(unet, faces, refs, mels[:3], wrong)
    with pytest.raises(ValueError, match="wrong mels"):
        one_step_audio_dependence(unet, faces, refs, mels, {"short": mels[:2]})
    with pytest.raises(ValueError, match="reference"):
        one_step_audio_dependence(unet, faces, refs[:2], mels, wrong)


def test_samples_are_identical_when_the_audio_is_cut_off(frames):
    faces, refs, mels, wrong = frames
    result = sample_audio_dependence(pipeline(deaf(small_unet())), faces[:2], refs[:2], mels[:2],
                                     {k: v[:2] for k, v in wrong.items()}, num_inference_steps=3, keep_outputs=True)
    assert result.psnr_to_right == {"rolled": math.inf, "silence": math.inf}
    assert np.array_equal(result.outputs["right"], result.outputs["silence"])
    truth = result.psnr_to_truth
    assert set(truth) == {"right", "rolled", "silence"} and math.isfinite(truth["right"])
    assert truth["right"] == truth["rolled"] == truth["silence"]
    assert json.loads(json.dumps(result.as_dict()))["psnr_to_right"]["rolled"] == "inf"
    assert "rolled inf dB" in result.summary()


def test_samples_differ_when_the_model_uses_its_audio(frames):
    faces, refs, mels, wrong = frames
    result = sample_audio_dependence(pipeline(loud(small_unet())), faces[:2], refs[:2], mels[:2],
                                     {k: v[:2] for k, v in wrong.items()}, num_inference_steps=3)
    assert all(math.isfinite(v) and v < 40 for v in result.psnr_to_right.values()), result.summary()
    assert result.outputs == {}
    with pytest.raises(ValueError, match="right"):
        sample_audio_dependence(pipeline(small_unet()), faces[:2], refs[:2], mels[:2], {"right": mels[:2]})


# ----------------------------------------------------------------------------------------------------
# Held-out frames of a prepared dataset, and the CLI
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two shared clips prepared by python -m lipsync.prepare (OpenCV detector), both in split "val"."""
    return prepare_train_clips(tmp_path_factory, CLIPS, "--val-fraction", "1")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A seeded 32 px model saved with save_pretrained (the pipeline resizes the 128 px crops in and out)."""
    torch.manual_seed(0)
    unet = Diff2LipUNetModel(**TINY_32)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("model")
    pipeline(loud(unet.eval())).save_pretrained(path, safe_serialization=True)
    return path


def test_held_out_frames_and_their_wrong_audio(dataset):
    from lipsync.evaluate import MIN_FRAME_GAP, audio_dependence_frames, silence_mel_window
    from lipsync.media import audio as audio_io

    held = audio_dependence_frames(dataset, count=6)
    assert held.faces.shape == held.references.shape == (6, 128, 128, 3) and held.faces.dtype == np.uint8
    assert held.mels.shape == (6, 80, 16) and set(held.wrong) == {"other_frames", "other_clip", "silence"}
    assert sorted(set(held.clips)) == sorted(CLIPS) and held.notes == []
    assert (held.frame_gaps >= MIN_FRAME_GAP).all()
    silence = audio_io.mel_windows(audio_io.melspectrogram(np.zeros(16000)), 25)[0]
    assert np.array_equal(held.wrong["silence"], np.repeat(silence[None], 6, 0))
    assert np.array_equal(silence_mel_window(), silence)
    for k in range(6):
        assert not np.array_equal(held.wrong["other_frames"][k], held.mels[k])
        assert not np.array_equal(held.wrong["other_clip"][k], held.mels[k])
    one_clip = audio_dependence_frames(dataset, count=1)  # one frame: no other held-out frame, but other clips
    assert "other_clip" in one_clip.wrong


def test_cli_audio_dependence_prints_a_table_and_writes_json(dataset, tiny_model_dir, tmp_path, capsys):
    from lipsync.evaluate import main

    out = tmp_path / "audio.json"
    assert main(["--audio-dependence", "--checkpoint", str(tiny_model_dir), "--data", str(dataset), "--frames", "4",
                 "--steps", "2", "--json", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "t=100" in printed and "t=900" in printed and "another clip" in printed and "silence" in printed
    figures = json.loads(out.read_text())
    assert figures["frames"] == 4 and figures["split"] == "val" and sorted(figures["clips"]) == sorted(CLIPS)
    assert set(figures["one_step"]["ratios"]) == {"other_frames", "other_clip", "silence"}
    assert figures["one_step"]["image_size"] == 32
    assert all(r > 0 for per_t in figures["one_step"]["ratios"].values() for r in per_t.values())
    assert set(figures["samples"]["psnr_to_truth"]) == {"right", "other_frames", "other_clip", "silence"}
    assert figures["samples"]["steps"] == 2


def _error_lines(capsys) -> list:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_cli_audio_dependence_bad_input_exits_2_with_one_line(dataset, tiny_model_dir, tmp_path, capsys):
    from lipsync.evaluate import main

    model, data = str(tiny_model_dir), str(dataset)
    cases = [
        (["--data", data], "--checkpoint"),
        (["--checkpoint", str(tmp_path / "nothing"), "--data", data], "does not exist"),
        (["--checkpoint", model, "--data", str(tmp_path)], "manifest.json"),
        (["--checkpoint", model, "--data", data, "--split", "train"], "train"),
        (["--checkpoint", model, "--data", data, "--frames", "1"], "--frames"),
        (["--checkpoint", model, "--data", data, "--json", str(tmp_path / "no" / "a.json")], "--json"),
        (["--checkpoint", model, "--data", data, "--filelist", "x.txt"], "--filelist"),
    ]
    for args, words in cases:
        assert main(["--audio-dependence", *args]) == 2, args
        lines = _error_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (args, lines)
    with pytest.raises(SystemExit) as exit_info:  # the filelist mode still needs its two flags
        main(["--output", str(tmp_path / "s.csv")])
    assert exit_info.value.code == 2 and "--filelist" in capsys.readouterr().err
