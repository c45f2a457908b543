"""Data-parallel training (engine.distributed) on CPUs with gloo: two processes, started as
torchrun and srun start them, train as one process does with the same batch."""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from actloc.engine import distributed
from actloc.methods import detector
from actloc.settings import LosaConfig, head_config
from actloc.store import windows
from actloc.io import read_json, write_json
from conftest import env_with_actloc, free_port
from test_train import SMALL_HEAD, settings

EPOCHS = 3  # after 2 warm-up epochs: 5 epochs of 3 steps, the last step of each with one window


def test_the_launcher_is_read_from_torchrun_or_srun_and_a_plain_run_is_one_process():
    torchrun = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}
    assert distributed.launched(torchrun) == (1, 4, 1)  # torchrun inside a SLURM job step
    srun = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4"}
    assert distributed.launched(srun) == (3, 4, 1)
    batch_script = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}  # sbatch --ntasks=4, actloc without srun
    assert distributed.launched(batch_script) == (0, 1, 0)
    assert distributed.launched({}) == (0, 1, 0)
    assert distributed.rendezvous({"MASTER_ADDR": "node7", "SLURM_JOB_ID": "123456"}) == {
        "MASTER_ADDR": "node7", "MASTER_PORT": str(20_000 + 123456 % 20_000)}


def test_a_world_of_one_shares_everything_and_sums_nothing():
    world = distributed.World()
    assert world.main and world.share([1, 2, 3]) == [1, 2, 3]
    assert distributed.World(1, 2).share([1, 2, 3]) == [2] and not distributed.World(1, 2).main
    tensor = torch.tensor([1.0, 2.0])
    assert world.total(tensor) is tensor and tensor.tolist() == [1.0, 2.0]


def step_gradients(rank, dataset, size, port=None, out=None):
    """One losa step's gradients over the first `size` training videos, whole, or as process
    `rank` of two (writing them to `out` from the first)."""
    world = distributed.World(rank, 2 if port else 1)
    if port:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
    torch.manual_seed(0)
    videos, classes = windows.load(*dataset, "training")
    net = detector.Detector("losa", 8, 2, len(classes), head_config(SMALL_HEAD), LosaConfig(reduction=2, heads=2)).train()
    chosen = world.share(videos[:size])
    if chosen:
        batch = windows.collate(chosen, [(0, v.length) for v in chosen], net.reads, net.head.max_stride)
        losses = net.head.loss(net(batch), batch["targets"], total=world.total)
        losses["loss"].backward()
    else:
        losses = net.head.no_loss(world.total)
    world.sum_gradients(net.parameters())
    grads = {"loss": world.total(losses["loss"].detach().clone()), "loss_norm": net.head.loss_norm.clone()} | {
        name: p.grad for name, p in net.named_parameters()}
    if port:
        if rank == 0:
            torch.save(grads, out)
        dist.destroy_process_group()
    return grads


@pytest.mark.parametrize("size", [3, 1])
def test_two_processes_sum_to_the_gradients_of_the_whole_batch(synthetic_dataset, tmp_path, size):
    """Three windows of unlike lengths (two and one a process, each padded to its own longest),
    or one (the second process has none): the gradients, loss and positive count of one step."""
    mp.start_processes(step_gradients, (synthetic_dataset, size, free_port(), tmp_path / "grads.pt"),
                       nprocs=2, start_method="spawn")
    whole, summed = step_gradients(0, synthetic_dataset, size), torch.load(tmp_path / "grads.pt", weights_only=True)
    assert whole.keys() == summed.keys()
    for name, grad in whole.items():
        torch.testing.assert_close(summed[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert whole["features.alpha"] is not None and whole["features.alpha"].abs().sum() > 0


def train_command(folder, dataset, **train_settings):
    index, annotations = dataset
    out = folder / "out"
    return ["actloc", "train", "--index", index, "--annotations", annotations, "--subset", "training",
            "--settings", json.dumps(settings("losa", epochs=EPOCHS, **train_settings)), "--out-model",
            out / "model.pt", "--out-log", out / "train_log.csv", "--out-summary", out / "train.json",
            "--checkpoint", folder / "checkpoint.pt", "--device", "cpu", "--threads", "1"]


def run(commands, envs):
    """Run commands side by side; their stderr, or the failure."""
    procs = [subprocess.Popen([str(a) for a in command], env=env, stderr=subprocess.PIPE, text=True)
             for command, env in zip(commands, envs)]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), "\n".join(errors)
    return errors


@pytest.fixture(scope="module")
def five_videos(synthetic_dataset, tmp_path_factory):
    """The synthetic dataset with five training videos: with a batch of 2, each epoch's last
    step has a window for one process only."""
    index, annotations = synthetic_dataset
    data = read_json(annotations)
    data["database"]["video_5"]["subset"] = "validation"
    path = tmp_path_factory.mktemp("five") / "annotations.json"
    write_json(path, data)
    return index, path


@pytest.fixture(scope="module")
def trainings(five_videos, tmp_path_factory):
    """The same training as one process, as two under torchrun, and as two as srun starts them."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("one", "torchrun", "srun")}
    env = env_with_actloc()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "--no-python", *train_command(folders["torchrun"], five_videos)]
    port = free_port()
    srun = [env | {"SLURM_JOB_ID": "1", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
                   "SLURM_STEP_NUM_TASKS": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port} for rank in (0, 1)]
    run([train_command(folders["one"], five_videos), torchrun], [env, env])
    run([train_command(folders["srun"], five_videos)] * 2, srun)
    return folders


def weights(folder):
    return torch.load(folder / "out" / "model.pt", weights_only=True)["state"]


def test_two_processes_train_as_one_with_the_same_batch(trainings, five_videos):
    one, two = (pd.read_csv(trainings[name] / "out" / "train_log.csv") for name in ("one", "torchrun"))
    assert list(two["epoch"]) == list(range(1, EPOCHS + 3))
    for column in ("loss", "cls_loss", "reg_loss"):
        torch.testing.assert_close(torch.tensor(two[column].values), torch.tensor(one[column].values), rtol=1e-4,
                                   atol=1e-6)
    reference, state = weights(trainings["one"]), weights(trainings["torchrun"])
    assert state.keys() == reference.keys()
    for key, value in state.items():
        # AdamW steps every weight by about the learning rate whatever its gradient's size, so
        # those without a gradient in exact arithmetic (attention's key bias) move by rounding
        # noise: a few 1e-4 after 15 steps at 3e-3; the others agree to 1e-5 (test above: exactly
        # summed gradients), and so do the outputs.
        torch.testing.assert_close(value, reference[key], rtol=0, atol=3e-4, msg=key)
    outputs = []
    for name in ("one", "torchrun"):
        net, _ = detector.load(trainings[name] / "out" / "model.pt")
        videos, _ = windows.load(*five_videos, "training")
        batch = windows.collate(videos, [(0, v.length) for v in videos], net.reads, net.head.max_stride)
        with torch.no_grad():
            outputs.append(torch.cat([torch.cat(level, 1).flatten() for level in net(batch)[:2]]))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    assert not torch.equal(state["head.loss_norm"], torch.tensor(100.0))  # the count's EMA moved, alike
    summary = read_json(trainings["torchrun"] / "out" / "train.json")
    assert summary["processes"] == 2 and read_json(trainings["one"] / "out" / "train.json")["processes"] == 1


def test_under_srun_the_processes_meet_and_train_as_under_torchrun(trainings):
    reference = weights(trainings["torchrun"])
    for key, value in weights(trainings["srun"]).items():
        assert torch.equal(value, reference[key]), key
    # The first process alone wrote: the outputs, their provenance record, no checkpoint left.
    written = sorted(p.name for p in (trainings["srun"] / "out").iterdir())
    assert written == sorted(p.name for p in (trainings["one"] / "out").iterdir())
    assert not (trainings["srun"] / "checkpoint.pt").exists()


def test_a_batch_smaller_than_the_processes_is_refused(five_videos, tmp_path):
    env = env_with_actloc()
    port = free_port()
    envs = [env | {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": port} for rank in (0, 1)]
    procs = [subprocess.Popen([str(a) for a in train_command(tmp_path, five_videos, batch=1)], env=e,
                              stderr=subprocess.PIPE, text=True) for e in envs]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [1, 1]
    assert all("batch 1 is smaller than the 2 processes" in error for error in errors)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_processes_killed_in_training_resume_to_the_uninterrupted_weights(trainings, five_videos, tmp_path):
    """Killed once the first epoch's checkpoint is written, resumed by a new torchrun: the
    weights of the uninterrupted run, exactly."""
    env = env_with_actloc()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--no-python", *train_command(tmp_path, five_videos)]
    proc = subprocess.Popen([str(a) for a in command], env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = tmp_path / "checkpoint.pt"
    while not checkpoint.exists() and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, 9)
    proc.wait()
    assert checkpoint.is_file() and not (tmp_path / "out" / "model.pt").exists()
    done = len(torch.load(checkpoint, weights_only=True)["log"])
    assert 1 <= done < EPOCHS + 2
    run([command], [env])
    reference = weights(trainings["torchrun"])
    for key, value in weights(tmp_path).items():
        assert torch.equal(value, reference[key]), key
    log = pd.read_csv(tmp_path / "out" / "train_log.csv")
    assert list(log["epoch"]) == list(range(1, EPOCHS + 3))
