"""The one-line log summary that error messages quote."""

from launcher.remote.logtail import summary

CHAINED = """\
2026-11-28 02:59:53,204 - distributed.nanny - INFO - Closing Nanny. Reason: failure-to-start
Traceback (most recent call last):
  File "distributed/core.py", line 509, in start
KeyError: 'Invalid time unit: bogus.'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "distributed/core.py", line 517, in start
RuntimeError: Nanny failed to start.
""".splitlines()


def test_a_chained_traceback_gives_its_cause_and_its_end():
    assert summary(CHAINED) == "KeyError: 'Invalid time unit: bogus.' | RuntimeError: Nanny failed to start."


def test_without_an_exception_the_last_lines():
    lines = ["starting", "", "listening on tls://10.0.0.1:8786", "waiting"]
    assert summary(lines, n=2) == "listening on tls://10.0.0.1:8786 | waiting"
    assert summary([]) == ""


def test_long_lines_are_shortened():
    out = summary(["OSError: " + "x" * 1000])
    assert out.startswith("OSError: x") and out.endswith("…") and len(out) <= 240
