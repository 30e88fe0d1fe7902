"""Suite files (``--suite-file FILE.toml``) and suite names.
"""

from __future__ import annotations

import json
import re

from genbench.budget import Budget
from genbench.errors import GenbenchError

SUITE_KEYS = {
    "name": "suite name: the folder under the runs dir (default: the profile)",
    "models": "list of model names",
    "datasets": "list of dataset names",
    "budget": 'budget string such as "30s", "2000steps" or "1e12flop"',
    "seeds": "number of seeds (whole number >= 1)",
    "profile": "evaluation profile name",
    "config": "a table per model of config overrides, e.g. [config.vae] hidden = 200",
}
SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_suite_name(name, where: str = "--suite") -> str:
    if not isinstance(name, str) or not SUITE_NAME.fullmatch(name):
        raise GenbenchError(f"{where}: suite name {name!r} must be a folder name of letters, digits, '.', '_' "
                            "and '-' (no path separators), e.g. quick-2024")
    return name


def load_suite_file(path: str) -> dict:
    """A TOML suite file: keys name, models, datasets, budget, seeds, profile, config (per model).
    Every key and type is checked; an error names the file, the key and what it should be."""
    import tomllib

    from genbench.profiles import PROFILES

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise GenbenchError(f"suite file {path!r} not found; give the path of a TOML file "
                            "(keys: " + ", ".join(SUITE_KEYS) + ")") from None
    except IsADirectoryError:
        raise GenbenchError(f"suite file {path!r} is a folder; give the path of a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise GenbenchError(f"suite file {path!r} is not valid TOML: {exc}") from None
    unknown = set(data) - set(SUITE_KEYS)
    if unknown:
        raise GenbenchError(f"suite file {path!r}: unknown keys {sorted(unknown)}; allowed: {sorted(SUITE_KEYS)}")

    def bad(key, value):
        return GenbenchError(f"suite file {path!r}: {key} must be a {SUITE_KEYS[key]}, "
                             f"got {type(value).__name__} {value!r}")

    for key in ("models", "datasets"):
        if key in data:
            value = data[key]
            if isinstance(value, str):
                data[key] = [value]
            elif not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                raise bad(key, value)
    if "budget" in data:
        if not isinstance(data["budget"], str):
            raise bad("budget", data["budget"])
        try:
            Budget.parse(data["budget"])
        except GenbenchError as exc:
            raise GenbenchError(f"suite file {path!r}: {exc}") from None
    if "seeds" in data and (isinstance(data["seeds"], bool) or not isinstance(data["seeds"], int)
                            or data["seeds"] < 1):
        raise bad("seeds", data["seeds"])
    if "profile" in data and (not isinstance(data["profile"], str) or data["profile"] not in PROFILES):
        raise GenbenchError(f"suite file {path!r}: profile must be one of {', '.join(PROFILES)}, "
                            f"got {data['profile']!r}")
    if "name" in data:
        check_suite_name(data["name"], f"suite file {path!r}: name")
    if "config" in data:
        cfg = data["config"]
        if not isinstance(cfg, dict) or not all(isinstance(v, dict) for v in cfg.values()):
            raise bad("config", cfg)
    return json.loads(json.dumps(data))
