"""deploy/prometheus: the alert rules pass the real ``promtool check rules`` and
their unit tests (``promtool test rules``), every alert has a case where it
fires and one where it must not, and the rules and the Grafana dashboard use
only the metrics the agent writes (``agent.metrics.exposition.METRICS``) plus
node_exporter's own.

The YAML is read as text (the test venv has no YAML parser): the rules file and
its tests keep one key a line, and the alert count is checked against
promtool's own, so a rule the parsing missed fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from agent.metrics.exposition import METRICS

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "prometheus"
RULES = DEPLOY / "rfid-agent.rules.yml"
TESTS = DEPLOY / "rfid-agent.test.yml"
DASHBOARD = DEPLOY / "rfid-agent-dashboard.json"
PROMTOOL = Path("/usr/bin/promtool")

#: node_exporter's series about the textfile collector, and Prometheus' own.
NODE_EXPORTER = {"node_textfile_mtime_seconds", "node_textfile_scrape_error"}
PROMETHEUS = {"up"}
#: The alert about the whole fleet (an aggregate: no instance label to name).
FLEET_WIDE = {"RfidAgentIflowUnreachable"}

PROMQL_WORDS = {"and", "or", "unless", "on", "ignoring", "by", "without", "group_left",
                "group_right", "bool", "offset", "inf", "nan"}


@pytest.fixture(scope="module")
def promtool() -> str:
    if not PROMTOOL.is_file():
        pytest.fail(f"{PROMTOOL} is missing: install the Debian package 'prometheus' "
                    "(apt-get install prometheus; scripts/test does)")
    return str(PROMTOOL)


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=DEPLOY, check=False, capture_output=True,
                          text=True, timeout=120)


def _alerts(text: str) -> list[str]:
    return re.findall(r"^[ \t]*- alert:[ \t]*(\S+)[ \t]*$", text, re.M)


def _rule_blocks(text: str) -> dict[str, str]:
    """Each alert's lines, from its ``- alert:`` to the next."""
    parts = re.split(r"^(?=[ \t]*- alert:)", text, flags=re.M)[1:]
    return {_alerts(p)[0]: p for p in parts}


def _rule_exprs(text: str) -> list[str]:
    """Every ``expr:``, a one-liner or a ``|`` block (its lines indented deeper)."""
    exprs, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2) not in ("|", "|-", ">", ">-"):
            exprs.append(m.group(2))
            continue
        body = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= len(m.group(1)):
                break
            body.append(nxt.strip())
        exprs.append(" ".join(body).strip())
    return exprs


def _test_cases(text: str) -> list[tuple[str, bool]]:
    """(alertname, fires) for every alert_rule_test case."""
    return [(name, rest.strip() != "[]") for name, rest in
            re.findall(r"^\s*alertname:\s*(\S+)\s*\n\s*exp_alerts:(.*)$", text, re.M)]


def _metric_names(expr: str) -> set[str]:
    """The series names an expression selects: what is left once strings,
    label matchers, label lists, durations, numbers, functions and keywords go."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b\d[\w.]*", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", e):
        following = e[m.end():].lstrip()
        if following.startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def _known() -> set[str]:
    return {name for name, _kind, _help in METRICS} | NODE_EXPORTER | PROMETHEUS


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])  # a collapsed row keeps its panels inside
    return out


def _dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels(dash) if p["type"] != "row" for t in p["targets"]]


# ------------------------------------------------------------------ promtool


def test_rules_pass_promtool_check(promtool: str) -> None:
    got = _promtool(promtool, "check", "rules", RULES.name)
    assert got.returncode == 0, got.stdout + got.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", got.stdout)
    assert found, got.stdout
    # every rule is an alert, and the text parsing below saw each of them
    assert int(found.group(1)) == len(_alerts(RULES.read_text())) > 0


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    got = _promtool(promtool, "test", "rules", TESTS.name)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "SUCCESS" in got.stdout


def test_promtool_fails_a_case_that_expects_the_wrong_alert(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: a case that expects nothing where an alert fires does."""
    (tmp_path / RULES.name).write_text(RULES.read_text())
    broken = re.sub(r"(alertname: RfidAgentReaderDown\s*\n\s*exp_alerts:)\s*\n(\s*- exp_labels:)",
                    r"\1 []\n\2", TESTS.read_text(), count=1)
    broken = broken.split("\n          - exp_labels:", 1)
    assert len(broken) == 2
    # drop the expected alert (up to the next case) so the YAML stays valid
    rest = broken[1].split("\n      - eval_time:", 1)[1]
    (tmp_path / TESTS.name).write_text(broken[0] + "\n      - eval_time:" + rest)
    got = subprocess.run([promtool, "test", "rules", TESTS.name], cwd=tmp_path, check=False,
                         capture_output=True, text=True, timeout=120)
    assert got.returncode != 0, got.stdout
    out = got.stdout + got.stderr
    assert "FAILED" in out and "alertname: RfidAgentReaderDown, time: 7m" in out, out


# ------------------------------------------------------------------ rules and their tests


def test_every_alert_has_a_firing_case_and_a_silent_one() -> None:
    alerts = _alerts(RULES.read_text())
    cases = _test_cases(TESTS.read_text())
    assert len(alerts) == len(set(alerts)), alerts
    assert {name for name, _ in cases} <= set(alerts), "a test names an alert the rules do not have"
    for alert in alerts:
        assert (alert, True) in cases, f"{alert}: no promtool case where it fires"
        assert (alert, False) in cases, f"{alert}: no promtool case where it must not fire"


def test_every_alert_says_what_to_do_and_where() -> None:
    for alert, block in _rule_blocks(RULES.read_text()).items():
        assert alert.startswith("RfidAgent"), alert
        assert re.search(r"^\s*for:\s*\d+[smh]\s*$", block, re.M), f"{alert}: no for:"
        assert re.search(r"^\s*severity:\s*(critical|warning)\s*$", block, re.M), f"{alert}: no severity"
        assert re.search(r"^\s*summary:", block, re.M), f"{alert}: no summary"
        description = block.split("description:", 1)[-1]
        assert "`agent " in description or "`journalctl" in description, f"{alert}: no command to run"
        if alert not in FLEET_WIDE:
            assert "{{ $labels.instance }}" in block, f"{alert}: does not name the door"


def test_rules_use_only_the_agents_and_node_exporters_metrics() -> None:
    exprs = _rule_exprs(RULES.read_text())
    assert len(exprs) == len(_alerts(RULES.read_text()))
    used = set().union(*map(_metric_names, exprs))
    assert used - _known() == set()
    assert "rfid_agent_reader_up" in used and "node_textfile_mtime_seconds" in used


def test_the_metric_name_extraction_sees_names_and_skips_the_rest() -> None:
    expr = ('max by (instance) (present_over_time(node_textfile_mtime_seconds{file=~"(.*/)?rfid_agent[.]prom"}[1d]))'
            ' unless on(instance) rfid_agent_daemon_running == 0 and ignoring(reader) up == 1'
            ' or 0.05 * rfid_agent_nope_bytes > 1e6')
    assert _metric_names(expr) == {"node_textfile_mtime_seconds", "rfid_agent_daemon_running", "up",
                                   "rfid_agent_nope_bytes"}


# ------------------------------------------------------------------ dashboard


def test_dashboard_has_one_repeating_row_per_door() -> None:
    dash = _dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    door = variables["instance"]
    assert door["type"] == "query" and door["multi"] is True
    query = door["query"]["query"] if isinstance(door["query"], dict) else door["query"]
    assert query == "label_values(rfid_agent_build_info, instance)"
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    assert [r.get("repeat") for r in rows] == ["instance"]
    assert dash["panels"][0] is rows[0], "the repeating row must come first: it holds every panel below it"
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in _panels(dash)}
    for wanted in ("Readers up", "Pending records and oldest pending age", "Last delivery",
                   "Deliveries and errors per minute", "Held scans", "Clock", "Disk free", "Version"):
        assert wanted in titles


def test_dashboard_panels_use_only_known_metrics_for_the_rows_door() -> None:
    exprs = _dashboard_exprs(_dashboard())
    assert len(exprs) >= 8
    for title, expr in exprs:
        names = _metric_names(expr)
        assert names, (title, expr)
        assert names - _known() == set(), (title, expr)
        # each selector is this row's door
        assert expr.count('instance=~"$instance"') == expr.count("{"), (title, expr)


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each panel's query, as a recording rule (a JSON file is YAML)."""
    exprs = _dashboard_exprs(_dashboard())
    rules = [{"record": f"rfid_agent_dashboard:panel_{i}", "expr": expr.replace("$instance", "door-1:9100")}
             for i, (_title, expr) in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    got = _promtool(promtool, "check", "rules", str(path))
    assert got.returncode == 0, got.stdout + got.stderr
    assert f"SUCCESS: {len(rules)} rules found" in got.stdout
