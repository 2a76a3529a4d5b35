"""The analyze stage: a report of layers, parameters, receptive fields and FLOPs, logged as its own MLflow run."""

from mlflow.tracking import MlflowClient

from helpers import find_runs, run_here
from pipeline.models.unet import unet


def test_analyze_logs_report_and_headline_numbers(project):
    result = run_here(
        "analyze", project, "model.depth=2", "model.base_filters=8", "data.image_size=32", "model.stem=sobel"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = find_runs(client, "analysis")
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "analyze"
    expected = unet((32, 32, 3), 4, depth=2, base_filters=8, stem="sobel")
    assert run.data.metrics["num_params"] == expected.count_params()
    # receptive field of the deepest path, by hand: sobel stem 3, then 3x3 convs and 2x2 pools:
    # 5, 7, pool 8 (j=2), 12, 16, pool 18 (j=4), bottleneck 26, 34; up-convs keep the size while the
    # jump halves: decoder2 at j=2 adds 2*2 per conv: 38, 42; decoder1 at j=1 adds 2 per conv: 44, 46;
    # the 1x1 classifier adds nothing
    assert run.data.metrics["receptive_field"] == 46
    report = client.download_artifacts(run.info.run_id, "report.md", str(project))
    text = open(report).read()
    assert "| stem | FixedKernelConv2D | 32x32x2 |" in text and "27C²" in text
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {
        "plots/stem_kernels.png",
        "plots/sobel_bank.png",
        "plots/gabor_bank.png",
        "plots/receptive_field.png",
        "plots/filter_responses.png",
    } <= plots


def test_analyze_lenet5_sees_the_whole_32px_digit_at_c5(project):
    result = run_here("analyze", project, "model=lenet5", "data=digits")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = find_runs(client, "analysis")
    # by hand: C1 5, S2 6 (jump 2), C3 6 + 4*2 = 14, S4 16 (jump 4), C5 16 + 4*4 = 32: the whole input
    assert run.data.metrics["receptive_field"] == 32 and run.data.metrics["num_params"] == 61_706
    assert 0.8 < run.data.metrics["conv_param_share"] < 0.85  # C1 + C3 + C5 = 50,692 of 61,706
