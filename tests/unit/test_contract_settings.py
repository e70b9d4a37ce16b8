"""The one settings registry of the hub and the runs service (opsbook.contract.settings)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from opsbook.contract import settings
from opsbook.contract.settings import Setting, SettingsError, load

SETTINGS = (
    Setting("NAME", settings.text, "What it is called."),
    Setting("PORT", settings.bounded_int(1, 65535), "Where it listens.", "8000"),
    Setting("TOKEN", settings.secret(16), "Its token."),
    Setting("DATABASE", settings.text, "Its database.", "sqlite:////tmp/x.sqlite"),
    Setting("HOOK", settings.optional_url, "Where it reports.", ""),
)
VALID = {"NAME": "runs", "TOKEN": "t" * 16}


def test_values_are_parsed_and_defaults_apply_when_missing_or_empty():
    values = load(SETTINGS, {**VALID, "HOOK": ""})
    assert values == {
        "NAME": "runs",
        "PORT": 8000,
        "TOKEN": "t" * 16,
        "DATABASE": "sqlite:////tmp/x.sqlite",
        "HOOK": "",
    }


def test_one_line_per_bad_setting_in_declaration_order_in_one_format():
    with pytest.raises(SettingsError) as raised:
        load(SETTINGS, {"PORT": "eighty", "TOKEN": "short", "HOOK": "example.com"})
    assert str(raised.value).splitlines() == [
        "NAME: required, not set (What it is called.)",
        "PORT: expected a whole number from 1 to 65535, got 'eighty'",
        "TOKEN: expected a secret of at least 16 characters, got 'short'",
        "HOOK: expected an http(s) URL such as https://host.example.com/path, got 'example.com'",
    ]


def test_an_empty_required_value_goes_to_its_parser():
    with pytest.raises(SettingsError, match=r"^NAME: expected a non-empty value, got ' '$"):
        load(SETTINGS, {**VALID, "NAME": " "})


def test_secrets_and_url_passwords_are_never_echoed():
    with pytest.raises(SettingsError) as raised:
        load(
            SETTINGS,
            {**VALID, "TOKEN": "hunter2", "HOOK": "ftp://bot:hunter3@hooks/x"},
            secret_names={"TOKEN"},
        )
    message = str(raised.value)
    assert "TOKEN: expected a secret of at least 16 characters, got <hidden>" in message
    assert "hunter2" not in message and "hunter3" not in message
    assert "'ftp://bot:***@hooks/x'" in message
    assert settings.mask_password("postgresql://u:p@w:d@db/x") == "postgresql://u:***@db/x"
    assert settings.mask_password("redis://:pw@cache/0") == "redis://:***@cache/0"
    assert settings.mask_password("http://host/a:b@c") == "http://host/a:b@c"


def test_only_loads_the_named_settings_and_refuses_undeclared_names():
    assert load(SETTINGS, {"NAME": "x"}, only=["NAME", "PORT"]) == {"NAME": "x", "PORT": 8000}
    with pytest.raises(ValueError, match="NAMES"):
        load(SETTINGS, VALID, only=["NAMES"])


@pytest.mark.parametrize(
    ("parser", "raw", "value"),
    [
        (settings.text, "  a b ", "a b"),
        (settings.url, " https://sso.example.com/auth ", "https://sso.example.com/auth"),
        (settings.optional_url, " ", ""),
        (settings.secret(4), " abcd ", "abcd"),
        (settings.positive_int, "12", 12),
        (settings.bounded_int(0, 5), "0", 0),
        (settings.positive_float, "1.5", 1.5),
        (settings.names, "ops, oncall ops", ("ops", "oncall")),
        (settings.absolute_path, " /etc/x ", "/etc/x"),
        (settings.optional_absolute_path, "", ""),
    ],
)
def test_the_common_parsers_accept(parser, raw, value):
    assert parser(raw) == value


@pytest.mark.parametrize(
    ("parser", "raw", "expected"),
    [
        (settings.text, " ", "a non-empty value"),
        (settings.url, "idp:9000/token", "an http(s) URL"),
        (settings.url, "ftp://x/y", "an http(s) URL"),
        (settings.optional_url, "x", "an http(s) URL"),
        (settings.secret(16), "short", "a secret of at least 16 characters"),
        (settings.positive_int, "0", "a whole number above 0"),
        (settings.positive_int, "1.5", "a whole number above 0"),
        (settings.bounded_int(10, 20), "21", "a whole number from 10 to 20"),
        (settings.bounded_int(10, 20), "ten", "a whole number from 10 to 20"),
        (settings.positive_float, "-1", "a number above 0"),
        (settings.names, " , ", "one or more names"),
        (settings.absolute_path, "etc/x", "an absolute path"),
        (settings.optional_absolute_path, "x", "an absolute path"),
    ],
)
def test_the_common_parsers_say_what_they_expected(parser, raw, expected):
    with pytest.raises(ValueError) as raised:
        parser(raw)
    assert str(raised.value).startswith(expected)


def test_the_registry_uses_the_standard_library_only():
    source = Path(settings.__file__).read_text()
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= sys.stdlib_module_names | {"__future__"}
