"""benchmarks/ablations.py end to end at a tiny budget: every variant trains from the same --init with its own
flags, and every model is scored with the same audio-dependence measures. Tiny model at 32 px, 2 steps each."""

import json
import sys

import pytest
import torch

from conftest import REPO, prepare_train_clips

sys.path.insert(0, str(REPO / "benchmarks"))

TRAIN_CLIP, VAL_CLIP = "train_21_lipnet_bbaf2n", "train_22_lipnet_brbk7n"
TINY_CONFIG = dict(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
                   num_head_channels=32)


def test_dry_run_lists_one_command_per_variant(capsys):
    import ablations

    assert ablations.main(["--init", "INIT", "--minutes", "5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    commands = {line.split("--output ")[1].split()[0].rsplit("/", 1)[1]: line.split()
                for line in out.splitlines() if not line.startswith("#")}
    assert list(commands) == list(ablations.VARIANTS)
    assert all("--max-minutes" in cmd and "--init" in cmd and "INIT" in cmd for cmd in commands.values())
    assert "--no-x0-clip" in commands["no_x0_clip"] and "--no-x0-clip" not in commands["baseline"]
    combined = commands["combined"]
    for flag in ("--audio-dropout", "--audio-lr-scale", "--reference-min-distance", "--reference-augment",
                 "--no-x0-clip"):
        assert flag in combined


def test_tiny_ablation_trains_and_scores_each_variant(tmp_path_factory, tmp_path):
    import ablations

    from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler
    from lipsync.training.config import build_unet

    data = prepare_train_clips(tmp_path_factory, (TRAIN_CLIP, VAL_CLIP), "--val-clips", VAL_CLIP)
    torch.manual_seed(0)
    init = tmp_path / "init"
    Diff2LipPipeline(unet=build_unet(TINY_CONFIG), scheduler=default_scheduler()).save_pretrained(
        init, safe_serialization=True)  # random weights: its ε̂ depends on the audio
    out = tmp_path / "results.json"
    torch.set_num_threads(1)
    assert ablations.main(["--init", str(init), "--max-steps", "2", "--variants", "baseline,combined", "--data",
                           str(data), "--val-data", str(data), "--output", str(tmp_path / "runs"), "--json", str(out),
                           "--eval-frames", "4", "--sampling-steps", "2", "--warmup-steps", "0"]) == 0
    results = json.loads(out.read_text())
    assert list(results["models"]) == ["init", "baseline", "combined"]
    for name, row in results["models"].items():
        assert row["ratio_t300"]["other_frames"] > 0 and row["ratio_t300"]["silence"] > 0
        assert 0 < row["psnr_right"] < 100
    assert results["models"]["baseline"]["steps"] == results["models"]["combined"]["steps"] == 2
    recorded = json.loads((tmp_path / "runs" / "combined" / "run_config.json").read_text())["train"]
    assert (recorded["reference_min_distance"], recorded["reference_augment"], recorded["x0_clip"],
            recorded["audio_lr_scale"], recorded["audio_dropout"]) == (25, 0.5, False, 10.0, 0.1)
    assert recorded["init"] == str(init)
    baseline = json.loads((tmp_path / "runs" / "baseline" / "run_config.json").read_text())["train"]
    assert (baseline["reference_min_distance"], baseline["x0_clip"], baseline["audio_lr_scale"]) == (0, True, 1.0)
    assert results["copy_reference_psnr"] > 0


# ----------------------------------------------------------------------------------------------------
# benchmarks/train_small.py: the CPU run as it was, and the GPU recipe
# ----------------------------------------------------------------------------------------------------


def test_train_small_cpu_command_is_unchanged_and_cuda_uses_the_recipe(capsys):
    import train_small

    assert train_small.main(["--dry-run", "--output", "/tmp/small", "--data", "/d", "--val-data", "/v"]) == 0
    cpu = capsys.readouterr().out.split()
    assert cpu[1:] == ["-m", "lipsync.train", "--data", "/d", "--val-data", "/v", "--output", "/tmp/small", "--preset",
                       "simple", "--lambda-l2", "1.0", "--l2-weighting", "none", "--image-size", "64",
                       "--model-channels", "32", "--channel-mult", "1,2,2,4", "--num-res-blocks", "1",
                       "--attention-resolutions", "16,8", "--num-head-channels", "32", "--batch-size", "2", "--lr",
                       "0.0003", "--lr-warmup-steps", "100", "--ema-decay", "0.999", "--mixed-precision", "bf16",
                       "--threads", "1", "--max-steps", "1000000", "--max-minutes", "60.0", "--checkpoint-every",
                       "100", "--validate-every", "100", "--val-samples", "16", "--val-grid", "6", "--log-every",
                       "25", "--seed", "0"]

    assert train_small.main(["--device", "cuda", "--dry-run", "--compile"]) == 0
    gpu = capsys.readouterr().out.split()
    options = dict(zip(gpu[3::1], gpu[4::1]))
    assert options["--output"] == "/work/runs/small_gpu" and options["--max-minutes"] == "8.0"
    assert options["--mixed-precision"] == "bf16" and int(options["--batch-size"]) >= 32
    assert int(options["--num-workers"]) >= 4 and "--compile" in gpu and "--cpu" not in gpu
    assert options["--audio-dropout"] == "0.1" and int(options["--reference-min-distance"]) > 0
    assert float(options["--reference-augment"]) > 0 and float(options["--audio-lr-scale"]) > 1
    assert options["--model-channels"] == "64"

    assert train_small.main(["--device", "cuda", "--dry-run", "--init", "INIT"]) == 0
    tuned = capsys.readouterr().out.split()
    assert "--init" in tuned and "--model-channels" not in tuned  # the sizes are the --init model's
    with pytest.raises(SystemExit):
        train_small.main(["--dry-run", "--compile"])  # the CPU run stays the README's
