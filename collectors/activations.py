"""Dead and saturated units (and the input batch), measured by forward hooks that exist only on sampled steps.

Hooks are registered right before a sampled step's forward and removed after it, so
an ordinary step pays nothing. Only the first training-mode forward is measured:
validation passes (`model.eval()`) and further micro-batches of gradient
accumulation are left alone.

Dead units are found two ways:
- after an `nn.ReLU` module: a unit (a feature, or a channel after a convolution)
  whose output is zero for every example of the batch;
- after a functional `F.relu`, which has no module to hook: at the input of the next
  layer, whose input columns are then non-negative with some exactly zero for the
  whole batch. The first layer (it sees the data, not an activation) and layers
  right after an activation module are skipped. The fraction is reported under the
  consuming layer's name.
Everything is computed on the device; results stay tensors until the next flush.

Under `torch.compile`, dynamo would trace the hooks into the compiled graph once,
guarded only on how many hooks a module has, and replay that first trace on every
later sampled step: their results would never arrive. So the measured forward runs
eagerly (`torch.compiler.set_stance("force_eager")`): a sampled step is an ordinary
eager step, and the compiled graph is neither recompiled nor broken up for the steps
between. The stance is one setting for the whole process, so it is held no longer
than it must be:
- `torch.compile(model)`, whose wrapper module runs its own hooks before any compiled
  code, and `model.compile()`, whose compiled call the probe wraps while armed: the
  stance is held, and the measuring hooks exist, only during the sampled step's first
  training forward. A validation pass, or another compiled model, run between two
  steps stays compiled (held from one `step()` to the next, the stance made them
  eager: in `benchmarks/collector_overhead.py --compile` the plain copies ran eagerly
  in every block after the watched copy's). A sampled step that trains without that
  call (the model called past the wrapper) switches the probe to the way below from
  the next sampled step on.
- A compiled function that calls the model (a compiled training step): nothing of the
  collector's runs before the compiled code, so the stance is held from the end of
  the step before the sampled one to its end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from trainscope.collectors.batch_stats import input_moments
from trainscope.collectors.grad_stats import MISSING
from trainscope.collectors.layers import DYING_KINDS, ActivationSite, Layer
from trainscope.logformat import tags as T

# Sigmoid outputs below/above these sit on the flat ends (gradient < 1% of its peak).
SIGMOID_LOW, SIGMOID_HIGH = 0.01, 0.99
# |tanh| above this is saturated (tanh' < 0.02).
TANH_LIMIT = 0.99

_CONSUMER_TYPES = (nn.Linear, nn.modules.conv._ConvNd)

Hook = TypeVar("Hook", bound=Callable[..., Any])


def dead_fraction(y: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Share of units whose output is <= 0 for every element of the batch."""
    if y.dim() < 2:
        return torch.full((), MISSING, device=y.device)  # a fill kernel, not a host-to-device copy
    unit_dim = unit_dim % y.dim()
    other = tuple(d for d in range(y.dim()) if d != unit_dim)
    peak = torch.amax(y.detach(), dim=other)
    return (peak <= 0).float().mean()


def saturated_fraction(y: torch.Tensor, kind: str) -> torch.Tensor:
    y = y.detach()
    if kind == "sigmoid":
        return ((y < SIGMOID_LOW) | (y > SIGMOID_HIGH)).float().mean()
    return (y.abs() > TANH_LIMIT).float().mean()


def functional_relu_dead_fraction(x: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Dead fraction of a layer's input when it looks post-ReLU (non-negative), else MISSING."""
    x = x.detach()
    frac = dead_fraction(x, unit_dim)
    return torch.where(x.amin() >= 0, frac, torch.full_like(frac, MISSING))


class ActivationProbe:
    """Arms forward hooks for one sampled step and collects their results."""

    def __init__(
        self,
        model: nn.Module,
        sites: list[ActivationSite],
        layers: list[Layer],
        guarded: Callable[..., Any],
        compiled_wrapper: nn.Module | None = None,
    ) -> None:
        self._model = model
        self._wrapper = compiled_wrapper  # torch.compile(model)'s module, which the user calls
        self._sites = sites
        self._guarded = guarded  # ErrorGuard.call bound to this probe's part name
        # Functional-ReLU candidates: Linear/Conv layers with no activation module
        # registered between them and the previous layer.
        self._consumers: list[Layer] = []
        previous: Layer | None = None
        for layer in layers:
            if isinstance(layer.module, _CONSUMER_TYPES) and not (previous and previous.activation):
                self._consumers.append(layer)
            previous = layer
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._measuring: list[torch.utils.hooks.RemovableHandle] = []  # the hooks that measure
        self._holds_eager = False  # whether this probe holds compiled code eager (see _EagerStance)
        self._forward_seen = False  # the armed step's first training forward through the compiled model began
        # Whether to hold the stance only inside the compiled model's call (see the module's docstring).
        self._entry_points = True
        self._wrapped_call: tuple[nn.Module, Callable[..., Any], Callable[..., Any]] | None = None
        self.results: dict[str, torch.Tensor] = {}
        self.functional_relu_layers: set[str] = set()
        self._done: set[str] = set()
        self._first_consumer_seen = False
        # Whether to measure the model's input batch (and keep it, `take_model_input`):
        # only for loops that do not hand step() their float `inputs` (those are measured
        # there, and would be measured twice).
        self.measure_input = True
        # The armed step's model input (its last training forward's), by reference until
        # `take_model_input`: token ids or features, and a language model's label check.
        self._model_input: torch.Tensor | None = None

    def continue_from(self, earlier: ActivationProbe) -> None:
        """A probe made anew for a remapped model (layers unfrozen, a lazy model's
        shapes known) keeps what the run has learnt: where functional ReLUs were found,
        and whether the compiled model's entry points are seen to be called."""
        self.functional_relu_layers |= earlier.functional_relu_layers
        self._entry_points = earlier._entry_points

    @property
    def armed(self) -> bool:
        # Holding compiled code eager counts too: a hook that failed to register must not
        # leave the process eager until close().
        return bool(self._handles or self._measuring or self._wrapped_call) or self._holds_eager

    def arm(self) -> None:
        if self.armed:
            return
        self.results = {}
        self._model_input = None
        self._done = set()
        self._first_consumer_seen = False
        self._forward_seen = False
        if self._entry_points and hasattr(torch.compiler, "set_stance"):
            if self._wrapper is not None:
                self._hook_the_wrapper(self._wrapper)
                return
            if getattr(self._model, "_compiled_call_impl", None) is not None:
                self._wrap_the_compiled_call(self._model)
                return
        self._holds_eager, outside_graphs = _run_compiled_code_eagerly()
        self._add_measuring_hooks(outside_graphs)

    def disarm(self) -> dict[str, torch.Tensor]:
        self._remove_measuring_hooks()
        if (self._handles or self._wrapped_call) and not self._forward_seen:
            # The step trained without calling the compiled model it was given (the model
            # was called past the wrapper, or inside another compiled function): from the
            # next sampled step on, hook the layers at arm() instead.
            self._entry_points = False
        if self._wrapped_call is not None:
            module, compiled, ours = self._wrapped_call
            if module.__dict__.get("_compiled_call_impl") is ours:  # not compiled anew meanwhile
                module._compiled_call_impl = compiled
            self._wrapped_call = None
        for handle in self._handles:
            handle.remove()
        self._handles = []
        results, self.results = self.results, {}
        return results

    def take_model_input(self) -> torch.Tensor | None:
        """The input batch of the step just disarmed (its model's first argument, or its
        `input_ids=`), if it was a tensor; the reference is dropped here."""
        model_input, self._model_input = self._model_input, None
        return model_input

    def _hook_the_wrapper(self, wrapper: nn.Module) -> None:
        """torch.compile(model): the wrapper's own hooks run before its compiled code."""

        def enter(module: nn.Module, args: Any) -> None:
            self._guarded(self._enter_measured_forward)

        def leave(module: nn.Module, args: Any, output: Any) -> None:
            self._guarded(self._remove_measuring_hooks)

        self._handles.append(wrapper.register_forward_pre_hook(enter))
        # always_call: also after a forward that raised, so that nothing stays eager
        self._handles.append(wrapper.register_forward_hook(leave, always_call=True))

    def _wrap_the_compiled_call(self, module: nn.Module) -> None:
        """model.compile(): the module's hooks run inside its compiled call, so the call
        itself is wrapped, until disarm()."""
        compiled = module._compiled_call_impl

        def measured_call(*args: Any, **kwargs: Any) -> Any:
            self._guarded(self._enter_measured_forward)
            try:
                return compiled(*args, **kwargs)
            finally:
                self._guarded(self._remove_measuring_hooks)

        module._compiled_call_impl = measured_call
        self._wrapped_call = (module, compiled, measured_call)

    def _add_measuring_hooks(self, outside_graphs: Callable[[Hook], Hook]) -> None:
        for site in self._sites:
            self._measuring.append(site.module.register_forward_hook(outside_graphs(self._site_hook(site))))
        for layer in self._consumers:
            hook = outside_graphs(self._consumer_hook(layer))
            self._measuring.append(layer.module.register_forward_pre_hook(hook))
        if self.measure_input:
            hook = outside_graphs(self._input_hook)
            self._measuring.append(self._model.register_forward_pre_hook(hook, with_kwargs=True))

    def _remove_measuring_hooks(self) -> None:
        for handle in self._measuring:
            handle.remove()
        self._measuring = []
        if self._holds_eager:
            _EAGER.release()
            self._holds_eager = False

    def _enter_measured_forward(self) -> None:
        """Before the compiled model runs any compiled code: the armed step's first
        training forward runs eagerly, with the measuring hooks."""
        if self._forward_seen or not self._model.training:
            return
        self._forward_seen = True
        _EAGER.acquire()
        self._holds_eager = True
        self._add_measuring_hooks(_as_is)

    def _site_hook(self, site: ActivationSite) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not module.training or site.name in self._done or not isinstance(output, torch.Tensor):
                return
            self._done.add(site.name)
            self._guarded(self._measure_site, site, output)

        return hook

    def _measure_site(self, site: ActivationSite, output: torch.Tensor) -> None:
        with torch.no_grad():
            if site.kind in DYING_KINDS:
                self.results[T.dead_fraction_tag(site.name)] = dead_fraction(output, site.channel_dim)
            else:
                self.results[T.saturated_fraction_tag(site.name)] = saturated_fraction(output, site.kind)

    def _input_hook(self, module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        """The model's input batch: its first argument, or a Hugging Face model's
        `input_ids=`. Every training forward's is kept, so that with gradient
        accumulation it is the micro-batch whose targets step() gets; the first is
        measured for `input/mean` and `input/std` when it is features and step() got no
        `inputs`."""
        if not module.training:
            return
        x = args[0] if args else kwargs.get("input_ids")
        self._model_input = x if isinstance(x, torch.Tensor) else None
        if "<input>" in self._done:
            return
        self._done.add("<input>")
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            self._guarded(self._measure_input, x)

    def _measure_input(self, x: torch.Tensor) -> None:
        self.results[T.INPUT_MEAN], self.results[T.INPUT_STD] = input_moments(x)

    def _consumer_hook(self, layer: Layer) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            if not module.training or layer.name in self._done:
                return
            self._done.add(layer.name)
            if not self._first_consumer_seen:  # the first layer sees data, not an activation
                self._first_consumer_seen = True
                return
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                self._guarded(self._measure_consumer, layer, args[0])

        return hook

    def _measure_consumer(self, layer: Layer, x: torch.Tensor) -> None:
        with torch.no_grad():
            unit_dim = 1 if isinstance(layer.module, nn.modules.conv._ConvNd) else -1
            self.results[T.dead_fraction_tag(layer.name)] = functional_relu_dead_fraction(x, unit_dim)
            self.functional_relu_layers.add(layer.name)


def _run_compiled_code_eagerly() -> tuple[bool, Callable[[Hook], Hook]]:
    """Make `torch.compile`d code run the armed hooks as Python: whether compiled code
    is now held eager (to release in `disarm`), and what to wrap each hook in.

    Dynamo is loaded once anything is compiled; without it there is nothing to do, and
    importing it would cost the run most of a second. Before torch 2.6 (no stances)
    each hook is kept out of the graph instead, which breaks the graph where it sits,
    from then on also on the steps between samples.
    """
    if "torch._dynamo" not in sys.modules:
        return False, _as_is
    if not hasattr(torch.compiler, "set_stance"):
        return False, torch.compiler.disable
    _EAGER.acquire()
    return True, _as_is


def _as_is(hook: Hook) -> Hook:
    return hook


class _EagerStance:
    """The compiler's stance is one setting for the whole process, and several probes
    can be armed at once (a GAN's two watched models sample on the same steps, and
    disarm in the order their `step()` is called): the first to arm sets
    ``force_eager``, the last to disarm puts back the stance from before."""

    def __init__(self) -> None:
        self._holders = 0
        self._stance: Any = None  # torch's set_stance object, whose exit restores the stance before

    def acquire(self) -> None:
        if self._holders == 0:
            self._stance = torch.compiler.set_stance("force_eager")
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._stance.__exit__(None, None, None)
            self._stance = None


# Module-level because what it counts for is process-wide: torch's compiler stance.
_EAGER = _EagerStance()
