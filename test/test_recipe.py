"""The GPU recipe: every stage's command runs, for two iterations on tiny data on the CPU (--dry-run)."""

from __future__ import annotations

import torch
import yaml

from superpoint_training import recipe


def test_recipe_lists_every_stage_with_command_estimate_and_label_disk(capsys):
    assert recipe.main([]) == 0
    out = capsys.readouterr().out
    assert "ESTIMATES for one H100" in out and "total (estimate):" in out
    for stage in recipe.STAGES:
        assert stage.command() in out
    assert out.count("labels 11 GB") == 2  # 82,783 label files of about 138 kB, once per export round


def test_dry_run_runs_every_stage_on_tiny_data(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        assert recipe.main(["--dry-run", "--workdir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    for stage in recipe.STAGE_ORDER:
        assert f"[dry-run] {stage}: ok" in out
    exper = tmp_path / "experiments"
    superpoint = torch.load(exper / "superpoint_coco" / "weights.pth", weights_only=True)
    assert superpoint["iteration"] == 2 and superpoint["model_config"]["descriptor_dim"] == 256
    assert superpoint["provenance"]["pretrained"]["experiment"] == "magic-point_coco"
    assert superpoint["provenance"]["labels"]["labels"]["folder"].endswith("magic-point_coco-export2")
    summary = yaml.safe_load((exper / "outputs" / "magic-point_coco-export2" / "summary.yaml").read_text())
    assert summary["written"] == 5 and "magic-point_coco" in summary["weights"]
    assert (exper / "hpatches_superpoint_coco" / "report.md").is_file()
