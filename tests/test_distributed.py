"""Multi-host training on tf.distribute: two worker processes on loopback ports train one model together."""

import json
import os
import re
import subprocess
import sys

import mlflow
import pytest

from helpers import TINY, free_port, run_here


def test_multi_worker_needs_tf_config(project):
    done = run_here("train", project, *TINY, "trainer.strategy=multi_worker")
    assert done.returncode == 2
    assert "trainer.strategy=multi_worker needs TF_CONFIG" in done.stderr


def test_unknown_strategy_is_named(project):
    done = run_here("train", project, *TINY, "trainer.strategy=horovod")
    assert done.returncode == 2
    assert "trainer.strategy='horovod' is unknown; valid: auto, mirrored, multi_worker" in done.stderr


@pytest.mark.slow
def test_two_workers_train_together_stop_at_the_chief_s_clock_and_the_chief_logs_one_run(project):
    assert run_here("prepare", project, *TINY).returncode == 0  # both workers then read the same files
    hosts = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    store = f"sqlite:///{project}/mlflow.db"
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": store,
            "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}),
        }
        command = [sys.executable, "-m", "pipeline.commands.train", f"paths.root={project}", *TINY]
        command += ["trainer.strategy=multi_worker", "trainer.verbose=0", f"hydra.run.dir={project}/outputs/w{index}"]
        # two clocks that disagree: the chief's budget is spent after its first epoch, the other's never; a
        # worker stopping on its own would leave the other waiting in an all-reduce
        command += [f"trainer.max_time={1 if index == 0 else 3600}"]
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    logs = [out + err for out, err in outputs]
    scores = [found.group(1) for log in logs for found in re.finditer(r"test mean_iou: ([0-9.]+)", log)]
    # one replicated model: the same test score on both, up to the summation order of the all-reduce
    assert len(scores) == 2 and float(scores[0]) == pytest.approx(float(scores[1]), abs=0.005)

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["shapes"], output_format="list")
    assert len(runs) == 1, "only the chief records into the shared store"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "multi_worker"
    assert run.data.tags["stopped_by"] == "max_time"  # both workers stopped at the chief's word, after epoch 1
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")) == 1
    assert (project / "outputs" / "w1" / "worker1-mlflow.db").is_file()


def test_gpu_trainer_extends_the_cpu_one(compose_config):
    cfg = compose_config(["trainer=gpu"])
    assert cfg.trainer.precision == "mixed_bfloat16" and cfg.trainer.jit_compile and cfg.trainer.memory_growth
    assert cfg.trainer.epochs == compose_config([]).trainer.epochs  # everything else from trainer=cpu


def test_global_batch_and_learning_rate_scale_with_replicas():
    from pipeline.training.runtime import Distribution

    four = Distribution(replicas=4)
    assert four.global_batch(32) == 128
    assert four.scaled_lr(1e-3) == pytest.approx(4e-3)
    assert four.scaled_lr(1e-3, "sqrt") == pytest.approx(2e-3)
    assert four.scaled_lr(1e-3, "none") == pytest.approx(1e-3)


def test_auto_precision_follows_the_cpu():
    from pipeline.errors import ConfigError
    from pipeline.training.runtime import native_bfloat16_cpu, resolve_precision

    assert resolve_precision("auto") == ("mixed_bfloat16" if native_bfloat16_cpu() else "float32")
    assert resolve_precision("float32") == "float32"
    with pytest.raises(ConfigError, match="trainer.precision='fp8' is unknown; valid: auto, float32"):
        resolve_precision("fp8")


def test_under_jax_a_split_the_devices_cannot_share_evenly_is_one_line():
    from pipeline.errors import ConfigError
    from pipeline.training.runtime import Distribution

    two = Distribution(replicas=2)
    two.check_split_sizes({"train": 32, "val": 8, "test": 8}, backend="jax")
    two.check_split_sizes({"train": 33}, backend="tensorflow")  # MirroredStrategy takes uneven batches
    uneven = r"2 devices share every batch, but the train split has 33 images, so its last batch cannot be shared"
    with pytest.raises(ConfigError, match=uneven + r" evenly; valid: data.splits.train=32"):
        two.check_split_sizes({"train": 33, "val": 8}, backend="jax")


def test_under_jax_several_processes_each_feed_their_slice_of_the_global_batch():
    import numpy as np

    from pipeline.data.sequence import ImageBatches

    rng = np.random.default_rng(0)
    images, labels = rng.uniform(0, 255, (20, 8, 8, 1)).astype(np.float32), np.arange(20)
    whole = ImageBatches(images, labels, batch_size=8, shuffle=True, seed=3)
    parts = [ImageBatches(images, labels, batch_size=8, shuffle=True, seed=3, shard=(i, 2)) for i in range(2)]
    for index in range(len(whole)):  # batches of 8, 8 and 4: halves of 4, 4 and 2
        x, y = whole.batch(1, index)
        halves = [part.batch(1, index) for part in parts]
        np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), x)
        np.testing.assert_array_equal(np.concatenate([h[1] for h in halves]), y)
        assert len(halves[0][1]) == len(y) // 2


def test_jax_multi_worker_without_a_cluster_is_one_line(monkeypatch):
    from pipeline.errors import ConfigError
    from pipeline.training.runtime import _jax_distribution

    for name in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    expected = (
        r"needs the cluster: KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES not set "
        r"\(found: KERAS_DISTRIBUTION_PROCESS_ID=1\); valid: KERAS_DISTRIBUTION_JOB_ADDRESSES=<coordinator"
    )
    with pytest.raises(ConfigError, match=expected):
        _jax_distribution("multi_worker")


def test_the_time_budget_stops_where_the_chief_says():
    from pipeline.training.callbacks import TimeBudget

    class Model:
        stop_training = False

    for chief_says, stopped in ((False, None), (True, 0)):
        budget = TimeBudget(0.0, agree=lambda over, says=chief_says: says)  # this process is over its budget
        budget.set_model(Model())
        budget.on_epoch_begin(0)
        budget.on_epoch_end(0)
        assert budget.stopped_epoch == stopped


def test_devices_sharing_batches_under_jax_refuse_to_skip_bad_files_in_one_line():
    from pipeline.errors import ConfigError
    from pipeline.training.runtime import Distribution

    Distribution().check_bad_file_policy("skip", backend="jax")  # one device: a short batch is still a batch
    Distribution(replicas=2).check_bad_file_policy("skip", backend="tensorflow")  # MirroredStrategy takes it
    Distribution(replicas=2, worker=1, processes=2).check_bad_file_policy("error", backend="jax")
    with pytest.raises(ConfigError, match=r"data.on_bad_file=skip cannot be used when 2 devices share every batch"):
        Distribution(replicas=2, worker=1, processes=2).check_bad_file_policy("skip", backend="jax")
