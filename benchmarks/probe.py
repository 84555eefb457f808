"""Load one checkpoint one way, in this fresh process, and print wall time and peak resident memory as JSON.

    python -m benchmarks.probe CONTENDER DIRECTORY

Contenders: raw (read every tensor of model.safetensors, nothing else), minigpt (weights.load with
processed=True), minigpt-raw (processed=False), hf (transformers' GPT2LMHeadModel.from_pretrained, which memory-maps the
file and reads a weight when first used), hf-read (the same, then every weight used once),
tl (TransformerLens 4.x TransformerBridge with enable_compatibility_mode(), i.e. processed weights),
study (`python -m analysis.growth` on that checkpoint with the default prompts, run in this process),
corpus-N (the same over N one-line prompts in a JSON Lines file: the default prompts, cycled).
Peak RSS is this process's high-water mark, imports included, read from VmHWM in /proc/self/status:
ru_maxrss would not do, since Linux carries the parent's high-water mark across fork and exec.
"""

import json
import sys
import time
from pathlib import Path


def load(contender: str, directory: Path):
    if contender == "raw":
        from weights.formats import SafetensorsFile

        weights_file = SafetensorsFile(directory / "model.safetensors")
        return {key: weights_file.read(key) for key in weights_file.keys()}
    if contender in ("minigpt", "minigpt-raw"):
        import weights

        return weights.load(directory, processed=contender == "minigpt")
    if contender in ("hf", "hf-read"):
        from transformers import GPT2LMHeadModel

        model = GPT2LMHeadModel.from_pretrained(directory, attn_implementation="eager")
        if contender == "hf-read":  # transformers maps the file and reads each weight on first use: use them all once
            for param in model.parameters():
                param.sum()
        return model
    if contender == "study":
        import tempfile

        from analysis import growth

        with tempfile.TemporaryDirectory() as out:
            if growth.main(["--model", str(directory), "--out", f"{out}/report"]) != 0:
                raise SystemExit("the study failed")
        return None
    if contender.startswith("corpus-"):  # corpus-N: the study over N one-line prompts (the default ones, cycled)
        import tempfile

        from analysis import growth

        with tempfile.TemporaryDirectory() as scratch:
            corpus = write_corpus(Path(scratch) / "corpus.jsonl", int(contender.removeprefix("corpus-")))
            if growth.main(["--model", str(directory), "--prompts-file", str(corpus), "--out", f"{scratch}/report"]) != 0:
                raise SystemExit("the study failed")
        return None
    if contender == "tl":
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers(str(directory), device="cpu")
        bridge.enable_compatibility_mode()
        return bridge
    raise SystemExit(f"unknown contender {contender!r}")


def write_corpus(path: Path, n: int) -> Path:
    """n prompts as JSON Lines: the study's default prompts, cycled (the first 61 are exactly those)."""
    import json

    from analysis.inputs import DEFAULT_PROMPTS, read_prompts

    texts = read_prompts(DEFAULT_PROMPTS).texts
    path.write_text("".join(json.dumps({"text": texts[i % len(texts)]}) + "\n" for i in range(n)), encoding="utf-8")
    return path


def import_baseline(contender: str) -> None:
    """Import what the contender needs before timing, so that the time measures loading, not imports."""
    import torch  # noqa: F401

    if contender in ("hf", "hf-read"):
        import transformers  # noqa: F401
    elif contender == "study" or contender.startswith("corpus-"):
        import analysis.growth  # noqa: F401
    elif contender == "tl":
        import transformer_lens  # noqa: F401
    else:
        import weights  # noqa: F401


def peak_rss() -> int:
    """Bytes: the most this process (since its exec) has had resident."""
    line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def weights_bytes(directory: Path) -> int:
    """The size of the weights files: model.safetensors or pytorch_model.bin, or all of their shards."""
    files = [*directory.glob("model*.safetensors")] or [*directory.glob("pytorch_model*.bin")]
    return sum(path.stat().st_size for path in files)


def main() -> None:
    contender, directory = sys.argv[1], Path(sys.argv[2])
    import_baseline(contender)
    baseline = peak_rss()
    start = time.perf_counter()
    loaded = load(contender, directory)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    del loaded
    checkpoint = weights_bytes(directory)
    print(
        json.dumps(
            {
                "contender": contender,
                "seconds": seconds,
                "peak_rss": peak,
                "import_rss": baseline,
                "checkpoint_bytes": checkpoint,
                "peak_ratio": peak / checkpoint,
            }
        )
    )


if __name__ == "__main__":
    main()
