"""Reads schemathesis' NDJSON event report and prints tests/schema/run.sh's verdict lines.

Usage: summarize.py REPORT.ndjson CHECKS EXIT_STATUS [HOOK_STATS.json]

CHECKS is the comma-separated list given to `schemathesis run --checks`. Output: comment
lines (`# ...`) with the figures, then one verdict line per counted check, `ok   - ...` or
`FAIL - ...`; run.sh counts those. The counted checks are:

- for each operation of the document and each check in CHECKS: the check ran on at least one
  response of that operation, in any phase (examples, coverage, fuzzing, stateful), and never
  failed;
- for each operation: at least one response was a 200 (otherwise the run tested only refusals,
  and the success schemas went unchecked);
- schemathesis finished its run, with no errors (network errors, schema errors, crashes), and
  its exit status agrees with the failures counted here.
"""

from __future__ import annotations

import base64
import collections
import json
import sys

OPERATIONS = ["POST /v1/register", "POST /v1/verify"]
MAX_SHOWN = 3


def decode(content: dict | None) -> str:
    if not content:
        return ""
    if "$base64" in content:
        return base64.b64decode(content["$base64"]).decode("utf-8", "replace")
    return str(content.get("string", content))


def printable(text: str, limit: int = 1000) -> str:
    """The text on one line, control and non-ASCII characters escaped as in JSON."""
    return json.dumps(text[:limit])[1:-1]


def error_code(status: int, body: str) -> str:
    if status == 200:
        return ""
    try:
        value = json.loads(body)
    except ValueError:
        return "(not JSON)"
    return value.get("code", "(no code)") if isinstance(value, dict) else "(not an object)"


def main() -> int:
    report, checks_arg, exit_status = sys.argv[1], sys.argv[2], int(sys.argv[3])
    hook_stats = sys.argv[4] if len(sys.argv) > 4 else None
    checks = [c for c in checks_arg.split(",") if c]

    runs = collections.Counter()  # (operation, check) -> responses checked
    failures = collections.defaultdict(list)  # (operation, check) -> [(case, interaction, info)]
    statuses = collections.Counter()  # (operation, method, status, code)
    phases = collections.Counter()  # phase -> test cases
    errors: list[str] = []
    finished = False
    cases_total = 0
    check_runs = 0

    with open(report, encoding="utf-8") as events:
        for line in events:
            event = json.loads(line)
            (kind, data), = event.items()
            if kind == "EngineFinished":
                finished = True
            elif kind in ("NonFatalError", "FatalError"):
                info = data.get("info") or data.get("exception") or data
                label = data.get("label", "")
                errors.append(f"{kind} {label}: {json.dumps(info)[:600]}")
            elif kind == "Interrupted":
                errors.append("the run was interrupted")
            elif kind == "ScenarioFinished":
                recorder = data["recorder"]
                phase = data.get("phase", "?")
                for case_id, node in recorder["cases"].items():
                    case = node["value"]
                    method = case["method"].upper()
                    # Requests with another method (the coverage phase sends some) count
                    # towards the operation of their path; the histogram shows the method.
                    operation = f"POST {case['path']}"
                    cases_total += 1
                    phases[phase] += 1
                    interaction = recorder["interactions"].get(case_id)
                    response = interaction.get("response") if interaction else None
                    if response:
                        status = response["status_code"]
                        code = error_code(status, decode(response.get("content")))
                        statuses[(operation, method, status, code)] += 1
                    for result in recorder["checks"].get(case_id, []):
                        key = (operation, result["name"])
                        runs[key] += 1
                        check_runs += 1
                        if result["status"] != "success":
                            info = (result.get("failure_info") or {}).get("failure", {})
                            failures[key].append((case, interaction, info))

    print(f"# schemathesis: {cases_total} test cases, {check_runs} check runs, "
          f"{sum(len(v) for v in failures.values())} failed check runs")
    print("# test cases per phase: " + ", ".join(f"{p} {n}" for p, n in sorted(phases.items())))
    for (operation, method, status, code), count in sorted(statuses.items()):
        target = operation if method == "POST" else f"{method} {operation.split(' ', 1)[1]}"
        print(f"#   {target} -> {status} {code or '(success)'}: {count}")
    if hook_stats:
        try:
            with open(hook_stats, encoding="utf-8") as stats:
                print(f"# hooks: {json.dumps(json.load(stats))}")
        except OSError:
            print("# hooks: no statistics written")

    verdicts: list[tuple[bool, str]] = []
    for operation in OPERATIONS:
        for check in checks:
            key = (operation, check)
            ran, failed = runs[key], failures[key]
            if failed:
                verdicts.append((False, f"{operation}: {check} failed on {len(failed)} of {ran} responses"))
                for case, interaction, info in failed[:MAX_SHOWN]:
                    show_failure(case, interaction, info)
            elif ran == 0:
                verdicts.append((False, f"{operation}: {check} never ran"))
            else:
                verdicts.append((True, f"{operation}: {check} ({ran} responses)"))
        successes = sum(
            n for (op, method, status, _), n in statuses.items()
            if op == operation and method == "POST" and status == 200
        )
        verdicts.append((successes > 0, f"{operation}: answered 200 at least once ({successes} times)"))

    for error in errors[:10]:
        print(f"# error: {error}")
    run_ok = finished and not errors
    verdicts.append((run_ok, f"schemathesis finished its run without errors "
                             f"({'finished' if finished else 'did not finish'}, {len(errors)} errors)"))
    counted_failures = sum(1 for ok, _ in verdicts if not ok)
    if exit_status != 0 and counted_failures == 0:
        verdicts.append((False, f"schemathesis exited {exit_status} though no check failed"))

    for ok, text in verdicts:
        print(f"{'ok  ' if ok else 'FAIL'} - {text}")
    return 0


def show_failure(case: dict, interaction: dict | None, info: dict) -> None:
    title = info.get("title", "check failed")
    message = (info.get("message") or "").strip().replace("\n", "\n#       ")
    print(f"#   {info.get('code', '')} {title}")
    if message:
        print(f"#       {message[:1500]}")
    if not interaction:
        return
    request, response = interaction.get("request", {}), interaction.get("response") or {}
    headers = {k: v for k, v in (request.get("headers") or {}).items() if k.lower() == "content-type"}
    print(f"#     request:  {request.get('method')} {request.get('uri')} {json.dumps(headers)}")
    print(f"#               body: {printable(decode(request.get('body')))}")
    if response:
        kept = {k: v for k, v in (response.get("headers") or {}).items() if k.lower() != "date"}
        print(f"#     response: {response.get('status_code')} {json.dumps(kept)}")
        print(f"#               body: {printable(decode(response.get('content')))}")


if __name__ == "__main__":
    sys.exit(main())
