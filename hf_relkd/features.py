"""Access to the penultimate embedding (the input of the classifier layer) of any image classifier.

A forward pre-hook on the classifier captures its input, so neither 🤗 Transformers models, nor timm models, nor
plain ``nn.Module`` classifiers have to be rewritten. The classifier is found automatically or named explicitly.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

from torch import Tensor, nn


class FeatureAccessError(ValueError):
    """Raised when the classifier layer of a model cannot be found or used."""


def _named(model: nn.Module, target: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def find_classifier(
    model: nn.Module, module_name: str | None = None, argument: str = "student_feature_module"
) -> tuple[str, nn.Module]:
    """Locate the classifier layer whose input is the penultimate embedding.

    Search order: ``module_name`` if given; timm's ``get_classifier()`` (also inside
    ``TimmWrapperForImageClassification``); an attribute named ``classifier``, ``fc`` or ``head``; the last
    ``nn.Linear`` of the model.

    Args:
        model: the (unwrapped) classifier.
        module_name: dotted name of the module whose *input* is the embedding, e.g. ``"classifier"`` or ``"head.fc"``.
        argument: the config field that names the module, quoted in error messages.

    Returns:
        ``(name, module)``.

    Raises:
        FeatureAccessError: if nothing suitable is found.
    """
    if module_name:
        try:
            return module_name, model.get_submodule(module_name)
        except AttributeError as err:
            linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-5:]
            raise FeatureAccessError(
                f"`{argument}={module_name!r}` does not name a module of {type(model).__name__}. "
                f"The last linear layers are {linear}; pass one of them (its input is used as the embedding)."
            ) from err
    candidates = []
    for owner in (getattr(model, "timm_model", None), model):
        if owner is not None and callable(getattr(owner, "get_classifier", None)):
            candidates.append(owner.get_classifier())
    for attr in ("classifier", "fc", "head"):
        candidates.append(getattr(model, attr, None))
    for module in candidates:
        if isinstance(module, nn.Module) and not isinstance(module, nn.Identity):
            name = _named(model, module)
            if name is not None and _linear_in(module) is not None:
                return name, module
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linear:
        return linear[-1]
    raise FeatureAccessError(
        f"Cannot find the classifier layer of {type(model).__name__}: it has no `classifier`/`fc`/`head` attribute "
        f"and no nn.Linear. RKD and RRD need the penultimate embedding: set `{argument}` to the dotted name of the "
        "module whose input is that embedding."
    )


def _linear_in(module: nn.Module) -> nn.Linear | None:
    if isinstance(module, nn.Linear):
        return module
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            return sub
    return None


def embedding_dim(classifier: nn.Module) -> int:
    """Width of the classifier's input, read from its first ``nn.Linear``."""
    linear = _linear_in(classifier)
    if linear is None:
        raise FeatureAccessError(
            f"The module {type(classifier).__name__} has no nn.Linear, so its input width is unknown; name a linear "
            "layer with `student_feature_module` / `teacher_feature_module`."
        )
    return linear.in_features


def classifier_num_outputs(classifier: nn.Module) -> int | None:
    """Number of outputs of the classifier's last ``nn.Linear``, or None."""
    linear = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    return linear[-1].out_features if linear else None


class FeatureTap:
    """Captures the input of one module during the forwards run inside :meth:`capturing`.

    The hook is inert outside :meth:`capturing` (another user of the same model is never affected and no tensor is
    kept between steps), and it is removed when the tap is garbage-collected or :meth:`remove` is called.

    Args:
        model: the model to tap (the unwrapped module; calls through DDP or ``torch.compile`` wrappers still fire).
        module_name: see :func:`find_classifier`.
        argument: config field quoted in error messages.
    """

    def __init__(
        self, model: nn.Module, module_name: str | None = None, argument: str = "student_feature_module"
    ):
        self.module_name, self.module = find_classifier(model, module_name, argument)
        self.dim = embedding_dim(self.module)
        self._captured: Tensor | None = None
        self._active = False
        tap = weakref.ref(self)  # the model must not keep the tap alive

        def hook(module: nn.Module, args: tuple) -> None:
            owner = tap()
            if owner is not None and owner._active and args and isinstance(args[0], Tensor):
                owner._captured = args[0]

        self._handle = self.module.register_forward_pre_hook(hook)
        weakref.finalize(self, self._handle.remove)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Capture the embedding of the forwards run in this block (the last one wins)."""
        self._active, self._captured = True, None
        try:
            yield
        finally:
            self._active = False

    def pop(self) -> Tensor:
        """The embedding captured by the last forward, flattened to ``(B, D)``; clears it."""
        if self._captured is None:
            raise FeatureAccessError(
                f"The module {self.module_name!r} did not run during the forward pass, so no embedding was captured."
            )
        features, self._captured = self._captured, None
        return features.flatten(1)

    def remove(self) -> None:
        """Remove the hook."""
        self._handle.remove()
