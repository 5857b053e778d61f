"""costline where users install it: a non-root user whose HOME is read-only or absent, no home directory at all
(HOME unset, no passwd entry), a base install without the serving extra, a folder with no lake, paths that
cannot be written. Each case gets one clear error naming what to set (or a fallback that works), never a raw
traceback or made-up output.

A folder that cannot be created is one under a file (``<tmp>/afile/sub``): that fails for root too, where a
chmod would not stop a write.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from costline.cli import main
from costline.config import KafkaConfig, load_config
from costline.errors import ConfigError, KafkaSetupError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A folder that cannot be created by anyone, root included: its parent is a file."""
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path / "afile" / "sub"


@pytest.fixture
def no_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """HOME unset and no passwd entry for this user (``env -i`` under an arbitrary container UID): Path.home()
    raises RuntimeError. XDG_* unset too."""
    for var in ("HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(var, raising=False)

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(RuntimeError):
        Path.home()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``costline ARGV`` in this process: (exit code, stdout + stderr with lines unwrapped)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


# -- F1: the ONNX export folder cannot be written ------------------------------------------------------------------
@pytest.fixture
def onnx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """costline.serving.embedding_onnx with a fresh per-process fallback folder, made under ``tmp_path/tmp``."""
    mod = pytest.importorskip("costline.serving.embedding_onnx")
    pytest.importorskip("filelock")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    if hasattr(mod, "_FallbackFolder"):  # (so that the tests of export_onnx run, and fail, on code without it)
        monkeypatch.setattr(mod, "_FALLBACK", mod._FallbackFolder())
    return mod


def _fallback_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmp").glob("costline-onnx-*"))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("where", ["cache_dir under a file", "no home directory", "~ in cache_dir, no home"])
def test_an_export_folder_that_cannot_be_written_falls_back_to_a_private_temporary_one_with_one_warning(
        onnx, where: str, blocked: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        request: pytest.FixtureRequest) -> None:
    if where == "no home directory":
        request.getfixturevalue("no_home")
        cache_dir, tried = None, "~/.cache/costline/onnx"
    elif where == "~ in cache_dir, no home":
        request.getfixturevalue("no_home")
        cache_dir, tried = "~/onnx", "~/onnx"
    else:
        cache_dir, tried = blocked, str(blocked)
    caplog.set_level(logging.WARNING, "costline")
    first = onnx.export_target(cache_dir, "abc123", "model.onnx")
    second = onnx.export_target(cache_dir, "pair-def456", "pair_model.onnx")  # the pair model's, same process
    (fallback,) = _fallback_folders(tmp_path)
    assert (first, second) == (fallback / "abc123" / "model.onnx", fallback / "pair-def456" / "pair_model.onnx")
    assert fallback.stat().st_mode & 0o777 == 0o700  # private: only this user reads the model it runs
    (warning,) = _warnings(caplog)  # one, however many exports fall back
    for needed in (tried, str(fallback), "onnx_cache_dir", "COSTLINE_SERVING_CACHE_ONNX_CACHE_DIR", "XDG_CACHE_HOME"):
        assert needed in warning, (needed, warning)


def test_a_writable_export_folder_is_used_and_an_existing_export_is_read_where_it_is(
        onnx, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "costline")
    assert onnx.export_target(tmp_path / "cache", "abc", "model.onnx") == tmp_path / "cache" / "abc" / "model.onnx"
    assert (tmp_path / "cache" / "abc").is_dir()
    # an image's baked-in export is opened where it lies, without writing there (no probe file may be made: the
    # probe would fail on a read-only filesystem and send the export elsewhere)
    baked = tmp_path / "baked" / "abc" / "model.onnx"
    baked.parent.mkdir(parents=True)
    baked.write_bytes(b"onnx")

    def no_write(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(baked.parent))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "TemporaryFile", no_write)
        assert onnx.export_target(tmp_path / "baked", "abc", "model.onnx") == baked
    assert _fallback_folders(tmp_path) == [] and _warnings(caplog) == []


def test_no_writable_folder_at_all_is_one_embedder_error_saying_what_to_set(
        onnx, blocked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(blocked / "tmp"))  # the temporary folder cannot be made either
    with pytest.raises(onnx.EmbedderError) as info:
        onnx.export_target(blocked, "abc", "model.onnx")
    message = str(info.value)
    for needed in (str(blocked), "temporary folder", "onnx_cache_dir", "XDG_CACHE_HOME", 'embedder = "torch"'):
        assert needed in message, (needed, message)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one error, no chained traceback


def test_export_onnx_writes_into_the_fallback_under_its_lock(onnx, blocked: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The export itself (stubbed: a real one takes ~10-30 s of CPU) lands in the fallback folder, beside its
    source.json, with its lock file beside the folder (tests/test_embedding_onnx.py runs the real one)."""
    from costline.serving.embedding import default_model_path

    def fake_export(model_path: Path, target: Path) -> None:
        target.write_bytes(b"exported")

    monkeypatch.setattr(onnx, "_export_fp32", fake_export)
    path = onnx.export_onnx(default_model_path(), cache_dir=blocked)
    (fallback,) = _fallback_folders(tmp_path)
    assert path.parent.parent == fallback and path.read_bytes() == b"exported"
    assert (path.parent / "source.json").is_file() and Path(f"{path.parent}.model.onnx.lock").exists()


def test_the_embedder_works_its_export_folder_out_at_start(onnx, blocked: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``check_export_folder()``: what a gateway calls at start, before binding: the fallback, or the error."""
    e = onnx.OnnxEmbedder(cache_dir=blocked, batch_wait_ms=None)
    folder = e.check_export_folder()
    assert folder is not None and _fallback_folders(tmp_path) == [folder.parent] and not e.loaded
    assert onnx.OnnxEmbedder(onnx_file=tmp_path / "x.onnx", batch_wait_ms=None).check_export_folder() is None
    monkeypatch.setattr(onnx, "_FALLBACK", onnx._FallbackFolder())
    monkeypatch.setattr(tempfile, "tempdir", str(blocked / "tmp"))
    with pytest.raises(onnx.EmbedderError, match="onnx_cache_dir"):
        onnx.OnnxEmbedder(cache_dir=blocked, batch_wait_ms=None).check_export_folder()


def test_cached_export_into_a_folder_that_cannot_be_made_is_an_embedder_error(onnx, blocked: Path) -> None:
    with pytest.raises(onnx.EmbedderError, match="cannot create the export folder .*onnx_cache_dir"):
        onnx.cached_export(blocked / "abc" / "model.onnx", lambda: None)


def test_the_pair_models_export_falls_back_too(onnx, blocked: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pair_model = pytest.importorskip("costline.serving.cache.pair_model")

    def fake_export(model: object, target: Path) -> None:
        target.write_bytes(b"exported")

    monkeypatch.setattr(pair_model, "_export", fake_export)
    monkeypatch.setattr(pair_model.PairModel, "load", classmethod(lambda cls, *a, **k: object()))
    path = pair_model.export_pair_onnx(pair_model.default_pair_model_path(), cache_dir=blocked)
    (fallback,) = _fallback_folders(tmp_path)
    assert path.parent.parent == fallback and path.name == "pair_model.onnx" and path.read_bytes() == b"exported"


# -- F2: no home directory: the config loads; the Kafka folders' defaults are worked out when used ----------------
@pytest.mark.parametrize(("argv", "exit_code", "said"), [
    (["config"], 0, "[kafka]"),
    (["sql", "select 1"], 2, "error: no lake at costline-lake"),  # its own error, not the home directory's
])
def test_without_a_home_directory_the_config_loads_and_commands_run(no_home, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    argv: list[str], exit_code: int,
                                                                    said: str) -> None:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("COSTLINE_")]:
        monkeypatch.delenv(var)
    code, out = _run(argv, capsys)  # the old code raised RuntimeError: Could not determine home directory
    assert code == exit_code and said in out and "Could not determine" not in out and "Traceback" not in out, out


def test_costline_config_shows_the_kafka_folders_it_would_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """[kafka] home and data_dir default to None (worked out where used); `costline config` shows the folders."""
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("COSTLINE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    code, out = _run(["config"], capsys)
    assert code == 0, out
    assert f"home = {tmp_path / 'cache' / 'costline' / 'kafka'} (default)" in out, out
    assert f"data_dir = {tmp_path / 'state' / 'costline' / 'kafka'} (default)" in out, out


@pytest.mark.parametrize(("attr", "key", "xdg"), [
    ("jars_home", "[kafka] home", "XDG_CACHE_HOME"),
    ("state_dir", "[kafka] data_dir", "XDG_STATE_HOME"),
])
def test_a_kafka_folder_needed_without_a_home_directory_is_an_error_naming_its_key(
        no_home, monkeypatch: pytest.MonkeyPatch, attr: str, key: str, xdg: str) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # an existing cluster: no local folder needed
    kafka = load_config(None).kafka
    assert (kafka.home, kafka.data_dir) == (None, None)
    with pytest.raises(ConfigError) as info:
        getattr(kafka, attr)
    assert key in str(info.value) and xdg in str(info.value) and "home directory" in str(info.value)


@pytest.mark.parametrize(("env", "jars_home", "state_dir"), [
    ({"XDG_CACHE_HOME": "/xc", "XDG_STATE_HOME": "/xs"}, "/xc/costline/kafka", "/xs/costline/kafka"),
    ({"HOME": "/h"}, "/h/.cache/costline/kafka", "/h/.local/state/costline/kafka"),
    ({"HOME": "/h", "COSTLINE_KAFKA_HOME": "/k", "COSTLINE_KAFKA_DATA_DIR": "/d"}, "/k", "/d"),
])
def test_the_kafka_folders_defaults(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], jars_home: str,
                                    state_dir: str) -> None:
    for var in ("HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "COSTLINE_KAFKA_HOME", "COSTLINE_KAFKA_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    kafka = load_config(None).kafka
    assert (kafka.jars_home, kafka.state_dir) == (Path(jars_home), Path(state_dir))


# -- F3: a base install's cache commands name the extra ------------------------------------------------------------
@pytest.mark.parametrize("argv", [["cache", "train"], ["cache", "tune"], ["cache", "stats", "--path", "nothing"]])
def test_cache_commands_without_the_regex_package_name_the_extra(tmp_path: Path, argv: list[str]) -> None:
    code = ("import sys; sys.modules['regex'] = None\n"  # an import of it now fails, as in a base install
            "from costline.cli import main\n"
            f"main({argv!r})\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=env)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "error: regex is not installed: pip install 'costline[serving]'" in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr


# -- F4: distill with no lake: the "no lake" error, nothing created --------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["distill", "roi"],
    ["distill", "export", "--since", "-30d"],
    ["distill", "run", "--since", "-30d", "--base-model", "/models/x"],
])
def test_distill_commands_without_a_lake_say_so_and_create_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str],
                                                               argv: list[str]) -> None:
    pytest.importorskip("duckdb")
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("COSTLINE_")]:
        monkeypatch.delenv(var)
    code, out = _run(argv, capsys)
    assert code == 2 and "error: no lake at costline-lake: the path does not exist" in out, out
    assert list(tmp_path.iterdir()) == []  # no ./costline-lake made up on the spot


# -- F5: folders that cannot be written: one error naming the path and what to set -----------------------------------
def test_kafka_up_with_a_data_dir_that_cannot_be_made_names_it_and_the_key(blocked: Path, tmp_path: Path) -> None:
    from costline.localkafka import LocalKafka

    with pytest.raises(KafkaSetupError) as info:
        LocalKafka(KafkaConfig(home=tmp_path / "home", data_dir=blocked))._format()
    assert str(blocked) in str(info.value) and "[kafka] data_dir" in str(info.value)


def test_kafka_fetch_into_a_home_that_cannot_be_made_names_it_and_the_key(blocked: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import costline.localkafka as localkafka

    monkeypatch.setattr(localkafka.shutil, "which", lambda name: "/usr/bin/false")  # Maven "found"
    with pytest.raises(KafkaSetupError) as info:
        localkafka.LocalKafka(KafkaConfig(home=blocked, data_dir=tmp_path / "data")).fetch()
    assert str(blocked) in str(info.value) and "[kafka] home" in str(info.value)


@pytest.mark.parametrize(("home", "option"), [
    ("writable", []),
    ("blocked", ["-Dmaven.repo.local={kafka_home}/m2"]),
    ("none", ["-Dmaven.repo.local={kafka_home}/m2"]),
])
def test_maven_downloads_into_the_kafka_home_when_the_users_m2_cannot_be_written(
        tmp_path: Path, blocked: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
        home: str, option: list[str]) -> None:
    from costline.localkafka import LocalKafka

    if home == "none":
        request.getfixturevalue("no_home")
    else:
        monkeypatch.setenv("HOME", str(tmp_path / "home" if home == "writable" else blocked))
    kafka_home = tmp_path / "kafka"
    got = LocalKafka(KafkaConfig(home=kafka_home, data_dir=tmp_path / "data"))._maven_repo_option()
    assert got == [o.format(kafka_home=kafka_home) for o in option]


def test_keys_add_into_a_folder_that_cannot_be_made_names_it_and_the_flag(blocked: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _run(["keys", "add", "acme", "--file", str(blocked / "keys.json")], capsys)
    assert code == 2 and "Traceback" not in out, out
    assert f"error: cannot create the keys file's folder {blocked}" in out and "--file" in out, out
    assert "keys_file" in out and "XDG_STATE_HOME" in out, out


def test_without_a_home_directory_the_gateways_keys_store_is_empty_and_adding_a_key_says_what_to_set(
        no_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A gateway under a container's arbitrary uid (no HOME, no passwd entry) starts with no keys file (open on
    loopback, as with none); ``keys add`` without --file names what to set (before: RuntimeError at start)."""
    from costline.serving.gateway.auth import KeyStore

    assert KeyStore().keys() == []
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("COSTLINE_")]:
        monkeypatch.delenv(var)
    code, out = _run(["keys", "add", "acme"], capsys)
    assert code == 2 and "Traceback" not in out, out
    assert "error: no home directory to keep the API keys file in" in out, out
    assert "--file" in out and "keys_file" in out and "XDG_STATE_HOME" in out, out


def test_serve_with_no_folder_for_the_onnx_export_fails_at_start_in_one_line(
        onnx, blocked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``costline serve`` whose export folder and temporary folder both cannot be made stops at start, exit 2, one
    error saying what to set — not a gateway that answers every request without its cache."""
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(blocked / "tmp"))
    monkeypatch.setenv("COSTLINE_SERVING_CACHE_ONNX_CACHE_DIR", str(blocked))
    monkeypatch.setenv("COSTLINE_SERVING_CACHE_EMBEDDER", "onnx")
    code, out = _run(["serve", "--port", "0"], capsys)
    assert code == 2 and "Traceback" not in out, out
    assert "error:" in out and "onnx_cache_dir" in out and "XDG_CACHE_HOME" in out, out


def test_the_demo_in_a_folder_it_cannot_make_names_it_and_the_flag(blocked: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _run(["demo", "--workdir", str(blocked)], capsys)
    assert code == 2 and "Traceback" not in out, out
    assert f"error: cannot set up the demo's folder {blocked}" in out and "--workdir" in out, out


# -- F6: the licence the package declares ships with it ----------------------------------------------------------
def test_the_apache_license_text_is_in_the_repository() -> None:
    import hashlib

    # the MD5 of https://www.apache.org/licenses/LICENSE-2.0.txt, the canonical text
    assert hashlib.md5((ROOT / "LICENSE").read_bytes()).hexdigest() == "3b83ef96387f14655fc854ddc3c6bd57"
