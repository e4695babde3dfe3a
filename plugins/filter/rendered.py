"""Checks of inventory values that the roles render into config files, env files and units.

A value rendered unquoted into a line-oriented file must not start a line of its own: a
line break in a ``redis_extra_config`` value was a ``loadmodule`` line in redis.conf, one in
``flower_settings`` a second variable in Flower's env file. Each filter returns "" when the
value is fine and otherwise what is wrong, naming the key, so that a role's ``assert`` names
the variable and the fix.

- ``fleet_env_settings_problem``: a ``celery_settings``/``flower_settings`` dict (rendered
  into ``celery.env`` as ``NAME=value``, read by systemd and ``celery_fleet.envfile``).
- ``fleet_redis_directives_problem``: ``redis_extra_config`` (``key value`` lines at the end
  of redis.conf). Directives that would undo what the role secures (Redis' own list of
  protected configs and dangerous commands: enable-debug-command, enable-module-command,
  enable-protected-configs, loadmodule; authentication, ACL and TLS; listeners; files and
  paths; replication) are refused unless ``unsafe`` (``redis_extra_config_unsafe: true``).
- ``fleet_address_problem``: a bind or announce address, or a list of them (IP, with the
  ``-`` "optional" prefix of Redis 7's ``bind``, or a host name).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# What would change or end a line of celery.env (templates/celery.env.j2): a string value
# is written in double quotes, anything else as JSON in single quotes.
STRING_UNSAFE = re.compile(r"[\"\\$`\n\r\x00]")
JSON_UNSAFE = re.compile(r"['\n\r\x00]")
DIRECTIVE = re.compile(r"^[a-z][a-z0-9-]*$")
LINE_BREAK = re.compile(r"[\n\r\x00]")
ADDRESS = re.compile(r"^-?[A-Za-z0-9:][A-Za-z0-9.:%_-]*$")
# redis.conf directives the role owns for security (redis.conf.j2, docs/security.md).
PROTECTED_DIRECTIVES = frozenset(
    {
        "enable-debug-command",
        "enable-module-command",
        "enable-protected-configs",
        "loadmodule",
        "include",
        "aclfile",
        "user",
        "requirepass",
        "masterauth",
        "masteruser",
        "protected-mode",
        "port",
        "bind",
        "unixsocket",
        "unixsocketperm",
        "dir",
        "dbfilename",
        "appendfilename",
        "appenddirname",
        "logfile",
        "pidfile",
        "replicaof",
        "slaveof",
        "rename-command",
    }
)
PROTECTED_PREFIXES = ("tls-",)


def fleet_env_settings_problem(settings: Mapping[str, Any]) -> str:
    """'' if every ``NAME: value`` fits one line of an env file, else the first problem."""
    for name, value in (settings or {}).items():
        if not ENV_NAME.match(str(name)):
            return f"has the name {json.dumps(str(name))}: use CELERY_* style names ([A-Z0-9_])"
        unsafe = (
            STRING_UNSAFE.search(value)
            if isinstance(value, str)
            else JSON_UNSAFE.search(json.dumps(value))
        )
        if unsafe:
            return (
                f"{name} has a quote, backslash, $, backquote or line break in its value, which "
                "would change or add a line of the env file"
            )
    return ""


def fleet_redis_directives_problem(directives: Mapping[str, Any], unsafe: bool = False) -> str:
    """'' if ``directives`` are plain ``key value`` lines the role may append, else why not."""
    for key, value in (directives or {}).items():
        if not DIRECTIVE.match(str(key)):
            return f"has the directive {json.dumps(str(key))}: use lower-case redis.conf names"
        if isinstance(value, (Mapping, list)):
            return f"{key}: give its value as one string (redis.conf arguments on one line)"
        if LINE_BREAK.search(str(value)):
            return f"{key}: its value has a line break, which would add a line to redis.conf"
        protected = key in PROTECTED_DIRECTIVES or str(key).startswith(PROTECTED_PREFIXES)
        if protected and not unsafe:
            return (
                f"{key} is set by the role for security (authentication, TLS, listeners, files, "
                "modules, debugging); use the role's own input, or set "
                "redis_extra_config_unsafe: true if you accept the consequences"
            )
    return ""


def fleet_address_problem(value: Any, name: str, optional: bool = False) -> str:
    """'' if ``value`` (or each item of a list) is one IP address or host name, else the
    problem, starting with ``name`` (``name[i]`` for an item). ``optional``: "" is fine."""
    if isinstance(value, list):
        return next(
            (
                p
                for i, item in enumerate(value)
                if (p := fleet_address_problem(item, f"{name}[{i}]"))
            ),
            "",
        )
    text = "" if value is None else str(value)
    if (optional and text == "") or ADDRESS.match(text):
        return ""
    return f"{name} is {json.dumps(text)}, not one IP address or host name"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "fleet_env_settings_problem": fleet_env_settings_problem,
            "fleet_redis_directives_problem": fleet_redis_directives_problem,
            "fleet_address_problem": fleet_address_problem,
        }
