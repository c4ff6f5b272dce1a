"""Judge replicas as Ray actors, each holding the in-process vLLM engine of ``tourney.backends.vllm``.

The coordinator (engine, strategies, cache) stays in this process; only generation moves out. Prompts are rendered
by each replica with the same tokenizer, forcing and seeds as ``--backend vllm``, so the outputs are the same bytes.
Lockstep splits a batch into one contiguous share per live replica (prefix-cache neighbours stay together);
pipelined sends each request to the replica with the least work in flight. A replica that dies or stops answering is
restarted by Ray (``max_restarts``); its calls in flight go to the others, or to it once it is back; one that is not
back within ``replica_timeout`` ends the run. Every wait has a timeout. ``ray`` is imported only when this backend
starts (``connect``), so the rest of tourney never needs it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tourney.aio import LoopThread, gather_all
from tourney.backends.base import BackendBase, Chat, Generation, Sampling, Scored
from tourney.backends.vllm import EngineDied, VLLMBackend, one_line
from tourney.errors import BackendError, InputError

HEARTBEAT = 10.0  # seconds between pings of a replica with work in flight
MAX_LOSSES = 3  # replicas one call may lose before the run ends
PING_TIMEOUT = 60.0  # a replica that does not answer a ping this long is treated as lost
PLACE_TIMEOUT = 120.0  # how long the cluster may take to reserve the replicas' resources
PRIVATE_OBJECT_STORE = 512 << 20  # the private cluster's object store: verdict texts, not tensors, cross it
# Variables that shape a replica's engine or find its model; sent along because a joined cluster's workers do not
# share this process's environment. Thread binding is per replica (``cpu_binding``), never copied.
FORWARDED = ("VLLM_", "HF_", "TRANSFORMERS_", "TOURNEY_")
NOT_FORWARDED = {"VLLM_CPU_OMP_THREADS_BIND"}


@dataclass(frozen=True)
class Failed:
    """A replica's BackendError, returned as a value so that its one line survives the trip (no remote traceback)."""

    message: str
    index: int | None = None


@dataclass
class Slot:
    """One replica as the coordinator sees it: its actor, its work in flight and whether it is up."""

    index: int
    actor: Any
    outstanding: int = 0
    up: bool = True
    where: str = "?"  # the node's address, once known
    lost: asyncio.Future[None] | None = None  # resolved when the replica is found dead; a new one per life
    revive: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def name(self) -> str:
        """How a message names the replica."""
        return f"replica {self.index} (node {self.where})"


class Lost(Exception):
    """The replica died or stopped answering while it held a call."""


class RayBackend(BackendBase):
    """``replicas`` vLLM engines as Ray actors on a cluster (``address``: None starts a private one on 127.0.0.1)."""

    def __init__(
        self,
        model: str,
        *,
        replicas: int = 1,
        address: str | None = None,
        replica_timeout: float = 900.0,
        **engine: Any,
    ) -> None:
        """Load the tokenizer here (prompts, identity, context fitting); nothing on the cluster starts until used.

        ``engine``: ``VLLMBackend``'s keyword arguments, given to every replica's engine unchanged.
        """
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise InputError(f"must be an integer >= 1, got {replicas!r}", field="--replicas")
        if not replica_timeout > 0:
            raise InputError(f"must be > 0, got {replica_timeout!r}", field="--replica-timeout")
        self.local = VLLMBackend(model, **engine)  # never started: the replicas run the engines
        self.model, self.engine = model, engine
        self.replicas, self.address, self.replica_timeout = replicas, address, float(replica_timeout)
        self.batched, self.tokenizer, self.spec = self.local.batched, self.local.tokenizer, self.local.spec
        self.tensor_parallel = int(engine.get("tensor_parallel_size", 1))
        self.loop = LoopThread("tourney-ray")
        self.slots: list[Slot] = []
        self.fatal: BackendError | None = None
        self.restarts = 0  # replicas found lost and brought back
        self.rerouted = 0  # calls handed to another replica (or to the same one back) after a loss
        self._group: Any = None
        self._owns_ray = False
        self._queue: list[tuple[str, tuple[Any, ...], asyncio.Future[Any]]] = []  # pipelined calls not sent yet
        self._sending: set[asyncio.Task[None]] = set()
        self._start_lock = asyncio.Lock()

    @property
    def retries(self) -> int:
        """Calls run again because their replica was lost (the closing line's "retries")."""
        return self.rerouted

    # ---- what the vLLM backend knows without an engine ---------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """The in-process engine's identity: the same model, template and engine, so the same cache entries."""
        return self.local.identity()

    def label(self) -> str:
        """The progress line's name: "ray: 2 vllm replicas" (the identity says vllm: same model, same judgments)."""
        return f"ray: {self.replicas} vllm replica{'s' if self.replicas != 1 else ''}"

    def context_limit(self) -> int:
        """The replicas' context once started, else what the in-process engine would have."""
        return self.max_model_len or self.local.context_limit()

    def model_limit(self) -> int:
        """The model's own context limit."""
        return self.local.model_limit()

    def starting(self) -> bool:
        """Whether the engine is being built now (another thread may ask: a Ctrl-C says why it waits)."""
        return self._start_lock.locked()

    def fittable(self) -> bool:
        """Whether the replicas' context can still be sized to the work (no context asked for, none started)."""
        return not self.slots and self.local.fittable()

    def fit_context(self, needed: int) -> int | None:
        """Size the replicas' context for ``needed`` tokens (see ``VLLMBackend.fit_context``)."""
        return self.local.fit_context(needed) if self.fittable() else None

    def fit_prompts(self, texts: Sequence[str], max_tokens: int) -> int | None:
        """Size the replicas' context for the longest rendered prompt plus ``max_tokens``."""
        return self.local.fit_prompts(texts, max_tokens) if self.fittable() else None

    def too_long(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """The rendered prompts the replicas' context cannot hold (see ``VLLMBackend.too_long``)."""
        return self.local.too_long(texts)

    def render(self, messages: Chat) -> str:
        """The prompt text the model's chat template writes."""
        return self.local.render(messages)

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of a text, without special tokens."""
        return await self.local.tokenize(text)

    async def chat_ids(self, messages: Chat) -> list[int]:
        """Token ids of rendered chat messages."""
        return await self.local.chat_ids(messages)

    # ---- the cluster -------------------------------------------------------------------------------------------

    def plan(self) -> list[str]:
        """Connect to the cluster (starting the private one) and say where the replicas would go, loading nothing;
        an InputError when they cannot all be placed."""
        ray, started = connect(self.address)
        self._owns_ray = self._owns_ray or started
        return plan_lines(cluster_nodes(ray), self.replicas, self.tensor_parallel)

    async def start(self) -> None:
        """Place the replicas, start their engines at once, and wait (at most ``replica_timeout``) for all of them."""
        async with self._start_lock:
            if self.slots:
                return
            self.plan()  # refuses an unplaceable request before any model loads
            import ray
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            kind = "GPU" if any(n["GPU"] for n in cluster_nodes(ray)) else "CPU"
            bundle = {"CPU": 1.0, "GPU": float(self.tensor_parallel)} if kind == "GPU" else {
                "CPU": float(self.tensor_parallel)}  # fmt: skip
            self._group = placement_group([bundle] * self.replicas, strategy="SPREAD")
            try:
                await within(self._group.ready(), PLACE_TIMEOUT)
            except TimeoutError:
                raise BackendError(f"the cluster did not free {self.replicas} x {bundle} within {PLACE_TIMEOUT:g} s "
                                   "(other work holds its resources)") from None  # fmt: skip
            remote = ray.remote(Replica)
            engine = self.engine | {"max_model_len": self.local.context or self.local.fitted}
            env = forwarded_env(cpu=kind == "CPU")
            for i in range(self.replicas):
                actor = remote.options(
                    num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0), max_restarts=-1, max_task_retries=0,
                    max_concurrency=1 << 16, runtime_env={"env_vars": env}, name=f"tourney-{os.getpid()}-replica-{i}",
                    scheduling_strategy=PlacementGroupSchedulingStrategy(self._group, placement_group_bundle_index=i),
                ).remote(self.model, engine, i, self._group if kind == "CPU" else None)  # fmt: skip
                self.slots.append(Slot(i, actor, lost=asyncio.get_running_loop().create_future()))
            infos = await gather_all([self._started(s) for s in self.slots])
            self.max_model_len = min(int(info["max_model_len"]) for info in infos)
            for s in self.slots:
                s.tasks.append(asyncio.get_running_loop().create_task(self._watch(s)))

    async def _started(self, slot: Slot) -> dict[str, Any]:
        """Wait for one replica's engine; its failure to load is the run's, in the vLLM backend's words."""
        try:
            info = await self._ask_start(slot)
        except TimeoutError as err:
            raise BackendError(f"{slot.name()} did not start within {self.replica_timeout:g} s "
                               f"(--replica-timeout; last: {err})") from None  # fmt: skip
        except Exception as err:  # Ray will not restart it: its errors are long
            raise BackendError(f"{slot.name()} failed to start: {ray_error(err)}") from err
        if isinstance(info, Failed):
            raise BackendError(f"{info.message} ({slot.name()})")
        slot.where = info["node"]
        return info

    # ---- calls -------------------------------------------------------------------------------------------------

    async def generate(self, prompts: Sequence[Chat], sampling: Sequence[Sampling]) -> list[Generation]:
        """Lockstep: one share per live replica, one batched call each; pipelined: queued (see ``_queued``)."""
        out: list[Generation] = await self._spread("generate", list(prompts), list(sampling))
        return out

    async def next_token_logprobs(self, prompts: Sequence[Sequence[int]], tokens: Sequence[int]) -> list[Scored]:
        """The log-probs of ``tokens`` after each prompt, spread over the replicas as ``generate`` is."""
        out: list[Scored] = await self._spread("next_token_logprobs", [list(p) for p in prompts], list(tokens))
        return out

    async def _spread(self, method: str, requests: list[Any], rest: list[Any]) -> list[Any]:
        """``method`` over ``requests``: lockstep, one contiguous share per live replica; pipelined, queued.
        ``rest``: per-request values (a list as long as ``requests``) or one value all share (the scored tokens)."""
        per_request = method == "generate"
        if not self.batched:
            return await self._queued(method, (requests, rest))
        live = max(1, sum(s.up for s in self.slots))
        parts = await gather_all([self._call(method, b - a, a, requests[a:b], rest[a:b] if per_request else rest)
                                  for a, b in shares(len(requests), live)])  # fmt: skip
        return [x for part in parts for x in part]

    async def _queued(self, method: str, args: tuple[Any, ...]) -> Any:
        """Pipelined: the calls made in one turn of the event loop leave together, one Ray call per live replica
        (a Ray call costs milliseconds of CPU at both ends; a pipelined judge makes one per request), and each
        comes back on its own (``Replica.each``)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._queue.append((method, args, done))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await done

    def _flush(self) -> None:
        """Send the queued calls: one share per live replica, each to the least busy one."""
        queue, self._queue = self._queue, []
        live = max(1, sum(s.up for s in self.slots))
        for a, b in shares(len(queue), live):
            task = asyncio.get_running_loop().create_task(self._send(queue[a:b]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, part: list[tuple[str, tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        """One Ray call for a share of the queue; each caller gets its own result or error."""
        weight = sum(len(args[0]) for _, args, _ in part)
        try:
            results = await self._call("each", weight, 0, [(method, args) for method, args, _ in part])
        except asyncio.CancelledError:  # the run is ending
            for _, _, done in part:
                done.cancel()
            raise
        except Exception as err:  # the whole call failed: every caller hears it
            for _, _, done in part:
                if not done.done():
                    done.set_exception(err)
            return
        for (_, _, done), result in zip(part, results):
            if done.done():
                continue
            if isinstance(result, Failed):
                done.set_exception(BackendError(result.message, result.index))
            else:
                done.set_result(result)

    async def _call(self, method: str, weight: int, offset: int, *args: Any) -> Any:
        """Run ``method`` on the live replica with the least work in flight; a replica lost meanwhile hands the
        call to another (or to itself once back). ``offset``: the share's place in the caller's batch."""
        for losses in itertools.count(1):
            slot = await self._pick()
            slot.outstanding += weight
            try:
                out = await self._await(slot, getattr(slot.actor, method).remote(*args))
            except Lost:
                self._down(slot)
                if losses == MAX_LOSSES:  # a request that kills any engine (memory) must not restart them for ever
                    raise BackendError(
                        f"one call lost its replica {MAX_LOSSES} times (last {slot.name()}): its requests may be what "
                        "ends the replicas (see their log)"
                    ) from None
                self.rerouted += 1
                continue
            finally:
                slot.outstanding -= weight
            if isinstance(out, Failed):
                raise BackendError(out.message, None if out.index is None else out.index + offset)
            return out

    async def _pick(self) -> Slot:
        """The live replica with the least work in flight; with none up, wait for the first one back."""
        while True:
            if self.fatal is not None:
                raise self.fatal
            live = [s for s in self.slots if s.up]
            if live:
                return min(live, key=lambda s: (s.outstanding, s.index))
            waits = [s.revive for s in self.slots if s.revive is not None and not s.revive.done()]
            if not waits:
                raise BackendError("every replica is lost")
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)  # each revive has its own timeout

    async def _await(self, slot: Slot, ref: Any) -> Any:
        """The result of a call, or ``Lost`` when its replica dies or is found unreachable first."""
        result = asyncio.ensure_future(within(ref, None))
        assert slot.lost is not None
        await asyncio.wait([result, slot.lost], return_when=asyncio.FIRST_COMPLETED)
        if not result.done():
            result.cancel()
            cancel(ref)
            raise Lost
        return result_of(result, slot)

    def _down(self, slot: Slot) -> None:
        """Mark a replica lost (once per life) and start bringing it back."""
        if not slot.up:
            return
        slot.up = False
        if slot.lost is not None and not slot.lost.done():
            slot.lost.set_result(None)
        slot.revive = asyncio.get_running_loop().create_task(self._revive(slot))

    async def _ask_start(self, slot: Slot) -> Any:
        """The replica's ``start`` answer (its info, or ``Failed``), asked again while Ray restarts its process (a
        kill, a lost node, memory), for ``replica_timeout`` at most: then TimeoutError (its text: the last problem).
        Ray's ActorDiedError, raised as it is, means Ray will not restart the actor."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.replica_timeout
        problem = "no answer"
        while (left := deadline - loop.time()) > 0:
            try:
                return await within(slot.actor.start.remote(), left)
            except TimeoutError:
                break
            except Exception as err:
                if type(err).__name__ == "ActorDiedError":  # a restarting actor queues calls: this one is gone
                    raise
                problem = one_line(err)  # unreachable for a moment: ask again shortly
                await asyncio.sleep(min(2.0, max(deadline - loop.time(), 0)))
        raise TimeoutError(problem)

    async def _revive(self, slot: Slot) -> None:
        """Wait for Ray to restart the replica and for its engine; past ``replica_timeout`` the run ends."""
        try:
            info = await self._ask_start(slot)
        except TimeoutError as err:
            problem = str(err)
        except Exception as err:
            self.fatal = BackendError(f"{slot.name()} was lost and Ray will not restart it ({ray_error(err)})")
            return
        else:
            if not isinstance(info, Failed):
                slot.where, slot.up, slot.lost = info["node"], True, asyncio.get_running_loop().create_future()
                self.restarts += 1
                logging.getLogger(__name__).warning("%s is back", slot.name())
                return
            problem = info.message
        self.fatal = BackendError(f"{slot.name()} was lost and did not come back within {self.replica_timeout:g} s "
                                  f"(--replica-timeout; last: {problem})")  # fmt: skip

    async def _watch(self, slot: Slot) -> None:
        """While the replica holds work, ping it every ``HEARTBEAT`` s; no answer within ``PING_TIMEOUT``: lost."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            if not slot.up or not slot.outstanding:
                continue
            try:
                await within(slot.actor.ping.remote(), PING_TIMEOUT)
            except Exception:  # timeout or a dead actor alike
                self._down(slot)

    # ---- shutdown ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the replicas' engines, kill the actors, free the placement group; end a private cluster."""
        self.loop.close(self._shutdown())
        self.local.close()

    async def _shutdown(self) -> None:
        """Ask every replica to shut its engine down (bounded), then kill it; the private cluster goes last."""
        slots, self.slots = self.slots, []
        if not slots and not self._owns_ray:
            return
        import ray

        for s in slots:
            for t in [*s.tasks, *([s.revive] if s.revive else [])]:
                t.cancel()
        await asyncio.gather(*[quietly(within(s.actor.shutdown.remote(), 60.0)) for s in slots if s.up])
        for s in slots:
            try:
                ray.kill(s.actor, no_restart=True)
            except Exception:  # already gone
                pass
        if self._group is not None:
            try:
                ray.util.remove_placement_group(self._group)
            except Exception:  # the cluster is gone
                pass
            self._group = None
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


class Replica:
    """A Ray actor: one ``VLLMBackend`` in this worker process, built on the first call (and again after a restart).

    Its methods return ``Failed`` for the backend's own errors, so the coordinator gets the same one line as
    in-process; anything else (the process dying) reaches the coordinator as Ray's actor errors.
    """

    def __init__(self, model: str, engine: dict[str, Any], index: int, group: Any = None) -> None:
        """Keep the arguments only: a failing constructor would leave an actor Ray cannot restart."""
        self.model, self.engine, self.index, self.group = model, engine, index, group
        self.backend: VLLMBackend | None = None
        self.info: dict[str, Any] | None = None  # set once the engine runs
        self.lock = asyncio.Lock()
        self.closing = False

    async def start(self) -> dict[str, Any] | Failed:
        """Build and start the engine once; where it runs and its context, or why it cannot."""
        if self.info is not None:
            return self.info
        import ray

        async with self.lock:
            if self.backend is None:
                if self.group is not None and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
                    ranks = int(self.engine.get("tensor_parallel_size", 1))
                    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(self.group, self.index, ranks)
                try:
                    self.backend = VLLMBackend(self.model, **self.engine)
                except (BackendError, InputError) as err:
                    return Failed(str(err))
            backend = self.backend
            try:
                await backend.loop.wrap(backend.start())
            except BackendError as err:
                return Failed(str(err), err.index)
            node = ray.util.get_node_ip_address()
            self.info = {"max_model_len": backend.max_model_len, "pid": os.getpid(), "node": node}
        return self.info

    async def generate(self, prompts: list[Chat], sampling: list[Sampling]) -> list[Generation] | Failed:
        """``VLLMBackend.generate`` on this replica's engine."""
        return await self._run("generate", prompts, sampling)

    async def next_token_logprobs(self, prompts: list[list[int]], tokens: list[int]) -> list[Scored] | Failed:
        """``VLLMBackend.next_token_logprobs`` on this replica's engine."""
        return await self._run("next_token_logprobs", prompts, tokens)

    async def each(self, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Several backend calls at once, each with its own result or ``Failed`` (a pipelined coordinator's queue)."""
        return list(await asyncio.gather(*[self._run(method, *args) for method, args in calls]))

    async def _run(self, method: str, *args: Any) -> Any:
        """Start the engine if needed (a restarted replica has none yet), then run one backend call."""
        started = await self.start()
        if isinstance(started, Failed):
            return started
        assert self.backend is not None
        try:
            return await self.backend.loop.wrap(getattr(self.backend, method)(*args))
        except EngineDied as err:
            if self.closing:
                return Failed(str(err))
            # Its engine's process died (on a GPU it runs beside the actor): end the actor too, so that Ray restarts
            # the replica and the coordinator hands its calls on, as for any lost replica (the guard ends the rest).
            print(f"tourney replica {self.index}: {err}; ending this process for Ray to restart", file=sys.stderr,
                  flush=True)  # fmt: skip
            os._exit(1)
        except BackendError as err:
            return Failed(str(err), err.index)

    async def ping(self) -> int:
        """Answer at once (the engine runs on its own thread): the process id."""
        return os.getpid()

    async def shutdown(self) -> None:
        """Shut the engine down cleanly before the actor is killed."""
        self.closing = True  # calls still running now fail as the engine goes: not a death to restart from
        if self.backend is not None:
            self.backend.close()
            self.backend = None


# ---- helpers ---------------------------------------------------------------------------------------------------


def connect(address: str | None) -> tuple[Any, bool]:
    """``ray``, connected: to the cluster at ``address`` ("auto": the one ``ray start`` made on this machine), or
    (None) a private cluster on 127.0.0.1 that ends with the run; and whether this call connected (an existing
    connection, e.g. a caller's own ``ray.init``, is kept and left to its owner)."""
    if address is None:
        # Ray binds a single-machine cluster to the loopback interface only when it believes clusters are off.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if "ray" in sys.modules:  # imported already (the variable is read at import)
            import ray._private.ray_constants as constants

            constants.ENABLE_RAY_CLUSTER = False
    import ray

    if ray.is_initialized():
        return ray, False
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address is None:
            ray.init(address="local", object_store_memory=PRIVATE_OBJECT_STORE, include_dashboard=False, **common)
        else:
            ray.init(address=address, **common)
    except Exception as err:  # no cluster there, a token missing, a version mismatch: Ray says which, at length
        where = "a private local cluster" if address is None else f"the cluster at {address!r}"
        raise BackendError(f"cannot connect to {where}: {one_line(err)}") from err
    return ray, True


def plan_lines(nodes: list[dict[str, Any]], replicas: int, ranks: int) -> list[str]:
    """What a dry run says: the cluster, what a replica takes, and which replicas go to which node."""
    kind = "GPU" if any(n["GPU"] for n in nodes) else "CPU"
    places = place(nodes, replicas, ranks, kind)
    lines = [f"ray: cluster of {describe_cluster(nodes)}; each replica takes {ranks} {kind}{'s' * (ranks != 1)}"]
    for node in nodes:
        mine = [str(i) for i, n in enumerate(places) if n == node["address"]]
        if mine:
            lines.append(f"ray: node {node['address']}: replica{'s' * (len(mine) != 1)} {', '.join(mine)}")
    return lines


def check_cluster(address: str | None, replicas: int, ranks: int) -> list[str]:
    """A dry run's cluster check without a model: connect, plan (InputError when it does not fit), and end a
    private cluster again."""
    ray, started = connect(address)
    try:
        return plan_lines(cluster_nodes(ray), replicas, ranks)
    finally:
        if started:
            ray.shutdown()


def cluster_nodes(ray: Any) -> list[dict[str, Any]]:
    """The live nodes: address, CPUs, GPUs."""
    return [{"address": n["NodeManagerAddress"], "CPU": int(n["Resources"].get("CPU", 0)),
             "GPU": int(n["Resources"].get("GPU", 0))} for n in ray.nodes() if n.get("Alive")]  # fmt: skip


def describe_cluster(nodes: list[dict[str, Any]]) -> str:
    """``2 nodes, 4 CPUs, 8 GPUs`` for a message."""
    cpus, gpus = sum(n["CPU"] for n in nodes), sum(n["GPU"] for n in nodes)
    return f"{len(nodes)} node{'s' * (len(nodes) != 1)}, {cpus} CPUs, {gpus} GPUs"


def place(nodes: list[dict[str, Any]], replicas: int, ranks: int, kind: str) -> list[str]:
    """Each replica's node, spread as Ray's SPREAD strategy does (one per node in turn, then around again); a
    replica needs ``ranks`` of ``kind`` on one node (tensor parallelism stays within a node), plus a CPU on GPUs.
    An InputError naming the options when they do not fit."""
    room = {n["address"]: n[kind] // ranks if kind == "CPU" else min(n["GPU"] // ranks, n["CPU"]) for n in nodes}
    out: list[str] = []
    while len(out) < replicas and any(room.values()):
        for address in list(room):
            if room[address] and len(out) < replicas:
                out.append(address)
                room[address] -= 1
    if len(out) < replicas:
        fits = len(out)
        raise InputError(f"{replicas} replica{'s' * (replicas != 1)} x --tensor-parallel-size {ranks} do not fit the "
                         f"cluster ({describe_cluster(nodes)}): a replica needs {ranks} {kind}{'s' * (ranks != 1)} on "
                         f"one node, and there is room for {fits}", field="--replicas")  # fmt: skip
    return out


def shares(n: int, parts: int) -> list[tuple[int, int]]:
    """``n`` requests as at most ``parts`` contiguous, near-equal (start, end) ranges."""
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (k < extra)
        out.append((start, end))
        start = end
    return out


def cpu_binding(group: Any, bundle: int, ranks: int) -> str:
    """This replica's cores on a CPU node (``VLLM_CPU_OMP_THREADS_BIND``): the node's cores split among the
    replicas placed on it, ``ranks`` groups each; "nobind" when they are too few (vLLM's own binding would put every
    replica of a node on the same cores)."""
    import ray
    from ray.util import placement_group_table

    node = ray.get_runtime_context().get_node_id()
    table = placement_group_table(group).get("bundles_to_node_id", {})
    here = sorted(int(b) for b, n in table.items() if n == node) or [bundle]
    cores = sorted(os.sched_getaffinity(0))
    share = len(cores) // len(here)
    if bundle not in here or share < ranks:
        return "nobind"
    mine = cores[here.index(bundle) * share : (here.index(bundle) + 1) * share]
    per = len(mine) // ranks
    return "|".join(",".join(map(str, mine[k * per : (k + 1) * per])) for k in range(ranks))


def forwarded_env(cpu: bool) -> dict[str, str]:
    """The environment a replica gets from this process; on CPUs the engine runs in the actor's own process
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: half the start-up and memory) unless the user chose otherwise."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED) and k not in NOT_FORWARDED}
    if cpu:
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return env


async def within(ref: Any, timeout: float | None) -> Any:
    """Await a Ray ObjectRef from any event loop, at most ``timeout`` seconds (TimeoutError); None: the caller
    bounds the wait another way (``RayBackend._watch``)."""
    return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout)


def result_of(done: asyncio.Future[Any], slot: Slot) -> Any:
    """A finished call's value; Ray's errors for a dead actor or node become ``Lost``, anything else one line."""
    from ray.exceptions import RayActorError, RayTaskError

    try:
        return done.result()
    except RayTaskError as err:  # the replica's code raised something that is not a BackendError
        raise BackendError(f"{slot.name()}: {ray_error(err)}") from err
    except RayActorError as err:
        raise Lost from err
    except Exception as err:  # node died, object lost, owner died: the call is gone with its replica
        if type(err).__module__.startswith("ray"):
            raise Lost from err
        raise


def ray_error(err: BaseException) -> str:
    """One line for a Ray error: the remote exception itself (type and message), not Ray's banner."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {one_line(cause)}"
    return one_line(err)


def cancel(ref: Any) -> None:
    """Ask Ray to drop a call whose replica was given up on (it may already be gone)."""
    import ray

    try:
        ray.cancel(ref)
    except Exception:  # the actor is dead: nothing to cancel
        pass


async def quietly(aw: Any) -> None:
    """Await, ignoring any failure (shutting down what may already be gone)."""
    try:
        await aw
    except Exception:
        pass
