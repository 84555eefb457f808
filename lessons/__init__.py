"""The lessons: notebooks built from lessons/source, their checkers (lessons.check), their figures
(lessons.figures), and the files they read offline."""

from pathlib import Path

from analysis.inputs import DEFAULT_PROMPTS as PROMPTS  # the study's 61 prompts, one per line: lesson 3 measures on them

HERE = Path(__file__).parent
# A checkpoint from early in a training run of minigpt's small recipe, where the growth is steady
# (lessons/checkpoints/README.md says why this one).
MID_TRAINING = HERE / "checkpoints" / "small6-step004"


def prompts() -> list[str]:
    """The study's prompts, one per non-empty line of PROMPTS, stripped as `python -m analysis.growth` strips them
    (one prompt is an indented line of code), so that lesson 3 measures the study's tokens."""
    return [line.strip() for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
