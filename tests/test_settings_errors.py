"""A bad setting is one line naming the variable or the config file's key, what is wrong, and the nearest valid key;
never its value, never a traceback, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

SECRET = "s3cr3t-hunter2"


def error_line(result) -> str:
    text = result.stderr if result.stderr else result.output
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def run_with(cli, tmp_path: Path, config: str | None = None):
    args = ["--config", str(tmp_path / "gpuledger.toml")] if config is not None else []
    if config is not None:
        (tmp_path / "gpuledger.toml").write_text(config)
    return cli(*args, "report", "--warehouse", str(tmp_path / "wh"))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "GPULEDGER_TEAMS",
            "{not json",
            "Error: the variable GPULEDGER_TEAMS is not valid JSON (Expecting property name enclosed in double "
            "quotes at character 2): set it to a JSON object",
        ),
        (
            "GPULEDGER_ALERTS",
            "[1",
            "Error: the variable GPULEDGER_ALERTS is not valid JSON (Expecting ',' delimiter at character 3): "
            "set it to a JSON object",
        ),
        (
            "GPULEDGER_ALERTS",
            '{"idle_hours": "' + SECRET + '"}',
            "Error: the variable GPULEDGER_ALERTS key `idle_hours` should be a number",
        ),
        (
            "GPULEDGER_EMAIL",
            '{"hots": "' + SECRET + '", "sender": "a@example.com", "recipients": ["b@example.com"]}',
            "Error: the variable GPULEDGER_EMAIL key `hots` is not a setting of [email]: did you mean `host`?",
        ),
        (
            "GPULEDGER_ACTIVE_THRESHOLD_PCT",
            "250",
            "Error: the variable GPULEDGER_ACTIVE_THRESHOLD_PCT should be less than or equal to 100",
        ),
        (  # `warehouse prune` would count back past year 1
            "GPULEDGER_RETENTION_DAYS",
            "999999999",
            "Error: the variable GPULEDGER_RETENTION_DAYS should be less than or equal to 36500",
        ),
    ],
)
def test_a_bad_variable_is_named_not_echoed(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    result = run_with(cli, tmp_path)
    assert result.exit_code == 2
    assert error_line(result) == message
    assert SECRET not in result.output


EMAIL = '[email]\nsender = "a@example.com"\nrecipients = ["b@example.com"]\n'


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("retention_day = 30\n", "key `retention_day` is not a setting: did you mean `retention_days`?"),
        (f'{EMAIL}hots = "{SECRET}"\n', "key `[email] hots` is not a setting of [email]: did you mean `host`?"),
        (f'{EMAIL}host = "smtp.example.com"\nport = "{SECRET}"\n', "key `[email] port` should be a whole number"),
        ('retention_days = "thirty"\n', "key `retention_days` should be a whole number"),
        ('[emails]\nhost = "smtp.example.com"\n', "section `[emails]` is not a setting: did you mean `[email]`?"),
        ("idle_hours = 4\n", "key `idle_hours` is not a top-level setting: did you mean `[alerts] idle_hours`?"),
        (
            "[delivery]\nattempt = 4\n",
            "key `[delivery] attempt` is not a setting of [delivery]: did you mean `attempts`?",
        ),
        (
            "[scheduler]\nfoo = 1\n",
            "key `[scheduler] foo` is not a setting of [scheduler]: its keys are timezone, misfire_grace_s, "
            "coalesce, outbox_every_s",
        ),
        (
            "[nothing_like_it]\nx = 1\n",
            "section `[nothing_like_it]` is not a setting: remove it (every setting is in the Configuration table "
            "of README.md)",
        ),
        (
            '[email]\nhost = "smtp.example.com"\nsender = "a@example.com"\n',
            "section `[email]` lacks the required key `recipients`: add it",
        ),
        (
            '[instance_type_prices."p5.48xlarge"]\nspot = "x"\n',
            "key `[instance_type_prices.p5.48xlarge] spot` should be a number",
        ),
        ('idle_cost = "sharde"\n', "key `idle_cost` should be 'separate' or 'shared'"),
    ],
)
def test_a_bad_config_key_is_named_with_the_fix(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, problem: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_with(cli, tmp_path, config)
    assert result.exit_code == 2
    assert error_line(result) == f"Error: {tmp_path / 'gpuledger.toml'} {problem}"
    assert SECRET not in result.output


def test_an_invalid_toml_file(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_with(cli, tmp_path, f'password_env = "{SECRET}\n')
    assert result.exit_code == 2
    assert error_line(result) == (
        f"Error: config file {tmp_path / 'gpuledger.toml'} is not valid TOML (Illegal character '\\n' "
        "(at line 1, column 31)): fix it there"
    )
    assert SECRET not in result.output


def test_the_environment_wins_the_blame_it_overrides(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both name [alerts]; the refused value came from the variable, which overrides the file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPULEDGER_ALERTS", '{"idle_hours": "x"}')
    result = run_with(cli, tmp_path, "[alerts]\nidle_hours = 3\n")
    assert error_line(result) == "Error: the variable GPULEDGER_ALERTS key `idle_hours` should be a number"
    monkeypatch.setenv("GPULEDGER_ALERTS", '{"cooldown_hours": 1}')
    result = run_with(cli, tmp_path, '[alerts]\nidle_hours = "x"\n')
    assert error_line(result) == f"Error: {tmp_path / 'gpuledger.toml'} key `[alerts] idle_hours` should be a number"
