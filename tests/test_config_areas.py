"""Areas register their own config section and commands (costline.areas): a made-up area,
declared the documented way in its own folder, is loaded from TOML and the environment like
the built-in ones, with the same unknown-key errors, and its commands join ``costline``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from costline import areas
from costline.config import Config, load_config
from costline.errors import ConfigError

SETTINGS = '''
from dataclasses import dataclass, field

@dataclass(frozen=True)
class WidgetLimits:
    per_hour: int = 10

@dataclass(frozen=True)
class WidgetsConfig:
    enabled: bool = False
    threshold: float = 0.5
    owner: str = "nobody"
    limits: WidgetLimits = field(default_factory=WidgetLimits)

SECTION = "widgets"
SETTINGS = WidgetsConfig
'''

CLI = '''
import click
from costline.cli import pass_config

@click.command("widgets-show")
@pass_config
def show(config):
    """Print the widgets section.

    Example:
        costline widgets-show
    """
    click.echo(f"threshold={config.widgets.threshold} owner={config.widgets.owner}")

commands = [show]
'''


@pytest.fixture
def widgets_area(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package `widgets_area` with settings.py and cli.py, added to costline.areas.AREAS."""
    pkg = tmp_path / "pkgs" / "widgets_area"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "settings.py").write_text(textwrap.dedent(SETTINGS))
    (pkg / "cli.py").write_text(textwrap.dedent(CLI))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setattr(areas, "AREAS", (*areas.AREAS, "widgets_area"))
    return "widgets_area"


def test_a_registered_area_gets_its_section_from_toml_and_env(widgets_area: str, tmp_path: Path) -> None:
    path = tmp_path / "costline.toml"
    path.write_text('[widgets]\nthreshold = 0.75\nowner = "file"\n[widgets.limits]\nper_hour = 3\n[kafka]\nport = 19092\n')
    cfg = load_config(path, env={"COSTLINE_WIDGETS_OWNER": "env", "COSTLINE_WIDGETS_ENABLED": "yes",
                                 "COSTLINE_WIDGETS_LIMITS_PER_HOUR": "7"})
    widgets = cfg.widgets  # type: ignore[attr-defined]  # a made-up area: not in Config's TYPE_CHECKING list
    assert (widgets.threshold, widgets.owner, widgets.enabled, widgets.limits.per_hour) == (0.75, "env", True, 7)
    assert cfg.kafka.port == 19092 and cfg.serving.cache.index == Config().serving.cache.index
    assert list(cfg.sections())[-1] == "widgets"
    # defaults without a table; the copy API covers it like any section
    assert Config().widgets.threshold == 0.5  # type: ignore[attr-defined]
    assert cfg.replace(widgets={"owner": "x"}).widgets.owner == "x"  # type: ignore[attr-defined]


def test_a_registered_area_gets_the_same_errors(widgets_area: str, tmp_path: Path) -> None:
    path = tmp_path / "costline.toml"
    path.write_text("[widgets]\nthreshhold = 0.75\n")
    with pytest.raises(ConfigError, match=r"\[widgets\] threshhold: unknown key: did you mean 'threshold'"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="COSTLINE_WIDGETS_THRESHOLD: expected a number"):
        load_config(None, env={"COSTLINE_WIDGETS_THRESHOLD": "high"})


def test_without_the_area_its_table_is_an_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "costline.toml"
    path.write_text("[widgets]\nthreshold = 0.75\n")
    with pytest.raises(ConfigError, match="widgets: unknown section"):
        load_config(path, env={})


def test_a_registered_area_adds_its_commands(widgets_area: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from costline.cli import _register_area_commands, cli

    monkeypatch.chdir(tmp_path)  # no ./costline.toml
    _register_area_commands()
    try:
        result = CliRunner().invoke(cli, ["widgets-show"], env={"COSTLINE_WIDGETS_OWNER": "env",
                                                               "COSTLINE_CONFIG": None})
        assert result.exit_code == 0, result.output
        assert result.output.strip() == "threshold=0.5 owner=env"
    finally:
        cli.commands.pop("widgets-show", None)  # the group is shared by the other tests of this process


def test_two_areas_cannot_claim_one_section(widgets_area: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(areas, "AREAS", (*areas.AREAS, "widgets_area"))
    with pytest.raises(TypeError, match=r"section \[widgets\] is already declared by widgets_area"):
        areas.area_sections()


def test_the_built_in_areas_declare_their_sections() -> None:
    from costline.alerts.settings import AlertsConfig
    from costline.dashboards.settings import DashboardConfig
    from costline.distill.settings import DistillConfig
    from costline.jobs.settings import JobsConfig
    from costline.serving.settings import ServingConfig

    assert areas.area_sections() == {"serving": ServingConfig, "jobs": JobsConfig, "alerts": AlertsConfig,
                                     "dashboard": DashboardConfig, "distill": DistillConfig}
    assert list(Config().sections()) == ["kafka", "lake", "collector", "processor", "capture", "pricing",
                                         "serving", "jobs", "alerts", "dashboard", "distill"]


def test_import_optional_skips_what_is_absent_and_raises_what_is_broken(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from costline.lazy import import_optional

    pkg = tmp_path / "half_area"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "settings.py").write_text("import costline_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_optional("half_area.cli") is None  # the area has no cli module: skipped
    assert import_optional("no_such_area.cli") is None  # nor the area itself
    assert import_optional("half_area").__name__ == "half_area"  # type: ignore[union-attr]
    with pytest.raises(ModuleNotFoundError, match="costline_no_such_dependency"):
        import_optional("half_area.settings")  # there, but broken: never silently skipped
