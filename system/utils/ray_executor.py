"""Clients spread over Ray actors, behind the same calls as the in-process executor.

Each actor holds a fixed, contiguous block of clients (models, optimisers, data, random
streams) for the whole run, on its own device, and runs them one after another; actors
run in parallel. A broadcast puts its payload into Ray's object store once and every
actor reads it from there; replies come back as CPU tensors and are put in the order
of the client ids asked for. Traffic is counted here exactly as in-process, so the
numbers do not depend on the executor.

Ray is optional: this module is imported only for `--executor ray`.
"""
import os

import numpy as np
import torch

try:
    import ray
except ImportError:  # reported as a one-line UserError by cli.validate
    ray = None

from utils.errors import UserError
from utils.executors import Executor, InProcessExecutor, build_clients
from utils.memory import process_memory
from utils.seeding import derive_seed, seed_everything

SYSTEM_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(SYSTEM_DIR)
#: seconds to wait for every actor to start before concluding the cluster cannot place them
START_TIMEOUT = 600


class ClientHost:
    """The body of one Ray actor: a fixed set of clients behind an in-process executor.
    `build_client(args, cid, client_data)` builds each (see `utils.executors.build_clients`)."""

    def __init__(self, args, build_client, data_by_id: dict, seed: int, threads: int, actor_index: int):
        torch.set_num_threads(threads)
        # Clients use only their own seeded streams; this keeps anything else reproducible too.
        seed_everything(derive_seed(seed, "ray-actor", actor_index))
        clients = build_clients(args, build_client, data_by_id, sorted(data_by_id))
        self.executor = InProcessExecutor(clients, offload=args.offload)

    def ready(self) -> str:
        return f"{os.uname().nodename}:{os.getpid()}"

    def broadcast(self, client_ids, method, payload, guarded):
        return self.executor.broadcast(client_ids, method, payload, count=False, guarded=guarded)

    def scatter(self, method, payloads):
        return self.executor.scatter(method, payloads, count=False)

    def memory(self) -> dict:
        return process_memory()


def connect(address) -> None:
    """Join the cluster at `address`, or start a local Ray, once per process."""
    if ray.is_initialized():
        return
    path = os.pathsep.join([SYSTEM_DIR, REPO_ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    try:
        ray.init(address=address or None, include_dashboard=False, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot start or join Ray at --ray_address {address or '(local)'}: "
                        f"{' '.join(str(error).split())[:300]}") from error


def plan_actors(args, cluster: dict, device_type: str) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) that the cluster `cluster` (Ray resources) can
    place all at once, or a UserError saying what to change: an actor that waits for a
    resource the cluster lacks would wait forever."""
    cpus_total, gpus_total = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    cpus = args.ray_cpus_per_actor
    actors = args.ray_actors or max(1, int(cpus_total // cpus))
    actors = min(actors, args.num_clients)
    gpus = args.ray_gpus_per_actor
    if gpus is None:
        gpus = gpus_total / actors if device_type == "cuda" and gpus_total else 0.0
    if gpus > 0 and gpus_total == 0:
        raise UserError(f"--ray_gpus_per_actor {gpus} asks for GPUs but the Ray cluster has none: pass "
                        f"--ray_gpus_per_actor 0 (clients on CPUs) or join a cluster with GPUs via --ray_address")
    if gpus > 1 and gpus != int(gpus):
        raise UserError(f"--ray_gpus_per_actor {gpus}: Ray gives an actor a fraction of one GPU or whole GPUs")
    if actors * gpus > gpus_total + 1e-9:
        raise UserError(f"{actors} actors x --ray_gpus_per_actor {gpus} = {actors * gpus:g} GPUs, but the Ray "
                        f"cluster has {gpus_total:g}: lower --ray_actors or --ray_gpus_per_actor")
    if actors * cpus > cpus_total + 1e-9:
        raise UserError(f"{actors} actors x --ray_cpus_per_actor {cpus:g} = {actors * cpus:g} CPUs, but the Ray "
                        f"cluster has {cpus_total:g}: lower --ray_actors or --ray_cpus_per_actor")
    return actors, cpus, gpus


class RayExecutor(Executor):
    """Every client of the run, `build_client(args, cid, client_data)` in the actor holding it."""

    def __init__(self, args, build_client, data, seed: int):
        super().__init__()
        if ray is None:
            raise UserError("--executor ray needs Ray: pip install 'ray>=2.40', or drop --executor ray")
        connect(args.ray_address)
        device_type = torch.device(args.device).type
        actors, cpus, gpus = plan_actors(args, ray.cluster_resources(), device_type)
        actor_args = type(args)(**vars(args))
        actor_args.device = "cuda:0" if gpus > 0 else "cpu"  # Ray shows each actor its GPU as device 0
        threads = args.threads or max(1, int(cpus))
        blocks = [block.tolist() for block in np.array_split(np.arange(args.num_clients), actors)]
        host = ray.remote(ClientHost)
        self._actors = []
        self._owner = {}
        for index, block in enumerate(blocks):
            data_by_id = {cid: data.clients[cid] for cid in block}
            self._actors.append(host.options(num_cpus=cpus, num_gpus=gpus).remote(
                actor_args, build_client, data_by_id, seed, threads, index))
            self._owner.update({cid: index for cid in block})
        try:
            ray.get([actor.ready.remote() for actor in self._actors], timeout=START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise UserError(f"the {actors} Ray actors ({cpus:g} CPUs, {gpus:g} GPUs each) did not all start within "
                            f"{START_TIMEOUT} s: the cluster cannot place them; lower --ray_actors") from None
        self.placement = {"actors": actors, "cpus_per_actor": cpus, "gpus_per_actor": gpus,
                          "clients_per_actor": [len(block) for block in blocks]}

    @property
    def client_ids(self) -> list[int]:
        return sorted(self._owner)

    def _by_actor(self, client_ids) -> dict:
        groups = {}
        for cid in client_ids:
            groups.setdefault(self._owner[cid], []).append(cid)
        return groups

    def _broadcast(self, client_ids, method, payload, guarded):
        shared = ray.put(payload)  # once, whatever the number of actors
        groups = self._by_actor(client_ids)
        pending = {index: self._actors[index].broadcast.remote(ids, method, shared, guarded)
                   for index, ids in groups.items()}
        return self._in_order(method, client_ids, groups, pending)

    def _scatter(self, method, payloads):
        groups = self._by_actor(payloads)
        pending = {index: self._actors[index].scatter.remote(method, {cid: payloads[cid] for cid in ids})
                   for index, ids in groups.items()}
        return self._in_order(method, list(payloads), groups, pending)

    def _in_order(self, method, client_ids, groups, pending) -> list:
        """The actors' replies in the order of `client_ids`, reporting progress as each actor's block returns."""
        index_of = {ref: index for index, ref in pending.items()}
        waiting, results, done = list(pending.values()), {}, 0
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            index = index_of[ready[0]]
            results[index] = ray.get(ready[0])
            done += len(groups[index])
            self.report_progress(method, done, len(client_ids))
        by_client = {}
        for index, ids in groups.items():
            by_client.update(zip(ids, results[index]))
        return [by_client[cid] for cid in client_ids]

    def memory(self) -> dict:
        """This process's peaks plus every actor's (host memory adds up; so does GPU memory)."""
        reports = [process_memory()] + ray.get([actor.memory.remote() for actor in self._actors])
        return {"host_mib": sum(r["host_mib"] for r in reports), "gpu_mib": sum(r["gpu_mib"] for r in reports)}

    def close(self) -> None:
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
