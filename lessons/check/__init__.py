"""Checkers for the lessons' exercises: one module per lesson, and what they share in `core`.

Each checker runs the student's function on random inputs and on the bundled model, against minigpt's
own code, and when the answer is wrong says in words what the error looks like. A notebook imports its
lesson's module under one short name:

    from lessons.check import lesson1 as check
    check.layer_norm(layer_norm)      # prints ✓ …, or raises Mistake("✗ layer_norm: …")
    check.hint("layer_norm")          # the next nudge for that exercise; the answer is in the solved twin
"""

from . import lesson1, lesson2, lesson3, lesson4
from .core import Crash, Mistake

# Every lesson's checkers, in its order: lesson number → [checker].
CHECKERS = {1: lesson1.CHECKERS, 2: lesson2.CHECKERS, 3: lesson3.CHECKERS, 4: lesson4.CHECKERS}
LESSONS = {1: lesson1, 2: lesson2, 3: lesson3, 4: lesson4}

__all__ = ["CHECKERS", "LESSONS", "Crash", "Mistake", "lesson1", "lesson2", "lesson3", "lesson4"]
