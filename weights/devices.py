"""Which torch device the weights go to: "auto", or a device this machine has, checked before any weight is read."""

import torch


def available() -> list[str]:
    """The devices this machine can run on, in the order "auto" prefers them."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve(device: str | torch.device = "auto") -> torch.device:
    """ "auto" → the first of CUDA, MPS, CPU that this machine has; any other name is checked to exist here.

    torch itself accepts "cuda" on a machine without a GPU and fails only later, deep inside the first
    tensor copy; this fails at once, in one line naming what is available.
    """
    if str(device) == "auto":
        return torch.device(available()[0])
    here = ", ".join(available())
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; this machine has: {here} (or 'auto' for the first of them)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {str(device)!r}: this machine has no CUDA GPU (or torch was built without CUDA); available: {here}"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {str(device)!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}; available: {here}"
            )
        return device
    if device.type == "mps" and torch.backends.mps.is_available():
        return device
    raise ValueError(f"device {str(device)!r} is not available on this machine; available: {here}")
