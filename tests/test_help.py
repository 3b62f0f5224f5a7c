"""Every option of `edge-ee` (every subcommand, nested ones too) and of `edge-ee-run` has a
help text that shows its default; flags (store_true …) and required options are exempt."""

from __future__ import annotations

import argparse

import pytest

from device_runners.cli import build_parser as run_parser
from edge_ee.cli import build_parser as host_parser


def _parsers(p: argparse.ArgumentParser, name: str):
    yield name, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _problems(name: str, p: argparse.ArgumentParser) -> list[str]:
    out = []
    formatter = p._get_formatter()
    for a in p._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction,
                          argparse._SubParsersAction)):
            continue
        label = f"{name} {'/'.join(a.option_strings) or a.dest}"
        if not (a.help or "").strip():
            out.append(f"{label}: no help text")
            continue
        exempt = (isinstance(a, (argparse._StoreConstAction, argparse._CountAction))
                  or a.required or not a.option_strings)
        if not exempt and "default" not in formatter._expand_help(a).lower():
            out.append(f"{label}: default not shown ({formatter._expand_help(a)!r})")
    return out


@pytest.mark.parametrize("prog,build", [("edge-ee", host_parser), ("edge-ee-run", run_parser)])
def test_every_option_has_help_with_its_default(prog: str, build) -> None:
    problems = [msg for name, p in _parsers(build(), prog) for msg in _problems(name, p)]
    assert not problems, "\n".join(problems)


def test_the_walk_sees_every_subcommand() -> None:
    names = {name for name, _ in _parsers(host_parser(), "edge-ee")}
    assert {"edge-ee build", "edge-ee pack-runner", "edge-ee report", "edge-ee train-cnn",
            "edge-ee lm build"} <= names
