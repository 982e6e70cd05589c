"""The alert rules (infra/modules/alerts.bicep) still match what the app logs and how its functions
are named, so that renaming a log line or a function breaks this test instead of the alert going
quiet; and each rule has its runbook in docs/operations.md.

From each rule's KQL the test takes the function names (`name == "f"`, `name in ("f", "g")`) and the
message matchers (`message startswith "..."`, `message matches regex @"..."`, `extract(@"...")`,
`message has "..."`), then looks for them in billing/: each name must be a function of the app,
each matcher must match a logging call's format string rendered with sample arguments. The poison
rule matches a line of the Functions host, checked against the host's documented wording for each
of the app's queues."""

from __future__ import annotations

import ast
import json
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from billing.ops.status import BEHIND_TOO_FAR_SECONDS
from billing.store.tables import ALL_QUEUES, EVENT_WORK_QUEUE, USAGE_BATCH_QUEUE
from tests.infra.bicep_tree import (
    INFRA,
    ROOT,
    Declaration,
    Node,
    declarations,
    get_path,
    params,
    properties,
    string_value,
    text,
    variables,
)

ALERTS = INFRA / "modules" / "alerts.bicep"
MAIN = INFRA / "main.bicep"
OPERATIONS = ROOT / "docs" / "operations.md"
BILLING = ROOT / "billing"
# Storage queues extension, QueueProcessor.CopyMessageToPoisonQueueAsync (Azure/azure-sdk-for-net,
# Microsoft.Azure.WebJobs.Extensions.Storage.Queues), logged at Warning when it moves a message.
HOST_POISON_LINE = "Message has reached MaxDequeueCount of {count}. Moving message to queue '{queue}'."
LEVELS = ("debug", "info", "warning", "error", "exception", "critical")
DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$")


@dataclass(frozen=True)
class Rule:
    name: str
    display_name: str
    runbook: str
    severity: int
    frequency: str
    window: str
    query_range: str
    query: str

    def functions(self) -> set[str]:
        found = set(re.findall(r'\bname == "(\w+)"', self.query))
        for group in re.findall(r"\bname in \(([^)]*)\)", self.query):
            found |= set(re.findall(r'"(\w+)"', group))
        return found

    def matchers(self) -> list[tuple[str, str]]:
        """(kind, pattern) for every test of `message` in the query."""
        found = [("regex", p) for p in re.findall(r'message matches regex @"([^"]+)"', self.query)]
        found += [("regex", p) for p in re.findall(r'extract\(@"([^"]+)"', self.query)]
        found += [("prefix", p) for p in re.findall(r'message startswith "([^"]+)"', self.query)]
        found += [("contains", p) for p in re.findall(r'message has "([^"]+)"', self.query)]
        return found


def minutes(duration: str) -> int:
    match = DURATION.match(duration)
    assert match, f"not an ISO 8601 duration of days, hours and minutes: {duration!r}"
    assert any(match.groups()), f"an empty duration: {duration!r}"
    days, hours, mins = (int(g or 0) for g in match.groups())
    return (days * 24 + hours) * 60 + mins


def rules(path: Path = ALERTS) -> list[Rule]:
    array = variables(path).get("rules")
    assert array is not None, f"{path.name}: no `var rules = [...]`"
    found = []
    for item in (c for c in array.named_children if c.type == "object"):
        props = properties(item)

        def value(key: str, props: dict[str, Node] = props) -> str:
            node = props.get(key)
            assert node is not None, f"{path.name}: a rule has no {key!r}"
            return string_value(node) if node.type == "string" else text(node)  # type: ignore[return-value]

        found.append(
            Rule(
                value("name"),
                value("displayName"),
                value("runbook"),
                int(value("severity")),
                value("evaluationFrequency"),
                value("windowSize"),
                value("queryTimeRange"),
                value("query").strip(),
            )
        )
    return found


def by_name(path: Path = ALERTS) -> dict[str, Rule]:
    return {r.name: r for r in rules(path)}


# --- what the app has: functions and log lines ---------------------------------------------------


@dataclass(frozen=True)
class Function:
    name: str
    trigger: str  # timer_trigger, queue_trigger, route, ...
    argument: str  # the schedule, queue name or route (names resolved through billing.store.tables)
    where: str


@dataclass(frozen=True)
class LogLine:
    level: str
    format: str
    where: str

    def sample(self, number: int = 3) -> str:
        """The line as logged, with %d -> number and %s/%r -> a word without spaces."""
        rendered = re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[di]", str(number), self.format)
        rendered = re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[sr]", "sub_1", rendered)
        return rendered.replace("%%", "%")


def _sources(overrides: dict[Path, str] | None = None) -> dict[Path, str]:
    found = {p: p.read_text(encoding="utf-8") for p in sorted(BILLING.rglob("*.py"))}
    found.update(overrides or {})
    return found


def _constant(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        from billing.store import tables  # noqa: PLC0415 - the queue names the decorators use

        value = getattr(tables, node.id, None)
        return value if isinstance(value, str) else None
    return None


@cache
def _facts(path: Path, source: str) -> tuple[tuple[Function, ...], tuple[LogLine, ...]]:
    """The functions (in billing/functions) and the logging calls of one file, by its content."""
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    functions: list[Function] = []
    lines: list[LogLine] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and path.parent.name == "functions":
            functions += [
                _function(node, decorator, f"{where}:{node.lineno}")
                for decorator in node.decorator_list
                if isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
            ]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS:
            fmt = node.args[0] if node.args else None
            if isinstance(fmt, ast.Constant) and isinstance(fmt.value, str):
                lines.append(LogLine(node.func.attr, fmt.value, f"{where}:{node.lineno}"))
    return tuple(functions), tuple(lines)


def _function(node: ast.FunctionDef, decorator: ast.Call, where: str) -> Function:
    keywords = {k.arg: k.value for k in decorator.keywords}
    argument = keywords.get("schedule") or keywords.get("queue_name") or keywords.get("route")
    value = _constant(argument) if argument is not None else None
    return Function(node.name, decorator.func.attr, value or "", where)  # type: ignore[attr-defined]


def app_functions(sources: dict[Path, str]) -> dict[str, Function]:
    return {f.name: f for path, source in sources.items() for f in _facts(path, source)[0]}


def log_lines(sources: dict[Path, str]) -> list[LogLine]:
    return [line for path, source in sources.items() for line in _facts(path, source)[1]]


def matches(kind: str, pattern: str, line: str) -> bool:
    if kind == "regex":
        return re.search(pattern, line) is not None  # KQL `matches regex` and extract() search, like re.search
    if kind == "prefix":
        return line.startswith(pattern)
    return pattern in line


def host_lines() -> list[str]:
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    count = host["extensions"]["queues"]["maxDequeueCount"]
    return [HOST_POISON_LINE.format(count=count, queue=f"{queue}-poison") for queue in ALL_QUEUES]


# --- the checks ---------------------------------------------------------------------------------


def code_problems(alerts: Path = ALERTS, overrides: dict[Path, str] | None = None) -> list[str]:
    """Every function name and message matcher of every rule exists in the app (or the host)."""
    sources = _sources(overrides)
    functions = app_functions(sources)
    lines = log_lines(sources)
    problems = []
    for rule in rules(alerts):
        for name in sorted(rule.functions()):
            if name not in functions:
                problems.append(f"{rule.name}: the query names function {name!r}, which billing/functions has not")
        for kind, pattern in rule.matchers():
            if rule.name == "poison-message":
                if not all(matches(kind, pattern, line) for line in host_lines()):
                    problems.append(
                        f"{rule.name}: {pattern!r} does not match the host's line for every queue "
                        f"in ALL_QUEUES, e.g. {host_lines()[0]!r}"
                    )
            elif not any(matches(kind, pattern, line.sample()) for line in lines):
                problems.append(
                    f"{rule.name}: no log call in billing/ matches {kind} {pattern!r}: was a log line "
                    "renamed? Change the query with it"
                )
        if not rule.functions() and not rule.matchers():
            problems.append(f"{rule.name}: the query tests neither a function name nor a message")
    return problems


def binding_problems(alerts: Path = ALERTS, overrides: dict[Path, str] | None = None) -> list[str]:
    """Each rule watches the functions and lines it is about, found by what they do, not by name."""
    sources = _sources(overrides)
    functions = app_functions(sources)
    lines = log_lines(sources)
    found = by_name(alerts)
    problems = []

    def names(trigger: str, argument: str) -> set[str]:
        return {f.name for f in functions.values() if f.trigger == trigger and f.argument == argument}

    def logged(level: str, start: str) -> list[LogLine]:
        return [line for line in lines if line.level == level and line.format.startswith(start)]

    expected = {
        "usage-push-failed": names("timer_trigger", "%USAGE_PUSH_SCHEDULE%")
        | names("queue_trigger", USAGE_BATCH_QUEUE),
        "usage-push-not-run": names("timer_trigger", "%USAGE_PUSH_SCHEDULE%"),
        "webhook-5xx": {
            f.name for f in functions.values() if f.trigger == "route" and f.argument.startswith("webhooks/")
        },
        "reconcile-drift": names("timer_trigger", "%RECONCILE_SCHEDULE%"),
    }
    for rule_name, wanted in expected.items():
        rule = found.get(rule_name)
        if rule is None:
            problems.append(f"alerts.bicep: no rule {rule_name!r}")
        elif not wanted or rule.functions() != wanted:
            problems.append(
                f"{rule_name}: the query watches functions {sorted(rule.functions())}, the app has "
                f"{sorted(wanted)} for it"
            )

    # (rule, level, how the line starts in the code, a sample that must fire, one that must not)
    lines_expected = [
        ("usage-push-failed", "warning", "usage push: %d refused: ", 3, None),
        ("reconcile-drift", "info", "reconcile: %d change(s)", 3, 0),
        ("reconcile-drift", "exception", "reconcile of %s failed", 3, None),
        ("meter-errors", "warning", "usage: meter error report %s: ", 3, None),
    ]
    for rule_name, level, start, fire, quiet in lines_expected:
        rule = found.get(rule_name)
        candidates = logged(level, start)
        if rule is None:
            continue
        if not candidates:
            problems.append(f"{rule_name}: billing/ no longer logs {start!r} at {level}: change the query with it")
            continue
        line = candidates[0]
        if not any(matches(k, p, line.sample(fire)) for k, p in rule.matchers()):
            problems.append(f"{rule_name}: the query does not match {line.sample(fire)!r} ({line.where})")
        if quiet is not None and _extracted(rule, line.sample(quiet)) != quiet:
            problems.append(f"{rule_name}: the query must read the count from {line.sample(quiet)!r}")
        if quiet is not None and _extracted(rule, line.sample(fire)) != fire:
            problems.append(f"{rule_name}: the query must read the count from {line.sample(fire)!r}")

    not_run = found.get("usage-push-not-run")
    hours = BEHIND_TOO_FAR_SECONDS // 3600
    if not_run is not None and set(re.findall(r"ago\((\d+)h\)", not_run.query)) != {str(hours)}:
        problems.append(f"usage-push-not-run: the query must look back {hours}h, as `python -m billing status` does")
    queues = {f.argument for f in functions.values() if f.trigger == "queue_trigger"}
    if queues != set(ALL_QUEUES) or EVENT_WORK_QUEUE not in queues:
        problems.append(f"poison-message: the app's queue triggers {sorted(queues)} are not ALL_QUEUES {ALL_QUEUES}")
    return problems


def _extracted(rule: Rule, line: str) -> int | None:
    for pattern in re.findall(r'extract\(@"([^"]+)", 1', rule.query):
        match = re.search(pattern, line)
        if match:
            return int(match.group(1))
    return None


def timing_problems(found: list[Rule]) -> list[str]:
    """The six rules, each with a severity, and a frequency and window that see every row."""
    problems = []
    if {r.name for r in found} != {
        "usage-push-failed",
        "usage-push-not-run",
        "poison-message",
        "webhook-5xx",
        "reconcile-drift",
        "meter-errors",
    }:
        problems.append(f"alerts.bicep: unexpected set of rules {sorted(r.name for r in found)}")
    for rule in found:
        if not 0 <= rule.severity <= 4:
            problems.append(f"{rule.name}: severity {rule.severity} is not 0-4")
        if minutes(rule.frequency) > minutes(rule.query_range):
            problems.append(
                f"{rule.name}: evaluated every {rule.frequency} over {rule.query_range}: rows in between are never seen"
            )
        if minutes(rule.query_range) > 2 * 24 * 60:
            problems.append(f"{rule.name}: a log search alert reads at most two days ({rule.query_range})")
        if minutes(rule.window) > minutes(rule.query_range):
            problems.append(f"{rule.name}: windowSize {rule.window} is longer than the query range")
    return problems


def setting_problems(alerts: Path = ALERTS, main: Path = MAIN) -> list[str]:
    """Severity, frequency and window of each rule; the resources and their wiring."""
    problems = timing_problems(rules(alerts))
    decls = [d for d in declarations(alerts) if d.kind == "resource"]
    alert_rules = [d for d in decls if d.resource_type == "Microsoft.Insights/scheduledQueryRules"]
    groups = [d for d in decls if d.resource_type == "Microsoft.Insights/actionGroups"]
    components = {d.symbol: d for d in decls if d.resource_type == "Microsoft.Insights/components" and d.existing}
    if len(alert_rules) != 1 or alert_rules[0].type != "Microsoft.Insights/scheduledQueryRules@2023-12-01":
        return [*problems, "alerts.bicep: one scheduledQueryRules@2023-12-01 declaration looping over `rules`"]
    if len(groups) != 1 or groups[0].type != "Microsoft.Insights/actionGroups@2023-01-01":
        return [*problems, "alerts.bicep: one actionGroups@2023-01-01"]
    (rule_decl,), (group,) = alert_rules, groups
    problems += _rule_resource_problems(rule_decl, group, components)
    receivers = get_path(group.body, "properties", "emailReceivers")
    if receivers is None or "emailAddress: alertEmail" not in text(receivers):
        problems.append("alerts.bicep: the action group must mail alertEmail")
    short = string_value(get_path(group.body, "properties", "groupShortName"))
    if not short or len(short) > 12:
        problems.append("alerts.bicep: groupShortName is required, at most 12 characters")
    module = [d for d in declarations(main) if d.kind == "module" and d.type == "modules/alerts.bicep"]
    if len(module) != 1:
        return [*problems, "main.bicep: one alerts module"]
    given = {k: text(v) for k, v in properties(get_path(module[0].body, "params")).items()}
    if given.get("applicationInsightsName") != "monitoring.outputs.applicationInsightsName":
        problems.append("main.bicep: the alerts must query the monitoring module's component")
    if given.get("alertEmail") != "alertEmail" or "if (!empty(alertEmail))" not in text(module[0].node):
        problems.append("main.bicep: the alerts module is deployed when, and only when, alertEmail is set")
    if params(main).get("alertEmail") is None:
        problems.append("main.bicep: no alertEmail parameter")
    return problems


def _rule_resource_problems(rule: Declaration, group: Declaration, components: dict[str, Declaration]) -> list[str]:
    problems = []
    body = rule.body

    def prop(*path: str) -> str:
        node = get_path(body, *path)
        return text(node) if node is not None else ""

    if "for rule in rules" not in text(rule.node):
        problems.append("alerts.bicep: the alert rules must be one loop over `rules`")
    if prop("kind") != "'LogAlert'":
        problems.append("alerts.bicep: kind must be 'LogAlert'")
    scopes = get_path(body, "properties", "scopes")
    scope_ids = [text(c) for c in scopes.named_children] if scopes is not None else []
    if len(scope_ids) != 1 or scope_ids[0].removesuffix(".id") not in components:
        problems.append("alerts.bicep: each rule is scoped to the Application Insights component")
    for path, expected in (
        (("properties", "severity"), "rule.severity"),
        (("properties", "evaluationFrequency"), "rule.evaluationFrequency"),
        (("properties", "windowSize"), "rule.windowSize"),
        (("properties", "overrideQueryTimeRange"), "rule.queryTimeRange"),
        (("properties", "autoMitigate"), "true"),
        (("properties", "enabled"), "true"),
    ):
        if prop(*path) != expected:
            problems.append(f"alerts.bicep: {'.'.join(path)} must be {expected}")
    condition = get_path(body, "properties", "criteria", "allOf")
    condition_text = text(condition) if condition is not None else ""
    for needed in ("query: rule.query", "timeAggregation: 'Count'", "operator: 'GreaterThan'", "threshold: 0"):
        if needed not in condition_text:
            problems.append(f"alerts.bicep: the condition needs {needed!r} (fire on any row)")
    if f"{group.symbol}.id" not in prop("properties", "actions"):
        problems.append("alerts.bicep: every rule sends to the action group")
    return problems


def runbook_problems(alerts: Path = ALERTS, operations: Path = OPERATIONS) -> list[str]:
    if not operations.is_file():
        return [f"{operations.name} is missing"]
    docs = operations.read_text(encoding="utf-8")
    headings = re.findall(r"^### `([\w-]+)`", docs, re.MULTILINE)
    problems = []
    for rule in rules(alerts):
        if rule.runbook not in headings:
            problems.append(f"{rule.name}: docs/operations.md has no section '### `{rule.runbook}`'")
            continue
        section = docs.split(f"### `{rule.runbook}`", 1)[1].split("\n### ", 1)[0]
        if "python -m billing" not in section and rule.name != "poison-message":
            problems.append(f"{rule.name}: its runbook section names no `python -m billing` command")
    for extra in set(headings) - {r.runbook for r in rules(alerts)}:
        problems.append(f"docs/operations.md: section {extra!r} is for no alert rule")
    return problems


# --- the repository passes ----------------------------------------------------------------------


def test_every_query_matches_a_function_or_log_line_of_the_app() -> None:
    assert code_problems() == []


def test_each_rule_watches_the_functions_and_lines_it_is_about() -> None:
    assert binding_problems() == []


def test_rules_have_a_severity_frequency_and_window_and_are_wired() -> None:
    assert setting_problems() == []


def test_each_rule_has_a_runbook() -> None:
    assert runbook_problems() == []


def test_the_operations_runbook_is_linked_from_the_deploy_guide() -> None:
    assert "operations.md" in (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")


def runbook_commands(docs: str) -> set[str]:
    """`python -m billing ...` in inline code and on the lines of code blocks (without comments)."""
    found = set(re.findall(r"`python -m billing ([^`]+)`", docs))
    found |= {m.split(" #", 1)[0].strip() for m in re.findall(r"^\s*python -m billing (.+)$", docs, re.MULTILINE)}
    return found


def test_the_cli_commands_in_the_runbook_exist(capsys: pytest.CaptureFixture[str]) -> None:
    from billing.cli import build_parser  # noqa: PLC0415

    commands = runbook_commands(OPERATIONS.read_text(encoding="utf-8"))
    assert {c.split()[0] for c in commands} >= {"status", "reconcile", "usage", "retention"}, commands
    parser = build_parser()
    for command in sorted(commands):
        try:
            parser.parse_args(shlex.split(command))
        except SystemExit:
            pytest.fail(
                f"docs/operations.md: `python -m billing {command}` is not a valid command: "
                f"{capsys.readouterr().err.strip()}"
            )


def test_an_invalid_runbook_command_is_caught() -> None:
    from billing.cli import build_parser  # noqa: PLC0415

    (command,) = runbook_commands("run `python -m billing reconcile --dry-rum` now")
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split(command))


def test_matching_works_on_known_lines() -> None:
    rule = by_name()["reconcile-drift"]
    assert any(matches(k, p, "reconcile: 2 change(s)") for k, p in rule.matchers())
    assert _extracted(rule, "reconcile: 0 change(s)") == 0
    poison = by_name()["poison-message"]
    assert all(
        matches(k, p, "Message has reached MaxDequeueCount of 5. Moving message to queue 'x-poison'.")
        for k, p in poison.matchers()
    )
    assert not all(matches(k, p, "Moving message to queue 'usage-batches'.") for k, p in poison.matchers())


# --- and fails when the code or the rule changes --------------------------------------------------

USAGE = BILLING / "functions" / "usage.py"
WEBHOOKS = BILLING / "functions" / "webhooks.py"
RECONCILE = BILLING / "access" / "reconcile.py"

# (file, text replaced once, replacement, words expected in a problem)
CODE_MUTATIONS = [
    (USAGE, '"usage push: %d refused: %s"', '"usage push: %d events refused: %s"', "usage-push-failed"),
    (USAGE, "def usage_push_timer(", "def usage_fan_out(", "usage_push_timer"),
    (USAGE, "def usage_push_batch(", "def usage_batch(", "usage_push_batch"),
    (USAGE, '"usage: meter error report %s: %s"', '"usage: meter errors %s: %s"', "meter-errors"),
    (USAGE, 'log.warning("usage: meter error report', 'log.info("usage: meter error report', "meter-errors"),
    (USAGE, "def stripe_thin_events(", "def stripe_events(", "stripe_thin_events"),
    (WEBHOOKS, '"reconcile: %d change(s)"', '"reconcile: %d subscription(s) changed"', "reconcile-drift"),
    (WEBHOOKS, "def reconcile_access(", "def reconcile_timer(", "reconcile_access"),
    (WEBHOOKS, "def stripe_webhook(", "def stripe_hook(", "stripe_webhook"),
    (RECONCILE, '"reconcile of %s failed"', '"could not reconcile %s"', "reconcile-drift"),
]


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"), CODE_MUTATIONS, ids=[f"{m[0].stem}-{i}" for i, m in enumerate(CODE_MUTATIONS)]
)
def test_a_renamed_log_line_or_function_is_reported(path: Path, old: str, new: str, expected: str) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count(old) == 1, f"{path.name}: the mutation must match exactly once: {old!r}"
    overrides = {path: source.replace(old, new)}
    problems = code_problems(ALERTS, overrides) + binding_problems(ALERTS, overrides)
    assert any(expected in p for p in problems), problems


def test_a_new_webhook_function_must_be_watched() -> None:
    source = USAGE.read_text(encoding="utf-8")
    added = source + (
        '\n\n@bp.route(route="webhooks/other", methods=["POST"])\n'
        "def other_webhook(req: func.HttpRequest) -> func.HttpResponse:\n    return req\n"
    )
    problems = binding_problems(ALERTS, {USAGE: added})
    assert any("webhook-5xx" in p and "other_webhook" in p for p in problems), problems


def test_a_new_queue_must_be_watched(tmp_path: Path) -> None:
    source = USAGE.read_text(encoding="utf-8")
    added = source + (
        '\n\n@bp.queue_trigger(arg_name="msg", queue_name="new-queue", connection="Storage")\n'
        "def new_worker(msg: func.QueueMessage) -> None:\n    return None\n"
    )
    problems = binding_problems(ALERTS, {USAGE: added})
    assert any("poison-message" in p and "new-queue" in p for p in problems), problems


# (text replaced once in alerts.bicep, replacement, words expected in a problem)
RULE_MUTATIONS = [
    ('name in ("usage_push_timer", "usage_push_batch")', 'name in ("usage_push_timer")', "usage-push-failed"),
    ('@"^usage push: \\d+ refused: "', '@"^usage push: \\d+ rejected: "', "usage-push-failed"),
    ("ago(26h) and", "ago(24h) and", "usage-push-not-run"),
    ('name in ("stripe_webhook", "stripe_thin_events")', 'name in ("stripe_webhook")', "webhook-5xx"),
    ("@\"Moving message to queue '[^']+-poison'\"", "@\"Moving message to queue '[^']+-dead'\"", "poison-message"),
    (
        'extract(@"^reconcile: (\\d+) change", 1, message)',
        'extract(@"^reconcile: (\\d+) changed", 1, message)',
        "reconcile-drift",
    ),
    (
        'message startswith "usage: meter error report "',
        'message startswith "usage: meter errors report "',
        "meter-errors",
    ),
    (
        "    evaluationFrequency: 'PT1H'\n    windowSize: 'PT1H'\n    queryTimeRange: 'PT1H'",
        "    evaluationFrequency: 'PT2H'\n    windowSize: 'PT1H'\n    queryTimeRange: 'PT1H'",
        "never seen",
    ),
    ("    queryTimeRange: 'P2D'", "    queryTimeRange: 'P3D'", "two days"),
    ("    severity: 2\n    // Stripe sends", "    severity: 5\n    // Stripe sends", "severity 5"),
    ("          threshold: 0\n", "          threshold: 10\n", "threshold: 0"),
    ("    autoMitigate: true\n", "    autoMitigate: false\n", "autoMitigate"),
    ("        emailAddress: alertEmail\n", "        emailAddress: 'someone@example.com'\n", "mail alertEmail"),
    ("    runbook: 'meter-errors'\n", "    runbook: 'meter-error'\n", "no section"),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), RULE_MUTATIONS, ids=[f"rule-{i}" for i in range(len(RULE_MUTATIONS))]
)
def test_a_broken_rule_is_reported(tmp_path: Path, old: str, new: str, expected: str) -> None:
    source = ALERTS.read_text(encoding="utf-8")
    assert source.count(old) == 1, f"the mutation must match exactly once: {old!r}"
    broken = tmp_path / ALERTS.name
    broken.write_text(source.replace(old, new), encoding="utf-8")
    problems = code_problems(broken) + binding_problems(broken) + setting_problems(broken) + runbook_problems(broken)
    assert any(expected in p for p in problems), problems


def test_an_unconditional_alerts_module_is_reported(tmp_path: Path) -> None:
    source = MAIN.read_text(encoding="utf-8")
    old = "module alerts 'modules/alerts.bicep' = if (!empty(alertEmail)) {"
    assert source.count(old) == 1
    broken = tmp_path / MAIN.name
    broken.write_text(source.replace(old, "module alerts 'modules/alerts.bicep' = {"), encoding="utf-8")
    assert any("only when, alertEmail" in p for p in setting_problems(ALERTS, broken))
