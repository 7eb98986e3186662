"""``ferry policy check|test|diff`` (and sign/apply/status): the admin's commands.

Exit status: 0 ok, 1 the check failed (lint errors, a failing test case, an
invalid policy for ``check``), 2 invalid input (a missing policy folder, an
unreadable or invalid policy or test file for ``test`` / ``diff``, usage errors).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ferry.policy import PolicyError, load_plan
from ferry.policy.diff import diff_report
from ferry.policy.lint import ERROR, lint
from ferry.policy.suite import load_suite, run_suite

Subparsers = argparse._SubParsersAction  # the object add_subparsers() returns

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def add_parser(subparsers: Subparsers[argparse.ArgumentParser],
               more: Callable[[Subparsers[argparse.ArgumentParser]], None] | None = None) -> argparse.ArgumentParser:
    """Register ``policy`` and its subcommands on an argparse subparsers object; ``more`` adds further
    subcommands to ``policy`` (``ferry.cli`` passes the management ones: policy does not import mgmt)."""
    p = subparsers.add_parser("policy", help="policy as code: check, test, diff",
                              description="The administrator's commands: policy as code (check, test, diff; "
                              "sign, apply and status for running agents). Exit status: 0 ok, 1 the check "
                              "failed (lint errors, a failing test case, an invalid policy for check), 2 "
                              "invalid input (a missing policy folder, an unreadable or invalid policy or test "
                              "file for test and diff, usage errors).")
    sub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    c = sub.add_parser("check", help="validate a policy folder and lint its rules")
    c.add_argument("dir", type=Path, help="policy folder (policy.yaml, tests/*.yaml)")
    c.add_argument("--strict", action="store_true", help="fail on warnings too")
    c.set_defaults(func=cmd_check)

    t = sub.add_parser("test", help="run the policy's own test suite (DIR/tests/*.yaml)")
    t.add_argument("dir", type=Path, help="policy folder whose tests/*.yaml to run")
    t.add_argument("-v", "--verbose", action="store_true", help="show rule and reason of passing cases")
    t.set_defaults(func=cmd_test)

    d = sub.add_parser("diff", help="what changes between two policies, in words and in verdicts")
    d.add_argument("old", type=Path, help="policy folder of the policy running now")
    d.add_argument("new", type=Path, help="policy folder of the policy to compare with it")
    d.set_defaults(func=cmd_diff)

    if more is not None:
        more(sub)
    return p


def _print_policy_error(e: PolicyError) -> None:
    for problem in e.errors:
        print(f"error: {problem}", file=sys.stderr)


def _missing(*folders: Path) -> bool:
    """Say so, if a policy folder does not exist (a usage error: exit 2, as for test and diff)."""
    gone = [f for f in folders if not f.is_dir()]
    for f in gone:
        print(f"error: {f}: no such policy folder", file=sys.stderr)
    return bool(gone)


def cmd_check(args: argparse.Namespace) -> int:
    if _missing(args.dir):
        return EXIT_INVALID
    try:
        plan = load_plan(args.dir)
    except PolicyError as e:
        _print_policy_error(e)
        return EXIT_FAILED
    findings = lint(plan)
    errors = [f for f in findings if f.level == ERROR]
    warnings = [f for f in findings if f.level != ERROR]
    for f in findings:
        print(str(f))
    failed = bool(errors) or (args.strict and bool(warnings))
    verdict = "FAILED" if failed else "ok"
    print(f"policy {plan.name}: {verdict}: {len(plan.rules)} rules, {len(errors)} errors, "
          f"{len(warnings)} warnings (sm3 {plan.hash.hex()})")
    return EXIT_FAILED if failed else EXIT_OK


def _verdict(allowed: bool) -> str:
    return "allow" if allowed else "refuse"


def cmd_test(args: argparse.Namespace) -> int:
    if _missing(args.dir):
        return EXIT_INVALID
    try:
        plan = load_plan(args.dir)
        cases = load_suite(args.dir)
    except PolicyError as e:
        _print_policy_error(e)
        return EXIT_INVALID
    if not cases:
        print(f"policy {plan.name}: no test cases in {args.dir / 'tests'}", file=sys.stderr)
        return EXIT_FAILED
    results = run_suite(plan, cases)
    failed = 0
    for r in results:
        d = r.decision
        if r.passed:
            print(f"PASS {r.case.where}: {r.case.name}")
            if args.verbose:
                print(f"     {_verdict(d.allowed)} by {d.rule}: {d.reason}")
            continue
        failed += 1
        print(f"FAIL {r.case.where}: {r.case.name}")
        for problem in r.problems:
            print(f"     {problem}")
        print(f"     decision: {_verdict(d.allowed)} by {d.rule}: {d.reason}")
    passed = len(results) - failed
    print(f"policy {plan.name}: {passed} passed, {failed} failed ({len(results)} cases)")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    if _missing(args.old, args.new):
        return EXIT_INVALID
    try:
        lines, summary = diff_report(args.old, args.new)
    except PolicyError as e:
        _print_policy_error(e)
        return EXIT_INVALID
    for line in lines:
        print(line)
    print(summary if lines else "no differences")
    return EXIT_OK
