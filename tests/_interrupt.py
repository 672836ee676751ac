"""Interrupt labelled fine-tuning at a chosen training step, as Ctrl-C would: the checkpoint/resume tests' tool."""
from __future__ import annotations


def interrupt_at(monkeypatch, call: int):
    """Make the ``call``-th training view of :mod:`medexport.finetune.labelled` raise KeyboardInterrupt; returns the
    real view (``monkeypatch.setattr(labelled, "random_labelled_view", view)`` puts it back)."""
    import medexport.finetune.labelled as labelled

    view, calls = labelled.random_labelled_view, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return view(*args)

    monkeypatch.setattr(labelled, "random_labelled_view", interrupted)
    return view
