#!/usr/bin/env python3
"""Classifies an irctest run against Deskline: PASS, FAIL or N/A per test, counts per module.

  summarize.py --all all.txt --selected selected.txt --junit junit.xml [--markdown out.md]

all.txt: every test of the chosen modules (pytest --collect-only -q); selected.txt: those the
markers keep; junit.xml: the run. Exit status 1 when a test FAILs (or is missing from the run).
"""
import argparse
from collections import Counter, defaultdict
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from expectations import REASONS, not_applicable, short_id  # noqa: E402


def read_ids(path):
    with open(path) as f:
        return [line.strip() for line in f if "::" in line and not line.startswith(" ")]


def junit_results(path):
    """nodeid -> (outcome, message, transcript) from pytest's junit XML."""
    out = {}
    for tc in ET.parse(path).iter("testcase"):
        classname = tc.get("classname", "")
        # classname irctest.server_tests.cap.CapTestCase, name testReqOne[param]
        parts = classname.split(".")
        nodeid = "/".join(parts[:-1]) + ".py::" + parts[-1] + "::" + tc.get("name", "")
        system_out = tc.findtext("system-out") or ""
        outcome, message = "passed", ""
        for kind in ("failure", "error"):
            el = tc.find(kind)
            if el is not None:
                outcome, message = "failed", el.get("message") or ""
        el = tc.find("skipped")
        if el is not None:
            if (el.get("type") or "") == "pytest.xfail":
                outcome, message = "xfailed", el.get("message") or ""
            else:
                outcome, message = "skipped", el.get("message") or ""
        out[short_id(nodeid)] = (outcome, message, system_out)
    return out


def module_of(sid):
    return sid.split(".py::", 1)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--all", required=True)
    ap.add_argument("--selected", required=True)
    ap.add_argument("--junit", required=True)
    ap.add_argument("--markdown")
    a = ap.parse_args()

    all_ids = [short_id(i) for i in read_ids(a.all)]
    selected = {short_id(i) for i in read_ids(a.selected)}
    results = junit_results(a.junit)

    rows = []  # (module, sid, verdict, detail)
    for sid in all_ids:
        if sid not in selected:
            rows.append((module_of(sid), sid, "N/A", REASONS["impl"], None))
            continue
        reason = not_applicable(sid)
        res = results.get(sid)
        if reason is not None:
            ran = None if res is None else res[0]
            if reason in ("vacuous", "harness") and ran == "passed":
                ran = None  # it passes without testing the server
            rows.append((module_of(sid), sid, "N/A", REASONS[reason], ran))
            continue
        if res is None:
            rows.append((module_of(sid), sid, "FAIL", "did not run (missing from the junit report)", None))
            continue
        outcome, message, _ = res
        if outcome == "passed":
            rows.append((module_of(sid), sid, "PASS", "", None))
        elif outcome == "skipped":
            msg = message.split(": ", 1)[-1] if message.startswith("Skipped") else message
            rows.append((module_of(sid), sid, "N/A", "irctest skipped it: " + msg.strip(), None))
        elif outcome == "xfailed":
            rows.append((module_of(sid), sid, "N/A", "irctest xfail (optional): " + message, None))
        else:
            rows.append((module_of(sid), sid, "FAIL", message.splitlines()[0] if message else "", None))

    per_module = defaultdict(Counter)
    for module, _, verdict, _, _ in rows:
        per_module[module][verdict] += 1
    lines = []
    lines.append(f"{'module':26} {'PASS':>5} {'FAIL':>5} {'N/A':>5}")
    total = Counter()
    for module in dict.fromkeys(m for m, *_ in rows):
        c = per_module[module]
        total.update(c)
        lines.append(f"{module:26} {c['PASS']:5} {c['FAIL']:5} {c['N/A']:5}")
    lines.append(f"{'total':26} {total['PASS']:5} {total['FAIL']:5} {total['N/A']:5}")

    lines.append("")
    lines.append("PASS:")
    for _, sid, verdict, _, _ in rows:
        if verdict == "PASS":
            lines.append(f"  {sid}")

    lines.append("")
    lines.append("FAIL:")
    for _, sid, verdict, detail, _ in rows:
        if verdict == "FAIL":
            lines.append(f"  {sid}\n      {detail[:600]}")
    if not total["FAIL"]:
        lines.append("  (none)")

    lines.append("")
    lines.append("N/A by reason:")
    by_reason = defaultdict(list)
    for _, sid, verdict, detail, ran in rows:
        if verdict == "N/A":
            by_reason[detail].append((sid, ran))
    for reason, tests in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  [{len(tests)}] {reason}")
        for sid, _ in tests:
            lines.append(f"        {sid}")
    stale = [(sid, ran) for tests in by_reason.values() for sid, ran in tests if ran == "passed"]
    if stale:
        lines.append("")
        lines.append("N/A tests that PASSED when run (--run-na): check their entry in expectations.py:")
        for sid, _ in stale:
            lines.append(f"  {sid}")

    text = "\n".join(lines)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write("```\n" + text + "\n```\n")
    return 1 if total["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
