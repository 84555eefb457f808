"""What every lesson's checker shares: call the student's function, compare its answer with the
reference, name the mistake, and give hints on request.

How a wrong answer is diagnosed: a checker also computes the answers of the usual mistakes (variance
with N − 1, the erf GELU, no causal mask, …), each from the reference with one thing changed, and
`compare` names the one the student's answer matches. Failing that, it describes the difference: wrong
shape, off by a constant factor, right at some positions and wrong at others, or how large it is.

`call` runs the student's function. If it raises, the message says with which shapes it was called
(the student never saw the checker's inputs); if it changed one of its inputs in place, that is a
mistake even when the answer is right, because in a notebook the input is the student's model.
A `Mistake` shows as its message alone in Jupyter (IPython's `_render_traceback_`): none of the
checker's own frames, which the student did not write.
"""

import inspect
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
# Where code the student did not write lives: minigpt's packages (beside lessons/), the standard library
# (contextlib) and the installed libraries (torch). A crash's traceback shows the frames outside them.
NOT_THE_STUDENTS = [
    *(HERE.resolve().parents[1] / package for package in ("minigpt", "weights", "instrument", "analysis", "lessons", "training")),
    *{Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")},
]


class Mistake(AssertionError):
    """The student's answer is wrong; the message says how, and what to look at."""

    def _render_traceback_(self) -> list[str]:  # what IPython and Jupyter print instead of a traceback
        return [str(self)]


class Crash(Mistake):
    """The student's function raised: the message names the shapes it was called with; the traceback
    shown is the student's own frames only."""

    def __init__(self, message: str, frames: list[str]):
        super().__init__(message)
        self.frames = frames

    def _render_traceback_(self) -> list[str]:
        return [*self.frames, str(self)]


# ---------------------------------------------------------------------------------------------
# Calling the student's function


def describe(value) -> str:
    """A short description of an argument: a tensor's shape and dtype, a module's class, a list's lengths."""
    if isinstance(value, torch.Tensor):
        dtype = "" if value.dtype == torch.float32 else f" {str(value.dtype).removeprefix('torch.')}"
        return f"tensor {list(value.shape)}{dtype}"
    if isinstance(value, np.ndarray):
        return f"array {list(value.shape)}"
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    if isinstance(value, list | tuple) and value and all(isinstance(v, np.ndarray | torch.Tensor) for v in value):
        shapes = ", ".join(str(list(v.shape)) for v in value[:4]) + (" …" if len(value) > 4 else "")
        return f"{type(value).__name__} of {len(value)} arrays {shapes}"
    if callable(value):
        return getattr(value, "__name__", "a function")
    return repr(value)


def _argument_names(fn: Callable, n: int) -> list[str]:
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()]
    except (TypeError, ValueError):
        names = []
    return (names + [f"argument {i + 1}" for i in range(len(names), n)])[:n]


def _tensors_in(value) -> dict[str, torch.Tensor]:
    """The tensors an argument holds: itself, a module's parameters, a list's items (by a readable key)."""
    if isinstance(value, torch.Tensor):
        return {"": value}
    if isinstance(value, torch.nn.Module):
        return {f".{name}": p for name, p in value.named_parameters()}
    if isinstance(value, np.ndarray):
        return {"": torch.from_numpy(value)}
    if isinstance(value, list | tuple):
        return {f"[{i}]{k}": t for i, v in enumerate(value) for k, t in _tensors_in(v).items()}
    return {}


def _is_students(filename: str) -> bool:
    """Whether a frame's file is the student's: a notebook cell or their own file, not minigpt's, Python's or torch's."""
    path = Path(filename)
    if not path.is_absolute():  # "<ipython-input-…>", "<string>"
        return True
    path = path.resolve()
    return not any(path.is_relative_to(root) for root in NOT_THE_STUDENTS)


def _student_frames(error: BaseException) -> list[str]:
    """The traceback of error with the student's frames only: not the checker's, nor those of minigpt, contextlib
    or torch that their code called (a hook that raised is reached through all three)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if _is_students(f.filename)]
    return traceback.format_list(frames)


def call(name: str, fn: Callable, *args, in_place: bool = False, inputs_are: str = "your model's own weight"):
    """fn(*args), or a Mistake that says what went wrong in words: not written yet, raised (with the
    shapes it was given), or changed an input in place (allowed with in_place=True: a hook may edit
    the tensor it is handed). inputs_are: what the inputs are in the notebook, for that message."""
    __tracebackhide__ = True
    names = _argument_names(fn, len(args))
    before = {f"{n}{k}": t.detach().clone() for n, a in zip(names, args) for k, t in _tensors_in(a).items()}
    try:
        result = fn(*args)
    except Mistake:
        raise
    except NotImplementedError:
        raise Mistake(f"✗ {name} is not written yet: replace its `raise NotImplementedError` line with your code") from None
    except Exception as error:
        given = ", ".join(f"{n} = {describe(a)}" for n, a in zip(names, args))
        raise Crash(
            f"✗ {name} raised {type(error).__name__}: {error}\n  It was called with {given}.\n"
            "  Which axis of which input does the failing line use? (print the shapes inside your function)",
            _student_frames(error),
        ) from None
    after = {f"{n}{k}": t for n, a in zip(names, args) for k, t in _tensors_in(a).items()}
    changed = [] if in_place else [key for key, t in before.items() if not torch.equal(t, after[key].detach())]
    if changed:
        raise Mistake(
            f"✗ {name} changed its input {', '.join(changed[:3])} in place (an operation like `W *= …`, `W -= …`, "
            f"`W[...] = …` or a method ending in `_`): in the notebook that input is {inputs_are}, "
            "which is now changed too. Build a new tensor instead (`W = W * …`)."
        )
    return result


# ---------------------------------------------------------------------------------------------
# Comparing an answer with the reference


def as_tensor(name: str, value, like: torch.Tensor) -> torch.Tensor:
    __tracebackhide__ = True
    if isinstance(value, np.ndarray | float | int | np.floating):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if not isinstance(value, torch.Tensor):
        raise Mistake(f"✗ {name} returned {type(value).__name__}; expected a tensor of shape {list(like.shape)}")
    if value.shape != like.shape:
        why = (
            ": one number for everything; does a reduction (a norm, a sum) need its dim=…?" if value.ndim == 0 < like.ndim else ""
        )
        raise Mistake(f"✗ {name} returned shape {list(value.shape)}; expected {list(like.shape)}{why}")
    return value.detach().double()


def _scale(b: torch.Tensor) -> float:
    """What differences are measured against: the reference's largest entry, or 1 where the reference is all zeros."""
    finite = b[torch.isfinite(b)].abs()
    largest = float(finite.max()) if len(finite) else 0.0
    return largest if largest > 1e-12 else 1.0


def close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """|a − b| ≤ rtol · max|b| everywhere; NaN where b has NaN counts as equal (a mistake's answer may hold NaN)."""
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    if not torch.equal(nan_a, nan_b):
        return False
    a, b = a[~nan_b], b[~nan_b]
    return len(b) == 0 or bool((a - b).abs().max() <= rtol * _scale(b))


def compare(
    name: str,
    got,
    expected: torch.Tensor,
    mistakes: dict[str, torch.Tensor] | list[tuple[str, torch.Tensor]] | None = None,
    *,
    rtol: float = 1e-5,
    pos_axis: int | None = None,
    advice: str = "",
) -> float:
    """Raise Mistake naming what is wrong with `got`, or return the largest difference from `expected`.

    mistakes: {diagnosis: what that mistake would have returned} (or a list of such pairs, where two
    mistakes share a diagnosis), tried in order; NaN where the mistake gives NaN. pos_axis: the axis of
    positions, if any, so that the message can say which positions are right. advice: added to a
    message that names no mistake.
    """
    __tracebackhide__ = True
    expected = torch.as_tensor(expected).detach().double()
    got = as_tensor(name, got, expected)
    if close(got, expected, rtol):
        return float((got - expected).abs().max())
    for diagnosis, answer in mistakes.items() if isinstance(mistakes, dict) else mistakes or []:
        answer = torch.as_tensor(answer).detach().double()
        if answer.shape == expected.shape and close(got, answer, rtol):
            raise Mistake(f"✗ {name}: {diagnosis}")
    if not torch.isfinite(got).all():
        raise Mistake(
            f"✗ {name} returned NaN or infinite values: a division by zero, a square root of a negative number, "
            "or a softmax over a row that is all -inf?"
        )
    difference = float((got - expected).abs().max())
    scale = _scale(expected)
    if not bool(got.abs().max() > 0):
        raise Mistake(f"✗ {name} returned all zeros (largest entry of the right answer: {scale:.3g}){advice}")
    nonzero = expected.abs() > 1e-9 * scale
    if int(nonzero.sum()) >= 2 and bool((got[~nonzero].abs() <= rtol * scale).all()):
        ratio = got[nonzero] / expected[nonzero]
        constant = float(ratio.std(correction=0) / ratio.mean().abs().clamp(min=1e-300)) < 1e-4
        if constant and abs(float(ratio.mean()) - 1) > 1e-3:
            raise Mistake(
                f"✗ {name} is off by a constant factor of {float(ratio.mean()):.4g}: a scale, or a missing ½, √ or 1/n?{advice}"
            )
    if pos_axis is not None:
        per_position = (got - expected).abs().movedim(pos_axis, 0).flatten(1).amax(1)
        right = [p for p, d in enumerate(per_position.tolist()) if d <= rtol * scale]
        if right and len(right) < len(per_position):
            raise Mistake(
                f"✗ {name} is right at positions {ranges(right)} and wrong at the others "
                f"(largest difference {difference:.3g}): what differs between those positions?{advice}"
            )
    raise Mistake(f"✗ {name} differs from the right answer by up to {difference:.3g} (relative {difference / scale:.2g}){advice}")


def pair(name: str, got, what: str) -> tuple:
    """got, checked to be a pair (as an exercise that returns two tensors must return)."""
    __tracebackhide__ = True
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise Mistake(f"✗ {name} must return a pair {what}; it returned {describe(got)}")
    return tuple(got)


def ranges(positions: list[int]) -> str:
    if positions == list(range(positions[0], positions[-1] + 1)):
        return f"{positions[0]}" if len(positions) == 1 else f"{positions[0]}–{positions[-1]}"
    return ", ".join(map(str, positions[:8])) + (" …" if len(positions) > 8 else "")


def passed(name: str, what: str, difference: float) -> None:
    print(f"✓ {name}: matches {what} (largest difference {difference:.1e})")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Hints, on request


class Hints:
    """hint("layer_norm") prints that exercise's next hint: a nudge (what to look at), never the code.
    The answer is in the lesson's solved twin, `solved`."""

    def __init__(self, hints: dict[str, list[str]], solved: str):
        self.hints, self.solved, self.given = hints, solved, dict.fromkeys(hints, 0)

    def __call__(self, exercise: str) -> None:
        if exercise not in self.hints:
            raise KeyError(f"no hints for {exercise!r}; this lesson's exercises are {', '.join(self.hints)}")
        hints, n = self.hints[exercise], self.given[exercise]
        if n < len(hints):
            print(f"hint {n + 1} of {len(hints)} for {exercise}: {hints[n]}")
            self.given[exercise] = n + 1
        else:
            print(f"no more hints for {exercise}: its answer is in {self.solved}, after you have tried")
