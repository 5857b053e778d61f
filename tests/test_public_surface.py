"""Each package's public surface (``__all__``), pinned in one table.

Adding or removing a public name fails here until the pin below is updated with it: the
surface changes on purpose, in review, never by accident. Every pinned name must resolve, and
every module of every package declares ``__all__`` naming only what it defines or imports.
Also: what pyproject ships as package data exists, and nothing a package reads is left out.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> its public names, written out by hand (sorted).
PINNED: dict[str, list[str]] = {
    "costline": ["__version__"],
    "costline.lake": [
        "CALLS_SCHEMA", "LOOKUPS_SCHEMA", "Lake", "MANIFEST_FORMAT", "Manifest", "ONE_ROW_PER_SPAN", "REQUESTS_SCHEMA",
        "RawSource", "name_raw_sources", "raw_source", "NoLake", "lake_exists", "require_lake",
        "SCHEMAS", "TABLES", "VIEWS", "VIEW_PROVIDERS", "WriterFenced", "OffsetsWentBack", "create_views", "data_file_name",
        "data_file_topic", "open_lake", "parse_data_file_name", "read_table_sql", "set_aside_files",
        "set_aside_odd_files", "topic_tag", "views_in", "views_sql", "write_views_db",
    ],
    "costline.collectors": [
        "CallHandle", "CollectorError", "Forwarder", "KafkaForwarder", "KafkaSpanExporter", "KafkaUnavailable",
        "LookupHandle", "OtlpGrpcReceiver", "OtlpReceiver", "REQUEST_ID_CONTEXT_KEY", "ReceiverError", "Recorder",
        "RequestHandle", "RequestStampingProcessor", "capture_enabled", "current_request_id", "instrument_anthropic",
        "instrument_openai", "setup_tracing",
    ],
    "costline.processors": [
        "CallRow", "DeadLetterError", "LookupRow", "MemoPricingTable", "Processor", "ProcessorError",
        "ProcessorStats", "RequestRow", "decode_message", "flatten_message", "flatten_span",
    ],
    "costline.serving": [
        "Answer", "AnswerCache", "Attempt", "Backend", "Decision", "Gateway", "LearnedPolicy", "ModelRegistry",
        "OutputFormat", "POLICIES", "Pipeline", "Prompt", "Reply", "Router", "RoutingPolicy", "RulePolicy", "TierSpec",
        "Validator", "build_backends", "build_policy", "evaluate", "train_policy",
    ],
    "costline.serving.cache": [
        "AdmissionModel", "CacheHit", "CacheReplicator", "CacheStats", "LookupResult", "PairModel", "SemanticCache",
        "Verifier", "load_cache", "save_cache", "train_admission", "train_pair_model", "tune_thresholds",
    ],
    "costline.serving.routing": [
        "Decision", "LearnedPolicy", "POLICIES", "Router", "RoutingPolicy", "RulePolicy", "build_policy", "compare",
        "evaluate", "labels_from_lake", "promote", "retrain_candidate", "rollback", "train_policy",
    ],
    "costline.serving.gateway": ["AsgiServer", "ChatCompletions", "Gateway", "GatewayGuard", "KeyStore",
                                 "SharedRateLimiter", "SharedTenantCounts", "WorkerSupervisor"],
    "costline.jobs": [
        "AnswerRequest", "Checkpoint", "CostReport", "CostReportConfig", "DriftConfig", "JOBS", "JobBusyError",
        "JobLock", "JobStore", "JobsConfig", "JobsError", "MissingExtraError", "NightlyService", "NoDataError",
        "Regenerator", "Scorer", "ShadowConfig", "SubtypeScores", "TeacherConfig", "TeacherError",
        "assess_inputs", "assess_subtypes", "assess_tiers", "build_cost_report", "jobs_views_sql", "nightly",
        "open_jobs_lake", "run_cost_report", "run_drift", "run_job", "run_shadow", "sample_requests", "validate",
    ],
    "costline.alerts": [
        "AlertEngine", "AlertService", "AlertSource", "AlertStore", "AlertsConfig", "AlertsError",
        "AlertsStateError", "Condition", "ConsoleNotifier", "InMemoryNotifier", "NotifierError", "Observation",
        "Outbox", "Outgoing", "Rule", "SendResult", "SilenceError", "SlackBotNotifier", "SlackWebhookNotifier",
        "Snapshot", "alerts_view_sql", "evaluate", "evaluate_job_rules", "export_history", "kafka_dlq_counter",
        "rules_from_config",
    ],
    "costline.dashboards": [
        "CHARTS", "Chart", "ChartData", "ChartSqlError", "DashboardConfig", "DashboardError", "DashboardServer",
        "announce_dashboard", "build_dashboard", "build_page", "chart_by_name", "chart_sql", "query_chart",
        "query_charts", "render_html",
    ],
    "costline.distill": [
        "DistillConfig", "DistillError", "DistillRun", "ExportError", "ExportResult", "GateFailedError",
        "GateResult", "MissingExtraError", "Roi", "RunStateError", "StudentServer", "TeacherRun", "TrainResult",
        "compute_roi", "distill_views_sql", "evaluate_student", "export_dataset", "gate_run", "on_drift",
        "open_distill_lake", "promote_run", "run_teacher", "train_student", "validate", "verify_disjoint",
    ],
    "costline.sim": [
        "DemoApp", "RequestPlan", "ServingRequest", "SimClock", "SlackStandIn", "StandInServer", "TrafficSpec",
        "reference_validator", "run_demo", "run_distill_demo", "run_nightly_demo", "sample_traffic",
        "serving_traffic", "synthetic_traffic",
    ],
}


def _package_dirs() -> dict[str, Path]:
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {pkg: ROOT / folder for pkg, folder in dirs.items()}


def test_every_installed_package_is_pinned() -> None:
    assert sorted(_package_dirs()) == sorted(PINNED)


@pytest.mark.parametrize("package", sorted(PINNED))
def test_all_is_pinned(package: str) -> None:
    public = importlib.import_module(package).__all__
    assert len(public) == len(set(public)), f"{package}.__all__ names something twice"
    added, removed = sorted(set(public) - set(PINNED[package])), sorted(set(PINNED[package]) - set(public))
    assert not added and not removed, (
        f"{package}'s public surface changed (added {added}, removed {removed}): if on purpose, update PINNED")


@pytest.mark.parametrize("package", sorted(PINNED))
def test_every_public_name_resolves(package: str) -> None:
    mod = importlib.import_module(package)
    missing = []
    for name in PINNED[package]:
        try:
            getattr(mod, name)
        except AttributeError as exc:
            missing.append(f"{name}: {exc}")
    assert not missing, f"{package}.__all__ names what it does not provide: {missing}"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        getattr(mod, "no_such_name")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        names.add(n.id)
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` / optional imports
            names |= _top_level_names(ast.Module(body=node.body + node.orelse, type_ignores=[]))
        elif isinstance(node, ast.Try):
            names |= _top_level_names(ast.Module(body=node.body, type_ignores=[]))
    return names


def _modules() -> list[tuple[str, Path]]:
    out = []
    for pkg, folder in _package_dirs().items():
        out += [(f"{pkg}.{p.stem}", p) for p in sorted(folder.glob("*.py")) if p.name not in ("__init__.py", "__main__.py")]
    return out


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_every_module_declares_what_it_defines(module: str, path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    declared = [n for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                and any(isinstance(t, ast.Name) and t.id == "__all__"
                        for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))]
    assert declared, f"{module} has no __all__"
    try:
        public, defined = ast.literal_eval(declared[0].value), _top_level_names(tree)
    except ValueError:  # computed (e.g. from a table): import the module and ask it
        mod = importlib.import_module(module)
        public, defined = mod.__all__, set(vars(mod))
    undefined = sorted(set(public) - defined)
    assert not undefined, f"{module}.__all__ names what the module does not define: {undefined}"


def test_package_data_globs_match_files_and_cover_every_data_file() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    data: dict[str, list[str]] = setuptools["package-data"]
    dirs = _package_dirs()
    for pkg, globs in data.items():
        for pattern in globs:
            assert list(dirs[pkg].glob(pattern)), f"package-data {pkg}: {pattern!r} matches no file"
    for pkg, folder in dirs.items():
        nested = [d for d in dirs.values() if d != folder and d.is_relative_to(folder)]  # their own package data
        for f in folder.rglob("*"):
            if not f.is_file() or "__pycache__" in f.parts or (f.suffix == ".py" and f.parent == folder):
                continue
            if any(f.is_relative_to(d) for d in nested):
                continue
            rel = f.relative_to(folder).as_posix()
            assert any(fnmatch.fnmatch(rel, g) for g in data.get(pkg, [])), (
                f"{folder.name}/{rel} is not package data in pyproject.toml: an installed costline would lack it")


def test_one_missing_extra_error_for_every_area() -> None:
    from costline.distill.errors import MissingExtraError as distill_error
    from costline.errors import CostlineError, MissingExtraError
    from costline.jobs.errors import MissingExtraError as jobs_error
    from costline.serving.errors import MissingExtraError as serving_error

    assert serving_error is jobs_error is distill_error is MissingExtraError
    err = MissingExtraError("transformers / peft", "distill", needed_for="training the student")
    assert isinstance(err, ImportError) and isinstance(err, CostlineError) and err.name == "transformers"
    assert str(err) == ("transformers / peft is not installed (training the student needs it): "
                        "pip install 'costline[distill]'")


@pytest.mark.parametrize("package", ["costline.serving", "costline.serving.cache", "costline.serving.routing",
                                     "costline.serving.gateway", "costline.jobs", "costline.alerts", "costline.dashboards",
                                     "costline.distill", "costline.sim"])
def test_lazy_packages_list_their_lazy_names(package: str) -> None:
    mod = importlib.import_module(package)
    assert set(mod.__all__) <= set(dir(mod))
