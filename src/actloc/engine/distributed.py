"""Data-parallel training over several processes, one per GPU: started by `torchrun`, or by
`srun` in a SLURM job. Every process draws the same epoch plan from the same seed and takes its
share of each step's windows; each one's loss is its share of the whole batch's sum (the head
divides by the positive count of the whole batch), so the gradients, summed over processes, are
those of one process with the whole batch. Every process then takes the same optimiser step
and keeps the same weights; the first alone writes.
"""

import contextlib
import logging
import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..io import InputError
from .device import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among those of one training: `rank` of `size`."""

    rank: int = 0
    size: int = 1

    @property
    def main(self):
        """The process that writes outputs, checkpoints and progress."""
        return self.rank == 0

    def share(self, items):
        """This process's part of a step's items: every size-th from its rank (empty where a
        step has fewer items than processes, which still takes part in every sum)."""
        return items[self.rank::self.size]

    def total(self, tensor):
        """`tensor` summed over the processes, in place."""
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor

    def sum_gradients(self, params):
        """Each parameter's gradient summed over the processes (none counts as zeros), in one
        all-reduce of a flat buffer rather than one per tensor (LoSA has hundreds)."""
        if self.size == 1:
            return
        params = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # How many processes had a gradient: a parameter none of them used keeps none, as AdamW
        # would have skipped it in one process.
        had = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
        flat = self.total(torch.cat([g.reshape(-1) for g in grads] + [had]))
        parts = flat.split([g.numel() for g in grads] + [len(params)])
        for p, part, used in zip(params, parts, parts[-1].tolist()):
            p.grad = part.view_as(p).to(p.dtype) if used else None


def launched(environ=os.environ):
    """(rank, size, local rank) from the launcher's environment: torchrun's RANK, WORLD_SIZE and
    LOCAL_RANK, or srun's SLURM_PROCID, SLURM_STEP_NUM_TASKS and SLURM_LOCALID (the step's
    tasks, not the job's: a batch script that runs `actloc train` without srun is one process);
    (0, 1, 0) for a plain run."""
    if "WORLD_SIZE" in environ:
        return int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0))
    if int(environ.get("SLURM_STEP_NUM_TASKS", 1)) > 1:
        return int(environ["SLURM_PROCID"]), int(environ["SLURM_STEP_NUM_TASKS"]), int(environ["SLURM_LOCALID"])
    return 0, 1, 0


def rendezvous(environ=os.environ):
    """MASTER_ADDR and MASTER_PORT for srun's processes where the job did not set them: the
    step's first node, and a port from the job id (two jobs on a node do not meet)."""
    address = environ.get("MASTER_ADDR")
    if address is None:
        nodes = subprocess.run(["scontrol", "show", "hostnames", environ["SLURM_STEP_NODELIST"]],
                               capture_output=True, text=True, check=True).stdout.split()
        address = nodes[0]
    port = environ.get("MASTER_PORT") or str(20_000 + int(environ.get("SLURM_JOB_ID", 0)) % 20_000)
    return {"MASTER_ADDR": address, "MASTER_PORT": port}


@contextlib.contextmanager
def joined(device="auto", batch=1):
    """(World, device) of this process for the length of a training of `batch` windows a step:
    with several processes, their group (NCCL on CUDA, each on the GPU of its local rank; gloo
    on CPUs), and logging above warnings from the first process alone."""
    rank, size, local_rank = launched()
    if batch < size:
        raise InputError(f"train: batch {batch} is smaller than the {size} processes: each one needs a window a "
                         "step; raise train.batch or start fewer")
    device = resolve_device(device)
    if size == 1:
        yield World(), device
        return
    if device.type == "cuda":  # srun may show each process its own GPU alone, as device 0
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(rendezvous())
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size,
                            device_id=device if device.type == "cuda" else None)
    if rank:
        logging.getLogger("actloc").setLevel(logging.WARNING)
    log.info("data-parallel training: %d processes, this one rank %d on %s", size, rank, device)
    try:
        yield World(rank, size), device
    finally:
        dist.destroy_process_group()
