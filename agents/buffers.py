"""A batched replay buffer over torch tensors that stores nested dicts as they come.

Transitions arrive B at a time (one batched environment step) as nested dicts of tensors
with a leading B axis, e.g. ``{"obs": {"irs0": (B, 5), ...}, "action": {"irs0": {"bits":
(B,), ...}}, "reward": (B,)}``. Each leaf gets one ring-buffer tensor of shape
(capacity, ...) allocated on first use; sampling draws indices from an explicit
``torch.Generator`` so runs are seeded, and ``state_dict`` holds everything to resume.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from twin.errors import ConfigError

Path = tuple[str, ...]


def flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, torch.Tensor]:
    """Nested dict of tensors -> {(key, subkey, ...): tensor}."""
    flat: dict[Path, torch.Tensor] = {}
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        elif isinstance(value, torch.Tensor):
            flat[path] = value
        else:
            raise ConfigError(f"replay buffer field {'/'.join(path)}: expected a tensor or dict, got {type(value).__name__}")
    return flat


def unflatten(flat: Mapping[Path, torch.Tensor]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


class ReplayBuffer:
    """Fixed-capacity FIFO of transitions; ``add`` takes B at once, ``sample`` returns a batch."""

    def __init__(self, capacity: int, device: str | torch.device = "cpu") -> None:
        if capacity <= 0:
            raise ConfigError(f"buffer_size: capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self._storage: dict[Path, torch.Tensor] = {}
        self._pos = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, transition: Mapping[str, Any]) -> None:
        flat = flatten(transition)
        if not flat:
            raise ConfigError("replay buffer: empty transition")
        batch = {t.shape[0] if t.dim() else -1 for t in flat.values()}
        if len(batch) != 1 or -1 in batch:
            raise ConfigError(f"replay buffer: every field needs the same leading batch size, got {sorted(batch)}")
        n = batch.pop()
        if not self._storage:
            for path, t in flat.items():
                self._storage[path] = torch.zeros((self.capacity, *t.shape[1:]), dtype=t.dtype, device=self.device)
        elif flat.keys() != self._storage.keys():
            missing = set(self._storage) ^ set(flat)
            raise ConfigError(f"replay buffer: fields differ from the first transition: {sorted('/'.join(p) for p in missing)}")
        if n > self.capacity:  # only the newest `capacity` rows survive anyway
            flat = {p: t[-self.capacity:] for p, t in flat.items()}
            n = self.capacity
        idx = (self._pos + torch.arange(n)) % self.capacity
        for path, t in flat.items():
            store = self._storage[path]
            if t.shape[1:] != store.shape[1:]:
                raise ConfigError(f"replay buffer field {'/'.join(path)}: shape {tuple(t.shape[1:])} != {tuple(store.shape[1:])}")
            store[idx] = t.detach().to(self.device, store.dtype)
        self._pos = (self._pos + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
        """``batch_size`` transitions drawn uniformly with replacement (seeded by ``generator``)."""
        if self._size == 0:
            raise ConfigError("replay buffer: cannot sample from an empty buffer")
        idx = torch.randint(0, self._size, (batch_size,), generator=generator)
        return unflatten({path: store[idx] for path, store in self._storage.items()})

    def state_dict(self) -> dict[str, Any]:
        # Only the filled rows; paths stored as lists so the dict loads with weights_only=True.
        return {
            "capacity": self.capacity,
            "pos": self._pos,
            "size": self._size,
            "fields": [[list(path), store[: self._size].clone()] for path, store in self._storage.items()],
            "shapes": [[list(path), list(store.shape[1:])] for path, store in self._storage.items()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ConfigError(f"buffer_size: checkpoint has capacity {state['capacity']}, this buffer {self.capacity}")
        self._storage = {}
        shapes = {tuple(p): s for p, s in state["shapes"]}
        for path, rows in state["fields"]:
            path = tuple(path)
            store = torch.zeros((self.capacity, *shapes[path]), dtype=rows.dtype, device=self.device)
            store[: rows.shape[0]] = rows
            self._storage[path] = store
        self._pos = int(state["pos"])
        self._size = int(state["size"])
